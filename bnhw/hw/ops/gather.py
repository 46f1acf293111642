"""``Gather``: the channel gather ``out[..., c] = in[..., index[c]]`` (wiring: 0 cycles, no resources)."""

from __future__ import annotations

import math

import numpy as np

from .base import HwOp, divisors, register


@register
class Gather(HwOp):
    name = "Gather"
    finn_name = "Gather"
    foldable = False
    notes = {"Gather": "bnhw channel gather: pure wiring of a stream, 0 cycles, 0 resources"}

    def execute(self, g, n, ins):
        return [ins[0][..., n.params["index"].astype(np.int64)]]

    def legal_pe(self, g, n):
        """As wide as the words it passes on (FINN's graph gives its unit its producer's width): divisors of
        both its input's and its output's channels."""
        return divisors(math.gcd(g.in_stream(n).channels, g.out_stream(n).channels))

    def finn_op_type(self, g, n):
        return "Gather(wiring)"
