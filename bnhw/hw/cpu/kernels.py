"""The CPU kernels (``src/bnhw_kernels.h``) from Python: sources, host flags, ctypes wrappers.

The C kernels are built once per source text and flag set into a cached shared
library (:func:`bnhw.hw.cbuild.shared_library`).  The wrappers take numpy arrays
(row-strided views included: their row stride becomes ``lda`` / ``ldb`` / ``ldc``)
and run one kernel set: ``"ref"`` (the specification), ``"portable"`` (plain C),
``"avx2"``, ``"avx512bw"``, ``"avx512"`` (x86-64: AVX2, AVX-512BW, AVX-512 with
VPOPCNTDQ), ``"neon"`` (ARM) or ``"auto"`` (alias ``"opt"``: the best this CPU
runs).  Sets are chosen at run time: one library holds every set compiled for
the architecture (x86 ones through per-function target attributes), and a set
the CPU lacks is refused with one line naming what the CPU has
(:func:`resolve`), never run.  :func:`requested` reads ``BNHW_KERNELS`` when no
set is given explicitly.

:func:`pack_reference` is an independent numpy implementation of the packed
layout, used to check the C reference itself.
"""

from __future__ import annotations

import ctypes
import os
import platform
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from ...errors import BnhwError
from ..cbuild import load_library, shared_library

__all__ = ["HEADER", "KERNEL_FILES", "SOURCES", "TEST_FILE", "KERNEL_SET_NAMES", "ENV_VAR", "kernel_sources", "read_source",
           "native_flags", "cpu_features", "kernels_library", "kernel_sets", "usable_kernel_sets",
           "kernel_cpu_features", "kernel_set_why", "requested", "resolve", "pack", "bgemm", "bgemm_small",
           "bgemm_small_t", "gemm_s16", "pack_reference", "packed_words"]

#: the contract, included by every kernel source
HEADER = "bnhw_kernels.h"
#: the kernel implementations and the set table (what a program using the kernels compiles)
KERNEL_FILES = ("kernels_ref.c", "kernels_portable.c", "kernels_x86.c", "kernels_neon.c", "kernel_sets.c")
#: the tile loop shared by the optimised GEMMs
TILING = "bnhw_tiling.h"
#: every file a kernels-only build needs (:func:`kernel_sources` reads them)
SOURCES = (HEADER, TILING, *KERNEL_FILES)
#: the standalone bit-exactness test program (its own ``main``)
TEST_FILE = "kernel_test.c"

WORD_BITS = 64

#: every name ``--kernels`` takes: ``auto`` first (the default), ``opt`` its old alias last
KERNEL_SET_NAMES = ("auto", "ref", "portable", "avx2", "avx512", "avx512bw", "neon", "opt")
#: the environment variable naming the kernel set when no ``--kernels`` is given
ENV_VAR = "BNHW_KERNELS"


def _read(name: str) -> str:
    return resources.files("bnhw.hw.cpu").joinpath("src", name).read_text()


def read_source(name: str) -> str:
    """The text of ``src/<name>`` (a kernel, runtime or driver source)."""
    return _read(name)


def kernel_sources(test: bool = False) -> dict[str, str]:
    """``{file name: text}`` of the header and the kernel sources (plus ``kernel_test.c`` if ``test``)."""
    names = (*SOURCES, *((TEST_FILE,) if test else ()))
    return {name: _read(name) for name in names}


@cache
def cpu_features() -> frozenset[str]:
    """The host CPU's feature flags (``/proc/cpuinfo`` ``flags`` / ``Features``), lower case."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    feats: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            feats.update(value.lower().split())
    return frozenset(feats)


def native_flags() -> tuple[str, ...]:
    """gcc flags for the kernels and runtime on this host: ``-O3 -std=c99 -pthread`` plus a baseline.

    ``-mpopcnt`` on x86-64 when the CPU reports it (the portable set's scalar popcount; the set then
    needs popcnt at run time).  No ``-mavx2`` / ``-mavx512*``: the vector sets carry per-function
    target attributes and are chosen at run time, so the rest of the build runs on any x86-64 CPU.
    ``-mfpu=neon`` on a 32-bit ARM host with NEON.
    """
    flags = ["-O3", "-std=c99", "-pthread"]
    machine = platform.machine().lower()
    feats = cpu_features()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        if "popcnt" in feats:
            flags.append("-mpopcnt")
    elif machine.startswith("arm") and "neon" in feats:
        flags.append("-mfpu=neon")
    return tuple(flags)


# -------------------------------------------------------------------------------- library

_PACK_ARGS = (ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_PACK_FN = ctypes.CFUNCTYPE(None, *_PACK_ARGS)
_GEMM_ARGS = (ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
              ctypes.c_void_p, ctypes.c_int)
_BGEMM_FN = ctypes.CFUNCTYPE(None, *_GEMM_ARGS)
_GEMM_S16_FN = ctypes.CFUNCTYPE(None, *_GEMM_ARGS)


class _KernelSet(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("pack", _PACK_FN), ("bgemm", _BGEMM_FN), ("gemm_s16", _GEMM_S16_FN),
                ("bgemm_small", _BGEMM_FN)]


@cache
def kernels_library() -> ctypes.CDLL:
    """Build (once, cached on disk) and load the kernels for this host, with ctypes signatures."""
    path = shared_library("bnhw_cpu_kernels", kernel_sources(), native_flags())
    lib = load_library(path)
    lib.bnhw_kernel_set.restype = ctypes.POINTER(_KernelSet)
    lib.bnhw_kernel_set.argtypes = [ctypes.c_char_p]
    for name in ("bnhw_kernel_sets", "bnhw_kernel_sets_usable", "bnhw_cpu_features"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = []
    lib.bnhw_kernel_set_why.restype = ctypes.c_char_p
    lib.bnhw_kernel_set_why.argtypes = [ctypes.c_char_p]
    for impl in ("ref", "portable"):
        getattr(lib, f"bnhw_pack_{impl}").argtypes = list(_PACK_ARGS)
        getattr(lib, f"bnhw_bgemm_{impl}").argtypes = list(_GEMM_ARGS)
        getattr(lib, f"bnhw_gemm_s16_{impl}").argtypes = list(_GEMM_ARGS)
        getattr(lib, f"bnhw_bgemm_small_{impl}").argtypes = list(_GEMM_ARGS)
    return lib


def kernel_sets() -> list[str]:
    """Names of the kernel sets compiled into the native library, e.g. ``["ref", "portable", "avx2", ...]``."""
    return kernels_library().bnhw_kernel_sets().decode().split(",")


def usable_kernel_sets() -> list[str]:
    """The compiled-in sets this CPU runs, in table order (the last is what ``auto`` picks)."""
    return kernels_library().bnhw_kernel_sets_usable().decode().split(",")


def kernel_cpu_features() -> str:
    """The CPU features the set choice looks at that this CPU has, as the C library sees them."""
    return kernels_library().bnhw_cpu_features().decode()


def kernel_set_why(impl: str) -> str | None:
    """``None`` when this CPU runs set ``impl``, else the one-line reason (what it needs, what the CPU has)."""
    why = kernels_library().bnhw_kernel_set_why(impl.encode())
    return why.decode() if why else None


def requested(impl: str | None = None) -> str:
    """The kernel set asked for: ``impl`` when given (a flag wins), else ``$BNHW_KERNELS``, else ``auto``."""
    if impl:
        return impl
    return os.environ.get(ENV_VAR, "").strip() or "auto"


@cache
def _set(impl: str) -> _KernelSet:
    lib = kernels_library()
    p = lib.bnhw_kernel_set(impl.encode())
    if not p:
        raise BnhwError(lib.bnhw_kernel_set_why(impl.encode()).decode())
    return p.contents


def resolve(impl: str | None = None) -> str:
    """The set ``impl`` (default: :func:`requested`) runs here (``"auto"`` -> e.g. ``"avx512"``); a set that
    is unknown, not compiled for this architecture or beyond this CPU raises :class:`BnhwError`."""
    return _set(requested(impl)).name.decode()


# ------------------------------------------------------------------------------- wrappers

def packed_words(channels: int, groups: int = 1) -> int:
    """Words per group of a packed pixel: ``ceil((channels / groups) / 64)``."""
    return -(-(channels // groups) // WORD_BITS)


def _as_int32(x, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == np.int32:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind not in "iub":
        raise BnhwError(f"{what}: integer values expected, got dtype {arr.dtype}")
    if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
        raise BnhwError(f"{what}: values outside int32")
    return np.ascontiguousarray(arr, dtype=np.int32)


def _check_pack_args(x: np.ndarray, groups: int, thr) -> tuple[np.ndarray, int, np.ndarray | None]:
    if x.ndim < 1:
        raise BnhwError("pack: x needs a channel axis")
    C = x.shape[-1]
    if groups < 1 or C % groups:
        raise BnhwError(f"pack: {C} channels do not split into {groups} groups")
    x2 = x.reshape(int(np.prod(x.shape[:-1], dtype=np.int64)), C)
    t = None
    if thr is not None:
        t = _as_int32(thr, "pack thresholds").reshape(-1)
        if t.shape != (C,):
            raise BnhwError(f"pack: {t.size} thresholds for {C} channels")
    return x2, C, t


def pack(x, groups: int = 1, thr=None, impl: str = "ref") -> np.ndarray:
    """Pack int32 ``x[..., C]`` into uint64 ``[..., groups, wpg]`` words: bit 1 (-1) iff ``x < thr``.

    ``thr`` is one int32 threshold per channel (``None``: 0).  Leading axes of ``x`` are pixels.
    """
    x = _as_int32(x, "pack input")
    x2, C, t = _check_pack_args(x, groups, thr)
    n, wpg = x2.shape[0], packed_words(C, groups) if C else 0
    out = np.zeros((n, groups, wpg), dtype=np.uint64)
    if n and C:
        _set(impl).pack(x2.ctypes.data, n, C, groups, t.ctypes.data if t is not None else None, out.ctypes.data)
    return out.reshape(*x.shape[:-1], groups, wpg)


def pack_reference(x, groups: int = 1, thr=None) -> np.ndarray:
    """numpy-only :func:`pack`: the packed layout, written independently of the C code.

    Channel ``c`` of a group is bit ``c % 64`` of word ``c // 64``; bytes are little-endian, so a
    one-group pixel with a multiple of 64 channels is LCE's int32 bitpacked layout byte for byte.
    """
    x = _as_int32(x, "pack input")
    x2, C, t = _check_pack_args(x, groups, thr)
    n = x2.shape[0]
    cg = C // groups
    wpg = packed_words(C, groups) if C else 0
    bits = (x2 < (t if t is not None else 0)).reshape(n, groups, cg).astype(np.uint8)
    padded = np.zeros((n, groups, wpg * WORD_BITS), dtype=np.uint8)
    padded[..., :cg] = bits
    by = np.packbits(padded.reshape(n, groups, wpg, 8, 8), axis=-1, bitorder="little")  # byte j: channels 8j..8j+7
    words = np.ascontiguousarray(by.reshape(n, groups, wpg, 8)).view("<u8").reshape(n, groups, wpg)
    return words.astype(np.uint64).reshape(*x.shape[:-1], groups, wpg)


def _operand(arr, dtype, what: str) -> tuple[np.ndarray, int]:
    """A 2-D operand whose rows are contiguous, and its row stride in elements (>= its row length)."""
    a = np.asarray(arr)
    if a.ndim != 2:
        raise BnhwError(f"{what}: a 2-D array expected, got shape {a.shape}")
    if a.dtype != dtype:
        if dtype == np.uint64 and a.dtype == np.int64:
            a = a.view(np.uint64)
        elif dtype == np.int16 and a.dtype.kind in "iu":
            if a.size and (a.min() < -32768 or a.max() > 32767):
                raise BnhwError(f"{what}: values outside int16")
            a = a.astype(np.int16)
        else:
            raise BnhwError(f"{what}: dtype {np.dtype(dtype).name} expected, got {a.dtype}")
    if not a.flags.aligned:
        a = np.ascontiguousarray(a)
    item = a.itemsize
    rows, cols = a.shape
    if rows <= 1 or cols == 0:
        ld = cols
        if cols and a.strides[1] != item:
            a = np.ascontiguousarray(a)
    elif a.strides[1] == item and a.strides[0] % item == 0 and a.strides[0] // item >= cols:
        ld = a.strides[0] // item
    else:
        a = np.ascontiguousarray(a)
        ld = cols
    return a, ld


def _output(out, M: int, N: int) -> tuple[np.ndarray, int]:
    if out is None:
        return np.empty((M, N), dtype=np.int32), N
    if not isinstance(out, np.ndarray) or out.dtype != np.int32 or out.shape != (M, N):
        raise BnhwError(f"out: an int32 array of shape ({M}, {N}) expected")
    if M > 1 and N and not (out.strides[1] == 4 and out.strides[0] % 4 == 0 and out.strides[0] // 4 >= N):
        raise BnhwError("out: rows must be contiguous with a row stride >= N")
    if M == 1 and N > 1 and out.strides[1] != 4:
        raise BnhwError("out: rows must be contiguous")
    if not out.flags.writeable:
        raise BnhwError("out: not writeable")
    return out, (out.strides[0] // 4 if M > 1 else N)


def _gemm(kind: str, a, b, impl: str, out, dtype) -> np.ndarray:
    a, lda = _operand(a, dtype, f"{kind} a")
    b, ldb = _operand(b, dtype, f"{kind} b")
    (M, K), (N, Kb) = a.shape, b.shape
    if K != Kb:
        raise BnhwError(f"{kind}: a has {K} columns, b has {Kb}")
    c, ldc = _output(out, M, N)
    if M and N:
        fn = getattr(_set(impl), kind)
        fn(M, N, K, a.ctypes.data, lda, b.ctypes.data, ldb, c.ctypes.data, ldc)
    return c


def bgemm(a, b, impl: str = "ref", out: np.ndarray | None = None) -> np.ndarray:
    """``c[i, j] = popcount(a[i] XOR b[j])`` over K words: uint64 ``a (M, K)``, ``b (N, K)`` -> int32 ``(M, N)``.

    Row-strided views (``x[:, :K]``) are passed with their row stride; ``out`` may be a row-strided
    int32 view too.
    """
    return _gemm("bgemm", a, b, impl, out, np.uint64)


def bgemm_small(a, b, impl: str = "ref", out: np.ndarray | None = None) -> np.ndarray:
    """The counts of :func:`bgemm` (uint64 ``a (M, K)``, ``b (N, K)`` -> int32 ``(M, N)``) by the kernel of
    the shallow convolutions, which reads B k-major: ``b`` goes to it transposed, ``(K, N)`` (see
    :func:`bgemm_small_t` to pass a k-major B, row-strided views included)."""
    return _bgemm_small(a, np.ascontiguousarray(np.asarray(b).T), impl, out)


def bgemm_small_t(a, bt, impl: str = "ref", out: np.ndarray | None = None) -> np.ndarray:
    """:func:`bgemm_small` with B already k-major: ``bt (K, N)``, rows possibly strided."""
    return _bgemm_small(a, bt, impl, out)


def _bgemm_small(a, bt, impl: str, out) -> np.ndarray:
    a, lda = _operand(a, np.uint64, "bgemm_small a")
    bt, ldbt = _operand(bt, np.uint64, "bgemm_small bt")
    (M, K), (Kb, N) = a.shape, bt.shape
    if K != Kb:
        raise BnhwError(f"bgemm_small: a has {K} columns, b has {Kb}")
    c, ldc = _output(out, M, N)
    if M and N:
        _set(impl).bgemm_small(M, N, K, a.ctypes.data, lda, bt.ctypes.data, ldbt, c.ctypes.data, ldc)
    return c


def gemm_s16(a, b, impl: str = "ref", out: np.ndarray | None = None) -> np.ndarray:
    """``c[i, j] = sum_k a[i, k] * b[j, k]`` in int32: int16 ``a (M, K)``, ``b (N, K)`` -> int32 ``(M, N)``.

    The caller guarantees the contract: ``|a| * |b| * 2 < 2**31`` for every pair and sums that fit int32.
    """
    return _gemm("gemm_s16", a, b, impl, out, np.int16)
