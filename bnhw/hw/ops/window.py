"""What the window reductions share (:mod:`.windowmax`, :mod:`.windowavg`): they read the window stream of an
``SWG`` (``(Ho, Wo, k*k*C)``, entries ordered ``(ky, kx, c)``) and reduce each window to one value per channel,
FINN's ``Pool_hls`` behind its ``ConvolutionInputGenerator`` (the overlapping, padded pools of BNAS / BARS cells:
3 x 3, stride 1 or 2, padding 1).  Folding: PE channels per cycle (divisors of ``C``)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..finn_models import FinnOp, stream_dt
from ..ir import HwGraph, Node
from .base import ChannelwiseOp, divisors


def windows(g: HwGraph, n: Node, x: np.ndarray) -> np.ndarray:
    """The window stream ``(Ho, Wo, k*k*C)`` as ``(Ho, Wo, k*k, C)``."""
    Ho, Wo, C = g.out_stream(n).shape
    k = int(n.attrs["k"])
    return x.reshape(Ho, Wo, k * k, C)


class WindowOp(ChannelwiseOp):
    #: ``Pool_hls``'s Function attribute
    function: ClassVar[str] = ""
    finn_name = "Pool_hls"

    def legal_pe(self, g, n):
        return divisors(g.out_stream(n).channels)

    def finn_ops(self, g, n):
        ins, outs = g.in_stream(n), g.out_stream(n)
        Ho, Wo, C = outs.shape
        k = int(n.attrs["k"])
        return [FinnOp("Pool_hls", {"Channels": C, "PE": n.pe, "KernelSize": [k, k], "Function": self.function,
                                    "OutImgDims": [Ho, Wo], "InputDataType": stream_dt(ins),
                                    "OutputDataType": stream_dt(outs), "BatchSize": 1})]
