"""bnhw's IR as a finn-plus dataflow graph: FINN's own units wherever FINN has one, bnhw's units
(:mod:`bnhw.hw.finn_ops`) where it has none.

FINN's builder takes a QONNX network from its front end (``step_qonnx_to_finn`` ... ``step_convert_to_hw``) and
does so for the reference nets (TFC, CNV).  For NAS-BNN and cell networks it cannot: its streamlining stops on
grouped convolutions, leaves PReLU, the fixed-point residual path and average pools off the hardware, pads a
bipolar activation with -1 where the network pads 0, and rounds threshold ties up where the network rounds half
to even.  bnhw's IR already holds the integer network, checked equal to QONNX execution on real images, so
:func:`finn_dataflow_model` writes it as the graph FINN's ``step_convert_to_hw`` would have made: generic HW nodes
(``MVAU``, ``VVAU``, ``ConvolutionInputGenerator``, ``FMPadding``, ``Thresholding``, ``Pool``,
``DuplicateStreams``, ``StreamingConcat``, ``LabelSelect``) with each IR node's FINN attributes, weights and thresholds (the same
translation bnhw's estimates use, :func:`bnhw.hw.ops.finn_ops`) and ``preferred_impl_style`` as FINN's
``SpecializeLayers`` should pick it; FINN's steps continue from there (specialise, folding, bit-width
minimisation, estimate reports, code generation).

Encodings between the units: a bipolar stream XNOR units read travels as BINARY bits (:func:`bnhw.hw.ops.
finn_stream_dt`); an XNOR MVAU without activation outputs FINN's popcount ``p``, which a bnhw unit reading it
decodes (``2p - MW``).  Zero padding: FINN pads a BINARY stream with bit 0, i.e. -1; behind an XNOR convolution
whose accumulator goes to an AddRequant, that unit adds back, per output position, the weights the -1 taps took
away (:func:`bnhw.hw.ops.padding_correction`), so the convolution stays an XNOR-popcount unit; any other zero-padded
binary window travels as TERNARY (2 bits) into a multiplying MVAU.  A max pool's window generator pads with
the type's minimum, which FINN's FMPadding (zeros) cannot: bnhw's ``ValuePadding`` unit (:func:`value_padding`)
takes the FMPadding's place in front of FINN's own window generator and ``Pool_hls``.  An unfolded ``Gather``
(wiring in the IR) runs at its producer's word width (:func:`wiring_pe`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BnhwError
from .finn_models import FinnOp
from .ir import HwGraph, Node, Stream
from .ops import FOLDING_ATTRS, finn_ops, finn_stream_dt, padding_correction
from .ops.mvau import finn_popcount, grouped_unit

__all__ = ["FinnExport", "FinnExportError", "finn_dataflow_model", "unit_type", "value_padded", "value_padding",
           "pool_window_folding", "wiring_pe"]

_GENERIC = "finn.custom_op.fpgadataflow"


class FinnExportError(BnhwError):
    """The IR has a node the FINN graph cannot express (one line naming it)."""


def unit_type(g: HwGraph, n: Node) -> str | None:
    """The bnhw unit (op type in :mod:`bnhw.hw.finn_ops`) the node becomes, ``None`` where FINN has a unit."""
    if n.op == "MVAU":
        return "GroupedMVAU" if grouped_unit(g, n) else None
    return n.op if n.op in ("AddRequant", "RPReLU", "Gather", "GlobalAvgPool", "WindowAvg") else None


def pool_window_folding(g: HwGraph, n: Node, op: FinnOp) -> dict[str, int]:
    """The attributes FINN's window generator of IR node ``n`` (``op``) takes from its max pool: FINN's depthwise
    generator writes ``(channel fold, tap, SIMD)`` and ``Pool_hls`` reads it at its PE, so SIMD must be the pool's
    PE (as FINN's ``InferPool`` and folding make it; bnhw's folding picks the two independently and its cycle
    simulator already runs the generator at the pool's PE).  Empty where nothing changes."""
    if op.op_type != "ConvolutionInputGenerator_rtl" or not int(op.attrs.get("depthwise", 0)):
        return {}
    cons = g.consumers(n.outputs[0])
    if len(cons) != 1 or cons[0].op != "WindowMax" or cons[0].pe == int(op.attrs["SIMD"]):
        return {}
    over = {"SIMD": cons[0].pe}
    if int(op.attrs.get("parallel_window", 0)) and cons[0].pe != g.in_stream(n).channels:
        over["parallel_window"] = 0
    return over


def wiring_pe(g: HwGraph, n: Node) -> int:
    """The PE of an unfolded ``Gather`` unit (wiring in the IR, which runs at the width its producer writes):
    the producer's word width, or the largest common divisor of it and the output's channels."""
    p = g.producer(n.inputs[0])
    par = 1 if p is None else p.simd if p.op == "SWG" else p.pe
    return math.gcd(par, g.out_stream(n).channels, g.in_stream(n).channels)


def value_padded(g: HwGraph, n: Node) -> bool:
    """Whether ``n`` is a window generator padding an integer stream with a value other than zero (a max pool's
    padding with the type's minimum), which FINN's FMPadding (zeros) cannot build."""
    return (n.op == "SWG" and int(n.attrs.get("pad", 0)) > 0 and int(n.attrs.get("pad_value", 0)) != 0
            and not g.out_stream(n).dtype.is_bipolar)


def value_padding(g: HwGraph, n: Node) -> tuple[Node, Stream]:
    """The padding part of value-padded window generator ``n`` on its own: a 1 x 1, stride-1 ``SWG`` with ``n``'s
    padding (at its ``pad_simd``), and its output, the padded image."""
    H, W, C = g.in_stream(n).shape
    p = int(n.attrs["pad"])
    padded = Stream(f"{n.name}__padded", (H + 2 * p, W + 2 * p, C), g.in_stream(n).dtype)
    attrs = {"k": 1, "stride": 1, "pad": p, "pad_value": int(n.attrs["pad_value"]), "dilation": 1, "channels": C,
             "ifm_dim": H, "simd": int(n.attrs.get("pad_simd", n.simd))}
    return Node(f"{n.name}__pad", "SWG", [n.inputs[0]], [padded.name], attrs, {}, n.layer), padded


@dataclass
class FinnExport:
    """The FINN graph of an IR graph and how its nodes map."""

    model: Any                                   # qonnx ModelWrapper
    #: per FINN node, in graph order: {"finn": name after SpecializeLayers, "ir": IR node, "source": "FINN unit" |
    #: "bnhw unit", "op_type": generic op type, "final": op type after SpecializeLayers, "finn_op": the index
    #: into the IR node's FINN ops (:func:`bnhw.hw.ops.finn_ops`) the node stands for, None: the whole IR node,
    #: "models": the type of that FINN op (a bnhw unit for the whole node: its own op type), "finn_attrs": FINN
    #: attributes set otherwise than the IR's op says (:func:`pool_window_folding`)}
    nodes: list[dict[str, Any]] = field(default_factory=list)
    folding: dict[str, dict[str, int]] = field(default_factory=dict)   # FINN folding config (final names)
    #: streams FINN carries in another encoding than the IR: "binary" (bit b = 2b - 1) or "popcount:MW" (2p - MW)
    encodings: dict[str, str] = field(default_factory=dict)
    #: streams whose FINN values differ from the IR's by design: a zero-padded window FINN pads with -1 and the
    #: accumulator behind it (stream -> the AddRequant that adds the difference back)
    padded_minus_one: dict[str, str] = field(default_factory=dict)

    def ir_value(self, stream: str, value: np.ndarray) -> np.ndarray:
        """The IR's value of ``stream`` from FINN's (integers, int64)."""
        x = np.rint(np.asarray(value, dtype=np.float64)).astype(np.int64)
        how = self.encodings.get(stream, "")
        if how == "binary":
            return 2 * x - 1
        if how.startswith("popcount:"):
            return 2 * x - int(how.split(":", 1)[1])
        return x

    def units(self) -> list[str]:
        """The bnhw unit types the graph holds."""
        return sorted({r["op_type"] for r in self.nodes if r["source"] == "bnhw unit"})


def _finn_node(op: FinnOp, inputs: list[str], outputs: list[str], name: str):
    from onnx import helper

    generic, _, style = op.op_type.rpartition("_")
    if style not in ("hls", "rtl"):
        generic, style = op.op_type, ""
    attrs = dict(op.attrs)
    if style:
        attrs["preferred_impl_style"] = style
    return helper.make_node(generic, inputs, outputs, domain=_GENERIC, backend="fpgadataflow", name=name, **attrs)


def finn_dataflow_model(g: HwGraph) -> FinnExport:
    """The finn-plus dataflow graph of ``g`` at its folding (see the module docstring).  Its input is the IR's
    integer input ``[1, H, W, C]``, its output the IR's output."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.util.basic import qonnx_make_model

    from .finn_ops import DOMAIN, UNITS, finn_shape, hls_op_type, unit_attrs

    nodes: list[Any] = []
    inits: list[tuple[str, np.ndarray, str]] = []
    rows: list[dict[str, Any]] = []
    dtypes: dict[str, str] = {g.input: g.streams[g.input].dtype.finn_name()}
    shapes: dict[str, list[int]] = {g.input: finn_shape(g.streams[g.input].shape)}
    popcount: dict[str, int] = {}            # stream -> MW of the XNOR MVAU whose popcount it carries

    def add_unit(unit: str, gg: HwGraph, n: Node, ir_name: str, finn_op: int | None, folding: dict[str, int],
                 models: str = "") -> None:
        """Append bnhw unit ``unit`` standing for node ``n`` of ``gg`` (the row names IR node ``ir_name``;
        ``finn_op``: the index of the FINN op of that node the unit stands for, ``None``: the whole node;
        ``models``: that FINN op's type)."""
        decode = []
        for s in n.inputs:
            dt = finn_stream_dt(gg, s)
            decode.append(f"popcount:{popcount[s]}" if s in popcount else "binary" if dt == "BINARY" else "")
        encode = ["binary" if finn_stream_dt(gg, s) == "BINARY" else "" for s in n.outputs]
        attrs = unit_attrs(gg, n, [dtypes[s] for s in n.inputs], [finn_stream_dt(gg, s) for s in n.outputs],
                           decode, encode)
        node = helper.make_node(hls_op_type(unit), list(n.inputs), list(n.outputs), domain=DOMAIN,
                                backend="fpgadataflow", name=n.name, **attrs)
        inst = UNITS[unit](node)
        for i, s in enumerate(n.outputs):
            dtypes[s] = inst.get_output_datatype(i).name
            shapes[s] = list(inst.get_normal_output_shape(i))
        nodes.append(node)
        rows.append({"ir": ir_name, "source": "bnhw unit", "op_type": unit, "final": hls_op_type(unit),
                     "finn_op": finn_op, "models": models or hls_op_type(unit), "folding": folding})

    for n in g.nodes:
        unit = unit_type(g, n)
        if unit is not None:
            corr = padding_correction(g, n) if n.op == "AddRequant" else None
            if corr is not None:                  # the padding correction travels with the unit
                n = copy.deepcopy(n)
                n.attrs["border_rows"], n.attrs["border_cols"] = corr[0], corr[1]
                n.params["border"] = corr[2]
            if n.op == "Gather" and "pe" not in n.attrs:     # wiring: as wide as its producer's words
                n = copy.deepcopy(n)
                n.attrs["pe"] = wiring_pe(g, n)
            add_unit(unit, g, n, n.name, None, {"PE": n.pe, "SIMD": n.simd} if n.op == "MVAU" else {"PE": n.pe})
            continue
        ops = finn_ops(g, n)
        if not ops:
            raise FinnExportError(f"{n.name}: op {n.op!r} has neither a FINN unit nor a bnhw unit")
        if n.op in ("Thresholding", "MVAU") and "thresholds" in n.params and int(n.attrs.get("out_scale", 1)) != 1 \
                and not g.out_stream(n).dtype.is_bipolar:
            raise FinnExportError(f"{n.name}: an integer activation with output scale {n.attrs['out_scale']} "
                                  "has no FINN unit")
        for s in n.inputs:
            if s in popcount:
                raise FinnExportError(f"{n.name}: reads the popcount of an XNOR MVAU ({s!r}); only bnhw's units "
                                      "decode it")
        src = n.inputs[0]
        first = 0
        if value_padded(g, n):                  # bnhw's ValuePadding in place of FINN's FMPadding (zeros)
            pad, padded = value_padding(g, n)
            add_unit("ValuePadding", HwGraph.unit(pad, {**g.streams, padded.name: padded}, False), pad, n.name,
                     0, {"SIMD": pad.simd}, ops[0].op_type)
            src, first = padded.name, 1
        for k, op in enumerate(ops):
            if k < first:
                continue
            over = pool_window_folding(g, n, op)
            if over:
                op = dataclasses.replace(op, attrs={**op.attrs, **over})
            last = k == len(ops) - 1
            outs = list(n.outputs) if last else [f"{n.name}__{op.role}"]
            ins = [src, *(n.inputs[1:] if k == first else [])]          # a Concat's further inputs
            if op.weights is not None:
                wname = f"{n.name}__weights"
                inits.append((wname, np.asarray(op.weights, dtype=np.float32), op.attrs["weightDataType"]))
                ins.append(wname)
            if op.thresholds is not None:
                tname = f"{n.name}__thresholds"
                tdt = op.attrs["weightDataType"] if op.op_type.startswith("Thresholding") else "INT32"
                inits.append((tname, np.asarray(op.thresholds, dtype=np.float32), tdt))
                ins.append(tname)
            node = _finn_node(op, ins, outs, f"{n.name}__{k}")
            inst = getCustomOp(node)
            for s in outs:
                dtypes[s] = inst.get_output_datatype().name
                shapes[s] = [int(v) for v in inst.get_normal_output_shape()]
            nodes.append(node)
            rows.append({"ir": n.name, "source": "FINN unit", "op_type": node.op_type, "final": op.op_type,
                         "finn_op": k, "models": op.op_type, "finn_attrs": over, "folding": {a: int(op.attrs[a]) for a in FOLDING_ATTRS if a in op.attrs}})
            src = outs[0]
        mw = finn_popcount(g, n.outputs[0])
        if mw is not None:
            popcount[n.outputs[0]] = mw
    if g.output in popcount:
        raise FinnExportError(f"the graph ends in an XNOR popcount ({g.output!r})")
    # names as FINN's GiveUniqueNodeNames gives them after SpecializeLayers: {op type}_{i} per type, in order
    count: dict[str, int] = {}
    for node, r in zip(nodes, rows):
        i = count.get(r["final"], 0)
        count[r["final"]] = i + 1
        r["finn"] = node.name = f"{r['final']}_{i}"
    vi = lambda s: helper.make_tensor_value_info(s, TensorProto.FLOAT, shapes[s])  # noqa: E731
    inner = [vi(s) for s in shapes if s not in (g.input, g.output)]
    graph = helper.make_graph(nodes, f"{g.name}_finn", [vi(g.input)], [vi(g.output)], value_info=inner)
    model = ModelWrapper(qonnx_make_model(graph, producer_name="bnhw"))
    for s, dt in dtypes.items():
        model.set_tensor_datatype(s, DataType[dt])
    for name, arr, dt in inits:
        model.set_initializer(name, arr)
        model.set_tensor_datatype(name, DataType[dt])
    from .finn_steps import NODE_ORDER_KEY

    model.set_metadata_prop(NODE_ORDER_KEY, json.dumps([nd.output[0] for nd in nodes]))
    folding = {r["finn"]: r["folding"] for r in rows if r["folding"]}
    enc = {s: "binary" for s in g.streams if s in dtypes and finn_stream_dt(g, s) == "BINARY"}
    enc.update({s: f"popcount:{mw}" for s, mw in popcount.items()})
    minus_one = {}
    for n in g.nodes:
        if n.op == "AddRequant" and padding_correction(g, n) is not None:
            m = g.producer(n.inputs[0])
            assert m is not None
            minus_one[m.inputs[0]] = minus_one[m.outputs[0]] = n.name
    for r in rows:
        r.pop("folding")
    return FinnExport(model, rows, folding, enc, minus_one)
