"""FPGA estimates as search constraints: estimate_fpga, FpgaFps / FpgaLatency, `bnhw search --target`."""

import csv
import json
import math

import pytest
from click.testing import CliRunner

import bnhw.hw.estimate as fpga
from bnhw.cli import main
from bnhw.design.constraints import Constraint
from bnhw.errors import BnhwError
from bnhw.estimators.ops import ops_of
from bnhw.flows.search import SearchOptions, run_search
from bnhw.hw.boards import get_board
from bnhw.hw.constraints import FpgaFps, FpgaLatency
from bnhw.hw.estimate import EstimateCache, estimate_fpga, spec_hw_graph
from bnhw.hw.folding import board_budget, maximize_fps
from bnhw.spec import load_spec


@pytest.fixture(scope="module")
def smallest():
    return load_spec("nasbnn-cifar-smallest")


@pytest.fixture(scope="module")
def smallest_graph(smallest):
    return spec_hw_graph(smallest)


def test_fps_constraint_equals_the_folding_of_the_lowered_graph(smallest, smallest_graph):
    board = get_board("pynq-z2")
    direct = maximize_fps(smallest_graph, board_budget(board, 0.85), board_name=board.name)
    c = FpgaFps("pynq-z2", 200)
    assert isinstance(c, Constraint) and c.name == "fps" and c.unit == "FPS"
    fps = c.measure(smallest)
    assert fps > 0 and fps == pytest.approx(direct.fps(board.clock_mhz), rel=1e-12)
    assert c.feasible(fps) and not FpgaFps("pynq-z2", fps * 1.01).feasible(fps)
    assert c.describe() == "FPS on pynq-z2 >= 200 (analytical)"
    est = c.estimate(smallest)
    assert est.fits and est.ii_cycles == direct.ii and est.folding == direct.graph.folding()
    assert est.resources == {k: direct.total[k] for k in ("LUT", "BRAM18", "URAM", "DSP")}
    assert est.latency_cycles == fpga.critical_path_cycles(direct.graph, direct.cycles)
    assert est.latency_ms == pytest.approx(est.latency_cycles / 1e5)
    assert est.utilisation["LUT"] == pytest.approx(est.resources["LUT"] / 53_200) and est.utilisation["URAM"] is None
    assert est.units == len(smallest_graph.nodes) and est.source.startswith("analytical")
    lat = FpgaLatency("pynq-z2", est.latency_ms * 2)
    assert lat.name == "latency_ms" and lat.feasible(lat.measure(smallest))


def test_largest_cifar_subnet_does_not_fit_pynq_z2():
    spec = load_spec("nasbnn-cifar-largest")
    c = FpgaFps("pynq-z2", 1)
    assert c.measure(spec) == 0.0 and not c.feasible(0.0)
    est = c.estimate(spec)
    assert not est.fits and est.fps == 0 and est.ii_cycles is None and "does not fit" in est.reason
    assert est.resources["BRAM18"] > 280                # the fully folded design, for reference
    assert FpgaLatency("pynq-z2", 1e9).measure(spec) == math.inf


def test_cache_in_memory_and_on_disk(tmp_path, smallest, smallest_graph, monkeypatch):
    calls = []

    def graph(spec):
        calls.append(spec.name)
        return smallest_graph

    monkeypatch.setattr(fpga, "spec_hw_graph", graph)
    path = tmp_path / "cache.json"
    a = estimate_fpga(smallest, "pynq-z2", cache=path)
    b = estimate_fpga(smallest.replace(name="renamed"), "pynq-z2", cache=path)    # the name is not in the key
    assert len(calls) == 1 and b.arch == "renamed" and b.fps == a.fps and b.folding == a.folding
    estimate_fpga(smallest, "pynq-z2", cache=path, margin=0.5)                    # another key
    assert len(calls) == 2
    on_disk = EstimateCache(path)                     # a fresh process would read the file
    assert len(on_disk) == 2
    monkeypatch.setattr(fpga, "spec_hw_graph", lambda spec: pytest.fail("recomputed a cached estimate"))
    assert estimate_fpga(smallest, "pynq-z2", cache=on_disk).fps == a.fps
    path.write_text("{corrupted")
    assert len(EstimateCache(path)) == 0               # ignored, rewritten on the next entry


def test_refine_replaces_ii_and_latency(smallest, smallest_graph, monkeypatch):
    monkeypatch.setattr(fpga, "spec_hw_graph", lambda spec: smallest_graph)
    plain = estimate_fpga(smallest, "pynq-z2", cache=None)

    def cyclesim(g):
        assert g.folding() == plain.folding           # it gets the folded graph
        return {"ii_cycles": 2 * plain.ii_cycles, "latency_cycles": 3 * plain.latency_cycles}

    cyclesim.label = "cycle simulation (test)"
    r = estimate_fpga(smallest, "pynq-z2", refine=cyclesim)
    assert r.fps == pytest.approx(plain.fps / 2) and r.latency_cycles == 3 * plain.latency_cycles
    assert r.resources == plain.resources and "cycle simulation (test)" in r.source
    assert "cycle simulation (test)" in FpgaFps("pynq-z2", 1, refine=cyclesim).describe()


def test_bad_constraint_input():
    with pytest.raises(BnhwError, match="known boards: pynq-z2"):
        FpgaFps("pynq-z3", 100)
    with pytest.raises(BnhwError, match="minimum FPS"):
        FpgaFps("pynq-z2", -1)
    with pytest.raises(BnhwError, match="margin"):
        FpgaFps("pynq-z2", 1, margin=1.5)
    assert FpgaFps("KV260", 0).describe().startswith("FPS on kv260 recorded")


@pytest.mark.parametrize("args,msg", [
    (["--min-fps", "500"], "--min-fps needs a board: add --target BOARD"),
    (["--max-latency-ms", "5"], "--max-latency-ms needs a board"),
    (["--target", "pynq-z9", "--min-fps", "500"], "unknown target 'pynq-z9'; known boards: pynq-z2"),
])
def test_search_hardware_options_errors_are_one_line(tmp_path, args, msg):
    r = CliRunner().invoke(main, ["search", "--budget", "1M", "--space", "nasbnn-cifar", *args,
                                  "-o", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    assert msg in r.output and r.output.strip().count("\n") == 0 and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()             # refused before any work


def test_search_refuses_bounds_the_smallest_subnet_misses(tmp_path):
    r = CliRunner().invoke(main, ["search", "--budget", "1M", "--space", "nasbnn-cifar", "--target", "pynq-z2",
                                  "--min-fps", "1e6", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    assert "the smallest subnet of nasbnn-cifar reaches" in r.output and "FPS on pynq-z2 >= 1e+06" in r.output
    assert r.output.strip().count("\n") == 0 and not (tmp_path / "o" / "supernet.pt").exists()


def test_search_refuses_a_board_the_smallest_subnet_does_not_fit(tmp_path):
    opts = SearchOptions(budget=1e6, space="nasbnn-cifar", target="pynq-z2", min_fps=1, margin=0.5)
    with pytest.raises(BnhwError, match=r"smallest subnet of nasbnn-cifar \(32x32\) does not fit pynq-z2"):
        run_search(opts, tmp_path / "o")
    r = CliRunner().invoke(main, ["search", "--budget", "1M", "--space", "nasbnn-cifar", "--target", "pynq-z2",
                                  "--min-fps", "1", "--margin", "0.5", "-o", str(tmp_path / "o2")])   # via the CLI
    assert r.exit_code == 2 and "does not fit pynq-z2" in r.output and r.output.strip().count("\n") == 0


@pytest.mark.slow
def test_search_under_ops_and_fps(tmp_path, monkeypatch):
    """Tiny search on ultra96-v2: the CIFAR-space subnets near the smallest reach 31,250..32,552 FPS (their
    AddRequant multipliers in DSP slices where that pays), so --min-fps 32000 rejects some OPs-feasible candidates."""
    out = tmp_path / "s"
    common = ["search", "--space", "nasbnn-cifar", "--budget", "0.2M", "--train-images", "96", "--batch-size", "32",
              "--population", "3", "--generations", "1", "--bucket", "0.01", "--epochs", "0",
              "--finetune-epochs", "0", "--target", "ultra96-v2",
              "-o", str(out)]
    args = [*common, "--min-fps", "32000"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "FPS on ultra96-v2 (modelled)" in r.output
    best = json.loads((out / "best.json").read_text())
    spec = load_spec(out / "best_arch.json")
    assert ops_of(spec) <= 0.2e6 and best["metrics"]["fps"] >= 32000
    assert best["fpga"]["estimate"]["fps"] == best["metrics"]["fps"] and best["fpga"]["estimate"]["fits"]
    assert "FPS on ultra96-v2 >= 32000 (analytical)" in best["constraints"]
    assert estimate_fpga(spec, "ultra96-v2").fps == pytest.approx(best["metrics"]["fps"])
    for name in ("evaluated.csv", "pareto.csv"):
        rows = list(csv.DictReader(open(out / name)))
        assert rows and all(float(x["fps"]) >= 32000 and float(x["ops"]) <= 0.2e6 for x in rows)
    measured = list(csv.DictReader(open(out / "measured.csv")))
    rejected = [x for x in measured if x["feasible"] == "0"]
    assert rejected and all(float(x["fps"]) < 32000 and x["scored"] == "0" for x in rejected)
    assert best["fpga"]["rejected_by_hardware_constraints"] == len(rejected)
    assert "FPS on ultra96-v2 >= 32000" in (out / "log.txt").read_text()
    # resuming the finished search re-estimates nothing (fpga_cache.json) and keeps measured.csv
    cache = json.loads((out / "fpga_cache.json").read_text())
    assert len(cache["entries"]) == len(measured)
    fpga._FILE_CACHES.clear()
    fpga.DEFAULT_CACHE.entries.clear()
    monkeypatch.setattr(fpga, "spec_hw_graph", lambda spec: pytest.fail("re-estimated after --resume"))
    r = CliRunner().invoke(main, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    assert list(csv.DictReader(open(out / "measured.csv"))) == measured
    # resuming with another --min-fps is refused
    r = CliRunner().invoke(main, [*common, "--min-fps", "30000", "--resume"])
    assert r.exit_code == 2 and "other settings" in r.output
