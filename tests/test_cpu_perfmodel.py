"""The embedded-CPU performance model (bnhw.hw.cpu.perfmodel): its kernel instruction mixes equal what the
cross compilers emit for src/kernels_neon.c, its per-core figures equal the hand arithmetic of the issue
tables, a binary conv's modelled time scales with its work, the cores order as they should, and a
whole lowered network gets a row per op whose totals add up.  Everything it reports is a model, never a
measurement, and says so."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from importlib import resources

import numpy as np
import pytest
from helpers.graphs import (
    Builder,
    add_mvau,
    bin_graph,
    bireal_graph,
    cell_graph,
    cnv_w1a1_graph,
    int_graph,
    requant_graph,
    rprelu_gap_graph,
    swg,
    ties_graph,
)

from bnhw.errors import BnhwError
from bnhw.hw.cpu import asm_mix
from bnhw.hw.cpu import perfmodel as pm
from bnhw.hw.cpu.program import OPCODES, CpuOp, CpuProgram, CpuTensor, lower_cpu
from bnhw.hw.ir import DType

SRC = resources.files("bnhw.hw.cpu").joinpath("src")
PACKAGES = {"armv7": "gcc-arm-linux-gnueabihf", "aarch64": "gcc-aarch64-linux-gnu"}
CORES = ("cortex-a9", "cortex-a53", "cortex-a72")


# ------------------------------------------------------------------------------ the mixes vs the compiled code
_ASM: dict[tuple[str, str | None], str] = {}


def _compiler(isa: str) -> str:
    cc = pm.COMPILERS[isa]
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} (the {isa} cross compiler) not found on PATH; install it with: "
                    f"apt-get install {PACKAGES[isa]}")
    return cc


def _flags(isa: str, mcpu: str | None) -> list[str]:
    flags = list(pm.COMPILE_FLAGS[isa])
    if mcpu:
        flags = [f for f in flags if not f.startswith("-mcpu=")] + [f"-mcpu={mcpu}"]
    return flags


def _assembly(isa: str, mcpu: str | None, tmp_path_factory) -> str:
    """kernels_neon.c compiled to assembly with the cross build's flags (``-mcpu`` replaced if given)."""
    key = (isa, mcpu)
    if key not in _ASM:
        cc = _compiler(isa)
        d = tmp_path_factory.mktemp(f"asm-{isa}-{mcpu or 'default'}")
        for name in ("kernels_neon.c", "bnhw_kernels.h", "bnhw_tiling.h"):
            (d / name).write_text(SRC.joinpath(name).read_text())
        out = d / "kernels_neon.s"
        r = subprocess.run([cc, *_flags(isa, mcpu), "-S", "-I", str(d), str(d / "kernels_neon.c"), "-o", str(out)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        _ASM[key] = out.read_text()
    return _ASM[key]


def _macros(isa: str, tmp_path_factory) -> dict[str, str]:
    """The preprocessor macros of kernels_neon.c as the cross compiler sees them."""
    cc = _compiler(isa)
    d = tmp_path_factory.mktemp(f"macros-{isa}")
    for name in ("kernels_neon.c", "bnhw_kernels.h", "bnhw_tiling.h"):
        (d / name).write_text(SRC.joinpath(name).read_text())
    r = subprocess.run([cc, *pm.COMPILE_FLAGS[isa], "-dM", "-E", "-I", str(d), str(d / "kernels_neon.c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return dict(m.groups() for m in re.finditer(r"^#define (\w+) (.*)$", r.stdout, re.M))


def _as_counts(mix) -> Counter:
    return Counter({k: int(v) for k, v in mix.items() if v})


# (isa, -mcpu override): the A9 build, the A53 build, and the AArch64 build tuned for the A72 (the same mix)
BUILDS = [("armv7", None), ("aarch64", None), ("aarch64", "cortex-a72")]


@pytest.mark.parametrize("isa,mcpu", BUILDS, ids=["armv7-a9", "aarch64-a53", "aarch64-a72"])
def test_bgemm_mix_equals_compiled_hot_loop(isa, mcpu, tmp_path_factory):
    """BGEMM_MIX is what GCC emits: the hot loop of bnhw_bgemm_neon (the straight-line loop with the most
    Q-form popcounts) and the chunk loop around it (the widening), counted instruction by instruction."""
    mix = pm.BGEMM_MIX[isa]
    asm = _assembly(isa, mcpu, tmp_path_factory)
    body = asm_mix.asm_function(asm, "bnhw_bgemm_neon")
    (i, j), outer = asm_mix.hot_loop(body, isa, "vcnt_q")
    hot = asm_mix.count_mix(body[i:j + 1], isa)
    assert not [k for k in asm_mix.count_mix(body, isa) if k.startswith("unknown")]
    assert hot == _as_counts(mix.step(mix.mr, mix.nr)), "\n".join(body[i:j + 1])
    # per step: MR + NR 128-bit loads, MR * NR each of EOR / CNT / byte ADD, one branch
    assert hot["vld128"] == mix.mr + mix.nr
    assert hot["veor_q"] == hot["vcnt_q"] == hot["vadd_q"] == mix.mr * mix.nr
    assert hot["branch"] == 1
    assert outer is not None
    chunk = asm_mix.count_mix(body[outer[0]:outer[1] + 1], isa) - hot
    assert chunk == _as_counts(mix.chunk), "\n".join(body[outer[0]:outer[1] + 1])
    # the widening: one pairwise add long and one pairwise add-accumulate per output of the tile
    assert chunk["vpaddl_q"] == chunk["vpadal_q"] == mix.mr * mix.nr


@pytest.mark.parametrize("isa,mcpu", BUILDS, ids=["armv7-a9", "aarch64-a53", "aarch64-a72"])
def test_gemm_s16_mix_equals_compiled_hot_loop(isa, mcpu, tmp_path_factory):
    mix = pm.GEMM_S16_MIX[isa]
    body = asm_mix.asm_function(_assembly(isa, mcpu, tmp_path_factory), "bnhw_gemm_s16_neon")
    (i, j), _ = asm_mix.hot_loop(body, isa, "vmlal")
    hot = asm_mix.count_mix(body[i:j + 1], isa)
    assert hot == _as_counts(mix.step(mix.mr, mix.nr)), "\n".join(body[i:j + 1])
    assert hot["vmlal"] == 2 * mix.mr * mix.nr                # 8 int16 products per output per step


@pytest.mark.parametrize("isa", ["armv7", "aarch64"])
def test_tile_shape_equals_kernel_defines(isa, tmp_path_factory):
    macros = _macros(isa, tmp_path_factory)
    assert int(macros["BNHW_NEON_MR"]) == pm.BGEMM_MIX[isa].mr == pm.GEMM_S16_MIX[isa].mr
    assert int(macros["BNHW_NEON_NR"]) == pm.BGEMM_MIX[isa].nr == pm.GEMM_S16_MIX[isa].nr
    assert int(macros["BNHW_NEON_CHUNK"]) == pm.BGEMM_MIX[isa].chunk_steps


def test_compile_flags_are_the_cross_builds():
    cross = pytest.importorskip("bnhw.hw.cpu.cross")
    for isa, flags in pm.COMPILE_FLAGS.items():
        t = cross.TARGETS[isa]
        assert t.compiler == pm.COMPILERS[isa]
        assert tuple(f for f in t.flags if f not in ("-static", "-pthread")) == flags   # link flags


def test_asm_classifier():
    a64 = {"\tldr\tq3, [x24, x26]": {"vld128": 1}, "\tstp\tq16, q15, [sp, 176]": {"vst128": 2},
           "\tldr\td18, [x20]": {"vld64": 1}, "\teor\tv14.16b, v10.16b, v3.16b": {"veor_q": 1},
           "\teor\tv27.8b, v18.8b, v15.8b": {"veor_d": 1}, "\tcnt\tv14.16b, v14.16b": {"vcnt_q": 1},
           "\tadd\tv31.16b, v31.16b, v14.16b": {"vadd_q": 1}, "\tadd\tx26, x26, 16": {"alu": 1},
           "\tuadalp\tv0.4s, v27.8h": {"vpadal_q": 1}, "\tuaddlp\tv27.8h, v27.16b": {"vpaddl_q": 1},
           "\tsmlal2\tv16.4s, v4.8h, v7.8h": {"vmlal": 1}, "\tmovi\tv9.4s, 0": {"vmovi": 1},
           "\tbne\t.L46": {"branch": 1}, "\tb.ne\t.L46": {"branch": 1}, "\tcbz\tw28, .L48": {"branch": 1},
           "\tstr\tw4, [x22, x10, lsl 2]": {"store": 1}, "\tfmov\tw4, s0": {"vtocore": 1},
           ".L46:": {}, "\t.p2align 3,,7": {}}
    v7 = {"\tvld1.64\t{d22-d23}, [r5:64]": {"vld128": 1}, "\tvld1.16\t{d4}, [r2]": {"vld64": 1},
          "\tvldr\td16, [sp, #64]": {"vld64": 1}, "\tveor\tq14, q13, q8": {"veor_q": 1},
          "\tvcnt.8\tq13, q13": {"vcnt_q": 1}, "\tvcnt.8\td29, d29": {"vcnt_d": 1},
          "\tvadd.i8\tq0, q0, q13": {"vadd_q": 1}, "\tvpadal.u16\tq13, q5": {"vpadal_q": 1},
          "\tvmov\tq2, q3  @ v16qi": {"veor_q": 1}, "\tvmov.i32\tq15, #0  @ v4si": {"vmovi": 1},
          "\tvmov\tr0, s14\t@ int": {"vtocore": 1}, "\tvmlal.s16\tq3, d18, d22": {"vmlal": 1},
          "\tadds\tr3, r3, #16": {"alu": 1}, "\tit\tge": {"alu": 1}, "\tbgt\t.L51": {"branch": 1},
          "\tldrhgt\tr1, [r5, r2]": {"load": 1}, "\tstrd\tr6, r7, [sp, #176]": {"store": 1},
          "\tsmlabb\tr3, r0, r2, r3": {"mul": 1}, "\tvst1.64\t{d26-d27}, [sp:64]": {"vst128": 1}}
    for line, want in a64.items():
        assert asm_mix.classify_asm(line, "aarch64") == want, line
    for line, want in v7.items():
        assert asm_mix.classify_asm(line, "armv7") == want, line


# ------------------------------------------------------------------------------ the per-core figures by hand
def test_roofline_by_hand():
    """128 binary MACs per EOR + CNT + ADD (q) at each core's peak issue rate."""
    # A9: one NEON data-processing issue per cycle; EOR q 1 + CNT q 2 + ADD q 1 = 4 NEON cycles
    assert pm.roofline_bmacs_per_cycle("cortex-a9") == pytest.approx(128 / 4)
    # A53: three Q-form instructions, one per cycle from slot 0
    assert pm.roofline_bmacs_per_cycle("cortex-a53") == pytest.approx(128 / 3)
    # A72: three instructions on two F pipes
    assert pm.roofline_bmacs_per_cycle("cortex-a72") == pytest.approx(128 / (3 / 2))


def test_inner_loop_by_hand():
    """The full-tile hot loop, one 128-bit step, through each core's issue table."""
    # A9, 2x4 tile: NEON pipe 6 VLD1 x1 + 8 VEOR x1 + 8 VCNT x2 + 8 VADD x1 = 38 cycles (the issue mux sees
    # 6 + 24 = 30, the two issue slots (6 + 24 + 8 + 1) / 2 = 19.5); 8 outputs x 128 bits
    assert pm.inner_loop_bmacs_per_cycle("cortex-a9") == pytest.approx(8 * 128 / 38)
    # A53, 4x4 tile: slot 0 takes 48 Q-form ops + 8 LDR q x 2 = 64 cycles (issue (48 + 8 * 3 + 3) / 2 = 37.5)
    assert pm.inner_loop_bmacs_per_cycle("cortex-a53") == pytest.approx(16 * 128 / 64)
    # A72, 4x4 tile: 48 ASIMD ops on F0/F1 = 24 cycles (decode 59 / 3 = 19.7, L 8, I (8 + 2) / 2 = 5)
    assert pm.inner_loop_bmacs_per_cycle("cortex-a72") == pytest.approx(16 * 128 / 24)


def test_kernel_with_widening_by_hand():
    """31 steps plus one chunk of widening (the compiled chunk code) per full tile."""
    # A9 chunk: NEON pipe 8 VPADDL q x2 + 8 VPADAL q x2 + VMOV.I32 + 12 VMOV q + 12 VLDR + 12 VSTR + VLD1 + VST1 = 71
    assert pm.kernel_bmacs_per_cycle("cortex-a9") == pytest.approx(31 * 8 * 128 / (31 * 38 + 71))
    # A53 chunk: slot 0: 48 Q-form ops + 13 LDR q x 2 + 13 STR q x 1 = 87
    assert pm.kernel_bmacs_per_cycle("cortex-a53") == pytest.approx(31 * 16 * 128 / (31 * 64 + 87))
    # A72 chunk: decode (48 SIMD + 26 q loads / stores + 14 ALU + 1 branch) / 3 = 89 / 3 beats F (48 / 2 = 24)
    assert pm.kernel_bmacs_per_cycle("cortex-a72") == pytest.approx(31 * 16 * 128 / (31 * 24 + 89 / 3))


def test_reciprocal_throughputs():
    a9, a53, a72 = (pm.get_core(c) for c in CORES)
    assert (a9.reciprocal_throughput("vcnt_q"), a9.reciprocal_throughput("veor_q")) == (2, 1)
    assert (a53.reciprocal_throughput("vcnt_q"), a53.reciprocal_throughput("vcnt_d")) == (1, 0.5)
    assert a53.reciprocal_throughput("vld128") == 2
    assert (a72.reciprocal_throughput("veor_q"), a72.reciprocal_throughput("vpadal_q")) == (0.5, 1)
    assert a72.reciprocal_throughput("vmlal") == 1
    for c in (a9, a53, a72):
        assert set(pm.CLASSES) <= set(c.costs), c.name
        assert c.sources and c.assumptions and c.clock_mhz > 0
        assert c.title in c.table()


def test_core_order_at_equal_clock():
    """A72 >= A53 >= A9 binary throughput per cycle: kernel, roofline and a real bgemm."""
    k = [pm.kernel_bmacs_per_cycle(c) for c in CORES]
    r = [pm.roofline_bmacs_per_cycle(c) for c in CORES]
    assert k[2] >= k[1] >= k[0] and r[2] >= r[1] >= r[0]
    for m, n, kw in [(512, 64, 36), (100, 128, 18), (1, 512, 8)]:
        cyc = [pm.bgemm_cycles(c, m, n, kw) for c in CORES]
        assert cyc[0] >= cyc[1] >= cyc[2], (m, n, kw, cyc)
    for c in CORES:
        assert pm.kernel_bmacs_per_cycle(c) <= pm.inner_loop_bmacs_per_cycle(c) <= pm.roofline_bmacs_per_cycle(c)


def test_get_core():
    assert pm.get_core("a53") is pm.get_core("Cortex-A53") is pm.CORES["cortex-a53"]
    with pytest.raises(BnhwError, match="unknown core"):
        pm.get_core("cortex-m4")


# ------------------------------------------------------------------------------ ops and programs
def _bconv_program(pixels: int, cin: int = 256, cout: int = 64) -> CpuProgram:
    """One 1x1 binary conv over a 1 x pixels image (direct: no im2col), thresholded to packed bits."""
    x = CpuTensor("x", (1, pixels, cin), True)
    y = CpuTensor("y", (1, pixels, cout), True)
    attrs = {"H": 1, "W": pixels, "C": cin, "Ho": 1, "Wo": pixels, "Cout": cout, "k": 1, "stride": 1, "pad": 0,
             "dil": 1, "groups": 1, "pad_value": 0, "out_mode": 1, "n_thr": 1, "out_groups": 1}
    wpg = cin // 64
    params = [np.zeros(cout * wpg, np.uint64), np.zeros(cout, np.int32), np.zeros(cout, np.int32)]
    op = CpuOp("BCONV", [0], 1, attrs, params, ["conv"], "l0")
    assert op.bmacs == pixels * cout * cin
    return CpuProgram("one-conv", [x, y], [op], 0, 1, {})


@pytest.mark.parametrize("core", CORES)
def test_bconv_time_scales_with_bmacs(core):
    rows = [pm.model_program(_bconv_program(512 * m), core).rows[0] for m in (1, 2, 4)]
    t = [r.seconds for r in rows]
    assert [r.bmacs for r in rows] == [rows[0].bmacs * m for m in (1, 2, 4)]
    assert t[1] == pytest.approx(2 * t[0], rel=1e-12) and t[2] == pytest.approx(4 * t[0], rel=1e-12)
    assert rows[0].bound == "bgemm compute"
    # and more output channels cost proportionally more (per-row pack overheads aside)
    t2 = pm.model_program(_bconv_program(512, cout=128), core).rows[0].seconds
    assert t2 == pytest.approx(2 * t[0], rel=0.02)
    # never faster than the roofline allows
    c = pm.get_core(core)
    assert rows[0].cycles >= rows[0].bmacs / pm.roofline_bmacs_per_cycle(c)


@pytest.mark.parametrize("core", CORES)
def test_model_program_cnv_w1a1(core):
    prog = lower_cpu(cnv_w1a1_graph())
    rep = pm.model_program(prog, core)
    c = pm.get_core(core)
    assert len(rep.rows) == len(prog.ops)
    assert [r.name for r in rep.rows] == [o.name for o in prog.ops]
    assert [r.op for r in rep.rows] == [o.op for o in prog.ops]
    for r, o in zip(rep.rows, prog.ops):
        assert (r.bmacs, r.macs) == (o.bmacs, o.macs)
        assert r.compute_cycles == pytest.approx(sum(r.parts.values()))
        assert r.cycles == max(r.compute_cycles, r.memory_cycles) > 0
        assert r.seconds == pytest.approx(r.cycles / (c.clock_mhz * 1e6))
        assert r.bound in (*r.parts, "memory stream")
    assert rep.cycles == pytest.approx(sum(r.cycles for r in rep.rows))
    assert rep.seconds == pytest.approx(sum(r.seconds for r in rep.rows))
    assert rep.bmacs == sum(r.bmacs for r in rep.rows) == prog.bmacs
    assert rep.macs == prog.macs
    assert rep.fps == pytest.approx(1 / rep.seconds)
    assert rep.binary_gops == pytest.approx(2 * prog.bmacs / rep.seconds / 1e9)
    assert rep.roofline_gops == pytest.approx(2 * pm.roofline_bmacs_per_cycle(c) * c.clock_mhz / 1e3)
    assert rep.binary_gops < rep.roofline_gops
    assert rep.clock_mhz == c.clock_mhz and rep.board == c.board
    # labelled as a model, in every form it is shown
    assert rep.how == "modelled"
    assert rep.format().startswith("MODELLED (not measured)")
    assert any("MODELLED, not measured" in n for n in rep.notes)
    assert any("memory" in n and "GB/s" in n for n in rep.notes)
    d = rep.to_dict()
    for key in ("core", "clock_mhz", "board", "seconds", "fps", "binary_gops", "kernel_bmacs_per_cycle",
                "roofline_bmacs_per_cycle", "roofline_gops", "rows", "notes"):
        assert key in d
    for row in d["rows"]:
        assert {"name", "op", "bmacs", "macs", "seconds", "binary_gops", "bound", "cycles"} <= set(row)


def test_cnv_w1a1_order_and_clock():
    prog = lower_cpu(cnv_w1a1_graph())
    cyc = [pm.model_program(prog, c).cycles for c in CORES]
    assert cyc[0] > cyc[1] > cyc[2]
    base = pm.model_program(prog, "cortex-a53")
    slow = pm.model_program(prog, "cortex-a53", clock_mhz=666.5)
    assert slow.clock_mhz == 666.5 and "reference board clock" in slow.notes[0]
    for a, b in zip(base.rows, slow.rows):          # compute cycles do not depend on the clock
        assert a.compute_cycles == pytest.approx(b.compute_cycles)
        assert b.seconds == pytest.approx(b.cycles / 666.5e6)
    assert slow.seconds > base.seconds
    with pytest.raises(BnhwError):
        pm.model_program(prog, "cortex-a53", clock_mhz=-1)


def _int32_gemm_graph():
    """An integer conv whose weights exceed int16: the runtime's int32 GEMM, not gemm_s16."""
    rng = np.random.default_rng(3)
    b = Builder("s32", (4, 4, 3), DType.int_(4))
    return b.graph(add_mvau(b, "x", rng.integers(-40000, 40000, (5, 3))))


def test_every_opcode_is_modelled():
    graphs = [int_graph(), bin_graph(), bireal_graph(), requant_graph(), rprelu_gap_graph(), ties_graph(),
              cnv_w1a1_graph(), _int32_gemm_graph(), cell_graph()]
    seen: set[str] = set()
    parts: set[str] = set()
    for g in graphs:
        prog = lower_cpu(g)
        for core in CORES:
            rep = pm.model_program(prog, core)
            assert len(rep.rows) == len(prog.ops)
            assert all(r.cycles > 0 and np.isfinite(r.cycles) for r in rep.rows)
            seen.update(r.op for r in rep.rows)
            for r in rep.rows:
                parts.update(r.parts)
    assert seen == set(OPCODES)
    assert {"int16 gemm", "int32 gemm", "bgemm compute", "im2col copy", "threshold+pack",
            "multi-threshold", "packed max pool", "bit gather", "unpack"} <= parts


def test_unknown_op_is_an_error():
    prog = _bconv_program(8)
    prog.ops[0].op = "FFT"
    with pytest.raises(BnhwError, match="no model"):
        pm.model_program(prog, "cortex-a9")


# ----------------------------------------------------------------------------- executed instructions (QEMU)
@pytest.mark.parametrize("arch", ["armv7", "aarch64"])
def test_qemu_instruction_count_matches_the_hot_loop(arch):
    """The QEMU count (bnhw.hw.cpu.insn_count) of the NEON bgemm: two more K words add exactly one hot-loop
    step per register tile, i.e. tiles x the step mix (the mix the compiled-code test above checks), and a
    whole bgemm of known size is within 10% of the model's instruction count (measured: 0-4%)."""
    from bnhw.hw.cpu.cross import toolchain_status
    from bnhw.hw.cpu.insn_count import bgemm_count, modelled_bgemm_instructions

    ok, why = toolchain_status(arch)
    if not ok or shutil.which("qemu-arm" if arch == "armv7" else "qemu-aarch64") is None:
        pytest.skip(why if not ok else f"{arch}: qemu-user not found")
    mix = pm.BGEMM_MIX[arch]
    M, N = 4 * mix.mr, 4 * mix.nr                  # 16 full tiles
    step = sum(mix.step(mix.mr, mix.nr).values())
    assert bgemm_count(arch, M, N, 10) - bgemm_count(arch, M, N, 8) == 16 * step     # 4 -> 5 steps, one chunk
    got = bgemm_count(arch, 64, 64, 9)
    assert abs(modelled_bgemm_instructions(arch, 64, 64, 9) - got) / got < 0.10


@pytest.mark.parametrize("arch", ["armv7", "aarch64"])
def test_qemu_instruction_count_matches_bgemm_small(arch):
    """The shallow-conv GEMM's model (BGEMM_SMALL_MIX) against QEMU's executed counts of
    bnhw_bgemm_small_neon: on AArch64 one more K word adds exactly the step mix of every tile whose
    shape the model reads off the C (4 rows x 1 vector, one row); whole calls at nasbnn's shapes (every
    tile kind: full and partial rows, 1-4 channels in the last column group, one and two chunks)
    within 10 % (measured: AArch64 -3.8..+2.2 %, ARMv7 -7.1..+8.8 %)."""
    from bnhw.hw.cpu.cross import toolchain_status
    from bnhw.hw.cpu.insn_count import bgemm_count, modelled_bgemm_small_instructions

    ok, why = toolchain_status(arch)
    if not ok or shutil.which("qemu-arm" if arch == "armv7" else "qemu-aarch64") is None:
        pytest.skip(why if not ok else f"{arch}: qemu-user not found")
    mix = pm.BGEMM_SMALL_MIX[arch]
    if arch == "aarch64":
        for r, n, v, odd in ((mix.mr, 2, 1, False), (1, 2, 1, False), (1, 3, 2, True)):
            step = sum(mix.step(r, v, odd).values())
            assert bgemm_count(arch, r, n, 5, small=True) - bgemm_count(arch, r, n, 4, small=True) == step, (r, n)
    for m, n, k in ((1, 1, 9), (8, 3, 9), (9, 6, 18), (64, 12, 18), (37, 96, 36)):
        got = bgemm_count(arch, m, n, k, small=True)
        assert abs(modelled_bgemm_small_instructions(arch, m, n, k) - got) / got < 0.10, (m, n, k, got)


def test_small_depth_is_the_runtimes():
    """perfmodel costs a binary conv with bgemm_small exactly where runtime.c runs it."""
    text = resources.files("bnhw.hw.cpu").joinpath("src", "runtime.c").read_text()
    assert int(re.search(r"^#define SMALL_DEPTH (\d+)", text, re.M).group(1)) == pm.SMALL_DEPTH
    assert int(re.search(r"^#define TAP_ROWS_COUT (\d+)", text, re.M).group(1)) == pm.TAP_ROWS_COUT
    assert int(re.search(r"^#define TAP_ROWS_WO (\d+)", text, re.M).group(1)) == pm.TAP_ROWS_WO


def test_tap_row_convs_are_costed_without_im2col():
    """A 32x32 6-channel 3x3 conv (nasbnn's) is costed as runtime.c runs it: 3 bgemm_small calls (K = 3 words)
    per row run -- chunks of 910 pixels (64 KiB / 72 bytes a pixel) cut at row ends: 31 runs of 32, one of
    14 and one of 18 -- the partial sums and the padded plane, no im2col; a 64-channel conv keeps im2col."""
    def conv(side, c, pad):
        b = Builder("t", (side, side, c), DType.bipolar())
        g = b.graph(add_mvau(b, swg(b, "x", 3, pad=pad), np.ones((c, 9 * c), dtype=np.int64)))
        prog = lower_cpu(g)
        return prog, next(o for o in prog.ops if o.op == "BCONV")

    core = pm.get_core("cortex-a53")
    prog, op = conv(32, 6, 1)
    assert pm.tap_rows(op.attrs)
    parts = pm.model_op(op, prog, core).parts
    assert "im2col copy" not in parts and parts["tap-row sums"] > 0 and parts["plane copy"] > 0
    want = 3 * (31 * pm.bgemm_small_cycles(core, 32, 6, 3) + pm.bgemm_small_cycles(core, 14, 6, 3)
                + pm.bgemm_small_cycles(core, 18, 6, 3))
    assert parts["bgemm compute"] == pytest.approx(want)
    prog, op = conv(30, 64, 0)
    assert not pm.tap_rows(op.attrs) and "im2col copy" in pm.model_op(op, prog, core).parts
    assert not pm.tap_rows({**op.attrs, "C": 6, "Cout": 6, "Wo": 8})

# ----------------------------------------------------------------------------- the cell ops (WPOOL, GAP, CONCAT)
def _runtime_noinline_asm(isa: str, tmp_path_factory) -> str:
    """runtime.c compiled to assembly with the cross build's flags, op_wpool / op_gap / op_concat kept out
    of line (they are inlined into bnhw_model_run otherwise; their loops are the same)."""
    cc = _compiler(isa)
    d = tmp_path_factory.mktemp(f"rt-asm-{isa}")
    for name in ("bnhw_runtime.h", "bnhw_kernels.h", "bnhw_tiling.h"):
        (d / name).write_text(SRC.joinpath(name).read_text())
    text, n = re.subn(r"^((?:VEC_CLONES )?static int op_(?:wpool|gap|concat)\()", r"__attribute__((noinline)) \1",
                      SRC.joinpath("runtime.c").read_text(), flags=re.M)
    assert n == 3
    (d / "runtime.c").write_text(text)
    out = d / "runtime.s"
    r = subprocess.run([cc, *pm.COMPILE_FLAGS[isa], "-S", "-I", str(d), str(d / "runtime.c"), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out.read_text()


def _straight_loops(asm: str, fn: str, isa: str) -> list[Counter]:
    name = next(m.group(1) for m in re.finditer(rf"^({fn}(?:\.\w+)*):$", asm, re.M))
    body = asm_mix.asm_function(asm, name)
    return [asm_mix.count_mix(body[i:j + 1], isa) for i, j in asm_mix.asm_loops(body)
            if not any(re.match(r"^\.L\w+:", body[x]) for x in range(i + 1, j + 1))]


@pytest.mark.parametrize("isa", ["armv7", "aarch64"])
def test_cell_op_mixes_equal_compiled_loops(isa, tmp_path_factory):
    """CELL_OP_MIXES' per-element loops are what GCC emits for runtime.c: op_gap's int64 sum loop, op_concat's
    per-pixel loop (two memcpy calls), and op_wpool's straight-line tap loops (AArch64: the average's tap
    and the maximum's pad taps of a row outside the image; ARMv7: also the maximum's predicated tap)."""
    asm = _runtime_noinline_asm(isa, tmp_path_factory)
    m = pm.CELL_OP_MIXES[isa]
    assert _straight_loops(asm, "op_gap", isa) == [_as_counts(m["gap_elem"])]
    assert _straight_loops(asm, "op_concat", isa) == [_as_counts(m["concat_pixel"])]
    want = ["wpool_avg_tap", "wpool_max_ytap"] + (["wpool_max_tap"] if isa == "armv7" else [])
    got = _straight_loops(asm, "op_wpool", isa)
    assert sorted(map(sorted, (c.items() for c in got))) == sorted(sorted(_as_counts(m[k]).items()) for k in want)


def _qemu_or_skip(arch: str) -> None:
    from bnhw.hw.cpu.cross import toolchain_status

    ok, why = toolchain_status(arch)
    if not ok or shutil.which("qemu-arm" if arch == "armv7" else "qemu-aarch64") is None:
        pytest.skip(why if not ok else f"{arch}: qemu-user not found")


@pytest.mark.parametrize("arch", ["armv7", "aarch64"])
def test_qemu_counts_match_the_cell_ops(arch, tmp_path):
    """The cell ops' modelled instructions against QEMU's executed counts on helpers' cell_graph: WPOOL
    (max and avg, padded, stride 1 and 2, unpadded 2x2) and CONCAT run inlined in bnhw_model_run plus
    glibc's memcpy -- together within 10 % of the model (measured -5.4 % AArch64, -4.9 % ARMv7; before
    these mixes -67 % / -78 %); a padded 3x3 max pool's per-channel count (C 16 minus C 8: the run
    loop's own instructions cancel) within 6 % (measured -2.7 %, -2.0 %)."""
    from helpers.graphs import Builder, swg

    from bnhw.hw.cpu import insn_count as ic
    from bnhw.hw.cpu.program import write_model

    _qemu_or_skip(arch)
    counter = pm.instruction_counter(arch)

    def counts(g) -> tuple[int, float]:
        prog = lower_cpu(g)
        x = np.random.default_rng(0).integers(-128, 128, prog.tensors[prog.input].shape)
        c = ic.bnhw_symbols(ic.run_count(arch, write_model(prog, tmp_path / f"{g.name}.bnhwcpu"), x))
        got = c["bnhw_model_run"] + sum(v for s, v in c.items() if "memcpy" in s)
        rows = pm.model_program(prog, counter).rows
        return got, sum(r.compute_cycles for r in rows if r.op in ("WPOOL", "CONCAT", "GAP"))

    got, mod = counts(cell_graph())
    assert abs(mod / got - 1) < 0.10, (got, mod)

    def pool(c: int):
        t8 = DType.int_(8)
        b = Builder(f"maxpool{c}", (6, 6, c), t8)
        return b.graph(b.add("WindowMax", swg(b, "x", 3, pad=1, pad_value=t8.min), (6, 6, c), t8, {"k": 3}))

    (g8, m8), (g16, m16) = counts(pool(8)), counts(pool(16))
    assert abs((m16 - m8) / (g16 - g8) - 1) < 0.06, (g16 - g8, m16 - m8)


@pytest.mark.parametrize("arch", ["armv7", "aarch64"])
def test_memcpy_table_is_qemus(arch):
    """MEMCPY_INSTRUCTIONS (glibc's memcpy per call by size) equals QEMU's count of a static test program's
    memcpy at three of its sizes, and memcpy_mix interpolates between them."""
    from bnhw.hw.cpu.cross import build_executable
    from bnhw.hw.cpu.insn_count import count_executed

    _qemu_or_skip(arch)
    src = ("#include <string.h>\n#include <stdlib.h>\n#include <stdio.h>\nstatic int a[4096], b[4096];\n"
           "int main(int c, char **v) { int n = atoi(v[1]), k = atoi(v[2]);\n"
           "  for (int i = 0; i < k; i++) memcpy(b + i % 7 * 64, a + i % 5 * 64, (size_t)n);\n"
           "  printf(\"%d\\n\", b[3]); return 0; }\n")
    exe = build_executable(arch, {"memcpy_count.c": src}, "memcpy-count")
    table = dict(pm.MEMCPY_INSTRUCTIONS[arch])
    for n in (16, 64, 256):
        one, two = count_executed(arch, exe, [str(n), "10"]), count_executed(arch, exe, [str(n), "20"])
        per = sum(two[s] - one[s] for s in two if "memcpy" in s) / 10
        assert per == table[n] == sum(pm.memcpy_mix(arch, n).values()), (n, per)
    assert table[32] < sum(pm.memcpy_mix(arch, 40).values()) < table[48]
