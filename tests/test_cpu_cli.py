"""`bnhw bench-cpu`: checked bit-exact first, measured natively, modelled (and labelled so) on ARM cores,
one-line errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers.graphs import bireal_graph

from bnhw.hw.cpu import kernels
from bnhw.hw.cpu.cross import toolchain_status
from bnhw.hw.cpu.program import lower_cpu, write_model
from bnhw.hw.cpu.runtime import default_threads

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (apt-get install gcc)")


def run(*args, timeout=600, env=None):
    env = {**{k: v for k, v in os.environ.items() if k != "BNHW_KERNELS"}, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "bnhw", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_line_error(p) -> str:
    assert p.returncode != 0, p.stdout
    lines = [x for x in p.stderr.strip().splitlines() if x.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in p.stderr, p.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory):
    g = bireal_graph()
    path = tmp_path_factory.mktemp("bc") / "hw_graph.json"
    g.save(path)
    return g, path


def test_native_is_measured_and_checked(graph_file, tmp_path):
    g, path = graph_file
    p = run("bench-cpu", path, "--repeat", "5", "--images", "6", "-o", tmp_path)
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "bench_cpu.json").read_text())
    assert r["how"] == "measured" and r["target"] == "native"
    assert r["checks"]["native"] == {"checked": True, "inputs": 6, "equal": 6, "kernels": kernels.resolve("auto"),
                                     "threads": default_threads(), "real_inputs": False}
    res = r["result"]
    assert res["kernels"] == kernels.resolve("auto") and res["threads"] == default_threads()
    prog = lower_cpu(g)
    assert [x["name"] for x in res["rows"]] == [o.name for o in prog.ops]
    assert res["seconds"] > 0 and res["repeat"] == 5 and r["bmacs"] == prog.bmacs > 0
    assert abs(res["binary_gops"] - 2 * prog.bmacs / res["seconds"] / 1e9) < 1e-6 * res["binary_gops"]
    md = (tmp_path / "bench_cpu.md").read_text()
    assert "**Measured**" in md and "equals the IR on 6/6" in md and "random integers" in md
    # the bireal blocks' pixel-wise ops run fused into their convs' passes: rows say so, with no time
    fused = [x for x in res["rows"] if x["fused"]]
    assert res["fused_ops"] == len(fused) > 0 and all(x["seconds"] == 0 for x in fused)
    assert f"{len(fused)} pixel-wise ops" in md and md.count("| fused |") == len(fused)
    assert (tmp_path / "model.bnhwcpu").is_file()


def test_kernel_set_and_threads_choice(graph_file, tmp_path):
    """--kernels wins over $BNHW_KERNELS, which wins over auto; the report names the set that ran and the
    thread count; a set this CPU lacks (or not compiled for it) is a one-line error before any work."""
    _, path = graph_file
    env = {"BNHW_KERNELS": "ref"}
    p = run("bench-cpu", path, "--repeat", "1", "--images", "2", "--threads", "2", "-o", tmp_path / "a", env=env)
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "a" / "bench_cpu.json").read_text())
    assert r["result"]["kernels"] == "ref" == r["checks"]["native"]["kernels"] and r["result"]["threads"] == 2
    assert "2 threads, kernels `ref`" in (tmp_path / "a" / "bench_cpu.md").read_text()
    p = run("bench-cpu", path, "--repeat", "1", "--images", "2", "--kernels", "portable", "--threads", "1", "-o",
            tmp_path / "b", env=env)
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "b" / "bench_cpu.json").read_text())
    assert r["result"]["kernels"] == "portable" and r["result"]["threads"] == 1
    lacking = [s for s in ("neon", "avx2", "avx512bw", "avx512") if s not in kernels.usable_kernel_sets()]
    for s in lacking[:2]:
        msg = one_line_error(run("bench-cpu", path, "--kernels", s, "-o", tmp_path / f"x{s}"))
        assert f"kernel set {s} " in msg and ("this CPU has" in msg or "not compiled in" in msg)
        assert not (tmp_path / f"x{s}").exists()
    msg = one_line_error(run("bench-cpu", path, "-o", tmp_path / "y", env={"BNHW_KERNELS": "bogus"}))
    assert "unknown kernel set bogus" in msg
    assert "Invalid value" in run("bench-cpu", path, "--kernels", "bogus", "-o", tmp_path / "z").stderr


def test_cli_kernel_choices_are_the_sets():
    from bnhw.cli import main

    opt = next(o for o in main.commands["bench-cpu"].params if o.name == "kernels")
    assert tuple(opt.type.choices) == kernels.KERNEL_SET_NAMES


@pytest.mark.parametrize("core", ["cortex-a9", "cortex-a72"])
def test_arm_targets_are_modelled_and_checked_under_qemu(graph_file, tmp_path, core):
    _, path = graph_file
    p = run("bench-cpu", path, "--target", core, "-o", tmp_path)
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "bench_cpu.json").read_text())
    assert r["how"] == "modelled" and r["result"]["roofline_bmacs_per_cycle"] > 0
    md = (tmp_path / "bench_cpu.md").read_text()
    assert "**Modelled** (not measured)" in md and "roofline" in md
    arch = "armv7" if core == "cortex-a9" else "aarch64"
    ok, why = toolchain_status(arch)
    q = r["checks"]["qemu"]
    if ok:
        assert q["checked"] and q["equal"] == q["inputs"] > 0 and q["kernels"] == "neon"
    else:
        assert not q["checked"] and "apt-get install" in q["why"] and "apt-get install" in md


def test_model_file_runs_without_an_ir(tmp_path):
    path = write_model(bireal_graph(), tmp_path / "m.bnhwcpu")
    p = run("bench-cpu", path, "--repeat", "2", "-o", tmp_path / "out")
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "out" / "bench_cpu.json").read_text())
    assert r["checks"]["native"]["checked"] is False and "no IR" in r["checks"]["native"]["why"]


@pytest.mark.parametrize("args,needle", [
    (["cnv-w1a1", "--target", "cortex-m4"], "unknown CPU target 'cortex-m4'"),
    (["cnv-w1a1", "--clock-mhz", "900"], "--clock-mhz applies to the modelled ARM targets only"),
    (["missing.bnhwcpu"], "missing.bnhwcpu: no such file"),
    (["no-such-net"], "neither a file nor a bundled network (known: cnv-w1a1"),
])
def test_bad_input_is_one_line(tmp_path, args, needle):
    assert needle in one_line_error(run("bench-cpu", *args, "-o", tmp_path))


def test_corrupt_model_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.bnhwcpu"
    bad.write_bytes(b"BNHWCPU\0" + b"\x01\0\0\0" + b"\xff" * 40)
    assert "corrupt" in one_line_error(run("bench-cpu", bad, "-o", tmp_path / "o"))
