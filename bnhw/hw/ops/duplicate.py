"""``Duplicate``: one input stream to several identical outputs (FINN ``DuplicateStreams_hls``)."""

from __future__ import annotations

from ..finn_models import FinnOp, stream_dt, vecs
from .base import ChannelwiseOp, register


@register
class Duplicate(ChannelwiseOp):
    name = "Duplicate"
    pe_words_out = True
    follows_producer = True
    finn_name = "DuplicateStreams_hls"
    foldable = False            # not in the folding config: it runs at its consumers' width
    notes = {"Duplicate": "DuplicateStreams_hls: cycles pixels*C/PE; no resource model"}

    def execute(self, g, n, ins):
        return [ins[0].copy() for _ in n.outputs]

    def finn_ops(self, g, n):
        H, W, C = g.in_stream(n).shape
        return [FinnOp("DuplicateStreams_hls", {"NumChannels": C, "PE": n.pe, "NumOutputStreams": len(n.outputs),
                                                "inputDataType": stream_dt(g.in_stream(n)),
                                                "numInputVectors": vecs(H, W)})]
