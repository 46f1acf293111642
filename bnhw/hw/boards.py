"""FPGA boards bnhw can build for: part, fabric resources, default clock.

Resource counts are the device totals from AMD/Xilinx's product tables
(DS190 Zynq-7000, DS891 Zynq UltraScale+ MPSoC, DS987 Kria K26), in FINN's
units: LUTs, flip-flops, BRAM18 halves (one BRAM36 = two BRAM18), URAM
blocks, DSP slices.  The part numbers are the ones FINN (finn-plus
``finn.util.basic.pynq_part_map``) and hls4ml (``supported_boards.json``)
use for these boards; ``tests/test_boards.py`` checks parts and the
Zynq-7020 counts against the copies those packages ship.

The PYNQ programmable logic has no part of the fabric reserved for a shell,
so the whole device is the budget; ``usable_fraction`` (default 0.85 in the
folding optimiser) leaves room for the DMA, the interconnect, the FIFOs and
place-and-route slack.  Default clocks: the 100 MHz fabric clock of the
PYNQ images (FCLK0) on Zynq-7000 boards, 200 MHz on the UltraScale+ boards
(what finn-examples builds target there); ``--clock-mhz`` overrides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import BnhwError

__all__ = ["BOARDS", "Board", "get_board", "large_fifo_style", "lut_per_bram18"]


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    family: str
    lut: int
    ff: int
    bram18: int
    uram: int
    dsp: int
    clock_mhz: float
    cpu: str
    note: str = ""
    finn_board: str = ""       # the board's name in finn-plus (``pynq_part_map``; DataflowBuildConfig.board)

    @property
    def bram36(self) -> int:
        return self.bram18 // 2

    def budget(self) -> dict[str, int]:
        return {"LUT": self.lut, "BRAM18": self.bram18, "URAM": self.uram, "DSP": self.dsp}

    def to_dict(self) -> dict:
        return {"name": self.name, "part": self.part, "family": self.family, "LUT": self.lut,
                "FF": self.ff, "BRAM18": self.bram18, "BRAM36": self.bram36, "URAM": self.uram,
                "DSP": self.dsp, "clock_mhz": self.clock_mhz, "cpu": self.cpu}


_Z7020: dict[str, Any] = dict(part="xc7z020clg400-1", family="zynq-7000", lut=53_200, ff=106_400, bram18=280, uram=0,
              dsp=220, clock_mhz=100.0, cpu="dual Cortex-A9 (ARMv7-A, NEON) @ 650 MHz")

BOARDS: dict[str, Board] = {b.name: b for b in [
    Board("pynq-z2", **_Z7020, note="TUL PYNQ-Z2", finn_board="Pynq-Z2"),
    Board("pynq-z1", **_Z7020, note="Digilent PYNQ-Z1", finn_board="Pynq-Z1"),
    Board("ultra96-v2", part="xczu3eg-sbva484-1-i", family="zynq-ultrascale+", lut=70_560, ff=141_120,
          bram18=432, uram=0, dsp=360, clock_mhz=200.0,
          cpu="quad Cortex-A53 (AArch64) @ 1.2 GHz", note="Avnet Ultra96-V2", finn_board="Ultra96-V2"),
    Board("kv260", part="xck26-sfvc784-2LV-c", family="zynq-ultrascale+", lut=117_120, ff=234_240,
          bram18=288, uram=64, dsp=1_248, clock_mhz=200.0,
          cpu="quad Cortex-A53 (AArch64) @ 1.33 GHz", note="Kria KV260 (K26 SOM)", finn_board="KV260_SOM"),
    Board("zcu104", part="xczu7ev-ffvc1156-2-e", family="zynq-ultrascale+", lut=230_400, ff=460_800,
          bram18=624, uram=96, dsp=1_728, clock_mhz=200.0,
          cpu="quad Cortex-A53 (AArch64) @ 1.2 GHz", note="AMD ZCU104", finn_board="ZCU104"),
]}


def get_board(name: str) -> Board:
    """The board called ``name`` (case-insensitive); unknown names list the known ones."""
    key = str(name).strip().lower()
    if key not in BOARDS:
        raise BnhwError(f"unknown target {name!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[key]


def large_fifo_style(board: Board) -> str:
    """The memory style of a build's large FIFOs on ``board`` (FINN's ``large_fifo_mem_style``): ``fifo.sv``'s
    own choice ("auto": URAM above 2,028 entries) where the part has URAM, block RAM where it has none."""
    return "auto" if board.uram > 0 else "block"


def lut_per_bram18(board: Board) -> float:
    """The board's exchange rate of LUTs for one RAMB18 (its LUT count over its BRAM18 count): a FIFO a build
    would keep in LUTs is requested in block RAM where that saves more LUTs per RAMB18 than this
    (:func:`bnhw.hw.fifo_cost.build_style`)."""
    return board.lut / board.bram18 if board.bram18 else float("inf")
