"""The building blocks of a bnhw binary network, all in Brevitas.

Every module is constructed from plain numbers (channels, kernel, groups,
stride, :class:`~bnhw.spec.Precision`) so that a weight-sharing supernet can
later build exactly these modules for an extracted subnet and copy its
weights in.

Numerical contract (what makes the QONNX export bit-exact on every binary
tensor): every tensor that reaches a binariser is computed by the same
float32 operations, rounded the same way, in PyTorch and in the exported
graph run by qonnx / ONNX Runtime:

* convolutions only produce exactly representable sums: the binary convs
  sum ±1 products (small integers, exact in any order); the stem multiplies
  ``stem_bits``-bit fixed-point inputs and weights with power-of-two scales,
  exact while ``2 * (stem_bits - 1) + log2(in_channels * k * k) <= 24``
  (true for the default 8 bits with up to 7 x 7 kernels on 3 channels);
* the batch norm is evaluated in eval mode as ``x * a + b`` with ``a``,
  ``b`` folded per channel (:class:`FoldedBatchNorm2d`), two elementwise ops
  (``Mul``, ``Add``), rather than by a fused kernel whose rounding differs
  between implementations;
* thresholds, shortcut adds and RPReLU are elementwise (``Sub``, ``Add``,
  ``PRelu``); the 2 x 2 average-pool shortcut sums each window in row-major
  order in both PyTorch and ONNX Runtime (``tests/test_export.py`` checks it);
* the fixed-point quantisers divide by powers of two and round half to even
  on both sides.

Quantiser placement in ``residual="fixed"`` mode (signed fixed point,
``residual_bits`` total bits, constant scale ``2**-residual_frac_bits``; each
is a :class:`ResidualQuant`):

* :class:`Stem`: the stem output, after the BN;
* :class:`BinaryBlock`, in each of its two halves: the sum ``BN(conv) +
  shortcut`` right after the shortcut add, and the RPReLU output;
* :class:`Classifier`: the globally average-pooled features (the classifier
  input).

In ``residual="float"`` mode those positions hold an ``nn.Identity``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..spec import Precision
from .binarizers import (
    BinaryActQuant,
    BinaryWeightQuant,
    fixed_point_act_quant,
    fixed_point_weight_quant,
)

__all__ = [
    "WEIGHT_NORM_EPS",
    "BinaryBlock",
    "BinaryConv2d",
    "ChannelShortcut",
    "ChannelWeightNorm",
    "Classifier",
    "FoldedBatchNorm1d",
    "folded_bn",
    "shortcut_index",
    "FoldedBatchNorm2d",
    "LearnableSign",
    "RPReLU",
    "ResidualQuant",
    "Stem",
    "baked_state_dict",
    "residual_quant",
]

WEIGHT_NORM_EPS = 1e-5


# ----------------------------------------------------------------------------
# weight transforms (parametrisations of the binary convs' latent weights)
# ----------------------------------------------------------------------------
class ChannelWeightNorm(nn.Module):
    """Channel-wise weight normalisation (NAS-BNN Eq. 6).

    ``W' = (W - mean_c) / sqrt(var_c + eps)`` where mean and (population)
    variance are taken over all weights of output channel ``c``.  Registered
    as a ``torch.nn.utils.parametrize`` parametrisation of a
    :class:`BinaryConv2d` weight, so ``conv.weight`` *is* the normalised
    latent weight that the binariser sees.
    """

    def __init__(self, eps: float = WEIGHT_NORM_EPS):
        super().__init__()
        self.eps = eps

    def forward(self, w: Tensor) -> Tensor:
        dims = tuple(range(1, w.dim()))
        mean = w.mean(dim=dims, keepdim=True)
        var = w.var(dim=dims, keepdim=True, unbiased=False)
        return (w - mean) / torch.sqrt(var + self.eps)


class BinaryConv2d(QuantConv2d):
    """Binary k x k convolution: ±1 weights (constant scale 1), no bias, same padding.

    The latent float weight may be transformed before binarisation by a chain
    of parametrisations (``torch.nn.utils.parametrize`` on ``weight``):
    first ``weight_transforms`` in order (e.g. a supernet's Bi-Transformation,
    a learnable k²×k² matrix on the flattened kernel), then
    :class:`ChannelWeightNorm` when ``weight_norm`` is on.  With any transform
    the raw parameter lives at ``parametrizations.weight.original`` and
    ``conv.weight`` returns the transformed tensor;
    :func:`baked_state_dict` evaluates the transforms into plain weights
    (done before export).  The input must already be binary (see
    :class:`LearnableSign`); the output is an integer-valued tensor.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, stride: int = 1,
                 groups: int = 1, weight_norm: bool = True,
                 weight_transforms: Sequence[nn.Module] = ()):
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2,
                         groups=groups, bias=False, weight_quant=BinaryWeightQuant)
        transforms = list(weight_transforms)
        if weight_norm:
            transforms.append(ChannelWeightNorm())
        for t in transforms:
            parametrize.register_parametrization(self, "weight", t)

    @property
    def latent_weight(self) -> Tensor:
        """The raw (untransformed) weight parameter."""
        if parametrize.is_parametrized(self, "weight"):
            return self.parametrizations.weight.original
        return self.weight

    def binary_weight(self) -> Tensor:
        """The ±1 weight tensor the convolution uses."""
        return self.quant_weight().value


def baked_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``model.state_dict()`` with every weight transform evaluated into a plain ``weight``.

    For each module with a parametrised ``weight`` the entries under
    ``<name>.parametrizations.weight.`` are replaced by ``<name>.weight``
    holding the transformed tensor, so the result loads into the same
    architecture built without transforms (``weight_norm=False``) and gives
    bit-identical binary weights (the same transform, evaluated once).
    """
    state = model.state_dict()
    for name, m in model.named_modules():
        if parametrize.is_parametrized(m, "weight"):
            prefix = f"{name}.parametrizations.weight." if name else "parametrizations.weight."
            for key in [k for k in state if k.startswith(prefix)]:
                del state[key]
            state[f"{name}.weight" if name else "weight"] = m.weight.detach().clone()
    return state


# ----------------------------------------------------------------------------
# elementwise pieces
# ----------------------------------------------------------------------------
class LearnableSign(nn.Module):
    """Learnable-threshold sign: ``sign(x - b)`` with a per-channel ``b``, to ±1.

    The binariser (:attr:`binarize`, a Brevitas ``QuantIdentity`` exported as
    QONNX ``BipolarQuant``) maps ``x - b >= 0`` to +1 and the rest to -1.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.binarize = QuantIdentity(act_quant=BinaryActQuant)

    def forward(self, x: Tensor) -> Tensor:
        return self.binarize(x - self.bias)


class RPReLU(nn.Module):
    """Learnable-bias PReLU (ReActNet): ``y = PReLU(x - b1) + b2``, all per channel."""

    def __init__(self, channels: int, init_slope: float = 0.25):
        super().__init__()
        self.shift_in = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.prelu = nn.PReLU(channels, init=init_slope)
        self.shift_out = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.prelu(x - self.shift_in) + self.shift_out


def folded_bn(x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, var: Tensor, eps: float) -> Tensor:
    """Eval-mode batch norm as ``x * a + b`` with ``a = gamma / sqrt(var + eps)``,
    ``b = beta - mean * a`` per channel (dim 1 of ``x``).

    The one place this is computed: the standalone model and the supernet both
    call it, so an extracted subnet reproduces the supernet bit for bit, and
    the exported graph (``Mul`` then ``Add`` with the same constants) matches
    PyTorch exactly.  It is also the affine form integer hardware implements.
    """
    a = weight / torch.sqrt(var + eps)
    b = bias - mean * a
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * a.view(shape) + b.view(shape)


class FoldedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose eval-mode output is :func:`folded_bn` (two elementwise ops).

    In training mode (and during :func:`~bnhw.quant.model.recalibrate_bn`) it
    is a plain batch norm.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return super().forward(x)
        return folded_bn(x, self.weight, self.bias, self.running_mean, self.running_var, self.eps)


class ResidualQuant(QuantIdentity):
    """Signed fixed point on the real-valued path (``residual="fixed"``), QONNX ``Quant``."""

    def __init__(self, precision: Precision):
        super().__init__(act_quant=fixed_point_act_quant(precision.residual_bits,
                                                         precision.residual_frac_bits))


def residual_quant(precision: Precision) -> nn.Module:
    """A :class:`ResidualQuant` in fixed mode, ``nn.Identity`` in float mode."""
    return ResidualQuant(precision) if precision.fixed else nn.Identity()


def shortcut_index(in_channels: int, out_channels: int) -> Tensor:
    """Input channel feeding each output channel of the width-changing shortcut: ``c % cin``."""
    return torch.arange(out_channels) % in_channels


class ChannelShortcut(nn.Module):
    """Bi-Real shortcut of the 1 x 1 half when the width changes.

    ``cout > cin``: the input channels are tiled (repeated) and the first
    ``cout`` kept; ``cout < cin``: the first ``cout`` channels are kept;
    ``cout == cin``: identity.  Both cases are one channel gather with the
    constant index ``c % cin`` for output channel ``c`` (a single ONNX
    ``Gather`` on axis 1 in the export).
    """

    index: Tensor

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.register_buffer("index", shortcut_index(in_channels, out_channels), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.out_channels == self.in_channels:
            return x
        return x.index_select(1, self.index)


# ----------------------------------------------------------------------------
# network parts
# ----------------------------------------------------------------------------
class Stem(nn.Module):
    """Input quantiser, ``stem_bits``-bit k x k conv (stride, same padding, no bias), BN.

    The input (float, expected in [-1, 1]) is quantised to signed fixed point
    with ``stem_bits`` bits and scale ``2**-(stem_bits-1)`` (so 1.0 saturates
    to ``1 - 2**-(stem_bits-1)``); the weights to ``stem_bits``-bit narrow
    range with a power-of-two scale, so the convolution is exact in float32
    (see the module docstring for the bound).  In fixed mode the BN output is
    quantised (:class:`ResidualQuant`).
    """

    def __init__(self, in_channels: int, channels: int, kernel: int, stride: int,
                 precision: Precision):
        super().__init__()
        self.input_quant = QuantIdentity(
            act_quant=fixed_point_act_quant(precision.stem_bits, precision.stem_bits - 1))
        self.conv = QuantConv2d(in_channels, channels, kernel, stride=stride, padding=kernel // 2,
                                bias=False,
                                weight_quant=fixed_point_weight_quant(precision.stem_bits))
        self.bn = FoldedBatchNorm2d(channels)
        self.out_quant = residual_quant(precision)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_quant(self.bn(self.conv(self.input_quant(x))))


class BinaryBlock(nn.Module):
    """One NAS-BNN / ReActNet-A separable block, ``cin -> cout``.

    Half 1 (spatial, carries the stride)::

        s1 = sign1(x)                               # LearnableSign, ±1
        y1 = bn1(conv1(s1)) + pool(x)               # k x k, groups, stride; pool = 2x2 avg if stride 2
        y1 = q_sum1(y1)                             # fixed mode only
        x1 = q_act1(act1(y1))                       # RPReLU; quantiser in fixed mode only

    Half 2 (channel mixing, sets the width)::

        s2 = sign2(x1)
        y2 = q_sum2(bn2(conv2(s2)) + tile(x1))      # 1 x 1, cin -> cout; ChannelShortcut
        out = q_act2(act2(y2))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, groups: int,
                 stride: int, precision: Precision, *, weight_norm: bool = True):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.sign1 = LearnableSign(in_channels)
        self.conv1 = BinaryConv2d(in_channels, in_channels, kernel, stride=stride, groups=groups,
                                  weight_norm=weight_norm)
        self.bn1 = FoldedBatchNorm2d(in_channels)
        self.shortcut1: nn.Module = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()
        self.q_sum1 = residual_quant(precision)
        self.act1 = RPReLU(in_channels)
        self.q_act1 = residual_quant(precision)

        self.sign2 = LearnableSign(in_channels)
        self.conv2 = BinaryConv2d(in_channels, out_channels, 1, weight_norm=weight_norm)
        self.bn2 = FoldedBatchNorm2d(out_channels)
        self.shortcut2 = ChannelShortcut(in_channels, out_channels)
        self.q_sum2 = residual_quant(precision)
        self.act2 = RPReLU(out_channels)
        self.q_act2 = residual_quant(precision)

    def forward(self, x: Tensor) -> Tensor:
        y = self.q_sum1(self.bn1(self.conv1(self.sign1(x))) + self.shortcut1(x))
        x = self.q_act1(self.act1(y))
        y = self.q_sum2(self.bn2(self.conv2(self.sign2(x))) + self.shortcut2(x))
        return self.q_act2(self.act2(y))


class FoldedBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` on ``N x C`` whose eval-mode output is :func:`folded_bn`."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return super().forward(x)
        return folded_bn(x, self.weight, self.bias, self.running_mean, self.running_var, self.eps)


class Classifier(nn.Module):
    """Global average pool, then ``Linear(C, num_classes)`` with bias, then a
    batch norm over the logits (FINN's "TensorNorm" on the last layer).

    The logit batch norm is a per-class affine map at inference (exported as
    ``Mul`` + ``Add``; hardware folds it into the label select) and costs no
    OPs.  It keeps training stable: the residual stream that reaches the
    classifier grows with depth, and without it Adam's first steps on a wide
    classifier inflate the logits of deep, wide subnets by an order of
    magnitude (observed on the 1536-wide NAS-BNN subnets).

    Float mode: float weights.  Fixed mode: the pooled features are quantised
    to the residual fixed-point format (:class:`ResidualQuant`) and the
    weights to ``classifier_bits``-bit narrow range with a power-of-two scale;
    the bias stays float.  In fixed mode the pooled features are identical in
    PyTorch and the export (the sum of grid values is exact while
    ``H * W * 2**(residual_bits - 1) <= 2**24``, and both sides divide by
    ``H * W`` with correct rounding); only the classifier's dot products
    round differently.
    """

    def __init__(self, channels: int, num_classes: int, precision: Precision):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.in_quant = residual_quant(precision)
        weight_quant = fixed_point_weight_quant(precision.classifier_bits) if precision.fixed else None
        self.fc = QuantLinear(channels, num_classes, bias=True, weight_quant=weight_quant)
        self.bn = FoldedBatchNorm1d(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.fc(self.in_quant(torch.flatten(self.pool(x), 1))))
