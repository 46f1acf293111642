"""``AddRequant``: ``acc = x*A[c] + B[c] (+ s << shortcut_shift)``, ``out = clip(round_half_even(acc /
2**shift))`` to the output type: the fixed-point batch norm, the Bi-Real shortcut add and the
requantiser in one unit (``s``: the optional second input).  A bnhw unit (FINN has none), folded like
FINN's ElementwiseBinary: PE channels per cycle.

Behind an XNOR MVAU that FINN feeds with -1 padding (:func:`~.base.border_corrected`) it also adds the padding
correction of its output position to ``x`` (:func:`~.base.padding_correction`): a unit graph carries the table
as parameter ``border``; its cost is a second parameter memory (the table) and the position counters."""

from __future__ import annotations

import numpy as np

from ..finn_models import Resources, bits_of, elementwise_resources, mult_luts
from ..ir import per_channel, round_half_even_shift
from .base import padding_correction, register
from .elementwise import ElementwiseOp


def bias_map(n) -> np.ndarray:
    """``B`` per channel, or per output position where ``B`` is a table ``(row class, column class, channel)`` with
    ``border_rows`` / ``border_cols`` (a unit that folded a padding correction into its bias)."""
    b = np.asarray(n.params["B"], dtype=np.int64)
    if b.ndim == 3:
        return b[list(n.attrs["border_rows"])][:, list(n.attrs["border_cols"])]
    return b


@register
class AddRequant(ElementwiseOp):
    name = "AddRequant"
    pe_words_out = True
    follows_producer = True
    finn_name = "AddRequant"
    notes = {"AddRequant": "bnhw unit (not a FINN op), folded like FINN's ElementwiseBinary: "
                           "cycles pixels*C/PE; LUTs 100 + PE*(multiplier + adders + round/clip "
                           "bits); A/B params PE*bits wide, C/PE deep, LUTRAM if <= 128 deep else "
                           "BRAM18; with mul_dsp the multiplier in DSP48 slices (HLS BIND_OP impl=dsp) "
                           "instead of LUTs"}

    def execute(self, g, n, ins):
        x = ins[0]
        corr = padding_correction(g, n) if "border" in n.params else None
        if corr is not None:                     # FINN's -1 padding taken back, per output position
            rows, cols, table = corr
            x = x + table[rows][:, cols]
        acc = x * n.params["A"].astype(np.int64) + bias_map(n)
        if len(ins) > 1:
            acc = acc + (ins[1] << int(n.attrs.get("shortcut_shift", 0)))
        out = round_half_even_shift(acc, int(n.attrs["shift"]))
        t = g.out_stream(n).dtype
        return [np.clip(out, t.min, t.max)]

    def value_range(self, g, n):
        """``acc`` over the input types (scaled by ``2**-shift`` when ``shift < 0``)."""
        si = g.in_stream(n)
        A = per_channel(n, "A", si.channels)
        Bs = np.asarray(n.params["B"], dtype=np.int64).reshape(-1, si.channels) if np.ndim(n.params["B"]) == 3 \
            else per_channel(n, "B", si.channels)[None]
        B = Bs.min(axis=0)
        xlo, xhi = si.dtype.min, si.dtype.max
        if "border" in n.params:
            table = np.asarray(n.params["border"], dtype=np.int64).reshape(-1, si.channels)
            xlo, xhi = xlo + table.min(axis=0), xhi + table.max(axis=0)
        lo = np.minimum(A * xlo, A * xhi) + B
        hi = np.maximum(A * xlo, A * xhi) + Bs.max(axis=0)
        if len(n.inputs) > 1:
            ts, ss = g.in_stream(n, 1).dtype, int(n.attrs.get("shortcut_shift", 0))
            lo, hi = lo + (ts.min << ss), hi + (ts.max << ss)
        shift = int(n.attrs["shift"])
        lo_, hi_ = int(lo.min()), int(hi.max())
        return (lo_ << -shift, hi_ << -shift) if shift < 0 else (lo_, hi_)

    def multiplier(self, g, n):
        """``x * A[c]``: the input's bits by the scale's."""
        ins = g.in_stream(n)
        return (1 if ins.dtype.is_bipolar else ins.dtype.bits), max(bits_of(n.params.get("A")), 1)

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

    def resources(self, g, n):
        """The elementwise model, plus for a padding correction its table (as the B parameters, one entry per
        position class and channel, in LUTRAM: a few narrow words) and the row / column class counters."""
        base = super().resources(g, n)
        corr = padding_correction(g, n)
        if corr is None:
            return base
        rows, cols, table = corr
        bb = int(np.abs(table).max()).bit_length() + 1
        si = g.in_stream(n)
        extra = elementwise_resources(si.channels * table.shape[0] * table.shape[1], n.pe, 0, bb, "distributed")
        counters = 2 * (len(rows).bit_length() + len(cols).bit_length())
        return base + Resources(extra.lut - 100 + counters, extra.bram18, 0, 0, extra.lutram)
