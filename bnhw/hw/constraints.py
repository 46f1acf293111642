"""Hardware constraints of the search: modelled FPS and latency on an FPGA board.

They implement :class:`bnhw.design.constraints.Constraint` (the search only knows that protocol), with one
:func:`bnhw.hw.estimate.estimate_fpga` per architecture: lowered to the IR, folded for the highest FPS within
``margin`` of the board, FINN's analytical models (or the cycle simulator with ``refine``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BudgetError
from ..spec import ArchSpec

__all__ = ["FpgaFps", "FpgaLatency"]


class FpgaEstimated:
    """Shared part of the FPGA constraints: one :func:`bnhw.hw.estimate.estimate_fpga` per spec, at
    the spec's own resolution, cached in memory (and in the JSON file ``cache_path`` when given)."""

    board: str
    margin: float
    clock_mhz: float | None
    cache_path: str | None
    refine: Any

    def _check(self) -> None:
        from .boards import get_board

        object.__setattr__(self, "board", get_board(self.board).name)    # unknown board: one-line error now
        if not 0 < self.margin <= 1:
            raise BudgetError(f"margin must be in (0, 1], got {self.margin}")

    def estimate(self, spec: ArchSpec):
        """The full :class:`~bnhw.hw.estimate.FpgaEstimate` behind :meth:`measure`."""
        from .estimate import DEFAULT_CACHE, estimate_fpga

        cache = Path(self.cache_path) if self.cache_path else DEFAULT_CACHE
        return estimate_fpga(spec, self.board, margin=self.margin, clock_mhz=self.clock_mhz, cache=cache,
                             refine=self.refine)

    @property
    def how(self) -> str:
        from .estimate import refine_label

        return "analytical" if self.refine is None else str(refine_label(self.refine))


@dataclass(frozen=True)
class FpgaFps(FpgaEstimated):
    """Modelled frames per second on ``board`` at the best folding within ``margin`` of it, at least
    ``min_fps`` (0: every value is feasible, the FPS is only recorded).  A network that fits at no
    folding measures 0 FPS (infeasible for any ``min_fps > 0``)."""

    board: str
    min_fps: float
    margin: float = 0.85
    clock_mhz: float | None = None
    cache_path: str | None = None       # JSON estimate cache shared across runs (e.g. in a search's folder)
    refine: Any = None                  # cycle-simulator II / latency instead of the analytical ones
    name: str = "fps"
    unit: str = "FPS"

    def __post_init__(self) -> None:
        self._check()
        if not (self.min_fps >= 0 and math.isfinite(self.min_fps)):
            raise BudgetError(f"minimum FPS must be a number >= 0 (0: record the FPS only), got {self.min_fps}")

    def measure(self, spec: ArchSpec) -> float:
        return float(self.estimate(spec).fps)

    def feasible(self, value: float) -> bool:
        return value >= self.min_fps

    def describe(self) -> str:
        if self.min_fps == 0:
            return f"FPS on {self.board} recorded, no minimum ({self.how})"
        return f"FPS on {self.board} >= {self.min_fps:g} ({self.how})"


@dataclass(frozen=True)
class FpgaLatency(FpgaEstimated):
    """Modelled latency of one frame in milliseconds on ``board`` (longest path of unit cycles / clock),
    at most ``max_ms``.  A network that fits at no folding measures ``inf`` (infeasible)."""

    board: str
    max_ms: float
    margin: float = 0.85
    clock_mhz: float | None = None
    cache_path: str | None = None
    refine: Any = None
    name: str = "latency_ms"
    unit: str = "ms"

    def __post_init__(self) -> None:
        self._check()
        if not (self.max_ms > 0 and math.isfinite(self.max_ms)):
            raise BudgetError(f"maximum latency must be a positive number of ms, got {self.max_ms}")

    def measure(self, spec: ArchSpec) -> float:
        e = self.estimate(spec)
        return float(e.latency_ms) if e.fits else math.inf

    def feasible(self, value: float) -> bool:
        return value <= self.max_ms

    def describe(self) -> str:
        return f"latency on {self.board} <= {self.max_ms:g} ms ({self.how})"
