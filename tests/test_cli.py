"""The command line: useful help, one-line errors with non-zero exits."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from bnhw.cli import main
from bnhw.spec import load_spec

#: every command the CLI has (a new command is covered the day it is added)
COMMANDS = sorted(main.commands)


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_lists_every_command():
    assert set(COMMANDS) >= {"ops", "space", "zoo", "sample", "export", "search", "train", "eval", "report", "build",
                             "sim", "bench-cpu"}
    r = run("--help")
    assert r.exit_code == 0
    for c in COMMANDS:
        assert c in r.output


@pytest.mark.parametrize("cmd", COMMANDS)
def test_subcommand_help(cmd):
    r = run(cmd, "--help")
    assert r.exit_code == 0
    assert "Usage: main " + cmd in r.output or f"Usage: bnhw {cmd}" in r.output
    assert len(r.output.splitlines()) > 4
    # every option is documented: a help text after each option name
    cmd_obj = main.commands[cmd]
    for param in cmd_obj.params:
        if param.param_type_name == "option" and not param.hidden:
            assert param.help, f"bnhw {cmd} {param.opts[0]} has no help text"


def test_ops_table_and_json():
    r = run("ops", "nasbnn-d")
    assert r.exit_code == 0
    assert "124,085,608" in r.output and "s4l4.conv5x5" in r.output
    r = run("ops", "nasbnn-smallest", "--json")
    d = json.loads(r.output)
    assert d["totals"]["ops"] == pytest.approx(20.77e6, rel=1e-3)
    assert d["layers"][0]["name"] == "stem" and d["layers"][-1]["name"] == "fc"


def test_ops_on_a_file(tmp_path):
    r = run("sample", "--space", "nasbnn-cifar", "--seed", "3", "-o", str(tmp_path / "a.json"))
    assert r.exit_code == 0
    assert load_spec(tmp_path / "a.json").space == "nasbnn-cifar"
    r = run("ops", str(tmp_path / "a.json"), "--totals")
    assert r.exit_code == 0 and "OPs" in r.output


def test_sample_many(tmp_path):
    r = run("sample", "-n", "5", "--seed", "1", "-o", str(tmp_path / "d"))
    assert r.exit_code == 0
    specs = sorted(p.name for p in (tmp_path / "d").glob("*.json") if p.name != ".bnhw.json")
    assert len(specs) == 5
    # the folder is marked as `bnhw sample`'s: sampling again into it works, another command refuses it
    assert json.loads((tmp_path / "d" / ".bnhw.json").read_text())["command"] == "sample"
    assert run("sample", "-n", "5", "--seed", "1", "-o", str(tmp_path / "d")).exit_code == 0
    r = run("report", "nasbnn-cifar-smallest", "-o", str(tmp_path / "d"))
    assert r.exit_code == 2 and "holds the output of `bnhw sample`" in r.output


def test_space_listing_and_detail():
    r = run("space")
    assert "nasbnn-imagenet" in r.output and "nasbnn-cifar" in r.output
    r = run("space", "nasbnn-imagenet")
    assert "3.96e+21" in r.output and "3.32e+17" in r.output and "20.77M" in r.output


@pytest.mark.parametrize("args,msg", [
    (["ops", "missing.json"], "missing.json: no such file"),
    (["ops", "no-such-arch"], "neither a file nor a bundled network"),
    (["space", "nope"], "unknown search space"),
    (["sample", "--space", "nope"], "unknown search space"),
])
def test_errors_are_one_line(args, msg):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0
    assert msg in r.output and "Traceback" not in r.output


def test_invalid_spec_file(tmp_path):
    p = tmp_path / "bad.json"
    d = load_spec("nasbnn-cifar-smallest").to_dict()
    d["stages"][2]["blocks"][1]["groups"] = 5
    p.write_text(json.dumps(d))
    r = CliRunner().invoke(main, ["ops", str(p)])
    assert r.exit_code == 2
    assert "stages[2].blocks[1].groups" in r.output and "not divisible" in r.output


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "bnhw", "ops", "nasbnn-smallest", "--totals"],
                         capture_output=True, text=True, check=True).stdout
    assert "20.77M" in out
    bad = subprocess.run([sys.executable, "-m", "bnhw", "ops", "zzz.json"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: zzz.json: no such file"


def test_export_verifies_against_pytorch(tmp_path):
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(main, ["export", "nasbnn-cifar-smallest", "-o", str(out), "--verify", "4",
                                  "--precision", "fixed"])
    assert r.exit_code == 0, r.output
    assert out.is_file()
    assert "binary tensors bit-exact" in r.output and "fixed residual path" in r.output
    import re
    n, total = map(int, re.search(r"(\d+)/(\d+) binary tensors", r.output).groups())
    assert n == total > 0


def test_export_with_checkpoint_and_errors(tmp_path):
    from bnhw.quant.checkpoint import save_checkpoint
    from bnhw.quant.model import build_model
    from bnhw.spec.zoo import get_arch

    ck = tmp_path / "w.pt"
    save_checkpoint(build_model(get_arch("nasbnn-cifar-smallest")), ck)
    r = CliRunner().invoke(main, ["export", "nasbnn-cifar-smallest", "--checkpoint", str(ck), "-o",
                                  str(tmp_path / "a.onnx"), "--verify", "2"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["export", "nasbnn-cifar-largest", "--checkpoint", str(ck), "-o",
                                  str(tmp_path / "b.onnx")])
    assert r.exit_code == 2 and "another architecture" in r.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = CliRunner().invoke(main, ["export", "nasbnn-cifar-smallest", "--checkpoint", str(bad), "-o",
                                  str(tmp_path / "c.onnx")])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "Traceback" not in r.output
