"""Elaborate a folded :class:`~bnhw.hw.ir.HwGraph` into the simulator's netlist.

Every IR node becomes one or more *units* -- the same split into FINN
operators that :func:`bnhw.hw.ops.finn_ops` uses for the
cycle and resource estimates -- and every connection a FIFO of words.  Two
unit kinds cover all of them:

``loop``
    an II=1 pipelined loop with a static schedule, as HLS builds FINN's
    MVAU / VVAU / Thresholding / Pool / GlobalAccPool / DuplicateStreams /
    LabelSelect and bnhw's AddRequant / RPReLU: ``S`` positions per frame,
    each position reads one word from some inputs and writes one word to
    some outputs (``flags``); the whole loop stalls on an empty input or a
    full output (blocking stream access); results leave ``latency`` cycles
    after the position's reads.
``router``
    a reader and a writer, one word per cycle each, around a buffer of
    ``cap`` input words: output element ``e`` of a frame is input element
    ``route[e]`` (``-1``: the constant ``pad``).  The writer may emit output
    word ``j`` once ``need[j]`` input words of the frame have been read; the
    reader may read input word ``i`` only while ``i < oldest[w] + cap``
    (``w``: the next word to write; ``oldest``: the first input word still
    referenced).  Sliding-window generators (FINN's RTL SWG, which reads
    and writes concurrently), FMPadding, data-width converters and channel
    gathers are routers; their buffer depth is FINN's where FINN has one.

Element orders: every FIFO carries its tensor in HWC order, except a window
stream (SWG output), which comes in the order its consumer computes in:
tap-major ``(tap, c)`` for a dense MVAU, group-major ``(g, tap, c)`` for a
grouped MVAU, ``(c-fold, tap-fold, tap, pe)`` for a depthwise VVAU and a
pool, as FINN's depthwise SWG does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ...errors import BnhwError
from ..finn_models import dwc_luts, finn_dt, minimized_attrs, popcount_dt, swg_buffer_depth
from ..ir import HwGraph, Node, per_channel
from ..ops import backend_unit, finn_ops, finn_stream_dt, folding_error, is_depthwise
from ..ops.mvau import finn_popcount

__all__ = ["Unit", "Fifo", "Netlist", "elaborate", "width_converters", "SimError", "LOOP_OPS", "PIPELINE_DEPTH",
           "router_arrays"]


class SimError(BnhwError):
    """The graph cannot be simulated as folded (a folding that does not divide a dimension)."""


#: loop-unit data operations (codes shared with engine.c)
LOOP_OPS = {"mvau": 1, "vvau": 2, "thresh": 3, "poolmax": 4, "poolsum": 5, "gap": 6, "dup": 7,
            "addreq": 8, "rprelu": 9, "label": 10, "concat": 11, "poolavg": 12}

#: modelled pipeline depth (cycles from a position's reads to its write) per loop op: the read,
#: the dot product or compare, the accumulate / threshold stage.  An assumption, not a synthesis
#: result; it only shifts latencies by a few cycles per unit.
PIPELINE_DEPTH = {"mvau": 3, "vvau": 3, "thresh": 2, "poolmax": 1, "poolsum": 1, "gap": 1, "dup": 1,
                  "addreq": 2, "rprelu": 2, "label": 1, "concat": 1, "poolavg": 2}


@dataclass
class Fifo:
    name: str                # "<producer unit> -> <consumer unit>"
    width: int               # elements per word
    words: int               # words per frame
    bits: int                # element bits (for the FIFO's memory cost)
    stream: str              # IR stream it carries (or an internal one)
    src: int = -1            # producer unit index (-1: the input DMA)
    dst: int = -1            # consumer unit index (-1: the output DMA)


@dataclass
class Unit:
    name: str                # FINN-style node name
    node: str                # IR node it belongs to ("" for source / sink)
    kind: str                # "loop" | "router" | "source" | "sink"
    finn_op: str             # FINN op type it models
    ins: list[int] = field(default_factory=list)      # FIFO indices
    outs: list[int] = field(default_factory=list)
    # loop
    op: str = ""
    positions: int = 0
    flags: np.ndarray | None = None                  # uint8 per position: bit p read in p, bit 4+q write out q
    latency: int = 1
    iparams: dict[str, int] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    # router
    in_words: int = 0
    out_words: int = 0
    cap: int = 0
    need: np.ndarray | None = None
    oldest: np.ndarray | None = None
    route: np.ndarray | None = None
    pad: int = 0
    analytic_cycles: int = 0                          # FINN's get_exp_cycles of the op it models
    note: str = ""
    #: per input FIFO, the index of the node's input it is (-1: an internal stream of a node built as several
    #: units); empty: the inputs in order
    ports: list[int] = field(default_factory=list)


@dataclass
class Netlist:
    graph: HwGraph | None          # None: elaborated from a FINN graph (:mod:`.dataflow_netlist`)
    units: list[Unit]
    fifos: list[Fifo]
    in_width: int
    out_width: int

    def unit(self, name: str) -> Unit:
        for u in self.units:
            if u.name == name:
                return u
        raise KeyError(name)


# ----------------------------------------------------------------------------- helpers
def router_arrays(route: np.ndarray, in_width: int, out_width: int, in_elems: int, group: int = 1) -> tuple:
    """``need`` / ``oldest`` per output word of a frame from the element route; ``group``: output
    words released together (a window generator emits a window once all of it is buffered)."""
    if route.size % out_width:
        raise SimError(f"internal: {route.size} output elements are not whole words of {out_width}")
    r = route.reshape(-1, out_width)
    valid = r >= 0
    hi = np.where(valid, r, -1).max(axis=1)
    lo = np.where(valid, r, np.iinfo(np.int64).max).min(axis=1)
    need = np.where(hi >= 0, hi // in_width + 1, 0)
    if group > 1 and need.size % group == 0:
        need = np.repeat(need.reshape(-1, group).max(axis=1), group)
    need = np.maximum.accumulate(need)                 # words are written in order
    in_words = in_elems // in_width
    first = np.where(lo < np.iinfo(np.int64).max, lo // in_width, in_words)
    oldest = np.minimum.accumulate(first[::-1])[::-1]  # first input word any later output still needs
    return need.astype(np.int32), oldest.astype(np.int32)


def _window_index(H: int, W: int, C: int, k: int, stride: int, dil: int, Ho: int, Wo: int) -> np.ndarray:
    """``idx[oy, ox, tap, c]``: HWC element index of the input read by each window tap."""
    oy, ox, ky, kx, c = np.meshgrid(np.arange(Ho), np.arange(Wo), np.arange(k), np.arange(k), np.arange(C),
                                    indexing="ij")
    iy, ix = oy * stride + ky * dil, ox * stride + kx * dil
    idx = (iy * W + ix) * C + c
    return idx.reshape(Ho, Wo, k * k, C)


class _Elab:
    def __init__(self, g: HwGraph):
        self.g = g
        self.units: list[Unit] = []
        self.fifos: list[Fifo] = []
        self.names: dict[str, int] = {}
        self.taken: set[str] = {n.name for n in g.nodes}
        self.cons_order: dict[str, str] = {}
        # (stream) -> (fifo index carrying it out of its producer, width)
        self.tail: dict[str, int] = {}

    # ------------------------------------------------------------ plumbing
    def _name(self, base: str) -> str:
        """The next free FINN-style name ``base_k`` (IR node names are taken)."""
        k = self.names.get(base, 0)
        while f"{base}_{k}" in self.taken:
            k += 1
        self.names[base] = k + 1
        self.taken.add(f"{base}_{k}")
        return f"{base}_{k}"

    def add_unit(self, u: Unit) -> int:
        self.units.append(u)
        return len(self.units) - 1

    def new_fifo(self, src: int, width: int, words: int, bits: int, stream: str) -> int:
        self.fifos.append(Fifo("", width, words, bits, stream, src=src))
        f = len(self.fifos) - 1
        if src >= 0:
            self.units[src].outs.append(f)
        return f

    def connect(self, f: int, dst: int) -> None:
        self.fifos[f].dst = dst
        self.units[dst].ins.append(f)

    def bits(self, stream: str) -> int:
        """Element bits of ``stream`` in FINN's design: a bipolar stream's FINN type (:func:`~bnhw.hw.ops.
        finn_stream_dt`: one bit, a zero-padded window whose border is corrected downstream included; two as
        TERNARY), an XNOR MVAU's popcount type where FINN carries it in place of the IR's bipolar sum
        (:func:`~bnhw.hw.finn_models.popcount_dt` of FINN's minimised accumulator: e.g. UINT7 for the IR's INT8)."""
        mw = finn_popcount(self.g, stream)
        if mw is not None:
            n = self.g.producer(stream)
            assert n is not None                    # a popcount stream has its MVAU
            return finn_dt(popcount_dt(mw, minimized_attrs(finn_ops(self.g, n)[-1])["outputDataType"])).bits
        t = self.g.streams[stream].dtype
        return finn_dt(finn_stream_dt(self.g, stream)).bits if t.is_bipolar else t.bits

    def feed(self, stream: str, width: int, dst: int) -> None:
        """Connect the FIFO carrying ``stream`` to unit ``dst``'s next input, converting the width."""
        f = self.tail[stream]
        have = self.fifos[f].width
        if have != width:
            f = self._dwc(f, have, width, stream)
        self.connect(f, dst)

    def _dwc(self, f: int, have: int, want: int, stream: str) -> int:
        fo = self.fifos[f]
        elems = fo.width * fo.words
        if elems % want:
            raise SimError(f"stream {stream!r}: {want} elements per word do not divide its {elems} elements")
        route = np.arange(elems, dtype=np.int64)
        need, oldest = router_arrays(route, have, want, elems)
        cap = -(-want // have) + 1
        u = Unit(self._name("StreamingDataWidthConverter_rtl"), "", "router", "StreamingDataWidthConverter_rtl",
                 in_words=elems // have, out_words=elems // want, cap=cap, need=need, oldest=oldest,
                 route=route, analytic_cycles=max(elems // have, elems // want),
                 note=f"{have} -> {want} elements per word")
        ui = self.add_unit(u)
        self.connect(f, ui)
        return self.new_fifo(ui, want, elems // want, fo.bits, stream)

    # ------------------------------------------------------------ node widths
    def in_width(self, n: Node, i: int = 0) -> int:
        if n.op == "SWG":
            return int(n.attrs.get("pad_simd", n.simd)) if int(n.attrs.get("pad", 0)) else n.simd
        if n.op == "MVAU":
            return n.pe * n.simd if is_depthwise(self.g, n) else n.simd
        if n.op in ("Duplicate", "Gather") and "pe" not in n.attrs:
            return self.fifos[self.tail[n.inputs[i]]].width if n.inputs[i] in self.tail else 1
        return n.pe

    def window_order(self, n: Node) -> str:
        cons = self.g.consumers(n.outputs[0])
        if len(cons) == 1 and cons[0].op in ("WindowMax", "WindowAvg"):
            return f"dw:{cons[0].pe}:1"             # a pool reads (c-fold, tap, pe), as FINN's depthwise SWG
        if len(cons) == 1 and cons[0].op == "MVAU":
            c = cons[0]
            if is_depthwise(self.g, c):
                return f"dw:{c.pe}:{c.simd}"
            if int(c.attrs.get("groups", 1)) > 1:
                return f"grouped:{int(c.attrs['groups'])}"
        return "tap"

    # ------------------------------------------------------------ elaboration
    def run(self) -> Netlist:
        g = self.g
        self.cons_count = {s: len(g.consumers(s)) for s in g.streams}
        for s, k in self.cons_count.items():
            if k > 1:
                raise SimError(f"stream {s!r} has {k} readers; hardware streams have one (insert a Duplicate)")
        src = self.add_unit(Unit("input_dma", "", "source", "IODMA"))
        first = g.consumers(g.input)
        in_w = self.in_width(first[0], first[0].inputs.index(g.input)) if first else 1
        if first and first[0].op in ("Duplicate", "Gather") and "pe" not in first[0].attrs:
            in_w = 1
        st = g.streams[g.input]
        if st.elems % in_w:
            raise SimError(f"input stream: {in_w} elements per word do not divide {st.elems}")
        self.tail[g.input] = self.new_fifo(src, in_w, st.elems // in_w, self.bits(g.input), g.input)
        for n in g.nodes:
            why = folding_error(g, n, check_units=False)      # FINN's folding rules, from the op registry
            if why:
                raise SimError(why)
            backend_unit(self.EMITTERS, n, "the cycle simulator", SimError)(self, n)
        # streams nobody reads (a truncated Duplicate output) and the graph output go to sinks
        for s, f in self.tail.items():
            if self.fifos[f].dst == -1 and s != g.output and self.cons_count.get(s, 0) == 0 and s != g.input:
                u = self.add_unit(Unit(self._name("drain"), "", "sink", "drain"))
                self.connect(f, u)
        out = self.tail[g.output]
        sink = self.add_unit(Unit("output_dma", "", "sink", "IODMA"))
        self.connect(out, sink)
        for fo in self.fifos:
            a = self.units[fo.src].name
            b = self.units[fo.dst].name if fo.dst >= 0 else "?"
            fo.name = f"{a} -> {b}"
        return Netlist(g, self.units, self.fifos, in_w, self.fifos[out].width)

    def _loop(self, n: Node, finn_op: str, op: str, flags: np.ndarray, in_widths: list[int],
              out_width: int, out_streams: list[str], iparams: dict, arrays: dict, cycles: int,
              name: str | None = None, inputs: list[str] | None = None) -> int:
        u = Unit(name or n.name, n.name, "loop", finn_op, op=op, positions=int(flags.size),
                 flags=flags.astype(np.uint8), latency=PIPELINE_DEPTH[op], iparams=iparams, arrays=arrays,
                 analytic_cycles=cycles)
        ui = self.add_unit(u)
        for s, w in zip(inputs if inputs is not None else n.inputs, in_widths):
            self.feed(s, w, ui)
        for s in out_streams:
            so = self.g.streams[s]
            if so.elems % out_width:
                raise SimError(f"{n.name}: {out_width} elements per word do not divide the {so.channels} "
                               f"channels of {s!r} (check its PE/SIMD)")
            self.tail[s] = self.new_fifo(ui, out_width, so.elems // out_width, self.bits(s), s)
        return ui

    def _router(self, n: Node, name: str, finn_op: str, route: np.ndarray, in_stream: str, in_width: int,
                out_width: int, cap_min: int, pad: int, out_stream: str, out_bits: int, cycles: int,
                in_elems: int, note: str = "", group: int = 1) -> int:
        need, oldest = router_arrays(route, in_width, out_width, in_elems, group)
        span = int((need - oldest).max()) if need.size else 1
        u = Unit(name, n.name, "router", finn_op, in_words=in_elems // in_width,
                 out_words=route.size // out_width, cap=max(cap_min, span, 1), need=need, oldest=oldest,
                 route=route.astype(np.int64), pad=pad, analytic_cycles=cycles, note=note)
        ui = self.add_unit(u)
        self.feed(in_stream, in_width, ui)
        f = self.new_fifo(ui, out_width, route.size // out_width, out_bits, out_stream)
        self.tail[out_stream] = f
        return ui

    # ------------------------------------------------------------ ops
    def _op_SWG(self, n: Node):
        g = self.g
        si, so = g.in_stream(n), g.out_stream(n)
        H, W, C = si.shape
        k, stride = int(n.attrs["k"]), int(n.attrs.get("stride", 1))
        pad, dil = int(n.attrs.get("pad", 0)), int(n.attrs.get("dilation", 1))
        Ho, Wo = so.shape[0], so.shape[1]
        simd = n.simd
        ops = {o.role: o for o in finn_ops(g, n)}
        from ..finn_models import op_cycles
        src, bits = n.inputs[0], self.bits(n.outputs[0])
        if pad:
            psimd = int(n.attrs.get("pad_simd", simd))
            if C % psimd:
                raise SimError(f"{n.name}: pad SIMD={psimd} does not divide {C} channels")
            Hp, Wp = H + 2 * pad, W + 2 * pad
            yy, xx, cc = np.meshgrid(np.arange(Hp), np.arange(Wp), np.arange(C), indexing="ij")
            inside = (yy >= pad) & (yy < pad + H) & (xx >= pad) & (xx < pad + W)
            route = np.where(inside, ((yy - pad) * W + (xx - pad)) * C + cc, -1).reshape(-1)
            pname = self._name("FMPadding_rtl")
            padded = f"{n.outputs[0]}#padded"
            self._router(n, pname, "FMPadding_rtl", route, src, psimd, psimd, 2, int(n.attrs.get("pad_value", 0)),
                         padded, bits, op_cycles(ops["pad"]), H * W * C, note=f"pad {pad}")
            src, H, W = padded, Hp, Wp
        idx = _window_index(H, W, C, k, stride, dil, Ho, Wo)        # (Ho, Wo, KK, C)
        order = self.window_order(n)
        if order.startswith("grouped"):
            groups = int(order.split(":")[1])
            cg = C // groups
            idx = idx.reshape(Ho, Wo, k * k, groups, cg).transpose(0, 1, 3, 2, 4)
        elif order.startswith("dw"):
            _, pe_s, vs_s = order.split(":")
            pe, vs = int(pe_s), int(vs_s)
            kk = k * k
            if C % pe or kk % vs:
                raise SimError(f"{n.name}: depthwise consumer PE={pe} / SIMD={vs} do not divide {C} / {kk}")
            idx = idx.reshape(Ho, Wo, kk // vs, vs, C // pe, pe).transpose(0, 1, 4, 2, 3, 5)
        route = idx.reshape(-1)
        mmv = k * k if int(n.attrs.get("parallel_window", 0)) else 1
        a = ops["main"].attrs
        self._router(n, n.name, "ConvolutionInputGenerator_rtl", route, src, simd, simd * mmv,
                     swg_buffer_depth(a), 0, n.outputs[0], bits, op_cycles(ops["main"]), H * W * C,
                     note=f"{k}x{k}/{stride} window, order {order.split(':')[0]}",
                     group=k * k * C // (simd * mmv))

    def _op_MVAU(self, n: Node):
        g = self.g
        si = g.in_stream(n)
        w = np.asarray(n.params["weights"], dtype=np.int64)
        MH, MWg = w.shape
        pe, simd = n.pe, n.simd
        pixels = si.pixels
        groups = int(n.attrs.get("groups", 1))
        cycles = max(_cycles_of(g, n))
        thr = n.params.get("thresholds")
        arrays = {"W": w.reshape(-1)}
        ip = {"PE": pe, "SIMD": simd, "MWg": MWg, "pixels": pixels}
        if thr is not None:
            t = np.asarray(thr, dtype=np.int64).reshape(MH, -1)
            arrays["T"] = t.reshape(-1)
            ip.update(nthr=t.shape[1], out_bias=int(n.attrs.get("out_bias", 0)),
                      out_scale=int(n.attrs.get("out_scale", 1)))
        if is_depthwise(g, n):
            C = MH
            kk = MWg
            if C % pe or kk % simd:
                raise SimError(f"{n.name}: depthwise PE={pe} / SIMD={simd} must divide {C} channels / {kk} taps")
            CF, TC = C // pe, kk // simd
            t = np.arange(pixels * CF * TC) % TC
            flags = 1 | ((t == TC - 1) << 4)
            ip.update(CF=CF, TC=TC, KK=kk)
            self._loop(n, "VVAU_hls", "vvau", flags, [pe * simd], pe, n.outputs, ip, arrays, cycles)
            return
        og = MH // groups
        if MH % groups or og % pe or MWg % simd:
            raise SimError(f"{n.name}: PE={pe} must divide MH/groups={og} and SIMD={simd} must divide "
                           f"MW/groups={MWg}")
        NFG, SFG = og // pe, MWg // simd
        pos = np.arange(pixels * groups * NFG * SFG)
        sf = pos % SFG
        nfg = (pos // SFG) % NFG
        flags = (nfg == 0).astype(np.uint8) | ((sf == SFG - 1).astype(np.uint8) << 4)
        ip.update(G=groups, NFG=NFG, SFG=SFG, OG=og)
        self._loop(n, "MVAU_hls", "mvau", flags, [simd], pe, n.outputs, ip, arrays, cycles)

    def _elementwise(self, n: Node, finn_op: str, op: str, ip: dict, arrays: dict):
        si = self.g.in_stream(n)
        pe = n.pe
        steps = si.pixels * (si.channels // pe)
        nout = len(n.outputs)
        flags = np.full(steps, (1 << len(n.inputs)) - 1 | (((1 << nout) - 1) << 4), dtype=np.uint8)
        ip = {"PE": pe, "C": si.channels, **ip}
        return self._loop(n, finn_op, op, flags, [pe] * len(n.inputs), pe, n.outputs, ip, arrays,
                          max(_cycles_of(self.g, n)))

    def _op_Thresholding(self, n: Node):
        C = self.g.in_stream(n).channels
        t = np.asarray(n.params["thresholds"], dtype=np.int64)
        t = t.reshape(-1, t.shape[-1]) if t.ndim else t.reshape(1, 1)
        if t.shape[0] == 1:
            t = np.repeat(t, C, axis=0)
        self._elementwise(n, "Thresholding_rtl", "thresh",
                          {"nthr": t.shape[1], "out_bias": int(n.attrs.get("out_bias", 0)),
                           "out_scale": int(n.attrs.get("out_scale", 1))}, {"T": t.reshape(-1)})

    def _op_Duplicate(self, n: Node):
        if "pe" not in n.attrs:                 # unfolded: as wide as its producer's words
            n = Node(n.name, n.op, n.inputs, n.outputs, {**n.attrs, "pe": self.in_width(n)}, n.params, n.layer)
        self._elementwise(n, "DuplicateStreams_hls", "dup", {}, {})

    def _clip(self, n: Node) -> dict:
        t = self.g.out_stream(n).dtype
        return {"lo": t.min, "hi": t.max}

    def _op_AddRequant(self, n: Node):
        C = self.g.in_stream(n).channels
        arrays = {"A": per_channel(n, "A", C), "B": per_channel(n, "B", C)}
        self._elementwise(n, "AddRequant", "addreq",
                          {"shift": int(n.attrs["shift"]), "sc_shift": int(n.attrs.get("shortcut_shift", 0)),
                           "ninputs": len(n.inputs), **self._clip(n)}, arrays)

    def _op_RPReLU(self, n: Node):
        C = self.g.in_stream(n).channels
        arrays = {k: per_channel(n, k, C) for k in ("S_in", "slope", "S_out")}
        self._elementwise(n, "RPReLU", "rprelu", {"frac": int(n.attrs["frac"]), **self._clip(n)}, arrays)

    def _pool(self, n: Node, op: str):
        g = self.g
        si, so = g.in_stream(n), g.out_stream(n)
        H, W, C = si.shape
        k, pe = int(n.attrs["k"]), n.pe
        Ho, Wo = so.shape[0], so.shape[1]
        ops = {o.role: o for o in finn_ops(g, n)}
        from ..finn_models import op_cycles
        idx = _window_index(H, W, C, k, k, 1, Ho, Wo).reshape(Ho, Wo, k * k, C // pe, pe).transpose(0, 1, 3, 2, 4)
        inner = f"{n.outputs[0]}#windows"
        self._router(n, self._name("ConvolutionInputGenerator_rtl"), "ConvolutionInputGenerator_rtl",
                     idx.reshape(-1), n.inputs[0], pe, pe, swg_buffer_depth(ops["swg"].attrs), 0, inner,
                     self.bits(n.inputs[0]), op_cycles(ops["swg"]), H * W * C, note=f"{k}x{k} pool windows",
                     group=k * k * C // pe)
        kk, CF = k * k, C // pe
        t = np.arange(Ho * Wo * CF * kk) % kk
        flags = 1 | ((t == kk - 1).astype(np.uint8) << 4)
        self._loop(n, "Pool_hls", op, flags, [pe], pe, n.outputs, {"PE": pe, "KK": kk, "C": C}, {},
                   op_cycles(ops["main"]), inputs=[inner])

    def _op_MaxPool(self, n: Node):
        self._pool(n, "poolmax")

    def _op_AvgPoolSum(self, n: Node):
        self._pool(n, "poolsum")

    def _op_GlobalAvgPool(self, n: Node):
        si = self.g.in_stream(n)
        pe, C = n.pe, si.channels
        CF = C // pe
        flags = np.concatenate([np.ones(si.pixels * CF, np.uint8), np.full(CF, 1 << 4, np.uint8)])
        self._loop(n, "GlobalAccPool_hls", "gap", flags, [pe], pe, n.outputs,
                   {"PE": pe, "C": C, "pixels": si.pixels}, {}, max(_cycles_of(self.g, n)))

    def _op_LabelSelect(self, n: Node):
        si = self.g.in_stream(n)
        pe = n.pe
        steps = si.elems // pe
        flags = np.ones(steps, np.uint8)
        flags[-1] |= 1 << 4
        self._loop(n, "LabelSelect_hls", "label", flags, [pe], 1, n.outputs, {"PE": pe}, {},
                   max(_cycles_of(self.g, n)))

    def _op_Gather(self, n: Node):
        si, so = self.g.in_stream(n), self.g.out_stream(n)
        index = np.asarray(n.params["index"], dtype=np.int64).reshape(-1)
        win = self.in_width(n)
        cons = self.g.consumers(n.outputs[0])
        wout = win
        if cons:
            c = cons[0]
            wout = self.in_width(c, c.inputs.index(n.outputs[0]))
        if so.channels % wout:
            wout = math.gcd(wout, so.channels)
        px = np.arange(si.pixels)[:, None]
        route = (px * si.channels + index[None, :]).reshape(-1)
        self._router(n, self._name("Gather"), "Gather", route, n.inputs[0], win, wout,
                     2 * (si.channels // win) + 1, 0, n.outputs[0], self.bits(n.outputs[0]), 0, si.elems,
                     note="channel gather (one pixel buffered)")

    def _window_pool(self, n: Node, op: str, arrays: dict):
        so = self.g.out_stream(n)
        Ho, Wo, C = so.shape
        kk, pe = int(n.attrs["k"]) ** 2, n.pe
        t = np.arange(Ho * Wo * (C // pe) * kk) % kk
        flags = 1 | ((t == kk - 1).astype(np.uint8) << 4)
        self._loop(n, "Pool_hls", op, flags, [pe], pe, n.outputs, {"PE": pe, "KK": kk, "C": C}, arrays,
                   max(_cycles_of(self.g, n)))

    def _op_WindowMax(self, n: Node):
        self._window_pool(n, "poolmax", {})

    def _op_WindowAvg(self, n: Node):
        self._window_pool(n, "poolavg", {"counts": np.asarray(n.params["counts"], dtype=np.int64).reshape(-1)})

    def _op_Concat(self, n: Node):
        """One loop per (up to) three inputs, chained: per pixel it copies ``C_i / PE`` words of input ``i``
        in turn (a concatenation of more streams concatenates the first three, then that with the next two)."""
        g, pe = self.g, n.pe
        so = g.out_stream(n)
        cycles = max(_cycles_of(g, n))
        parts = [(s, g.streams[s].channels) for s in n.inputs]
        k = 0
        while parts:
            chunk, parts = parts[:3], parts[3:]
            last = not parts
            C = sum(c for _, c in chunk)
            out = n.outputs[0] if last else f"{n.outputs[0]}#part{k}"
            pos = np.concatenate([np.full(c // pe, 1 << i, dtype=np.uint8) for i, (_, c) in enumerate(chunk)])
            flags = np.tile(pos | np.uint8(1 << 4), so.pixels)
            u = Unit(n.name if last else self._name("StreamingConcat_hls"), n.name, "loop", "StreamingConcat_hls",
                     op="concat", positions=int(flags.size), flags=flags, latency=PIPELINE_DEPTH["concat"],
                     iparams={"PE": pe, "C": C}, analytic_cycles=cycles,
                     ports=[n.inputs.index(s) if s in n.inputs else -1 for s, _ in chunk])
            ui = self.add_unit(u)
            for s, _ in chunk:
                self.feed(s, pe, ui)
            self.tail[out] = self.new_fifo(ui, pe, so.pixels * C // pe, self.bits(n.outputs[0]), out)
            if not last:
                parts = [(out, C)] + parts
            k += 1

    #: the unit of each op (tests/test_hw_ops.py checks it against the op registry)
    EMITTERS: ClassVar[dict[str, Callable]] = {
        "SWG": _op_SWG, "MVAU": _op_MVAU, "Thresholding": _op_Thresholding, "MaxPool": _op_MaxPool,
        "AvgPoolSum": _op_AvgPoolSum, "GlobalAvgPool": _op_GlobalAvgPool, "Gather": _op_Gather,
        "Duplicate": _op_Duplicate,
        "AddRequant": _op_AddRequant, "RPReLU": _op_RPReLU, "LabelSelect": _op_LabelSelect,
        "WindowMax": _op_WindowMax, "WindowAvg": _op_WindowAvg, "Concat": _op_Concat,
    }


#: the ops the cycle simulator has a unit for (``tests/test_hw_ops.py`` checks it against the op registry)
SIM_OPS = frozenset(_Elab.EMITTERS)


def _cycles_of(g: HwGraph, n: Node) -> list[int]:
    from ..ops import node_cycles
    return [node_cycles(g, n)]


def elaborate(g: HwGraph) -> Netlist:
    """The simulator netlist of a folded graph (raises :class:`SimError` on an illegal folding)."""
    return _Elab(g).run()


def width_converters(net: Netlist) -> list[dict]:
    """The netlist's width converters -- where a producer's word differs from its consumer's, the rule of FINN's
    ``InsertDWC`` -- with their word widths in bits and FINN's LUT estimate (:func:`~bnhw.hw.finn_models.dwc_luts`;
    no BRAM, no DSP, no cycles of their own in FINN's model)."""
    out = []
    for u in net.units:
        if u.finn_op != "StreamingDataWidthConverter_rtl":
            continue
        fin, fout = net.fifos[u.ins[0]], net.fifos[u.outs[0]]
        in_bits, out_bits = fin.width * fin.bits, fout.width * fout.bits
        out.append({"name": u.name, "after": net.units[fin.src].name if fin.src >= 0 else None,
                    "stream": fin.stream, "in_bits": in_bits, "out_bits": out_bits, "lut": dwc_luts(in_bits, out_bits)})
    return out
