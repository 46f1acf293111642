"""CPU latency in the search loop: the latency table and cache (bnhw.hw.cpu.latency), the CpuLatency constraint,
`bnhw search --target cortex-a53|native --max-latency-ms N [--threads T]` and its one-line errors."""

import csv
import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.graphs import cnv_graph

import bnhw.hw.cpu.latency as lat
from bnhw.cli import main
from bnhw.design.constraints import Constraint
from bnhw.errors import BnhwError
from bnhw.flows.search import SearchOptions, run_search
from bnhw.hw.constraints import CpuLatency
from bnhw.hw.cpu.perfmodel import model_program
from bnhw.hw.cpu.program import lower_cpu
from bnhw.hw.cpu.runtime import CpuModel
from bnhw.spec import load_spec


@pytest.fixture(scope="module")
def smallest():
    return load_spec("nasbnn-cifar-smallest")


@pytest.fixture(scope="module")
def program(smallest):
    return lat.spec_cpu_program(smallest)


def test_table_has_one_entry_per_layer_shape_and_sums_to_the_prediction(tmp_path, program, monkeypatch):
    keys = [lat.op_key(o, program) for o in program.ops]
    assert 1 < len(set(keys)) < len(keys)           # repeated blocks share layer shapes
    cache = lat.latency_cache(tmp_path / "c.json", "native", threads=1)
    calls = []

    def timed(prog, **kw):
        calls.append(kw)
        return np.arange(1, len(prog.ops) + 1, dtype=float) * 1e-6     # op i "takes" (i + 1) us

    monkeypatch.setattr(lat, "measure_ops", timed)
    secs, new = lat.table_latency(program, cache, kernels=cache.header["kernels"], threads=1)
    assert new == len(set(keys)) == len(cache.table) and calls == [{"kernels": cache.header["kernels"], "threads": 1,
                                                                        "repeat": lat.NATIVE_REPEAT}]
    want = {k: float(np.median([i + 1 for i, kk in enumerate(keys) if kk == k])) * 1e-6 for k in set(keys)}
    assert cache.table == pytest.approx(want)
    assert secs == pytest.approx(sum(want[k] for k in keys))
    # a program whose layer shapes are all in the table is not timed again
    monkeypatch.setattr(lat, "measure_ops", lambda *a, **k: pytest.fail("timed a known layer shape again"))
    assert lat.table_latency(program, cache, kernels=cache.header["kernels"], threads=1) == (pytest.approx(secs), 0)
    # the file serves a new process (same machine, kernel set, threads); another thread count is another table
    lat.forget_caches()
    again = lat.latency_cache(tmp_path / "c.json", "native", threads=1)
    assert again is not cache and again.table == cache.table
    assert lat.latency_cache(tmp_path / "c.json", "native", threads=2).table == {}


def test_native_estimate_times_the_program_in_the_runtime(tmp_path, smallest, program, monkeypatch):
    monkeypatch.setattr(lat, "spec_cpu_program", lambda spec: program)
    e = lat.cpu_latency(smallest, "native", threads=1, cache_path=tmp_path / "c.json")
    assert e.how == "measured" and e.threads == 1 and e.kernels == CpuModel(program, threads=1).kernels
    assert e.new_table_entries == len({lat.op_key(o, program) for o in program.ops}) and 0 < e.ms < 1e3
    # cached per spec (the name is not in the key), on disk too
    lat.forget_caches()
    monkeypatch.setattr(lat, "spec_cpu_program", lambda spec: pytest.fail("rebuilt a cached spec"))
    e2 = lat.cpu_latency(smallest.replace(name="renamed"), "native", threads=1, cache_path=tmp_path / "c.json")
    assert e2.ms == e.ms and e2.arch == "renamed" and e2.new_table_entries == 0


def test_modelled_constraint_is_the_perf_model(smallest, program, monkeypatch):
    monkeypatch.setattr(lat, "spec_cpu_program", lambda spec: program)
    c = CpuLatency("Cortex-A53", 5.0)
    assert isinstance(c, Constraint) and c.name == "latency_ms" and c.unit == "ms" and c.target == "cortex-a53"
    ms = c.measure(smallest)
    assert ms == model_program(program, "cortex-a53").seconds * 1e3
    assert c.feasible(ms) == (ms <= 5.0) and CpuLatency("cortex-a53").feasible(1e9)
    assert c.describe() == "latency on cortex-a53 <= 5 ms (modelled, one core)"
    est = c.estimate(smallest)
    assert est.how == "modelled" and est.kernels == "neon" and est.threads == 1 and "1333 MHz" in est.where
    assert CpuLatency("cortex-a9").measure(smallest) > ms       # the A9 at 650 MHz is slower


def test_bad_constraint_input():
    with pytest.raises(BnhwError, match="--target: unknown CPU 'cortex-a99'; CPU targets: native, cortex-a9"):
        CpuLatency("cortex-a99", 5)
    with pytest.raises(BnhwError, match="--threads 4: the cortex-a9 latency is modelled for one core"):
        CpuLatency("cortex-a9", 5, threads=4)
    with pytest.raises(BnhwError, match="--max-latency-ms must be a positive number"):
        CpuLatency("native", -1)


@pytest.mark.parametrize("args,msg", [
    (["--target", "cortex-a99", "--max-latency-ms", "5"],
     "--target: unknown target 'cortex-a99'; known boards: pynq-z2, pynq-z1, ultra96-v2, kv260, zcu104; CPUs: native, "
     "cortex-a9, cortex-a53, cortex-a72"),
    (["--target", "cortex-a53", "--min-fps", "100"], "--min-fps applies to FPGA boards; for the CPU target cortex-a53"),
    (["--target", "cortex-a53", "--threads", "2"], "--threads 2: the cortex-a53 latency is modelled for one core"),
    (["--target", "pynq-z2", "--threads", "2"], "--threads applies to CPU targets"),
    (["--threads", "1"], "--threads needs a CPU target"),
])
def test_search_cpu_options_errors_are_one_line(tmp_path, args, msg):
    r = CliRunner().invoke(main, ["search", "--budget", "1M", "--space", "nasbnn-cifar", *args,
                                  "-o", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    assert msg in r.output and r.output.strip().count("\n") == 0 and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()             # refused before any work


def test_search_refuses_a_latency_the_smallest_subnet_misses(tmp_path, program, monkeypatch):
    monkeypatch.setattr(lat, "spec_cpu_program", lambda spec: program)
    r = CliRunner().invoke(main, ["search", "--budget", "1M", "--space", "nasbnn-cifar", "--target", "cortex-a53",
                                  "--max-latency-ms", "0.5", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: --max-latency-ms 0.5: the smallest subnet of nasbnn-cifar already takes 3.")
    assert "raise --max-latency-ms" in r.output and r.output.strip().count("\n") == 0
    assert not (tmp_path / "o" / "supernet.pt").exists()


TINY = dict(budget=0.6e6, space="nasbnn-cifar", train_images=32, seed=0)


def _opts(**kw) -> SearchOptions:
    from bnhw.design.evolution import EvolutionConfig
    from bnhw.design.train import TrainConfig
    from bnhw.flows.standalone import StandaloneOptions

    return SearchOptions(**TINY, calib_batches=1, calib_batch_size=32,
                         train=TrainConfig(epochs=0, warmup_epochs=0, batch_size=32),
                         evolution=EvolutionConfig(population=2, generations=0, bucket_mops=0.01),
                         standalone=StandaloneOptions(subnets=0, epochs=0), device="cpu", **kw)


def test_native_search_under_a_latency_bound(tmp_path, smallest, program, monkeypatch):
    """A tiny native search whose candidates run one of two real programs (lowering every candidate would take
    seconds each): a small CNV-like net for the smallest subnet and about half the others, the smallest subnet's
    own network (several times slower) for the rest; a bound between the two rejects the latter."""
    fast = lower_cpu(cnv_graph())

    def lowered(spec):
        slow = spec.short() != smallest.short() and hashlib.sha256(spec.short().encode()).digest()[0] % 2
        return program if slow else fast

    monkeypatch.setattr(lat, "spec_cpu_program", lowered)
    t_fast = lat.cpu_latency(smallest, "native", threads=1, program=fast).ms
    t_slow = lat.cpu_latency(load_spec("nasbnn-cifar-largest"), "native", threads=1, program=program).ms
    assert t_slow > 3 * t_fast
    bound = (t_fast * t_slow) ** 0.5
    out = tmp_path / "n"
    r = run_search(_opts(target="native", threads=1, max_latency_ms=bound), out)
    best = json.loads((out / "best.json").read_text())
    cpu = best["cpu"]
    assert cpu["how"] == "measured" and cpu["threads"] == 1 and cpu["ms_per_image"] == r.best.metrics["latency_ms"]
    assert cpu["ms_per_image"] <= bound and cpu["max_latency_ms"] == bound
    assert cpu["whole_network_ms"] > 0 and cpu["kernels"] == CpuModel(program, threads=1).kernels
    assert f"latency on native <= {bound:g} ms (measured per layer shape on this machine)" in best["constraints"]
    measured = list(csv.DictReader(open(out / "measured.csv")))
    rejected = [m for m in measured if m["feasible"] == "0"]
    assert rejected and len(rejected) == cpu["rejected_by_hardware_constraints"]
    assert all((float(m["latency_ms"]) <= bound) == (m["feasible"] == "1") for m in measured)
    assert all(m["scored"] == "0" for m in rejected)
    assert all(float(x["latency_ms"]) <= bound for x in csv.DictReader(open(out / "evaluated.csv")))
    cache = json.loads((out / "cpu_cache.json").read_text())
    assert cache["header"]["threads"] == 1 and len(cache["specs"]) == len(measured)
    assert len(cache["table"]) == len({lat.op_key(o, p) for p in (fast, program) for o in p.ops})
    assert json.loads((out / "config.json").read_text())["threads"] == 1
    assert (out / "pareto.png").stat().st_size > 0
    # the run folder's cache serves a resumed search (a new process): nothing lowered or timed again
    lat.forget_caches()
    monkeypatch.setattr(lat, "spec_cpu_program", lambda spec: pytest.fail("lowered a cached architecture"))
    monkeypatch.setattr(lat, "measure_ops", lambda *a, **k: pytest.fail("timed a known layer shape"))
    c = CpuLatency("native", bound, threads=1, cache_path=str(out / "cpu_cache.json"))
    assert [c.measure(load_spec(out / "best_arch.json"))] == [r.best.metrics["latency_ms"]]
