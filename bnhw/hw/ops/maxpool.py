"""``MaxPool``: ``k x k`` max pooling with stride ``k`` (on bipolar data an OR)."""

from __future__ import annotations

from ..finn_models import FINN_PLUS_VERSION
from .base import register
from .pool import PoolOp, pool_windows


@register
class MaxPool(PoolOp):
    name = "MaxPool"
    finn_name = "StreamingMaxPool_hls"
    function = "MaxPool"
    notes = {"MaxPool": f"finn-plus {FINN_PLUS_VERSION} has no StreamingMaxPool: InferPool lowers MaxPool to a "
                        "depthwise ConvolutionInputGenerator_rtl (SIMD = PE) + Pool_hls(MaxPool); cycles = "
                        "the slower of the two, resources = the SWG's (Pool_hls has no model)"}

    def execute(self, g, n, ins):
        return [pool_windows(ins[0], int(n.attrs["k"])).max(axis=(1, 3))]
