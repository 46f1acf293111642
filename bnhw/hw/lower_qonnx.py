"""Lowering of FINN's reference networks (CNV-W1A1, TFC-W1A1) to the hardware IR.

:func:`lower_reference` turns the exported QONNX graph of a
:mod:`bnhw.quant.reference_nets` model into the integer dataflow graph that
FINN's streamlining and ``convert_to_hw`` + ``specialize_layers`` produce,
with finn-plus 1.6.1's node names, so that the finn-examples folding files
apply unchanged (``HwGraph.with_folding``):

* the input is the uint8 image (HWC; TFC: the flattened ``(1, 1, 784)``
  vector), as FINN's accelerators take it;
* ``Thresholding_rtl_0``: the input quantiser (``2x - 1`` then the QONNX
  ``Quant`` / ``BipolarQuant``, applied to ``pixel / 255``) as per-channel
  thresholds on the pixel value: INT8 codes for CNV (Q1.7), bipolar for TFC;
* per convolution ``ConvolutionInputGenerator_rtl_i`` (``SWG``) and
  ``MVAU_hls_j``; per fully connected layer ``MVAU_hls_j`` on a ``(1, 1, C)``
  stream; weights are the bipolar ``+-1`` of the ``BipolarQuant`` weight
  quantisers (``binary_xnor`` when the input is bipolar too; CNV's first
  layer takes the INT8 codes);
* batch norm + sign after a layer is one integer threshold per output
  channel (``thresholds (MH, 1)``, ``out_bias=-1``, ``out_scale=2``: the
  output is ``+-1``); a channel whose float decision *falls* with the
  accumulator gets its weight row negated (FINN's
  ``FactorOutMulSignMagnitude`` + ``Absorb1BitMulIntoMatMul``);
* ``StreamingMaxPool_hls_i`` for the 2x2 max pools (on bipolar data);
* the last layer has no thresholds: its output is the integer accumulator;
  the monotone per-tensor affine after it (``TensorNorm``) is absorbed into
  ``LabelSelect_hls_0`` (FINN's ``AbsorbScalarMulAddIntoTopK``).

Every threshold is found by evaluating the export's own float32 operations
(the ``Mul`` / ``Add`` / ``Sub`` / ``Div`` constants with numpy float32 in
graph order, ``Quant`` / ``BipolarQuant`` with qonnx's own functions) on
every integer accumulator value the layer can reach, and taking the integer
boundary; the graph is thus bit-exact with QONNX execution of the export,
never only "equal up to float algebra".  The exact float value entering those
operations is ``acc * s_in * s_w`` (powers of two; checked to be exactly
representable in float32).

``meta["qonnx_tensors"]`` maps IR stream names to ``[qonnx tensor name,
scale, sign]``: the QONNX tensor (NCHW) equals ``sign * scale *`` the IR
stream (HWC), for checks.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from onnx import NodeProto
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.general.bipolar_quant import binary_quant
from qonnx.custom_op.general.multithreshold import multithreshold
from qonnx.custom_op.general.quant import quant
from qonnx.util.basic import get_by_name

from .ir import DType, HwGraph, IRError, Node, Stream, hwc
from .ops import acc_bounds, get_op

__all__ = ["lower_reference", "lower_qonnx"]


_ELEMENTWISE = ("Mul", "Add", "Sub", "Div")
_MANTISSA = 1 << 24  # integers up to 2**24 are exact in float32


def lower_reference(model: Any, name: str) -> HwGraph:
    """The FINN-style hardware graph of reference network ``name`` (``cnv-w1a1`` / ``tfc-w1a1``).

    ``model`` is the Brevitas model (exported with
    :func:`bnhw.quant.reference_nets.export_reference` to a temporary file
    first), a QONNX file written by that function, or its ``ModelWrapper``.
    """
    from ..quant.reference_nets import REFERENCE_NETS, export_reference

    key = name.lower()
    if key not in REFERENCE_NETS:
        raise ValueError(f"unknown reference network {name!r} (known: {', '.join(REFERENCE_NETS)})")
    if isinstance(model, ModelWrapper):
        mw = model
    elif isinstance(model, (str, os.PathLike)):
        mw = ModelWrapper(str(model))
    else:
        with tempfile.TemporaryDirectory(prefix="bnhw-lower-") as tmp:
            path = export_reference(model, Path(tmp) / "ref.onnx")
            mw = ModelWrapper(str(path))
    c, h, w = REFERENCE_NETS[key].input_shape
    in_shape = (1, 1, c * h * w) if key.startswith("tfc") else (h, w, c)
    return lower_qonnx(mw, key, in_shape)


# ----------------------------------------------------------------------------- float32 replay
def _const(mw: ModelWrapper, tensor: str) -> np.ndarray:
    v = mw.get_initializer(tensor)
    if v is None:
        raise IRError(f"tensor {tensor!r} is not a constant")
    return np.asarray(v)


def _attr(node: NodeProto, key: str, default: Any = None) -> Any:
    a = get_by_name(node.attribute, key)
    if a is None:
        return default
    if a.type == a.INT:
        return int(a.i)
    if a.type == a.INTS:
        return [int(i) for i in a.ints]
    if a.type == a.STRING:
        return a.s.decode()
    if a.type == a.FLOAT:
        return float(a.f)
    raise IRError(f"{node.name}: unsupported attribute {key!r}")


def _replay(mw: ModelWrapper, chain: list[NodeProto], x: np.ndarray) -> np.ndarray:
    """Apply the float32 operations of ``chain`` to ``x`` exactly as QONNX executes them."""
    x = np.asarray(x, dtype=np.float32)
    for n in chain:
        if n.op_type in _ELEMENTWISE:
            c = _const(mw, n.input[1]).astype(np.float32)
            if n.op_type == "Mul":
                x = x * c
            elif n.op_type == "Add":
                x = x + c
            elif n.op_type == "Sub":
                x = x - c
            else:
                x = x / c
        elif n.op_type == "Quant":
            scale, zeropt, bits = (_const(mw, t) for t in n.input[1:4])
            x = quant(x, scale, zeropt, bits, _attr(n, "signed", 1), _attr(n, "narrow", 0),
                      _attr(n, "rounding_mode", "ROUND"))
        elif n.op_type == "BipolarQuant":
            x = binary_quant(x, _const(mw, n.input[1]))
        elif n.op_type == "MultiThreshold":           # FINN-ONNX's activation (qonnx's own function)
            flat = x.ndim == 1                             # a probe of scalars: one channel
            x = multithreshold(x[:, None] if flat else x, _const(mw, n.input[1]), _attr(n, "out_scale", 1.0),
                               _attr(n, "out_bias", 0.0),
                               channels_last=_attr(n, "data_layout", "NCHW") in ("NHWC", "NWC"))
            x = np.asarray(x)[:, 0] if flat else x
        else:
            raise IRError(f"cannot replay {n.op_type} node {n.name!r}")
        x = np.asarray(x, dtype=np.float32)
    return x


def _pow2(v: float) -> bool:
    m, _ = np.frexp(np.float64(v))
    return v > 0 and m == 0.5


def _is_sign(n: NodeProto | None) -> bool:
    """A binary activation: QONNX's ``BipolarQuant``, or FINN-ONNX's bipolar ``MultiThreshold``."""
    if n is None:
        return False
    return n.op_type == "BipolarQuant" or (n.op_type == "MultiThreshold" and _attr(n, "out_dtype", "") == "BIPOLAR")


def _quant_scale(mw: ModelWrapper, n: NodeProto) -> float:
    if n.op_type == "MultiThreshold":               # integer codes; a scale would be a following Mul
        return 1.0
    s = _const(mw, n.input[1]).reshape(-1)
    if s.size != 1 or not _pow2(float(s[0])):
        raise IRError(f"{n.name}: only per-tensor power-of-two quantiser scales are supported, got {s}")
    if n.op_type == "Quant" and np.any(_const(mw, n.input[2]) != 0):
        raise IRError(f"{n.name}: a nonzero zero point is not supported")
    return float(s[0])


# ----------------------------------------------------------------------------- graph walking
class _Walker:
    def __init__(self, mw: ModelWrapper):
        self.mw = mw
        self.nodes = list(mw.graph.node)
        self.consumers: dict[str, list[NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def next(self, tensor: str) -> NodeProto | None:
        c = self.consumers.get(tensor, [])
        if len(c) > 1:
            raise IRError(f"tensor {tensor!r} feeds {len(c)} nodes; only chains are supported")
        return c[0] if c else None

    def weight(self, n: NodeProto) -> tuple[np.ndarray, float]:
        """The bipolar weights (as +-1 integers) and their scale of a Conv / MatMul node: from a BipolarQuant
        node (QONNX), or a +-1 initializer (FINN-ONNX: ``ConvertQONNXtoFINN`` folds the quantiser away and
        annotates the tensor BIPOLAR)."""
        wq = self.mw.find_producer(n.input[1])
        if wq is None and self.mw.get_initializer(n.input[1]) is not None:
            w = _const(self.mw, n.input[1])
            if not np.all(np.abs(w) == 1):
                raise IRError(f"{n.name}: weights are not bipolar (+-1); bnhw builds binary-weight networks")
            return np.rint(w).astype(np.int64), 1.0
        if wq is None or wq.op_type != "BipolarQuant":
            raise IRError(f"{n.name}: weights must come from a BipolarQuant node")
        s = _quant_scale(self.mw, wq)
        w = binary_quant(_const(self.mw, wq.input[0]).astype(np.float32), np.float32(s))
        return np.rint(np.asarray(w, dtype=np.float64) / s).astype(np.int64), s


class _Builder:
    def __init__(self, name: str):
        self.name = name
        self.streams: dict[str, Stream] = {}
        self.nodes: list[Node] = []
        self.count: dict[str, int] = {}
        self.qonnx: dict[str, list] = {}

    def stream(self, shape: tuple[int, int, int], dtype: DType) -> str:
        sname = f"s{len(self.streams)}"
        self.streams[sname] = Stream(sname, hwc(shape), dtype)
        return sname

    def node(self, op: str, src: str, shape, dtype: DType, layer: str, attrs=None, params=None) -> str:
        prefix = get_op(op).finn_name
        i = self.count.get(prefix, 0)
        self.count[prefix] = i + 1
        out = self.stream(shape, dtype)
        self.nodes.append(Node(f"{prefix}_{i}", op, [src], [out], dict(attrs or {}), dict(params or {}), layer))
        return out


def _threshold_rows(mw: ModelWrapper, chain: list[NodeProto], lo: int, hi: int, s_acc: float,
                    channels: int, rank: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: the integer threshold and the row sign so that ``sign(chain(acc)) = 2[sign*acc >= T] - 1``."""
    accs = np.arange(lo, hi + 1, dtype=np.int64)
    probe = (accs.astype(np.float32) * np.float32(s_acc)).reshape((-1, 1) + (1,) * (rank - 2))
    probe = np.broadcast_to(probe, (len(accs), channels) + (1,) * (rank - 2))
    y = _replay(mw, chain, probe).reshape(len(accs), channels)
    if not np.all(np.abs(y) == np.abs(y[0:1])) or np.any(y == 0):
        raise IRError(f"{where}: the activation after the accumulator is not a bipolar sign")
    pos = y > 0                                          # (L, C)
    thr = np.empty(channels, dtype=np.int64)
    sign = np.ones(channels, dtype=np.int64)
    for c in range(channels):
        p = pos[:, c]
        if np.all(p[1:] >= p[:-1]):                      # rises with acc
            k = np.argmax(p) if p.any() else len(p)
            thr[c] = lo + k if p.any() else hi + 1
        elif np.all(p[1:] <= p[:-1]):                    # falls: negate the row, threshold on -acc
            q = p[::-1]                                  # decision as a function of -acc, ascending
            k = np.argmax(q)
            thr[c] = -hi + k
            sign[c] = -1
        else:
            raise IRError(f"{where}: channel {c} is not monotone in the accumulator")
    return thr, sign


def lower_qonnx(mw: ModelWrapper, name: str, in_shape: tuple[int, int, int]) -> HwGraph:
    """Lower a cleaned-up reference-network QONNX graph (see the module docstring)."""
    wk = _Walker(mw)
    b = _Builder(name)
    gin = mw.graph.input[0].name
    pixels = np.arange(256, dtype=np.float32) / np.float32(255.0)   # what qonnx_input feeds

    # ---- input quantiser: elementwise ops up to the first Quant / BipolarQuant
    chain: list[NodeProto] = []
    t = gin
    while True:
        n = wk.next(t)
        if n is None:
            raise IRError("the graph has no input quantiser")
        t = n.output[0]
        if n.op_type in ("Reshape", "Flatten"):
            continue
        chain.append(n)
        if n.op_type in ("Quant", "BipolarQuant", "MultiThreshold"):
            break
    qn = chain[-1]
    s_in = _quant_scale(mw, qn)
    if qn.op_type == "MultiThreshold" and not _is_sign(qn):
        # FINN-ONNX: the integer codes are dequantised by scalar Add / Sub / Mul / Div after the MultiThreshold
        while (n := wk.next(t)) is not None and n.op_type in _ELEMENTWISE and _const(mw, n.input[1]).size == 1:
            c = float(_const(mw, n.input[1]).reshape(-1)[0])
            s_in = s_in * c if n.op_type == "Mul" else s_in / c if n.op_type == "Div" else s_in
            chain.append(n)
            t = n.output[0]
        if not _pow2(abs(s_in)):
            raise IRError(f"{qn.name}: the scale after the input MultiThreshold is not a power of two ({s_in})")
    vals = _replay(mw, chain, pixels).astype(np.float64) / s_in
    codes = np.rint(vals).astype(np.int64)
    if np.any(vals != codes):
        raise IRError("the input quantiser does not produce integer multiples of its scale")
    if np.any(np.diff(codes) < 0):
        raise IRError("the input quantiser is not monotone in the pixel value")
    C = in_shape[-1]
    x = b.stream(in_shape, DType.int_(8, signed=False, scale=1.0 / 255.0))
    if _is_sign(qn):
        k = int(np.argmax(codes > 0)) if np.any(codes > 0) else 256
        thr = np.full((C, 1), k, dtype=np.int64)
        attrs: dict[str, Any] = {"out_bias": -1, "out_scale": 2}
        odt = DType.bipolar()
        qlo, qhi = -1, 1
    else:
        qlo, qhi = int(codes[0]), int(codes[-1])
        levels = np.arange(qlo + 1, qhi + 1)
        first = np.array([int(np.argmax(codes >= v)) for v in levels], dtype=np.int64)
        thr = np.broadcast_to(first, (C, len(first))).copy()
        attrs = {"out_bias": qlo, "out_scale": 1}
        odt = DType.for_range(qlo, qhi, s_in)
    cur = b.node("Thresholding", x, in_shape, odt, "input_quant", attrs, {"thresholds": thr})
    b.qonnx[cur] = [t, s_in, 1]
    s_cur = s_in                       # real value of one integer step of the current stream

    # ---- layers
    conv_i = fc_i = pool_i = 0
    final_acc: str | None = None
    while True:
        n = wk.next(t)
        if n is None:
            break
        st = b.streams[cur]
        if n.op_type in ("Reshape", "Flatten"):
            if st.shape[0] * st.shape[1] != 1:
                raise IRError(f"{n.name}: flattening a {st.shape} feature map is not supported "
                              "(CHW vs HWC order)")
            t = n.output[0]
            continue
        if n.op_type == "MaxPool":
            k = _attr(n, "kernel_shape")
            strides = _attr(n, "strides", k)
            if k[0] != k[1] or strides != k or any(_attr(n, "pads", [0, 0, 0, 0])):
                raise IRError(f"{n.name}: only k x k max pools with stride k and no padding are supported")
            kk = k[0]
            H, W, Cc = st.shape
            cur = b.node("MaxPool", cur, (H // kk, W // kk, Cc), st.dtype, f"pool{pool_i}",
                         # FINN's InferPool leaves the pool fully parallel over channels (PE = C), and
                         # finn-examples' folding files do not list the pools
                         {"k": kk, "pe": Cc})
            pool_i += 1
            t = n.output[0]
            b.qonnx[cur] = [t, s_cur, 1]
            continue
        if n.op_type not in ("Conv", "MatMul"):
            raise IRError(f"unexpected {n.op_type} node {n.name!r}")
        w, s_w = wk.weight(n)
        xnor = st.dtype.is_bipolar
        if n.op_type == "Conv":
            kh, kw = _attr(n, "kernel_shape", list(w.shape[2:]))
            if (kh != kw or any(_attr(n, "pads", [0, 0, 0, 0])) or _attr(n, "group", 1) != 1
                    or any(v != 1 for v in _attr(n, "strides", [1, 1]))
                    or any(v != 1 for v in _attr(n, "dilations", [1, 1]))):
                raise IRError(f"{n.name}: only unpadded stride-1 ungrouped square convolutions are supported")
            H, W, Cc = st.shape
            if w.shape[1] != Cc:
                raise IRError(f"{n.name}: weights for {w.shape[1]} input channels on a {Cc}-channel stream")
            Ho, Wo = H - kh + 1, W - kw + 1
            wmat = w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)      # (ky, kx, c) window order
            cur = b.node("SWG", cur, (Ho, Wo, kh * kh * Cc), st.dtype, f"conv{conv_i}",
                         {"k": kh, "stride": 1, "pad": 0, "dilation": 1, "pad_value": 0})
            out_hw = (Ho, Wo)
            layer = f"conv{conv_i}"
            conv_i += 1
            rank = 4
        else:
            if st.shape[:2] != (1, 1) or w.shape[0] != st.shape[2]:
                raise IRError(f"{n.name}: a {w.shape} MatMul on a {st.shape} stream")
            wmat = w.T
            out_hw = (1, 1)
            layer = f"fc{fc_i}"
            fc_i += 1
            rank = 2
        MH, MW = wmat.shape
        # reachable accumulator range of the layer
        xin = b.streams[cur].dtype
        xlo, xhi = (-1, 1) if xin.is_bipolar else (qlo, qhi)
        lo, hi = acc_bounds(wmat, xlo, xhi)
        lo, hi = min(lo, -hi), max(hi, -lo)               # symmetric: rows may be negated
        if max(abs(lo), abs(hi)) >= _MANTISSA or not _pow2(s_cur * s_w):
            raise IRError(f"{n.name}: the float accumulator is not exact in float32")
        s_acc = s_cur * s_w
        t = n.output[0]
        # the float ops after the accumulator: up to a BipolarQuant, or to the graph output
        post: list[NodeProto] = []
        nxt = wk.next(t)
        while nxt is not None and nxt.op_type in _ELEMENTWISE:
            post.append(nxt)
            t = nxt.output[0]
            nxt = wk.next(t)
        attrs = {"MW": MW, "MH": MH, "binary_xnor": bool(xnor), "weight_dtype": "BIPOLAR",
                 "acc_dtype": DType.for_range(lo, hi).finn_name()}
        if _is_sign(nxt):
            assert nxt is not None
            post.append(nxt)
            t = nxt.output[0]
            thr, sign = _threshold_rows(mw, post, lo, hi, s_acc, MH, rank, n.name)
            attrs.update(out_bias=-1, out_scale=2)
            cur = b.node("MVAU", cur, out_hw + (MH,), DType.bipolar(), layer, attrs,
                         {"weights": wmat * sign[:, None], "thresholds": thr[:, None]})
            s_cur = _quant_scale(mw, nxt)
            b.qonnx[cur] = [t, s_cur, 1]
            continue
        if nxt is not None:
            raise IRError(f"{nxt.name}: unexpected {nxt.op_type} after the accumulator of {n.name}")
        # the last layer: integer accumulator; the float tail must be monotone (absorbed into LabelSelect)
        accs = np.arange(lo, hi + 1, dtype=np.int64)
        y = _replay(mw, post, (accs.astype(np.float32) * np.float32(s_acc))[:, None])[:, 0]
        if np.all(np.diff(y) >= 0):
            direction = 1
        elif np.all(np.diff(y) <= 0):
            direction = -1
        else:
            raise IRError(f"{n.name}: the output affine is not monotone")
        adt = DType.for_range(lo, hi, s_acc)
        cur = b.node("MVAU", cur, out_hw + (MH,), adt, layer, attrs, {"weights": wmat * direction})
        b.qonnx[cur] = [n.output[0], s_acc, direction]
        final_acc = cur
    if final_acc is None or b.streams[final_acc].dtype.is_bipolar:
        raise IRError("the graph does not end in an accumulator layer")
    label_dt = DType.for_range(0, b.streams[final_acc].channels - 1)
    out = b.node("LabelSelect", final_acc, (1, 1, 1), label_dt, "labelselect", {"k": 1})
    meta = {"source": "qonnx", "network": name, "qonnx_tensors": b.qonnx, "final_acc": final_acc,
            "finn_onnx": any(n.op_type == "MultiThreshold" for n in mw.graph.node)}
    return HwGraph(name, b.streams, b.nodes, x, out, meta)
