"""``Thresholding``: the MVAU's activation on its own, per channel (FINN ``Thresholding_rtl``):
``out = sum_i (x >= T[c, i])`` mapped through ``out_bias`` (:func:`~bnhw.hw.ir.threshold_out`)."""

from __future__ import annotations

import numpy as np

from ..finn_models import FINN_PLUS_VERSION, FinnOp, finn_dt, threshold_dt, vecs
from .base import ChannelwiseOp, finn_activation, finn_stream_dt, register
from .mvau import activation


@register
class Thresholding(ChannelwiseOp):
    name = "Thresholding"
    pe_words_out = True
    follows_producer = True
    finn_name = "Thresholding_rtl"
    notes = {"Thresholding": f"Thresholding_rtl (finn-plus {FINN_PLUS_VERSION}): cycles pixels*C/PE; per PE one "
                             "memory per output bit level mapped to the least-waste primitive (memutil); "
                             "LUT = LUTRAM only; threshold type after RoundAndClipThresholds"}

    def execute(self, g, n, ins):
        return [activation(n, ins[0])]

    def finn_ops(self, g, n):
        H, W, C = g.in_stream(n).shape
        idt = finn_stream_dt(g, n.inputs[0])
        t, act, odt = finn_activation(g, n, n.params["thresholds"])
        if idt != "BINARY":         # thresholds outside the input range change no output
            t = np.clip(t, finn_dt(idt).min, finn_dt(idt).max + 1)
        attrs = {"PE": n.pe, "NumChannels": C, "numSteps": int(t.shape[1]), "inputDataType": idt,
                 "weightDataType": threshold_dt(t, finn_dt(idt)).name if idt != "BINARY" else "UINT1",
                 "outputDataType": odt, "ActVal": act, "numInputVectors": vecs(H, W)}
        for key in ("depth_trigger_bram", "depth_trigger_uram", "uniform_thres"):
            if key in n.attrs:
                attrs[key] = int(n.attrs[key])
        return [FinnOp("Thresholding_rtl", attrs, thresholds=t, last=g.is_output(n.outputs[0]))]
