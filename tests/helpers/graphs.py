"""Hardware-IR test graphs shared by the HLS, cycle-simulator and CPU-runtime tests: a small graph
builder, the legal foldings, and graphs that together use every node kind and its corner cases."""

from __future__ import annotations

import numpy as np

from bnhw.hw.ir import DType, HwGraph, Node, Stream


# ----------------------------------------------------------------------------- graph building helpers
class Builder:
    """Append nodes to a graph one at a time; every ``add`` returns the new output stream's name."""

    def __init__(self, name: str, shape, dtype: DType):
        self.name = name
        self.streams = {"x": Stream("x", tuple(shape), dtype)}
        self.nodes: list[Node] = []
        self.count: dict[str, int] = {}

    def add(self, op: str, inputs, shape, dtype: DType, attrs=None, params=None, outputs: int = 1):
        k = self.count.get(op, 0)
        self.count[op] = k + 1
        name = f"{op}_{k}"
        outs = [f"{name}_out{i}" if outputs > 1 else f"{name}_out" for i in range(outputs)]
        for s in outs:
            self.streams[s] = Stream(s, tuple(shape), dtype)
        ins = [inputs] if isinstance(inputs, str) else list(inputs)
        self.nodes.append(Node(name, op, ins, outs, dict(attrs or {}), dict(params or {}), layer=f"l{len(self.nodes)}"))
        return outs if outputs > 1 else outs[0]

    def shape(self, s):
        return self.streams[s].shape

    def dtype(self, s):
        return self.streams[s].dtype

    def graph(self, output: str) -> HwGraph:
        return HwGraph(self.name, self.streams, self.nodes, "x", output)


def swg(b: Builder, x: str, k: int, *, pad=0, stride=1, dil=1, pad_value=0):
    H, W, C = b.shape(x)
    Ho = (H + 2 * pad - dil * (k - 1) - 1) // stride + 1
    Wo = (W + 2 * pad - dil * (k - 1) - 1) // stride + 1
    t = b.dtype(x)
    if t.is_bipolar and pad and pad_value == 0:
        t = DType.bipolar(padded=True)
    return b.add("SWG", x, (Ho, Wo, k * k * C), t,
                 {"k": k, "pad": pad, "stride": stride, "dilation": dil, "pad_value": pad_value})


def acc_type(w: np.ndarray, t: DType) -> DType:
    lo, hi = (-1, 1) if t.is_bipolar else (t.min, t.max)
    w = w.astype(np.int64)
    return DType.for_range(int(np.minimum(w * lo, w * hi).sum(1).min()), int(np.maximum(w * lo, w * hi).sum(1).max()))


def add_mvau(b, x, w, *, groups=1, channels=None, thresholds=None, out_bias=0, out_scale=1, out=None,
             binary=None):
    H, W, MW = b.shape(x)
    t = b.dtype(x)
    if binary is None:
        binary = bool(t.is_bipolar and np.all(np.abs(w) == 1))
    attrs = {"binary_xnor": binary, "groups": groups}
    if groups > 1:
        attrs["channels"] = channels
    params = {"weights": w}
    if thresholds is not None:
        params["thresholds"] = thresholds
        attrs.update(out_bias=out_bias, out_scale=out_scale)
        if out is None:
            n = thresholds.shape[1]
            out = DType.bipolar() if (n == 1 and out_bias == -1 and out_scale == 2) else \
                DType.for_range(out_bias, out_bias + out_scale * n)
    return b.add("MVAU", x, (H, W, w.shape[0]), out or acc_type(w, t), attrs, params)


def sorted_thresholds(rng, rows, n, lo, hi):
    return np.sort(rng.integers(lo, hi + 1, (rows, n)), axis=1)


def sign_thresholds(rows):
    return np.zeros((rows, 1), dtype=np.int64)


def bipolar_w(rng, shape):
    return rng.choice([-1, 1], shape)


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def fold(g: HwGraph, mode: str, seed: int = 0) -> HwGraph:
    """``ones``: PE = SIMD = 1; ``full``: fully parallel; ``random``: a random legal divisor each (and the
    AddRequant multipliers in DSP slices)."""
    rng = np.random.default_rng(seed)
    cfg = {}

    def pick(n):
        ds = divisors(n)
        return {"ones": 1, "full": n}.get(mode) or int(rng.choice(ds[1:-1] or ds))

    for n in g.nodes:
        si, so = g.in_stream(n), g.out_stream(n)
        if n.op == "MVAU":
            groups = int(n.attrs.get("groups", 1))
            if groups > 1:
                pe, simd = pick(so.channels // groups), pick(int(n.attrs["channels"]) // groups)
            else:
                pe, simd = pick(so.channels), pick(si.channels)
            cfg[n.name] = {"PE": pe, "SIMD": simd}
        elif n.op == "SWG":
            cfg[n.name] = {"SIMD": pick(si.channels)}
        elif n.op == "LabelSelect":
            cfg[n.name] = {"PE": pick(si.elems)}
        elif n.op in ("Thresholding", "MaxPool", "AvgPoolSum", "GlobalAvgPool", "AddRequant", "RPReLU"):
            cfg[n.name] = {"PE": pick(si.channels)}
            if n.op == "AddRequant" and mode == "random":      # its multiplier bound to DSP slices
                cfg[n.name]["mul_dsp"] = 1
        elif n.op in ("WindowMax", "WindowAvg"):
            cfg[n.name] = {"PE": pick(so.channels)}
        elif n.op == "Concat":
            cfg[n.name] = {"PE": pick(int(np.gcd.reduce([g.streams[s].channels for s in n.inputs])))}
    return g.with_folding(cfg)


def reference(g: HwGraph, x: np.ndarray) -> np.ndarray:
    return np.stack([g.execute(xi) for xi in x])


# ----------------------------------------------------------------------------- test graphs
def int_graph(seed: int = 0) -> HwGraph:
    """Integer path: Duplicate, multi-Thresholding, padded int SWG, int MVAU, MaxPool, AvgPoolSum,
    Gather, two-input AddRequant, RPReLU, GlobalAvgPool, classifier MVAU with thresholds."""
    rng = np.random.default_rng(seed)
    b = Builder("ints", (8, 8, 4), DType.int_(5))
    a, s = b.add("Duplicate", "x", (8, 8, 4), DType.int_(5), outputs=2)
    t = b.add("Thresholding", a, (8, 8, 4), DType.int_(3), {"out_bias": -1},
              {"thresholds": sorted_thresholds(rng, 4, 3, -18, 18)})
    w = swg(b, t, 3, pad=1, pad_value=-2)
    acc = add_mvau(b, w, rng.integers(-3, 4, (8, 36)))
    mp = b.add("MaxPool", acc, (4, 4, 8), b.dtype(acc), {"k": 2})
    ap = b.add("AvgPoolSum", s, (4, 4, 4), DType.int_(7), {"k": 2})
    ga = b.add("Gather", ap, (4, 4, 8), DType.int_(7), {}, {"index": rng.integers(0, 4, 8)})
    y = b.add("AddRequant", [mp, ga], (4, 4, 8), DType.int_(6),
              {"shift": 2, "shortcut_shift": 2}, {"A": rng.integers(-5, 6, 8), "B": rng.integers(-40, 40, 8)})
    r = b.add("RPReLU", y, (4, 4, 8), DType.int_(6), {"frac": 3},
              {"S_in": rng.integers(-4, 5, 8), "slope": rng.integers(-3, 9, 8), "S_out": rng.integers(-4, 5, 8)})
    gp = b.add("GlobalAvgPool", r, (1, 1, 8), DType.int_(6))
    rq = b.add("AddRequant", gp, (1, 1, 8), DType.int_(8), {"shift": -1},
               {"A": rng.integers(-3, 4, 8), "B": rng.integers(-9, 9, 8)})
    out = add_mvau(b, rq, rng.integers(-100, 100, (6, 8)), thresholds=sorted_thresholds(rng, 6, 5, -3000, 3000),
                   out_bias=-2, out_scale=3)
    return b.graph(out)


def bin_graph(seed: int = 0) -> HwGraph:
    """Binary path: padded strided SWG, grouped XNOR MVAU (thresholds, bipolar out), bipolar MaxPool,
    dilated SWG, XNOR MVAU to an accumulator, single-input AddRequant, sign Thresholding, bipolar
    Gather, int MVAU on bipolar data."""
    rng = np.random.default_rng(seed)
    b = Builder("bins", (7, 7, 8), DType.bipolar())
    w = swg(b, "x", 3, pad=1, stride=2)                                   # (4, 4, 72) padded
    y = add_mvau(b, w, bipolar_w(rng, (8, 36)), groups=2, channels=8,
                 thresholds=rng.integers(-6, 7, (8, 1)), out_bias=-1, out_scale=2)
    m = b.add("MaxPool", y, (2, 2, 8), DType.bipolar(), {"k": 2})
    w2 = swg(b, m, 2, pad=1, dil=2, pad_value=1)                          # bipolar padded with +1
    acc = add_mvau(b, w2, bipolar_w(rng, (12, 32)))
    rq = b.add("AddRequant", acc, (2, 2, 12), DType.int_(4, signed=False), {"shift": 2},
               {"A": rng.integers(-4, 5, 12), "B": rng.integers(-10, 30, 12)})
    sg = b.add("Thresholding", rq, (2, 2, 12), DType.bipolar(), {"out_bias": -1, "out_scale": 2},
               {"thresholds": rng.integers(0, 16, (12, 1))})
    ga = b.add("Gather", sg, (2, 2, 6), DType.bipolar(), {}, {"index": rng.permutation(12)[:6]})
    out = add_mvau(b, ga, rng.integers(-8, 8, (5, 6)))
    return b.graph(out)


def bireal_graph(seed: int = 0) -> HwGraph:
    """A Bi-Real-like pair of blocks: downsampling grouped 3x3 + channel-expanding 1x1, then the head."""
    rng = np.random.default_rng(seed)
    b = Builder("bireal", (8, 8, 8), DType.int_(8))
    xa, xs = b.add("Duplicate", "x", (8, 8, 8), DType.int_(8), outputs=2)
    sg = b.add("Thresholding", xa, (8, 8, 8), DType.bipolar(), {"out_bias": -1, "out_scale": 2},
               {"thresholds": sign_thresholds(8)})
    w = swg(b, sg, 3, pad=1, stride=2)                                    # (4, 4, 72) padded bipolar
    acc = add_mvau(b, w, bipolar_w(rng, (8, 36)), groups=2, channels=8)
    sc = b.add("AvgPoolSum", xs, (4, 4, 8), DType.int_(10), {"k": 2})
    y = b.add("AddRequant", [acc, sc], (4, 4, 8), DType.int_(8), {"shift": 4, "shortcut_shift": 2},
              {"A": rng.integers(20, 60, 8), "B": rng.integers(-200, 200, 8)})
    y = b.add("RPReLU", y, (4, 4, 8), DType.int_(8), {"frac": 4},
              {"S_in": rng.integers(-3, 4, 8), "slope": rng.integers(1, 8, 8), "S_out": rng.integers(-3, 4, 8)})
    ya, ys = b.add("Duplicate", y, (4, 4, 8), DType.int_(8), outputs=2)
    sg2 = b.add("Thresholding", ya, (4, 4, 8), DType.bipolar(), {"out_bias": -1, "out_scale": 2},
                {"thresholds": sign_thresholds(8)})
    acc2 = add_mvau(b, sg2, bipolar_w(rng, (16, 8)))
    gs = b.add("Gather", ys, (4, 4, 16), DType.int_(8), {}, {"index": np.repeat(np.arange(8), 2)})
    y2 = b.add("AddRequant", [acc2, gs], (4, 4, 16), DType.int_(8), {"shift": 3, "shortcut_shift": 3},
               {"A": rng.integers(10, 40, 16), "B": rng.integers(-100, 100, 16)})
    y2 = b.add("RPReLU", y2, (4, 4, 16), DType.int_(8), {"frac": 3},
               {"S_in": rng.integers(-3, 4, 16), "slope": rng.integers(1, 8, 16), "S_out": rng.integers(-3, 4, 16)})
    gp = b.add("GlobalAvgPool", y2, (1, 1, 16), DType.int_(8))
    out = add_mvau(b, gp, rng.integers(-128, 128, (10, 16)))
    return b.graph(out)


def cnv_graph(seed: int = 0, size: int = 12, chans=(16, 32, 64), labels: bool = True) -> HwGraph:
    """A CNV-like chain: uint8 Thresholding, unpadded SWGs, int8-input MVAU with thresholds to bipolar,
    XNOR MVAUs, MaxPools, fully connected layers, LabelSelect."""
    rng = np.random.default_rng(seed)
    b = Builder("cnv", (size, size, 3), DType.int_(8, signed=False))
    t = b.add("Thresholding", "x", (size, size, 3), DType.int_(8), {"out_bias": -128},
              {"thresholds": sorted_thresholds(rng, 3, 255, 0, 255)})
    c1, c2, c3 = chans
    w = swg(b, t, 3)
    y = add_mvau(b, w, bipolar_w(rng, (c1, 27)), thresholds=rng.integers(-300, 300, (c1, 1)), out_bias=-1,
                 out_scale=2, binary=False)
    w = swg(b, y, 3)
    y = add_mvau(b, w, bipolar_w(rng, (c2, 9 * c1)), thresholds=rng.integers(-8, 8, (c2, 1)) * 2,
                 out_bias=-1, out_scale=2)
    H = b.shape(y)[0]
    y = b.add("MaxPool", y, (H // 2, H // 2, c2), DType.bipolar(), {"k": 2})
    w = swg(b, y, 3)
    y = add_mvau(b, w, bipolar_w(rng, (c3, 9 * c2)), thresholds=rng.integers(-8, 8, (c3, 1)) * 2,
                 out_bias=-1, out_scale=2)
    H = b.shape(y)[0]
    if H >= 2:
        y = b.add("MaxPool", y, (H // 2, H // 2, c3), DType.bipolar(), {"k": 2})
    H, W, C = b.shape(y)
    if H * W > 1:                                             # flatten: a k=H SWG is the FC's window
        y = swg(b, y, H)
    y = add_mvau(b, y, bipolar_w(rng, (64, H * W * C)), thresholds=rng.integers(-4, 4, (64, 1)) * 2,
                 out_bias=-1, out_scale=2)
    logits = add_mvau(b, y, bipolar_w(rng, (10, 64)))
    if not labels:
        return b.graph(logits)
    out = b.add("LabelSelect", logits, (1, 1, 1), DType.int_(4, signed=False))
    return b.graph(out)


def rand_input(g: HwGraph, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = g.streams[g.input]
    if s.dtype.is_bipolar:
        return rng.choice([-1, 1], (n, *s.shape))
    return rng.integers(s.dtype.min, s.dtype.max + 1, (n, *s.shape))


def cnv_w1a1_graph(seed: int = 0) -> HwGraph:
    """CNV-W1A1 at full size (32x32x3 input, 64-64-128-128-256-256 convs, 512-512-10 FC), FINN-like folding."""
    rng = np.random.default_rng(seed)
    b = Builder("cnv_w1a1", (32, 32, 3), DType.int_(8, signed=False))
    y = b.add("Thresholding", "x", (32, 32, 3), DType.int_(8), {"out_bias": -128, "pe": 3},
              {"thresholds": sorted_thresholds(rng, 3, 255, 0, 255)})
    c = 3
    folding = [(16, 3), (32, 32), (16, 32), (16, 32), (4, 32), (1, 32)]
    for i, (co, pool) in enumerate([(64, 0), (64, 1), (128, 0), (128, 1), (256, 0), (256, 0)]):
        pe, simd = folding[i]
        w = swg(b, y, 3)
        b.nodes[-1].attrs["simd"] = simd
        thr = rng.integers(-10, 10, (co, 1)) * 2 if i else rng.integers(-300, 300, (co, 1))
        y = add_mvau(b, w, bipolar_w(rng, (co, 9 * c)), thresholds=thr, out_bias=-1, out_scale=2, binary=i > 0)
        b.nodes[-1].attrs.update(pe=pe, simd=simd)
        c = co
        if pool:
            H = b.shape(y)[0]
            y = b.add("MaxPool", y, (H // 2, H // 2, c), DType.bipolar(), {"k": 2, "pe": 1})
    for co, pe, simd in [(512, 1, 4), (512, 1, 8)]:
        y = add_mvau(b, y, bipolar_w(rng, (co, b.shape(y)[2])), thresholds=rng.integers(-4, 4, (co, 1)) * 2,
                     out_bias=-1, out_scale=2)
        b.nodes[-1].attrs.update(pe=pe, simd=simd)
    y = add_mvau(b, y, bipolar_w(rng, (10, 512)))
    b.nodes[-1].attrs.update(pe=1, simd=16)
    return b.graph(b.add("LabelSelect", y, (1, 1, 1), DType.int_(4, signed=False), {"pe": 1}))


def cell_graph(seed: int = 0) -> HwGraph:
    """What the cell networks add (BNAS / BARS): overlapping padded window pools (SWG + WindowMax with the
    type's minimum as padding; SWG + WindowAvg, zero padding not counted, stride 1 and 2; an unpadded 2x2
    WindowMax), a factorised reduce's shifted half (SWG 2x2/2 + Gather of tap (1, 1) + XNOR MVAU), and
    channel concatenations of two and of four streams of different types."""
    from bnhw.quant.cellnet import avg_pool_counts

    rng = np.random.default_rng(seed)
    t8 = DType.int_(8)
    b = Builder("cell", (6, 6, 8), t8)
    d0, d1, d2, d3 = b.add("Duplicate", "x", (6, 6, 8), t8, outputs=4)
    m = b.add("WindowMax", swg(b, d0, 3, pad=1, pad_value=t8.min), (6, 6, 8), t8, {"k": 3})
    a1 = b.add("WindowAvg", swg(b, d3, 3, pad=1), (6, 6, 8), t8, {"k": 3}, {"counts": avg_pool_counts(6, 3, 1, 1)})
    a2 = b.add("WindowAvg", swg(b, d1, 3, pad=1, stride=2), (3, 3, 8), t8, {"k": 3},
               {"counts": avg_pool_counts(6, 3, 2, 1)})
    a2a, a2b = b.add("Duplicate", a2, (3, 3, 8), t8, outputs=2)
    s = b.add("Thresholding", d2, (6, 6, 8), DType.bipolar(), {"out_bias": -1, "out_scale": 2},
              {"thresholds": sorted_thresholds(rng, 8, 1, -20, 20)})
    shifted = b.add("Gather", swg(b, s, 2, stride=2), (3, 3, 8), DType.bipolar(), {}, {"index": 24 + np.arange(8)})
    acc = add_mvau(b, shifted, bipolar_w(rng, (4, 8)))
    both = b.add("Concat", [m, a1], (6, 6, 16), t8)
    wm = b.add("WindowMax", swg(b, both, 2, stride=2), (3, 3, 16), t8, {"k": 2})
    return b.graph(b.add("Concat", [a2a, acc, wm, a2b], (3, 3, 36), t8))


def ties_graph() -> HwGraph:
    b = Builder("ties", (1, 1, 8), DType.int_(3))
    return b.graph(b.add("LabelSelect", "x", (1, 1, 1), DType.int_(3, signed=False), {"pe": 4}))


def requant_graph() -> HwGraph:
    """AddRequant on every INT8 value: exact .5 cases at shift 2 and saturation at both ends."""
    b = Builder("requant", (4, 4, 16), DType.int_(8))
    return b.graph(b.add("AddRequant", "x", (4, 4, 16), DType.int_(5), {"shift": 2, "pe": 4},
                         {"A": np.array([1, 1, 3, -2] * 4), "B": np.array([0, 2, -1, 0, 1, -2, 5, 7] * 2)}))


def rprelu_gap_graph() -> HwGraph:
    """RPReLU with odd negative products at frac=1, then a 2x2 GlobalAvgPool (ties at sum = 2 mod 4)."""
    b = Builder("rprelu_gap", (2, 2, 4), DType.int_(6))
    r = b.add("RPReLU", "x", (2, 2, 4), DType.int_(6), {"frac": 1, "pe": 2},
              {"S_in": np.array([0, 1, -1, 0]), "slope": np.array([1, 3, 0, -1]), "S_out": np.array([0, 0, 1, -1])})
    return b.graph(b.add("GlobalAvgPool", r, (1, 1, 4), DType.int_(6), {"pe": 4}))


def wide_graph(seed: int = 0) -> HwGraph:
    """Words wider than ap_int's default 1024 bits: a zero-padded bipolar window of 1440 taps read 1440
    at a time (2880-bit words behind a 160 -> 1440 width converter), the XNOR MVAU's 1440-bit weight
    words, and an integer MVAU reading 144 INT12 lanes at once (1728-bit words)."""
    rng = np.random.default_rng(seed)
    b = Builder("wide", (3, 3, 160), DType.bipolar())
    w = swg(b, "x", 3, pad=1)                                             # (3, 3, 1440) padded bipolar
    acc = add_mvau(b, w, bipolar_w(rng, (16, 1440)))                      # INT12 accumulators
    w2 = swg(b, acc, 3)                                                   # (1, 1, 144) INT12
    out = add_mvau(b, w2, rng.integers(-3, 4, (10, 144)))
    return b.graph(out).with_folding({"SWG_0": {"SIMD": 160}, "MVAU_0": {"PE": 16, "SIMD": 1440},
                                      "SWG_1": {"SIMD": 16}, "MVAU_1": {"PE": 10, "SIMD": 144}})


def wide_fc_graph(width: int, padded: bool = False) -> HwGraph:
    """One XNOR MVAU (8 x ``width``) over a (zero-padded) bipolar vector, unfolded: SIMD = ``width``."""
    rng = np.random.default_rng(0)
    b = Builder("wide_fc", (1, 1, width), DType.bipolar(padded=padded))
    out = add_mvau(b, "x", bipolar_w(rng, (8, width)))
    return b.graph(out).with_folding({"MVAU_0": {"PE": 1, "SIMD": width}})
