"""``LabelSelect``: the index of the largest input (ties: the lowest index), ``k = 1``
(FINN ``LabelSelect_hls``)."""

from __future__ import annotations

import numpy as np

from ..finn_models import FinnOp, stream_dt
from .base import ChannelwiseOp, register


@register
class LabelSelect(ChannelwiseOp):
    name = "LabelSelect"
    follows_producer = True
    finn_name = "LabelSelect_hls"
    notes = {"LabelSelect": "LabelSelect_hls: cycles Labels/PE; no resource model"}

    def execute(self, g, n, ins):
        flat = ins[0].reshape(-1)
        return [np.array([[[int(np.argmax(flat))]]], dtype=np.int64)]

    def finn_ops(self, g, n):
        C = g.in_stream(n).channels
        return [FinnOp("LabelSelect_hls", {"Labels": C, "PE": n.pe, "K": 1,
                                           "inputDataType": stream_dt(g.in_stream(n)),
                                           "outputDataType": stream_dt(g.out_stream(n))})]
