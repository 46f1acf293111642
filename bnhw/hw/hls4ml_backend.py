"""The hls4ml back end: bnhw's QONNX through hls4ml 1.3.0's own ONNX converter, its binary-network defects fixed
by optimizer passes registered from here (hls4ml's extension API; hls4ml's installed files are never patched),
and hls4ml's own C simulation (``compile()`` + ``predict()``, plain g++) checked bit for bit against the IR.

The one place in bnhw that touches hls4ml's model internals (as :mod:`bnhw.hw.finn_compat` is for FINN).

What hls4ml 1.3.0 gets wrong on a binary (BNN-PYNQ-style) QONNX network, and the pass that fixes each
(docs/HLS4ML_DEFECTS.md has the upstream write-up; ``tests/test_hls4ml_backend.py`` reproduces each with plain
hls4ml and fails once upstream fixes it):

1. ``QuantizeDenseOutput`` applies the 1-bit ``BinaryQuantizer`` (``x >= 0 -> 1 else 0``) a second time to
   weights that ``Dense.initialize`` had already quantised to {0, 1}: every weight becomes 1.
2. The same pass *floors* the thresholds of the binary activation (``BatchNormalizationQuantizedTanh``) after an
   XNOR ``Dense`` (whose output, ``nnet::cast``, is the +-1 dot product ``2 * popcount - n``); ``acc >= t`` on an
   integer ``acc`` needs ``ceil(t)``.
3. The affine head after the last binary layer becomes an ``ApplyAlpha`` whose scale type is ``uint<1>`` (the
   weights' XNOR type): a scale of 0.088 is stored as 0 and every class score is the same.

:class:`BnhwBinaryLayers` (registered as ``bnhw_binary_layers``, run as flow ``bnhw:binary``) rewrites, per binary
``Dense`` and in graph order, the weights (+1 -> 1, -1 -> 0, XNOR type), the accumulator (an unsigned popcount wide
enough for the fan-in) and the output type (signed, holding [-n, n]), the next activation's threshold (the IR's
integer threshold ``T``: ``acc >= T``), the input quantiser (an integer threshold on the 8-bit pixel, the project's
input) and, after the last layer, an integer ``ApplyAlpha`` of scale 1 (the class scores are the dot products, as
in the IR).  The integer values come from bnhw's IR (:mod:`bnhw.hw.ir`, checked equal to QONNX execution), the
structure from hls4ml's converter.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BnhwError
from .ir import HwGraph, Node

__all__ = ["HLS4ML_VERSION", "Hls4mlUnsupported", "Hls4mlProject", "hls4ml_unavailable_reason", "supported_graph_error",
           "convert", "plain_convert", "csim_compare", "first_differing_layer", "finalize_project", "score_node",
           "PASS_NAME", "FLOW_NAME", "BACKEND", "DEFECTS", "estimates"]

#: the hls4ml release these passes were written against (its defects are checked in tests)
HLS4ML_VERSION = "1.3.0"
PASS_NAME = "bnhw_binary_layers"
FLOW_NAME = "bnhw:binary"
BACKEND = "Vitis"
#: the IR ops hls4ml's converter takes from bnhw's QONNX today (a fully connected binary network)
SUPPORTED_OPS = ("Thresholding", "MVAU", "LabelSelect")


#: the hls4ml 1.3.0 defects bnhw works around (docs/HLS4ML_DEFECTS.md; tests/test_hls4ml_backend.py reproduces
#: each with plain hls4ml and fails when upstream fixes it)
DEFECTS = [
    {"name": "binary weights re-quantised to all ones",
     "what": "QuantizeDenseOutput applies the 1-bit BinaryQuantizer (x >= 0 -> 1) again to weights Dense.initialize "
             "had already quantised to {0, 1}: every weight becomes 1 (+1)",
     "fix": f"{PASS_NAME}: the Dense weights from the IR (+1 -> 1, -1 -> 0)"},
    {"name": "binary thresholds floored",
     "what": "QuantizeDenseOutput floors the thresholds of the binary activation that follows an XNOR Dense; "
             "acc >= t on an integer acc needs ceil(t): a non-integer t gives the wrong sign where acc = floor(t)",
     "fix": f"{PASS_NAME}: the IR's integer thresholds (ceil of the real threshold, QONNX's BipolarQuant x >= 0)"},
    {"name": "affine head scale stored as uint<1>",
     "what": "the ApplyAlpha made of the head after the last binary layer gets the XNOR weights' uint<1> as its "
             "scale type: a scale of 0.088 is stored as 0 and every class score is the bias",
     "fix": f"{PASS_NAME}: the class scores are the last layer's +-1 dot products (integer scale 1, bias 0)"},
]


class Hls4mlUnsupported(BnhwError):
    """A network hls4ml cannot take (the message names the layer and why)."""


@functools.lru_cache(maxsize=1)
def hls4ml_unavailable_reason() -> str:
    """Why hls4ml cannot be used here ("" when it can)."""
    try:
        import hls4ml
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable"
        return f"hls4ml is not importable: {type(e).__name__}: {e}"
    if hls4ml.__version__ != HLS4ML_VERSION:
        return (f"hls4ml {hls4ml.__version__} is installed; bnhw's passes were written for hls4ml {HLS4ML_VERSION} "
                f"(pip install hls4ml=={HLS4ML_VERSION})")
    return ""


def supported_graph_error(g: HwGraph) -> str:
    """One line naming the first layer of ``g`` the hls4ml back end cannot take, and why ("" if none)."""
    why = {
        "SWG": "hls4ml 1.3.0's ONNX front end fails on BNN-PYNQ convolutions: its channels-last pass leaves "
               "Transpose nodes it cannot convert, and its io_stream binary Conv2D does not compile "
               "(docs/HLS4ML_DEFECTS.md)",
        "MaxPool": "follows a binary convolution, which hls4ml 1.3.0 does not convert (see SWG)",
        "AddRequant": "a fixed-point residual addition: hls4ml's ONNX front end has no integer requantising add "
                      "with round-half-even (QONNX Quant) on a {-1,+1} stream",
        "Duplicate": "a residual fork: the residual blocks of NAS-BNN nets need AddRequant (see there)",
        "RPReLU": "a learnable-shift PReLU on a fixed-point stream, which hls4ml's ONNX front end does not take",
        "AvgPoolSum": "an integer average-pool sum of a binary stream, which hls4ml 1.3.0 does not convert",
        "GlobalAvgPool": "an integer global average pool with round-half-even requantisation, not in hls4ml 1.3.0",
        "Gather": "a channel gather (NAS-BNN channel split), which hls4ml's ONNX front end does not take",
    }
    for n in g.nodes:
        if n.op in SUPPORTED_OPS:
            continue
        reason = why.get(n.op, "an op the hls4ml back end has no mapping for")
        return f"{n.name} ({n.op}, layer {n.layer or '-'}): {reason}"
    mvaus = [n for n in g.nodes if n.op == "MVAU"]
    for n in mvaus:
        if g.in_stream(n).dtype.kind != "bipolar" or n.attrs.get("weight_dtype") != "BIPOLAR":
            return f"{n.name} (MVAU, layer {n.layer or '-'}): not a binary (+-1 x +-1) layer"
    for n in g.nodes:
        t = n.params.get("thresholds")
        if t is None:
            continue
        if np.asarray(t).reshape(np.asarray(t).shape[0], -1).shape[1] != 1 or \
                (int(n.attrs.get("out_scale", 1)), int(n.attrs.get("out_bias", 0))) != (2, -1):
            return (f"{n.name} ({n.op}, layer {n.layer or '-'}): not a sign activation (acc >= T -> +1 else -1); "
                    "hls4ml's binary path has one threshold per channel")
    return ""


# ----------------------------------------------------------------------------- the pass
def _types():
    """hls4ml's integer and XNOR precision types, as the Vitis back end's ``ap_`` types (the project's types are
    already converted when bnhw's pass runs)."""
    from hls4ml.backends.fpga.fpga_types import APTypeConverter
    from hls4ml.model.types import IntegerPrecisionType, XnorPrecisionType

    conv = APTypeConverter()

    def integer(width: int, signed: bool = True):
        return conv.convert(IntegerPrecisionType(width=width, signed=signed))

    def xnor():
        return conv.convert(XnorPrecisionType())

    return integer, xnor


def _named(name: str, precision):
    """A new named ``ap_`` type of the Vitis back end."""
    from hls4ml.backends.fpga.fpga_types import APTypeConverter, HLSTypeConverter
    from hls4ml.model.types import NamedType

    return HLSTypeConverter(precision_converter=APTypeConverter()).convert(NamedType(name, precision))


def _unsigned_bits(hi: int) -> int:
    return max(1, int(hi).bit_length())


def _signed_bits(lo: int, hi: int) -> int:
    b = 1
    while not (-(1 << (b - 1)) <= lo and hi <= (1 << (b - 1)) - 1):
        b += 1
    return b


def _fix_input_threshold(node, fix: dict) -> None:
    """The input quantiser: ``pixel >= T`` on the integer pixel (the project's input is the 8-bit pixel)."""
    IntegerPrecisionType, _ = _types()
    t = np.clip(np.asarray(fix["thresholds"], dtype=np.int64).reshape(-1), 0, 256)
    prec = IntegerPrecisionType(width=9, signed=False)         # 0 .. 256: 256 = "never"
    var = node.weights["threshold"]
    var.data = t.astype(np.float64).reshape(var.data.shape)
    var.update_precision(prec)
    node.get_input_variable().type.precision = prec


def _fix_dense(model, node, fix: dict) -> None:
    """A binary Dense: XNOR weights from the IR, a popcount accumulator wide enough for the fan-in, and the next
    node: the binary activation's threshold on the popcount, or (the last layer) ``2 * popcount - n``."""
    IntegerPrecisionType, XnorPrecisionType = _types()
    w = np.asarray(fix["weights"], dtype=np.int64)             # (MH, MW) in {-1, +1}
    mh, mw = w.shape
    if int(node.get_attr("n_in")) != mw or int(node.get_attr("n_out")) != mh:
        raise BnhwError(f"hls4ml layer {node.name} is {node.get_attr('n_in')} x {node.get_attr('n_out')}, the IR's "
                        f"{fix['name']} is {mw} x {mh}: the hls4ml graph does not follow the IR (please report it)")
    # hls4ml's XNOR Dense accumulates the popcount p in accum_t, then returns 2 p - n (nnet::cast): the +-1 dot
    # product, a signed integer in [-n, n]
    pop = IntegerPrecisionType(_unsigned_bits(mw), False)
    dot = IntegerPrecisionType(_signed_bits(-mw - 1, mw + 1), True)
    wv = node.weights["weight"]
    wv.data = (w.T == 1).astype(np.int64).reshape(wv.data.shape)
    wv.update_precision(XnorPrecisionType())
    acc = node.get_attr("accum_t")
    if acc is not None:
        acc.precision = pop
    node.get_output_variable().type.precision = dot
    nxt = node.get_output_nodes()
    if len(nxt) != 1:
        raise BnhwError(f"hls4ml layer {node.name} feeds {len(nxt)} layers; bnhw expects one")
    nxt = nxt[0]
    t = fix.get("thresholds")
    if t is not None:
        if nxt.class_name != "BatchNormalizationQuantizedTanh":
            raise BnhwError(f"hls4ml layer {nxt.name} after {node.name} is a {nxt.class_name}, not the binary "
                            "activation bnhw expects (please report it)")
        # the IR's integer threshold T on the dot product (acc >= T <=> +1), clipped to what the type holds
        var = nxt.weights["threshold"]
        var.data = np.clip(np.asarray(t, dtype=np.int64).reshape(-1), -mw - 1, mw + 1).astype(np.float64) \
            .reshape(var.data.shape)
        var.update_precision(dot)
        return
    if nxt.class_name != "ApplyAlpha":
        raise BnhwError(f"hls4ml layer {nxt.name} after the last binary layer {node.name} is a {nxt.class_name}, "
                        "not the ApplyAlpha bnhw expects (please report it)")
    # the class scores are the dot products themselves (as in the IR; the affine head does not change the argmax)
    for key, val, prec in (("scale", 1, IntegerPrecisionType(2, True)), ("bias", 0, IntegerPrecisionType(2, True))):
        var = nxt.weights[key]
        var.data = np.full(var.data.shape, val, dtype=np.float64)
        # its own type: the converter gave scale and bias the shared model_default_t (ap_fixed<16,6>)
        var.type = _named(f"{key}{nxt.index}_t", prec)
        var.update_precision(var.type.precision)
        var.nzeros = 0
        nxt.set_attr(f"{key}_t", var.type)
    nxt.get_output_variable().type.precision = dot


def _pass_class():
    from hls4ml.model.optimizer import OptimizerPass

    class BnhwBinaryLayers(OptimizerPass):
        """bnhw's binary-network pass (see the module docstring): a node carries ``bnhw_fix`` (set by
        :func:`convert` from the IR); the pass applies it once and removes it."""

        def match(self, node):
            return node.get_attr("bnhw_fix") is not None

        def transform(self, model, node):
            fix = node.get_attr("bnhw_fix")
            del node.attributes["bnhw_fix"]
            if fix["kind"] == "input":
                _fix_input_threshold(node, fix)
            else:
                _fix_dense(model, node, fix)
            return False

    return BnhwBinaryLayers


@functools.lru_cache(maxsize=1)
def _register() -> None:
    from hls4ml.model.flow import register_flow
    from hls4ml.model.optimizer import register_pass

    register_pass(PASS_NAME, _pass_class())
    register_flow(FLOW_NAME.split(":")[1], [PASS_NAME], backend=FLOW_NAME.split(":")[0])


# ----------------------------------------------------------------------------- conversion
@dataclass
class Hls4mlProject:
    """An hls4ml model converted and fixed for an IR graph, written to ``folder``."""

    model: Any                      # hls4ml ModelGraph
    folder: Path
    io_type: str
    layers: list[dict] = field(default_factory=list)    # per hls4ml layer: name, class, output type
    fixed: list[str] = field(default_factory=list)      # the layers bnhw's pass rewrote
    compiled: bool = False


@contextlib.contextmanager
def _quiet():
    """hls4ml prints its topology on stdout and warns about the head's bias (which bnhw's pass replaces): kept out
    of bnhw's progress lines."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Failed to propagate quantization bias")
        yield


def plain_convert(onnx: Path, folder: Path, io_type: str = "io_parallel", project_name: str = "myproject"):
    """hls4ml's own conversion of a QONNX file, nothing of bnhw's applied (the defect reproductions use it)."""
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    m = cleanup_model(ModelWrapper(str(onnx)))
    with _quiet():
        cfg = hls4ml.utils.config_from_onnx_model(m, granularity="name", backend=BACKEND)
        return hls4ml.converters.convert_from_onnx_model(m, output_dir=str(folder), project_name=project_name,
                                                         backend=BACKEND, io_type=io_type, hls_config=cfg)


def convert(onnx: Path, g: HwGraph, folder: Path, project_name: str = "myproject") -> Hls4mlProject:
    """Convert ``onnx`` (bnhw's QONNX of ``g``) with hls4ml and fix it with bnhw's pass; write the project."""
    why = hls4ml_unavailable_reason()
    if why:
        raise BnhwError(f"--backend hls4ml: {why}")
    why = supported_graph_error(g)
    if why:
        raise Hls4mlUnsupported(f"--backend hls4ml: {g.name}: {why}")
    _register()
    io_type = "io_parallel"             # fully connected networks (hls4ml's io_stream is for conv nets)
    try:
        hm = plain_convert(onnx, folder, io_type, project_name)
    except BnhwError:
        raise
    except Exception as e:  # noqa: BLE001 - hls4ml's converter raises anything; name it on one line
        raise Hls4mlUnsupported(f"--backend hls4ml: {g.name}: hls4ml's converter failed: {type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}") from None
    fixed = _attach_fixes(hm, g)
    for lay in hm.get_layers():         # traced when the C simulation differs (first_differing_layer)
        lay.set_attr("trace", True)
    with _quiet():
        hm.apply_flow(FLOW_NAME)
        hm.apply_flow(f"{BACKEND.lower()}:apply_templates", reapply="single")
        hm.write()
    layers = [{"name": lay.name, "class": lay.class_name,
               "output_type": str(lay.get_output_variable().type.precision)} for lay in hm.get_layers()]
    return Hls4mlProject(hm, Path(folder), io_type, layers, fixed)


def finalize_project(project: Hls4mlProject, final: Path) -> None:
    """Point the project's ``hls4ml_config.yml`` at the folder it will have once the build folder is in place
    (it was written into the staging folder)."""
    cfg = project.folder / "hls4ml_config.yml"
    if cfg.is_file():
        text = cfg.read_text()
        text = re.sub(r"(?m)^OutputDir: .*$", f"OutputDir: {Path(final).resolve()}", text)
        cfg.write_text(text)


def _attach_fixes(hm, g: HwGraph) -> list[str]:
    """Mark hls4ml's layers with the IR's integer values, in graph order: the input quantiser, then each Dense."""
    layers = list(hm.get_layers())
    dense = [lay for lay in layers if lay.class_name == "Dense"]
    mvaus = [n for n in g.nodes if n.op == "MVAU"]
    if len(dense) != len(mvaus):
        raise BnhwError(f"hls4ml made {len(dense)} Dense layers of {g.name}, the IR has {len(mvaus)} MVAUs "
                        "(please report it)")
    for lay, n in zip(dense, mvaus, strict=True):
        lay.set_attr("bnhw_fix", {"kind": "dense", "name": n.name, "weights": n.params["weights"],
                                  "thresholds": n.params.get("thresholds")})
    thr = [n for n in g.nodes if n.op == "Thresholding"]
    first = [lay for lay in layers if lay.class_name == "BatchNormalizationQuantizedTanh"][:1]
    if len(thr) != 1 or not first or g.nodes[0] is not thr[0]:
        raise BnhwError(f"{g.name}: the hls4ml back end expects one input quantiser (Thresholding) first")
    first[0].set_attr("bnhw_fix", {"kind": "input", "name": thr[0].name, "thresholds": thr[0].params["thresholds"]})
    for lay in layers:                  # the project's input: the 8-bit pixel
        if lay.class_name == "Input":
            IntegerPrecisionType, _ = _types()
            lay.get_output_variable().type.precision = IntegerPrecisionType(width=9, signed=False)
    return [first[0].name, *(lay.name for lay in dense)]


# ----------------------------------------------------------------------------- C simulation
def score_node(g: HwGraph) -> Node:
    """The IR node whose output the hls4ml project produces: the last MVAU (class scores before LabelSelect)."""
    return [n for n in g.nodes if n.op == "MVAU"][-1]


def csim_compare(project: Hls4mlProject, g: HwGraph, int_inputs: np.ndarray,
                 echo=lambda s: None) -> dict:
    """hls4ml's ``compile()`` (g++) and ``predict()`` on ``int_inputs``; every image's class scores compared bit
    for bit with the IR's (and the labels).  Returns the report section."""
    hm = project.model
    with _quiet():
        try:
            hm.compile()
        except Exception as e:  # noqa: BLE001 - a g++ failure is reported, not raised
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            return {"run": False, "line": f"C simulation: hls4ml's compile() failed: {msg}"}
    project.compiled = True
    x = np.ascontiguousarray(np.asarray(int_inputs, dtype=np.float64).reshape(len(int_inputs), -1))
    with _quiet():
        got = np.asarray(hm.predict(x), dtype=np.float64).reshape(len(x), -1)
    score = score_node(g)
    ref_arr = np.stack([np.asarray(g.execute(v, return_all=True)[score.outputs[0]]).reshape(-1)
                        for v in int_inputs])
    equal = [bool(np.array_equal(a, b)) for a, b in zip(got, ref_arr, strict=True)]
    labels_ir = np.stack([np.asarray(g.execute(v)).reshape(-1)[0] for v in int_inputs])
    labels_hls = got.argmax(1)
    n_ok = int(sum(equal))
    if n_ok == len(equal) and np.array_equal(labels_ir, labels_hls):
        line = f"C simulation: {len(equal)} images, bit-exact"
    else:
        bad = equal.index(False) if n_ok < len(equal) else int(np.argmax(labels_ir != labels_hls))
        layer = first_differing_layer(project, g, int_inputs[bad])
        line = (f"C simulation: {len(equal) - n_ok} of {len(equal)} images differ; first differing layer on image "
                f"{bad}: {layer}")
    echo(line)
    return {"run": True, "images": len(equal), "bit_exact": n_ok == len(equal), "images_equal": n_ok,
            "compared_stream": f"{score.name} output (class scores, +-1 dot products)", "line": line}


def _traced_pairs(hm, g: HwGraph) -> list[tuple[str, str, str]]:
    """(hls4ml layer, IR stream, IR node) pairs holding the same values: each binary activation (hls4ml 0 / 1 =
    IR -1 / +1) and the class scores."""
    acts = [lay.name for lay in hm.get_layers() if lay.class_name == "BatchNormalizationQuantizedTanh"]
    ir = [n for n in g.nodes if n.op in ("Thresholding", "MVAU")]
    pairs = [(a, n.outputs[0], n.name) for a, n in zip(acts, ir, strict=False)]
    last = [lay.name for lay in hm.get_layers()][-1]
    return [*pairs, (last, score_node(g).outputs[0], score_node(g).name)]


def first_differing_layer(project: Hls4mlProject, g: HwGraph, x: np.ndarray) -> str:
    """hls4ml's trace of one image against the IR's streams: the first layer whose output differs."""
    hm = project.model
    ref = g.execute(x, return_all=True)
    with _quiet():
        _, trace = hm.trace(np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(1, -1)))
    for hl, stream, node in _traced_pairs(hm, g):
        if hl not in trace:
            continue
        got = np.asarray(trace[hl], dtype=np.float64).reshape(-1)
        want = np.asarray(ref[stream], dtype=np.float64).reshape(-1)
        if g.streams[stream].dtype.is_bipolar:
            got = 2 * got - 1
        if not np.array_equal(got, want):
            i = int(np.argmax(got != want))
            return f"{hl} (IR {node}): element {i} is {got[i]:g}, the IR's {want[i]:g}"
    return "none of the traced layers (the labels differ)"


# ----------------------------------------------------------------------------- estimates
def estimates(project: Hls4mlProject) -> dict:
    """What hls4ml itself says about resources without synthesis: nothing (hls4ml 1.3.0 has no analytical resource
    or latency model; its ``build()`` runs Vitis HLS, whose report holds them).  Returns what is known."""
    hm = project.model
    reuse = sorted({int(lay.get_attr("reuse_factor", 1)) for lay in hm.get_layers()})
    return {"resources": None,
            "why": "hls4ml 1.3.0 has no resource or latency model of its own: LUT / FF / BRAM / DSP and latency come "
                   "from Vitis HLS (hls4ml's build(), vendor tools not installed here)",
            "reuse_factors": reuse, "io_type": project.io_type, "strategy": "Latency",
            "weights_bits": int(sum(np.asarray(lay.weights["weight"].data).size for lay in hm.get_layers()
                                    if lay.class_name == "Dense"))}
