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

* :class:`Stem`: the stem convolution output (before the BN) and the stem
  output, after the BN;
* :class:`BinaryBlock`, in each of its two halves: the sum ``BN(conv) +
  shortcut`` right after the shortcut add, and the RPReLU output;
* :class:`Classifier`: the globally average-pooled features (the classifier
  input).

In ``residual="float"`` mode those positions hold an ``nn.Identity``.

Fixed mode is integer arithmetic, evaluated exactly in float32
--------------------------------------------------------------
In fixed mode every constant between two quantisers is dyadic as well
(rounded half to even onto its grid in the forward pass, straight-through
gradient in training; :class:`Dyadic`), chosen so that every float32
intermediate is either exact or saturates its quantiser exactly as the
integer computation does.  The network then *is* the integer network that
:func:`bnhw.hw.lower_binarynet.lower_binarynet` builds, in PyTorch and in the
exported QONNX graph alike.  Notation: ``R = residual_frac_bits``, ``N =
residual_bits``, ``F = bn_frac_bits``, ``Fs = slope_frac_bits``; a float32
holds every integer multiple ``k * 2**-e`` with ``|k| <= 2**24`` exactly, and
rounding is monotone (``|v| >= 2**m`` implies ``|fl(v)| >= 2**m``).

* **Binary-conv BN** (:func:`binary_bn_format`): the conv output ``P`` is an
  integer with ``|P| <= K`` (the fan-in ``cin / groups * k * k``, zero
  padding included); ``a = A 2**-F`` with ``|A| < 2**(23 - c)``, ``c =
  ceil(log2(K + 1))`` so ``K < 2**c``; ``b = B 2**-F`` with ``|B| < 2**21``;
  the shortcut ``s`` is ``S 2**-R`` (identity, gather; ``|S| <= 2**(N-1)``) or
  a 2 x 2 average ``S4 2**-(R+2)`` (``|S4| <= 2**(N+1)``; the 4-term sum and
  the division by 4 are exact), i.e. ``S' 2**-F`` with ``|S'| <= 2**(N-1+F-R)
  <= 2**22`` (:class:`~bnhw.spec.Precision` enforces ``F >= R + 2`` and
  ``N - 1 + F - R <= 22``).  ``fl(fl(fl(P a) + b) + s)``: every partial sum
  is a multiple of ``2**-F`` of magnitude below ``(2**23 + 2**21 + 2**22)
  2**-F < 2**24 2**-F``, so all three operations are exact, in any order.
  The quantiser then rounds ``(P A + B + S') / 2**(F-R)`` half to even and
  clips: exactly the hardware ``AddRequant``.
* **Stem** (:func:`stem_bn_format`): the ``stem_bits`` conv's products and
  sums are exact (see above); its output is first quantised to the residual
  format (``X 2**-R``, ``|X| <= 2**(N-1)``), then the BN uses ``a = A
  2**-Fa`` with ``Fa = 24 - N`` and ``|A| < 2**(N-1)``, and ``b = B
  2**-(R+Fa)`` with ``|B| < 2**23``.  In units of ``2**-(R+Fa)`` the output
  quantiser saturates at ``|v| >= 2**(N-1) 2**Fa = 2**23``.  If ``|X A| <
  2**24`` the product is exact, and so is the sum unless ``|X A + B| >=
  2**24``, when both the float sum (monotone rounding) and the exact one
  exceed ``2**23`` with the same sign: both saturate alike.  If ``|X A| >=
  2**24``, then ``|fl(X A)| >= 2**24`` and ``|fl(fl(X A) + B)| >= 2**24 -
  2**23 = 2**23``, while the exact ``|X A + B| > 2**23``, with the sign of
  ``X A`` on both sides: again identical saturation.
* **RPReLU** (:func:`rprelu_format`): ``shift_in`` and ``shift_out`` on the
  residual grid (``|.| < 2**(N-1)``), the slope ``Q 2**-Fs`` with ``|Q| <=
  2**(24-N)`` (``N + Fs <= 24``, so slopes in ``[-1, 1]`` are representable
  at the defaults).  ``y = x - shift_in`` is ``Y 2**-R`` with ``|Y| < 2**N``
  (exact); ``y >= 0``: ``y + shift_out`` is a multiple of ``2**-R`` below
  ``2**(N+1) <= 2**24`` (exact); ``y < 0``: ``|Y Q| < 2**24`` in units of
  ``2**-(R+Fs)`` (exact), and ``+ shift_out`` (``|S_out 2**Fs| < 2**23``) is
  exact unless the exact sum reaches ``2**24``, beyond the saturation
  threshold ``2**(N-1+Fs) <= 2**23`` of the output quantiser, when the float
  sum does too (monotone rounding): identical saturation.
* **LearnableSign**: ``fl(x - b) >= 0`` exactly when ``x >= b`` (the float32
  subtraction keeps the sign and is zero only for equal operands), so the
  binariser is the integer threshold "``X >= T``" on the grid integer ``X``
  (:func:`sign_thresholds` finds ``T`` by evaluating the float32 op); the
  learnable ``b`` needs no rounding.
* **Classifier**: the global average pool of grid values is correctly
  rounded on both sides (see :class:`Classifier`); the classifier's
  ``Gemm`` and the logit BN are the float per-class affine map of the host.

In ``residual="float"`` mode none of this applies: the constants are the
float ones, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
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
    "BNFormat",
    "BinaryBlock",
    "BinaryConv2d",
    "ChannelShortcut",
    "ChannelWeightNorm",
    "Classifier",
    "Dyadic",
    "FoldedBatchNorm1d",
    "FoldedBatchNorm2d",
    "LearnableSign",
    "RPReLU",
    "RPReLUFormat",
    "ResidualQuant",
    "Stem",
    "apply_affine",
    "baked_state_dict",
    "binary_bn_format",
    "bn_affine",
    "folded_bn",
    "residual_quant",
    "rprelu",
    "rprelu_constants",
    "rprelu_format",
    "shortcut_index",
    "sign_thresholds",
    "stem_bn_format",
]

WEIGHT_NORM_EPS = 1e-5


# ----------------------------------------------------------------------------
# dyadic constants of the fixed-point path (see the module docstring)
# ----------------------------------------------------------------------------
def _straight_through(t: Tensor, q: Tensor) -> Tensor:
    """``q`` in the forward pass (bit for bit), the gradient of ``t`` in the backward pass."""
    if not (torch.is_grad_enabled() and t.requires_grad):
        return q
    return q.detach() + (t - t.detach())        # + exactly 0: the value is q


@dataclass(frozen=True)
class Dyadic:
    """The grid ``k * 2**-frac`` with integer ``|k| <= max_int`` (``max_int < 2**24``)."""

    frac: int
    max_int: int

    @property
    def step(self) -> float:
        return 2.0 ** -self.frac

    def quantize(self, t: Tensor) -> Tensor:
        """``t`` rounded half to even onto the grid and clipped (straight-through gradient).

        The scaling by ``2**frac`` is exact, so the result is exactly
        ``k * 2**-frac`` and computed the same way wherever it is evaluated.
        """
        s = 2.0 ** self.frac
        q = torch.clamp(torch.round(t * s), -self.max_int, self.max_int) / s
        return _straight_through(t, q)

    def integers(self, t: Tensor) -> np.ndarray:
        """The integers ``k`` of an already quantised tensor (checked to be on the grid)."""
        v = t.detach().double().cpu().numpy() * 2.0 ** self.frac
        k = np.rint(v)
        if not np.array_equal(k, v) or np.abs(k).max(initial=0) > self.max_int:
            raise ValueError(f"tensor is not on the grid 2**-{self.frac} within +-{self.max_int}")
        return k.astype(np.int64)


@dataclass(frozen=True)
class BNFormat:
    """Grids of the folded batch-norm constants ``a`` (scale) and ``b`` (offset)."""

    a: Dyadic
    b: Dyadic


@dataclass(frozen=True)
class RPReLUFormat:
    """Grids of the RPReLU shifts (the residual grid) and slopes."""

    shift: Dyadic
    slope: Dyadic


def binary_bn_format(precision: Precision, fan_in: int) -> BNFormat | None:
    """The BN constants after a binary conv with ``fan_in`` (``cin / groups * k * k``) terms.

    ``a`` on ``2**-bn_frac_bits`` with ``|A| < 2**(23 - ceil(log2(fan_in + 1)))``,
    ``b`` on the same grid with ``|B| < 2**21``; ``None`` in float mode.
    """
    if not precision.fixed:
        return None
    c = int(fan_in).bit_length()            # ceil(log2(fan_in + 1)): fan_in < 2**c
    if c > 22:
        raise ValueError(f"fan-in {fan_in} too large for a float32-exact batch norm")
    f = precision.bn_frac_bits
    return BNFormat(Dyadic(f, 2 ** (23 - c) - 1), Dyadic(f, 2 ** 21 - 1))


def stem_bn_format(precision: Precision) -> BNFormat | None:
    """The stem BN (on the residual-quantised conv output): ``a`` on ``2**-(24 - N)``,
    ``|A| < 2**(N-1)``; ``b`` on ``2**-(R + 24 - N)``, ``|B| < 2**23``; ``None`` in float mode."""
    if not precision.fixed:
        return None
    fa = 24 - precision.residual_bits
    return BNFormat(Dyadic(fa, 2 ** (precision.residual_bits - 1) - 1),
                    Dyadic(precision.residual_frac_bits + fa, 2 ** 23 - 1))


def rprelu_format(precision: Precision) -> RPReLUFormat | None:
    """RPReLU shifts on the residual grid (``|S| < 2**(N-1)``), slopes on
    ``2**-slope_frac_bits`` with ``|Q| <= 2**(24 - N)``; ``None`` in float mode."""
    if not precision.fixed:
        return None
    return RPReLUFormat(Dyadic(precision.residual_frac_bits, 2 ** (precision.residual_bits - 1) - 1),
                        Dyadic(precision.slope_frac_bits, 2 ** (24 - precision.residual_bits)))


_M = TypeVar("_M", bound=nn.Module)


@torch.no_grad()
def identity_slopes(model: _M) -> _M:
    """Set every RPReLU slope of ``model`` to 1 (identity) before training from scratch.

    One RPReLU follows every residual addition; PReLU's initial 0.25 shrinks the
    negative half of the stream 4x at each, so deep sign activations of a fresh
    network read +1 almost everywhere and it barely learns (``bnhw train
    nasbnn-cifar-smallest --epochs 2``: test 0.127 with 0.25, 0.541 with 1;
    docs/METHODS.md).  Returns ``model``.
    """
    for m in model.modules():
        if isinstance(m, RPReLU):
            m.prelu.weight.fill_(1.0)
    return model


class Freezable:
    """Eval-mode constants computed once (:meth:`freeze`) instead of on every forward pass.

    :func:`~bnhw.quant.model.baked_copy` freezes the copy it makes for export,
    so the traced graph holds the constants themselves (the same tensors the
    forward pass would compute) rather than the ops that compute them, which
    qonnx would otherwise fold one by one.  Switching to training mode drops
    them.
    """

    _frozen: tuple[Tensor, ...] | None = None

    def constants(self) -> tuple[Tensor, ...]:
        raise NotImplementedError

    @torch.no_grad()
    def freeze(self) -> None:
        self._frozen = tuple(t.detach().clone() for t in self.constants())

    def train(self, mode: bool = True):
        if mode:
            self._frozen = None
        return super().train(mode)  # type: ignore[misc]

    def _eval_constants(self) -> tuple[Tensor, ...]:
        return self._frozen if self._frozen is not None else self.constants()


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


def sign_thresholds(bias: Tensor, frac_bits: int, lo: int, hi: int) -> np.ndarray:
    """Integer thresholds of a :class:`LearnableSign` on grid inputs ``x = X 2**-frac_bits``.

    ``T[c]`` is the least integer ``X`` in ``[lo, hi + 1]`` with ``fl(X 2**-frac_bits
    - b[c]) >= 0`` in float32 (``hi + 1``: never), so the binariser outputs +1
    exactly when ``X >= T[c]`` for every ``X`` in ``[lo, hi]``.  Found by
    evaluating the float32 subtraction on the candidates around ``b 2**frac_bits``
    (the comparison is monotone in ``X``), not by float algebra.
    """
    b = bias.detach().float().cpu().numpy().reshape(-1)
    step = np.float32(2.0 ** -frac_bits)

    def plus(xint: np.ndarray) -> np.ndarray:     # the float32 op of the model and the export
        return (xint.astype(np.float32) * step - b) >= np.float32(0)

    guess = np.clip(np.ceil(b.astype(np.float64) * 2.0 ** frac_bits), lo, hi + 1).astype(np.int64)
    t = guess.copy()
    for _ in range(4):                       # settle the guess: T is +1, T - 1 is -1
        down = (t > lo) & plus(t - 1)
        t = np.where(down, t - 1, t)
        up = (t <= hi) & ~plus(t)
        t = np.where(up, t + 1, t)
    ok_t = (t > hi) | plus(np.minimum(t, hi))
    ok_below = (t <= lo) | ~plus(np.maximum(t - 1, lo))
    if not (np.all(ok_t) and np.all(ok_below)):
        raise ValueError("could not settle the sign thresholds")
    return t


def rprelu(x: Tensor, shift_in: Tensor, slope: Tensor, shift_out: Tensor,
           fmt: RPReLUFormat | None = None) -> Tensor:
    """``PReLU(x - shift_in; slope) + shift_out`` per channel (dim 1 of ``x``).

    The one implementation of the standalone :class:`RPReLU` and the
    supernet's.  With ``fmt`` (fixed mode) the three constants are first
    rounded onto their grids (:class:`RPReLUFormat`).
    """
    if fmt is not None:
        shift_in, slope, shift_out = rprelu_constants(shift_in, slope, shift_out, fmt)
    return F.prelu(x - shift_in, slope) + shift_out


def rprelu_constants(shift_in: Tensor, slope: Tensor, shift_out: Tensor,
                     fmt: RPReLUFormat) -> tuple[Tensor, Tensor, Tensor]:
    """The fixed-mode RPReLU constants (``shift_in``, ``slope``, ``shift_out``) on their grids."""
    return fmt.shift.quantize(shift_in), fmt.slope.quantize(slope), fmt.shift.quantize(shift_out)


class RPReLU(Freezable, nn.Module):
    """Learnable-bias PReLU (ReActNet): ``y = PReLU(x - b1) + b2``, all per channel.

    ``fmt`` (fixed mode): the constants are rounded onto dyadic grids in the
    forward pass (:func:`rprelu`, :func:`rprelu_format`).  A fresh model keeps
    PReLU's 0.25 (the seeded fresh weights that hardware estimates are made with);
    training from scratch starts the slopes at 1 instead (:func:`identity_slopes`).
    """

    def __init__(self, channels: int, init_slope: float = 0.25, fmt: RPReLUFormat | None = None):
        super().__init__()
        self.fmt = fmt
        self.shift_in = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.prelu = nn.PReLU(channels, init=init_slope)
        self.shift_out = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self._frozen is not None and not self.training:
            shift_in, slope, shift_out = self._frozen      # constants(): three tensors
            return rprelu(x, shift_in, slope, shift_out)
        return rprelu(x, self.shift_in, self.prelu.weight, self.shift_out, self.fmt)

    def constants(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(shift_in, slope, shift_out)`` as the forward pass uses them (on their grids in fixed mode)."""
        if self.fmt is None:
            return self.shift_in, self.prelu.weight, self.shift_out
        return rprelu_constants(self.shift_in, self.prelu.weight, self.shift_out, self.fmt)


def bn_affine(weight: Tensor, bias: Tensor, mean: Tensor, var: Tensor, eps: float,
              fmt: BNFormat | None = None) -> tuple[Tensor, Tensor]:
    """The folded batch-norm constants ``a = gamma / sqrt(var + eps)``, ``b = beta - mean * a``.

    With ``fmt`` (fixed mode) ``a`` is rounded onto its grid first, ``b`` is
    computed from the rounded ``a`` and rounded onto its own grid
    (straight-through gradients).
    """
    a = weight / torch.sqrt(var + eps)
    if fmt is None:
        return a, bias - mean * a
    a = fmt.a.quantize(a)
    return a, fmt.b.quantize(bias - mean * a)


def folded_bn(x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, var: Tensor, eps: float,
              fmt: BNFormat | None = None) -> Tensor:
    """Eval-mode batch norm as ``x * a + b`` with ``a``, ``b`` from :func:`bn_affine`,
    per channel (dim 1 of ``x``).

    The one place this is computed: the standalone model and the supernet both
    call it, so an extracted subnet reproduces the supernet bit for bit, and
    the exported graph (``Mul`` then ``Add`` with the same constants) matches
    PyTorch exactly.  It is also the affine form integer hardware implements.
    """
    return apply_affine(x, *bn_affine(weight, bias, mean, var, eps, fmt))


def apply_affine(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``x * a + b`` per channel (dim 1 of ``x``): a ``Mul`` and an ``Add`` in the export."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * a.view(shape) + b.view(shape)


def _quantized_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: Tensor, fmt: BNFormat) -> Tensor:
    """Training-mode fixed-point batch norm: the batch statistics folded into dyadic
    ``a``, ``b`` (:func:`folded_bn`, straight-through rounding); the running statistics
    are updated exactly as ``nn.BatchNorm`` does."""
    factor = 0.0
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    with torch.no_grad():     # the running-statistics update of a plain batch norm
        F.batch_norm(x.detach(), bn.running_mean, bn.running_var, None, None, True, factor, bn.eps)
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dims)
    var = x.var(dims, unbiased=False)
    return folded_bn(x, bn.weight, bn.bias, mean, var, bn.eps, fmt)


class FoldedBatchNorm2d(Freezable, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose eval-mode output is :func:`folded_bn` (two elementwise ops).

    In training mode (and during :func:`~bnhw.quant.model.recalibrate_bn`) it
    is a plain batch norm; with a ``fmt`` (fixed mode) the batch statistics
    are folded into dyadic constants instead (quantisation-aware training).
    """

    def __init__(self, num_features: int, *, fmt: BNFormat | None = None):
        super().__init__(num_features)
        self.fmt = fmt

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            if self.fmt is not None:
                return _quantized_batch_norm(self, x, self.fmt)
            return super().forward(x)
        return apply_affine(x, *self._eval_constants())

    def constants(self) -> tuple[Tensor, Tensor]:
        """The eval-mode constants ``(a, b)`` of :func:`bn_affine` (on their grids in fixed mode)."""
        assert self.running_mean is not None and self.running_var is not None  # track_running_stats=True
        return bn_affine(self.weight, self.bias, self.running_mean, self.running_var, self.eps, self.fmt)


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
    (see the module docstring for the bound).  In fixed mode the conv output
    is quantised to the residual format (:attr:`conv_quant`), the BN constants
    are dyadic (:func:`stem_bn_format`) and the BN output is quantised
    (:class:`ResidualQuant`).
    """

    def __init__(self, in_channels: int, channels: int, kernel: int, stride: int,
                 precision: Precision):
        super().__init__()
        self.input_quant = QuantIdentity(
            act_quant=fixed_point_act_quant(precision.stem_bits, precision.stem_bits - 1))
        self.conv = QuantConv2d(in_channels, channels, kernel, stride=stride, padding=kernel // 2,
                                bias=False,
                                weight_quant=fixed_point_weight_quant(precision.stem_bits))
        self.conv_quant = residual_quant(precision)
        self.bn = FoldedBatchNorm2d(channels, fmt=stem_bn_format(precision))
        self.out_quant = residual_quant(precision)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_quant(self.bn(self.conv_quant(self.conv(self.input_quant(x)))))


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
        self.bn1 = FoldedBatchNorm2d(in_channels,
                                     fmt=binary_bn_format(precision, in_channels // groups * kernel * kernel))
        self.shortcut1: nn.Module = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()
        self.q_sum1 = residual_quant(precision)
        self.act1 = RPReLU(in_channels, fmt=rprelu_format(precision))
        self.q_act1 = residual_quant(precision)

        self.sign2 = LearnableSign(in_channels)
        self.conv2 = BinaryConv2d(in_channels, out_channels, 1, weight_norm=weight_norm)
        self.bn2 = FoldedBatchNorm2d(out_channels, fmt=binary_bn_format(precision, in_channels))
        self.shortcut2 = ChannelShortcut(in_channels, out_channels)
        self.q_sum2 = residual_quant(precision)
        self.act2 = RPReLU(out_channels, fmt=rprelu_format(precision))
        self.q_act2 = residual_quant(precision)

    def forward(self, x: Tensor) -> Tensor:
        y = self.q_sum1(self.bn1(self.conv1(self.sign1(x))) + self.shortcut1(x))
        x = self.q_act1(self.act1(y))
        y = self.q_sum2(self.bn2(self.conv2(self.sign2(x))) + self.shortcut2(x))
        return self.q_act2(self.act2(y))


class FoldedBatchNorm1d(Freezable, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` on ``N x C`` whose eval-mode output is :func:`folded_bn` (float constants)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return super().forward(x)
        return apply_affine(x, *self._eval_constants())

    def constants(self) -> tuple[Tensor, Tensor]:
        """The eval-mode constants ``(a, b)`` of :func:`bn_affine`."""
        assert self.running_mean is not None and self.running_var is not None  # track_running_stats=True
        return bn_affine(self.weight, self.bias, self.running_mean, self.running_var, self.eps)


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
