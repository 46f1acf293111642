"""What bnhw's elementwise units share (:mod:`.addrequant`, :mod:`.rprelu`): FINN has no such op; they are
folded like FINN's ElementwiseBinary (PE channels per cycle) and costed by
:func:`~bnhw.hw.finn_models.elementwise_resources` from their datapath width and parameter bits."""

from __future__ import annotations

from ..finn_models import Resources, elementwise_resources
from ..ir import HwGraph, Node
from .base import ChannelwiseOp


class ElementwiseOp(ChannelwiseOp):
    def cycles(self, g: HwGraph, n: Node) -> int:
        s = g.out_stream(n)
        return int(s.pixels * (s.channels // n.pe))

    def datapath(self, g: HwGraph, n: Node) -> tuple[int, int]:
        """(LUTs of one PE's datapath, bits of one channel's parameters)."""
        raise NotImplementedError(self.name)

    def resources(self, g: HwGraph, n: Node) -> Resources:
        luts, param_bits = self.datapath(g, n)
        return elementwise_resources(g.in_stream(n).channels, n.pe, luts, param_bits,
                                     n.attrs.get("ram_style", "auto"))
