"""`bnhw report`: architectures side by side on a board (OPs, FPGA estimate, accuracy)."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from bnhw.cli import main
from bnhw.hw.estimate import estimate_fpga
from bnhw.quant.checkpoint import save_checkpoint
from bnhw.quant.model import build_model
from bnhw.spec import load_spec


def test_report_two_archs(tmp_path):
    ckpt = tmp_path / "small.pt"
    save_checkpoint(build_model(load_spec("nasbnn-cifar-smallest")), ckpt)
    out = tmp_path / "rep"
    r = CliRunner().invoke(main, ["report", "nasbnn-cifar-smallest", "nasbnn-cifar-largest", "--target", "pynq-z2",
                                  "--checkpoint", str(ckpt), "--checkpoint", "-", "-o", str(out)])
    assert r.exit_code == 0, r.output
    for f in ("report.md", "report.json", "report.png"):
        assert (out / f).is_file(), f
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    rep = json.loads((out / "report.json").read_text())
    small, large = rep["archs"]
    assert (small["label"], large["label"]) == ("nasbnn-cifar-smallest", "nasbnn-cifar-largest")
    assert small["fpga"]["fits"] and small["fpga"]["fps"] > 0 and small["fpga"]["latency_ms"] > 0
    assert small["fpga"]["fps"] == estimate_fpga(load_spec("nasbnn-cifar-smallest"), "pynq-z2").fps
    assert not large["fpga"]["fits"] and large["fpga"]["fps"] == 0
    assert small["ops"]["ops"] == pytest.approx(119_542) and large["ops"]["bops"] > small["ops"]["bops"]
    assert 0 <= small["accuracy"]["top1"] <= 1 and small["accuracy"]["images"] > 0 and large["accuracy"] is None
    assert set(rep["columns"]) >= {"OPs", "FPS", "latency", "LUT", "BRAM18", "DSP", "accuracy"}
    md = (out / "report.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| nasbnn")}
    assert "| yes |" in rows["nasbnn-cifar-smallest"] and "| **no** |" in rows["nasbnn-cifar-largest"]
    assert "n/a" in rows["nasbnn-cifar-largest"] and "%" in rows["nasbnn-cifar-smallest"].split("|")[-2]
    assert "nasbnn-cifar-largest: does not fit pynq-z2" in md
    assert "**FPS**: simulated" in md and "**accuracy**: measured" in md and "**OPs**: counted" in md
    assert "| nasbnn-cifar-largest |" in r.output            # the table went to stdout


@pytest.mark.parametrize("args,msg", [
    (["nasbnn-cifar-smallest", "--target", "pynq-z9"], "unknown target 'pynq-z9'; known boards:"),
    (["no-such-arch"], "'no-such-arch' is neither a file nor a bundled network"),
    (["nasbnn-cifar-smallest", "--checkpoint", "missing.pt"], "missing.pt: no such checkpoint"),
    (["nasbnn-cifar-smallest", "--checkpoint", "-", "--checkpoint", "-"], "2 --checkpoint for 1 architectures"),
])
def test_bad_input_is_one_line(tmp_path, args, msg):
    r = CliRunner().invoke(main, ["report", *args, "-o", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    assert msg in r.output and r.output.strip().count("\n") == 0 and not (tmp_path / "o").exists()


def test_missing_spec_file_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bnhw", "report", str(tmp_path / "nope.json"), "nasbnn-cifar-smallest",
                        "-o", str(tmp_path / "o")], capture_output=True, text=True)
    err = r.stderr.strip()
    assert r.returncode == 2 and "nope.json: no such file" in err and err.count("\n") == 0
    assert "Traceback" not in err and not (tmp_path / "o").exists()
