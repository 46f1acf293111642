"""A FINN dataflow graph as the cycle simulator's netlist (timing only), for FIFO sizing of any FINN build.

:mod:`.netlist` elaborates bnhw's own IR; this module takes the units of a FINN graph that bnhw did not make
(a user's FINN build, see :func:`bnhw.hw.finn_steps.step_bnhw_fifo_depths`), described as plain
:class:`DataflowNode` records (op type, attributes, folded stream shapes, element bits), and gives every unit the
same schedule bnhw's netlist gives the FINN op it stands for:

* **loop units** (one pipelined loop, one position per cycle, blocking reads and writes): MVAU (``pixels x NF x
  SF`` positions, a new input word at ``nf == 0``, an output word at ``sf == SF - 1``), VVAU (an output word every
  ``kk / SIMD`` positions), Pool (every ``k x k`` window positions), GlobalAccPool (all pixels, then ``C / PE``
  writes; bnhw's GlobalAvgPool unit the same), LabelSelect (its input, then its outputs), StreamingMaxPool (reads the input in raster order and writes
  an output word when the last input pixel of its window arrives), StreamingConcat / StreamingSplit (per pixel,
  the words of each stream in turn), and every unit whose words in equal its words out (Thresholding,
  ChannelwiseOp, Elementwise*, AddStreams, DuplicateStreams, Reshape, bnhw's AddRequant / RPReLU units, ...: one word
  in, one word out per cycle; bnhw's WindowAvg as Pool);
* **routers** (a reader and a writer around a buffer): ConvolutionInputGenerator (FINN's element order: ``(tap,
  channel)`` per output pixel, ``(channel fold, tap, SIMD)`` when depthwise; its buffer depth is FINN's model of
  the RTL generator's), FMPadding (bnhw's ValuePadding unit the same), StreamingDataWidthConverter, bnhw's
  Gather unit (a channel gather, one pixel buffered).

StreamingFIFOs already in the graph are dropped (their depths are what is being sized).  The data is not
simulated (``run_engine`` without inputs): FIFO sizing needs only the schedule.  An op outside this list is a
one-line :class:`SimError` naming the node, its op type and what is supported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..finn_models import swg_buffer_depth
from .netlist import PIPELINE_DEPTH, Fifo, Netlist, SimError, Unit, router_arrays

__all__ = ["DataflowNode", "elaborate_dataflow", "SUPPORTED"]


@dataclass
class DataflowNode:
    """One HW node of a FINN graph: what the simulator needs of it."""

    name: str
    op_type: str                                   # FINN's op type, e.g. "MVAU_hls"
    inputs: list[str]                              # streamed inputs only (no initializers)
    outputs: list[str]
    attrs: dict[str, Any]
    in_folded: list[tuple[int, ...]]               # FINN's folded shape of each streamed input (last: elements / word)
    out_folded: list[tuple[int, ...]]
    in_bits: list[int]
    out_bits: list[int]
    exp_cycles: int = 0                            # FINN's get_exp_cycles
    extra: dict[str, Any] = field(default_factory=dict)


def _base(op_type: str) -> str:
    for suffix in ("_hls", "_rtl"):
        if op_type.endswith(suffix):
            return op_type[: -len(suffix)]
    return op_type


def _words(shape: tuple[int, ...]) -> tuple[int, int]:
    """(words per frame, elements per word) of a folded shape."""
    return int(np.prod(shape[:-1])), int(shape[-1])


def _pair(v: Any) -> tuple[int, int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v, v]
    return (int(v[0]), int(v[-1])) if len(v) >= 2 else (int(v[0]), int(v[0]))


# ----------------------------------------------------------------------------- loop schedules (flags per position)
def _flags_mvau(n: DataflowNode) -> np.ndarray:
    a = n.attrs
    pe, simd, mw, mh = int(a["PE"]), int(a["SIMD"]), int(a["MW"]), int(a["MH"])
    pixels = int(np.prod(a.get("numInputVectors", [1])))
    nf, sf = mh // pe, mw // simd
    pos = np.arange(pixels * nf * sf)
    return ((pos // sf) % nf == 0).astype(np.uint8) | (((pos % sf) == sf - 1).astype(np.uint8) << 4)


def _flags_vvau(n: DataflowNode) -> np.ndarray:
    a = n.attrs
    k = int(np.prod(a["Kernel"]))
    pe, simd, ch = int(a["PE"]), int(a["SIMD"]), int(a["Channels"])
    pixels = int(np.prod(a["Dim"]))
    tf = k // simd
    t = np.arange(pixels * (ch // pe) * tf) % tf
    return 1 | ((t == tf - 1).astype(np.uint8) << 4)


def _flags_windowed(n: DataflowNode) -> np.ndarray:
    """Pool: one window element per position, a write after the window's last one."""
    in_words, _ = _words(n.in_folded[0])
    out_words, _ = _words(n.out_folded[0])
    kk = in_words // out_words
    t = np.arange(in_words) % kk
    return 1 | ((t == kk - 1).astype(np.uint8) << 4)


def _flags_gap(n: DataflowNode) -> np.ndarray:
    in_words, _ = _words(n.in_folded[0])
    out_words, _ = _words(n.out_folded[0])
    return np.concatenate([np.ones(in_words, np.uint8), np.full(out_words, 1 << 4, np.uint8)])


def _flags_label(n: DataflowNode) -> np.ndarray:
    in_words, _ = _words(n.in_folded[0])
    out_words, _ = _words(n.out_folded[0])
    f = np.ones(in_words + out_words - 1, np.uint8)
    f[in_words - 1:] |= 1 << 4
    f[in_words:] &= 0xF0
    return f


def _flags_maxpool(n: DataflowNode) -> np.ndarray:
    """FINN's StreamingMaxPool: the input in raster order; output pixel (oy, ox) leaves with the last input word
    of its window (row ``oy k + k - 1``, column ``ox k + k - 1``), one word per channel fold."""
    a = n.attrs
    h, w = _pair(a["ImgDim"])
    kh, kw = _pair(a["PoolDim"])
    c, pe = int(a["NumChannels"]), int(a.get("PE", 1))
    cf = c // pe
    ho, wo = h // kh, w // kw
    y, x, _ = np.meshgrid(np.arange(h), np.arange(w), np.arange(cf), indexing="ij")
    done = (y % kh == kh - 1) & (x % kw == kw - 1) & (y < ho * kh) & (x < wo * kw)
    return 1 | (done.reshape(-1).astype(np.uint8) << 4)


def _flags_concat(n: DataflowNode) -> np.ndarray:
    """StreamingConcat: per pixel, the words of input 0, then input 1, ...; each one written out."""
    per = [_words(s) for s in n.in_folded]
    pixels = n.in_folded[0][:-2]
    npx = int(np.prod(pixels)) if pixels else 1
    row = np.concatenate([np.full(w // npx, (1 << i) | (1 << 4), np.uint8) for i, (w, _) in enumerate(per)])
    return np.tile(row, npx)


def _flags_split(n: DataflowNode) -> np.ndarray:
    per = [_words(s) for s in n.out_folded]
    pixels = n.out_folded[0][:-2]
    npx = int(np.prod(pixels)) if pixels else 1
    row = np.concatenate([np.full(w // npx, 1 | (1 << (4 + i)), np.uint8) for i, (w, _) in enumerate(per)])
    return np.tile(row, npx)


def _flags_stream(n: DataflowNode) -> np.ndarray:
    """One word from every input, one word to every output, per position."""
    words = _words(n.in_folded[0])[0]
    return np.full(words, ((1 << len(n.inputs)) - 1) | (((1 << len(n.outputs)) - 1) << 4), np.uint8)


_LOOPS = {"MVAU": ("mvau", _flags_mvau), "VVAU": ("vvau", _flags_vvau), "Pool": ("poolmax", _flags_windowed),
          "WindowAvg": ("poolsum", _flags_windowed), "GlobalAccPool": ("gap", _flags_gap),
          "GlobalAvgPool": ("gap", _flags_gap), "LabelSelect": ("label", _flags_label),
          "StreamingMaxPool": ("poolmax", _flags_maxpool), "StreamingConcat": ("dup", _flags_concat),
          "StreamingSplit": ("dup", _flags_split)}
#: units whose words in equal their words out, one per cycle
_STREAMING = ("Thresholding", "ChannelwiseOp", "AddStreams", "DuplicateStreams", "Reshape", "Requant",
              "AddRequant", "RPReLU",
              "ElementwiseAdd", "ElementwiseSub", "ElementwiseMul", "ElementwiseDiv", "ElementwiseMaximum",
              "ElementwiseMinimum", "ElementwiseAnd", "ElementwiseOr", "ElementwiseXor", "ElementwiseEqual",
              "ElementwiseLess", "ElementwiseLessOrEqual", "ElementwiseGreater", "ElementwiseGreaterOrEqual",
              "ElementwiseBitwiseAnd", "ElementwiseBitwiseOr", "ElementwiseBitwiseXor", "ElementwiseFloat2Int",
              "ElementwiseInt2Float", "ElementwiseFloatCast", "ElementwiseRelu", "ElementwiseAbs")
_ROUTERS = ("ConvolutionInputGenerator", "FMPadding", "StreamingDataWidthConverter", "ValuePadding", "Gather")
#: the most inputs one simulator unit reads (a longer StreamingConcat is a chain of units)
_MAX_INPUTS = 3
#: FINN op types (without ``_hls`` / ``_rtl``) this module models
SUPPORTED = tuple(sorted((*_LOOPS, *_STREAMING, *_ROUTERS, "StreamingFIFO")))


# ----------------------------------------------------------------------------- router routes
def _route_swg(n: DataflowNode) -> tuple[np.ndarray, int, int]:
    a = n.attrs
    h, w = _pair(a["IFMDim"])
    ho, wo = _pair(a["OFMDim"])
    kh, kw = _pair(a["ConvKernelDim"])
    sh, sw = _pair(a["Stride"])
    dh, dw = _pair(a.get("Dilation", [1, 1]))
    c, simd = int(a["IFMChannels"]), int(a["SIMD"])
    oy, ox, ky, kx, cc = np.meshgrid(np.arange(ho), np.arange(wo), np.arange(kh), np.arange(kw), np.arange(c),
                                     indexing="ij")
    idx = ((oy * sh + ky * dh) * w + (ox * sw + kx * dw)) * c + cc       # (ho, wo, kh, kw, c)
    idx = idx.reshape(ho, wo, kh * kw, c)
    if int(a.get("depthwise", 0)):
        idx = idx.reshape(ho, wo, kh * kw, c // simd, simd).transpose(0, 1, 3, 2, 4)
    return idx.reshape(-1), h * w * c, kh * kw * c


def _route_pad(n: DataflowNode) -> tuple[np.ndarray, int, int]:
    a = n.attrs
    h, w = _pair(a["ImgDim"])
    top, left, bottom, right = (list(a["Padding"]) + [0, 0, 0, 0])[:4]
    c = int(a["NumChannels"])
    hp, wp = h + top + bottom, w + left + right
    yy, xx, cc = np.meshgrid(np.arange(hp), np.arange(wp), np.arange(c), indexing="ij")
    inside = (yy >= top) & (yy < top + h) & (xx >= left) & (xx < left + w)
    route = np.where(inside, ((yy - top) * w + (xx - left)) * c + cc, -1).reshape(-1)
    return route, h * w * c, 1


def _unit(n: DataflowNode) -> dict[str, Any]:
    """A bnhw unit's IR node (its ``unit`` attribute, :func:`bnhw.hw.finn_ops.unit_attrs`)."""
    return dict(json.loads(n.attrs["unit"]))


def _route_value_pad(n: DataflowNode) -> tuple[np.ndarray, int, int]:
    """bnhw's ValuePadding unit: FMPadding's route (its pad value is data, not timing)."""
    d = _unit(n)
    h, w, c = (int(v) for v in d["inputs"][0]["shape"])
    p = int(d["attrs"]["pad"])
    return _route_pad(DataflowNode(n.name, "FMPadding", n.inputs, n.outputs,
                                   {"ImgDim": [h, w], "Padding": [p, p, p, p], "NumChannels": c}, [], [], [], []))


def _route_gather(n: DataflowNode) -> tuple[np.ndarray, int, int]:
    """bnhw's Gather unit: output channel ``c`` of each pixel is input channel ``index[c]`` of that pixel."""
    d = _unit(n)
    h, w, c = (int(v) for v in d["inputs"][0]["shape"])
    index = np.asarray(n.attrs["param_index"], dtype=np.int64).reshape(-1)
    route = (np.arange(h * w)[:, None] * c + index[None, :]).reshape(-1)
    return route, h * w * c, 1


class _Dataflow:
    def __init__(self, nodes: list[DataflowNode], graph_input: str, graph_output: str):
        self.nodes, self.gin, self.gout = nodes, graph_input, graph_output
        self.units: list[Unit] = []
        self.fifos: list[Fifo] = []
        self.tail: dict[str, int] = {}
        self.alias: dict[str, str] = {}

    def stream(self, t: str) -> str:
        while t in self.alias:
            t = self.alias[t]
        return t

    def unit(self, u: Unit) -> int:
        self.units.append(u)
        return len(self.units) - 1

    def out_fifo(self, src: int, t: str, shape: tuple[int, ...], bits: int) -> None:
        words, width = _words(shape)
        self.fifos.append(Fifo("", width, words, bits, t, src=src))
        self.units[src].outs.append(len(self.fifos) - 1)
        self.tail[t] = len(self.fifos) - 1

    def connect(self, n: DataflowNode, i: int, dst: int) -> None:
        t = self.stream(n.inputs[i])
        if t not in self.tail:
            raise SimError(f"{n.name}: its input {t!r} comes from no node of the dataflow graph")
        f = self.tail.pop(t)
        fo = self.fifos[f]
        words, width = _words(n.in_folded[i])
        if (fo.words, fo.width) != (words, width):
            raise SimError(f"{n.name}: input {i} is {words} words of {width} elements, but its producer writes "
                           f"{fo.words} words of {fo.width} (a width converter is missing: run FINN's InsertDWC)")
        fo.dst = dst
        self.units[dst].ins.append(f)

    def add(self, n: DataflowNode) -> None:
        base = _base(n.op_type)
        if base == "StreamingFIFO":
            self.alias[n.outputs[0]] = n.inputs[0]
            return
        if base in _ROUTERS:
            self.router(n, base)
        elif base == "StreamingConcat" and len(n.inputs) > _MAX_INPUTS:
            self.concat_chain(n)
        elif base in _LOOPS or base in _STREAMING:
            op, flags_of = _LOOPS.get(base, ("dup", _flags_stream))
            if base in _STREAMING and len(n.inputs) == 1 and len(n.outputs) == 1:
                if _words(n.in_folded[0])[0] != _words(n.out_folded[0])[0]:
                    raise SimError(f"{n.name}: {n.op_type} reads {_words(n.in_folded[0])[0]} words and writes "
                                   f"{_words(n.out_folded[0])[0]} per frame; bnhw models it as one word in, one out")
            flags = flags_of(n)
            reads = [int(((flags >> i) & 1).sum()) for i in range(len(n.inputs))]
            writes = [int(((flags >> (4 + q)) & 1).sum()) for q in range(len(n.outputs))]
            want_r = [_words(s)[0] for s in n.in_folded]
            want_w = [_words(s)[0] for s in n.out_folded]
            if reads != want_r or writes != want_w:
                raise SimError(f"{n.name}: bnhw's {n.op_type} schedule reads {reads} / writes {writes} words, its "
                               f"folded shapes say {want_r} / {want_w} (attributes inconsistent with the shapes)")
            u = self.unit(Unit(n.name, n.name, "loop", n.op_type, op=op, positions=int(flags.size), flags=flags,
                               latency=PIPELINE_DEPTH[op], analytic_cycles=int(n.exp_cycles)))
            for i in range(len(n.inputs)):
                self.connect(n, i, u)
            for q, t in enumerate(n.outputs):
                self.out_fifo(u, t, n.out_folded[q], n.out_bits[q])
        else:
            raise SimError(f"{n.name}: bnhw's FIFO sizing has no model of FINN op {n.op_type}; supported: "
                           f"{', '.join(SUPPORTED)}")

    def concat_chain(self, n: DataflowNode) -> None:
        """A StreamingConcat of more streams than a simulator unit reads (:data:`_MAX_INPUTS`) as a chain, as
        bnhw's netlist builds the IR's Concat: the first three inputs concatenated, then that with the next two,
        ...; each unit copies per pixel the words of its inputs in turn.  The last unit has the node's name."""
        parts = [(i, n.in_folded[i]) for i in range(len(n.inputs))]
        pixels = n.in_folded[0][:-2]
        k = 0
        prev: tuple[str, tuple[int, ...]] | None = None
        while parts:
            take = _MAX_INPUTS - (prev is not None)
            chunk, parts = parts[:take], parts[take:]
            last = not parts
            ins = ([(-1, prev[1])] if prev else []) + chunk
            folded = [f for _, f in ins]
            words = sum(_words(f)[0] for f in folded)
            out = (n.out_folded[0] if last
                   else (*pixels, words // max(1, int(np.prod(pixels)) if pixels else 1), folded[0][-1]))
            part = DataflowNode(n.name if last else f"{n.name}#part{k}", n.op_type,
                                [prev[0] if (prev and j == 0) else n.inputs[i] for j, (i, _) in enumerate(ins)],
                                [n.outputs[0] if last else f"{n.name}#part{k}"], n.attrs, folded, [tuple(out)],
                                [n.in_bits[max(i, 0)] for i, _ in ins], [n.out_bits[0]],
                                n.exp_cycles)
            flags = _flags_concat(part)
            u = self.unit(Unit(part.name, n.name, "loop", n.op_type, op="dup", positions=int(flags.size),
                               flags=flags, latency=PIPELINE_DEPTH["dup"], analytic_cycles=int(n.exp_cycles),
                               ports=[i for i, _ in ins]))
            for j in range(len(part.inputs)):
                self.connect(part, j, u)
            self.out_fifo(u, part.outputs[0], part.out_folded[0], part.out_bits[0])
            prev = (part.outputs[0], part.out_folded[0])
            k += 1

    def router(self, n: DataflowNode, base: str) -> None:
        in_words, in_w = _words(n.in_folded[0])
        out_words, out_w = _words(n.out_folded[0])
        in_elems = in_words * in_w
        group, cap_min = 1, 2
        if base == "StreamingDataWidthConverter":
            route = np.arange(in_elems, dtype=np.int64)
            cap_min = -(-out_w // in_w) + 1
        elif base == "FMPadding":
            route, _, _ = _route_pad(n)
        elif base == "ValuePadding":
            route, _, _ = _route_value_pad(n)
        elif base == "Gather":                    # one pixel buffered
            route, _, _ = _route_gather(n)
            cap_min = 2 * (int(_unit(n)["inputs"][0]["shape"][-1]) // in_w) + 1
        else:
            route, _, window = _route_swg(n)
            group = max(1, window // out_w)
            cap_min = swg_buffer_depth({**n.attrs, "IFMDim": list(_pair(n.attrs["IFMDim"])),
                                        "ConvKernelDim": list(_pair(n.attrs["ConvKernelDim"])),
                                        "Stride": list(_pair(n.attrs["Stride"])),
                                        "Dilation": list(_pair(n.attrs.get("Dilation", [1, 1])))})
        if route.size != out_words * out_w:
            raise SimError(f"{n.name}: {n.op_type} produces {route.size} elements, its folded output shape "
                           f"{out_words * out_w}")
        need, oldest = router_arrays(route, in_w, out_w, in_elems, group)
        span = int((need - oldest).max()) if need.size else 1
        u = self.unit(Unit(n.name, n.name, "router", n.op_type, in_words=in_words, out_words=out_words,
                           cap=max(cap_min, span, 1), need=need, oldest=oldest, route=route.astype(np.int64),
                           analytic_cycles=int(n.exp_cycles)))
        self.connect(n, 0, u)
        self.out_fifo(u, n.outputs[0], n.out_folded[0], n.out_bits[0])

    def run(self) -> Netlist:
        first = [n for n in self.nodes if self.gin in n.inputs]
        if not first:
            raise SimError(f"no node reads the graph input {self.gin!r}")
        n0 = first[0]
        src = self.unit(Unit("input_dma", "", "source", "IODMA"))
        self.out_fifo(src, self.gin, n0.in_folded[n0.inputs.index(self.gin)], n0.in_bits[n0.inputs.index(self.gin)])
        for n in self.nodes:
            self.add(n)
        out = self.stream(self.gout)
        if out not in self.tail:
            raise SimError(f"the graph output {self.gout!r} comes from no node of the dataflow graph")
        for t, f in list(self.tail.items()):
            if t != out:
                u = self.unit(Unit(f"drain_{t}", "", "sink", "drain"))
                self.fifos[f].dst = u
                self.units[u].ins.append(f)
        sink = self.unit(Unit("output_dma", "", "sink", "IODMA"))
        f = self.tail[out]
        self.fifos[f].dst = sink
        self.units[sink].ins.append(f)
        for fo in self.fifos:
            fo.name = f"{self.units[fo.src].name} -> {self.units[fo.dst].name}"
        return Netlist(None, self.units, self.fifos, self.fifos[self.units[src].outs[0]].width,
                       self.fifos[f].width)


def elaborate_dataflow(nodes: list[DataflowNode], graph_input: str, graph_output: str) -> Netlist:
    """The timing netlist of a FINN dataflow graph whose HW nodes are ``nodes`` (in topological order); raises
    :class:`SimError` naming the node it cannot model."""
    return _Dataflow(nodes, graph_input, graph_output).run()
