"""``AddRequant``: ``acc = x*A[c] + B[c] (+ s << shortcut_shift)``, ``out = clip(round_half_even(acc /
2**shift))`` to the output type: the fixed-point batch norm, the Bi-Real shortcut add and the
requantiser in one unit (``s``: the optional second input).  A bnhw unit (FINN has none), folded like
FINN's ElementwiseBinary: PE channels per cycle."""

from __future__ import annotations

import numpy as np

from ..finn_models import bits_of, mult_luts
from ..ir import per_channel, round_half_even_shift
from .base import register
from .elementwise import ElementwiseOp


@register
class AddRequant(ElementwiseOp):
    name = "AddRequant"
    finn_name = "AddRequant"
    notes = {"AddRequant": "bnhw unit (not a FINN op), folded like FINN's ElementwiseBinary: "
                           "cycles pixels*C/PE; LUTs 100 + PE*(multiplier + adders + round/clip "
                           "bits); A/B params PE*bits wide, C/PE deep, LUTRAM if <= 128 deep else "
                           "BRAM18"}

    def execute(self, g, n, ins):
        x = ins[0]
        acc = x * n.params["A"].astype(np.int64) + n.params["B"].astype(np.int64)
        if len(ins) > 1:
            acc = acc + (ins[1] << int(n.attrs.get("shortcut_shift", 0)))
        out = round_half_even_shift(acc, int(n.attrs["shift"]))
        t = g.out_stream(n).dtype
        return [np.clip(out, t.min, t.max)]

    def value_range(self, g, n):
        """``acc`` over the input types (scaled by ``2**-shift`` when ``shift < 0``)."""
        si = g.in_stream(n)
        A, B = per_channel(n, "A", si.channels), per_channel(n, "B", si.channels)
        xlo, xhi = si.dtype.min, si.dtype.max
        lo = np.minimum(A * xlo, A * xhi) + B
        hi = np.maximum(A * xlo, A * xhi) + B
        if len(n.inputs) > 1:
            ts, ss = g.in_stream(n, 1).dtype, int(n.attrs.get("shortcut_shift", 0))
            lo, hi = lo + (ts.min << ss), hi + (ts.max << ss)
        shift = int(n.attrs["shift"])
        lo_, hi_ = int(lo.min()), int(hi.max())
        return (lo_ << -shift, hi_ << -shift) if shift < 0 else (lo_, hi_)

    def datapath(self, g, n):
        ins, outs = g.in_stream(n), g.out_stream(n)
        xb = 1 if ins.dtype.is_bipolar else ins.dtype.bits
        ab, bb = bits_of(n.params.get("A")), bits_of(n.params.get("B"))
        accb = xb + ab + 1
        if len(n.inputs) > 1:
            s = g.in_stream(n, 1)
            accb = max(accb, (1 if s.dtype.is_bipolar else s.dtype.bits)
                       + int(n.attrs.get("shortcut_shift", 0))) + 1
        dp = mult_luts(xb, max(ab, 1)) + accb * (2 if len(n.inputs) > 1 else 1) + accb + outs.dtype.bits
        return dp, ab + bb
