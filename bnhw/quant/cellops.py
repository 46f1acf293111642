"""The operations of the BNAS v2 / BARS cell search space (BNAS v2 Table 3), as Brevitas modules.

Every operation maps a ``C``-channel feature map to a ``C``-channel one, with
``stride`` 1 (normal cell) or 2 (reduction cell edges from the cell inputs):

===================  ====================================================================
``zeroise``          all zeros (BNAS keeps it in the final cell, Sec. 4.1.3)
``max_pool_3x3``     3x3 max pooling, padding 1
``avg_pool_3x3``     3x3 average pooling, padding 1, padding not counted
``bin_conv_3x3``     binary conv: sign -> XNOR-Net conv (Eq. 3) -> BN
``bin_conv_5x5``     the same, 5x5
``bin_dil_conv_3x3`` binary dilated conv (dilation 2, receptive field 5x5)
``bin_dil_conv_5x5`` binary dilated conv (dilation 2, receptive field 9x9)
``bin_sep_conv_3x3`` opt-in (paper's ablation): binary depthwise 3x3 then binary pointwise 1x1
``bin_sep_conv_5x5`` opt-in: the same, 5x5
===================  ====================================================================

A binary conv is ``BN(beta * (sign(W) * sign(x)))``: the activation is binarised
by ``sign`` (QONNX ``BipolarQuant``, ``x >= 0 -> +1``), the weights by
:class:`~bnhw.quant.binarizers.XnorWeightQuant` (``beta`` = per-channel mean of
``|W|``).  XNOR-Net's activation scaling ``K`` is left out, as most XNOR-Net
implementations do: the following batch norm rescales per channel.  The pools
act on the real-valued cell inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from brevitas.nn import QuantConv2d, QuantIdentity
from torch import Tensor, nn

from ..errors import BnhwError
from .binarizers import BinaryActQuant, XnorWeightQuant

__all__ = ["CELL_OPS", "SEP_OPS", "ALL_OPS", "ZEROISE", "OpGeometry", "op_geometry", "make_op", "BinConvOp",
           "BinSepConvOp", "Zeroise", "is_parametric"]

from ..spec.cells import ALL_OPS, CELL_OPS, SEP_OPS, ZEROISE  # the op names are spec facts


class OpGeometry:
    """What an operation is, for builders and estimators: ``kind`` in zero / max_pool / avg_pool / conv /
    sep_conv, ``kernel``, ``dilation``."""

    __slots__ = ("kind", "kernel", "dilation")

    def __init__(self, kind: str, kernel: int = 0, dilation: int = 1):
        self.kind, self.kernel, self.dilation = kind, kernel, dilation

    @property
    def padding(self) -> int:
        return self.dilation * (self.kernel // 2)


_GEOMETRY = {
    "zeroise": OpGeometry("zero"),
    "max_pool_3x3": OpGeometry("max_pool", 3),
    "avg_pool_3x3": OpGeometry("avg_pool", 3),
    "bin_conv_3x3": OpGeometry("conv", 3),
    "bin_conv_5x5": OpGeometry("conv", 5),
    "bin_dil_conv_3x3": OpGeometry("conv", 3, 2),
    "bin_dil_conv_5x5": OpGeometry("conv", 5, 2),
    "bin_sep_conv_3x3": OpGeometry("sep_conv", 3),
    "bin_sep_conv_5x5": OpGeometry("sep_conv", 5),
}


def op_geometry(name: str) -> OpGeometry:
    try:
        return _GEOMETRY[name]
    except KeyError:
        raise BnhwError(f"unknown cell operation {name!r}; choose from {', '.join(ALL_OPS)}") from None


def is_parametric(name: str) -> bool:
    """Whether the operation has learnable weights (a binary conv)."""
    return op_geometry(name).kind in ("conv", "sep_conv")


class Zeroise(nn.Module):
    """All zeros, with the output size of a stride-``stride`` op."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x * 0.0
        return x[:, :, ::self.stride, ::self.stride] * 0.0


class BinConvOp(nn.Module):
    """``BN(XNOR-conv(sign(x)))``: C_in -> C_out, k x k, dilation, stride, same padding."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1,
                 affine: bool = True):
        super().__init__()
        self.sign = QuantIdentity(act_quant=BinaryActQuant)
        self.conv = QuantConv2d(c_in, c_out, kernel, stride=stride, padding=dilation * (kernel // 2),
                                dilation=dilation, groups=groups, bias=False, weight_quant=XnorWeightQuant)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(self.sign(x)))


class BinSepConvOp(nn.Module):
    """Binary separable conv: a binary depthwise k x k then a binary pointwise 1 x 1 (nested binarisation,
    BNAS v2 Eq. 4), each with its own sign and BN."""

    def __init__(self, c: int, kernel: int, stride: int = 1, affine: bool = True):
        super().__init__()
        self.depthwise = BinConvOp(c, c, kernel, stride, groups=c, affine=affine)
        self.pointwise = BinConvOp(c, c, 1, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


def make_op(name: str, channels: int, stride: int, *, affine: bool = True) -> nn.Module:
    """The module of operation ``name`` on ``channels`` channels (``affine=False``: BN without learnable
    scale / shift, as DARTS does during the search)."""
    g = op_geometry(name)
    if g.kind == "zero":
        return Zeroise(stride)
    if g.kind == "max_pool":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if g.kind == "avg_pool":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if g.kind == "conv":
        return BinConvOp(channels, channels, g.kernel, stride, g.dilation, affine=affine)
    return BinSepConvOp(channels, g.kernel, stride, affine=affine)


OpFactory = Callable[[str, int, int], nn.Module]


def _self_check() -> None:  # pragma: no cover - a quick shape check when run as a script
    x = torch.randn(2, 8, 16, 16)
    for name in ALL_OPS:
        for stride in (1, 2):
            y = make_op(name, 8, stride)(x)
            assert y.shape == (2, 8, 16 // stride, 16 // stride), (name, stride, y.shape)


if __name__ == "__main__":  # pragma: no cover
    _self_check()
    print("ok")
