"""Hardware constraints of the search: modelled FPS and latency on an FPGA board, latency on a CPU.

They implement :class:`bnhw.design.constraints.Constraint` (the search only knows that protocol).  The FPGA
ones make one :func:`bnhw.hw.estimate.estimate_fpga` per architecture: lowered to the IR, folded for the
highest FPS within ``margin`` of the board, FINN's analytical models (or the cycle simulator with ``refine``).
:class:`CpuLatency` makes one :func:`bnhw.hw.cpu.latency.cpu_latency` per architecture: the ARM cycle model
of the C runtime's program, or (``native``) the sum of per-op times measured on this machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BudgetError
from ..spec import ArchSpec

__all__ = ["CpuLatency", "FpgaFps", "FpgaLatency", "hardware_target"]


def hardware_target(name: str) -> str:
    """The canonical name of a search's ``--target``: an FPGA board or a CPU; an unknown one is one line
    listing both."""
    from .boards import BOARDS, get_board
    from .cpu.latency import CPU_TARGETS, is_cpu_target

    if is_cpu_target(name):
        return str(name).strip().lower()
    if str(name).strip().lower() not in BOARDS:
        raise BudgetError(f"--target: unknown target {name!r}; known boards: {', '.join(BOARDS)}; CPUs: "
                          f"{', '.join(CPU_TARGETS)}")
    return get_board(name).name


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


@dataclass(frozen=True)
class CpuLatency:
    """Latency of one image in milliseconds on CPU ``target`` (``native``: measured per layer shape on this
    machine with the C runtime; ``cortex-a9|a53|a72``: the ARM cycle model), at most ``max_ms`` (``None``:
    every value is feasible, the latency is only recorded).  ``threads`` (native; 0: all cores) and
    ``kernels`` (native; ``None``: ``$BNHW_KERNELS`` or ``auto``) are those of the measurement."""

    target: str
    max_ms: float | None = None
    threads: int = 0
    kernels: str | None = None
    cache_path: str | None = None        # JSON cache: per-spec latencies and the native table (a search's folder)
    name: str = "latency_ms"
    unit: str = "ms"

    def __post_init__(self) -> None:
        from .cpu.latency import check_cpu_target

        object.__setattr__(self, "target", check_cpu_target(self.target, self.threads))
        if self.max_ms is not None and not (self.max_ms > 0 and math.isfinite(self.max_ms)):
            raise BudgetError(f"--max-latency-ms must be a positive number of ms, got {self.max_ms}")

    def estimate(self, spec: ArchSpec):
        """The full :class:`~bnhw.hw.cpu.latency.CpuLatencyEstimate` behind :meth:`measure`."""
        from .cpu.latency import cpu_latency

        return cpu_latency(spec, self.target, threads=self.threads, kernels=self.kernels, cache_path=self.cache_path)

    @property
    def how(self) -> str:
        return "modelled, one core" if self.target != "native" else "measured per layer shape on this machine"

    def measure(self, spec: ArchSpec) -> float:
        return float(self.estimate(spec).ms)

    def feasible(self, value: float) -> bool:
        return self.max_ms is None or value <= self.max_ms

    def describe(self) -> str:
        if self.max_ms is None:
            return f"latency on {self.target} recorded, no maximum ({self.how})"
        return f"latency on {self.target} <= {self.max_ms:g} ms ({self.how})"
