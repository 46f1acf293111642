"""``Gather``: the channel gather ``out[..., c] = in[..., index[c]]`` (wiring: 0 cycles, no resources)."""

from __future__ import annotations

import numpy as np

from .base import HwOp, register


@register
class Gather(HwOp):
    name = "Gather"
    finn_name = "Gather"
    foldable = False
    notes = {"Gather": "bnhw channel gather: pure wiring of a stream, 0 cycles, 0 resources"}

    def execute(self, g, n, ins):
        return [ins[0][..., n.params["index"].astype(np.int64)]]

    def finn_op_type(self, g, n):
        return "Gather(wiring)"
