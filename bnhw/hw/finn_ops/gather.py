"""``Gather``: a channel gather (the shortcut of a channel-doubling block; IR op :mod:`bnhw.hw.ops.gather`)."""

from .base import IrUnit


class Gather(IrUnit):
    ir_op = "Gather"
    params = ("index",)
    why = "out[c] = in[index[c]] on a stream (wiring): FINN has no channel gather / repeat unit"
