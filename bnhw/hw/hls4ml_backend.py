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
3. ``BatchNormalizationQuantizedTanh.set_thresholds`` turns ``x * s + b >= 0`` into ``x >= -b / s`` whatever the
   sign of ``s``: a channel with a negative batch-norm scale outputs the opposite sign.

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
           "PASS_NAME", "FLOW_NAME", "BACKEND", "DEFECTS", "defects_for", "estimates"]

#: the hls4ml release these passes were written against (its defects are checked in tests)
HLS4ML_VERSION = "1.3.0"
PASS_NAME = "bnhw_binary_layers"
FLOW_NAME = "bnhw:binary"
BACKEND = "Vitis"
#: the IR ops the hls4ml back end maps (BNN-PYNQ-style binary nets: TFC, CNV)
SUPPORTED_OPS = ("Thresholding", "SWG", "MVAU", "MaxPool", "LabelSelect")


#: the hls4ml 1.3.0 defects bnhw works around (docs/HLS4ML_DEFECTS.md; tests/test_hls4ml_backend.py reproduces
#: each with plain hls4ml and fails when upstream fixes it)
DEFECTS = [
    {"name": "binary weights re-quantised to all ones", "nets": "dense",
     "what": "QuantizeDenseOutput applies the 1-bit BinaryQuantizer (x >= 0 -> 1) again to weights Dense.initialize "
             "had already quantised to {0, 1}: every weight becomes 1 (+1)",
     "fix": f"{PASS_NAME}: the Dense weights from the IR (+1 -> 1, -1 -> 0)"},
    {"name": "binary thresholds floored", "nets": "dense",
     "what": "QuantizeDenseOutput floors the thresholds of the binary activation that follows an XNOR Dense; "
             "acc >= t on an integer acc needs ceil(t): a non-integer t gives the wrong sign where acc = floor(t)",
     "fix": f"{PASS_NAME}: the IR's integer thresholds (ceil of the real threshold, QONNX's BipolarQuant x >= 0)"},
    {"name": "negative batch-norm scale not flipped", "nets": "all",
     "what": "BatchNormalizationQuantizedTanh.set_thresholds turns x * s + b >= 0 into x >= -b / s for every s; "
             "for s < 0 the comparison must flip (x <= -b / s): those channels output the opposite sign",
     "fix": f"{PASS_NAME}: the IR's weights and thresholds (a negative scale folded into the weights, acc >= T)"},
    {"name": "4-D per-channel constants not broadcast", "nets": "conv",
     "what": "on a channels-last QONNX (qonnx's ConvertToChannelsLastAndClean, as hls4ml's documentation asks) a "
             "conv's batch-norm Mul / Add constants are (1, 1, 1, C); hls4ml's merge_const broadcasts them to its "
             "3-D (H, W, C) tensors with np.broadcast_to and fails (ValueError)",
     "fix": "channels_last_qonnx: the constants without their batch axis, (1, 1, C)"},
    {"name": "io_stream binary activation after a conv does not compile", "nets": "conv",
     "what": "the BatchNormalizationQuantizedTanh after a Conv2D gets one threshold per pixel (n_filt = -1); its "
             "io_stream kernel then writes words of n_in (H * W * C) bits into a stream of C-bit words: g++ error "
             "'no matching function for call to normalize_binary_tanh'",
     "fix": f"{PASS_NAME}: one threshold per channel (n_filt = C)"},
    {"name": "conv accumulators ap_fixed<16,6>", "nets": "conv",
     "what": "a binary Conv2D (and a Dense not fed by a binary activation) keeps the default ap_fixed<16,6> "
             "output: a +-1 dot product of fan-in 576 .. 2304 overflows its 6 integer bits (range -32 .. 32)",
     "fix": f"{PASS_NAME}: accumulator and output types from the IR's accumulator range"},
]


def defects_for(project: Hls4mlProject) -> list[dict]:
    """The defects of :data:`DEFECTS` this project's layers meet (the conv ones only in a convolutional net)."""
    conv = project.io_type == "io_stream"
    return [d for d in DEFECTS if d["nets"] == "all" or (d["nets"] == "conv") == conv or d["nets"] == "dense"]


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
    residual = ("the fixed-point path (NAS-BNN residuals, cell networks' node sums) has no hls4ml mapping in bnhw: "
                "an exact requantising add (QONNX Quant, round half to even) on streams hls4ml would see through "
                "qonnx's channels-last conversion of the whole graph, which did not finish in 5 minutes on "
                "nasbnn-cifar-smallest here")
    why = {
        "AddRequant": residual,
        "Duplicate": "a residual fork; " + residual,
        "RPReLU": "a learnable-shift PReLU on a fixed-point stream; " + residual,
        "AvgPoolSum": "an integer average-pool sum with requantisation; " + residual,
        "GlobalAvgPool": "an integer global average pool with round-half-even requantisation; " + residual,
        "Gather": "a channel gather (NAS-BNN channel split, a cell's factorised reduce); " + residual,
        "Concat": "a cell's output concatenation; " + residual,
        "WindowMax": "a cell's max pool on a fixed-point stream; " + residual,
        "WindowAvg": "a cell's average pool on a fixed-point stream; " + residual,
    }
    for n in g.nodes:
        if n.op in SUPPORTED_OPS:
            continue
        reason = why.get(n.op, "an op the hls4ml back end has no mapping for")
        return f"{n.name} ({n.op}, layer {n.layer or '-'}): {reason}"
    for n in g.nodes:
        where = f"{n.name} ({n.op}, layer {n.layer or '-'})"
        if n.op == "SWG" and (int(n.attrs.get("pad", 0)) or int(n.attrs.get("stride", 1)) != 1
                              or int(n.attrs.get("dilation", 1)) != 1):
            return f"{where}: a padded, strided or dilated convolution (bnhw's hls4ml mapping has unpadded stride 1)"
        if n.op == "MVAU" and (n.attrs.get("weight_dtype") != "BIPOLAR" or int(n.attrs.get("groups", 1)) != 1):
            return f"{where}: not a binary-weight dense layer (hls4ml's XNOR path takes +-1 weights, no groups)"
        t = n.params.get("thresholds")
        if t is None or n is g.nodes[0]:
            continue
        if np.asarray(t).reshape(np.asarray(t).shape[0], -1).shape[1] != 1 or \
                (int(n.attrs.get("out_scale", 1)), int(n.attrs.get("out_bias", 0))) != (2, -1):
            return (f"{where}: not a sign activation (acc >= T -> +1 else -1); hls4ml's binary activation has one "
                    "threshold per channel")
    first = g.nodes[0]
    if first.op != "Thresholding":
        return f"{first.name} ({first.op}): the hls4ml back end expects the input quantiser (Thresholding) first"
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


def _set_weight(node, key: str, data: Any, precision, own_type: bool = False, shape=None) -> None:
    """Replace a weight variable's values (broadcast to its shape, or to ``shape``) and type."""
    var = node.weights[key]
    var.data = np.broadcast_to(np.asarray(data, dtype=np.float64), var.data.shape if shape is None else shape).copy()
    var.shape = list(var.data.shape)
    var.data_length = int(var.data.size)
    var.nonzeros = int(np.count_nonzero(var.data))
    var.min, var.max = float(var.data.min()), float(var.data.max())
    if own_type:            # the converter may have given it a shared type (model_default_t)
        var.type = _named(f"{key}{node.index}_t", precision)
        node.set_attr(f"{key}_t", var.type)
    var.update_precision(precision)
    var.nzeros = var.data_length - var.nonzeros


def _fix_input(node, fix: dict) -> None:
    """The input quantiser: one threshold per channel (TFC): ``pixel >= T`` on the integer pixel, the project's
    input; 255 thresholds (CNV's 8-bit input): hls4ml has no multi-threshold layer, the project takes the int8
    values (the IR's quantiser output) and its input ApplyAlpha becomes the identity."""
    integer, _ = _types()
    if fix["kind"] == "input_threshold":
        prec = integer(9, False)                           # 0 .. 256: 256 = "never"
        t = np.clip(np.asarray(fix["thresholds"], dtype=np.int64).reshape(-1), 0, 256)
        _set_weight(node, "threshold", t, prec)
        node.get_input_variable().type.precision = prec
        return
    prec = integer(fix["bits"], fix["signed"])
    _set_weight(node, "scale", 1, integer(2, True), own_type=True)
    _set_weight(node, "bias", 0, integer(2, True), own_type=True)
    node.get_input_variable().type.precision = prec
    node.get_output_variable().type.precision = prec


def _fix_compute(node, fix: dict) -> None:
    """A binary-weight Dense or Conv2D: +-1 weights from the IR (hls4ml's 1-bit type: 1 = +1, 0 = -1), an
    accumulator and output wide enough for the IR's accumulator range, and the next node: the binary activation
    with the IR's integer threshold (``acc >= T``), or (the last layer) an integer ``ApplyAlpha`` of scale 1."""
    integer, xnor = _types()
    w = np.asarray(fix["weights"], dtype=np.int64)             # (MH, MW) in {-1, +1}
    mh, mw = w.shape
    if node.class_name == "Conv2D":
        kh, kw, cin = (int(node.get_attr(k)) for k in ("filt_height", "filt_width", "n_chan"))
        shape: tuple[int, ...] = (mh, kh, kw, cin)
        data = w.reshape(shape).transpose(1, 2, 3, 0)           # IR (out, kh, kw, in) -> hls4ml (kh, kw, in, out)
    else:
        shape = (int(node.get_attr("n_out")), int(node.get_attr("n_in")))
        data = w.T
    if int(np.prod(shape)) != w.size or shape[0] != mh:
        raise BnhwError(f"hls4ml layer {node.name} has weights {node.weights['weight'].data.shape}, the IR's "
                        f"{fix['name']} {w.shape}: the hls4ml graph does not follow the IR (please report it)")
    lo, hi = fix["acc_range"]
    if fix["binary_input"]:
        # XNOR: accum_t holds the popcount p in [0, n]; nnet::cast returns 2 p - n, the +-1 dot product
        acc = integer(_unsigned_bits(mw), False)
    else:
        acc = integer(_signed_bits(lo, hi), True)
    out = integer(_signed_bits(lo - 1, hi + 1), True)
    _set_weight(node, "weight", (data == 1).astype(np.int64), xnor())
    _set_weight(node, "bias", 0, integer(2, True), own_type=True)
    if node.get_attr("accum_t") is not None:
        node.get_attr("accum_t").precision = acc
    node.get_output_variable().type.precision = out
    nxt = node.get_output_nodes()
    if len(nxt) != 1:
        raise BnhwError(f"hls4ml layer {node.name} feeds {len(nxt)} layers; bnhw expects one")
    nxt = nxt[0]
    t = fix.get("thresholds")
    if t is not None:
        if nxt.class_name != "BatchNormalizationQuantizedTanh":
            raise BnhwError(f"hls4ml layer {nxt.name} after {node.name} is a {nxt.class_name}, not the binary "
                            "activation bnhw expects (please report it)")
        tt = np.clip(np.asarray(t, dtype=np.int64).reshape(-1), lo - 1, hi + 1)
        # one threshold per channel (n_filt): the converter repeats a conv's thresholds per pixel (n_filt = -1),
        # and its io_stream kernel then declares an output word of n_in elements, not the channels (a g++ error)
        _set_weight(nxt, "threshold", tt, out, shape=(mh,))
        nxt.set_attr("n_filt", mh)
        return
    if nxt.class_name != "ApplyAlpha":
        raise BnhwError(f"hls4ml layer {nxt.name} after the last binary layer {node.name} is a {nxt.class_name}, "
                        "not the ApplyAlpha bnhw expects (please report it)")
    # the class scores are the dot products themselves (as in the IR; the affine head does not change the argmax)
    _set_weight(nxt, "scale", 1, integer(2, True), own_type=True)
    _set_weight(nxt, "bias", 0, integer(2, True), own_type=True)
    nxt.get_output_variable().type.precision = out


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
            if fix["kind"].startswith("input"):
                _fix_input(node, fix)
            else:
                _fix_compute(node, fix)
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
    input_stream: str               # the IR stream the project takes (the pixels, or the input quantiser's output)
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


def channels_last_qonnx(onnx: Path):
    """bnhw's QONNX of a convolutional net as hls4ml's ONNX front end takes it: qonnx's
    ``ConvertToChannelsLastAndClean`` (as hls4ml's documentation asks), then what it leaves that hls4ml cannot take
    (docs/HLS4ML_DEFECTS.md): the Transpose pairs around each BipolarQuant (elementwise: dropped), the Transpose of
    the input (the project takes HWC, as the IR does), the batch axis of per-channel Mul / Add constants (hls4ml's
    merge_const cannot broadcast a 4-D constant to its 3-D tensors), a Transpose before a 1 x 1 flatten and one
    before a 4-D output."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.util.cleanup import cleanup_model

    m = cleanup_model(ModelWrapper(str(onnx)))
    m = cleanup_model(m.transform(ConvertToChannelsLastAndClean()))
    g = m.graph

    def consumers(t):
        return [n for n in g.node if t in n.input]

    def rewire(old, new):
        for k in consumers(old):
            for i, x in enumerate(k.input):
                if x == old:
                    k.input[i] = new

    out = g.output[0].name
    changed = True
    while changed:
        changed = False
        for n in list(g.node):
            if n.op_type != "Transpose":
                continue
            c = consumers(n.output[0])
            if len(c) != 1 or c[0].op_type != "BipolarQuant":
                continue
            bq = c[0]
            after = consumers(bq.output[0])
            shape = m.get_tensor_shape(n.input[0])
            flat_1x1 = len(after) == 1 and after[0].op_type == "Reshape" and shape is not None and \
                len(shape) == 4 and shape[1] == 1 and shape[2] == 1
            if (len(after) == 1 and (after[0].op_type == "Transpose" or flat_1x1)) or bq.output[0] == out:
                bq.input[0] = n.input[0]
                m.set_tensor_shape(bq.output[0], shape)
                g.node.remove(n)
                if after and after[0].op_type == "Transpose":
                    rewire(after[0].output[0], bq.output[0])
                    g.node.remove(after[0])
                if bq.output[0] == out:         # a channels-last output (HWC, as the IR's)
                    g.output.remove(g.output[0])
                    g.output.insert(0, helper.make_tensor_value_info(out, TensorProto.FLOAT, shape))
                changed = True
                break
    # the input's Transpose, after elementwise nodes with scalar constants: the project takes HWC (as the IR)
    inp = g.input[0].name
    chain: list[str] = []
    t = inp
    while True:
        c = consumers(t)
        if len(c) != 1:
            break
        n = c[0]
        if n.op_type == "Transpose":
            hwc = m.get_tensor_shape(n.output[0])
            rewire(n.output[0], t)
            g.node.remove(n)
            g.input.remove(g.input[0])
            g.input.insert(0, helper.make_tensor_value_info(inp, TensorProto.FLOAT, hwc))
            for x in chain:
                m.set_tensor_shape(x, hwc)
            break
        scalar = all(m.get_initializer(i) is None or m.get_initializer(i).size == 1 for i in n.input[1:])
        if n.op_type not in ("Mul", "Sub", "Add", "Div", "BipolarQuant", "Quant") or not scalar:
            break
        t = n.output[0]
        chain.append(t)
    for n in g.node:
        if n.op_type in ("Mul", "Add", "Sub", "Div"):
            for i in n.input:
                v = m.get_initializer(i)
                if v is not None and v.ndim == 4 and v.shape[0] == 1:
                    m.set_initializer(i, v.reshape(v.shape[1:]))
    left = [n.name for n in g.node if n.op_type == "Transpose"]
    if left:
        raise Hls4mlUnsupported(f"--backend hls4ml: {left[0]}: a channels-last Transpose bnhw cannot remove for "
                                "hls4ml (only those around BipolarQuant and at the input)")
    return cleanup_model(m)


def plain_convert(model, folder: Path, io_type: str = "io_parallel", project_name: str = "myproject"):
    """hls4ml's own conversion of a QONNX file (or ``ModelWrapper``), nothing of bnhw's applied (the defect
    reproductions use it)."""
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    m = cleanup_model(ModelWrapper(str(model))) if isinstance(model, (str, Path)) else model
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
    conv = any(n.op == "SWG" for n in g.nodes)
    io_type = "io_stream" if conv else "io_parallel"     # streaming for convolutional nets
    try:
        model = channels_last_qonnx(onnx) if conv else onnx
        hm = plain_convert(model, folder, io_type, project_name)
    except BnhwError:
        raise
    except Exception as e:  # noqa: BLE001 - hls4ml's converter raises anything; name it on one line
        raise Hls4mlUnsupported(f"--backend hls4ml: {g.name}: hls4ml's converter failed: {type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}") from None
    fixed, input_stream = _attach_fixes(hm, g)
    for lay in hm.get_layers():         # traced when the C simulation differs (first_differing_layer)
        lay.set_attr("trace", True)
    with _quiet():
        hm.apply_flow(FLOW_NAME)
        hm.apply_flow(f"{BACKEND.lower()}:apply_templates", reapply="single")
        hm.write()
    layers = [{"name": lay.name, "class": lay.class_name,
               "output_type": str(lay.get_output_variable().type.precision)} for lay in hm.get_layers()]
    return Hls4mlProject(hm, Path(folder), io_type, input_stream, layers, fixed)


def finalize_project(project: Hls4mlProject, final: Path) -> None:
    """Point the project's ``hls4ml_config.yml`` at the folder it will have once the build folder is in place
    (it was written into the staging folder)."""
    cfg = project.folder / "hls4ml_config.yml"
    if cfg.is_file():
        text = cfg.read_text()
        text = re.sub(r"(?m)^OutputDir: .*$", f"OutputDir: {Path(final).resolve()}", text)
        cfg.write_text(text)


def _attach_fixes(hm, g: HwGraph) -> tuple[list[str], str]:
    """Mark hls4ml's layers with the IR's integer values, in graph order: the input quantiser, then each Dense /
    Conv2D.  Returns the marked layers and the IR stream the project takes."""
    from .ops import get_op

    integer, _ = _types()
    layers = list(hm.get_layers())
    compute = [lay for lay in layers if lay.class_name in ("Dense", "Conv2D")]
    mvaus = [n for n in g.nodes if n.op == "MVAU"]
    if len(compute) != len(mvaus):
        raise BnhwError(f"hls4ml made {len(compute)} Dense / Conv2D layers of {g.name}, the IR has {len(mvaus)} "
                        "MVAUs (please report it)")
    for lay, n in zip(compute, mvaus, strict=True):
        lay.set_attr("bnhw_fix", {"kind": "compute", "name": n.name, "weights": n.params["weights"],
                                  "thresholds": n.params.get("thresholds"),
                                  "binary_input": g.in_stream(n).dtype.is_bipolar,
                                  "acc_range": get_op("MVAU").value_range(g, n)})
    thr = g.nodes[0]
    t = np.asarray(thr.params["thresholds"])
    inp = next(lay for lay in layers if lay.class_name == "Input")
    first_after_input = next(lay for lay in layers if lay.class_name not in ("Input", "Reshape"))
    if t.reshape(t.shape[0], -1).shape[1] == 1:
        if first_after_input.class_name != "BatchNormalizationQuantizedTanh":
            raise BnhwError(f"hls4ml layer {first_after_input.name} is a {first_after_input.class_name}, not the "
                            "binary input quantiser bnhw expects (please report it)")
        first_after_input.set_attr("bnhw_fix", {"kind": "input_threshold", "name": thr.name, "thresholds": t})
        inp.get_output_variable().type.precision = integer(9, False)
        return [first_after_input.name, *(lay.name for lay in compute)], g.input
    if first_after_input.class_name != "ApplyAlpha":
        raise BnhwError(f"hls4ml layer {first_after_input.name} is a {first_after_input.class_name}, not the input "
                        "ApplyAlpha bnhw expects (please report it)")
    out = g.streams[thr.outputs[0]].dtype
    first_after_input.set_attr("bnhw_fix", {"kind": "input_ints", "name": thr.name, "bits": out.bits,
                                            "signed": out.signed})
    inp.get_output_variable().type.precision = integer(out.bits, out.signed)
    return [first_after_input.name, *(lay.name for lay in compute)], thr.outputs[0]


# ----------------------------------------------------------------------------- C simulation
def score_node(g: HwGraph) -> Node:
    """The IR node whose output the hls4ml project produces: the last MVAU (class scores before LabelSelect)."""
    return [n for n in g.nodes if n.op == "MVAU"][-1]


def _project_inputs(project: Hls4mlProject, g: HwGraph, int_inputs: np.ndarray) -> np.ndarray:
    """The project's input for each IR input: the IR input itself, or the IR's stream the project starts from."""
    if project.input_stream == g.input:
        xs = [np.asarray(v) for v in int_inputs]
    else:
        xs = [g.execute(v, return_all=True)[project.input_stream] for v in int_inputs]
    return np.ascontiguousarray(np.stack([x.reshape(-1) for x in xs]).astype(np.float64))


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
    x = _project_inputs(project, g, int_inputs)
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
    ir = [n for n in g.nodes if n.op in ("Thresholding", "MVAU") and g.streams[n.outputs[0]].dtype.is_bipolar]
    pairs = [(a, n.outputs[0], n.name) for a, n in zip(acts, ir, strict=False)]
    last = [lay.name for lay in hm.get_layers()][-1]
    return [*pairs, (last, score_node(g).outputs[0], score_node(g).name)]


def first_differing_layer(project: Hls4mlProject, g: HwGraph, x: np.ndarray) -> str:
    """hls4ml's trace of one image against the IR's streams: the first layer whose output differs."""
    hm = project.model
    ref = g.execute(x, return_all=True)
    with _quiet():
        _, trace = hm.trace(_project_inputs(project, g, np.asarray(x)[None]))
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
