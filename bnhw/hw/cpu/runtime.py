"""Python binding of the C runtime (ctypes): run a lowered network natively, read every tensor, time every op.

The same C sources build the standalone ``bnhw-run`` executable for the board
(:func:`build_runner`, natively or with a cross compiler; ``make cpu-runtime``).
"""

from __future__ import annotations

import ctypes
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from ...errors import BnhwError
from ..cbuild import load_library, shared_library
from ..ir import HwGraph
from .program import CpuProgram, lower_cpu, to_bytes

__all__ = ["CpuModel", "runtime_sources", "runner_sources", "build_runner", "MAINS", "run_standalone", "xorpop_peak",
           "compiled_kernel_sets", "usable_kernel_sets", "default_threads", "POPCOUNT_PEAKS"]

#: C files with a ``main`` (executables, not part of the library)
MAINS = ("bnhw_run.c", "kernel_test.c", "bgemm_count.c")


def runtime_sources(with_main: str | None = None) -> dict[str, str]:
    """``{file name: text}`` of the runtime library (kernels + interpreter), plus one ``main`` file."""
    src = resources.files("bnhw.hw.cpu").joinpath("src")
    out = {}
    for f in sorted(src.iterdir(), key=lambda p: p.name):
        if f.name.endswith((".c", ".h")) and (f.name not in MAINS or f.name == with_main):
            out[f.name] = f.read_text()
    return out


def runner_sources() -> dict[str, str]:
    """Sources of the standalone ``bnhw-run`` executable."""
    return runtime_sources(with_main="bnhw_run.c")


def build_runner(arch: str = "native", out_dir: str | Path | None = None) -> Path:
    """Build ``bnhw-run`` for ``arch`` (``native``, ``armv7``, ``aarch64``); cached by source hash."""
    from .cross import build_executable

    return build_executable(arch, runner_sources(), "bnhw-run", out_dir=out_dir)


_LIB = None


def _lib() -> ctypes.CDLL:
    global _LIB
    if _LIB is None:
        from .kernels import native_flags

        lib = load_library(shared_library("bnhw_cpu", runtime_sources(), tuple(native_flags())))
        P, Int, I64, S = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_char_p
        sig = {
            "bnhw_model_load_buffer": (P, [ctypes.c_char_p, ctypes.c_uint64]),
            "bnhw_model_free": (None, [P]),
            "bnhw_last_error": (S, []),
            "bnhw_model_set_kernels": (Int, [P, S]),
            "bnhw_model_kernels": (S, [P]),
            "bnhw_model_input_size": (I64, [P]),
            "bnhw_model_output_size": (I64, [P]),
            "bnhw_model_run": (Int, [P, P, P]),
            "bnhw_model_n_ops": (Int, [P]),
            "bnhw_model_op_name": (S, [P, Int]),
            "bnhw_model_op_seconds": (ctypes.c_double, [P, Int]),
            "bnhw_model_n_tensors": (Int, [P]),
            "bnhw_model_tensor_size": (I64, [P, Int]),
            "bnhw_model_tensor": (Int, [P, Int, P]),
            "bnhw_kernel_sets": (S, []),
            "bnhw_kernel_sets_usable": (S, []),
            "bnhw_model_set_threads": (Int, [P, Int]),
            "bnhw_model_threads": (Int, [P]),
            "bnhw_default_threads": (Int, []),
            "bnhw_model_set_split_threshold": (None, [P, ctypes.c_double]),
            "bnhw_model_set_fusion": (None, [P, Int]),
            "bnhw_model_n_fused": (Int, [P]),
            "bnhw_model_op_fused": (Int, [P, Int]),
            "bnhw_xorpop_peak": (I64, [P, Int, Int, P]),
        }
        if hasattr(lib, "bnhw_xorpop_peak_avx2"):    # x86-64 builds
            for kind in POPCOUNT_PEAKS[1:]:
                sig[f"bnhw_xorpop_peak_{kind}"] = (I64, [P, Int, Int, P])
        for name, (res, args) in sig.items():
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
        _LIB = lib
    return _LIB


def compiled_kernel_sets() -> list[str]:
    """The kernel sets compiled into the native library (``ref``, ``portable``, ...)."""
    return _lib().bnhw_kernel_sets().decode().split(",")


def usable_kernel_sets() -> list[str]:
    """The compiled-in kernel sets this CPU runs (the last one is what ``auto`` picks)."""
    return _lib().bnhw_kernel_sets_usable().decode().split(",")


def default_threads() -> int:
    """The runtime's default thread count: the online cores (``sysconf(_SC_NPROCESSORS_ONLN)``)."""
    return int(_lib().bnhw_default_threads())


#: the popcount peaks ``src/bench_peak.c`` measures: scalar popcnt, then the x86-64 vector ones (each
#: named after the kernel set that uses that popcount and measured only where the CPU runs that set)
POPCOUNT_PEAKS = ("scalar", "avx2", "avx512bw", "avx512")


def xorpop_peak(words: int = 512, min_seconds: float = 0.05, trials: int = 5, kind: str = "scalar") -> float:
    """This machine's measured XOR-popcount peak in binary MACs per second, one thread: the best of
    ``trials`` timings of ``src/bench_peak.c`` (an L1-resident loop where each loaded word meets eight
    register-held words, so only the XOR + POPCNT + ADD rate limits it).  ``kind``: ``scalar``
    (popcnt), or ``avx2`` / ``avx512bw`` (nibble lookups) / ``avx512`` (VPOPCNTDQ) where the CPU runs
    the kernel set of that name (else :class:`BnhwError` naming what the CPU has)."""
    import time

    from .kernels import resolve

    if kind not in POPCOUNT_PEAKS:
        raise BnhwError(f"unknown popcount peak {kind!r}: choose one of {', '.join(POPCOUNT_PEAKS)}")
    lib = _lib()
    fn = lib.bnhw_xorpop_peak
    if kind != "scalar":
        resolve(kind)          # refuses a set the CPU lacks (one line), before any vector instruction runs
        fn = getattr(lib, f"bnhw_xorpop_peak_{kind}")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 1 << 63, words, dtype=np.uint64)
    r = rng.integers(0, 1 << 63, 8, dtype=np.uint64)
    reps = 16

    def once() -> float:
        t = time.perf_counter()
        fn(a.ctypes.data, words, reps, r.ctypes.data)
        return time.perf_counter() - t

    while once() < min_seconds:        # calibrate: one timing lasts at least min_seconds
        reps *= 2
    best = min(once() for _ in range(trials))
    return words * 8 * 64 * reps / best


class CpuModel:
    """A network loaded into the C runtime.

    ``source`` is a :class:`HwGraph` (lowered here), a :class:`CpuProgram`, or the path of a model
    file.  ``kernels``: ``auto`` (the best set this CPU runs; ``opt`` is an alias), ``ref``,
    ``portable``, ``avx2``, ``avx512bw``, ``avx512`` or ``neon``; ``None`` reads ``$BNHW_KERNELS``
    (default ``auto``).  ``threads``: 0 = all online cores; every count gives the same outputs.
    ``split_threshold``: the least work (bgemm words) a conv is split over threads for (default 16384;
    0 splits every conv, for tests).  ``fuse``: run the pixel-wise ops after a conv in its pass (fused
    epilogues, the default; their per-op times are then 0) or every op on its own; same outputs.
    """

    def __init__(self, source: HwGraph | CpuProgram | str | Path, kernels: str | None = None, threads: int = 0,
                 split_threshold: float | None = None, fuse: bool = True):
        self.program: CpuProgram | None = None
        if isinstance(source, HwGraph):
            source = lower_cpu(source)
        if isinstance(source, CpuProgram):
            self.program = source
            data = to_bytes(source)
        else:
            from .program import read_header

            read_header(source)
            data = Path(source).read_bytes()
        lib = _lib()
        self._m = lib.bnhw_model_load_buffer(data, len(data))
        if not self._m:
            raise BnhwError(f"CPU runtime: {lib.bnhw_last_error().decode()}")
        from .kernels import requested

        self.kernels = requested(kernels)
        self.threads = threads
        if split_threshold is not None:     # tests: 0 splits every conv over the threads
            lib.bnhw_model_set_split_threshold(self._m, float(split_threshold))
        lib.bnhw_model_set_fusion(self._m, int(bool(fuse)))

    def __del__(self):
        m = getattr(self, "_m", None)
        if m:
            _lib().bnhw_model_free(m)
            self._m = None

    @property
    def kernels(self) -> str:
        return _lib().bnhw_model_kernels(self._m).decode()

    @kernels.setter
    def kernels(self, name: str) -> None:
        lib = _lib()
        if lib.bnhw_model_set_kernels(self._m, name.encode()) != 0:
            raise BnhwError(f"CPU runtime: {lib.bnhw_last_error().decode()}")

    @property
    def threads(self) -> int:
        return int(_lib().bnhw_model_threads(self._m))

    @threads.setter
    def threads(self, n: int) -> None:
        lib = _lib()
        if lib.bnhw_model_set_threads(self._m, int(n)) != 0:
            raise BnhwError(f"CPU runtime: {lib.bnhw_last_error().decode()}")

    @property
    def n_fused(self) -> int:
        """How many ops run in their convolution's pass (fused epilogues; 0 with ``fuse=False``)."""
        return int(_lib().bnhw_model_n_fused(self._m))

    def op_fused(self) -> list[bool]:
        """Whether each op runs in its convolution's pass (its time then counts in the conv's)."""
        lib = _lib()
        return [bool(lib.bnhw_model_op_fused(self._m, i)) for i in range(self.n_ops)]

    @property
    def n_ops(self) -> int:
        return _lib().bnhw_model_n_ops(self._m)

    def op_names(self) -> list[str]:
        lib = _lib()
        return [lib.bnhw_model_op_name(self._m, i).decode() for i in range(self.n_ops)]

    def op_seconds(self) -> np.ndarray:
        """Wall time of every op in the last run."""
        lib = _lib()
        return np.array([lib.bnhw_model_op_seconds(self._m, i) for i in range(self.n_ops)])

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one image (integer HWC array of the input stream's shape); returns the output tensor (HWC)."""
        lib = _lib()
        x = np.ascontiguousarray(np.asarray(x), dtype=np.int64)
        n_in = lib.bnhw_model_input_size(self._m)
        if x.size != n_in:
            raise BnhwError(f"CPU runtime: input has {x.size} elements, the model takes {n_in}")
        if x.size and (x.min() < -(1 << 31) or x.max() >= (1 << 31)):
            raise BnhwError("CPU runtime: input values exceed int32")
        xi = np.ascontiguousarray(x.reshape(-1), dtype=np.int32)
        out = np.empty(lib.bnhw_model_output_size(self._m), dtype=np.int32)
        if lib.bnhw_model_run(self._m, xi.ctypes.data, out.ctypes.data) != 0:
            raise BnhwError(f"CPU runtime: {lib.bnhw_last_error().decode()}")
        if self.program is not None:
            out = out.reshape(self.program.tensors[self.program.output].shape)
        return out.astype(np.int64)

    def tensor(self, i: int) -> np.ndarray:
        """Tensor ``i`` of the last run, int64 HWC (packed tensors as +-1)."""
        lib = _lib()
        out = np.empty(lib.bnhw_model_tensor_size(self._m, i), dtype=np.int32)
        if lib.bnhw_model_tensor(self._m, i, out.ctypes.data) != 0:
            raise BnhwError(f"CPU runtime: {lib.bnhw_last_error().decode()}")
        if self.program is not None:
            out = out.reshape(self.program.tensors[i].shape)
        return out.astype(np.int64)

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run one image; every IR stream the runtime keeps (all but fused window streams), by name."""
        if self.program is None:
            raise BnhwError("run_all needs the program (load the model from a graph or program)")
        self.run(x)
        return {s: self.tensor(t) for s, t in self.program.stream_tensor.items() if "#" not in s}

    def time(self, x: np.ndarray, repeat: int = 10, warmup: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """Run ``x`` ``warmup + repeat`` times; returns (per-op seconds ``(repeat, n_ops)``, total per run)."""
        for _ in range(warmup):
            self.run(x)
        per = np.empty((repeat, self.n_ops))
        for r in range(repeat):
            self.run(x)
            per[r] = self.op_seconds()
        return per, per.sum(axis=1)


def run_standalone(model_file: Path, inputs: np.ndarray, arch: str = "native", kernels: str | None = None,
                   repeat: int = 1, tensors: bool = False, timeout: float = 600.0, threads: int = 0) -> dict:
    """Run ``bnhw-run`` (natively or under QEMU) on ``inputs`` ``(N, H, W, C)``; returns outputs, tensors
    (one flat int32 array per image when ``tensors``), the kernel set and thread count it used and its
    per-op timings.  ``kernels=None`` passes no ``--kernels`` (``bnhw-run`` reads ``$BNHW_KERNELS``)."""
    from .cross import run_executable

    exe = build_runner(arch)
    inputs = np.asarray(inputs)
    with tempfile.TemporaryDirectory(prefix="bnhw-run.") as tmp:
        fin, fout, ften = Path(tmp, "in.bin"), Path(tmp, "out.bin"), Path(tmp, "tensors.bin")
        np.ascontiguousarray(inputs, dtype="<i4").tofile(fin)
        args = [str(model_file), str(fin), str(fout), "--threads", str(threads), "--repeat", str(repeat)]
        if kernels:
            args += ["--kernels", kernels]
        if tensors:
            args += ["--tensors", str(ften)]
        r = run_executable(arch, exe, args, timeout=timeout)
        if r.returncode != 0:
            msg = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise BnhwError(f"bnhw-run ({arch}) failed: {msg}")
        out = np.fromfile(fout, dtype="<i4").reshape(len(inputs), -1).astype(np.int64)
        ten = np.fromfile(ften, dtype="<i4").reshape(len(inputs), -1).astype(np.int64) if tensors else None
    lines = r.stdout.splitlines()
    head = lines[0].split() if lines and lines[0].startswith("kernels ") else []
    used = head[1] if head else "?"
    nthreads = int(head[5]) if len(head) > 5 and head[4] == "threads" else None
    ops = [(ln.split()[2], float(ln.split()[3])) for ln in lines if ln.startswith("op ")]
    total = next((float(ln.split()[1]) for ln in lines if ln.startswith("total ")), None)
    return {"outputs": out, "tensors": ten, "kernels": used, "threads": nthreads, "op_seconds": ops,
            "total_seconds": total}
