"""``GlobalAvgPool``: per channel ``round_half_even(sum / (H*W))`` (FINN ``GlobalAccPool_hls`` sums;
the division is bnhw's, exact in integers)."""

from __future__ import annotations

from ..finn_models import FinnOp, stream_dt
from ..ir import round_half_even_div
from .base import ChannelwiseOp, register


@register
class GlobalAvgPool(ChannelwiseOp):
    name = "GlobalAvgPool"
    follows_producer = True
    finn_name = "GlobalAccPool_hls"
    notes = {"GlobalAvgPool": "GlobalAccPool_hls: cycles pixels*C/PE + C/PE; no resource model; "
                              "the division by H*W is folded downstream"}

    def execute(self, g, n, ins):
        x = ins[0]
        s = x.sum(axis=(0, 1), keepdims=True)
        return [round_half_even_div(s, x.shape[0] * x.shape[1])]

    def finn_ops(self, g, n):
        H, W, C = g.in_stream(n).shape
        return [FinnOp("GlobalAccPool_hls", {"NumChannels": C, "PE": n.pe, "inputDataType": stream_dt(g.in_stream(n)),
                                             "numInputVectors": [1, H, W]})]
