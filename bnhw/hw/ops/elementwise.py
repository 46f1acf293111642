"""What bnhw's elementwise units share (:mod:`.addrequant`, :mod:`.rprelu`): FINN has no such op; they are
folded like FINN's ElementwiseBinary (PE channels per cycle) and costed by
:func:`~bnhw.hw.finn_models.elementwise_resources` from their datapath width and parameter bits."""

from __future__ import annotations

from ..finn_models import Resources, dsp48_mults, elementwise_resources, mult_luts
from ..ir import HwGraph, Node
from .base import ChannelwiseOp


class ElementwiseOp(ChannelwiseOp):
    def cycles(self, g: HwGraph, n: Node) -> int:
        s = g.out_stream(n)
        return int(s.pixels * (s.channels // n.pe))

    def datapath(self, g: HwGraph, n: Node) -> tuple[int, int]:
        """(LUTs of one PE's datapath, its :meth:`multiplier`'s included as LUTs (FINN-R's LUT multiplier term),
        bits of one channel's parameters); with ``mul_dsp`` :meth:`resources` moves the multiplier to DSP slices."""
        raise NotImplementedError(self.name)

    def resources(self, g: HwGraph, n: Node) -> Resources:
        luts, param_bits = self.datapath(g, n)
        mul, dsp = self.multiplier(g, n), 0
        if mul is not None and int(n.attrs.get("mul_dsp", 0)):
            luts, dsp = luts - mult_luts(*mul), dsp48_mults(*mul)
        return elementwise_resources(g.in_stream(n).channels, n.pe, luts, param_bits,
                                     n.attrs.get("ram_style", "auto"), dsp)
