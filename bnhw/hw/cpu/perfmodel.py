"""Modelled latency of a lowered network on an embedded ARM core: Cortex-A9, Cortex-A53, Cortex-A72.

Nothing in this module is measured.  ``bnhw bench-cpu MODEL --target cortex-a9|cortex-a53|cortex-a72``
prints what it computes, labelled as modelled, with the core's roofline of binary operations per
cycle beside it.

The model
---------
*An instruction mix* is a count of instructions per class (the classes are in :data:`CLASSES`).
A core (:class:`CoreModel`) says, per class, how many issue slots an instruction takes and how many
cycles it occupies each execution resource ("port"); a mix of ``n_c`` instructions of class ``c``
then takes::

    cycles(mix) = max( sum_c n_c * slots_c / issue_width ,
                       max over ports p of  sum_c n_c * occupancy_{c,p} / units_p )

i.e. the steady-state throughput bound of a loop body whose iterations overlap.  Dependency
latencies, cache misses and the front end are not modelled (see "Memory" below for what is).  Branch
mispredictions are added only where the code is data-dependent by nature (the threshold binary
search), at the core's penalty.

The binary GEMM (``bnhw_bgemm_neon`` in ``src/kernels_neon.c``) is modelled from its compiled code:
:data:`BGEMM_MIX` holds, per ISA, the instruction mix of the hot loop (one 128-bit step of an
``MR x NR`` register tile: ``MR + NR`` 128-bit loads, ``MR * NR`` each of EOR, CNT and the byte ADD,
the address / loop-counter updates and the branch) and of the per-chunk widening code around it
(``UADDLP``/``VPADDL`` + ``UADALP``/``VPADAL`` per output, the byte-accumulator re-zeroing and what
the compiler spills around it), as GCC 12 emits them with the cross-build flags in
:data:`COMPILE_FLAGS`.  ``tests/test_cpu_perfmodel.py`` compiles the kernel to assembly, finds the
hot loop and counts its instructions by class: the mixes here equal what the compiler emitted.
:data:`GEMM_S16_MIX` does the same for the int16 GEMM of the first layer (``bnhw_gemm_s16_neon``).

*Roofline*: the binary MACs per cycle if the core did nothing but the indispensable
``EOR + CNT + ADD`` per 128 bits (128 binary MACs) at its peak issue rate, i.e.
``128 / cycles({veor_q: 1, vcnt_q: 1, vadd_q: 1})``.  1 binary MAC = 2 binary ops (GOPS figures).

The cores (reciprocal throughputs; "port: n" = cycles of that resource per instruction)
---------------------------------------------------------------------------------------
Cortex-A9 (ARMv7-A + NEON MPE), reference board PYNQ-Z2 (Zynq-7020 PS) at 650 MHz.  Two instructions
issue per cycle, but NEON / VFP instructions and loads / stores share one issue path ("mux": one of
them per cycle); the NEON data path is 64 bits wide and one NEON data-processing instruction enters
it per cycle::

    class                          mux  neon  ls   other
    VEOR / VADD / VMOV q (and d)    1    1    -
    VCNT.8 q                        1    2    -    (d: neon 1)
    VPADDL / VPADAL q               1    2    -    (d: neon 1)
    VMLAL.S16 (d x d -> q)          1    1    -
    VLD1 {d, d+1} / VLDR / VST      1    1    1
    LDR / STR (core)                1    -    1
    ALU (add, cmp, mov, ...)        -    -    -    alu: 1 of 2
    MUL / MLA                       -    -    -    mul: 2
    integer divide (no SDIV/UDIV:   -    -    -    div: 40 (32-bit) / 100 (64-bit)  [estimate]
      libgcc __aeabi_(l)divmod)

Sources: LLVM ``ARMScheduleA9.td`` (the Cortex-A9 itineraries; the file says it follows the
Cortex-A9 Technical Reference Manuals: one NEON issue per cycle, "VCLSQ/VCLZQ/VCNTQ, takes two cycles",
VPADDL / VPADAL q two cycles, VEOR / VADD q and VMLAL.S16 one, VLD1 of two D registers one NEON + one
load/store cycle, all NEON and load/store instructions through one issue multiplexer (MUX0)); GCC
``cortex-a9.md`` / ``cortex-a9-neon.md`` (ARM Ltd.: "the Load/Store, VFP and Neon issue pipeline are
multiplexed").  The instruction-timing tables of the Cortex-A9 NEON Media Processing Engine TRM
(DDI 0409) themselves could not be read for this model.  Uncertain: GCC's A9 NEON model differs in
details (it issues NEON data processing and NEON loads / permutes on separate paths and charges
``VLD1`` of two registers two cycles of the latter), which would change the A9 figures; LLVM's
itineraries are used throughout.  The divide costs and the mispredict penalty (8) are estimates, not
table values.

Cortex-A53 (AArch64), reference board KV260 (Zynq UltraScale+ K26, APU at 1333 MHz; the Ultra96-V2
runs its A53s at 1200 MHz: ``--clock-mhz``).  In-order, dual issue; the Advanced SIMD unit is two
64-bit halves: a D-form instruction uses one half (two per cycle), a Q-form one uses both and issues
from slot 0 only (one per cycle, beside one non-SIMD instruction in slot 1); a 128-bit vector load
occupies the single issue cycle plus slot 0 for one more cycle::

    class                          slots slot0 simd(2 halves) ls  other
    EOR/CNT/ADD/UADDLP/UADALP/MOVI q  1    1     2              -
    same, D form                      1    -     1              -
    SMLAL / SMLAL2                    1    1     mul: 2 (of 2)  -
    LDR q                             3    2     -              2
    LDR d / LDR x                     1    -     -              1
    STR q                             2    1     -              2
    ALU                               1    -     -              -   alu: 1 of 2
    SDIV w / x                        1    -     -              -   div: 12 / 20 [assumption]

ARM publishes no Cortex-A53 optimisation guide.  These figures are assumptions, taken from:
GCC ``cortex-a53.md`` (contributed by ARM Ltd.: the SIMD unit modelled as two 64-bit halves, Q-forms
reserving both and issuing from slot 0, 128-bit loads single-issuing); LLVM ``AArch64SchedA53.td``
(one FP/SIMD pipe, dual issue, mispredict penalty 9 "based on the Cortex-A53 Software Optimisation
Specification - Instruction Timings spreadsheet"); the ncnn developer guide "arm-a53-a55-dual-issue"
(measured: a 128-bit vector load cannot dual-issue with SIMD arithmetic and costs 2 cycles).
Uncertain: a version of LLVM's ``AArch64SchedA53.td`` (a stored copy at commit ``02b3d4f``) models the
SIMD data path as 64 bits wide and charges Q-form instructions two cycles of its single FP/SIMD pipe;
under that assumption every A53 SIMD throughput here would halve.

Cortex-A72 (AArch64), reference board Raspberry Pi 4 (BCM2711) at 1500 MHz.  Three instructions
decode / dispatch per cycle into out-of-order pipes: two FP/ASIMD pipes F0/F1 (128 bits each), one
load (L), one store (S), two integer (I0/I1), multi-cycle (M), branch (B)::

    class                             fp(F0/F1)  f0  f1  L  S  I   other
    EOR / ADD / CNT / UADDLP / MOVI q     1       -   -   -  -  -   (throughput 2 per cycle)
    UADALP (pairwise add-accumulate)      1       -   1   -  -  -   (F1 only: 1 per cycle)
    SMLAL / SMLAL2                        1       1   -   -  -  -   (F0 only: 1 per cycle)
    LDR q/d, register offset              -       -   -   1  -  1
    STR q                                 -       -   -   -  2  1
    ALU                                   -       -   -   -  -  1 of 2
    SDIV w / x                            -       -   -   -  -  -   M: 12 / 20 (upper bounds)

Sources: ARM "Cortex-A72 Software Optimization Guide" (UAN 0016A, 2015), sections 2-3, for the
pipelines (branch, integer 0 / 1, multi-cycle, load, store, FP/ASIMD 0 / 1, ASIMD integer multiply on
F0) -- the only part of the guide read for this model; the per-class numbers are those LLVM's
``AArch64SchedA57.td`` encodes from the Cortex-A57 guide (LLVM schedules the A72 with that model):
ASIMD integer basic / logical / count on either F pipe (throughput 2), ``UADALP`` on F1 only,
``SMLAL`` on F0 only, a register-offset ``LDR q`` = one I + one L micro-op, 3-wide decode,
mispredict penalty 14.  Assumptions: the A72 has the same per-class throughputs as the A57 for these
integer classes; ``STR q`` takes two store-pipe cycles; ``SDIV`` costs 12 (w) / 20 (x) cycles (the upper
ends of the 4-12 / 4-20 ranges recalled from the A57 / A72 guides, not re-read here).

Other work (not from compiled code)
-----------------------------------
Everything except the two GEMM kernels gets a per-element instruction mix estimated from
``src/runtime.c`` (written down in :data:`OP_MIXES` and :func:`_op_mixes`), costed with the same core
tables: the im2col word copies (a bounds test per tap, an inline loop of one load and one store per
64-bit word), the popcount-to-accumulator epilogue (load, ``full - 2p``, store per output, plus the
zero-padding correction of border pixels), the threshold-and-pack epilogue (``bnhw_pack_neon``: per 64 channels
32 vector loads, 16 compares, 24 narrows, 8 ANDs, 7 pairwise adds, a move to a core register and a
store), the multi-threshold binary search (``ceil(log2(n + 1))`` probes, half of them mispredicted),
max-pool ANDs on packed words, and the elementwise integer ops (64-bit multiplies and the
round-half-even shift, done with shifts and compares, no division).  The compiler may
vectorise some of these loops; the model assumes scalar code for them, except the shortcut add
and RPReLU when the declared stream types put them in the runtime's int32 lanes (``_lanes32``):
those get a 4-lane NEON mix per element plus the min / max pass that proves the lanes exact.

The cell networks' ops are modelled from the compiled code instead (:data:`CELL_OP_MIXES`, per ISA):
the padded window pool (``op_wpool``: per output element, per row and per tap, with the taps inside the
image, in a padded column and in a padded row counted from the pool's geometry), the global average pool
and the channel concatenation (``op_concat``: two memcpy calls a pixel; GLIBC's memcpy by size,
:data:`MEMCPY_INSTRUCTIONS`, counted under QEMU).  ``tests/test_cpu_perfmodel.py`` checks their loop
mixes against the assembly and their totals against QEMU's executed instructions.

Memory
------
Caches are not modelled: all data are assumed to hit in L1 / L2.  DRAM appears only as a
streaming bound: an op's compulsory traffic (its input and output tensors and its parameters, once
per image) at the core's assumed sustained bandwidth (:attr:`CoreModel.dram_gbs`); the op takes the
larger of its compute and streaming cycles.  The bandwidths are assumptions (the Raspberry Pi 4
figure is a published single-thread STREAM copy result; the Zynq ones are rough fractions of the
boards' DRAM peak).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ...errors import BnhwError
from .program import OUT_ACC, OUT_MULTI, OUT_PACKED, WORD, CpuOp, CpuProgram, CpuTensor

__all__ = ["CLASSES", "Cost", "CoreModel", "CORES", "get_core", "BgemmMix", "GemmS16Mix", "BGEMM_MIX",
           "GEMM_S16_MIX", "COMPILE_FLAGS", "COMPILERS", "instruction_counter", "KERNEL_SOURCE", "roofline_bmacs_per_cycle",
           "inner_loop_bmacs_per_cycle", "kernel_bmacs_per_cycle", "bgemm_cycles", "gemm_s16_cycles",
           "BgemmSmallMix", "BGEMM_SMALL_MIX", "SMALL_DEPTH", "TAP_ROWS_COUT", "TAP_ROWS_WO", "tap_rows",
           "bgemm_small_cycles",
           "OpRow", "CpuModelReport", "model_op", "model_program", "OP_MIXES", "CELL_OP_MIXES", "MEMCPY_INSTRUCTIONS",
           "memcpy_mix", "INDISPENSABLE"]

# ------------------------------------------------------------------------------------ instruction classes
#: instruction class -> what it covers (A64 mnemonic / ARMv7 mnemonic)
CLASSES: dict[str, str] = {
    "vld128": "128-bit vector load: LDR q, LD1 {.16b}, each q of LDP q; VLD1 {d, d+1}",
    "vld64": "64-bit vector load: LDR d/s; VLDR, VLD1 {d}",
    "vst128": "128-bit vector store: STR q, each q of STP q; VST1 {d, d+1}",
    "vst64": "64-bit vector store: STR d; VSTR, VST1 {d}",
    "veor_q": "Q-form bitwise / register move: EOR, AND, ORR, MOV v.16b; VEOR, VAND, VMOV q",
    "veor_d": "D-form bitwise: EOR v.8b; VEOR, VAND d",
    "vcnt_q": "Q-form population count: CNT v.16b; VCNT.8 q",
    "vcnt_d": "D-form population count: CNT v.8b; VCNT.8 d",
    "vadd_q": "Q-form integer add / sub / compare: ADD v.16b, CMGT; VADD.I8 q, VCLT q",
    "vadd_d": "D-form integer add / sub / compare",
    "vpaddl_q": "Q-form pairwise add long: UADDLP v.8h, v.16b; VPADDL.U8 q",
    "vpaddl_d": "D-form pairwise add long",
    "vpadal_q": "Q-form pairwise add and accumulate long: UADALP; VPADAL.U16 q",
    "vpadal_d": "D-form pairwise add and accumulate long",
    "vpadd_q": "Q-form pairwise add: ADDP v.4s",
    "vpadd_d": "D-form pairwise add: ADDP v.8b; VPADD d",
    "vreduce": "across-lanes add: ADDV",
    "vmovi": "vector move immediate: MOVI; VMOV.I32",
    "vaddw": "widening add: UADDW; VADDW",
    "vmlal": "int16 multiply-accumulate long (4 products): SMLAL, SMLAL2; VMLAL.S16",
    "vmull": "int16 multiply long: SMULL; VMULL.S16",
    "vnarrow": "narrowing move: XTN; VMOVN",
    "vtocore": "SIMD -> core register: UMOV, FMOV w/x; VMOV r, s / r, r, d",
    "vfromcore": "core -> SIMD register: INS, DUP, FMOV s/d; VMOV d, r, r",
    "alu": "scalar integer ALU: ADD, SUB, CMP, MOV, CSEL, shifts, IT",
    "mul": "scalar multiply / multiply-accumulate: MUL, MADD, SMULL x; MUL, MLA, SMLAL, SMLABB",
    "load": "scalar load: LDR x/w, LDRD, LDRH, LDP x",
    "store": "scalar store: STR x/w, STRD, STP x",
    "branch": "branch: B.cond, CBZ, RET, BL; B, BX, BL",
    "div32": "32-bit integer division (SDIV w; ARMv7: libgcc __aeabi_idivmod)",
    "div64": "64-bit integer division (SDIV x; ARMv7: libgcc __aeabi_ldivmod)",
}

Mix = Mapping[str, float]


def _mix(**counts: float) -> dict[str, float]:
    return {k: float(v) for k, v in counts.items() if v}


def _add(*mixes: Mix) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in mixes:
        for k, v in m.items():
            out[k] = out.get(k, 0.0) + v
    return out


def _times(m: Mix, n: float) -> dict[str, float]:
    return {k: v * n for k, v in m.items()}


# ------------------------------------------------------------------------------------ cores
@dataclass(frozen=True)
class Cost:
    """What one instruction of a class takes: issue slots and cycles of occupancy per port."""

    slots: float = 1.0
    ports: tuple[tuple[str, float], ...] = ()


def _c(slots: float = 1.0, **ports: float) -> Cost:
    return Cost(slots, tuple(ports.items()))


@dataclass(frozen=True)
class CoreModel:
    """The issue model of one core (see the module docstring for the tables and their sources)."""

    name: str                         # "cortex-a9"
    title: str                        # "Cortex-A9"
    isa: str                          # "armv7" | "aarch64"
    board: str                        # the reference board
    clock_mhz: float                  # its clock
    issue_width: int                  # instructions issued (decoded / dispatched) per cycle
    ports: dict[str, int]             # execution resource -> number of units
    costs: dict[str, Cost]            # instruction class -> cost
    neon_datapath: str                # the SIMD data path, in words
    mispredict_penalty: int           # cycles lost per mispredicted branch
    dram_gbs: float                   # assumed sustained DRAM bandwidth of one core (GB/s)
    sources: tuple[str, ...]
    assumptions: tuple[str, ...]

    def cost(self, cls: str) -> Cost:
        try:
            return self.costs[cls]
        except KeyError:
            raise BnhwError(f"{self.title}: no cost for instruction class {cls!r}") from None

    def port_cycles(self, mix: Mix) -> dict[str, float]:
        """Cycles each resource (and ``"issue"``) needs for ``mix``, mispredictions excluded."""
        use: dict[str, float] = {"issue": 0.0}
        for cls, n in mix.items():
            if cls == "mispredict" or not n:
                continue
            c = self.cost(cls)
            use["issue"] += n * c.slots / self.issue_width
            for p, occ in c.ports:
                use[p] = use.get(p, 0.0) + n * occ / self.ports[p]
        return use

    def cycles(self, mix: Mix) -> float:
        """Throughput-bound cycles of ``mix`` (plus ``mix["mispredict"]`` times the penalty)."""
        return max(self.port_cycles(mix).values()) + mix.get("mispredict", 0.0) * self.mispredict_penalty

    def limit(self, mix: Mix) -> str:
        """The resource that bounds ``mix``."""
        use = self.port_cycles(mix)
        return max(use, key=lambda p: use[p])

    def reciprocal_throughput(self, cls: str) -> float:
        """Cycles per instruction of ``cls`` when a loop does nothing else."""
        return self.cycles({cls: 1.0})

    def table(self) -> str:
        """The core's cost table as text (class, reciprocal throughput, slots and port occupancy)."""
        lines = [f"{self.title} ({self.isa}, {self.board}, {self.clock_mhz:.0f} MHz): issue {self.issue_width}/cycle, "
                 f"ports " + ", ".join(f"{p} x{n}" for p, n in self.ports.items()) + f"; SIMD {self.neon_datapath}"]
        for cls in CLASSES:
            if cls in self.costs:
                c = self.costs[cls]
                occ = ", ".join(f"{p} {o:g}" for p, o in c.ports) or "-"
                lines.append(f"  {cls:10s} {self.reciprocal_throughput(cls):6.3f} cyc/instr  (slots {c.slots:g}; {occ})")
        return "\n".join(lines)


_A9_NEON = _c(mux=1, neon=1)
_A9_NEON2 = _c(mux=1, neon=2)
_A9_VMEM = _c(mux=1, neon=1, ls=1)

CORTEX_A9 = CoreModel(
    name="cortex-a9", title="Cortex-A9", isa="armv7",
    board="PYNQ-Z2 (Zynq-7020 PS)", clock_mhz=650.0, issue_width=2,
    ports={"alu": 2, "mux": 1, "neon": 1, "ls": 1, "mul": 1, "branch": 1, "div": 1},
    costs={
        "vld128": _A9_VMEM, "vld64": _A9_VMEM, "vst128": _A9_VMEM, "vst64": _A9_VMEM,
        "veor_q": _A9_NEON, "veor_d": _A9_NEON, "vadd_q": _A9_NEON, "vadd_d": _A9_NEON,
        "vcnt_q": _A9_NEON2, "vcnt_d": _A9_NEON,
        "vpaddl_q": _A9_NEON2, "vpaddl_d": _A9_NEON, "vpadal_q": _A9_NEON2, "vpadal_d": _A9_NEON,
        "vpadd_q": _A9_NEON2, "vpadd_d": _A9_NEON, "vreduce": _A9_NEON2,
        "vmovi": _A9_NEON, "vaddw": _A9_NEON, "vmlal": _A9_NEON, "vmull": _A9_NEON, "vnarrow": _A9_NEON,
        "vtocore": _A9_NEON, "vfromcore": _A9_NEON,
        "alu": _c(alu=1), "mul": _c(mul=2), "load": _c(mux=1, ls=1), "store": _c(mux=1, ls=1),
        "branch": _c(branch=1), "div32": _c(div=40), "div64": _c(div=100),
    },
    neon_datapath="64-bit (one NEON data-processing issue per cycle; VCNT / VPADAL q take 2)",
    mispredict_penalty=8, dram_gbs=1.0,
    sources=(
        "LLVM ARMScheduleA9.td: Cortex-A9 itineraries (following the Cortex-A9 and Cortex-A9 NEON Media Processing "
        "Engine Technical Reference Manuals): VCNT/VPADAL q 2 NEON cycles, VEOR/VADD/VMLAL 1, VLD1 x2 1, one "
        "NEON-or-load/store issue per cycle (MUX0)",
        "GCC config/arm/cortex-a9.md and cortex-a9-neon.md (ARM Ltd.): load/store, VFP and NEON issue multiplexed",
    ),
    assumptions=(
        "VLD1 of two D registers: 1 issue cycle (LLVM); GCC's model says 2",
        "integer division: Cortex-A9 has no divide instruction; libgcc __aeabi_idivmod ~40 and __aeabi_ldivmod "
        "~100 cycles (estimates)",
        "mispredict penalty 8 cycles (estimate from the pipeline depth)",
        "sustained DRAM bandwidth of one core 1.0 GB/s (the PYNQ-Z2's 16-bit DDR3-1050 peaks at 2.1 GB/s)",
    ),
)

_A53_Q = _c(1, slot0=1, simd=2)
_A53_D = _c(1, simd=1)
CORTEX_A53 = CoreModel(
    name="cortex-a53", title="Cortex-A53", isa="aarch64",
    board="KV260 (Zynq UltraScale+ K26 APU)", clock_mhz=1333.0, issue_width=2,
    ports={"slot0": 1, "simd": 2, "simdmul": 2, "ls": 1, "alu": 2, "mac": 1, "branch": 1, "div": 1},
    costs={
        "vld128": _c(3, slot0=2, ls=2), "vld64": _c(1, ls=1), "vst128": _c(2, slot0=1, ls=2), "vst64": _c(1, ls=1),
        "veor_q": _A53_Q, "veor_d": _A53_D, "vadd_q": _A53_Q, "vadd_d": _A53_D,
        "vcnt_q": _A53_Q, "vcnt_d": _A53_D, "vpaddl_q": _A53_Q, "vpaddl_d": _A53_D,
        "vpadal_q": _A53_Q, "vpadal_d": _A53_D, "vpadd_q": _A53_Q, "vpadd_d": _A53_D, "vreduce": _A53_Q,
        "vmovi": _A53_Q, "vaddw": _A53_Q, "vnarrow": _A53_Q,
        "vmlal": _c(1, slot0=1, simdmul=2), "vmull": _c(1, slot0=1, simdmul=2),
        "vtocore": _A53_D, "vfromcore": _A53_D,
        "alu": _c(alu=1), "mul": _c(mac=1), "load": _c(ls=1), "store": _c(ls=1), "branch": _c(branch=1),
        "div32": _c(div=12), "div64": _c(div=20),
    },
    neon_datapath="2 x 64-bit halves (D-forms dual issue; Q-forms use both halves, slot 0 only)",
    mispredict_penalty=9, dram_gbs=3.0,
    sources=(
        "GCC config/arm/cortex-a53.md (ARM Ltd.): Advanced SIMD as two 64-bit units, 128-bit ops reserve both and "
        "issue from slot 0; 128-bit vector loads single-issue",
        "LLVM AArch64SchedA53.td: dual issue, one FP/SIMD pipe, mispredict penalty 9 (from ARM's A53 "
        "instruction-timing spreadsheet)",
        "ncnn developer guide 'arm-a53-a55-dual-issue' (measured): 128-bit vector load not dual-issued with SIMD "
        "arithmetic, 2 cycles",
    ),
    assumptions=(
        "ARM publishes no Cortex-A53 software optimisation guide: every A53 figure is an assumption from the "
        "compiler models and measurements above",
        "Q-form integer SIMD 1 per cycle (slot 0); a version of LLVM's A53 model charges 2 cycles, which would "
        "halve the A53's SIMD throughput",
        "SDIV 12 (w) / 20 (x) cycles",
        "sustained DRAM bandwidth of one core 3.0 GB/s",
    ),
)

_A72_F = _c(fp=1)
CORTEX_A72 = CoreModel(
    name="cortex-a72", title="Cortex-A72", isa="aarch64",
    board="Raspberry Pi 4 (BCM2711)", clock_mhz=1500.0, issue_width=3,
    ports={"fp": 2, "f0": 1, "f1": 1, "L": 1, "S": 1, "int": 2, "M": 1, "B": 1},
    costs={
        "vld128": _c(L=1, int=1), "vld64": _c(L=1, int=1), "vst128": _c(S=2, int=1), "vst64": _c(S=1, int=1),
        "veor_q": _A72_F, "veor_d": _A72_F, "vadd_q": _A72_F, "vadd_d": _A72_F, "vcnt_q": _A72_F, "vcnt_d": _A72_F,
        "vpaddl_q": _A72_F, "vpaddl_d": _A72_F, "vpadd_q": _A72_F, "vpadd_d": _A72_F,
        "vpadal_q": _c(fp=1, f1=1), "vpadal_d": _c(fp=1, f1=1), "vreduce": _c(fp=1, f1=1),
        "vmovi": _A72_F, "vaddw": _A72_F, "vnarrow": _A72_F,
        "vmlal": _c(fp=1, f0=1), "vmull": _c(fp=1, f0=1),
        "vtocore": _c(L=1, int=1), "vfromcore": _c(fp=1, L=1),
        "alu": _c(int=1), "mul": _c(M=1), "load": _c(L=1), "store": _c(S=1), "branch": _c(B=1),
        "div32": _c(M=12), "div64": _c(M=20),
    },
    neon_datapath="2 x 128-bit pipes F0/F1",
    mispredict_penalty=14, dram_gbs=5.5,
    sources=(
        "ARM Cortex-A72 Software Optimization Guide (UAN 0016A), sections 2-3: pipelines B, I0/I1, M, L, S, "
        "F0/F1 (ASIMD integer multiply on F0)",
        "LLVM AArch64SchedA57.td (from the Cortex-A57 guide, also used for the A72): 3-wide decode, V = F0|F1 "
        "throughput 2, UADALP X (F1), SMLAL W (F0), LDR q register offset 1 I + 1 L, mispredict penalty 14",
        "sci-pi.org.uk 'Stream' (Raspberry Pi 4, single thread, gcc -O3): STREAM copy 5.5 GB/s",
    ),
    assumptions=(
        "per-class throughputs as LLVM's A57 model encodes them (the A72 guide's instruction tables were not read "
        "here)",
        "STR q: 2 store-pipe cycles; SDIV at the upper bounds 12 (w) / 20 (x) cycles",
        "sustained DRAM bandwidth of one core 5.5 GB/s (the published STREAM copy figure)",
    ),
)

CORES: dict[str, CoreModel] = {c.name: c for c in (CORTEX_A9, CORTEX_A53, CORTEX_A72)}


def instruction_counter(isa: str) -> CoreModel:
    """A pseudo-core of ``isa`` on which every instruction of every class costs one cycle and nothing else
    does (no ports, no mispredictions, no memory bound): its "cycles" of a mix, a kernel or a program are
    the instructions the model predicts (checked against QEMU's executed counts by
    :mod:`bnhw.hw.cpu.insn_count`).  A library call (ARMv7's integer division) counts as one."""
    if isa not in COMPILERS:
        raise BnhwError(f"no instruction mixes for ISA {isa!r} (armv7, aarch64)")
    return CoreModel(name=f"count-{isa}", title=f"instruction count ({isa})", isa=isa, board="-", clock_mhz=1000.0,
                     issue_width=1, ports={}, costs={c: Cost() for c in CLASSES}, neon_datapath="-",
                     mispredict_penalty=0, dram_gbs=1e12, sources=(), assumptions=())


def get_core(name: str | CoreModel) -> CoreModel:
    """The :class:`CoreModel` called ``name`` (``cortex-a9``, ``a53``, ``Cortex-A72``, ...)."""
    if isinstance(name, CoreModel):
        return name
    key = str(name).strip().lower().replace("_", "-")
    if not key.startswith("cortex-"):
        key = "cortex-" + key
    if key not in CORES:
        raise BnhwError(f"unknown core {name!r}: choose one of {', '.join(CORES)}")
    return CORES[key]


# ------------------------------------------------------------------------------------ kernel mixes
#: the kernel source the mixes model (relative to this package)
KERNEL_SOURCE = "src/kernels_neon.c"
#: cross compilers per ISA
COMPILERS = {"armv7": "arm-linux-gnueabihf-gcc", "aarch64": "aarch64-linux-gnu-gcc"}
#: the flags the mixes were read with (those of the cross build, without the link flags -static -pthread)
COMPILE_FLAGS = {
    "armv7": ("-O3", "-std=c99", "-mcpu=cortex-a9", "-mfpu=neon", "-mfloat-abi=hard"),
    "aarch64": ("-O3", "-std=c99", "-mcpu=cortex-a53"),
}


@dataclass(frozen=True)
class BgemmMix:
    """Instruction mix of ``bnhw_bgemm_neon`` (``src/kernels_neon.c``, ``bgemm_tile``) on one ISA.

    ``step(R, C)`` is one iteration of the hot loop, one 128-bit step (2 words of K) of an ``R x C``
    tile: per loaded row one 128-bit load (plus ``addr_alu_per_row`` address additions: ARMv7 forms
    each row's address with an ADD, AArch64 uses register-offset loads), per output one EOR, CNT and
    byte ADD, ``loop_alu`` index / compare instructions and the branch.  ``chunk`` is what runs once
    per chunk of at most ``chunk_steps`` steps outside the hot loop for the full ``mr x nr`` tile (the
    widening ``UADDLP``/``UADALP`` per output, re-zeroing the byte accumulators and the accumulator
    spills the compiler adds), as compiled.  ``step(mr, nr)`` and ``chunk`` are checked against the
    compiled code by ``tests/test_cpu_perfmodel.py``; the other parts (the same formula for partial
    tiles, their chunk code, ``tile_mix``, ``tail_mix``) are estimates from the C source.
    """

    isa: str
    function: str
    mr: int
    nr: int
    addr_alu_per_row: int
    loop_alu: int
    chunk: dict[str, int]
    compiler: str
    chunk_steps: int = 31
    step_bits: int = 128

    def step(self, r: int, c: int) -> dict[str, float]:
        return _mix(vld128=r + c, veor_q=r * c, vcnt_q=r * c, vadd_q=r * c,
                    alu=self.addr_alu_per_row * (r + c) + self.loop_alu, branch=1)

    def chunk_mix(self, r: int, c: int) -> dict[str, float]:
        """Once per chunk: widen the byte counters (as compiled for the full tile, else from the C)."""
        if (r, c) == (self.mr, self.nr):
            return {k: float(v) for k, v in self.chunk.items()}
        return _mix(vmovi=1, veor_q=r * c - 1, vpaddl_q=r * c, vpadal_q=r * c, alu=r + c + 6, branch=1)

    def tile_mix(self, r: int, c: int) -> dict[str, float]:
        """Once per tile: pointer setup, zeroed accumulators, the final lane sums and stores (from the C)."""
        base = _mix(alu=12 + 2 * (r + c), branch=3, vmovi=1, veor_q=r * c - 1)
        if self.isa == "aarch64" and c == 4:     # three ADDP q and one q store per row of four outputs
            red = _mix(vpadd_q=3 * r, vst128=r)
        elif self.isa == "aarch64":
            red = _mix(vreduce=r * c, vtocore=r * c, store=r * c)
        else:                                    # VADD d + VPADD d + VMOV r, s + STR per output
            red = _mix(vadd_d=r * c, vpadd_d=r * c, vtocore=r * c, store=r * c, alu=r * c)
        return _add(base, red)

    def tail_mix(self, r: int, c: int) -> dict[str, float]:
        """The odd last word (64-bit forms), once per tile when K is odd (from the C)."""
        return _mix(vld64=r + c, veor_d=r * c, vcnt_d=r * c, vpaddl_d=r * c, vaddw=r * c, alu=r + c + 2, branch=1)


@dataclass(frozen=True)
class GemmS16Mix:
    """Instruction mix of ``bnhw_gemm_s16_neon`` (``src/kernels_neon.c``, ``gemm_s16_tile``) on one ISA.

    ``step(R, C)`` is one iteration of the hot loop, 8 values of K for an ``R x C`` tile: per loaded
    row one 128-bit load (plus ``addr_alu_per_row`` address additions), two ``SMLAL``/``VMLAL.S16`` per
    output, ``loop_alu`` index / compare instructions and the branch; checked against the compiled code
    for the full tile.  The 4-wide step, the zero-padded last 1..3 values (lane loads) and the per-tile
    setup and lane sums are estimates from the C source.
    """

    isa: str
    function: str
    mr: int
    nr: int
    addr_alu_per_row: int
    loop_alu: int
    compiler: str
    step_k: int = 8

    def step(self, r: int, c: int) -> dict[str, float]:
        return _mix(vld128=r + c, vmlal=2 * r * c, alu=self.addr_alu_per_row * (r + c) + self.loop_alu, branch=1)

    def half_step(self, r: int, c: int) -> dict[str, float]:
        """The 4-wide step (K % 8 >= 4), once per tile."""
        return _mix(vld64=r + c, vmlal=r * c, alu=r + c + 2, branch=1)

    def partial_step(self, r: int, c: int, rest: int) -> dict[str, float]:
        """The last ``rest`` (1..3) values, zero-padded to 4 lanes with lane loads, once per tile."""
        return _mix(vmovi=r + c, vld64=rest * (r + c), vmlal=r * c, alu=r + c + 2, branch=rest)

    def tile_mix(self, r: int, c: int) -> dict[str, float]:
        """Once per tile: setup, zeroed accumulators, lane sums and stores."""
        red = (_mix(vreduce=r * c, vtocore=r * c, store=r * c, alu=r * c) if self.isa == "aarch64"
               else _mix(vadd_d=r * c, vpadd_d=r * c, vtocore=r * c, store=r * c, alu=r * c))
        return _add(_mix(alu=12 + 2 * (r + c), branch=3, vmovi=1, veor_q=r * c - 1), red)


_GCC = "GCC 12.2 (Debian 12.2.0-14)"

#: ``bnhw_bgemm_neon``'s mix per ISA (tile MR x NR as #defined in kernels_neon.c)
BGEMM_MIX: dict[str, BgemmMix] = {
    "armv7": BgemmMix(
        isa="armv7", function="bnhw_bgemm_neon", mr=2, nr=4,
        addr_alu_per_row=1, loop_alu=2,
        chunk={"vpaddl_q": 8, "vpadal_q": 8, "vmovi": 1, "veor_q": 12, "vld64": 12, "vst64": 12, "vld128": 1,
               "vst128": 1, "alu": 14, "load": 1, "store": 1, "branch": 1},
        compiler=_GCC),
    "aarch64": BgemmMix(
        isa="aarch64", function="bnhw_bgemm_neon", mr=4, nr=4,
        addr_alu_per_row=0, loop_alu=2,
        chunk={"vpaddl_q": 16, "vpadal_q": 16, "vmovi": 1, "veor_q": 15, "vld128": 13, "vst128": 13, "alu": 14,
               "branch": 1},
        compiler=_GCC),
}

@dataclass(frozen=True)
class BgemmSmallMix:
    """Instruction mix of ``bnhw_bgemm_small_neon`` (``src/kernels_neon.c``, ``bgemm_small_tile``) on one ISA:
    the shallow-conv GEMM (groups at most :data:`SMALL_DEPTH` words deep), output channels in the two
    64-bit lanes of a vector, B k-major.

    A tile is ``R`` (<= ``mr``) rows x ``V`` (1 or 2) vectors of two output channels; ``odd``: the last
    vector holds one channel (a broadcast word instead of a 128-bit load).  ``step(R, V, odd)`` is one
    word of K: per row one broadcast word of A (``a_bcast``), per vector one 128-bit load of B, per
    output one EOR, CNT and byte ADD, the loop's index / compare instructions and branch (``loop``,
    per step: ARMv7's loop is unrolled four times), and for the full tile the register spills GCC adds
    (``full_spill``).  ``chunk_mix`` runs once per chunk of at most ``chunk_steps`` steps (re-zeroed
    byte counters, the widening ``UADDLP``/``UADDLP``/``UADALP`` per output), ``tile_mix`` once per tile
    (zeroed accumulators, the narrowing and the stores), ``call`` once per call.  All of it is read
    from the C source and the compiled code's loops; ``tests/test_cpu_perfmodel.py`` checks the model
    against the instructions QEMU counts executing the kernel (per K step, exact for most tile shapes;
    whole calls within 10 %).
    """

    isa: str
    function: str
    mr: int
    a_bcast: dict[str, float]
    b_bcast: dict[str, float]
    loop: dict[str, float]
    full_spill: dict[str, float]
    chunk_extra: dict[str, float]
    tile_extra: dict[str, float]
    call: dict[str, float]
    compiler: str
    chunk_steps: int = 31
    lanes: int = 2

    def step(self, r: int, v: int, odd: bool = False) -> dict[str, float]:
        parts = [_times(self.a_bcast, r), _mix(vld128=v - int(odd)), _times(self.b_bcast, int(odd)),
                 _mix(veor_q=r * v, vcnt_q=r * v, vadd_q=r * v), self.loop]
        if (r, v) == (self.mr, 2):
            parts.append(self.full_spill)
        return _add(*parts)

    def chunk_mix(self, r: int, v: int) -> dict[str, float]:
        return _add(_mix(vmovi=1, veor_q=r * v, vpaddl_q=2 * r * v, vpadal_q=r * v), self.chunk_extra)

    def tile_mix(self, r: int, v: int, odd: bool = False) -> dict[str, float]:
        return _add(_mix(vmovi=1, veor_q=r * v, vnarrow=r * v, vst64=r * v - int(odd), vtocore=int(odd),
                         store=int(odd), alu=2 * r), self.tile_extra)


#: ``bnhw_bgemm_small_neon``'s mix per ISA (ARMv7: the broadcast is a D load and a D move, the hot loop is
#: unrolled four times -- per step a quarter of its branch, compare and counter -- and the 2 x 2 tile
#: spills three D registers per step; AArch64: LDR d + DUP, no spills)
BGEMM_SMALL_MIX: dict[str, BgemmSmallMix] = {
    "armv7": BgemmSmallMix(
        isa="armv7", function="bnhw_bgemm_small_neon", mr=2,
        a_bcast={"vld64": 1.0, "veor_d": 1.0}, b_bcast={"vld64": 1.0, "veor_d": 1.0},
        loop={"alu": 3.75, "load": 0.25, "branch": 0.25}, full_spill={"vld64": 1.5, "vst64": 1.5, "veor_q": 0.5},
        chunk_extra={"alu": 30.0, "branch": 6.0, "mul": 5.0, "load": 8.0, "store": 4.0, "vld64": 8.0, "vst64": 8.0},
        tile_extra={"alu": 14.0, "branch": 4.0, "load": 2.0},
        call={"alu": 40.0, "branch": 8.0, "load": 10.0, "store": 10.0}, compiler=_GCC),
    "aarch64": BgemmSmallMix(
        isa="aarch64", function="bnhw_bgemm_small_neon", mr=4,
        a_bcast={"vld64": 1.0, "vfromcore": 1.0}, b_bcast={"vld64": 1.0, "vfromcore": 1.0},
        loop={"alu": 3.0, "branch": 1.0}, full_spill={"branch": 2.0},
        chunk_extra={"alu": 5.0, "branch": 3.0}, tile_extra={"alu": 8.0, "branch": 4.0},
        call={"alu": 40.0, "branch": 10.0, "load": 4.0, "store": 4.0}, compiler=_GCC),
}

#: runtime.c's SMALL_DEPTH: binary conv groups at most this many words deep run bgemm_small
SMALL_DEPTH = 2
#: runtime.c's TAP_ROWS_COUT / TAP_ROWS_WO: the most channels a group and the fewest output pixels a row
#: of a binary conv run by tap rows (bgemm_small on window rows in place, no im2col; see tap_rows)
TAP_ROWS_COUT = 32
TAP_ROWS_WO = 16


def tap_rows(attrs: dict) -> bool:
    """Whether runtime.c runs this BCONV by tap rows (its ``tap_rows``): groups at most SMALL_DEPTH words
    deep, no dilation, k > 1, at most TAP_ROWS_COUT channels a group, TAP_ROWS_WO output pixels a row or
    more, and stride 1 unless one group without padding is read in place."""
    g = int(attrs.get("groups", 1))
    in_place = g == 1 and int(attrs.get("pad", 0)) == 0
    return (-(-int(attrs["C"]) // g // WORD) <= SMALL_DEPTH and int(attrs.get("dil", 1)) == 1 and int(attrs["k"]) > 1
            and int(attrs["Cout"]) // g <= TAP_ROWS_COUT and int(attrs["Wo"]) >= TAP_ROWS_WO
            and (in_place or int(attrs.get("stride", 1)) == 1))


def _tap_row_runs(pixels: int, wo: int, r: int) -> dict[int, int]:
    """``{run length: count}`` of the image-row runs of output pixels a tap-row conv calls bgemm_small on
    (chunks of ``r`` pixels, each cut at row ends), as runtime.c's bconv_item walks them."""
    runs: dict[int, int] = {}
    for p0 in range(0, pixels, r):
        rows, ox = min(r, pixels - p0), p0 % wo
        while rows:
            n = min(wo - ox, rows)
            runs[n] = runs.get(n, 0) + 1
            rows -= n
            ox = 0
    return runs


#: ``bnhw_gemm_s16_neon``'s mix per ISA
GEMM_S16_MIX: dict[str, GemmS16Mix] = {
    "armv7": GemmS16Mix(isa="armv7", function="bnhw_gemm_s16_neon", mr=2, nr=4,
                        addr_alu_per_row=1, loop_alu=2, compiler=_GCC),
    "aarch64": GemmS16Mix(isa="aarch64", function="bnhw_gemm_s16_neon", mr=4, nr=4,
                          addr_alu_per_row=0, loop_alu=2, compiler=_GCC),
}

#: the work every 128 binary MACs needs at least: XOR, popcount, accumulate
INDISPENSABLE = {"veor_q": 1.0, "vcnt_q": 1.0, "vadd_q": 1.0}


def roofline_bmacs_per_cycle(core: str | CoreModel) -> float:
    """Binary MACs per cycle if the core issued nothing but EOR + CNT + ADD (q) at its peak rate."""
    return 128.0 / get_core(core).cycles(INDISPENSABLE)


def inner_loop_bmacs_per_cycle(core: str | CoreModel) -> float:
    """Binary MACs per cycle of the full-tile hot loop alone (no widening, no tile overhead)."""
    c = get_core(core)
    mix = BGEMM_MIX[c.isa]
    return mix.step_bits * mix.mr * mix.nr / c.cycles(mix.step(mix.mr, mix.nr))


def kernel_bmacs_per_cycle(core: str | CoreModel) -> float:
    """Steady-state binary MACs per cycle of a full tile: full chunks of steps plus their widening."""
    c = get_core(core)
    mix = BGEMM_MIX[c.isa]
    n = mix.chunk_steps
    cyc = n * c.cycles(mix.step(mix.mr, mix.nr)) + c.cycles(mix.chunk_mix(mix.mr, mix.nr))
    return n * mix.step_bits * mix.mr * mix.nr / cyc


def _tiles(m: int, n: int, mr: int, nr: int) -> list[tuple[int, int, int]]:
    """``(R, C, count)`` of the register tiles the kernels visit for an ``m x n`` output."""
    fm, rm = divmod(max(m, 0), mr)
    fn, rn = divmod(max(n, 0), nr)
    out = [(mr, nr, fm * fn), (mr, 1, fm * rn), (1, nr, rm * fn), (1, 1, rm * rn)]
    return [t for t in out if t[2]]


def bgemm_cycles(core: str | CoreModel, m: int, n: int, k: int) -> float:
    """Modelled cycles of ``bnhw_bgemm_neon(M=m, N=n, K=k words)``."""
    c = get_core(core)
    mix = BGEMM_MIX[c.isa]
    k = max(k, 0)
    steps, odd = divmod(k, 2)
    chunks = -(-steps // mix.chunk_steps)
    total = 0.0
    for r, cc, cnt in _tiles(m, n, mix.mr, mix.nr):
        t = (steps * c.cycles(mix.step(r, cc)) + chunks * c.cycles(mix.chunk_mix(r, cc))
             + c.cycles(mix.tile_mix(r, cc)) + (c.cycles(mix.tail_mix(r, cc)) if odd else 0.0))
        total += cnt * t
    return total


def _small_tiles(m: int, n: int, mr: int) -> list[tuple[int, int, bool, int]]:
    """``(R, V, odd, count)`` of the tiles ``bnhw_bgemm_small_neon`` visits for an ``m x n`` output
    (columns in groups of four: two vectors; the last group of 1-3 channels: 1 or 2 vectors, odd or not)."""
    fm, rm = divmod(max(m, 0), mr)
    fq, rq = divmod(max(n, 0), 4)
    rows = [(mr, fm), (1, rm)]
    cols = [(2, False, fq)] + ([((rq + 1) // 2, bool(rq & 1), 1)] if rq else [])
    return [(r, v, odd, a * b) for r, a in rows for v, odd, b in cols if a * b]


def bgemm_small_cycles(core: str | CoreModel, m: int, n: int, k: int) -> float:
    """Modelled cycles of ``bnhw_bgemm_small_neon(M=m, N=n, K=k words)``."""
    c = get_core(core)
    mix = BGEMM_SMALL_MIX[c.isa]
    k = max(k, 0)
    chunks = -(-k // mix.chunk_steps)
    total = c.cycles(mix.call)
    for r, v, odd, cnt in _small_tiles(m, n, mix.mr):
        total += cnt * (k * c.cycles(mix.step(r, v, odd)) + chunks * c.cycles(mix.chunk_mix(r, v))
                        + c.cycles(mix.tile_mix(r, v, odd)))
    return total


def gemm_s16_cycles(core: str | CoreModel, m: int, n: int, k: int) -> float:
    """Modelled cycles of ``bnhw_gemm_s16_neon(M=m, N=n, K=k)``."""
    c = get_core(core)
    mix = GEMM_S16_MIX[c.isa]
    k = max(k, 0)
    steps, rest = divmod(k, mix.step_k)
    half, tail = divmod(rest, 4)
    total = 0.0
    for r, cc, cnt in _tiles(m, n, mix.mr, mix.nr):
        t = (steps * c.cycles(mix.step(r, cc)) + half * c.cycles(mix.half_step(r, cc))
             + c.cycles(mix.tile_mix(r, cc)) + (c.cycles(mix.partial_step(r, cc, tail)) if tail else 0.0))
        total += cnt * t
    return total


# ------------------------------------------------------------------------------------ other work
#: per-element instruction mixes of the non-GEMM work, estimated from src/runtime.c (see _op_mixes)
OP_MIXES: dict[str, dict[str, float]] = {
    # im2col: per output pixel (row / column advanced incrementally), per tap (bounds test, source or
    # padding pointer), per 64-bit word copied (an inline loop)
    "im2col_pixel": _mix(alu=6, branch=2),
    "im2col_tap": _mix(alu=6, branch=2),
    "im2col_word": _mix(load=1, store=1, alu=1, branch=1),
    # tap rows: per output per window row after the first, the partial added to the row's popcounts (GCC
    # vectorises the flat loop: per 4 int32 two Q loads, one add, one store, a loop step); per pixel of the
    # padded group planes (a pad test; its words copied as copy_word)
    "tap_sum": _mix(vld128=0.5, vadd_q=0.25, vst128=0.25, alu=0.25, branch=0.25),
    "plane_pixel": _mix(alu=3, branch=1),
    # integer im2col: per tap, per element (load, select the pad value, narrow, store)
    "iim2col_tap": _mix(alu=10, branch=2),
    "iim2col_elem": _mix(load=1, alu=2, store=1, branch=1),
    # popcount -> accumulator: per border pixel or run of interior pixels (interior test), per output (load, full - 2p, store;
    # scalar estimate, although the compiler may vectorise the interior loop), per tap of a border pixel
    # of a zero-padded conv (border test), per padded tap and output (the weights' popcount correction)
    "epi_row": _mix(alu=10, branch=3),
    "epi_out": _mix(load=1, alu=3, store=1, branch=1),
    "epi_border_tap": _mix(alu=6, branch=1),
    "epi_pad_corr": _mix(load=2, alu=2, branch=0.5),
    # bnhw_pack_neon: per 64 channels with thresholds (8 x pack8 + 3 levels of VPADD), per channel of a
    # partial word, per row and group
    "pack_word": _mix(vld128=32, vadd_q=16, vnarrow=24, veor_d=8, vpadd_d=7, vtocore=1, store=1, alu=4, branch=1),
    "pack_bit": _mix(load=2, alu=4),
    "pack_group": _mix(alu=6, branch=2),
    # count_le (multi-threshold): per probe of the binary search, per output
    "cle_probe": _mix(load=1, alu=3, branch=1, mispredict=0.5),
    "cle_out": _mix(load=1, mul=1, alu=3, store=1, branch=1),
    # accumulator output: memcpy, per 64-bit word
    "copy_word": _mix(load=1, store=1),
    # int32 GEMM (no int16 contract): per MAC, per output
    "s32_mac": _mix(load=2, mul=1, alu=2, branch=1),
    "s32_out": _mix(store=1, alu=4, branch=1),
    # packed max pool: per output pixel, per tap, per word and tap (dst &= src)
    "pool_pixel": _mix(alu=6, branch=1),
    "pool_tap": _mix(alu=4, branch=1),
    "pool_word": _mix(load=2, alu=1, store=1, branch=1),
    # integer pooling: per output element and tap, per output element
    "ipool_tap": _mix(load=1, alu=3, branch=1),
    "ipool_out": _mix(store=1, alu=2, branch=1),
    # gather: packed per pixel (memset) and per output channel (two divisions locate the bits); int per element
    "gather_pixel": _mix(alu=12, branch=3),
    "gather_bit": _mix(load=3, alu=14, store=1, branch=1, div32=2),
    "gather_elem": _mix(load=2, alu=2, store=1, branch=1),
    # label select: per element
    "argmax_elem": _mix(load=1, alu=2, branch=1),
    # unpack: per element (c / cg and c % cg: one division)
    "unpack_elem": _mix(load=1, alu=6, store=1, branch=1, div32=1),
}


#: The cell ops as runtime.c runs them, per ISA, read from the compiled code (GCC 12.2, the cross build's
#: COMPILE_FLAGS; op_wpool, op_gap and op_concat are inlined into bnhw_model_run, so their loops were read
#: from a copy of runtime.c compiled with the three marked noinline -- the same loops).  Every mix counts
#: the instructions of one path through the loop, as QEMU counts them (an IT block's conditional
#: instructions execute, taken or not); where the path depends on the data it is averaged as said.
#:
#: ``op_wpool`` (k x k window pool with padding, per output element a loop over ky, kx that computes the
#: tap's coordinates, tests the bounds and selects pad_value or the input -- no hoisting: the taps run per
#: channel, the channel loop is outermost of the three):
#:   ``wpool_{max|avg}_tap``   a tap inside the image;  ``_xtap`` a tap of a row inside the image whose
#:   column is outside (pad_value; on ARMv7 the max tap is one predicated path, the same 23 instructions);
#:   ``_ytap`` a tap of a row outside the image (max: the pad compare loop; avg: folded into ``_yrow``);
#:   ``_row`` / ``_yrow`` the per-ky overhead of a row inside / outside the image;  ``_out`` per output
#:   element (the store, the index arithmetic, and for avg the division by counts[pixel]: one SDIV x /
#:   __aeabi_ldivmod call (div64: the library's own instructions are not in runtime.c), its remainder
#:   test (non-zero assumed) and sign fix-up (taken for half the sums: the inputs are signed), the
#:   round-half-even compare (round up for half)).
#: ``op_gap``: ``gap_elem`` per input element (int64 sum, strided load), ``gap_chan`` per channel (the
#: division and rounding as in ``wpool_avg_out``).
#: ``op_concat``: ``concat_pixel`` per output pixel (the index arithmetic and two calls of memcpy);
#: ``memcpy_call`` the static binary's IFUNC stub per call; the C library's memcpy itself is
#: :func:`memcpy_mix` (GLIBC, not runtime.c: measured, see there).
CELL_OP_MIXES: dict[str, dict[str, dict[str, float]]] = {
    "aarch64": {
        "wpool_max_tap": _mix(load=1, alu=12, branch=2),
        "wpool_max_xtap": _mix(alu=12, branch=2),
        "wpool_max_ytap": _mix(alu=8, branch=1),
        "wpool_max_row": _mix(load=1, store=1, alu=8, branch=3),
        "wpool_max_yrow": _mix(alu=7, branch=4),
        "wpool_max_out": _mix(load=2, store=2, mul=2, alu=12, branch=3),
        "wpool_avg_tap": _mix(load=1, alu=6, branch=2),
        "wpool_avg_xtap": _mix(alu=6, branch=2),
        "wpool_avg_ytap": _mix(),
        "wpool_avg_row": _mix(alu=8, branch=3),
        "wpool_avg_yrow": _mix(alu=8, branch=4),
        "wpool_avg_out": _mix(load=4, store=2, mul=4.5, div64=1, alu=20, branch=5),
        "gap_elem": _mix(load=1, alu=4, branch=1),
        "gap_chan": _mix(load=1, store=1, mul=1.5, div64=1, alu=12, branch=5.5),
        "concat_pixel": _mix(load=7, mul=5, alu=8, branch=3),     # LDP w, w: two loads (one instruction)
        "memcpy_call": _mix(load=1, alu=2, branch=1),
    },
    "armv7": {
        "wpool_max_tap": _mix(load=1, alu=21, branch=1),
        "wpool_max_xtap": _mix(load=1, alu=21, branch=1),
        "wpool_max_ytap": _mix(alu=12, branch=1),
        "wpool_max_row": _mix(load=6, store=2, alu=9, branch=3),
        "wpool_max_yrow": _mix(load=3, alu=7, branch=4),
        "wpool_max_out": _mix(load=14, store=5, mul=2, alu=10, branch=3),
        "wpool_avg_tap": _mix(load=1, alu=8, branch=2),
        "wpool_avg_xtap": _mix(alu=8, branch=2),
        "wpool_avg_ytap": _mix(),
        "wpool_avg_row": _mix(load=4, alu=9, branch=3),
        "wpool_avg_yrow": _mix(load=5, alu=11, branch=4),
        "wpool_avg_out": _mix(load=20, store=6, mul=4.5, div64=1, alu=29, branch=6.5),
        "gap_elem": _mix(load=1, alu=8, branch=1),
        "gap_chan": _mix(load=1, store=1, mul=1.5, div64=1, alu=26.5, branch=5.5),
        "concat_pixel": _mix(load=6, mul=5, alu=8, branch=3),
        "memcpy_call": _mix(load=1, alu=2),
    },
}

#: GLIBC 2.36's memcpy in the static cross builds (AArch64 ``__memcpy_generic``, ARMv7 ``__memcpy_neon``):
#: instructions per call by size in bytes, counted under QEMU (one call repeated, the difference of 200
#: and 100 calls); sizes between two points are interpolated, above the last extrapolated linearly
MEMCPY_INSTRUCTIONS: dict[str, tuple[tuple[int, float], ...]] = {
    "aarch64": ((0, 13), (16, 14), (32, 14), (48, 18), (64, 18), (96, 24), (128, 28), (192, 40), (256, 50),
                (512, 90)),
    "armv7": ((0, 15), (16, 19), (32, 23), (48, 27), (64, 39), (96, 60), (128, 59), (192, 79), (256, 99),
              (512, 179)),
}


def memcpy_mix(isa: str, nbytes: int) -> dict[str, float]:
    """One call of the C library's memcpy of ``nbytes`` (:data:`MEMCPY_INSTRUCTIONS`): 128-bit loads and
    stores for the bytes (one pair per 32: LDP / STP q, VLD1 / VST1 of four D), the rest ALU and branches."""
    pts = MEMCPY_INSTRUCTIONS[isa]
    n = max(int(nbytes), 0)
    lo, hi = pts[0], pts[1]
    for a, b in zip(pts, pts[1:]):
        lo, hi = a, b
        if n <= b[0]:
            break
    total = lo[1] + (hi[1] - lo[1]) * (n - lo[0]) / (hi[0] - lo[0])
    vec = min(n / 32, total / 4)
    rest = total - 2 * vec
    return _mix(vld128=vec, vst128=vec, alu=rest * 0.75, branch=rest * 0.25)


def _op_mixes(isa: str, name: str, **kw) -> dict[str, float]:
    """Mixes that depend on the ISA (64-bit multiplies are three MULs on ARMv7) or on op attributes."""
    mul64 = 3 if isa == "armv7" else 1
    alu64 = 2 if isa == "armv7" else 1
    # the round-half-even shift: a floor shift, the remainder, two compares (shifts only, no division)
    rhe = _mix(alu=8 * alu64, mul=mul64, branch=1)
    if name == "addrequant":   # v = x * A + B (+ s << ss); round-half-even shift; clip
        return _add(_mix(load=3 + kw["shortcut"], mul=mul64, alu=6 * alu64 + 4, store=1, branch=1),
                    rhe if kw["shift"] > 0 else _mix())
    if name == "rprelu":       # v = x - S_in; v * 2^frac or v * slope; + S_out << frac; rhe shift; clip
        return _add(_mix(load=4, mul=mul64, alu=8 * alu64 + 4, store=1, branch=2),
                    rhe if kw["frac"] > 0 else _mix())
    # the int32 lanes (runtime.c addrequant32 / rprelu32, vectorised by GCC: 4 lanes per q instruction),
    # per element: a quarter of one 4-lane iteration, plus the min / max pass over each input that
    # proves the lanes exact (a load and two compares per 4 elements); vector shifts, min / max and
    # selects are costed as vector adds / bitwise ops (the same pipes on these cores)
    check = _mix(vld128=0.25, vadd_q=0.5, alu=0.25, branch=0.25)
    if name == "addrequant32":  # loads x, A, B (, s); MLA; + B (+ s << ss); rhe: +2^31, shift, parity, add,
        sc = kw["shortcut"]     # shift, -2^(31-s); clip (max, min); store
        it = _mix(vld128=3 + sc, vmlal=1, vadd_q=8 + 2 * sc, veor_q=1, vst128=1, alu=2, branch=1)
        return _add(_times(it, 0.25), _times(check, 1 + sc))
    if name == "rprelu32":      # loads x, S_in, slope, S_out; sub; compare + select; MUL, MLA; rhe; clip; store
        it = _mix(vld128=4, vmlal=2, vadd_q=9, veor_q=2, vst128=1, alu=2, branch=1)
        return _add(_times(it, 0.25), check)
    raise KeyError(name)


def _max_abs(t: CpuTensor) -> int | None:
    """The largest magnitude a tensor's declared type allows (None: not declared)."""
    if t.dtype is None or t.packed:
        return None
    return max(abs(int(t.dtype.min)), abs(int(t.dtype.max)))


def _lanes32(op: CpuOp, program: CpuProgram) -> bool:
    """Whether the runtime runs ``op`` (ADDREQUANT / RPRELU) in its int32 lanes for every input of the
    declared stream types: the runtime's own test (runtime.c ew_plan and the bound in *_rows) with the
    types' ranges in place of the inputs' min / max."""
    a = op.attrs
    s = int(a.get("frac" if op.op == "RPRELU" else "shift", 0))
    pmax = [int(np.abs(np.asarray(p, dtype=np.int64)).max()) if np.size(p) else 0 for p in op.params]
    if not 1 <= s <= 30 or any(v > (1 << 30) for v in pmax):
        return False
    xs = [_max_abs(program.tensors[i]) for i in op.inputs]
    if any(v is None for v in xs):
        return False
    x = [int(v) for v in xs if v is not None]
    if op.op == "ADDREQUANT":
        ss = int(a.get("shortcut_shift", 0))
        if ss > 30:
            return False
        bound = x[0] * pmax[0] + pmax[1] + (1 << s) + (x[1] << ss if len(x) > 1 else 0)
    else:
        f = 1 << s
        bound = (x[0] + pmax[0]) * max(pmax[1], f) + (pmax[2] + 1) * f
    return bound < (1 << 31)


def _tensor_bytes(t: CpuTensor) -> int:
    h, w, c = t.shape
    return h * w * t.words_per_pixel * 8 if t.packed else h * w * c * 4


def _chunk_rows(row_bytes: int, pixels: int) -> int:
    """runtime.c's chunk_rows: output pixels per block (im2col, popcounts, accumulators within 64 KiB)."""
    r = (64 << 10) // (row_bytes if row_bytes > 0 else 1)
    r = min(max(r, 4), 1024)
    return min(r, pixels)


def _valid_taps(n_out: int, n_in: int, k: int, stride: int, pad: int, dil: int) -> int:
    """Sum over output positions of the kernel taps that fall inside the input (one axis)."""
    return sum(1 for o in range(n_out) for t in range(k) if 0 <= o * stride - pad + t * dil < n_in)


def _activation_parts(core: CoreModel, op: CpuOp, rows: int, c: int, out_groups: int) -> dict[str, float]:
    a = op.attrs
    mode = a.get("out_mode", OUT_ACC)
    cyc = core.cycles
    if mode == OUT_PACKED:
        cg = c // max(out_groups, 1)
        full, part = divmod(cg, WORD)
        per = out_groups * (cyc(OP_MIXES["pack_group"]) + full * cyc(OP_MIXES["pack_word"])
                            + part * cyc(OP_MIXES["pack_bit"]))
        return {"threshold+pack": rows * per}
    if mode == OUT_MULTI:
        n = max(int(a.get("n_thr", 1)), 1)
        probes = math.ceil(math.log2(n + 1))
        per = probes * cyc(OP_MIXES["cle_probe"]) + cyc(OP_MIXES["cle_out"])
        return {"multi-threshold": rows * c * per}
    return {"accumulator copy": rows * c / 2 * cyc(OP_MIXES["copy_word"])}


def _conv_geometry(a: dict) -> tuple:
    k, stride, pad, dil = int(a["k"]), int(a.get("stride", 1)), int(a.get("pad", 0)), int(a.get("dil", 1))
    return k, stride, pad, dil


def _bconv_parts(core: CoreModel, op: CpuOp, program: CpuProgram) -> dict[str, float]:
    a = op.attrs
    H, W, C, Ho, Wo, Cout = (int(a[x]) for x in ("H", "W", "C", "Ho", "Wo", "Cout"))
    k, stride, pad, dil = _conv_geometry(a)
    groups = int(a.get("groups", 1))
    cg, og, kk = C // groups, Cout // groups, k * k
    wpg = -(-cg // WORD)
    K = kk * wpg
    pixels = Ho * Wo
    cyc = core.cycles
    direct = k == 1 and stride == 1 and pad == 0
    parts: dict[str, float] = {}
    if tap_rows(a):
        # k bgemm_small calls (K = k * wpg) per group per row run; k - 1 partial sums added a pixel; the
        # input copied into padded group planes unless one unpadded group is read in place
        R = _chunk_rows(Cout * 12, pixels)
        parts["bgemm compute"] = groups * k * sum(cnt * bgemm_small_cycles(core, n, og, k * wpg)
                                                  for n, cnt in _tap_row_runs(pixels, Wo, R).items())
        parts["tap-row sums"] = (k - 1) * pixels * Cout * cyc(OP_MIXES["tap_sum"])
        if pad or groups > 1:
            hp, wp = H + 2 * pad, W + 2 * pad
            parts["plane copy"] = hp * wp * groups * (cyc(OP_MIXES["plane_pixel"]) + wpg * cyc(OP_MIXES["copy_word"]))
        direct = True
    else:
        R = _chunk_rows((0 if direct else K * 8) + Cout * 8, pixels)
        full, rem = divmod(pixels, R)
        gemm = bgemm_small_cycles if wpg <= SMALL_DEPTH else bgemm_cycles     # as runtime.c chooses
        parts["bgemm compute"] = groups * (full * gemm(core, R, og, K) + (gemm(core, rem, og, K) if rem else 0.0))
    if not direct:
        parts["im2col copy"] = pixels * groups * (cyc(OP_MIXES["im2col_pixel"])
                                                  + kk * (cyc(OP_MIXES["im2col_tap"])
                                                          + wpg * cyc(OP_MIXES["im2col_word"])))
    # epi_row: once per border pixel and per run of interior pixels (runtime.c joins a row's interior
    # pixels, or a whole chunk's when nothing is zero-padded, to one flat loop)
    epi = -(-pixels // R) * cyc(OP_MIXES["epi_row"]) + pixels * Cout * cyc(OP_MIXES["epi_out"])
    if pad and int(a.get("pad_value", 0)) == 0:
        vy, vx = _valid_taps(Ho, H, k, stride, pad, dil), _valid_taps(Wo, W, k, stride, pad, dil)
        padded = pixels * kk - vy * vx
        inside_y = sum(1 for o in range(Ho) if o * stride - pad >= 0 and o * stride - pad + (k - 1) * dil < H)
        inside_x = sum(1 for o in range(Wo) if o * stride - pad >= 0 and o * stride - pad + (k - 1) * dil < W)
        border = pixels - inside_y * inside_x
        if k <= 8:
            # runtime.c's edge sums: a border pixel adds its cut window rows and columns (sums made at
            # load) and takes off the taps in both: cy + cx + cy * cx rows instead of its padded taps
            cy = [k - _valid_taps(1, H, k, stride, pad - o * stride, dil) for o in range(Ho)]
            cx = [k - _valid_taps(1, W, k, stride, pad - o * stride, dil) for o in range(Wo)]
            padded = Wo * sum(cy) + Ho * sum(cx) + sum(cy) * sum(cx)
        epi = ((border + inside_y) * cyc(OP_MIXES["epi_row"]) + pixels * Cout * cyc(OP_MIXES["epi_out"])
               + border * (k if k <= 8 else kk) * cyc(OP_MIXES["epi_border_tap"])
               + padded * Cout * cyc(OP_MIXES["epi_pad_corr"]))
    parts["popcount epilogue"] = epi
    parts.update(_activation_parts(core, op, pixels, Cout, int(a.get("out_groups", 1))))
    return parts


def _iconv_parts(core: CoreModel, op: CpuOp, program: CpuProgram) -> dict[str, float]:
    a = op.attrs
    C, Ho, Wo, Cout = (int(a[x]) for x in ("C", "Ho", "Wo", "Cout"))
    k, stride, pad, dil = _conv_geometry(a)
    groups = int(a.get("groups", 1))
    cg, og, kk = C // groups, Cout // groups, k * k
    K = kk * cg
    pixels = Ho * Wo
    cyc = core.cycles
    R = _chunk_rows(K * (2 if int(a.get("use_s16", 0)) else 4) + Cout * 4, pixels)
    full, rem = divmod(pixels, R)
    parts: dict[str, float] = {}
    parts["im2col copy"] = pixels * groups * (cyc(OP_MIXES["im2col_pixel"]) + kk * cyc(OP_MIXES["iim2col_tap"])
                                              + kk * cg * cyc(OP_MIXES["iim2col_elem"]))
    if int(a.get("use_s16", 0)):
        g = groups * (full * gemm_s16_cycles(core, R, og, K) + (gemm_s16_cycles(core, rem, og, K) if rem else 0.0))
        parts["int16 gemm"] = g
    else:
        parts["int32 gemm"] = pixels * Cout * (K * cyc(OP_MIXES["s32_mac"]) + cyc(OP_MIXES["s32_out"]))
    parts.update(_activation_parts(core, op, pixels, Cout, int(a.get("out_groups", 1))))
    return parts


def _wpool_cycles(core: CoreModel, op: CpuOp, x: CpuTensor, y: CpuTensor) -> float:
    """runtime.c's op_wpool: per output element, k rows of k taps, each tap inside the image, in a row
    inside it but a column outside, or in a row outside (the path counts of every output position, from
    the pool's geometry), costed with :data:`CELL_OP_MIXES`."""
    a = op.attrs
    k, stride, pad = int(a["k"]), int(a.get("stride", 1)), int(a.get("pad", 0))
    H, W, C = x.shape
    Ho, Wo = y.shape[0], y.shape[1]
    vy, vx = _valid_taps(Ho, H, k, stride, pad, 1), _valid_taps(Wo, W, k, stride, pad, 1)
    rows_in, rows_out = vy * Wo, (Ho * k - vy) * Wo
    taps_in, taps_x = vy * vx, vy * (Wo * k - vx)
    taps_y = rows_out * k
    m = CELL_OP_MIXES[core.isa]
    mode = "avg" if int(a.get("out_mode", 0)) else "max"
    cyc = core.cycles

    def per(part: str) -> float:
        return cyc(m[f"wpool_{mode}_{part}"])

    return C * (Ho * Wo * per("out") + rows_in * per("row") + rows_out * per("yrow") + taps_in * per("tap")
                + taps_x * per("xtap") + taps_y * per("ytap"))

def _elementwise_parts(core: CoreModel, op: CpuOp, program: CpuProgram) -> dict[str, float]:
    a = op.attrs
    cyc = core.cycles
    x = program.tensors[op.inputs[0]]
    y = program.tensors[op.output]
    H, W, C = x.shape
    n_in = H * W * C
    Hy, Wy, Cy = y.shape
    n_out = Hy * Wy * Cy
    kind = op.op
    if kind == "THRESH":
        return _activation_parts(core, op, H * W, C, y.groups)
    if kind == "MAXPOOL":
        k = int(a["k"])
        if x.packed:
            wpp = y.words_per_pixel
            return {"packed max pool": Hy * Wy * (cyc(OP_MIXES["pool_pixel"]) + wpp * cyc(OP_MIXES["copy_word"])
                                                  + k * k * (cyc(OP_MIXES["pool_tap"])
                                                             + wpp * cyc(OP_MIXES["pool_word"])))}
        return {"elementwise": n_out * (k * k * cyc(OP_MIXES["ipool_tap"]) + cyc(OP_MIXES["ipool_out"]))}
    if kind == "AVGPOOLSUM":
        k = int(a["k"])
        return {"elementwise": n_out * (k * k * cyc(OP_MIXES["ipool_tap"]) + cyc(OP_MIXES["ipool_out"]))}
    cell = CELL_OP_MIXES[core.isa]
    if kind == "GAP":
        return {"global pool": n_in * cyc(cell["gap_elem"]) + C * cyc(cell["gap_chan"])}
    if kind == "GATHER":
        if x.packed:
            return {"bit gather": Hy * Wy * (cyc(OP_MIXES["gather_pixel"]) + Cy * cyc(OP_MIXES["gather_bit"]))}
        return {"elementwise": n_out * cyc(OP_MIXES["gather_elem"])}
    if kind == "ADDREQUANT":
        if _lanes32(op, program):
            return {"int32 lanes": n_out * cyc(_op_mixes(core.isa, "addrequant32", shortcut=len(op.inputs) - 1))}
        m = _op_mixes(core.isa, "addrequant", shortcut=len(op.inputs) - 1, shift=int(a.get("shift", 0)))
        return {"elementwise": n_out * cyc(m)}
    if kind == "RPRELU":
        if _lanes32(op, program):
            return {"int32 lanes": n_out * cyc(_op_mixes(core.isa, "rprelu32"))}
        m = _op_mixes(core.isa, "rprelu", frac=int(a.get("frac", 0)))
        return {"elementwise": n_out * cyc(m)}
    if kind == "LABELSELECT":
        return {"elementwise": n_in * cyc(OP_MIXES["argmax_elem"])}
    if kind == "UNPACK":
        return {"unpack": n_out * cyc(OP_MIXES["unpack_elem"])}
    if kind == "CONCAT":      # per pixel: two memcpy calls, of each input's channels
        calls = sum(cyc(_add(cell["memcpy_call"], memcpy_mix(core.isa, 4 * program.tensors[i].shape[2])))
                    for i in op.inputs)
        return {"concat copies": Hy * Wy * (cyc(cell["concat_pixel"]) + calls)}
    if kind == "WPOOL":
        return {"window pool": _wpool_cycles(core, op, x, y)}
    raise BnhwError(f"performance model: no model for op {kind!r} ({op.name})")


# ------------------------------------------------------------------------------------ report
@dataclass
class OpRow:
    """One op of the program, modelled."""

    index: int
    name: str
    op: str
    layer: str
    bmacs: int
    macs: int
    parts: dict[str, float]        # compute component -> cycles (summed)
    compute_cycles: float
    memory_bytes: int
    memory_cycles: float
    cycles: float                  # max(compute, memory)
    seconds: float
    bound: str                     # what bounds it: the largest compute part, or "memory stream"

    @property
    def binary_gops(self) -> float | None:
        return 2 * self.bmacs / self.seconds / 1e9 if self.bmacs and self.seconds > 0 else None

    @property
    def bmacs_per_cycle(self) -> float | None:
        return self.bmacs / self.cycles if self.bmacs and self.cycles > 0 else None

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "op": self.op, "layer": self.layer, "bmacs": self.bmacs,
                "macs": self.macs, "cycles": self.cycles, "compute_cycles": self.compute_cycles,
                "memory_bytes": self.memory_bytes, "memory_cycles": self.memory_cycles, "parts": dict(self.parts),
                "seconds": self.seconds, "bound": self.bound, "binary_gops": self.binary_gops,
                "bmacs_per_cycle": self.bmacs_per_cycle}


@dataclass
class CpuModelReport:
    """The modelled latency of a program on a core (every figure modelled, none measured)."""

    program: str
    core: str                      # "Cortex-A9"
    core_name: str                 # "cortex-a9"
    isa: str
    board: str
    clock_mhz: float
    rows: list[OpRow]
    bmacs: int
    macs: int
    cycles: float
    roofline_bmacs_per_cycle: float
    kernel_bmacs_per_cycle: float
    inner_loop_bmacs_per_cycle: float
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    how: str = "modelled"

    @property
    def seconds(self) -> float:
        return self.cycles / (self.clock_mhz * 1e6)

    @property
    def fps(self) -> float | None:
        return 1.0 / self.seconds if self.seconds > 0 else None

    @property
    def binary_gops(self) -> float:
        return 2 * self.bmacs / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def roofline_gops(self) -> float:
        """The core's roofline in binary GOPS at this clock (2 ops per binary MAC)."""
        return 2 * self.roofline_bmacs_per_cycle * self.clock_mhz / 1e3

    @property
    def bmacs_per_cycle(self) -> float:
        return self.bmacs / self.cycles if self.cycles > 0 else 0.0

    def to_dict(self) -> dict:
        return {"how": self.how, "program": self.program, "core": self.core, "core_name": self.core_name,
                "isa": self.isa, "board": self.board, "clock_mhz": self.clock_mhz, "cycles": self.cycles,
                "seconds": self.seconds, "fps": self.fps, "bmacs": self.bmacs, "macs": self.macs,
                "binary_gops": self.binary_gops, "bmacs_per_cycle": self.bmacs_per_cycle,
                "kernel_bmacs_per_cycle": self.kernel_bmacs_per_cycle,
                "inner_loop_bmacs_per_cycle": self.inner_loop_bmacs_per_cycle,
                "roofline_bmacs_per_cycle": self.roofline_bmacs_per_cycle, "roofline_gops": self.roofline_gops,
                "rows": [r.to_dict() for r in self.rows], "notes": list(self.notes), "sources": list(self.sources)}

    def format(self) -> str:
        """Plain-text report (what ``bnhw bench-cpu --target <core>`` prints)."""
        out = [f"MODELLED (not measured): {self.program} on {self.core} ({self.isa}) at {self.clock_mhz:.0f} MHz "
               f"[{self.board}]",
               f"  latency {self.seconds * 1e3:.3f} ms ({self.fps or 0:.1f} FPS), {self.cycles:,.0f} cycles, "
               f"{self.binary_gops:.2f} binary GOPS ({self.bmacs_per_cycle:.1f} bMAC/cycle over the whole network)",
               f"  bgemm kernel {self.kernel_bmacs_per_cycle:.1f} bMAC/cycle (inner loop "
               f"{self.inner_loop_bmacs_per_cycle:.1f}) | roofline {self.roofline_bmacs_per_cycle:.1f} bMAC/cycle "
               f"= {self.roofline_gops:.1f} binary GOPS at {self.clock_mhz:.0f} MHz",
               "",
               f"  {'#':>3} {'op':11s} {'bMACs':>10} {'MACs':>9} {'cycles':>12} {'ms':>9} {'bMAC/cyc':>8}  bound / name"]
        for r in self.rows:
            bpc = r.bmacs_per_cycle
            out.append(f"  {r.index:>3} {r.op:11s} {r.bmacs:>10,} {r.macs:>9,} {r.cycles:>12,.0f} "
                       f"{r.seconds * 1e3:>9.4f} {'' if bpc is None else f'{bpc:.1f}':>8}  {r.bound}: {r.name}")
        out.append(f"  {'':>3} {'total':11s} {self.bmacs:>10,} {self.macs:>9,} {self.cycles:>12,.0f} "
                   f"{self.seconds * 1e3:>9.4f}")
        out += ["", "  notes:"] + [f"  - {n}" for n in self.notes]
        return "\n".join(out)

    __str__ = format


def model_op(op: CpuOp, program: CpuProgram, core: str | CoreModel, clock_mhz: float | None = None,
             index: int = 0) -> OpRow:
    """The modelled row of one op of ``program`` on ``core``."""
    c = get_core(core)
    mhz = float(clock_mhz) if clock_mhz else c.clock_mhz
    if op.op == "BCONV":
        parts = _bconv_parts(c, op, program)
    elif op.op == "ICONV":
        parts = _iconv_parts(c, op, program)
    else:
        parts = _elementwise_parts(c, op, program)
    compute = float(sum(parts.values()))
    nbytes = (sum(_tensor_bytes(program.tensors[i]) for i in op.inputs) + _tensor_bytes(program.tensors[op.output])
              + sum(int(p.nbytes) for p in op.params))
    mem = nbytes / (c.dram_gbs * 1e9) * mhz * 1e6
    cycles = max(compute, mem)
    bound = "memory stream" if mem > compute else (max(parts, key=lambda p: parts[p]) if parts else "nothing")
    return OpRow(index, op.name, op.op, op.layer, int(op.bmacs), int(op.macs), parts, compute, nbytes, mem, cycles,
                 cycles / (mhz * 1e6), bound)


def model_program(program: CpuProgram, core: str | CoreModel, clock_mhz: float | None = None) -> CpuModelReport:
    """Modelled per-op and total latency of ``program`` on ``core`` (``cortex-a9|a53|a72``) at ``clock_mhz``
    (default: the core's reference board clock).  Every figure is a model, not a measurement."""
    c = get_core(core)
    if clock_mhz is not None and not clock_mhz > 0:
        raise BnhwError(f"clock must be positive, got {clock_mhz} MHz")
    mhz = float(clock_mhz) if clock_mhz else c.clock_mhz
    rows = [model_op(op, program, c, mhz, i) for i, op in enumerate(program.ops)]
    bm, gm = BGEMM_MIX[c.isa], GEMM_S16_MIX[c.isa]
    notes = [
        f"every figure is MODELLED, not measured: a throughput-only issue model of {c.title} ({c.isa}) at "
        f"{mhz:.0f} MHz{'' if mhz == c.clock_mhz else f' (reference board clock {c.clock_mhz:.0f} MHz)'}; no "
        "dependency latencies, front-end stalls or cache misses",
        f"binary conv: the 128-bit step loop of {bm.function} ({bm.mr}x{bm.nr} register tile; per step "
        f"{bm.mr + bm.nr} q loads, {bm.mr * bm.nr} each of EOR / CNT / ADD, "
        + (f"{bm.addr_alu_per_row * (bm.mr + bm.nr)} address, " if bm.addr_alu_per_row else "")
        + f"{bm.loop_alu} loop instructions and a branch) and its per-chunk widening, as {bm.compiler} emits them "
        f"with {' '.join(COMPILE_FLAGS[c.isa])} (checked against the compiled code by tests/test_cpu_perfmodel.py)",
        f"int16 conv: the 8-wide k loop of {gm.function} ({gm.mr}x{gm.nr} tile), likewise from the compiled code",
        "im2col copies, popcount epilogue, threshold/pack, pooling and the elementwise integer ops: per-element "
        "instruction mixes estimated from runtime.c (assumed scalar, except the shortcut add and RPReLU in the "
        "runtime's int32 vector lanes: a 4-lane NEON mix), costed with the same core tables; the cell ops' "
        "window pool, global pool and concatenation from their compiled loops (and glibc's memcpy)",
        f"memory: caches not modelled (data assumed in L1/L2); DRAM only as a streaming bound, each op's inputs, "
        f"output and parameters once per image at an assumed sustained {c.dram_gbs:g} GB/s, max'd with its compute",
        "branch mispredictions only for the multi-threshold binary search (half the probes, "
        f"{c.mispredict_penalty} cycles each)",
        f"roofline: 128 binary MACs per EOR+CNT+ADD (q) at the core's peak issue rate = "
        f"{roofline_bmacs_per_cycle(c):.2f} bMAC/cycle; 1 binary MAC = 2 ops",
    ] + [f"assumption: {s}" for s in c.assumptions]
    return CpuModelReport(
        program=program.name, core=c.title, core_name=c.name, isa=c.isa, board=c.board, clock_mhz=mhz, rows=rows,
        bmacs=int(program.bmacs), macs=int(program.macs), cycles=float(sum(r.cycles for r in rows)),
        roofline_bmacs_per_cycle=roofline_bmacs_per_cycle(c), kernel_bmacs_per_cycle=kernel_bmacs_per_cycle(c),
        inner_loop_bmacs_per_cycle=inner_loop_bmacs_per_cycle(c), notes=notes, sources=list(c.sources))
