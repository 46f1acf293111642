"""``SWG``: the sliding window generator (FINN ``ConvolutionInputGenerator_rtl``, with an
``FMPadding_rtl`` in front when ``pad > 0``).

Input ``(H, W, C)`` -> ``(Ho, Wo, K*K*C)``, window elements ordered ``(ky, kx, c)``; ``pad`` pixels on
each side hold ``pad_value`` (0 for a zero-padded bipolar convolution: those taps add nothing),
``stride``, ``dilation``.  Folding: SIMD channels per cycle (divisors of C); ``pad_simd`` for the
padding unit, ``parallel_window`` (SIMD = C) for FINN's parallel-window mode.
"""

from __future__ import annotations

import numpy as np

from ..finn_models import FINN_PLUS_VERSION, FinnOp, swg_attrs
from ..ir import HwGraph, Node
from .base import HwOp, divisors, finn_stream_dt, register


def feeds_depthwise(g: HwGraph, n: Node) -> bool:
    """Whether the window generator feeds a depthwise MVAU (FINN's VVAU) or a WindowMax (FINN's ``Pool_hls``):
    both read FINN's depthwise window order, so FINN builds a depthwise SWG for them (as its ``InferPool``
    does; bnhw's WindowAvg unit reads the windows tap by tap)."""
    from .mvau import is_depthwise

    cons = g.consumers(n.outputs[0])
    return len(cons) == 1 and (is_depthwise(g, cons[0]) or cons[0].op == "WindowMax")


@register
class SWG(HwOp):
    name = "SWG"
    finn_name = "ConvolutionInputGenerator_rtl"
    folds_simd = True
    notes = {"SWG": f"ConvolutionInputGenerator_rtl (finn-plus {FINN_PLUS_VERSION}): impl style 'default' "
                    "unless parallel_window or 1x1 kernel; buffer-depth cycle and LUT (300 + "
                    "width*ceil(depth/38), ram_style distributed) models; pad > 0 adds an "
                    "FMPadding_rtl (cycles C/SIMD*Hp*Wp, no resource model)"}

    def execute(self, g, n, ins):
        (x,) = ins
        k, stride = int(n.attrs["k"]), int(n.attrs.get("stride", 1))
        pad, dil = int(n.attrs.get("pad", 0)), int(n.attrs.get("dilation", 1))
        pv = int(n.attrs.get("pad_value", 0))
        H, W, C = x.shape
        xp = np.full((H + 2 * pad, W + 2 * pad, C), pv, dtype=np.int64)
        xp[pad:pad + H, pad:pad + W] = x
        Ho, Wo, _ = g.out_stream(n).shape
        out = np.empty((Ho, Wo, k * k * C), dtype=np.int64)
        for ky in range(k):
            for kx in range(k):
                patch = xp[ky * dil: ky * dil + stride * (Ho - 1) + 1: stride,
                           kx * dil: kx * dil + stride * (Wo - 1) + 1: stride]
                out[:, :, (ky * k + kx) * C:(ky * k + kx + 1) * C] = patch
        return [out]

    def finn_folding(self, n):
        """FINN's ConvolutionInputGenerator has SIMD (and parallel_window), no PE; bnhw's ``pad_simd`` belongs
        to the FMPadding node FINN inserts under its own name."""
        d = {"SIMD": n.simd}
        if "parallel_window" in n.attrs:
            d["parallel_window"] = int(n.attrs["parallel_window"])
        return d

    def legal_simd(self, g, n):
        return divisors(g.in_stream(n).channels)

    def finn_ops(self, g, n):
        ins, outs = g.in_stream(n), g.out_stream(n)
        H, W, C = ins.shape
        pad = int(n.attrs.get("pad", 0))
        dt = finn_stream_dt(g, n.inputs[0])
        ops = []
        if pad > 0:
            ops.append(FinnOp("FMPadding_rtl", {"ImgDim": [H, W], "Padding": [pad, pad, pad, pad],
                                                "NumChannels": C, "SIMD": int(n.attrs.get("pad_simd", n.simd)),
                                                "inputDataType": dt, "numInputVectors": 1},
                              role="pad"))
        attrs = swg_attrs(C, (H + 2 * pad, W + 2 * pad), (outs.shape[0], outs.shape[1]), int(n.attrs["k"]),
                          int(n.attrs.get("stride", 1)), int(n.attrs.get("dilation", 1)), n.simd, dt,
                          int(feeds_depthwise(g, n)), n.attrs.get("ram_style", "distributed"),
                          int(n.attrs.get("parallel_window", 0)))
        ops.append(FinnOp("ConvolutionInputGenerator_rtl", attrs))
        return ops
