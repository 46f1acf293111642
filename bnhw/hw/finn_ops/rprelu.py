"""``RPReLU``: ReActNet's shifted PReLU in fixed point (IR op :mod:`bnhw.hw.ops.rprelu`)."""

from .base import IrUnit


class RPReLU(IrUnit):
    ir_op = "RPReLU"
    params = ("S_in", "slope", "S_out")
    why = "a per-channel shift, slope on the negative side and shift back: FINN has no PReLU unit"
