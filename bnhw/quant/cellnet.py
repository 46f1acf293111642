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

Fixed-point mode (``precision.residual="fixed"``)
-------------------------------------------------
The real-valued path becomes integer arithmetic evaluated exactly in float32,
with the conventions of :mod:`bnhw.quant.layers` (``R = residual_frac_bits``,
``N = residual_bits``, ``F = bn_frac_bits``): every state tensor (the stem
output, each edge output, each node, each cell output) is a signed ``N``-bit
value on the grid ``2**-R`` (a :class:`~bnhw.quant.layers.ResidualQuant`:
round half to even, saturate), so every sign is the integer threshold
``X >= 0`` and every sum of states is exact:

* **binary conv** (:class:`FixedBinConvOp`): the ``±1`` conv gives an integer
  ``P`` (``|P| <= K``, the fan-in); the XNOR scale ``beta`` is folded into the
  batch norm, ``A = round(beta * a)`` on ``2**-F`` within the bounds of
  :func:`~bnhw.quant.layers.binary_bn_format` and ``B = round(b)``; ``P A + B``
  is exact and the quantiser rounds it to the grid: the hardware ``AddRequant``
  (shift ``F - R``);
* **node**: ``q(e_a + e_b)``, the saturated sum of two grid values (a
  ``zeroise`` edge adds exactly 0);
* **inter-cell skip**: ``q(node + skip)``; in a reduction cell the 2 x 2 average
  of grid values is ``S4 2**-(R+2)`` (exact), so the sum is exact and the
  quantiser rounds ``(4 node + S4) / 4`` half to even;
* **3 x 3 average pool, padding not counted** (:class:`FixedAvgPool`): the
  window sum ``S`` (a depthwise conv with unit weights: at most 9 grid values,
  exact) divided by the number ``c`` of in-image taps at that position
  (:func:`avg_pool_counts`, an elementwise ``Div``, correctly rounded in PyTorch
  and ONNX Runtime alike), then quantised: exactly ``round_half_even(S / c)`` in
  grid units (a tie ``S / c = n + 1/2`` is representable and kept; any other
  quotient is at least ``1 / 18`` from a tie, far beyond float32's error at
  ``|S| < 2**(N+3)``);
* **3 x 3 max pool**, concatenation, factorised reduce: exact on grid values;
* stem and classifier: :class:`~bnhw.quant.layers.Stem` and
  :class:`~bnhw.quant.layers.Classifier` in fixed mode.

Training in fixed mode runs the batch norm on ``beta * P`` with batch
statistics (the running statistics mean the same as in float mode), with the
quantisers' straight-through gradients; the state dict is the float model's, so
:func:`~bnhw.quant.model.to_fixed` turns a float-trained cell net into its
fixed-point form, and ``bnhw train ARCH --init float/model.pt`` fine-tunes that
form.  Each fixed op is within its rounding of the float op fed the same input
(measured on the zoo nets: relative RMS error about 1e-3, no saturation), but a
binary network amplifies the sign flips of values within a grid step of zero
(about 0.1 % at the stem, 15-20 % of the binarised states three to five cells
later; the float model with uniform noise of half a grid step added at the same
places: 10-14 %), so the two models' predictions differ on the images the
classifier is unsure of: see
docs/RESULTS.md, "Fixed point vs float on the zoo cell nets".
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from brevitas.nn import QuantConv2d
from torch import Tensor, nn

from ..spec import Precision
from ..spec.cells import CellNetSpec
from .binarizers import BinaryWeightQuant
from .cellops import BinConvOp, make_op, op_geometry
from .layers import (
    BNFormat,
    Classifier,
    FoldedBatchNorm2d,
    Freezable,
    Stem,
    apply_affine,
    binary_bn_format,
    bn_affine,
    residual_quant,
)

__all__ = ["CellPlan", "cell_plan", "Cell", "CellNet", "FactorizedReduce", "XnorConv2d", "FixedBinConvOp",
           "FixedAvgPool", "avg_pool_counts", "build_cell_model", "cell_baked_copy", "make_exact", "make_fixed",
           "STEM_KERNEL"]

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
# the fixed-point real-valued path (see the module docstring)
# ----------------------------------------------------------------------------
class FixedBinConvOp(Freezable, BinConvOp):
    """A :class:`~bnhw.quant.cellops.BinConvOp` in fixed mode: ``q(P * A + B)`` with the integer ``±1`` conv
    ``P``, the XNOR scale folded into the dyadic batch-norm constants ``(A, B)`` (:meth:`constants`) and the
    residual quantiser ``q``.  Same children and state-dict keys as the op it is made from (``sign``,
    ``conv``, ``bn``), so float weights load unchanged."""

    def __init__(self, op: BinConvOp, precision: Precision):
        nn.Module.__init__(self)
        self.sign = op.sign
        self.conv = op.conv if isinstance(op.conv, XnorConv2d) else _exact_conv(op.conv)
        bn = op.bn
        if not bn.affine:
            raise ValueError("fixed mode needs an affine batch norm")
        self.bn = bn
        c = self.conv
        fmt = binary_bn_format(precision, c.in_channels // c.groups * c.kernel_size[0] * c.kernel_size[1])
        assert fmt is not None                       # precision.fixed
        self.fmt: BNFormat = fmt
        self.out_quant = residual_quant(precision)

    @property
    def fan_in(self) -> int:
        c = self.conv
        return c.in_channels // c.groups * c.kernel_size[0] * c.kernel_size[1]

    def constants(self) -> tuple[Tensor, Tensor]:
        """``(A, B)`` per output channel: ``beta * a`` and ``b`` of the eval-mode batch norm on their grids."""
        bn = self.bn
        assert bn.running_mean is not None and bn.running_var is not None
        (beta,) = self.conv.constants()
        a, b = bn_affine(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
        return self.fmt.a.quantize(a * beta), self.fmt.b.quantize(b)

    def forward(self, x: Tensor) -> Tensor:
        p = QuantConv2d.forward(self.conv, self.sign(x))          # integer sums of ±1 products
        if self.training:
            (beta,) = self.conv.constants()
            y = nn.BatchNorm2d.forward(self.bn, p * beta.view(1, -1, 1, 1))
        else:
            y = apply_affine(p, *self._eval_constants())
        return self.out_quant(y)


def avg_pool_counts(size: int, kernel: int, stride: int, pad: int) -> np.ndarray:
    """The number of in-image taps of each output position ``(Ho, Wo)`` of a ``kernel x kernel`` pool with
    ``stride`` and ``pad`` on a ``size x size`` input (the divisor of an average with padding not counted)."""
    out = (size + 2 * pad - kernel) // stride + 1
    per = np.array([sum(1 for k in range(kernel) if 0 <= o * stride - pad + k < size) for o in range(out)])
    return np.outer(per, per).astype(np.int64)


class FixedAvgPool(nn.Module):
    """``q(S / c)``: the fixed-mode 3 x 3 average pool with padding not counted (see the module docstring):
    the window sum ``S`` of grid values, divided by the per-position tap count ``c``, quantised."""

    def __init__(self, kernel: int, stride: int, precision: Precision):
        super().__init__()
        self.kernel, self.stride, self.pad = kernel, stride, kernel // 2
        self.out_quant = residual_quant(precision)

    def forward(self, x: Tensor) -> Tensor:
        C, H = x.shape[1], x.shape[2]
        ones = torch.ones(C, 1, self.kernel, self.kernel, dtype=x.dtype, device=x.device)
        s = F.conv2d(x, ones, stride=self.stride, padding=self.pad, groups=C)
        counts = torch.from_numpy(avg_pool_counts(int(H), self.kernel, self.stride, self.pad)).to(x.dtype)
        return self.out_quant(s / counts.to(x.device))


def make_fixed(module: nn.Module, precision: Precision) -> nn.Module:
    """Re-express every :class:`~bnhw.quant.cellops.BinConvOp` in ``module`` (in place) as a
    :class:`FixedBinConvOp` (same state-dict keys).  Returns ``module``."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BinConvOp) and not isinstance(child, FixedBinConvOp):
                setattr(parent, name, FixedBinConvOp(child, precision).train(child.training))
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

    def __init__(self, plan: CellPlan, precision: Precision | None = None):
        super().__init__()
        self.plan = plan
        p = precision or Precision()
        c = plan.channels
        self.pre0: nn.Module | None = None
        if plan.has_pre0:
            self.pre0 = (FactorizedReduce(plan.in_channels_pp, c) if plan.reduce_pp
                         else BinConvOp(plan.in_channels_pp, c, 1))
        self.pre1 = BinConvOp(plan.in_channels_p, c, 1) if plan.has_pre1 else None
        self.edges = nn.ModuleList(
            FixedAvgPool(3, stride, p) if p.fixed and op_geometry(op).kind == "avg_pool" else make_op(op, c, stride)
            for op, _, stride in plan.edges)
        self.inputs = tuple(src for _, src, _ in plan.edges)
        self.skip_pool: nn.Module = nn.AvgPool2d(2, 2) if plan.reduction else nn.Identity()
        # fixed mode: the node sums and the skip adds are quantised (nn.Identity in float mode)
        self.node_quant = nn.ModuleList(residual_quant(p) for _ in range(plan.nodes))
        self.skip_quant = nn.ModuleList(residual_quant(p) for _ in range(plan.nodes if plan.skip else 0))

    def forward(self, c_pp: Tensor, c_p: Tensor) -> Tensor:
        states: list[Tensor | None] = [
            self.pre0(c_pp) if self.pre0 is not None else None,
            self.pre1(c_p) if self.pre1 is not None else None,
        ]
        for i in range(self.plan.nodes):
            a, b = 2 * i, 2 * i + 1
            states.append(self.node_quant[i](self.edges[a](states[self.inputs[a]])
                                             + self.edges[b](states[self.inputs[b]])))
        nodes: Sequence[Tensor] = states[2:]  # type: ignore[assignment]
        if self.plan.skip:
            skip = self.skip_pool(states[1])
            nodes = [q(n + skip) for q, n in zip(self.skip_quant, nodes, strict=True)]
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
        self.spec = spec
        self.weight_norm = False
        p = spec.precision
        self.plan = cell_plan(spec)
        self.stem = Stem(spec.in_channels, spec.stem_channels, STEM_KERNEL, 1, p)
        self.cells = nn.ModuleList(Cell(cp, p) for cp in self.plan)
        self.classifier = Classifier(self.plan[-1].out_channels, spec.num_classes, p)
        make_exact(self)
        if p.fixed:
            make_fixed(self, p)

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
