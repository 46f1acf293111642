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
    concat,
    duplicate,
    gather,
    globalavgpool,
    labelselect,
    maxpool,
    mvau,
    rprelu,
    swg,
    thresholding,
    windowavg,
    windowmax,
)
from .base import (
    ChannelwiseOp,
    HwOp,
    backend_unit,
    border_corrected,
    divisors,
    finn_activation,
    finn_stream_dt,
    get_op,
    is_xnor,
    op_names,
    padding_correction,
    register,
    unregister,
)
from .mvau import acc_bounds, is_depthwise

__all__ = ["HwOp", "ChannelwiseOp", "register", "unregister", "backend_unit", "get_op", "op_names", "divisors", "acc_bounds", "is_depthwise",
           "finn_stream_dt", "finn_activation", "is_xnor", "border_corrected", "padding_correction",
           "node_cycles", "node_resources", "legal_pe", "legal_simd", "finn_ops", "finn_op_type",
           "folding_error", "model_notes", "execute_node", "finn_folding_config", "finn_graph_ops", "FOLDING_ATTRS"]


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


#: the FINN node attributes a folding sets
FOLDING_ATTRS = ("PE", "SIMD", "parallel_window")


def finn_graph_ops(g: HwGraph) -> list[tuple[str, str, FinnOp]]:
    """``(FINN node name, IR node name, FINN op)`` of every FINN op of the graph, as finn-plus's builder names
    them: ``{op_type}_{i}`` counted per op type in graph order (``GiveUniqueNodeNames`` after
    ``SpecializeLayers``).  The IR's nodes map to FINN ops in the same order (:func:`finn_ops`), so a max pool,
    which finn-plus builds as a window generator + ``Pool_hls``, advances the window generators' count; FINN's
    nodes with no IR counterpart (a ``Reshape_rtl``, the affine head) are not listed."""
    count: dict[str, int] = {}
    out = []
    for n in g.nodes:
        for op in finn_ops(g, n):
            i = count.get(op.op_type, 0)
            count[op.op_type] = i + 1
            out.append((f"{op.op_type}_{i}", n.name, op))
    return out


def finn_folding_config(g: HwGraph) -> dict[str, dict[str, int]]:
    """``{FINN node name: folding attributes}``: the folding as finn-plus's ``ApplyConfig`` takes it on the graph
    its builder makes from the network (names from :func:`finn_graph_ops`)."""
    out = {}
    for name, _, op in finn_graph_ops(g):
        d = {k: int(op.attrs[k]) for k in FOLDING_ATTRS if k in op.attrs}
        if d:
            out[name] = d
    return out


def execute_node(g: HwGraph, n: Node, ins: list) -> list:
    return get_op(n.op).execute(g, n, ins)


def model_notes() -> dict[str, str]:
    """One line per op (and variant): which finn-plus formula is used and what bnhw assumes."""
    out: dict[str, str] = {}
    for name in op_names():
        out.update(get_op(name).notes)
    return out
