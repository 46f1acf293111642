"""``WindowAvg``: the average of each window of an SWG's window stream with the padding not counted (IR op
:mod:`bnhw.hw.ops.windowavg`)."""

from .base import IrUnit


class WindowAvg(IrUnit):
    ir_op = "WindowAvg"
    params = ("counts",)
    why = ("round_half_even(window sum / in-image taps of the output position): FINN's Pool_hls sums or divides "
           "every window by the same K*K (the unit is modelled as Pool_hls AccPool)")
