"""``AddRequant``: the fixed-point batch norm, the Bi-Real shortcut add and the requantiser in one unit
(IR op :mod:`bnhw.hw.ops.addrequant`); behind an XNOR convolution FINN pads with -1, it also adds back the
padding correction of each output position (parameter ``border``)."""

from .base import IrUnit


class AddRequant(IrUnit):
    ir_op = "AddRequant"
    params = ("A", "B", "border")
    why = ("x*A + B (+ shortcut << s), round half to even, clip: FINN's ElementwiseAdd / Requant round "
           "differently and would need three units and two float scales for one fixed-point step")
