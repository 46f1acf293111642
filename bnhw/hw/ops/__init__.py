"""The IR's ops: one module per op, each registering one :class:`~.base.HwOp` (the way qonnx and
finn-plus keep one CustomOp per file with a registry).  Adding an op = one module here (importing it
below registers it) + its test; ``tests/test_hw_ops.py`` then asks every back end for it.

The functions below are what the rest of bnhw calls with a node; each asks the node's op.
"""

from __future__ import annotations

from ..finn_models import FinnOp, Resources
from ..ir import HwGraph, Node
from . import (  # noqa: F401  (importing a module registers its op)
    addrequant,
    avgpoolsum,
    duplicate,
    gather,
    globalavgpool,
    labelselect,
    maxpool,
    mvau,
    rprelu,
    swg,
    thresholding,
)
from .base import ChannelwiseOp, HwOp, backend_unit, divisors, get_op, op_names, register, unregister
from .mvau import acc_bounds, is_depthwise

__all__ = ["HwOp", "ChannelwiseOp", "register", "unregister", "backend_unit", "get_op", "op_names", "divisors", "acc_bounds", "is_depthwise",
           "node_cycles", "node_resources", "legal_pe", "legal_simd", "finn_ops", "finn_op_type",
           "folding_error", "model_notes", "execute_node", "finn_folding_config"]


def node_cycles(g: HwGraph, n: Node) -> int:
    """FINN ``get_exp_cycles`` of the node (its op's model)."""
    return get_op(n.op).cycles(g, n)


def node_resources(g: HwGraph, n: Node) -> Resources:
    """FINN's resource estimates for the node (its op's model)."""
    return get_op(n.op).resources(g, n)


def legal_pe(g: HwGraph, n: Node) -> list[int]:
    return get_op(n.op).legal_pe(g, n)


def legal_simd(g: HwGraph, n: Node) -> list[int]:
    return get_op(n.op).legal_simd(g, n)


def finn_ops(g: HwGraph, n: Node) -> list[FinnOp]:
    """The FINN custom op(s) equivalent to the node at its folding (``[]``: none)."""
    return get_op(n.op).finn_ops(g, n)


def finn_op_type(g: HwGraph, n: Node) -> str:
    return get_op(n.op).finn_op_type(g, n)


def folding_error(g: HwGraph, n: Node, check_units: bool = True) -> str | None:
    """Why the node's folding is not allowed (``None``: it is); see :meth:`HwOp.folding_error`."""
    return get_op(n.op).folding_error(g, n, check_units)


def finn_folding_config(g: HwGraph) -> dict[str, dict[str, int]]:
    """``{node: FINN attributes}`` of every foldable node: the folding as FINN's ``ApplyConfig`` takes it."""
    return {n.name: get_op(n.op).finn_folding(n) for n in g.nodes if get_op(n.op).foldable}


def execute_node(g: HwGraph, n: Node, ins: list) -> list:
    return get_op(n.op).execute(g, n, ins)


def model_notes() -> dict[str, str]:
    """One line per op (and variant): which finn-plus formula is used and what bnhw assumes."""
    out: dict[str, str] = {}
    for name in op_names():
        out.update(get_op(name).notes)
    return out
