"""Brevitas quantiser definitions used by every bnhw network.

All quantisers here have *constant* scales (no runtime statistics and no
learned scales), so a network in eval mode is a pure function of its weights
and the exported QONNX graph carries exactly the same constants:

* :class:`BinaryActQuant` -- activations to {-1, +1} (``BipolarQuant`` in
  QONNX, scale 1).  ``sign(0) = +1``, as Brevitas' ``binary_sign`` and QONNX's
  ``BipolarQuant`` both define it.
* :class:`BinaryWeightQuant` -- weights to {-1, +1} (``BipolarQuant``, scale
  1, straight-through gradient); the batch norm that follows every binary
  conv absorbs any scaling.
* :func:`fixed_point_act_quant` -- signed fixed point with a given total bit
  width and a constant power-of-two scale (``Quant`` in QONNX, narrow range
  off, round half to even).  Used for the network input and, in
  ``residual="fixed"`` mode, for the real-valued path.
* :func:`fixed_point_weight_quant` -- signed narrow-range fixed-point weights
  whose power-of-two scale is the smallest one that covers ``max|W|``
  (``Quant`` in QONNX).  A deterministic function of the weights, used for
  the stem and (in fixed mode) the classifier.
"""

from __future__ import annotations

from brevitas.core.function_wrapper import TensorClampSte
from brevitas.inject.enum import RestrictValueType, ScalingImplType, ScalingPerOutputType, StatsOp
from brevitas.quant.base import IntQuant
from brevitas.quant.binary import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst
from brevitas.quant.fixed_point import Int8WeightPerTensorFixedPoint
from brevitas.quant.solver import ActQuantSolver

__all__ = [
    "BinaryActQuant",
    "BinaryWeightQuant",
    "FixedPointActConst",
    "XnorWeightQuant",
    "fixed_point_act_quant",
    "fixed_point_weight_quant",
]


class BinaryActQuant(SignedBinaryActPerTensorConst):
    """Activations to {-1, +1} with constant scale 1 (QONNX ``BipolarQuant``)."""

    min_val = -1.0
    max_val = 1.0


class BinaryWeightQuant(SignedBinaryWeightPerTensorConst):
    """Weights to {-1, +1} with constant scale 1 (QONNX ``BipolarQuant``).

    Brevitas' default clamps the latent weights *in place*; here the clamp
    is out of place with a straight-through gradient, so a forward pass never
    modifies the parameters (checkpoints and weight sharing stay faithful).
    """

    tensor_clamp_impl = TensorClampSte
    scaling_const = 1.0


class XnorWeightQuant(SignedBinaryWeightPerTensorConst):
    """XNOR-Net weights (Rastegari et al.; BNAS v2 Eq. 3): ``beta_o * sign(W_o)`` with ``beta_o =
    mean(|W_o|)`` per output channel, recomputed from the latent weights at every forward pass.

    Exported as QONNX ``BipolarQuant`` with a per-channel scale (the binary weights times beta).
    The clamp is out of place with a straight-through gradient, as in :class:`BinaryWeightQuant`.
    """

    scaling_impl_type = ScalingImplType.STATS
    scaling_stats_op = StatsOp.AVE
    scaling_per_output_channel = True
    tensor_clamp_impl = TensorClampSte


class FixedPointActConst(IntQuant, ActQuantSolver):
    """Signed fixed point, constant power-of-two scale.

    The representable values are ``k * 2**-frac_bits`` for integers
    ``-2**(bits-1) <= k < 2**(bits-1)``.  Brevitas derives the scale as
    ``max_val / 2**(bits-1)``; :func:`fixed_point_act_quant` sets ``max_val``
    to ``2**(bits-1-frac_bits)`` so that the scale is exactly ``2**-frac_bits``.
    """

    scaling_impl_type = ScalingImplType.CONST
    restrict_scaling_type = RestrictValueType.POWER_OF_TWO
    scaling_per_output_type = ScalingPerOutputType.TENSOR


def fixed_point_act_quant(bits: int, frac_bits: int) -> type[FixedPointActConst]:
    """A signed ``bits``-bit fixed-point activation quantiser with scale ``2**-frac_bits``."""
    max_val = float(2.0 ** (bits - 1 - frac_bits))
    return FixedPointActConst.let(bit_width=bits, max_val=max_val, min_val=-max_val)


def fixed_point_weight_quant(bits: int) -> type[Int8WeightPerTensorFixedPoint]:
    """A signed narrow-range ``bits``-bit weight quantiser with a power-of-two scale from ``max|W|``."""
    return Int8WeightPerTensorFixedPoint.let(bit_width=bits)
