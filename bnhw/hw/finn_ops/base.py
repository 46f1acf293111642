"""What every bnhw unit in a FINN graph shares (:class:`IrUnit`, a finn-plus ``HWCustomOp``).

A unit node carries the IR node it stands for: ``unit`` (JSON: the IR op, its attributes, its input and
output streams with their IR types and the FINN types they travel as) and one tensor attribute per IR
parameter, so it executes, estimates and generates code from the node alone, like FINN's own nodes.

* execution (:meth:`IrUnit.execute_node`): the IR op's reference semantics (:mod:`bnhw.hw.ops`), exact in
  64-bit integers; an input that travels in FINN's encoding is decoded first (a BINARY bit ``b`` is the
  bipolar ``2b - 1``, an XNOR unit's popcount ``p`` over ``MW`` inputs is the bipolar sum ``2p - MW``);
* estimates (``get_exp_cycles``, ``lut_estimation``, ...): the IR op's cycle / resource model (FINN's
  formulas where the op is built like a FINN unit), with the node's ``PE`` / ``SIMD``;
* code generation: the unit is a finn-plus ``HLSBackend`` node (op type ``<Unit>_hls`` in FINN's HLS domain,
  :mod:`bnhw.hw.finn_ops`), so FINN's own ``PrepareIP`` / ``HLSSynthIP`` / ``CreateStitchedIP`` take it like
  ``MVAU_hls``: FINN's ``code_generation_ipgen`` writes ``top_<node>.cpp`` from its template through the hooks
  below (a top function ``<node>`` with FINN's AXI stream ports ``in0_V``, ``in1_V``, ..., ``out0_V`` and
  ``ap_ctrl_none``, calling bnhw's function of the unit, :mod:`bnhw.hw.hls`, whose sources go to ``firmware/``)
  and ``hls_syn_<node>.tcl``; ``HLSSynthIP`` runs that script with Vitis HLS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from finn.custom_op.fpgadataflow.hlsbackend import HLSBackend
from onnx import numpy_helper
from qonnx.core.datatype import DataType

from ..ir import DType, HwGraph, Node, Stream
from ..ops import get_op

__all__ = ["IrUnit", "DOMAIN", "unit_attrs", "finn_shape"]

#: the qonnx domain of bnhw's units: FINN's HLS nodes' (``finn.util.fpgadataflow.is_hls_node``)
DOMAIN = "finn.custom_op.fpgadataflow.hls"


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


class IrUnit(HLSBackend):
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
        return int(self.get_nodeattr("SIMD" if self.ir_op == "SWG" else "PE"))

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
        """As FINN's nodes do: an integer input takes the FINN type its producer now writes (FINN's
        ``MinimizeAccumulatorWidth`` narrows an MVAU's output), so the unit reads words as wide as they come."""
        d = self.description()
        for i, t in enumerate(self.onnx_node.input):
            dt = model.get_tensor_datatype(t)
            if (dt.is_integer() and dt.name not in ("BINARY", "BIPOLAR", "TERNARY")
                    and d["finn_in"][i] not in ("BINARY", "BIPOLAR", "TERNARY") and dt.name != d["finn_in"][i]):
                d["finn_in"][i] = dt.name
                self.set_nodeattr("unit", json.dumps(d))
        for i, o in enumerate(self.onnx_node.output):
            model.set_tensor_datatype(o, self.get_output_datatype(i))

    def verify_node(self):
        return [] if self.ir_op else [f"{type(self).__name__}: no IR op"]

    # ------------------------------------------------------------- execution
    def execute_node(self, context, graph):
        """FINN's execution of the node: ``exec_mode`` ``""`` (python, the default): the IR op's semantics;
        ``"rtlsim"``: FINN's simulation of the synthesised unit (after ``HLSSynthIP`` / ``PrepareRTLSim``, which
        need Vitis HLS and Vivado); ``"cppsim"`` is not offered (FINN compiles it against Vitis HLS's headers)."""
        mode = self.get_nodeattr("exec_mode")
        if mode == "rtlsim":
            return super().execute_node(context, graph)
        if mode == "cppsim":
            raise ValueError(f"{self.onnx_node.name}: bnhw's units have no cppsim; use exec_mode '' (python) or "
                             "'rtlsim'")
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
    def unit_cycles(self) -> int:
        """The unit's cycles per frame: the IR op's model (:meth:`bnhw.hw.ops.base.HwOp.cycles`)."""
        g, n = self.ir()
        return int(get_op(n.op).cycles(g, n))

    def unit_resources(self):
        """The unit's resources: the IR op's model (:meth:`bnhw.hw.ops.base.HwOp.resources`)."""
        g, n = self.ir()
        return get_op(n.op).resources(g, n)

    def get_exp_cycles(self):
        return self.unit_cycles()

    def _res(self):
        return self.unit_resources()

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
        for s, dt in zip(n.inputs, d["finn_in"]):   # an integer input word is as wide as FINN's stream
            t = streams[s].dtype
            bits = DataType[dt].bitwidth()
            if not t.is_bipolar and dt not in ("BINARY", "BIPOLAR", "TERNARY") and bits != t.bits:
                streams[s] = Stream(s, streams[s].shape, DType.int_(bits, t.signed, t.scale))
        if "border" in n.params:                 # (x + border) * A + B: a bias per position class and channel
            border = np.asarray(n.params.pop("border"), dtype=np.int64)
            n.params["B"] = np.asarray(n.params["B"], dtype=np.int64)[None, None, :] + border * a0[None, None, :]
        return HwGraph.unit(n, streams, bool(d.get("last", True)))

    # ------------------------------------------------------------- FINN's HLS node (HLSBackend's hooks)
    def unit_function(self) -> str:
        """The C++ function bnhw generates for the unit (:mod:`bnhw.hw.hls`); FINN's top function, named after
        the node, wraps it."""
        from ..hls.codegen import c_ident

        return f"{c_ident(self.onnx_node.name)}_unit"

    def unit_code(self) -> tuple[Any, dict[str, str]]:
        """``(generator, files)``: bnhw's HLS C++ of the unit (:meth:`hls_graph`, :meth:`unit_function`), every
        word as wide as FINN's stream (a mismatch is a bnhw bug, said naming the node and port)."""
        from ..hls.codegen import Generator, word_bits

        g = self.hls_graph()
        gen = Generator(g, self.unit_function(), interface=False)
        files = gen.run()
        n = g.nodes[0]
        for kind, streams, finn_width in (("in", n.inputs, self.get_instream_width),
                                          ("out", n.outputs, self.get_outstream_width)):
            for i, s in enumerate(streams):
                bits = word_bits(g.streams[s].dtype, gen.par[s])
                if bits != finn_width(i):
                    raise ValueError(f"{self.onnx_node.name}: bnhw's {kind}{i} word is {bits} bits, FINN's stream "
                                     f"{finn_width(i)}")
        return gen, files

    def ports(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """``(inputs, outputs)``: FINN's top function's stream ports (the names FINN's stitching expects,
        ``get_verilog_top_module_intf_names``) with their words' widths (``ap_uint<width>``: Vitis HLS pads the
        AXI stream's TDATA to whole bytes, the padded width FINN's stitching uses)."""
        intf = self.get_verilog_top_module_intf_names()
        return ([(str(p), int(self.get_instream_width(i))) for i, (p, _) in enumerate(intf["s_axis"])],
                [(str(p), int(self.get_outstream_width(i))) for i, (p, _) in enumerate(intf["m_axis"])])

    def _ports(self) -> list[tuple[str, int]]:
        ins, outs = self.ports()
        return ins + outs

    def get_ap_int_max_w(self):
        return max(super().get_ap_int_max_w(), self.unit_code()[0].ap_int_max_w)

    def generate_params(self, model, path):
        """bnhw's sources of the unit (its function, parameter headers, ``bnhw_dataflow.h``) under
        ``<path>/firmware``, which FINN's top file ``top_<node>.cpp`` includes."""
        for rel, text in self.unit_code()[1].items():
            p = Path(path) / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)

    def global_includes(self):
        self.code_gen_dict["$GLOBALS$"] = [f'#include "firmware/{self.unit_function()}.cpp"']

    def defines(self, var):
        self.code_gen_dict["$DEFINES$"] = [
            f"// {self.onnx_node.name}: bnhw's {self.ir_op} unit ({type(self).__name__}); FINN's top function "
            f"below wraps bnhw's {self.unit_function()} (one frame per call)"]

    def blackboxfunction(self):
        args = ", ".join(f"hls::stream<ap_uint<{w}>> &{p}" for p, w in self._ports())
        self.code_gen_dict["$BLACKBOXFUNCTION$"] = [f"void {self.onnx_node.name}({args})"]

    def pragmas(self):
        self.code_gen_dict["$PRAGMAS$"] = [f"#pragma HLS INTERFACE axis port={p}" for p, _ in self._ports()] + [
            "#pragma HLS INTERFACE ap_ctrl_none port=return"]

    def docompute(self):
        ins, out = ([p for p, _ in ports] for ports in self.ports())
        # bnhw's function takes (in, out, in1, in2, ...)
        self.code_gen_dict["$DOCOMPUTE$"] = [f"{self.unit_function()}({', '.join([ins[0], out[0], *ins[1:]])});"]

    # ------------------------------------------------------------- C simulation of FINN's generated top
    def c_simulate(self, inputs: list[np.ndarray], work_dir) -> np.ndarray:
        """C-simulate FINN's project of the unit (``top_<node>.cpp`` in ``code_gen_dir_ipgen``, which FINN's
        ``code_generation_ipgen`` wrote) with g++ and hls4ml's ap_types on one frame, as FINN's rtlsim would
        drive the synthesised IP: ``inputs`` (FINN's values, normal shapes) are packed into words by FINN's
        ``npy_to_rtlsim_input`` and fed to the ports ``in0_V``, ... of FINN's top function; the words of
        ``out0_V`` are unpacked by FINN's ``rtlsim_output_to_npy`` (returned in the normal output shape).  FINN's
        template includes finn-hlslib's ``bnn-library.h``, which the units do not use: an empty one stands in."""
        import shutil
        import subprocess

        from finn.util.data_packing import npy_to_rtlsim_input, rtlsim_output_to_npy

        from ..hls.codegen import ap_types_dir

        src = Path(self.get_nodeattr("code_gen_dir_ipgen"))
        name = self.onnx_node.name
        top = src / f"top_{name}.cpp"
        if not top.is_file():
            raise ValueError(f"{name}: no {top.name} in code_gen_dir_ipgen {str(src)!r}: run FINN's PrepareIP first")
        cxx = shutil.which("g++")
        if cxx is None:
            raise ValueError(f"{name}: g++ is not installed: FINN's top file cannot be C-simulated")
        work = Path(work_dir)
        (work / "stub").mkdir(parents=True, exist_ok=True)
        (work / "stub" / "bnn-library.h").write_text("// finn-hlslib is not used by bnhw's units\n")
        s_axis, ((port_out, w_out),) = self.ports()
        decls, feed = [], []
        for i, ((port, width), x) in enumerate(zip(s_axis, inputs)):
            dt = self.get_input_datatype(i)
            words = npy_to_rtlsim_input(np.asarray(x, dtype=np.float32).reshape(self.get_folded_input_shape(i)),
                                        dt, self.get_instream_width(i))
            chunks = (int(width) + 31) // 32
            vals = [(int(w) >> (32 * k)) & 0xFFFFFFFF for w in words for k in reversed(range(chunks))]
            decls.append(f"static const unsigned v_{port}[{len(vals)}] = {{{', '.join(f'{v}u' for v in vals)}}};")
            feed.append(f"    hls::stream<ap_uint<{width}>> {port};\n"
                        f"    for (int w = 0; w < {len(words)}; w++) {{ ap_uint<{width}> x = 0;\n"
                        f"        for (int k = 0; k < {chunks}; k++) {{ x = x << 32; x = x | ap_uint<{width}>(v_{port}"
                        f"[w * {chunks} + k]); }}\n        {port}.write(x); }}")
        n_out = int(np.prod(self.get_folded_output_shape(0)[:-1]))
        chunks = (int(w_out) + 31) // 32
        args = ", ".join([p for p, _ in s_axis] + [port_out])
        tb = ("#include <cstdio>\n" f"#include \"{top}\"\n" + "\n".join(decls) + "\nint main() {\n" + "\n".join(feed)
              + f"\n    hls::stream<ap_uint<{w_out}>> {port_out};\n    {name}({args});\n"
              f"    for (int w = 0; w < {n_out}; w++) {{ ap_uint<{w_out}> x = {port_out}.read();\n"
              f"        for (int k = {chunks - 1}; k >= 0; k--) printf(\"%u \", (unsigned)ap_uint<32>(x >> (32 * k)));"
              "\n        printf(\"\\n\"); }\n    return 0;\n}\n")
        (work / "tb.cpp").write_text(tb)
        exe = work / "tb"
        r = subprocess.run([cxx, "-O0", "-std=c++14", f"-I{ap_types_dir()}", f"-I{work / 'stub'}", "-o", str(exe),
                            str(work / "tb.cpp")], capture_output=True, text=True)
        if r.returncode != 0:
            errs = [ln for ln in r.stderr.splitlines() if "error" in ln] or r.stderr.splitlines() or ["?"]
            raise ValueError(f"{name}: g++ failed on FINN's {top.name}: {errs[0]}")
        lines = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()
        words = []
        for ln in lines:
            w = 0
            for c in ln.split():
                w = (w << 32) | int(c)
            words.append(w)
        odt = self.get_output_datatype(0)
        out = rtlsim_output_to_npy(words, None, odt, self.get_folded_output_shape(0), self.get_outstream_width(0),
                                   odt.bitwidth())
        return np.asarray(out).reshape(self.get_normal_output_shape(0))
