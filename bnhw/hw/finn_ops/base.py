"""What every bnhw unit in a FINN graph shares (:class:`IrUnit`, a finn-plus ``HWCustomOp``).

A unit node carries the IR node it stands for: ``unit`` (JSON: the IR op, its attributes, its input and
output streams with their IR types and the FINN types they travel as) and one tensor attribute per IR
parameter, so it executes, estimates and generates code from the node alone, like FINN's own nodes.

* execution (:meth:`IrUnit.execute_node`): the IR op's reference semantics (:mod:`bnhw.hw.ops`), exact in
  64-bit integers; an input that travels in FINN's encoding is decoded first (a BINARY bit ``b`` is the
  bipolar ``2b - 1``, an XNOR unit's popcount ``p`` over ``MW`` inputs is the bipolar sum ``2p - MW``);
* estimates (``get_exp_cycles``, ``lut_estimation``, ...): the IR op's cycle / resource model (FINN's
  formulas where the op is built like a FINN unit), with the node's ``PE`` / ``SIMD``;
* code generation (``code_generation_ipgen``): bnhw's HLS C++ for the unit (:mod:`bnhw.hw.hls`), written
  into ``code_gen_dir_ipgen`` by :func:`bnhw.hw.finn_steps.step_bnhw_units`: FINN's own ``PrepareIP``
  generates code for its ``.hls`` / ``.rtl`` domains only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from finn.custom_op.fpgadataflow.hwcustomop import HWCustomOp
from onnx import numpy_helper
from qonnx.core.datatype import DataType

from ..ir import DType, HwGraph, Node, Stream
from ..ops import get_op

__all__ = ["IrUnit", "DOMAIN", "unit_attrs", "finn_shape"]

#: the qonnx domain of bnhw's units (the Python package that holds them)
DOMAIN = "bnhw.hw.finn_ops"


def finn_shape(shape) -> list[int]:
    """FINN's tensor shape of an IR stream ``(H, W, C)``: ``[1, H, W, C]``, a vector ``[1, C]``."""
    h, w, c = (int(v) for v in shape)
    return [1, c] if (h, w) == (1, 1) else [1, h, w, c]


def unit_attrs(g: HwGraph, n: Node, finn_in: list[str], finn_out: list[str], decode: list[str],
               encode: list[str]) -> dict[str, Any]:
    """The node attributes of the unit standing for IR node ``n`` (``finn_in`` / ``finn_out``: the FINN types
    its streams travel as; ``decode`` / ``encode``: per input / output, ``""``, ``"binary"`` or
    ``"popcount:MW"``)."""
    unit = {"op": n.op, "name": n.name, "layer": n.layer,
            "attrs": {k: v for k, v in n.attrs.items() if k not in ("pe", "simd")},
            "inputs": [g.streams[s].to_dict() for s in n.inputs],
            "outputs": [g.streams[s].to_dict() for s in n.outputs],
            "finn_in": finn_in, "finn_out": finn_out, "decode": decode, "encode": encode,
            "last": g.is_output(n.outputs[0])}
    out: dict[str, Any] = {"unit": json.dumps(unit, default=_json), "PE": n.pe, "SIMD": n.simd}
    for k, v in n.params.items():
        out[f"param_{k}"] = numpy_helper.from_array(np.asarray(v, dtype=np.int64), name=k)
    return out


def _json(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _decode(x: np.ndarray, how: str) -> np.ndarray:
    if how == "binary":
        return 2 * x - 1
    if how.startswith("popcount:"):
        return 2 * x - int(how.split(":", 1)[1])
    return x


def _encode(x: np.ndarray, how: str) -> np.ndarray:
    return (x + 1) // 2 if how == "binary" else x


class IrUnit(HWCustomOp):
    """A bnhw unit as a FINN ``fpgadataflow`` node (see the module docstring).  Subclasses (one module per
    unit) name the IR op they stand for, their parameters and why no FINN unit can serve."""

    #: the IR op (``bnhw.hw.ops``) the unit executes and is modelled as
    ir_op: ClassVar[str] = ""
    #: the IR parameters the node carries (tensor attributes ``param_<name>``)
    params: ClassVar[tuple[str, ...]] = ()
    #: why FINN's units cannot build it (the build report lists it)
    why: ClassVar[str] = ""

    def get_nodeattr_types(self):
        attrs = dict(super().get_nodeattr_types())
        attrs.update({"unit": ("s", True, ""), "PE": ("i", False, 1), "SIMD": ("i", False, 1)})
        for p in self.params:
            attrs[f"param_{p}"] = ("t", False, np.zeros(0, dtype=np.int64))
        return attrs

    # ------------------------------------------------------------- the IR node
    def description(self) -> dict[str, Any]:
        """The ``unit`` attribute: the IR op, attributes, streams, FINN types and encodings (see
        :func:`unit_attrs`)."""
        return json.loads(self.get_nodeattr("unit"))

    def ir(self) -> tuple[HwGraph, Node]:
        """The one-node IR graph the unit stands for, at the node's folding."""
        d = self.description()
        streams = {s["name"]: Stream(s["name"], tuple(s["shape"]), DType.from_dict(s["dtype"]))
                   for s in d["inputs"] + d["outputs"]}
        params = {}
        for p in self.params:
            v = np.asarray(self.get_nodeattr(f"param_{p}"))
            if v.size:
                params[p] = v.astype(np.int64)
        attrs = dict(d["attrs"], pe=int(self.get_nodeattr("PE")), simd=int(self.get_nodeattr("SIMD")))
        node = Node(d["name"], d["op"], [s["name"] for s in d["inputs"]], [s["name"] for s in d["outputs"]],
                    attrs, params, d.get("layer", ""))
        g = HwGraph.unit(node, streams, bool(d.get("last", True)))
        g.meta["finn_dtypes"] = dict(zip(node.inputs + node.outputs, d["finn_in"] + d["finn_out"]))
        return g, node

    # ------------------------------------------------------------- shapes and types
    def _stream(self, kind: str, ind: int) -> dict[str, Any]:
        return self.description()[kind][ind]

    def get_normal_input_shape(self, ind=0):
        return finn_shape(self._stream("inputs", ind)["shape"])

    def get_normal_output_shape(self, ind=0):
        return finn_shape(self._stream("outputs", ind)["shape"])

    def _in_par(self, ind: int) -> int:
        return int(self.get_nodeattr("SIMD" if self.ir_op in ("MVAU", "SWG") else "PE"))

    def _out_par(self, ind: int) -> int:
        return int(self.get_nodeattr("PE"))

    def _folded(self, shape: list[int], par: int) -> list[int]:
        c = shape[-1]
        par = par if c % par == 0 else 1
        return shape[:-1] + [c // par, par]

    def get_folded_input_shape(self, ind=0):
        return self._folded(self.get_normal_input_shape(ind), self._in_par(ind))

    def get_folded_output_shape(self, ind=0):
        return self._folded(self.get_normal_output_shape(ind), self._out_par(ind))

    def get_input_datatype(self, ind=0):
        return DataType[self.description()["finn_in"][ind]]

    def get_output_datatype(self, ind=0):
        return DataType[self.description()["finn_out"][ind]]

    def get_instream_width(self, ind=0):
        return self.get_input_datatype(ind).bitwidth() * self.get_folded_input_shape(ind)[-1]

    def get_outstream_width(self, ind=0):
        return self.get_output_datatype(ind).bitwidth() * self.get_folded_output_shape(ind)[-1]

    def infer_node_datatype(self, model):
        for i, o in enumerate(self.onnx_node.output):
            model.set_tensor_datatype(o, self.get_output_datatype(i))

    def verify_node(self):
        return [] if self.ir_op else [f"{type(self).__name__}: no IR op"]

    # ------------------------------------------------------------- execution
    def execute_node(self, context, graph):
        g, n = self.ir()
        d = self.description()
        ins = []
        for i, name in enumerate(self.onnx_node.input):
            shape = tuple(d["inputs"][i]["shape"])
            x = np.rint(np.asarray(context[name], dtype=np.float64)).astype(np.int64).reshape(shape)
            ins.append(_decode(x, d["decode"][i]))
        outs = get_op(n.op).execute(g, n, ins)
        for i, name in enumerate(self.onnx_node.output):
            y = _encode(np.asarray(outs[i], dtype=np.int64), d["encode"][i])
            context[name] = y.astype(np.float64).reshape(self.get_normal_output_shape(i))

    # ------------------------------------------------------------- estimates (the IR op's models)
    def get_exp_cycles(self):
        g, n = self.ir()
        return int(get_op(n.op).cycles(g, n))

    def _res(self):
        g, n = self.ir()
        return get_op(n.op).resources(g, n)

    def lut_estimation(self, fpgapart=None):
        return self._res().lut

    def bram_estimation(self, fpgapart=None):
        return int(self._res().bram18)

    def uram_estimation(self, fpgapart=None):
        return int(self._res().uram)

    def dsp_estimation(self, fpgapart=None):
        return int(self._res().dsp)

    # ------------------------------------------------------------- code generation
    def hls_graph(self) -> HwGraph:
        """The unit's IR graph with its streams in the encodings FINN's neighbours use, for bnhw's HLS generator:
        a TERNARY stream is a 2-bit signed integer (FINN's layout, not bnhw's value + valid bit planes), so an
        MVAU reading it multiplies instead of XNOR-ing; a popcount input of AddRequant is folded into its
        parameters (``(2p - MW) * A + B = p * 2A + (B - MW * A)``) and so is a padding correction (``B`` becomes
        a table per position class: ``+ border * A``).  BINARY streams are bnhw's ``Bipolar``
        (bit 1 = +1, FINN's convention)."""
        import copy

        g, n = self.ir()
        d = self.description()
        streams = dict(g.streams)
        n = copy.deepcopy(n)
        a0 = np.asarray(n.params.get("A", 0), dtype=np.int64)     # the IR's A, before any folding below
        for s, dt in zip(n.inputs + n.outputs, d["finn_in"] + d["finn_out"]):
            if dt == "BINARY" and streams[s].dtype.padded:      # FINN's 1-bit window, padded with -1
                streams[s] = Stream(s, streams[s].shape, DType.bipolar(False))
            if dt == "TERNARY":
                streams[s] = Stream(s, streams[s].shape, DType.int_(2, True))
                if n.op == "MVAU" and s == n.inputs[0]:
                    n.attrs["binary_xnor"] = False
        for i, how in enumerate(d["decode"]):
            if not how.startswith("popcount:"):
                continue
            if n.op != "AddRequant" or i != 0:
                raise ValueError(f"{n.name}: input {i} is an XNOR popcount, which only AddRequant's first input "
                                 "takes")
            mw = int(how.split(":", 1)[1])
            a = np.asarray(n.params["A"], dtype=np.int64)
            n.params["A"], n.params["B"] = 2 * a, np.asarray(n.params["B"], dtype=np.int64) - mw * a
            s = n.inputs[0]
            streams[s] = Stream(s, streams[s].shape, DType.for_range(0, mw))
        if "border" in n.params:                 # (x + border) * A + B: a bias per position class and channel
            border = np.asarray(n.params.pop("border"), dtype=np.int64)
            n.params["B"] = np.asarray(n.params["B"], dtype=np.int64)[None, None, :] + border * a0[None, None, :]
        return HwGraph.unit(n, streams, bool(d.get("last", True)))

    def code_generation_ipgen(self, model, fpgapart, clk):
        """bnhw's HLS C++ for the unit (a top function ``{node name}`` with one AXI stream per input and
        output, in FINN's encodings: :meth:`hls_graph`) into ``code_gen_dir_ipgen``."""
        from ..hls.codegen import Generator, c_ident

        out = Path(self.get_nodeattr("code_gen_dir_ipgen"))
        files = Generator(self.hls_graph(), c_ident(self.onnx_node.name)).run()
        for rel, text in files.items():
            p = out / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
