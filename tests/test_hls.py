"""HLS C++ generation: the g++ C simulation of the generated code is bit-exact against ``HwGraph.execute``."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from helpers.graphs import (
    bin_graph,
    bireal_graph,
    cell_graph,
    cnv_graph,
    cnv_w1a1_graph,
    fold,
    int_graph,
    rand_input,
    reference,
    requant_graph,
    rprelu_gap_graph,
    ties_graph,
)

from bnhw.errors import BnhwError
from bnhw.hw.hls import compile_csim, csim, generate_project, render_project, vendor_tools
from bnhw.hw.ir import HwGraph

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")


def check(g: HwGraph, x: np.ndarray, work) -> np.ndarray:
    out = csim(g, x, work)
    ref = reference(g, x)
    assert out.shape == ref.shape
    bad = np.argwhere(out != ref)
    assert bad.size == 0, f"{len(bad)} mismatches, first at {bad[0]}: csim {out[tuple(bad[0])]} ref {ref[tuple(bad[0])]}"
    return out


#: every graph the tests C-simulate (name -> factory); built in parallel once per session
GRAPHS = {
    **{f"int_{m}": (lambda m=m: fold(int_graph(), m, seed=1)) for m in ("ones", "full", "random")},
    **{f"bin_{m}": (lambda m=m: fold(bin_graph(), m, seed=3)) for m in ("ones", "full", "random")},
    **{f"bireal_{m}": (lambda m=m: fold(bireal_graph(), m, seed=5)) for m in ("ones", "random")},
    "cnv_logits": lambda: fold(cnv_graph(labels=False), "random", seed=7),
    "cnv_w1a1": cnv_w1a1_graph,
    "ties": ties_graph,
    "requant": requant_graph,
    "rprelu_gap": rprelu_gap_graph,
    "cell": lambda: fold(cell_graph(), "random", seed=9),
}


# ----------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("hls")


@pytest.fixture(scope="module")
def graphs(work):
    """Every test graph, its C simulation already compiled (g++ runs in parallel, one per core)."""
    from concurrent.futures import ThreadPoolExecutor

    built = {k: f() for k, f in GRAPHS.items()}
    order = sorted(built, key=lambda k: -len(built[k].nodes))          # big ones first
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        list(pool.map(lambda k: compile_csim(built[k], work), order))
    return built


@pytest.mark.parametrize("mode", ["ones", "full", "random"])
def test_int_path_every_folding(mode, graphs, work):
    g = graphs[f"int_{mode}"]
    check(g, rand_input(g, 6, seed=2), work)


@pytest.mark.parametrize("mode", ["ones", "full", "random"])
def test_binary_path_every_folding(mode, graphs, work):
    g = graphs[f"bin_{mode}"]
    check(g, rand_input(g, 6, seed=4), work)


def test_foldings_differ_and_cover_every_node_kind(graphs):
    from bnhw.hw.ops import op_names
    assert {n.op for g in graphs.values() for n in g.nodes} == set(op_names())
    f1, ff = graphs["int_ones"].folding(), graphs["int_full"].folding()
    assert all(v["PE"] == 1 for v in f1.values()) and any(v["PE"] > 1 for v in ff.values())
    fr = graphs["bin_random"].folding()
    assert any(1 < v.get("SIMD", 1) for v in fr.values())


@pytest.mark.parametrize("mode", ["ones", "random"])
def test_bireal_like_graph(mode, graphs, work):
    g = graphs[f"bireal_{mode}"]
    check(g, rand_input(g, 8, seed=6), work)


def test_cnv_like_chain(graphs, work):
    g = graphs["cnv_logits"]
    check(g, rand_input(g, 8, seed=8), work)


def test_cnv_w1a1_size_16_frames(graphs, work):
    """The whole CNV chain at full size (ending in LabelSelect, ~0.12 G MACs a frame): 16 frames
    C-simulate in seconds, bit-exact."""
    import time

    g = graphs["cnv_w1a1"]
    x = rand_input(g, 16, seed=11)
    t0 = time.perf_counter()
    out = csim(g, x, work)
    took = time.perf_counter() - t0
    assert np.array_equal(out, reference(g, x))
    assert took < 30, f"C simulation of 16 CNV frames took {took:.1f} s"


def test_label_select_ties_pick_the_lowest_index(graphs, work):
    x = np.array([[[[0, 3, 1, 3, -4, 3, 2, 0]]], [[[-4] * 8]], [[[1, 2, 3, 3, -1, -1, 3, 3]]]])
    assert check(graphs["ties"], x, work).reshape(-1).tolist() == [1, 0, 2]


def test_rounding_half_even_and_clipping(graphs, work):
    x = np.arange(-128, 128).reshape(1, 4, 4, 16)
    out = check(graphs["requant"], x, work)
    assert out.min() == -16 and out.max() == 15                  # saturates at both ends
    rng = np.random.default_rng(12)
    check(graphs["rprelu_gap"], rng.integers(-32, 32, (40, 2, 2, 4)), work)


def test_cell_units_window_pools_shifted_gather_and_concat(graphs, work):
    """The units cell networks add, at a random folding: every output position and channel bit-exact."""
    g = graphs["cell"]
    out = check(g, rand_input(g, 6, seed=13), work)
    assert out.shape == (6, 3, 3, 36) and len(np.unique(out)) > 10


def test_project_files_and_cache(graphs, work, tmp_path):
    import subprocess

    g = graphs["bin_random"]
    x = rand_input(g, 2, seed=10)
    p = generate_project(g, tmp_path / "prj", top="bin_top", inputs=x)
    for rel in ("firmware/bin_top.cpp", "firmware/bin_top.h", "firmware/bnhw_dataflow.h", "tb/bin_top_tb.cpp",
                "build_csim.sh", "build_prj.tcl", "README.md", "tb_data/input.bin", "tb_data/expected.bin"):
        assert (p / rel).is_file(), rel
    cpp = (p / "firmware/bin_top.cpp").read_text()
    assert "#pragma HLS DATAFLOW" in cpp and "void bin_top(hls::stream<" in cpp
    assert "#pragma HLS PIPELINE II=1" in (p / "firmware/bnhw_dataflow.h").read_text()
    tcl = (p / "build_prj.tcl").read_text()
    assert "csynth_design" in tcl and "export_design" in tcl and "set_top $top" in tcl
    assert any(f.startswith("firmware/params/MVAU") for f in render_project(g))
    # csim: one build per source hash, reused afterwards
    exe = compile_csim(g, work)
    mtime = exe.stat().st_mtime_ns
    csim(g, x, work)
    assert compile_csim(g, work) == exe and exe.stat().st_mtime_ns == mtime
    # the testbench compares against tb_data/expected.bin (what vitis_hls csim_design runs)
    r = subprocess.run([str(exe), str(p / "tb_data/input.bin"), str(tmp_path / "o.bin"),
                        str(p / "tb_data/expected.bin")], capture_output=True, text=True)
    assert r.returncode == 0 and "PASS" in r.stdout, r.stdout + r.stderr


def test_errors_are_one_line(tmp_path, monkeypatch):
    g = fold(bin_graph(), "ones")
    with pytest.raises(BnhwError, match="inputs must be"):
        csim(g, np.ones((2, 3, 3, 8)), tmp_path)
    with pytest.raises(BnhwError, match="bipolar"):
        csim(g, np.zeros((1, 7, 7, 8)), tmp_path)
    bad = g.with_folding({"MVAU_0": {"PE": 3}})
    with pytest.raises(BnhwError, match="PE"):
        render_project(bad)
    monkeypatch.setenv("CXX", "no-such-compiler-bnhw")
    with pytest.raises(BnhwError, match="not found on PATH"):
        csim(g, rand_input(g, 1, 0), tmp_path)
    monkeypatch.setenv("CXX", "false")                          # a "compiler" that always fails
    with pytest.raises(BnhwError, match=r"failed .*log: .*build_csim\.log") as e:
        csim(g, rand_input(g, 1, 0), tmp_path)
    assert "\n" not in str(e.value)


def test_vendor_tools_reports_without_failing(monkeypatch):
    monkeypatch.setenv("PATH", os.defpath)
    v = vendor_tools()
    assert set(v) >= {"vitis_hls", "vivado_hls", "vivado", "available", "message"}
    if not any(shutil.which(t) for t in ("vitis_hls", "vivado_hls")):
        assert v["available"] is False and "not on PATH" in v["message"]


def test_a_csim_binary_is_reused_for_the_same_sources_in_another_folder(graphs, tmp_path, monkeypatch):
    """The C simulation binary depends only on the generated sources and the compiler: building the same project
    into a second folder copies the first build's binary (from the per-user cache) instead of compiling."""
    monkeypatch.setenv("BNHW_HLS_CACHE", str(tmp_path / "cache"))
    g = graphs[sorted(graphs, key=lambda k: len(graphs[k].nodes))[0]]
    a = compile_csim(g, tmp_path / "a")
    b = compile_csim(g, tmp_path / "b")
    assert not (a.parent / "build_csim.log").read_text().startswith("reused ")
    assert (b.parent / "build_csim.log").read_text().startswith("reused ")
    assert a.read_bytes() == b.read_bytes() and os.access(b, os.X_OK)
