"""``Concat``: the channel concatenation of its input streams, ``out[..., :] = in_0 | in_1 | ...`` per pixel (FINN
``StreamingConcat_hls``: the cell output of a BNAS / BARS cell, the two halves of a factorised reduce).  Folding:
PE channels per cycle (FINN's SIMD), a divisor of every input's channels."""

from __future__ import annotations

import math
from functools import reduce

import numpy as np

from ..finn_models import FinnOp, stream_dt
from .base import HwOp, divisors, register


@register
class Concat(HwOp):
    name = "Concat"
    finn_name = "StreamingConcat_hls"
    notes = {"Concat": "StreamingConcat_hls: cycles pixels*sum(C_i)/PE (FINN's get_exp_cycles with SIMD = PE); "
                       "no resource model (a multiplexer: FINN's default 0)"}

    def execute(self, g, n, ins):
        return [np.concatenate(ins, axis=-1)]

    def legal_pe(self, g, n):
        return divisors(reduce(math.gcd, (g.streams[s].channels for s in n.inputs)))

    def finn_ops(self, g, n):
        so = g.out_stream(n)
        chans = [g.streams[s].channels for s in n.inputs]
        return [FinnOp("StreamingConcat_hls", {"SIMD": n.pe, "ChannelsPerStream": chans,
                                               "inputDataTypes": [stream_dt(g.streams[s]) for s in n.inputs],
                                               "numInputVectors": [1, so.shape[0], so.shape[1]]})]

    def finn_folding(self, n):
        return {"SIMD": n.pe}
