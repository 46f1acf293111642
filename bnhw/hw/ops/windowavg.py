"""``WindowAvg``: the average of each ``k x k`` window of an ``SWG``'s (zero-padded) window stream with the
padding not counted: ``round_half_even(sum / counts[y, x])`` per channel, ``counts`` (parameter, ``(Ho, Wo)``)
the number of in-image taps of each output position (:func:`bnhw.quant.cellnet.avg_pool_counts`), exactly the
fixed-point average pool of a cell network."""

from __future__ import annotations

import numpy as np

from ..ir import round_half_even_div
from .base import register
from .window import WindowOp, windows


@register
class WindowAvg(WindowOp):
    name = "WindowAvg"
    function = "AccPool"
    notes = {"WindowAvg": "Pool_hls(AccPool) behind its SWG node: cycles C*k*k/PE * output pixels; the division "
                          "by the per-position tap count (a constant divider) is bnhw's and not in FINN's model; "
                          "no resource model (FINN's default 0)"}

    def execute(self, g, n, ins):
        s = windows(g, n, ins[0]).sum(axis=2)
        counts = np.asarray(n.params["counts"], dtype=np.int64)
        return [round_half_even_div(s, counts[:, :, None])]

    def value_range(self, g, n):
        """The window sum."""
        t = g.in_stream(n).dtype
        kk = int(n.attrs["k"]) ** 2
        return kk * t.min, kk * t.max
