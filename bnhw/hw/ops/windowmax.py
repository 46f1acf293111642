"""``WindowMax``: the maximum of each ``k x k`` window of an ``SWG``'s window stream, per channel (an overlapping
max pool; its ``SWG`` pads with the input type's minimum, so padding never wins)."""

from __future__ import annotations

from .base import register
from .window import WindowOp, windows


@register
class WindowMax(WindowOp):
    name = "WindowMax"
    function = "MaxPool"
    notes = {"WindowMax": "Pool_hls(MaxPool) behind its SWG node: cycles C*k*k/PE * output pixels; no resource "
                          "model (FINN's default 0)"}

    def execute(self, g, n, ins):
        return [windows(g, n, ins[0]).max(axis=2)]
