"""Constraints and metrics the search consults: a small, pluggable interface.

A :class:`Constraint` measures one quantity of an architecture (OPs, a
modelled latency, an FPS, a resource count) and says whether a value is
feasible.  The evolutionary search only ever calls ``measure`` and
``feasible``, so estimators of later hardware targets plug in by adding a
class here (or anywhere) without touching the search.

:class:`OpsBudget` counts OPs; the hardware constraints live with the
hardware models they ask (:class:`bnhw.hw.constraints.FpgaFps`,
:class:`~bnhw.hw.constraints.FpgaLatency`), above this layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..estimators.ops import format_ops, ops_of
from ..spec import ArchSpec


@runtime_checkable
class Constraint(Protocol):
    # read-only members (constraints are frozen dataclasses)
    @property
    def name(self) -> str:
        """Key under which the measured value is stored, e.g. ``"ops"``."""
        ...

    @property
    def unit(self) -> str: ...

    def measure(self, spec: ArchSpec) -> float: ...

    def feasible(self, value: float) -> bool: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class OpsBudget:
    """OPs = FLOPs + BOPs/64 + Int8OPs/8 at the spec's nominal resolution, at most ``max_ops``."""

    max_ops: float
    name: str = "ops"
    unit: str = "OPs"

    def measure(self, spec: ArchSpec) -> float:
        return ops_of(spec)

    def feasible(self, value: float) -> bool:
        return value <= self.max_ops

    def describe(self) -> str:
        return f"OPs <= {format_ops(self.max_ops)}"


def measure_all(constraints: Sequence[Constraint], spec: ArchSpec) -> dict[str, float]:
    return {c.name: float(c.measure(spec)) for c in constraints}


def all_feasible(constraints: Sequence[Constraint], values: dict[str, float]) -> bool:
    return all(c.feasible(values[c.name]) for c in constraints)
