"""CPU kernels (bnhw/hw/cpu/src): every compiled-in set the CPU runs bit-exact against the reference (a
set it lacks skipped with the reason), the reference against independent numpy implementations, the
standalone kernel_test natively (with sanitizers), on older x86-64 CPUs under qemu-x86_64 (the
run-time choice), cross-built for ARMv7 / AArch64 under QEMU (the NEON set), and the NEON inner loop's
instruction mix."""

from __future__ import annotations

import platform
import re
import subprocess

import numpy as np
import pytest
from helpers.qemu_x86 import OLDER_X86, qemu_x86

from bnhw.errors import BnhwError
from bnhw.hw.cpu import cross, kernels
from bnhw.hw.cpu.kernels import bgemm, bgemm_small, bgemm_small_t, gemm_s16, kernel_sets, pack, pack_reference

SEED = 20240611
U64_MAX = np.iinfo(np.uint64).max


def _impls() -> list[str]:
    """The optimised sets this CPU runs (what kernel_test checks natively)."""
    return [s for s in kernels.usable_kernel_sets() if s != "ref"]


_ARM = platform.machine().lower().startswith(("arm", "aarch64"))
#: every optimised set natively (NEON is tested under QEMU below on a non-ARM host) and the auto choice
NATIVE_IMPLS = ["portable", "avx2", "avx512bw", "avx512", "neon", "auto", "opt"]


@pytest.fixture(scope="module", params=NATIVE_IMPLS)
def impl(request) -> str:
    """One set; skipped, with the reason, where the set is not compiled for this architecture or the CPU
    lacks its features (e.g. "kernel set avx512 needs ... avx512vpopcntdq; this CPU has ...")."""
    name = request.param
    if name == "neon" and not _ARM:
        pytest.skip("neon: not an ARM host (tested under QEMU by test_kernel_test_qemu)")
    if name in ("avx2", "avx512bw", "avx512") and _ARM:
        pytest.skip(f"{name}: an x86-64 set, this is an ARM host")
    try:
        kernels.resolve(name)
    except BnhwError as e:
        pytest.skip(f"CPU lacks {name}: {e}")
    return name


# ------------------------------------------------------------------------------- shapes

def _u64(rng, shape) -> np.ndarray:
    return rng.integers(0, U64_MAX, size=shape, dtype=np.uint64, endpoint=True)


#: (M, N, K, dense): empty, K = 0 / 1 / odd, around the 31-step byte-accumulator limits (62 words for
#: NEON, 124 for AVX2, 248 for AVX-512BW), and beyond the 16-bit limit (8192 words with every bit different)
BGEMM_FIXED = [(0, 5, 3, 0), (5, 0, 3, 0), (3, 3, 0, 0), (1, 1, 1, 1), (7, 9, 1, 1), (5, 6, 61, 1), (5, 6, 62, 1),
               (5, 6, 63, 1), (6, 5, 64, 1), (5, 7, 65, 1), (3, 5, 124, 1), (4, 5, 125, 1), (3, 5, 8193, 1),
               (5, 6, 8256, 1), (1, 9, 3, 0), (9, 1, 17, 0), (13, 11, 9, 2), (5, 6, 123, 1), (6, 9, 247, 1),
               (9, 6, 248, 1), (7, 5, 249, 1), (5, 9, 497, 1), (4, 4, 8, 2), (4, 4, 7, 2), (4, 4, 15, 0)]


def _bgemm_case(rng, M, N, K, dense, strided):
    """a (M, K), b (N, K) uint64, as row-strided views with random garbage past K when ``strided``.

    dense 1: a rows = base, b rows = NOT base (every bit differs); 2: the same with sparse flips."""
    pa, pb = (int(rng.integers(1, 4)), int(rng.integers(1, 4))) if strided else (0, 0)
    a, b = _u64(rng, (M, K + pa)), _u64(rng, (N, K + pb))
    if dense:
        base = _u64(rng, K)
        a[:, :K], b[:, :K] = base, ~base
        if dense == 2:
            for x in (a, b):
                flip = rng.random(x[:, :K].shape) < 0.1
                x[:, :K] ^= np.where(flip, _u64(rng, x[:, :K].shape) & _u64(rng, x[:, :K].shape), 0).astype(np.uint64)
    return a[:, :K], b[:, :K]


def _bgemm_shapes(rng, count):
    yield from BGEMM_FIXED
    for _ in range(count - len(BGEMM_FIXED)):
        M = 0 if rng.random() < 0.04 else int(rng.integers(1, 18))
        N = 0 if rng.random() < 0.04 else int(rng.integers(1, 18))
        u = rng.random()
        K = int(rng.integers(0, 4) if u < 0.15 else rng.integers(4, 71) if u < 0.75 else rng.integers(58, 201)
                if u < 0.98 else rng.integers(2000, 2100))
        yield M, N, K, int(rng.integers(0, 3))


def _numpy_bgemm(a, b) -> np.ndarray:
    if a.shape[1] == 0:
        return np.zeros((a.shape[0], b.shape[0]), dtype=np.int64)
    return np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(-1, dtype=np.int64)


def _strided_out(rng, M, N, strided):
    pc = int(rng.integers(1, 4)) if strided else 0
    full = np.full((M, N + pc), -777, dtype=np.int32)
    return full, full[:, :N]


#: channels per group: odd, below / at / above a word, not multiples of 64
GROUP_CHANNELS = [1, 2, 3, 5, 12, 31, 32, 33, 63, 64, 65, 96, 127, 128, 129, 191, 192, 200, 256, 300]
I32 = np.iinfo(np.int32)
I32_EXTREMES = np.array([I32.min, I32.min + 1, -1, 0, 1, I32.max - 1, I32.max], dtype=np.int32)


def _pack_cases(rng, count):
    fixed = [(0, 1, 64), (1, 1, 1), (1, 1, 64), (2, 1, 65), (3, 3, 12), (2, 2, 127), (1, 4, 3), (2, 1, 128),
             (1, 5, 65), (3, 2, 129), (1, 7, 127), (2, 3, 64)]
    for s in range(count):
        if s < len(fixed):
            n, groups, cg = fixed[s]
        else:
            n = int(rng.integers(0, 5)) if rng.random() < 0.9 else int(rng.integers(5, 300))  # many: small-group streams
            groups = 1 if rng.random() < 0.5 else int(rng.integers(1, 9))
            cg = int(rng.choice(GROUP_CHANNELS)) if rng.random() < 0.7 else int(rng.integers(1, 301))
        C = groups * cg
        mode = s % 4
        thr = None
        if s % 5 != 0:
            thr = (rng.choice(I32_EXTREMES, C) if mode == 2 else
                   rng.integers(I32.min, I32.max, C, dtype=np.int32, endpoint=True) if mode == 3 else
                   rng.integers(-100, 101, C).astype(np.int32))
        t = thr if thr is not None else np.zeros(C, dtype=np.int32)
        if mode == 0:
            x = rng.integers(I32.min, I32.max, (n, C), dtype=np.int32, endpoint=True)
        elif mode == 1:  # at the threshold and one either side
            x = np.clip(t.astype(np.int64) + rng.integers(-1, 2, (n, C)), I32.min, I32.max).astype(np.int32)
        elif mode == 2:
            x = rng.choice(I32_EXTREMES, (n, C))
        else:
            x = np.where(rng.random((n, C)) < 0.5, rng.choice(I32_EXTREMES, (n, C)), rng.integers(-3, 4, (n, C)))
        yield x.astype(np.int32), groups, thr


def _s16_rows_l1(rng, n, K):
    """rows with |v| <= 32767 whose absolute values sum to <= 65535 (half sparse extremes)."""
    v = np.zeros((n, K), dtype=np.int64)
    for r in range(n):
        if K == 0:
            continue
        if rng.random() < 0.5:
            pos = rng.choice(K, size=min(K, 2), replace=False)
            v[r, pos] = rng.choice([-32767, 32767], size=len(pos))
        else:
            row = rng.integers(-32767, 32768, K)
            tot = int(np.abs(row).sum())
            if tot > 65535:
                row = np.sign(row) * (np.abs(row) * 65535 // tot)
            v[r] = row
    return v


def _s16_rows_full(rng, n, K, with_min=True):
    lo = -32768 if with_min else -32767
    ext = rng.choice([lo, 32767], size=(n, K))
    return np.where(rng.random((n, K)) < 0.4, ext, rng.integers(lo, 32768, (n, K)))


def _gemm_s16_case(rng, M, N, K, regime):
    """Values inside the gemm_s16 contract: |a| |b| 2 < 2^31 for every pair and every partial sum
    (in any order) fits int32.  0: |v| <= bound with K bound^2 < 2^31; 1: K <= 2, a full int16
    range with -32768, b without it; 2: a full range, b L1-bounded rows; 3: the reverse."""
    if regime == 1 and K > 2:
        regime = 0
    if regime == 0:
        bound = 32767
        while bound * bound * max(K, 2) >= 2**31 - 1:
            bound = bound * 9 // 10
        a, b = rng.integers(-bound, bound + 1, (M, K)), rng.integers(-bound, bound + 1, (N, K))
    elif regime == 1:
        a, b = _s16_rows_full(rng, M, K), _s16_rows_full(rng, N, K, with_min=False)
    elif regime == 2:
        a, b = _s16_rows_full(rng, M, K), _s16_rows_l1(rng, N, K)
    else:
        a, b = _s16_rows_l1(rng, M, K), _s16_rows_full(rng, N, K)
    return a.astype(np.int16), b.astype(np.int16)


def _gemm_s16_shapes(rng, count):
    fixed = [(0, 3, 5, 0), (3, 0, 5, 0), (4, 4, 0, 0), (1, 1, 1, 1), (5, 7, 2, 1), (9, 5, 7, 2), (5, 9, 16, 3),
             (3, 3, 4000, 0), (7, 6, 1001, 2), (2, 5, 33, 3), (13, 11, 9, 0)]
    yield from fixed
    for _ in range(count - len(fixed)):
        M = 0 if rng.random() < 0.04 else int(rng.integers(1, 18))
        N = 0 if rng.random() < 0.04 else int(rng.integers(1, 18))
        u = rng.random()
        K = int(rng.integers(0, 4) if u < 0.15 else rng.integers(4, 81) if u < 0.85 else rng.integers(81, 601)
                if u < 0.98 else rng.integers(2000, 4001))
        yield M, N, K, int(rng.integers(0, 4))


def _strided(rng, x: np.ndarray, strided: bool) -> np.ndarray:
    if not strided:
        return x
    pad = int(rng.integers(1, 10))
    full = rng.integers(-32768, 32768, (x.shape[0], x.shape[1] + pad)).astype(x.dtype)
    full[:, :x.shape[1]] = x
    return full[:, :x.shape[1]]


# ------------------------------------------------------------------ the reference itself

def test_sets_and_auto(monkeypatch):
    sets, usable = kernel_sets(), kernels.usable_kernel_sets()
    assert sets[:2] == ["ref", "portable"] and usable[0] == "ref"
    assert [s for s in sets if s in usable] == usable
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert sets == ["ref", "portable", "avx2", "avx512bw", "avx512"]
        # the run-time choice follows what /proc/cpuinfo reports (CPUID, read independently)
        feats = kernels.cpu_features()
        want = ("avx512" if {"avx512f", "avx512bw", "avx512_vpopcntdq"} <= feats else
                "avx512bw" if {"avx512f", "avx512bw"} <= feats else "avx2" if "avx2" in feats else "portable")
        assert usable[-1] == want
        for name, need in (("avx2", {"avx2"}), ("avx512bw", {"avx512f", "avx512bw"}),
                           ("avx512", {"avx512f", "avx512bw", "avx512_vpopcntdq"})):
            assert (name in usable) == (need <= feats)
    else:
        assert "avx2" not in sets
        with pytest.raises(BnhwError, match="kernel set avx2 is not compiled in for this architecture"):
            kernels.resolve("avx2")
    assert kernels.resolve("auto") == kernels.resolve("opt") == usable[-1]
    with pytest.raises(BnhwError, match="unknown kernel set nonesuch"):
        kernels.resolve("nonesuch")
    for name in set(kernels.KERNEL_SET_NAMES) - set(usable) - {"auto", "opt"}:
        with pytest.raises(BnhwError, match=f"kernel set {name} (needs .*; this CPU has|is not compiled in)"):
            kernels.resolve(name)
    # a flag wins over BNHW_KERNELS, which wins over auto
    monkeypatch.setenv(kernels.ENV_VAR, "ref")
    assert kernels.requested() == "ref" and kernels.resolve() == "ref"
    assert kernels.requested("portable") == "portable"
    monkeypatch.delenv(kernels.ENV_VAR)
    assert kernels.requested() == "auto"


def test_native_flags_follow_cpu():
    flags = kernels.native_flags()
    assert flags[:3] == ("-O3", "-std=c99", "-pthread")
    feats = kernels.cpu_features()
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert ("-mpopcnt" in flags) == ("popcnt" in feats)
    else:
        assert "-mpopcnt" not in flags
    assert not any(f.startswith(("-mavx", "-march")) for f in flags), "vector sets are chosen at run time"


def test_bgemm_ref_matches_numpy():
    rng = np.random.default_rng(SEED)
    for M, N, K, dense in _bgemm_shapes(rng, 150):
        a, b = _bgemm_case(rng, M, N, K, dense, strided=bool(rng.integers(0, 2)))
        want = _numpy_bgemm(a, b)
        got = bgemm(a, b, impl="ref")
        assert got.dtype == np.int32 and got.shape == (M, N)
        np.testing.assert_array_equal(got, want, err_msg=f"ref bgemm M={M} N={N} K={K} dense={dense}")
        if dense == 1 and M and N:
            assert (got == 64 * K).all()


def test_pack_ref_matches_numpy_layout():
    rng = np.random.default_rng(SEED + 1)
    for x, groups, thr in _pack_cases(rng, 200):
        got, want = pack(x, groups, thr, impl="ref"), pack_reference(x, groups, thr)
        np.testing.assert_array_equal(got, want, err_msg=f"ref pack {x.shape} groups={groups}")
        # bit c of a group is -1 iff x < thr, straight from the definition
        n, C = x.shape
        cg = C // groups
        t = np.zeros(C, dtype=np.int64) if thr is None else thr.astype(np.int64)
        c = np.arange(C)
        bits = (got[:, c // cg, (c % cg) // 64] >> (c % cg % 64).astype(np.uint64)) & np.uint64(1)
        np.testing.assert_array_equal(bits.astype(bool), x < t)
        # unused bits of each group's last word are 0
        if cg % 64:
            assert not (got[..., -1] >> np.uint64(cg % 64)).any()


def test_pack_bytes_are_lce_layout():
    """One group, C a multiple of 64: the bytes are LCE's int32 bitpacked words (bit i of int32 word j is
    channel 32 j + i, 1 = negative), written here from the definition."""
    rng = np.random.default_rng(SEED + 2)
    for C in (64, 128, 192, 512):
        x = rng.integers(-3, 4, (5, C)).astype(np.int32)
        packed = pack(x, 1, impl="ref")
        neg = (x < 0).reshape(5, C // 32, 32).astype(np.uint64)
        lce = (neg << np.arange(32, dtype=np.uint64)).sum(-1).astype("<u4")
        assert packed.astype("<u8").tobytes() == lce.tobytes()
        assert pack_reference(x).astype("<u8").tobytes() == lce.tobytes()
    # sign convention: -1 -> bit 1, 0 and +1 -> bit 0
    assert pack(np.array([[-1, 0, 1] + [5] * 61], dtype=np.int32))[0, 0, 0] == 1


def test_gemm_s16_ref_matches_numpy():
    rng = np.random.default_rng(SEED + 3)
    for M, N, K, regime in _gemm_s16_shapes(rng, 150):
        a, b = _gemm_s16_case(rng, M, N, K, regime)
        want = a.astype(np.int64) @ b.astype(np.int64).T
        assert np.abs(want).max(initial=0) < 2**31
        strided = bool(rng.integers(0, 2))
        got = gemm_s16(_strided(rng, a, strided), _strided(rng, b, strided), impl="ref")
        np.testing.assert_array_equal(got, want, err_msg=f"ref gemm_s16 M={M} N={N} K={K} regime={regime}")


# ------------------------------------------------------- every compiled-in set against ref

def test_bgemm_matches_ref(impl):
    rng = np.random.default_rng(SEED + 10)
    for s, (M, N, K, dense) in enumerate(_bgemm_shapes(rng, 400)):
        strided = s % 2 == 1
        a, b = _bgemm_case(rng, M, N, K, dense, strided)
        want = bgemm(a, b, impl="ref")
        full, out = _strided_out(rng, M, N, strided)
        got = bgemm(a, b, impl=impl, out=out)
        assert got is out
        np.testing.assert_array_equal(got, want, err_msg=f"{impl} bgemm #{s} M={M} N={N} K={K} dense={dense}")
        assert (full[:, N:] == -777).all(), f"{impl} bgemm wrote past N (ldc padding) M={M} N={N} K={K}"
    # the overflow-prone depths against numpy too (the reference is checked independently above)
    for M, N, K in [(5, 6, 62), (5, 6, 64), (5, 6, 8256), (4, 4, 8193)]:
        a, b = _bgemm_case(rng, M, N, K, 1, strided=True)
        np.testing.assert_array_equal(bgemm(a, b, impl=impl), np.full((M, N), 64 * K))


#: (M, N, K, dense) for bgemm_small: the shallow depths it serves (K = 9 / 18: 3x3 taps of 1 / 2 words),
#: the 31-step byte limits, a deep dense case, N around every lane count (2, 4, 8, 16) and past it
BGEMM_SMALL_FIXED = [(0, 5, 3, 0), (5, 0, 3, 0), (3, 3, 0, 0), (1, 1, 1, 1), (7, 9, 1, 1), (5, 6, 9, 0),
                     (4, 12, 9, 1), (9, 24, 18, 2), (5, 17, 31, 1), (6, 16, 32, 1), (5, 3, 62, 1), (3, 33, 63, 1),
                     (2, 7, 2000, 1), (8, 48, 2, 0), (13, 11, 2, 2)]


def _bgemm_small_shapes(rng, count):
    yield from BGEMM_SMALL_FIXED
    for _ in range(count - len(BGEMM_SMALL_FIXED)):
        M = 0 if rng.random() < 0.04 else int(rng.integers(1, 18))
        N = 0 if rng.random() < 0.04 else int(rng.integers(1, 18) if rng.random() < 0.7 else rng.integers(18, 41))
        u = rng.random()
        K = int(rng.integers(0, 4) if u < 0.2 else rng.integers(4, 41) if u < 0.9 else rng.integers(58, 131))
        yield M, N, K, int(rng.integers(0, 3))


def test_bgemm_small_ref_matches_numpy():
    rng = np.random.default_rng(SEED + 13)
    for M, N, K, dense in _bgemm_small_shapes(rng, 60):
        a, b = _bgemm_case(rng, M, N, K, dense, strided=False)
        np.testing.assert_array_equal(bgemm_small(a, b, impl="ref"), _numpy_bgemm(a, b),
                                      err_msg=f"ref bgemm_small M={M} N={N} K={K}")


def test_bgemm_small_matches_ref(impl):
    """The shallow-conv GEMM (B k-major, channels in lanes) of every set against bgemm's reference,
    B given with a row stride wider than N (garbage in the padding) every other shape."""
    rng = np.random.default_rng(SEED + 14)
    for s, (M, N, K, dense) in enumerate(_bgemm_small_shapes(rng, 300)):
        strided = s % 2 == 1
        a, b = _bgemm_case(rng, M, N, K, dense, strided)
        want = bgemm(a, b, impl="ref")
        bt = _u64(rng, (K, N + (3 if strided else 0)))
        bt[:, :N] = b.T
        full, out = _strided_out(rng, M, N, strided)
        got = bgemm_small_t(a, bt[:, :N], impl=impl, out=out)
        np.testing.assert_array_equal(got, want, err_msg=f"{impl} bgemm_small #{s} M={M} N={N} K={K} dense={dense}")
        assert (full[:, N:] == -777).all(), f"{impl} bgemm_small wrote past N (ldc padding) M={M} N={N} K={K}"


def test_pack_matches_ref(impl):
    rng = np.random.default_rng(SEED + 11)
    for s, (x, groups, thr) in enumerate(_pack_cases(rng, 400)):
        want = pack(x, groups, thr, impl="ref")
        got = pack(x, groups, thr, impl=impl)
        np.testing.assert_array_equal(got, want, err_msg=f"{impl} pack #{s} {x.shape} groups={groups}")
        cg = x.shape[1] // groups
        if cg % 64:
            assert not (got[..., -1] >> np.uint64(cg % 64)).any(), f"{impl} pack set unused bits"


def test_gemm_s16_matches_ref(impl):
    rng = np.random.default_rng(SEED + 12)
    for s, (M, N, K, regime) in enumerate(_gemm_s16_shapes(rng, 400)):
        a, b = _gemm_s16_case(rng, M, N, K, regime)
        strided = s % 2 == 1
        a, b = _strided(rng, a, strided), _strided(rng, b, strided)
        want = gemm_s16(a, b, impl="ref")
        full, out = _strided_out(rng, M, N, strided)
        got = gemm_s16(a, b, impl=impl, out=out)
        np.testing.assert_array_equal(got, want, err_msg=f"{impl} gemm_s16 #{s} M={M} N={N} K={K} regime={regime}")
        assert (full[:, N:] == -777).all(), f"{impl} gemm_s16 wrote past N (ldc padding)"


def test_wrapper_errors():
    a = np.zeros((2, 3), dtype=np.uint64)
    with pytest.raises(BnhwError, match="columns"):
        bgemm(a, np.zeros((2, 4), dtype=np.uint64))
    with pytest.raises(BnhwError, match="groups"):
        pack(np.zeros((1, 10), dtype=np.int32), 3)
    with pytest.raises(BnhwError, match="int16"):
        gemm_s16(np.full((1, 1), 40000), np.ones((1, 1), dtype=np.int16))
    with pytest.raises(BnhwError, match="unknown kernel set"):
        bgemm(a, a, impl="nonesuch")


def test_wrapper_views():
    """Reversed, column-strided, row-strided and Fortran-ordered operands give the same results."""
    rng = np.random.default_rng(SEED + 13)
    a, b = _u64(rng, (9, 14)), _u64(rng, (7, 14))
    for x, y in [(a[::-1], b), (a[:, ::2], b[:, ::2]), (a[::2], b[1::2]), (np.asfortranarray(a), b), (a[:, :0], b[:, :0])]:
        want = _numpy_bgemm(np.ascontiguousarray(x), np.ascontiguousarray(y))
        for impl in ("ref", "opt"):
            np.testing.assert_array_equal(bgemm(x, y, impl=impl), want)
    s, t = rng.integers(-99, 100, (6, 21)).astype(np.int16), rng.integers(-99, 100, (5, 21)).astype(np.int16)
    for x, y in [(s[::-1], t), (s[:, 1::3], t[:, ::3]), (np.asfortranarray(s), t[::2])]:
        np.testing.assert_array_equal(gemm_s16(x, y, impl="opt"), x.astype(np.int64) @ y.astype(np.int64).T)
    x = rng.integers(-5, 5, (2, 3, 130)).astype(np.int32)
    assert pack(x, 2, impl="opt").shape == (2, 3, 2, 2)
    np.testing.assert_array_equal(pack(x, 2, impl="opt"), pack_reference(x, 2))
    with pytest.raises(BnhwError, match="out"):
        bgemm(a, b, out=np.zeros((9, 7), dtype=np.int64))


# ------------------------------------------------------------------ kernel_test program

def _kernel_test_lines(proc: subprocess.CompletedProcess, sets: list[str], count: int,
                       skipped: list[str] | tuple[str, ...] = ()) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"kernel sets: {','.join(['ref', *sets])} "), out
    for s in skipped:   # a compiled-in set the CPU lacks is named, with the reason, never silently left out
        assert any(ln.startswith(f"skip {s}: kernel set {s} needs ") for ln in lines), out
    for s in sets:
        for k in ("pack", "bgemm", "gemm_s16"):
            assert f"{s} {k} {count} shapes ok" in lines, out
    assert "MISMATCH" not in out


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "asan-ubsan"])
def test_kernel_test_native(sanitize, tmp_path):
    extra = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g") if sanitize else ()
    if sanitize:
        try:
            cross.build_executable("native", {"probe.c": "int main(void) { return 0; }\n"}, "asan_probe",
                                   extra_flags=extra)
        except BnhwError as e:
            pytest.skip(f"the host gcc cannot build with sanitizers ({e}); "
                        f"`apt-get install -y gcc` provides libasan / libubsan")
    exe = cross.build_executable("native", kernels.kernel_sources(test=True), "kernel_test", extra_flags=extra)
    proc = cross.run_executable("native", exe, ["11", "400"], timeout=120,
                                env={"ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"})
    _kernel_test_lines(proc, _impls(), 400, [s for s in kernel_sets() if s not in ("ref", *_impls())])


@pytest.mark.parametrize("arch", ["armv7", "aarch64"])
def test_kernel_test_qemu(arch):
    ok, why = cross.toolchain_status(arch)
    if not ok:
        pytest.skip(why)
    exe = cross.build_executable(arch, kernels.kernel_sources(test=True), "kernel_test")
    for seed in ("3", "4"):
        proc = cross.run_executable(arch, exe, [seed, "400"], timeout=120)
        _kernel_test_lines(proc, ["portable", "neon"], 400)


# --------------------------------------------------------- the NEON inner loop as built

#: (tile rows, tile columns) of the NEON kernels per arch and the patterns of the instruction classes
#: of their inner loops: bgemm per 128-bit step, gemm_s16 per 8 int16 (two multiply-accumulates)
NEON_TILE = {"aarch64": (4, 4), "armv7": (2, 4)}
NEON_CLASSES = {
    ("aarch64", "bgemm"): {"cnt": r"\tcnt\tv\d+\.16b", "eor": r"\teor\tv\d+\.16b", "add8": r"\tadd\tv\d+\.16b",
                           "load": r"\tldr\tq\d+|\tld1\t\{v\d+\.(2d|16b)\}"},
    ("armv7", "bgemm"): {"cnt": r"\tvcnt\.8\tq", "eor": r"\tveor\tq", "add8": r"\tvadd\.i8\tq",
                         "load": r"\tvld1\.64\t\{d\d+-d\d+\}"},
    ("aarch64", "gemm_s16"): {"mlal": r"\tsmlal2?\tv\d+\.4s", "load": r"\tldr\tq\d+|\tld1\t\{v\d+\.8h\}"},
    ("armv7", "gemm_s16"): {"mlal": r"\tvmlal\.s16\tq", "load": r"\tvld1\.16\t\{d\d+-d\d+\}"},
}


def _inner_loop(asm: str, func: str, marker: str) -> list[str]:
    """The body (label .. backward branch) of the first innermost loop of ``func`` containing ``marker``."""
    body = asm.split(f"\n{func}:\n", 1)[1].split(f".size\t{func},", 1)[0].splitlines()
    labels: dict[str, int] = {}
    for i, line in enumerate(body):
        m = re.match(r"^(\.L\d+):$", line)
        if m:
            labels[m.group(1)] = i
            continue
        m = re.search(r"\t(?:b|bne|bgt|bhi|bcc|bcs|bge|blt|b\.\w+|cbnz|cbz)\t(\.L\d+)$", line)
        if m and m.group(1) in labels:
            loop = body[labels[m.group(1)]:i + 1]
            if any(re.search(marker, ln) for ln in loop):
                return loop
    raise AssertionError(f"no loop with {marker} in {func}")


@pytest.mark.parametrize("kernel", ["bgemm", "gemm_s16"])
@pytest.mark.parametrize("arch", ["armv7", "aarch64"])
def test_neon_inner_loop(arch, kernel, tmp_path):
    """The instruction mix documented in kernels_neon.c, on the code GCC generates: per step one veor,
    vcnt and byte vadd (bgemm) or two vmlal (gemm_s16) per output of the tile, MR + NR q loads, and
    nothing spilled to the stack."""
    ok, why = cross.toolchain_status(arch)
    if not ok:
        pytest.skip(why)
    t = cross.target(arch)
    for name, text in kernels.kernel_sources().items():
        (tmp_path / name).write_text(text)
    flags = [f for f in t.flags if f != "-static"]
    subprocess.run([t.compiler, *flags, "-S", str(tmp_path / "kernels_neon.c"), "-o", str(tmp_path / "n.s")],
                   check=True)
    pats = NEON_CLASSES[arch, kernel]
    first = next(iter(pats.values()))
    loop = _inner_loop((tmp_path / "n.s").read_text(), f"bnhw_{kernel}_neon", first)
    mr, nr = NEON_TILE[arch]
    counts = {k: sum(bool(re.search(p, ln)) for ln in loop) for k, p in pats.items()}
    per_out = {"bgemm": {"cnt": 1, "eor": 1, "add8": 1}, "gemm_s16": {"mlal": 2}}[kernel]
    unroll = counts[next(iter(per_out))] // (per_out[next(iter(per_out))] * mr * nr)
    want = {k: unroll * v * mr * nr for k, v in per_out.items()} | {"load": unroll * (mr + nr)}
    assert unroll >= 1 and counts == want, (counts, "\n".join(loop))
    assert not [ln for ln in loop if re.search(r"\bsp\b", ln)], "spills in the inner loop:\n" + "\n".join(loop)


# ------------------------------------------------------------------------ cross helpers

def test_toolchain_status_names_the_missing_tool(monkeypatch):
    monkeypatch.setattr(cross.shutil, "which", lambda name: None)
    monkeypatch.setattr(cross.platform, "machine", lambda: "x86_64")
    ok, why = cross.toolchain_status("armv7")
    assert not ok
    assert "arm-linux-gnueabihf-gcc and qemu-arm not found" in why
    assert "apt-get install -y gcc-arm-linux-gnueabihf qemu-user" in why
    ok, why = cross.toolchain_status("aarch64")
    assert not ok and "apt-get install -y gcc-aarch64-linux-gnu qemu-user" in why
    with pytest.raises(BnhwError, match="aarch64-linux-gnu-gcc"):
        cross.build_executable("aarch64", {"x.c": "int main(void) { return 0; }\n"}, "x")
    with pytest.raises(BnhwError, match="unknown CPU target"):
        cross.toolchain_status("riscv")


def test_build_error_is_one_line(tmp_path):
    with pytest.raises(BnhwError) as e:
        cross.build_executable("native", {"bad.c": "int main(void) { return missing; }\n"}, "bad", out_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "bad.c:1" in msg and "error" in msg and str(tmp_path) not in msg


def test_build_is_cached_and_runs(tmp_path):
    srcs = {"m.h": "#define ANSWER 42\n", "m.c": '#include <stdio.h>\n#include <math.h>\n#include "m.h"\n'
            'int main(int argc, char **argv) { printf("%d %s %.0f\\n", ANSWER, argc > 1 ? argv[1] : "-", '
            'sqrt((double)argc * 8)); return 3; }\n'}
    exe = cross.build_executable("native", srcs, "m", out_dir=tmp_path)
    assert cross.build_executable("native", srcs, "m", out_dir=tmp_path) == exe
    assert [p.name for p in tmp_path.iterdir()] == [exe.name]
    r = cross.run_executable("native", exe, ["hi"])
    assert (r.returncode, r.stdout) == (3, "42 hi 4\n")


# ------------------------------------------------- the run-time choice on older x86-64 CPUs

@pytest.mark.parametrize("cpu", list(OLDER_X86))
def test_kernel_test_on_older_x86_cpus(cpu):
    """One static build on CPUs without AVX-512 (Haswell), without AVX2 (Nehalem), without popcnt
    (qemu64): the dispatcher offers exactly the sets the CPU runs, every one bit-exact with the
    reference, and names each other set with what the CPU has -- never an illegal instruction."""
    cmd = qemu_x86(cpu)
    exe = cross.build_executable("native", kernels.kernel_sources(test=True), "kernel_test_static",
                                 extra_flags=("-static",))
    proc = subprocess.run([*cmd, str(exe), "5", "150"], capture_output=True, text=True, timeout=300)
    want = OLDER_X86[cpu]
    _kernel_test_lines(proc, want[1:], 150, [s for s in kernel_sets() if s not in want])
