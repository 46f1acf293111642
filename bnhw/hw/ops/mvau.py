"""``MVAU``: the matrix-vector-activation unit (FINN ``MVAU_hls``; a depthwise one is ``VVAU_hls``).

For each pixel ``acc = W @ x`` with ``W`` of shape ``(MH, MW // groups)``; with ``groups > 1`` output
channel ``o`` belongs to group ``o // (MH // groups)`` and sees the window entries whose channel is in
that group (the block-diagonal grouped convolution).  ``binary_xnor``: weights and inputs are bipolar
(an XNOR-popcount unit).  With ``thresholds`` the output is the thresholded accumulator
(:func:`~bnhw.hw.ir.threshold_out`), else the accumulator.  Folding: PE output channels x SIMD inputs
per cycle; a grouped MVAU computes one group at a time, so PE divides the outputs per group and SIMD
the channels per group.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..finn_models import FINN_PLUS_VERSION, FinnOp, minimize_weight_dt, vecs
from ..ir import HwGraph, Node, threshold_out
from .base import HwOp, divisors, finn_activation, finn_stream_dt, is_xnor, register

__all__ = ["MVAU", "acc_bounds", "activation", "is_depthwise", "groups_of", "grouped_unit", "finn_xnor",
           "finn_popcount"]


def acc_bounds(w: np.ndarray, xlo: int, xhi: int) -> tuple[int, int]:
    """The reachable accumulator range of ``acc = w @ x`` (``w``: rows of weights) for every ``x``
    with elements in ``[xlo, xhi]``: each row's extreme sums, the smallest and the largest."""
    w = np.asarray(w, dtype=np.int64)
    if w.size == 0:
        return 0, 0
    lo = np.minimum(w * xlo, w * xhi).sum(axis=1)
    hi = np.maximum(w * xlo, w * xhi).sum(axis=1)
    return int(lo.min()), int(hi.max())


def activation(n: Node, acc: np.ndarray) -> np.ndarray:
    """The MVAU / Thresholding activation: thresholds when the node has them, else the accumulator."""
    if "thresholds" in n.params:
        return threshold_out(acc, n.params["thresholds"], int(n.attrs.get("out_bias", 0)),
                             int(n.attrs.get("out_scale", 1)))
    return acc


def groups_of(n: Node) -> int:
    return int(n.attrs.get("groups", 1)) if n.op == "MVAU" else 1


def is_depthwise(g: HwGraph, n: Node) -> bool:
    """A grouped MVAU with one group per channel and one output per group (FINN's VVAU)."""
    if n.op != "MVAU":
        return False
    groups = groups_of(n)
    if groups <= 1:
        return False
    ch = int(n.attrs.get("channels", groups))
    return groups == ch and g.out_stream(n).channels == groups


def finn_xnor(g: HwGraph, n: Node) -> bool:
    """Whether FINN builds the node as an XNOR-popcount unit (``binaryXnorMode``): an XNOR layer whose input is
    not a zero-padded window (those travel as TERNARY, :func:`~.base.finn_stream_dt`)."""
    return is_xnor(g, n) and finn_stream_dt(g, n.inputs[0]) == "BINARY"


def grouped_unit(g: HwGraph, n: Node) -> bool:
    """Whether MVAU ``n`` has groups FINN has no unit for (not one per channel): bnhw's ``GroupedMVAU`` unit takes
    its place in FINN's graph and outputs the bipolar sum itself."""
    return n.op == "MVAU" and groups_of(n) > 1 and not is_depthwise(g, n)


def finn_popcount(g: HwGraph, stream: str) -> int | None:
    """``MW`` where FINN carries ``stream`` as an XNOR unit's popcount ``p`` in ``[0, MW]`` instead of the IR's
    bipolar sum ``2p - MW``: the output of an MVAU without activation that FINN builds in ``binaryXnorMode``
    (:func:`finn_xnor`); ``None`` on every other stream."""
    n = g.producer(stream)
    if n is None or n.op != "MVAU" or "thresholds" in n.params or grouped_unit(g, n) or not finn_xnor(g, n):
        return None
    return int(np.asarray(n.params["weights"]).shape[1])


def _kernel_of(g: HwGraph, n: Node, kk: int) -> tuple[int, int]:
    k = n.attrs.get("k")
    if k is None:
        p = g.producer(n.inputs[0])
        if p is not None and p.op == "SWG":
            k = p.attrs.get("k")
    if k is not None and int(k) * int(k) == kk:
        return int(k), int(k)
    r = int(round(math.sqrt(kk)))
    return (r, r) if r * r == kk else (1, kk)


#: the folding-independent part of an MVAU's translation (weights and thresholds in FINN's
#: layout, weight type): the folding optimiser translates one node at hundreds of foldings,
#: so it is cached per IR weight / threshold array (keyed by identity; the arrays are kept in
#: the entry so the key stays valid; the cached arrays are read-only)
_PREP: dict[tuple, tuple] = {}


def _prep(g: HwGraph, n: Node) -> tuple[bool, str, np.ndarray, np.ndarray | None]:
    src, thr = n.params["weights"], n.params.get("thresholds")
    xnor = finn_xnor(g, n)
    odt = finn_stream_dt(g, n.outputs[0])
    key = (id(src), id(thr), xnor, odt)
    hit = _PREP.get(key)
    if hit is not None and hit[0] is src and hit[1] is thr:
        return hit[2]
    w_ir = np.asarray(src, dtype=np.int64)                          # (MH, MW // groups)
    mw = w_ir.shape[1]
    wdt = "BINARY" if xnor else ("BIPOLAR" if np.all(np.abs(w_ir) == 1) else minimize_weight_dt(w_ir).name)
    t_finn = None
    if thr is not None:
        t, _, _ = finn_activation(g, n, thr)
        # xnor: FINN accumulates popcount(xnor) = (acc_bipolar + MW) / 2
        # (clipped to [0, MW + 1], which changes no output)
        t_finn = np.clip(-((-(t + mw)) // 2), 0, mw + 1) if xnor else t.copy()
        t_finn.flags.writeable = False
    w_finn = ((w_ir.T + 1) // 2) if xnor else w_ir.T               # (MW, MH)
    w_finn.flags.writeable = False
    val = (xnor, wdt, w_finn, t_finn)
    if len(_PREP) > 1024:
        _PREP.clear()
    _PREP[key] = (src, thr, val)
    return val


@register
class MVAU(HwOp):
    name = "MVAU"
    pe_words_out = True
    finn_name = "MVAU_hls"
    folds_simd = True
    notes = {
        "MVAU": f"MVAU_hls (finn-plus {FINN_PLUS_VERSION} matrixvectoractivation[_hls].py): cycles "
                "MH/PE*MW/SIMD*pixels; FINN-R LUT model, BRAM18 table, mem_mode internal_decoupled, ram_style "
                "auto, resType lut; xnor layers as binaryXnorMode (BINARY in/weights); weight and "
                "accumulator types minimised from the weights as FINN's estimate flow does "
                "(so bipolar weights of a non-xnor layer become INT2); a zero-padded bipolar window "
                "stream is modelled as FINN's 1-bit BINARY stream",
        "MVAU(grouped)": "groups < channels: an MVAU_hls of MW = MW_total/groups (the per-group "
                         "dot product, all MH outputs); groups == channels: VVAU_hls",
        "VVAU": f"VVAU_hls (finn-plus {FINN_PLUS_VERSION} vectorvectoractivation[_hls].py): cycles "
                "C*k*k/PE/SIMD*pixels; its own LUT / BRAM tables; fed by a depthwise ConvolutionInputGenerator_rtl",
    }

    def execute(self, g, n, ins):
        (x,) = ins
        w = n.params["weights"].astype(np.int64)            # (MH, MW // groups)
        groups = groups_of(n)
        H, W, MW = x.shape
        MH = w.shape[0]
        if groups == 1:
            acc = x.reshape(-1, MW) @ w.T
        else:
            C = int(n.attrs["channels"])                    # input channels of the conv
            kk = MW // C
            cg, og = C // groups, MH // groups
            xr = x.reshape(-1, kk, C)
            acc = np.empty((xr.shape[0], MH), dtype=np.int64)
            for gi in range(groups):
                xg = xr[:, :, gi * cg:(gi + 1) * cg].reshape(xr.shape[0], kk * cg)
                acc[:, gi * og:(gi + 1) * og] = xg @ w[gi * og:(gi + 1) * og].T
        return [activation(n, acc.reshape(H, W, MH))]

    def value_range(self, g, n):
        """The accumulator's reachable range over the input stream's type (bipolar: -1 / +1; a padded
        window stream also holds 0, which lies inside that range)."""
        t = g.in_stream(n).dtype
        xlo, xhi = (-1, 1) if t.is_bipolar else (t.min, t.max)
        return acc_bounds(n.params["weights"], xlo, xhi)

    def legal_pe(self, g, n):
        return divisors(g.out_stream(n).channels)

    def legal_simd(self, g, n):
        return divisors(int(np.asarray(n.params["weights"]).shape[1]))

    def buildable(self, g, n, pe, simd):
        groups = groups_of(n)
        if groups <= 1:
            return True
        mh = int(np.asarray(n.params["weights"]).shape[0])
        c = int(n.attrs.get("channels", g.in_stream(n).channels))
        return (mh // groups) % pe == 0 and (c // groups) % simd == 0

    def unbuildable_why(self, g, n):
        groups = groups_of(n)
        mh = int(np.asarray(n.params["weights"]).shape[0])
        c = int(n.attrs.get("channels", g.in_stream(n).channels))
        return (f"a grouped MVAU needs PE | MH/groups ({mh // groups}) and SIMD | C/groups ({c // groups})")

    def finn_ops(self, g, n):
        outs = g.out_stream(n)
        xnor, wdt, w_finn, t_finn = _prep(g, n)
        mw, mh = w_finn.shape
        h, wd = outs.shape[0], outs.shape[1]
        thr = n.params.get("thresholds")
        last = g.is_output(n.outputs[0])
        common = {"PE": n.pe, "SIMD": n.simd,
                  "mem_mode": n.attrs.get("mem_mode", "internal_decoupled"),
                  "ram_style": n.attrs.get("ram_style", "auto"),
                  "resType": n.attrs.get("resType", "lut"),
                  "binaryXnorMode": int(xnor),
                  "noActivation": int(thr is None),
                  "inputDataType": finn_stream_dt(g, n.inputs[0]),
                  "weightDataType": wdt}
        if "ram_style_thresholds" in n.attrs:
            common["ram_style_thresholds"] = n.attrs["ram_style_thresholds"]
        common["outputDataType"] = finn_stream_dt(g, n.outputs[0])  # no activation: the accumulator type
        if thr is not None:
            _, common["ActVal"], common["outputDataType"] = finn_activation(g, n, thr)
        if is_depthwise(g, n):
            kh, kw = _kernel_of(g, n, mw)
            attrs = dict(common, Channels=mh, Kernel=[kh, kw], Dim=[h, wd])
            return [FinnOp("VVAU_hls", attrs, w_finn.T.reshape(mh, 1, kh, kw), t_finn, last,
                           notes={"src": n.params["weights"]})]
        attrs = dict(common, MW=mw, MH=mh, numInputVectors=vecs(h, wd))
        notes: dict[str, Any] = {"grouped": groups_of(n)} if groups_of(n) > 1 else {}
        notes["src"] = n.params["weights"]
        return [FinnOp("MVAU_hls", attrs, w_finn, t_finn, last, notes=notes)]
