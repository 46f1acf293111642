"""Lower a fixed-point bnhw :class:`~bnhw.quant.model.BinaryNet` to the hardware IR, bit-exactly.

A ``residual="fixed"`` network is integer arithmetic throughout (every
float32 operation of its PyTorch model and of its QONNX export is exact or
saturates exactly as the integer one; see :mod:`bnhw.quant.layers`), so its
lowering reads the integer constants off the model and needs no search::

    input (stem_bits integers of the input Quant, HWC)
      stem:   SWG (pad k//2, zero) -> MVAU (int x int, accumulator)
              -> AddRequant (to the residual format: the stem conv quantiser)
              -> AddRequant (the dyadic BN, residual format out)
      block i, half 1 (layer "block{i}.conv1"):
              Duplicate -> Thresholding (LearnableSign: one threshold per channel, bipolar)
                        -> SWG (zero padding, bipolar(padded)) -> MVAU (XNOR-popcount, groups)
                        -> AddRequant (BN + shortcut + requantiser) <- [AvgPoolSum 2x2 if stride 2]
                        -> RPReLU
      block i, half 2 (layer "block{i}.conv2"): the same with a 1 x 1 conv (no SWG:
              the MVAU reads the pixels directly) and a Gather shortcut when the width changes
      head:   GlobalAvgPool (round half even) -> MVAU (classifier_bits weights): the output
              is the classifier's integer accumulator.

The float per-class tail (weight scale, bias, logit BN) is
``graph.meta["head"]``: ``logits = acc * scale + bias`` on the host, and the
label is their argmax.  Every residual stream is ``residual_bits``-bit signed
with scale ``2**-residual_frac_bits``, the QONNX ``Quant`` tensors divided by
that scale (in HWC order); every ``Thresholding`` output is the QONNX
``BipolarQuant`` activation.  :func:`integer_input` gives the integers of the
input quantiser for float images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import BnhwError
from ..quant.layers import (
    BNFormat,
    Dyadic,
    FoldedBatchNorm2d,
    bn_affine,
    sign_thresholds,
)
from ..quant.model import BinaryNet, Network, baked_copy
from .ir import DType, HwGraph, Node, Stream, hwc
from .ops import acc_bounds, get_op

__all__ = ["GraphBuilder", "binary_mvau", "integer_input", "lower_binarynet", "lower_head", "lower_stem", "window_weights"]



def integer_input(model: Network, images: Tensor | np.ndarray) -> np.ndarray:
    """The integers of the network's input quantiser for float images ``(N, C, H, W)``,
    as ``(N, H, W, C)`` int64: ``clip(round_half_even(x * 2**(stem_bits-1)))``, exactly
    what the QONNX input ``Quant`` (and the Brevitas quantiser) produce, divided by its scale."""
    x = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    x = x.astype(np.float32)
    if x.ndim != 4:
        raise BnhwError(f"integer_input: expected images of shape (N, C, H, W), got {x.shape}")
    bits = model.spec.precision.stem_bits
    k = np.rint(x * np.float32(2.0 ** (bits - 1)))           # exact scaling, round half to even
    k = np.clip(k, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return k.astype(np.int64).transpose(0, 2, 3, 1)


class GraphBuilder:
    """Streams and nodes of a graph being lowered; nodes are named ``{finn_name}_{i}`` in creation order."""

    def __init__(self) -> None:
        self.streams: dict[str, Stream] = {}
        self.nodes: list[Node] = []
        self.count: dict[str, int] = {}

    def stream(self, name: str, shape, dtype: DType) -> str:
        if name in self.streams:
            raise AssertionError(f"stream {name!r} declared twice")
        self.streams[name] = Stream(name, hwc(shape), dtype)
        return name

    def node(self, op: str, inputs: list[str], outputs: list[tuple[str, tuple, DType]], layer: str,
             attrs: dict | None = None, params: dict | None = None) -> list[str]:
        prefix = get_op(op).finn_name
        i = self.count.get(prefix, 0)
        self.count[prefix] = i + 1
        outs = [self.stream(n, s, d) for n, s, d in outputs]
        self.nodes.append(Node(f"{prefix}_{i}", op, list(inputs), outs, dict(attrs or {}),
                               {k: np.asarray(v) for k, v in (params or {}).items()}, layer))
        return outs


def _bn_ints(bn: FoldedBatchNorm2d) -> tuple[np.ndarray, np.ndarray, BNFormat]:
    fmt = bn.fmt
    if fmt is None:
        raise AssertionError("a fixed-mode batch norm without a dyadic format")
    a, b = bn.constants()
    return fmt.a.integers(a), fmt.b.integers(b), fmt


def _pow2_exponent(scale: float, what: str) -> int:
    e = int(round(-np.log2(scale)))
    if 2.0 ** -e != scale:
        raise BnhwError(f"{what}: scale {scale} is not a power of two")
    return e


def binary_mvau(b: GraphBuilder, s: str, out: str, wmat: np.ndarray, size: int, layer: str, *, k: int,
                channels: int, groups: int) -> str:
    """An XNOR MVAU node: ``+-1`` weights ``wmat`` (``cout x k*k*channels/groups``) on the window stream ``s``,
    accumulators (``size x size x cout``, the exact range of the fan-in) into stream ``out``."""
    fan_in = (channels // groups) * k * k
    acc_t = DType.for_range(-fan_in, fan_in)
    (acc,) = b.node("MVAU", [s], [(out, (size, size, wmat.shape[0]), acc_t)], layer,
                    {"MW": k * k * channels, "MH": wmat.shape[0], "binary_xnor": True, "weight_bits": 1,
                     "weight_dtype": "BIPOLAR", "groups": groups, "channels": channels, "k": k,
                     "acc_dtype": acc_t.finn_name()},
                    {"weights": wmat})
    return acc


def window_weights(w: np.ndarray) -> np.ndarray:
    """Conv weights ``(O, C/g, k, k)`` as MVAU rows ``(O, k*k*C/g)`` in SWG order ``(ky, kx, c)``."""
    return w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)


def residual_dtype(p) -> DType:
    """The type of every residual stream: ``residual_bits`` signed, scale ``2**-residual_frac_bits``."""
    return DType.int_(p.residual_bits, True, 2.0 ** -p.residual_frac_bits)


def lower_stem(b: GraphBuilder, stem, p, in_channels: int, res_in: int, k: int, stride: int,
               channels: int) -> tuple[str, str]:
    """A fixed-mode :class:`~bnhw.quant.layers.Stem` (layer ``"stem"``): ``(input stream, output stream)``."""
    R = p.residual_frac_bits
    res = residual_dtype(p)
    sb = p.stem_bits
    x = b.stream("input", (res_in, res_in, in_channels), DType.int_(sb, True, 2.0 ** -(sb - 1)))
    pad = k // 2
    so = (res_in + 2 * pad - k) // stride + 1
    (win,) = b.node("SWG", [x], [("stem.window", (so, so, k * k * in_channels), b.streams[x].dtype)],
                    "stem", {"k": k, "stride": stride, "pad": pad, "pad_value": 0, "dilation": 1,
                             "channels": in_channels, "ifm_dim": res_in})
    qw = stem.conv.quant_weight()
    w_scale = float(qw.scale.reshape(-1)[0])
    e_w = _pow2_exponent(w_scale, "stem weights")
    w_int = Dyadic(e_w, 2 ** (sb - 1)).integers(qw.value)
    wmat = window_weights(w_int)
    lo, hi = acc_bounds(wmat, -(2 ** (sb - 1)), 2 ** (sb - 1) - 1)
    acc_frac = (sb - 1) + e_w
    if max(-lo, hi) >= 2 ** 24:
        raise BnhwError("lowering: the stem accumulator is not exact in float32")
    (acc,) = b.node("MVAU", [win], [("stem.acc", (so, so, channels), DType.for_range(lo, hi, 2.0 ** -acc_frac))],
                    "stem", {"MW": wmat.shape[1], "MH": wmat.shape[0], "binary_xnor": False,
                             "weight_bits": sb, "weight_dtype": f"INT{sb}", "groups": 1,
                             "channels": in_channels, "k": k,
                             "acc_dtype": DType.for_range(lo, hi).finn_name()},
                    {"weights": wmat})
    ones = np.ones(channels, dtype=np.int64)
    (cur,) = b.node("AddRequant", [acc], [("stem.conv", (so, so, channels), res)], "stem",
                    {"shift": acc_frac - R, "shortcut_shift": 0},
                    {"A": ones, "B": 0 * ones})
    A, B, fmt = _bn_ints(stem.bn)
    (cur,) = b.node("AddRequant", [cur], [("stem.out", (so, so, channels), res)], "stem",
                    {"shift": fmt.a.frac, "shortcut_shift": 0}, {"A": A, "B": B})
    return x, cur


def lower_head(b: GraphBuilder, classifier, p, cur: str, fs: int, C: int, num_classes: int) -> tuple[str, dict]:
    """A fixed-mode :class:`~bnhw.quant.layers.Classifier` on stream ``cur`` (``fs x fs x C``): ``(the
    accumulator stream, meta["head"])``, the float per-class tail ``logits = acc * scale + bias``."""
    N, R = p.residual_bits, p.residual_frac_bits
    res = residual_dtype(p)
    if fs * fs * 2 ** (N - 1) > 2 ** 24:
        raise BnhwError(f"lowering: a {fs}x{fs} global average pool of {N}-bit values is not "
                        "exact in float32")
    (pooled,) = b.node("GlobalAvgPool", [cur], [("head.pool", (1, 1, C), res)], "classifier",
                       {"channels": C, "ifm_dim": fs})
    fc = classifier.fc
    qw = fc.quant_weight()
    cb = p.classifier_bits
    wc_scale = float(qw.scale.reshape(-1)[0])
    e_c = _pow2_exponent(wc_scale, "classifier weights")
    wc = Dyadic(e_c, 2 ** (cb - 1)).integers(qw.value)                   # (classes, C)
    lo, hi = acc_bounds(wc, res.min, res.max)
    acc_scale = 2.0 ** -(R + e_c)
    (logits,) = b.node("MVAU", [pooled], [("head.acc", (1, 1, num_classes),
                                           DType.for_range(lo, hi, acc_scale))],
                       "classifier", {"MW": C, "MH": num_classes, "binary_xnor": False,
                                      "weight_bits": cb, "weight_dtype": f"INT{cb}", "groups": 1,
                                      "channels": C, "k": 1,
                                      "acc_dtype": DType.for_range(lo, hi).finn_name()},
                       {"weights": wc})
    bn = classifier.bn                     # the logit BN: a float per-class affine map
    assert bn.running_mean is not None and bn.running_var is not None     # tracked running statistics
    scale_t, shift_t = bn_affine(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
    la, lb = scale_t.double().numpy(), shift_t.double().numpy()
    bias = fc.bias.detach().double().numpy()
    return logits, {"scale": (acc_scale * la).tolist(), "bias": (bias * la + lb).tolist()}


@torch.no_grad()
def lower_binarynet(model: BinaryNet) -> HwGraph:
    """The hardware IR of a ``residual="fixed"`` :class:`~bnhw.quant.model.BinaryNet`.

    ``HwGraph.execute(integer_input(model, x)[i])`` reproduces the exported
    QONNX graph's residual ``Quant`` and binary tensors bit for bit and
    returns the classifier accumulator (logits via ``graph.meta["head"]``).
    A float-mode model is refused (convert it with
    :func:`bnhw.quant.model.to_fixed` first).  ``model`` is not modified.
    """
    spec = model.spec
    p = spec.precision
    if not p.fixed:
        raise BnhwError(f"lower_binarynet: {spec.name or 'the network'} has a float residual path "
                        "(precision.residual='float'); convert it with bnhw.quant.model.to_fixed first")
    m = baked_copy(model)            # eval mode, weight transforms evaluated: the exported weights
    res = residual_dtype(p)
    b = GraphBuilder()

    # ------------------------------------------------------------------ stem
    st = spec.stem
    x, cur = lower_stem(b, m.stem, p, spec.in_channels, spec.resolution, st.kernel, st.stride, st.channels)

    # ------------------------------------------------------------------ blocks
    for i, (blk, g) in enumerate(zip(m.blocks, spec.blocks(), strict=True)):
        cur = _half(b, blk, i, 1, cur, g.in_channels, g.in_channels, g.block.kernel, g.block.groups,
                    g.block.stride, g.in_size, p, res)
        cur = _half(b, blk, i, 2, cur, g.in_channels, g.out_channels, 1, 1, 1, g.out_size, p, res)

    # ------------------------------------------------------------------ head
    logits, head = lower_head(b, m.classifier, p, cur, spec.final_size, spec.final_channels, spec.num_classes)
    sb = p.stem_bits
    meta = {"source": "bnhw.BinaryNet", "spec": spec.to_dict(), "head": head,
            "input": {"bits": sb, "frac_bits": sb - 1},
            "residual": {"bits": p.residual_bits, "frac_bits": p.residual_frac_bits}}
    return HwGraph(spec.name or "binarynet", b.streams, b.nodes, x, logits, meta)


def _half(b: GraphBuilder, blk, i: int, half: int, x: str, cin: int, cout: int, k: int, groups: int,
          stride: int, size: int, p, res: DType) -> str:
    """One half of a BinaryBlock: sign, conv, BN + shortcut + requantiser, RPReLU."""
    layer = f"block{i}.conv{half}"
    tag = f"block{i}.h{half}"
    sign = blk.sign1 if half == 1 else blk.sign2
    conv = blk.conv1 if half == 1 else blk.conv2
    bn = blk.bn1 if half == 1 else blk.bn2
    act = blk.act1 if half == 1 else blk.act2
    R = p.residual_frac_bits
    out_size = size // stride
    xa, xs = b.node("Duplicate", [x], [(f"{tag}.to_sign", (size, size, cin), res),
                                        (f"{tag}.to_shortcut", (size, size, cin), res)], layer, {"n": 2})
    thr = sign_thresholds(sign.bias, R, res.min, res.max)
    (s,) = b.node("Thresholding", [xa], [(f"{tag}.sign", (size, size, cin), DType.bipolar())], layer,
                  {"out_bias": -1, "out_scale": 2, "channels": cin},
                  {"thresholds": thr.reshape(cin, 1)})
    w = conv.binary_weight().detach().numpy()
    wmat = np.rint(window_weights(w)).astype(np.int64)
    if not np.all(np.abs(wmat) == 1):
        raise AssertionError(f"{layer}: binary weights are not +-1")
    if k > 1 or stride > 1:
        pad = k // 2
        (s,) = b.node("SWG", [s], [(f"{tag}.window", (out_size, out_size, k * k * cin),
                                    DType.bipolar(padded=pad > 0))], layer,
                      {"k": k, "stride": stride, "pad": pad, "pad_value": 0, "dilation": 1,
                       "channels": cin, "ifm_dim": size})
    acc = binary_mvau(b, s, f"{tag}.acc", wmat, out_size, layer, k=k, channels=cin, groups=groups)
    A, B, fmt = _bn_ints(bn)
    F = fmt.a.frac
    if half == 1 and stride == 2:
        (sc,) = b.node("AvgPoolSum", [xs], [(f"{tag}.pool", (out_size, out_size, cin),
                                             DType.int_(res.bits + 2, True, 2.0 ** -(R + 2)))], layer,
                       {"k": 2, "channels": cin})
        sc_shift = F - R - 2
    elif cout != cin:
        index = np.asarray(blk.shortcut2.index, dtype=np.int64)
        (sc,) = b.node("Gather", [xs], [(f"{tag}.gather", (out_size, out_size, cout), res)], layer,
                       {"channels": cin}, {"index": index})
        sc_shift = F - R
    else:
        sc, sc_shift = xs, F - R
    (y,) = b.node("AddRequant", [acc, sc], [(f"{tag}.sum", (out_size, out_size, cout), res)], layer,
                  {"shift": F - R, "shortcut_shift": sc_shift}, {"A": A, "B": B})
    fmt_r = act.fmt
    s_in, slope, s_out = act.constants()
    (out,) = b.node("RPReLU", [y], [(f"{tag}.out", (out_size, out_size, cout), res)], layer,
                    {"frac": fmt_r.slope.frac, "channels": cout},
                    {"S_in": fmt_r.shift.integers(s_in).reshape(-1),
                     "slope": fmt_r.slope.integers(slope).reshape(-1),
                     "S_out": fmt_r.shift.integers(s_out).reshape(-1)})
    return out
