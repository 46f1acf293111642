"""CPU latency bounds in the cell searches: `bnhw search --method bnas|bars --target cortex-a53|native
--max-latency-ms N [--threads T]` (bnhw.flows.cell_search with bnhw.hw.constraints.CpuLatency)."""

import csv
import json

import pytest
from click.testing import CliRunner
from helpers.graphs import cell_graph

import bnhw.hw.cpu.latency as lat
from bnhw.cli import main
from bnhw.errors import BnhwError
from bnhw.flows.cell_search import CellSearchOptions, run_cell_search
from bnhw.hw.constraints import CpuLatency
from bnhw.hw.cpu.program import lower_cpu
from bnhw.spec import load_spec

#: a BNAS search of a 3-cell network at 8x8 on 32 images (seconds)
TINY = dict(method="bnas", budget=40e3, cells=3, resolution=8, search_resolution=8, epochs=1, train_images=32,
            verify_images=2, seed=0)


@pytest.mark.parametrize("args,msg", [
    (["--method", "bnas", "--target", "cortex-a99"], "--target: unknown target 'cortex-a99'; known boards: pynq-z2"),
    (["--method", "bars", "--target", "cortex-a53", "--min-fps", "100"],
     "--min-fps applies to FPGA boards; for the CPU target cortex-a53 bound the latency with --max-latency-ms"),
    (["--method", "bnas", "--target", "cortex-a72", "--threads", "2"],
     "--threads 2: the cortex-a72 latency is modelled for one core"),
    (["--method", "bars", "--target", "kv260", "--threads", "2"], "--threads applies to CPU targets"),
    (["--method", "bnas", "--threads", "1"], "--threads needs a CPU target"),
    (["--method", "bnas", "--max-latency-ms", "2"], "--max-latency-ms needs a board: add --target"),
])
def test_cpu_flags_of_cell_searches_are_one_line(tmp_path, args, msg):
    r = CliRunner().invoke(main, ["search", "--budget", "40K", *args, "-o", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and msg in r.output and r.output.strip().count("\n") == 0
    assert "Traceback" not in r.output and not (tmp_path / "o").exists()      # refused before any work


def test_bnas_search_under_a_cortex_a53_bound(tmp_path):
    """The derived network's modelled A53 latency recorded (--target alone), then bounded at 0.9x it: the
    search shrinks the network until it meets the bound, reports every candidate, and the chosen one differs."""
    free = run_cell_search(CellSearchOptions(**TINY, target="cortex-a53"), tmp_path / "free")
    f = free["cpu"]
    assert f["how"] == "modelled" and f["kernels"] == "neon" and f["threads"] == 1 and not f["shrunk"]
    assert f["max_latency_ms"] is None and len(f["candidates"]) == 1 and f["chosen"]["meets"]
    bound = 0.9 * f["ms_per_image"]
    out = tmp_path / "bound"
    r = run_cell_search(CellSearchOptions(**TINY, target="cortex-a53", max_latency_ms=bound), out)
    c = r["cpu"]
    assert c["shrunk"] and c["ms_per_image"] <= bound and c["max_latency_ms"] == bound
    first, chosen = c["candidates"][0], c["candidates"][-1]
    assert first["short"] == free["short"] and first["latency_ms"] == f["ms_per_image"] and not first["meets"]
    assert chosen == c["chosen"] and chosen["meets"] and chosen["latency_ms"] == c["ms_per_image"]
    assert r["short"] != free["short"] and r["ops"] < free["ops"] and r["ops"] == chosen["ops"]
    assert c["rejected_by_hardware_constraints"] == len(c["candidates"]) - 1
    spec = load_spec(out / "best_arch.json")
    assert spec.short() == chosen["short"] and spec.genotype == load_spec(tmp_path / "free" / "best_arch.json").genotype
    rows = list(csv.DictReader(open(out / "measured.csv")))
    assert [float(x["latency_ms"]) for x in rows] == [pytest.approx(x["latency_ms"], abs=1e-4)
                                                      for x in c["candidates"]]
    assert all((float(x["latency_ms"]) <= bound) == (x["feasible"] == "1") for x in rows)
    assert [x["chosen"] for x in rows] == ["0"] * (len(rows) - 1) + ["1"]
    assert (out / "latency.png").stat().st_size > 0 and r["export"]["binary_mismatches"] == 0
    assert json.loads((out / "config.json").read_text())["target"] == "cortex-a53"
    # the run folder's cache serves a later process: the chosen network is not lowered again
    lat.forget_caches()
    cached = CpuLatency("cortex-a53", bound, cache_path=str(out / "cpu_cache.json"))
    import unittest.mock as mock
    with mock.patch.object(lat, "spec_cpu_program", side_effect=AssertionError("lowered a cached network")):
        assert cached.measure(spec) == c["ms_per_image"]


def test_native_bound_nothing_meets_is_one_line(tmp_path, monkeypatch):
    """--target native --threads 1: every candidate's program (here the cell ops' test graph, so that nothing
    is lowered) timed per layer shape -- Concat, the window pools included -- and a bound below them all is
    refused in one line naming the flag."""
    program = lower_cpu(cell_graph())
    monkeypatch.setattr(lat, "spec_cpu_program", lambda spec: program)
    ms = lat.cpu_latency(load_spec("bnas-kv260-8x8"), "native", threads=1, program=program).ms
    keys = {lat.op_key(o, program) for o in program.ops}
    assert {json.loads(k)[0] for k in keys} >= {"CONCAT", "WPOOL"}
    out = tmp_path / "n"
    with pytest.raises(BnhwError) as e:
        run_cell_search(CellSearchOptions(**TINY, target="native", threads=1, max_latency_ms=ms / 4), out)
    msg = str(e.value)
    assert msg.startswith(f"--max-latency-ms {ms / 4:g}: no network of the derived bnas cell meets latency on "
                          "native <= ") and "raise --max-latency-ms" in msg and "\n" not in msg
    cache = json.loads((out / "cpu_cache.json").read_text())
    assert cache["header"]["threads"] == 1 and set(cache["table"]) == keys
    assert not (out / "best.json").exists()
