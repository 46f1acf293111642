"""``AvgPoolSum``: the ``k x k`` window *sum* with stride ``k`` (the division by ``k*k`` is folded into
the consumer's scale)."""

from __future__ import annotations

from .base import register
from .pool import PoolOp, pool_windows


@register
class AvgPoolSum(PoolOp):
    name = "AvgPoolSum"
    finn_name = "Pool_hls"
    function = "AccPool"
    notes = {"AvgPoolSum": "as MaxPool with Pool_hls Function AccPool (window sum)"}

    def execute(self, g, n, ins):
        return [pool_windows(ins[0], int(n.attrs["k"])).sum(axis=(1, 3))]
