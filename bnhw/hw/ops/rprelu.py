"""``RPReLU``: ``y = x - S_in[c]``; ``y = y << frac`` if ``y >= 0`` else ``y * slope[c]``;
``out = clip(round_half_even((y + S_out[c] << frac) / 2**frac))``.  A bnhw unit, modelled as
:mod:`.addrequant`."""

from __future__ import annotations

import numpy as np

from ..finn_models import bits_of, mult_luts
from ..ir import per_channel, round_half_even_shift
from .base import register
from .elementwise import ElementwiseOp


@register
class RPReLU(ElementwiseOp):
    name = "RPReLU"
    pe_words_out = True
    follows_producer = True
    finn_name = "RPReLU"
    notes = {"RPReLU": "bnhw unit, same model as AddRequant (subtract, slope multiplier, shift/"
                       "add, round/clip; S_in/slope/S_out parameters)"}

    def execute(self, g, n, ins):
        frac = int(n.attrs["frac"])
        y = ins[0] - n.params["S_in"].astype(np.int64)
        y = np.where(y >= 0, y << frac, y * n.params["slope"].astype(np.int64))
        y = y + (n.params["S_out"].astype(np.int64) << frac)
        t = g.out_stream(n).dtype
        return [np.clip(round_half_even_shift(y, frac), t.min, t.max)]

    def value_range(self, g, n):
        """``y + S_out << frac`` over the input type."""
        si = g.in_stream(n)
        C, frac = si.channels, int(n.attrs["frac"])
        s_in, sl, s_out = (per_channel(n, k, C) for k in ("S_in", "slope", "S_out"))
        ylo, yhi = si.dtype.min - s_in, si.dtype.max - s_in
        cands = [np.maximum(ylo, 0) << frac, np.maximum(yhi, 0) << frac,
                 np.minimum(ylo, 0) * sl, np.minimum(yhi, 0) * sl, ylo, yhi]
        lo = np.min(cands, axis=0) + np.minimum(s_out << frac, 0)
        hi = np.max(cands, axis=0) + np.maximum(s_out << frac, 0)
        return int(lo.min()), int(hi.max())

    def datapath(self, g, n):
        ins, outs = g.in_stream(n), g.out_stream(n)
        xb = 1 if ins.dtype.is_bipolar else ins.dtype.bits
        frac = int(n.attrs.get("frac", 0))
        sib, slb, sob = (bits_of(n.params.get(k)) for k in ("S_in", "slope", "S_out"))
        yb = max(xb, sib) + 1
        accb = yb + max(slb, frac) + 1
        dp = yb + mult_luts(yb, max(slb, 1)) + accb + accb + outs.dtype.bits
        return dp, sib + slb + sob
