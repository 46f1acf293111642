"""``GlobalAvgPool``: the per-channel mean, rounded half to even (IR op :mod:`bnhw.hw.ops.globalavgpool`)."""

from .base import IrUnit


class GlobalAvgPool(IrUnit):
    ir_op = "GlobalAvgPool"
    why = ("FINN's GlobalAccPool sums; the division by H*W rounded half to even, which keeps the network's "
           "16-bit type, has no FINN unit (the unit is modelled as GlobalAccPool)")
