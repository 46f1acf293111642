"""The one place in bnhw that touches finn-plus's internals: FINN's own models on IR nodes, its dataflow
builder set up to run offline (:func:`finn_builder`, :func:`finn_build_dir`, the faster weight-file packing), and
its node execution (:class:`FinnExecutor`).

Used to check :mod:`bnhw.hw.finn_models` (bnhw's numpy copy of FINN's analytical
models) and :mod:`bnhw.hw.setfolding` against finn-plus itself.  Nothing else in bnhw
imports finn-plus, and bnhw works without it (:func:`finn_available` says why not).

* :func:`finn_node_model` builds a qonnx ``ModelWrapper`` holding FINN's custom op(s)
  for one IR node (domain ``finn.custom_op.fpgadataflow.hls`` / ``.rtl``, FINN
  attributes, weight / threshold initializers in FINN's layout and datatypes) and runs
  FINN's bit-width minimisation on it, as the estimate-only build flow does
  (``MinimizeWeightBitWidth``, ``MinimizeAccumulatorWidth``, ``RoundAndClipThresholds``,
  ``MinimizeWeightBitWidth``, ``InferDataTypes``: ``_minimize_bit_width`` of
  ``finn/builder/build_dataflow_steps.py``).
* :func:`finn_estimates` calls FINN's ``get_exp_cycles`` / ``lut_estimation`` /
  ``bram_estimation`` / ``uram_estimation`` / ``dsp_estimation`` on it.
* :func:`finn_set_folding_reference` runs finn-plus's real ``SetFolding`` on a FINN graph
  equivalent to the whole IR graph and returns the folding it chose.

Workarounds for finn-plus being installed with ``pip install --no-deps`` and without
Vivado: none are needed for what this module uses (checked with finn-plus 1.6.1).  The
custom-op classes, the minimisation transforms, ``SetFolding``, ``AnnotateCycles`` and
``dataflow_performance`` import and run without Vivado, the XSI simulator or finn-hlslib:
those are only reached by code generation / simulation methods, which are never called
here.  If a future finn-plus imports them eagerly, :func:`finn_available` turns False
with the import error as reason, and the callers (tests) skip.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import numpy as np

from .finn_models import FinnOp, Resources
from .ir import HwGraph, Node
from .ops import finn_ops

__all__ = ["finn_available", "finn_unavailable_reason", "finn_builder_available", "finn_builder_unavailable_reason",
           "finn_builder", "finn_build_dir", "vivado_available", "NO_VIVADO", "finn_node_model", "finn_estimates",
           "finn_op_estimates", "finn_set_folding_reference", "FPGA_PART", "FinnExecutor", "minimized_copy"]

#: the part the estimates are asked for (Pynq-Z2); FINN's models used here ignore it
FPGA_PART = "xc7z020clg400-1"


@functools.lru_cache(maxsize=1)
def _import_error() -> str:
    try:
        import finn.custom_op.fpgadataflow.hls  # noqa: F401
        import finn.custom_op.fpgadataflow.rtl  # noqa: F401
        import finn.transformation.fpgadataflow.set_folding  # noqa: F401
        import qonnx.core.modelwrapper  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable"
        return f"finn-plus is not importable: {type(e).__name__}: {e}"
    return ""


def finn_available() -> bool:
    """True when finn-plus (and qonnx) can be imported and used here."""
    return _import_error() == ""


def finn_unavailable_reason() -> str:
    """One line saying why finn-plus is not usable ('' when it is)."""
    return _import_error()


def _domain(op_type: str) -> str:
    return "finn.custom_op.fpgadataflow." + ("rtl" if op_type.endswith("_rtl") else "hls")


class _Builder:
    """Accumulates FINN nodes, tensors and initializers for a qonnx model."""

    def __init__(self):
        self.nodes: list = []
        self.inputs: dict[str, Any] = {}       # graph inputs: name -> (shape, dtype name)
        self.inits: list[tuple[str, np.ndarray, str]] = []
        self.dtypes: dict[str, str] = {}
        self.shapes: dict[str, tuple] = {}
        self.outputs: list[str] = []
        self.index: list[tuple[str, int]] = []  # per FINN node: (IR node name, op index)

    def add(self, ir: Node, k: int, op: FinnOp, inp: str, outs: list[str]) -> None:
        from onnx import helper
        from qonnx.custom_op.registry import getCustomOp

        ins = [inp]
        if op.weights is not None:
            wname = f"{ir.name}_{k}_weights"
            self.inits.append((wname, np.asarray(op.weights, dtype=np.float32),
                               op.attrs["weightDataType"]))
            ins.append(wname)
        if op.thresholds is not None:
            tname = f"{ir.name}_{k}_thresholds"
            tdt = op.attrs["weightDataType"] if op.op_type.startswith("Thresholding") else "INT32"
            self.inits.append((tname, np.asarray(op.thresholds, dtype=np.float32), tdt))
            ins.append(tname)
        node = helper.make_node(op.op_type, ins, outs, domain=_domain(op.op_type),
                                backend="fpgadataflow", name=f"{ir.name}__{k}", **op.attrs)
        inst = getCustomOp(node)
        if inp not in self.dtypes:
            self.inputs[inp] = None
            self.dtypes[inp] = inst.get_input_datatype(0).name
            self.shapes[inp] = tuple(int(x) for x in inst.get_normal_input_shape(0))
        for o in outs:
            self.dtypes[o] = inst.get_output_datatype().name
            self.shapes[o] = tuple(int(x) for x in inst.get_normal_output_shape())
        self.nodes.append(node)
        self.index.append((ir.name, k))

    def model(self):
        from onnx import TensorProto, helper
        from qonnx.core.datatype import DataType
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.util.basic import qonnx_make_model

        produced = {o for nd in self.nodes for o in nd.output}
        consumed = {i for nd in self.nodes for i in nd.input}
        vi = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT,  # noqa: E731
                                                        list(self.shapes[name]))
        g_in = [vi(n) for n in self.inputs]
        g_out = [vi(n) for n in sorted(produced - consumed)]
        inner = [vi(n) for n in sorted(produced & consumed)]
        graph = helper.make_graph(self.nodes, "bnhw_finn", g_in, g_out, value_info=inner)
        m = ModelWrapper(qonnx_make_model(graph, producer_name="bnhw"))
        for name, dt in self.dtypes.items():
            m.set_tensor_datatype(name, DataType[dt])
        for name, arr, dt in self.inits:
            m.set_initializer(name, arr)
            m.set_tensor_datatype(name, DataType[dt])
        return m


def _add_ir_node(b: _Builder, g: HwGraph, n: Node, tensor_of: dict[str, str],
                 has_finn_consumer) -> None:
    ops = finn_ops(g, n)
    if not ops:
        return
    inp = tensor_of.get(n.inputs[0], n.inputs[0])
    for k, op in enumerate(ops):
        last = k == len(ops) - 1
        outs = list(n.outputs) if last else [f"{n.name}__{k}_out"]
        b.add(n, k, op, inp, outs)
        inp = outs[0]
    for s in n.outputs:
        tensor_of[s] = s
        # keep FINN's "is this the last node" test (no-activation accumulator rounding)
        # true to the IR: give a stream that IR nodes consume a consumer here too
        if s != g.output and not has_finn_consumer(s):
            from onnx import helper
            b.nodes.append(helper.make_node("Identity", [s], [f"{s}__sink"], name=f"{s}__sink"))
            b.shapes[f"{s}__sink"] = b.shapes[s]
            b.dtypes[f"{s}__sink"] = b.dtypes[s]
            b.index.append(("", -1))


def _minimize(model):
    """FINN's _minimize_bit_width (build_dataflow_steps.py), minimize_bit_width=True."""
    from finn.transformation.fpgadataflow.minimize_accumulator_width import (
        MinimizeAccumulatorWidth,
    )
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.infer_datatypes import InferDataTypes

    model = model.transform(MinimizeWeightBitWidth())
    model = model.transform(MinimizeAccumulatorWidth())
    model = model.transform(InferDataTypes())
    model = model.transform(RoundAndClipThresholds())
    model = model.transform(InferDataTypes())
    model = model.transform(MinimizeWeightBitWidth())
    model = model.transform(InferDataTypes())
    return model


def minimized_copy(model):
    """A copy of a FINN ``model`` with FINN's bit-width minimisation applied (what the estimate reports see)."""
    import copy

    return _minimize(copy.deepcopy(model))


def finn_node_model(g: HwGraph, n: Node):
    """A qonnx ModelWrapper with FINN's custom op(s) for IR node ``n`` (bit widths
    minimised as in FINN's flow); ``None`` for nodes with no FINN op (Gather, AddRequant,
    RPReLU)."""
    if not finn_available():
        raise RuntimeError(finn_unavailable_reason())
    if not finn_ops(g, n):
        return None
    b = _Builder()
    _add_ir_node(b, g, n, {}, lambda s: False)
    return _minimize(b.model())


def _hw_nodes(model):
    from qonnx.custom_op.registry import getCustomOp
    return [(nd, getCustomOp(nd)) for nd in model.graph.node if nd.op_type != "Identity"]


def finn_op_estimates(g: HwGraph, n: Node) -> list[tuple[str, int, dict[str, float]]]:
    """Per FINN op of the node: (op type, get_exp_cycles, {LUT, BRAM_18K, URAM, DSP})."""
    model = finn_node_model(g, n)
    if model is None:
        return []
    out = []
    for nd, inst in _hw_nodes(model):
        out.append((nd.op_type, int(inst.get_exp_cycles()),
                    {"LUT": inst.lut_estimation(FPGA_PART), "BRAM_18K": inst.bram_estimation(FPGA_PART),
                     "URAM": inst.uram_estimation(FPGA_PART), "DSP": inst.dsp_estimation(FPGA_PART)}))
    return out


def finn_estimates(g: HwGraph, n: Node) -> tuple[int, Resources] | None:
    """FINN's own (cycles, resources) for IR node ``n``: cycles of the slowest FINN op,
    resources summed (``lutram`` is not reported by FINN: 0).  ``None`` without a FINN op."""
    per_op = finn_op_estimates(g, n)
    if not per_op:
        return None
    cyc = max(c for _, c, _ in per_op)
    res = Resources.zero()
    for _, _, r in per_op:
        res = res + Resources(float(r["LUT"]), int(r["BRAM_18K"]), int(r["URAM"]), int(r["DSP"]), 0.0)
    return cyc, res


def finn_set_folding_reference(g: HwGraph, target_cycles: int, mvau_wwidth_max: int = 36,
                               two_pass_relaxation: bool = True) -> dict[str, dict[str, int]]:
    """Run finn-plus's SetFolding on a FINN graph equivalent to ``g`` and return the
    folding per IR node: ``{"PE", "SIMD"}`` (and for an SWG ``parallel_window`` and, when
    padded, ``pad_simd``).  IR nodes without a FINN op are left out of the FINN graph
    (their consumers read a fresh graph input)."""
    if not finn_available():
        raise RuntimeError(finn_unavailable_reason())
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    has_ops = {n.name: bool(finn_ops(g, n)) for n in g.nodes}
    finn_consumed = {s for n in g.nodes if has_ops[n.name] for s in n.inputs[:1]}
    b = _Builder()
    tensor_of: dict[str, str] = {}
    for n in g.nodes:
        _add_ir_node(b, g, n, tensor_of, lambda s: s in finn_consumed)
    model = _minimize(b.model())
    model = model.transform(SetFolding(target_cycles_per_frame=int(target_cycles),
                                       mvau_wwidth_max=mvau_wwidth_max,
                                       two_pass_relaxation=two_pass_relaxation))
    from qonnx.custom_op.registry import getCustomOp

    out: dict[str, dict[str, int]] = {}
    for (ir_name, _k), nd in zip(b.index, model.graph.node):
        if not ir_name:
            continue
        inst = getCustomOp(nd)
        ir = g.node(ir_name)
        d = out.setdefault(ir_name, {})
        t = nd.op_type
        if t == "FMPadding_rtl":
            d["pad_simd"] = int(inst.get_nodeattr("SIMD"))
        elif t == "ConvolutionInputGenerator_rtl":
            if ir.op == "SWG":
                d["SIMD"] = int(inst.get_nodeattr("SIMD"))
                d["parallel_window"] = int(inst.get_nodeattr("parallel_window"))
            else:                                   # the window generator of a pooling node
                d["swg_SIMD"] = int(inst.get_nodeattr("SIMD"))
        elif t in ("MVAU_hls", "VVAU_hls"):
            d["PE"] = int(inst.get_nodeattr("PE"))
            d["SIMD"] = int(inst.get_nodeattr("SIMD"))
        else:
            d["PE"] = int(inst.get_nodeattr("PE"))
    return out


# ----------------------------------------------------------------------------- finn-plus's dataflow builder, offline
#: why each setting below is needed (finn-plus 1.6.1, installed --no-deps, no Vivado):
#: * ``finn.xsi.SimEngine = None`` before ``finn.builder`` is imported: the builder imports FINN's XSI RTL
#:   simulator, whose import needs ``XILINX_VIVADO``; nothing the code-generation steps run uses it.
#: * ``build_dataflow.get_vivado_root`` replaced: ``exit_buildflow`` names the Vivado version in
#:   ``metadata_builder.json`` and fails without one.
#: * ``FINN_BUILD_DIR``: where FINN's custom ops write their code-generation folders (set per build).
#: * ``mip`` + ``psutil``: imported by ``build_dataflow_config`` (the pip extra ``finn`` pins them).
#: * ``finn.util.data_packing.pack_innermost_dim_as_hex_string`` packs weight files one element at a time
#:   through ``bitstring`` (35 s of CNV-W1A1's 40 s of code generation): replaced by :func:`fast_hex_packing`,
#:   which gives the same strings (``tests/test_finn_build.py`` compares them) in a few array operations.
NO_VIVADO = "no-vivado"

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def fast_hex_packing(original):
    """A drop-in for finn-plus's ``pack_innermost_dim_as_hex_string`` that packs integer, binary, bipolar and
    fixed-point arrays with numpy (the same strings as ``original``); floats and odd widths go to ``original``."""

    def pack(ndarray, dtype, pad_to_nbits, reverse_inner=False, prefix="0x"):
        if type(ndarray) is not np.ndarray or ndarray.dtype not in (np.float32, np.float16):
            ndarray = np.asarray(ndarray, dtype=np.float32)
        pad = max(4, int(pad_to_nbits))
        if not (dtype.is_integer() or dtype.is_fixed_point()) or pad % 4 or ndarray.ndim == 0:
            return original(ndarray, dtype, pad_to_nbits, reverse_inner=reverse_inner, prefix=prefix)
        x = ndarray.astype(np.float32)
        from qonnx.core.datatype import DataType

        if dtype == DataType["BIPOLAR"]:
            x = (x + 1) / 2
            dtype = DataType["BINARY"]
        if reverse_inner:
            x = np.flip(x, -1)
        bw = dtype.bitwidth()
        if dtype.is_fixed_point():
            x = x / dtype.scale_factor()
            dtype = DataType["INT" + str(bw)]
        if not (np.all(x == np.round(x)) and x.min(initial=0) >= dtype.min() and x.max(initial=0) <= dtype.max()):
            raise AssertionError("This value is not permitted by chosen dtype.")
        n = x.shape[-1]
        if n * bw > pad:
            raise Exception("Number of bits is greater than pad_to_nbits")
        lead = x.shape[:-1]
        u = x.reshape(-1, n).astype(np.int64) & ((1 << bw) - 1)
        bits = ((u[:, :, None] >> np.arange(bw - 1, -1, -1)) & 1).reshape(len(u), n * bw).astype(np.uint8)
        bits = np.concatenate([np.zeros((len(u), pad - n * bw), np.uint8), bits], axis=1)
        nib = bits.reshape(len(u), pad // 4, 4) @ np.array([8, 4, 2, 1], np.uint8)
        chars = np.ascontiguousarray(_HEX[nib])
        text = np.char.add(prefix, chars.view(f"S{pad // 4}").reshape(-1).astype(str))
        return text.reshape(lead)

    pack.original = original  # type: ignore[attr-defined]
    return pack


def _fast_packing() -> None:
    import sys

    import finn.util.data_packing as dp

    current = getattr(dp, "pack_innermost_dim_as_hex_string")  # noqa: B009 - finn-plus's module, typed without it
    orig = getattr(current, "original", current)
    fast = fast_hex_packing(orig)
    for name, mod in list(sys.modules.items()):       # the module, and those that imported the name already
        if name.startswith("finn.") and getattr(mod, "pack_innermost_dim_as_hex_string", None) is orig:
            setattr(mod, "pack_innermost_dim_as_hex_string", fast)  # noqa: B010 - typed without it


@functools.lru_cache(maxsize=1)
def _builder_import_error() -> str:
    if _import_error():
        return _import_error()
    try:
        import finn.xsi

        finn.xsi.SimEngine = None
        import finn.builder.build_dataflow as bd
        import finn.builder.build_dataflow_config  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable"
        return f"finn-plus's dataflow builder is not importable: {type(e).__name__}: {e}"
    bd.get_vivado_root = lambda *a, **k: NO_VIVADO
    _fast_packing()
    return ""


def finn_builder_available() -> bool:
    """True when finn-plus's dataflow builder imports and runs here (offline, without Vivado)."""
    return _builder_import_error() == ""


def finn_builder_unavailable_reason() -> str:
    return _builder_import_error()


def finn_builder():
    """``(build_dataflow, build_dataflow_config)``: finn-plus's builder modules, set up to run offline."""
    err = _builder_import_error()
    if err:
        raise RuntimeError(err)
    import finn.builder.build_dataflow as bd
    import finn.builder.build_dataflow_config as bc

    return bd, bc


def vivado_available() -> bool:
    """Whether FINN's synthesis steps could run here (Vivado / Vitis HLS on PATH and ``XILINX_VIVADO`` set)."""
    import os
    import shutil

    return bool(os.environ.get("XILINX_VIVADO")) and shutil.which("vivado") is not None


@contextlib.contextmanager
def finn_build_dir(path: Path):
    """Run FINN with ``FINN_BUILD_DIR`` = ``path`` (absolute).  finn-plus caches its settings, build dir included,
    in a module global (``finn.util.settings._SETTINGS``) at first use, so a second build in the same process
    would write into the first one's (by then renamed) folder: the cache is cleared on entry and on exit."""
    import os

    import finn.util.settings as fs

    old = os.environ.get("FINN_BUILD_DIR")
    os.environ["FINN_BUILD_DIR"] = str(Path(path).resolve())
    fs._SETTINGS = None
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FINN_BUILD_DIR", None)
        else:
            os.environ["FINN_BUILD_DIR"] = old
        fs._SETTINGS = None


# ----------------------------------------------------------------------------- FINN's own node execution
class FinnExecutor:
    """Executes a FINN dataflow graph with FINN's own node execution (qonnx ``execute_onnx``, every HW node's
    python ``execute_node``).  finn-plus executes HW nodes in python only before ``SpecializeLayers``: after it,
    an ``_hls`` node needs finn-hlslib (cppsim) and an ``_rtl`` node Vivado's XSI (rtlsim), so the graph to
    execute is FINN's ``step_convert_to_hw`` model (the same nodes and weights, not yet specialised).  The
    python execution of ``Reshape`` and of the RTL-only ops is registered only when their modules are imported,
    which is done here."""

    def __init__(self, model_path: Path):
        err = _import_error()
        if err:
            raise RuntimeError(err)
        import finn.custom_op.fpgadataflow.reshape  # noqa: F401  (registers Reshape's python execution)
        import finn.custom_op.fpgadataflow.rtl  # noqa: F401
        from qonnx.core.modelwrapper import ModelWrapper

        from . import finn_ops  # noqa: F401  (registers bnhw's units, which a graph bnhw exported holds)

        self.model = ModelWrapper(str(model_path))
        self.input = self.model.graph.input[0].name
        self.output = self.model.graph.output[0].name
        self.input_shape = tuple(int(v) for v in self.model.get_tensor_shape(self.input))
        #: the graph takes integers (e.g. UINT8 pixels) rather than floats
        self.integer_input = bool(self.model.get_tensor_datatype(self.input).is_integer())
        # a graph of custom ops only (bnhw's exported HW graph) runs in float64: exact up to 2^53, where float32
        # rounds accumulators above 2^24; standard ONNX nodes (onnxruntime) need the model's float32
        self.dtype = np.float64 if all(n.domain for n in self.model.graph.node) else np.float32

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """One input of the model's input shape (float32) -> the graph output."""
        return self.tensors(x, every=False)[self.output]

    def tensors(self, x: np.ndarray, every: bool = True) -> dict[str, np.ndarray]:
        """Every tensor of the graph for one input (for per-layer comparisons; ``every=False``: the output)."""
        from qonnx.core.onnx_exec import execute_onnx

        x = np.asarray(x, dtype=self.dtype).reshape(self.input_shape)
        ctx = execute_onnx(self.model, {self.input: x}, return_full_exec_context=every)
        return {k: np.asarray(v) for k, v in ctx.items()}
