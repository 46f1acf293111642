"""What the ``k x k``, stride-``k`` pooling ops share (:mod:`.maxpool`, :mod:`.avgpoolsum`): finn-plus
1.6.1 has no StreamingMaxPool, so ``InferPool`` lowers a pool to a depthwise
``ConvolutionInputGenerator_rtl`` (SIMD = PE) + ``Pool_hls``; cycles are the slower of the two, the
resources the window generator's (``Pool_hls`` has no model)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..finn_models import FinnOp, stream_dt, swg_attrs
from .base import ChannelwiseOp


def pool_windows(x: np.ndarray, k: int) -> np.ndarray:
    """``(H, W, C)`` as ``(Ho, k, Wo, k, C)`` windows (a remainder row / column is dropped)."""
    H, W, C = x.shape
    Ho, Wo = H // k, W // k
    return x[:Ho * k, :Wo * k].reshape(Ho, k, Wo, k, C)


class PoolOp(ChannelwiseOp):
    #: ``Pool_hls``'s Function attribute
    function: ClassVar[str] = ""
    finn_name = "Pool_hls"

    def finn_ops(self, g, n):
        ins, outs = g.in_stream(n), g.out_stream(n)
        H, W, C = ins.shape
        k = int(n.attrs["k"])
        Ho, Wo = outs.shape[0], outs.shape[1]
        idt = stream_dt(ins)
        swg = swg_attrs(C, (H, W), (Ho, Wo), k, k, 1, n.pe, idt, 1, n.attrs.get("ram_style", "distributed"), 0)
        odt = idt if self.function == "MaxPool" else stream_dt(outs)
        pool = {"Channels": C, "PE": n.pe, "KernelSize": [k, k], "Function": self.function,
                "OutImgDims": [Ho, Wo], "InputDataType": idt, "OutputDataType": odt, "BatchSize": 1}
        return [FinnOp("ConvolutionInputGenerator_rtl", swg, role="swg"), FinnOp("Pool_hls", pool)]
