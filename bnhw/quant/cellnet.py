"""Brevitas networks stacked from cells (BNAS v2, BARS): :class:`CellNet` for a
:class:`~bnhw.spec.cells.CellNetSpec`.

The network (see :mod:`bnhw.spec.cells` for the cell semantics)::

    stem (input quant, stem_bits 3x3 conv, stride 1, BN)  -> c_{-2} = c_{-1}
      -> cell 0 .. cell n-1   (cell k reads c_{k-2}, c_{k-1})
      -> Classifier (global average pool, float Linear, logit BN)

One cell (:class:`Cell`) with width ``C``:

* **preprocessing**: ``s1 = pre1(c_{k-1})``, a binary 1 x 1 conv
  ``BinConvOp(c_in, C, 1)``; ``s0 = pre0(c_{k-2})``, the same when ``c_{k-2}``
  has the size of ``c_{k-1}``, and after a reduction cell (``c_{k-2}`` twice
  as large) a **factorised reduce** (:class:`FactorizedReduce`): two binary
  1 x 1 stride-2 convs to ``C // 2`` and ``C - C // 2`` channels, the second
  on the input shifted by one pixel (``x[:, :, 1:, 1:]``), concatenated, so
  the two halves sample complementary pixels of every 2 x 2 window (DARTS'
  choice, with binary convs).  A preprocessing conv that no edge (and, for
  ``pre1``, no inter-cell skip) reads is not built;
* **nodes**: node ``i`` sums its two edges, each
  :func:`~bnhw.quant.cellops.make_op` applied to an earlier state (``0 = s0``,
  ``1 = s1``, ``2 + j`` = node ``j``); in a reduction cell the edges from
  ``s0`` / ``s1`` have stride 2;
* **output**: the concatenation of all nodes, ``nodes * C`` channels;
* **inter-cell skip** (``spec.inter_cell_skip``): ``skip = s1`` in a normal
  cell, ``AvgPool2d(2, 2)(s1)`` in a reduction cell, is added to every node
  before the concatenation: ``out = concat(node_0 + skip, ..., node_{n-1} +
  skip)``.  The cell then forwards its (preprocessed) input whatever its
  edges compute: with every edge ``zeroise`` the output is the tiled skip.

Binary convolutions are XNOR-Net convs (``BN(beta * conv(sign(x),
sign(W)))``, :class:`~bnhw.quant.cellops.BinConvOp`).  :func:`make_exact`
re-expresses each one, with identical parameters and state-dict keys, so
that the QONNX export reproduces every binary activation bit for bit (the
contract of :mod:`bnhw.quant.layers`): the conv uses ``±1`` weights (QONNX
``BipolarQuant`` with scale 1; integer sums, exact in any order) and is
multiplied by ``beta = mean |W|`` per output channel afterwards
(:class:`XnorConv2d`, an elementwise ``Mul``), and the batch norm is
evaluated as ``x * a + b`` (:class:`~bnhw.quant.layers.FoldedBatchNorm2d`).
Max pools, node sums, concatenations and zeroise (``x * 0``) are exact or
elementwise (correctly rounded, so identical on any machine).  The average
pools (the 3 x 3 edge, padding not counted, and the 2 x 2 skip pool) are
float sums of the real-valued path, and a float sum depends on its order,
which each runtime picks (per instruction set, for ONNX Runtime's opset <= 18
kernel also per channel count): their agreement is not guaranteed (the
export's opset-20 ``AveragePool`` happens to sum in PyTorch's order on the
x86 machines checked, AVX2 and AVX-512), so ``bnhw export`` verifies every
export on images rather than assuming it.
Bit-exactness by construction would need a fixed-point real-valued path
(window sums of grid values are exact in any order; ``tests/test_cellnet.py``
checks that the binarised pool of such values is identical on both sides),
which cell networks do not have yet.  The function computed is the same as
with ``make_op``'s modules (up to float rounding), so weights move between
the two.

A cell net has a float real-valued path (``residual="float"``); the
fixed-point mode is only implemented for NAS-BNN block networks.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from brevitas.nn import QuantConv2d
from torch import Tensor, nn

from ..errors import BnhwError
from ..spec.cells import CellNetSpec
from .binarizers import BinaryWeightQuant
from .cellops import BinConvOp, make_op
from .layers import Classifier, FoldedBatchNorm2d, Freezable, Stem

__all__ = ["CellPlan", "cell_plan", "Cell", "CellNet", "FactorizedReduce", "XnorConv2d", "build_cell_model",
           "cell_baked_copy", "make_exact", "STEM_KERNEL"]

STEM_KERNEL = 3


# ----------------------------------------------------------------------------
# geometry shared by the model and the OPs estimator
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CellPlan:
    """One cell of a :class:`CellNetSpec`, as built: widths, sizes, edges with their strides."""

    index: int
    reduction: bool
    channels: int                  # C: every edge and node is C wide
    in_channels_pp: int            # channels of c_{k-2}
    in_channels_p: int             # channels of c_{k-1}
    in_size: int                   # spatial size of c_{k-1} (and of s0, s1)
    out_size: int                  # spatial size of the nodes and the output
    reduce_pp: bool                # c_{k-2} is twice the size: factorised reduce
    edges: tuple[tuple[str, int, int], ...]   # (op, input state, stride), node i at 2i, 2i + 1
    has_pre0: bool
    has_pre1: bool
    skip: bool

    @property
    def nodes(self) -> int:
        return len(self.edges) // 2

    @property
    def out_channels(self) -> int:
        return self.nodes * self.channels


def cell_plan(spec: CellNetSpec) -> list[CellPlan]:
    """The cells of ``spec`` in order, as :class:`CellNet` builds them and the OPs estimator counts them."""
    c_pp = c_p = spec.stem_channels
    h_pp = h_p = spec.resolution          # the stem has stride 1
    plans = []
    for k, cell in enumerate(spec.layout()):
        red, c = cell["reduction"], cell["channels"]
        genes = spec.genotype.reduce if red else spec.genotype.normal
        edges = tuple((op, src, 2 if red and src < 2 else 1) for op, src in genes)
        reads = {src for _, src in genes}
        h_out = h_p // 2 if red else h_p
        plan = CellPlan(index=k, reduction=red, channels=c, in_channels_pp=c_pp, in_channels_p=c_p,
                        in_size=h_p, out_size=h_out, reduce_pp=h_pp != h_p, edges=edges,
                        has_pre0=0 in reads, has_pre1=1 in reads or spec.inter_cell_skip,
                        skip=spec.inter_cell_skip)
        plans.append(plan)
        c_pp, c_p, h_pp, h_p = c_p, plan.out_channels, h_p, h_out
    return plans


# ----------------------------------------------------------------------------
# exact binary convolutions
# ----------------------------------------------------------------------------
class XnorConv2d(Freezable, QuantConv2d):
    """XNOR-Net convolution as ``conv(x, sign(W)) * beta``, ``beta = mean |W|`` per output channel.

    The same function (and gradient) as a ``QuantConv2d`` with
    :class:`~bnhw.quant.binarizers.XnorWeightQuant`, and the same parameter
    (``weight``), but the convolution itself sums ``±1`` products (exact) and
    the scale is an elementwise multiplication afterwards.  ``beta`` is
    frozen into a constant by :func:`cell_baked_copy` for export.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, stride: int = 1,
                 dilation: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=dilation * (kernel // 2),
                         dilation=dilation, groups=groups, bias=False, weight_quant=BinaryWeightQuant)

    def constants(self) -> tuple[Tensor]:
        """``(beta,)``, one scale per output channel."""
        return (self.weight.abs().mean(dim=(1, 2, 3)),)

    def forward(self, x: Tensor) -> Tensor:
        (beta,) = self._eval_constants() if not self.training else self.constants()
        return super().forward(x) * beta.view(1, -1, 1, 1)


def _exact_conv(conv: QuantConv2d) -> XnorConv2d:
    new = XnorConv2d(conv.in_channels, conv.out_channels, conv.kernel_size[0], stride=conv.stride[0],
                     dilation=conv.dilation[0], groups=conv.groups)
    with torch.no_grad():
        new.weight.copy_(conv.weight)
    return new.train(conv.training)


def _exact_bn(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    if not bn.affine or isinstance(bn, FoldedBatchNorm2d):
        return bn                     # affine=False (search time) stays a plain batch norm
    new = FoldedBatchNorm2d(bn.num_features)
    new.eps, new.momentum = bn.eps, bn.momentum
    new.load_state_dict(bn.state_dict())
    return new.train(bn.training)


def make_exact(module: nn.Module) -> nn.Module:
    """Re-express every :class:`~bnhw.quant.cellops.BinConvOp` in ``module`` (in place) for a bit-exact
    export: its conv becomes an :class:`XnorConv2d`, its (affine) batch norm a
    :class:`~bnhw.quant.layers.FoldedBatchNorm2d`, with the same weights and state-dict keys.
    Returns ``module``."""
    for m in module.modules():
        if isinstance(m, BinConvOp):
            if not isinstance(m.conv, XnorConv2d):
                m.conv = _exact_conv(m.conv)
            m.bn = _exact_bn(m.bn)
    return module


# ----------------------------------------------------------------------------
# network parts
# ----------------------------------------------------------------------------
class FactorizedReduce(nn.Module):
    """``c_in -> c_out`` at half the size: binary 1 x 1 stride-2 convs on ``x`` (to ``c_out // 2``) and on
    ``x[:, :, 1:, 1:]`` (to the rest), concatenated.  ``c_out == 1``: the first conv only."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        half = c_out // 2
        self.conv_a = BinConvOp(c_in, half or c_out, 1, stride=2)
        self.conv_b = BinConvOp(c_in, c_out - half, 1, stride=2) if half else None

    def forward(self, x: Tensor) -> Tensor:
        a = self.conv_a(x)
        if self.conv_b is None:
            return a
        return torch.cat([a, self.conv_b(x[:, :, 1:, 1:])], dim=1)


class Cell(nn.Module):
    """One normal or reduction cell built from a :class:`CellPlan` (see the module docstring)."""

    def __init__(self, plan: CellPlan):
        super().__init__()
        self.plan = plan
        c = plan.channels
        self.pre0: nn.Module | None = None
        if plan.has_pre0:
            self.pre0 = (FactorizedReduce(plan.in_channels_pp, c) if plan.reduce_pp
                         else BinConvOp(plan.in_channels_pp, c, 1))
        self.pre1 = BinConvOp(plan.in_channels_p, c, 1) if plan.has_pre1 else None
        self.edges = nn.ModuleList(make_op(op, c, stride) for op, _, stride in plan.edges)
        self.inputs = tuple(src for _, src, _ in plan.edges)
        self.skip_pool: nn.Module = nn.AvgPool2d(2, 2) if plan.reduction else nn.Identity()

    def forward(self, c_pp: Tensor, c_p: Tensor) -> Tensor:
        states: list[Tensor | None] = [
            self.pre0(c_pp) if self.pre0 is not None else None,
            self.pre1(c_p) if self.pre1 is not None else None,
        ]
        for i in range(self.plan.nodes):
            a, b = 2 * i, 2 * i + 1
            states.append(self.edges[a](states[self.inputs[a]]) + self.edges[b](states[self.inputs[b]]))
        nodes: Sequence[Tensor] = states[2:]  # type: ignore[assignment]
        if self.plan.skip:
            skip = self.skip_pool(states[1])
            nodes = [n + skip for n in nodes]
        return torch.cat(list(nodes), dim=1)


class CellNet(nn.Module):
    """A binary network stacked from cells, described by ``spec`` (inputs: N x C x R x R floats in [-1, 1]).

    ``cells[k]`` is the k-th entry of :func:`cell_plan`.  Exposes what the
    training loop, checkpoints and export use from a
    :class:`~bnhw.quant.model.BinaryNet`: ``spec``, ``weight_norm`` (always
    off: XNOR scaling instead of NAS-BNN's weight normalisation) and
    :meth:`input_shape`.
    """

    def __init__(self, spec: CellNetSpec):
        super().__init__()
        if spec.precision.fixed:
            raise BnhwError(f"{spec.name or 'cell network'}: the fixed-point residual path is only implemented "
                            "for NAS-BNN block networks; cell networks (BNAS/BARS) use residual \"float\"")
        self.spec = spec
        self.weight_norm = False
        p = spec.precision
        self.plan = cell_plan(spec)
        self.stem = Stem(spec.in_channels, spec.stem_channels, STEM_KERNEL, 1, p)
        self.cells = nn.ModuleList(Cell(cp) for cp in self.plan)
        self.classifier = Classifier(self.plan[-1].out_channels, spec.num_classes, p)
        make_exact(self)

    def forward(self, x: Tensor) -> Tensor:
        c_pp = c_p = self.stem(x)
        for cell in self.cells:
            c_pp, c_p = c_p, cell(c_pp, c_p)
        return self.classifier(c_p)

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        """The input shape ``(batch, in_channels, resolution, resolution)``."""
        return (batch, self.spec.in_channels, self.spec.resolution, self.spec.resolution)


def build_cell_model(spec: CellNetSpec) -> CellNet:
    """A freshly initialised :class:`CellNet` for ``spec``, in eval mode."""
    return CellNet(spec).eval()


def cell_baked_copy(model: CellNet) -> CellNet:
    """An independent eval-mode copy of ``model`` whose constants (XNOR scales, folded BN, classifier BN)
    are evaluated once, what the export traces (see :func:`~bnhw.quant.model.baked_copy`)."""
    out = copy.deepcopy(model).eval()
    for m in out.modules():
        if isinstance(m, Freezable):
            m.freeze()
    return out
