"""Latency of an architecture on a CPU target, for the search: modelled (ARM cores) or from a measured table (native).

:func:`cpu_latency` is to the CPU what :func:`bnhw.hw.estimate.estimate_fpga` is to an FPGA board: the
network with seeded fresh weights (:func:`bnhw.hw.estimate.spec_hw_graph`, as ``bnhw build`` / ``bnhw
bench-cpu`` make it without a checkpoint), lowered to the C runtime's ops (:func:`~.program.lower_cpu`),
then

* ``cortex-a9`` / ``cortex-a53`` / ``cortex-a72``: **modelled** by :func:`.perfmodel.model_program` (one
  core, the reference board's clock: what ``bnhw bench-cpu --target <core>`` prints);
* ``native``: **predicted from a table measured on this machine**: every op of the program has a key
  (:func:`op_key`: the op kind, its attributes and the shapes / layouts of its tensors and parameters, i.e.
  everything its work depends on besides the values) and the table holds the median wall time of an op of
  that key, with the kernel set and thread count of the search.  A program with keys the table lacks is
  timed once in the runtime (:func:`measure_ops`: ``NATIVE_REPEAT`` runs after ``NATIVE_WARMUP``, every op
  timed in its network, so with its inputs just written as in any run) and only the missing keys are added;
  every later network with those layer shapes reuses them.  The prediction is the sum over the ops -- the
  same sum the runtime's whole-network time is (``bench-cpu``'s latency is the sum of the per-op wall times
  of a run).

Everything is cached in one JSON file (a search keeps it in its run folder, ``cpu_cache.json``, so
``--resume`` measures nothing twice): the per-spec results and the native table, under a header naming the
model sources, and for ``native`` the machine, kernel set and thread count; a file whose header differs
(other code, another machine or kernel set) is ignored and rewritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BnhwError
from ...spec import ArchSpec, atomic_write_text
from .perfmodel import CORES
from .program import CpuOp, CpuProgram, CpuTensor

__all__ = ["CPU_TARGETS", "CpuLatencyEstimate", "LatencyCache", "cpu_latency", "is_cpu_target", "op_key",
           "program_input", "spec_cpu_program", "table_latency", "measure_ops", "check_cpu_target", "machine_name",
           "latency_cache", "forget_caches"]

#: the CPU targets: ``native`` (measured here) and the modelled ARM cores
CPU_TARGETS: tuple[str, ...] = ("native", *CORES)
NATIVE_REPEAT = 7          # timed runs of one op when it enters the table (the median is kept)
NATIVE_WARMUP = 2


def machine_name() -> str:
    """This machine's CPU, as ``/proc/cpuinfo`` names it (what a native measurement was made on)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def is_cpu_target(name: str | None) -> bool:
    return name is not None and str(name).strip().lower() in CPU_TARGETS


def check_cpu_target(name: str, threads: int = 0) -> str:
    """The canonical name of CPU target ``name``; one line naming the flag for an unknown one, or for
    ``--threads`` above 1 on a modelled core (the ARM model is of one core)."""
    key = str(name).strip().lower()
    if key not in CPU_TARGETS:
        raise BnhwError(f"--target: unknown CPU {name!r}; CPU targets: {', '.join(CPU_TARGETS)}")
    if threads < 0:
        raise BnhwError(f"--threads must be 0 (all cores) or more, got {threads}")
    if key != "native" and threads > 1:
        raise BnhwError(f"--threads {threads}: the {key} latency is modelled for one core; --threads applies to "
                        "--target native")
    return key


def _sources_version() -> str:
    """What cached latencies depend on besides their key: the model building / lowering code, the CPU
    lowering, the ARM model and the runtime's C sources (another version's file is ignored)."""
    from ..estimate import MODEL_VERSION
    from .runtime import runtime_sources

    root = Path(__file__).resolve().parent
    h = hashlib.sha256(MODEL_VERSION.encode())
    for rel in ("program.py", "perfmodel.py", "latency.py"):
        h.update((root / rel).read_bytes())
    for name, text in sorted(runtime_sources().items()):
        h.update(name.encode() + text.encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- the program of a spec
def spec_cpu_program(spec: ArchSpec) -> CpuProgram:
    """The C runtime's program of ``spec`` with the seeded fresh weights of :func:`~bnhw.hw.estimate.spec_hw_graph`."""
    from ..estimate import spec_hw_graph, torch_threads
    from .program import lower_cpu

    with torch_threads(1):
        g = spec_hw_graph(spec)
    return lower_cpu(g)


# ----------------------------------------------------------------------------- the native table
def _tensor_desc(t: CpuTensor) -> list:
    return [list(t.shape), int(t.packed), int(t.groups)]


def op_key(op: CpuOp, program: CpuProgram) -> str:
    """What the work of ``op`` depends on besides the values: its kind and attributes, its tensors' shapes and
    layouts and its parameters' shapes and types (one string; ops of equal keys run the same code on equal sizes)."""
    return json.dumps([op.op, sorted(op.attrs.items()), [_tensor_desc(program.tensors[i]) for i in op.inputs],
                       _tensor_desc(program.tensors[op.output]),
                       [[list(p.shape), str(p.dtype)] for p in op.params]], separators=(",", ":"))


def program_input(program: CpuProgram, seed: int = 0) -> np.ndarray:
    """An input of ``program``: random integers of its input tensor's declared type (``-8..7`` without one)."""
    t = program.tensors[program.input]
    lo, hi = -8, 7
    if t.dtype is not None:
        lo, hi = max(int(t.dtype.min), -(1 << 31)), min(int(t.dtype.max), (1 << 31) - 1)
    x = np.random.default_rng(seed).integers(lo, hi + 1, t.shape)
    if t.dtype is not None and t.dtype.is_bipolar:
        x = np.where(x >= 0, 1, -1)
    return x


def measure_ops(program: CpuProgram, *, kernels: str | None, threads: int, repeat: int = NATIVE_REPEAT,
                warmup: int = NATIVE_WARMUP) -> np.ndarray:
    """Median wall time (seconds) of every op of ``program`` in the C runtime, ``repeat`` whole-network runs
    after ``warmup`` on :func:`program_input` (each op timed in its network: its inputs were just written)."""
    from .runtime import CpuModel

    m = CpuModel(program, kernels=kernels, threads=threads)
    per, _ = m.time(program_input(program), repeat=repeat, warmup=warmup)
    return np.median(per, axis=0)


# ----------------------------------------------------------------------------- the estimate
@dataclass(frozen=True)
class CpuLatencyEstimate:
    """One architecture on one CPU target (see the module docstring for how ``ms`` is obtained)."""

    arch: str
    target: str
    ms: float                                   # milliseconds per image
    how: str                                    # "modelled" | "measured"
    kernels: str                                # the kernel set (modelled: the NEON kernels the model is of)
    threads: int
    ops: int                                    # ops of the program
    bmacs: int
    macs: int
    where: str                                  # the core and clock (modelled) or this machine (measured)
    new_table_entries: int = 0                  # native: ops measured for this estimate (0: all from the table)
    seconds: float = 0.0                        # time the estimate took (when computed, not when cached)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CpuLatencyEstimate:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def describe(self) -> str:
        if self.how == "modelled":
            return f"{self.ms:.3f} ms on {self.where} (modelled, one core, {self.kernels} kernels)"
        return (f"{self.ms:.3f} ms on {self.where} (measured per layer shape, {self.kernels} kernels, "
                f"{self.threads} thread{'s' if self.threads != 1 else ''})")


class LatencyCache:
    """Per-spec estimates and the native per-op table, in memory and, with ``path``, in a JSON file (read once,
    rewritten atomically after every change).  ``header`` names what the entries are valid for."""

    def __init__(self, path: str | Path | None, header: dict[str, Any]):
        self.path = Path(path) if path is not None else None
        self.header = dict(header)
        self.specs: dict[str, dict] = {}
        self.table: dict[str, float] = {}
        self.table_hits = 0
        self.table_misses = 0
        self._lock = threading.Lock()
        if self.path is not None and self.path.is_file():
            try:
                d = json.loads(self.path.read_text())
                if isinstance(d, dict) and d.get("header") == self.header:
                    self.specs = dict(d.get("specs", {}))
                    self.table = {k: float(v) for k, v in d.get("table", {}).items()}
            except (OSError, ValueError, TypeError, AttributeError):
                pass

    def save(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps({"header": self.header, "table": self.table, "specs": self.specs},
                                                    allow_nan=False) + "\n")


_CACHES: dict[tuple, LatencyCache] = {}
_CACHES_LOCK = threading.Lock()


def latency_cache(path: str | Path | None, target: str, *, threads: int = 0,
                  kernels: str | None = None) -> LatencyCache:
    """The process-wide :class:`LatencyCache` of ``target`` backed by ``path`` (one object per file and header;
    ``None``: in memory only).  For ``native`` the header names this machine, the kernel set the runtime runs
    for ``kernels`` and the thread count (0: all online cores)."""
    target = check_cpu_target(target, threads)
    if target == "native":
        kset, nthreads = _native_setup(kernels, threads)
        header = {"sources": _sources_version(), "target": "native", "machine": machine_name(), "kernels": kset,
                  "threads": nthreads}
    else:
        header = {"sources": _sources_version(), "target": target}
    key = (str(Path(path).resolve()) if path is not None else None, json.dumps(header, sort_keys=True))
    with _CACHES_LOCK:
        if key not in _CACHES:
            _CACHES[key] = LatencyCache(path, header)
        return _CACHES[key]


def forget_caches() -> None:
    """Drop the in-process caches (their files stay): the next call reads the files as a new process would."""
    with _CACHES_LOCK:
        _CACHES.clear()


def _native_setup(kernels: str | None, threads: int) -> tuple[str, int]:
    """The kernel set and thread count the runtime really runs (``auto`` -> e.g. ``avx512``; 0 -> all cores)."""
    from . import kernels as cpu_kernels
    from .runtime import default_threads

    return cpu_kernels.resolve(kernels), int(threads or default_threads())


def table_latency(program: CpuProgram, cache: LatencyCache, *, kernels: str, threads: int,
                  repeat: int = NATIVE_REPEAT) -> tuple[float, int]:
    """The native latency (seconds) of ``program`` from ``cache``'s table; when some op's key is missing, the
    program is timed once (:func:`measure_ops`) and the missing keys get their op's median (a key occurring
    several times: the median over those ops).  Returns (seconds, table entries added now)."""
    keys = [op_key(op, program) for op in program.ops]
    with cache._lock:
        missing = {k for k in keys if k not in cache.table}
    if missing:
        times = measure_ops(program, kernels=kernels, threads=threads, repeat=repeat)
        with cache._lock:
            for k in missing:
                cache.table[k] = float(np.median([t for kk, t in zip(keys, times) if kk == k]))
        cache.save()
    with cache._lock:
        cache.table_misses += sum(k in missing for k in keys)
        cache.table_hits += sum(k not in missing for k in keys)
        return float(sum(cache.table[k] for k in keys)), len(missing)


def cpu_latency(spec: ArchSpec, target: str, *, threads: int = 0, kernels: str | None = None,
                clock_mhz: float | None = None, cache_path: str | Path | None = None,
                program: CpuProgram | None = None) -> CpuLatencyEstimate:
    """Latency of ``spec`` per image on CPU ``target`` (see the module docstring); cached per (spec without its
    name, target, kernel set, threads, clock) in ``cache_path`` (``None``: in this process only)."""
    target = check_cpu_target(target, threads)
    if clock_mhz is not None and not (clock_mhz > 0 and math.isfinite(clock_mhz)):
        raise BnhwError(f"--clock-mhz must be a positive number, got {clock_mhz}")
    if target == "native" and clock_mhz is not None:
        raise BnhwError("--clock-mhz applies to the modelled ARM targets only (native is measured)")
    cache = latency_cache(cache_path, target, threads=threads, kernels=kernels)
    kset, nthreads = (cache.header["kernels"], cache.header["threads"]) if target == "native" else ("neon", 1)
    key = json.dumps([spec.replace(name="").to_dict(), target, kset, nthreads, clock_mhz], sort_keys=True,
                     separators=(",", ":"))
    with cache._lock:
        hit = cache.specs.get(key)
    if hit is not None:
        return dataclasses.replace(CpuLatencyEstimate.from_dict(hit), arch=spec.name, new_table_entries=0,
                                   seconds=0.0)
    t0 = time.perf_counter()
    prog = program if program is not None else spec_cpu_program(spec)
    if target == "native":
        secs, new = table_latency(prog, cache, kernels=kset, threads=nthreads)
        est = CpuLatencyEstimate(spec.name, target, secs * 1e3, "measured", kset, nthreads, len(prog.ops),
                                 int(prog.bmacs), int(prog.macs), cache.header["machine"], new,
                                 time.perf_counter() - t0)
    else:
        from .perfmodel import get_core, model_program

        rep = model_program(prog, target, clock_mhz=clock_mhz)
        core = get_core(target)
        est = CpuLatencyEstimate(spec.name, target, rep.seconds * 1e3, "modelled", kset, 1, len(prog.ops),
                                 int(prog.bmacs), int(prog.macs), f"{core.title} at {rep.clock_mhz:.0f} MHz "
                                 f"({core.board})", 0, time.perf_counter() - t0)
    with cache._lock:
        cache.specs[key] = est.to_dict()
    cache.save()
    return est
