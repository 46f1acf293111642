"""``GroupedMVAU``: a grouped (not depthwise) convolution's matrix-vector unit (IR op
:mod:`bnhw.hw.ops.mvau` with ``groups > 1``)."""

from .base import IrUnit


class GroupedMVAU(IrUnit):
    ir_op = "MVAU"
    params = ("weights", "thresholds")
    why = ("FINN's MVAU is dense and its VVAU depthwise; a grouped convolution's block-diagonal weights have no "
           "FINN unit (modelled as an MVAU of MW/groups inputs computing one group at a time)")
