"""bnhw's copy of FINN's analytical models and SetFolding == finn-plus's own (1.6.1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bnhw.hw.finn_compat import finn_available, finn_unavailable_reason
from bnhw.hw.finn_models import Resources
from bnhw.hw.ir import DType, HwGraph, Node, Stream
from bnhw.hw.ops import finn_op_type, legal_pe, legal_simd, model_notes, node_cycles, node_resources
from bnhw.hw.setfolding import finn_set_folding

needs_finn = pytest.mark.skipif(not finn_available(), reason=f"finn-plus not usable: "
                                f"{finn_unavailable_reason()}")

CNV_FOLDING = Path("/work/shared/reference/finn-examples-cnv-w1a1-folding.json")
BIP = DType.bipolar()


# ----------------------------------------------------------------------------- graph builders
class _G:
    """Tiny builder: a chain of IR nodes with their streams."""

    def __init__(self, shape, dtype, seed=0):
        self.rng = np.random.default_rng(seed)
        self.streams = {"x": Stream("x", tuple(shape), dtype)}
        self.nodes: list[Node] = []
        self.cur = "x"
        self.count: dict[str, int] = {}

    def _name(self, op):
        k = self.count.get(op, 0)
        self.count[op] = k + 1
        return f"{op}_{k}"

    def add(self, op, shape, dtype, attrs=None, params=None, name=None):
        name = name or self._name(op)
        out = f"s_{name}"
        self.streams[out] = Stream(out, tuple(shape), dtype)
        self.nodes.append(Node(name, op, [self.cur], [out], dict(attrs or {}), dict(params or {})))
        self.cur = out
        return name

    @property
    def shape(self):
        return self.streams[self.cur].shape

    @property
    def dtype(self):
        return self.streams[self.cur].dtype

    def swg(self, k, stride=1, pad=0, simd=1, **attrs):
        H, W, C = self.shape
        Ho, Wo = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
        dt = DType.bipolar(padded=pad > 0) if self.dtype.is_bipolar else self.dtype
        return self.add("SWG", (Ho, Wo, k * k * C), dt,
                        dict(k=k, stride=stride, pad=pad, simd=simd, **attrs))

    def mvau(self, mh, pe=1, simd=1, thresholds=1, w_bits=None, out_dt=None, groups=1, **attrs):
        H, W, MW = self.shape
        mwg = MW // groups
        if w_bits is None:
            w = self.rng.choice([-1, 1], size=(mh, mwg))
        else:
            lo = -(1 << (w_bits - 1))
            w = self.rng.integers(lo, -lo, size=(mh, mwg))
        params = {"weights": w}
        a = dict(pe=pe, simd=simd, **attrs)
        if groups > 1:
            a.update(groups=groups, channels=attrs.get("channels", groups))
        xnor = self.dtype.is_bipolar and w_bits is None
        if thresholds:
            if thresholds == 1:
                t = self.rng.integers(-mwg // 4, mwg // 4 + 1, size=(mh, 1))
                odt = out_dt or BIP
                a.update(out_bias=-1, out_scale=2)
            else:
                t = np.sort(self.rng.integers(-4 * mwg, 4 * mwg, size=(mh, thresholds)), axis=1)
                odt = out_dt or DType.int_(int(np.ceil(np.log2(thresholds + 1))), False)
            params["thresholds"] = t
        else:
            amax = mwg if xnor else int(np.abs(w).sum(axis=1).max()) * max(abs(self.dtype.min),
                                                                             self.dtype.max)
            odt = DType.for_range(-amax, amax)
        if xnor:
            a["binary_xnor"] = True
        return self.add("MVAU", (H, W, mh), odt, a, params)

    def thresholding(self, n_thr, pe=1, out_dt=None, lo=0, hi=256):
        H, W, C = self.shape
        t = np.sort(self.rng.integers(lo, hi, size=(C, n_thr)), axis=1)
        odt = out_dt or (BIP if n_thr == 1 else DType.int_(int(np.ceil(np.log2(n_thr + 1))), False))
        return self.add("Thresholding", (H, W, C), odt,
                        dict(pe=pe, out_bias=-1 if odt.is_bipolar else 0), {"thresholds": t})

    def maxpool(self, k=2, pe=1):
        H, W, C = self.shape
        return self.add("MaxPool", (H // k, W // k, C), self.dtype, dict(k=k, pe=pe))

    def avgpoolsum(self, k=2, pe=1):
        H, W, C = self.shape
        dt = DType.int_(self.dtype.bits + 2 * k, True)
        return self.add("AvgPoolSum", (H // k, W // k, C), dt, dict(k=k, pe=pe))

    def gap(self, pe=1):
        H, W, C = self.shape
        return self.add("GlobalAvgPool", (1, 1, C), self.dtype, dict(pe=pe))

    def labelselect(self, pe=1):
        return self.add("LabelSelect", (1, 1, 1), DType.int_(8, False), dict(pe=pe))

    def duplicate(self, pe=1):
        H, W, C = self.shape
        name = self._name("Duplicate")
        o1, o2 = f"s_{name}_a", f"s_{name}_b"
        for o in (o1, o2):
            self.streams[o] = Stream(o, (H, W, C), self.dtype)
        self.nodes.append(Node(name, "Duplicate", [self.cur], [o1, o2], dict(pe=pe)))
        self.cur = o1
        return name

    def graph(self):
        return HwGraph("t", self.streams, self.nodes, "x", self.cur)


def cnv_w1a1(seed=0) -> HwGraph:
    """BNN-PYNQ CNV-W1A1 with finn-examples' folding (node names as FINN's)."""
    b = _G((32, 32, 3), DType.int_(8, False), seed)
    fold = json.loads(CNV_FOLDING.read_text()) if CNV_FOLDING.exists() else {}

    def f(name, key, default=1):
        return fold.get(name, {}).get(key, default)

    # the 8-bit input quantiser (255 thresholds per channel), UINT8 -> INT8
    t = np.tile(np.arange(1, 256), (3, 1))
    b.add("Thresholding", (32, 32, 3), DType.int_(8, True), dict(pe=f("Thresholding_rtl_0", "PE"),
          out_bias=-128), {"thresholds": t}, name="Thresholding_rtl_0")
    chans = [(64, False), (64, True), (128, False), (128, True), (256, False), (256, False)]
    for i, (co, pool) in enumerate(chans):
        b.swg(3, simd=f(f"ConvolutionInputGenerator_rtl_{i}", "SIMD"))
        b.nodes[-1].name = f"ConvolutionInputGenerator_rtl_{i}"
        b.mvau(co, pe=f(f"MVAU_hls_{i}", "PE"), simd=f(f"MVAU_hls_{i}", "SIMD"))
        b.nodes[-1].name = f"MVAU_hls_{i}"
        if pool:
            b.maxpool(2, pe=b.shape[2])
    # flatten (1,1,256) and the FC layers
    for i, (co, thr) in enumerate([(512, 1), (512, 1), (10, 0)], start=6):
        b.mvau(co, pe=f(f"MVAU_hls_{i}", "PE"), simd=f(f"MVAU_hls_{i}", "SIMD"), thresholds=thr)
        b.nodes[-1].name = f"MVAU_hls_{i}"
    b.labelselect(pe=f("LabelSelect_hls_0", "PE"))
    b.nodes[-1].name = "LabelSelect_hls_0"
    # rename streams consistently is not needed: node names only label nodes
    return HwGraph("cnv_w1a1", b.streams, b.nodes, "x", b.cur)


def _small_graphs():
    gs = []
    # SWG + xnor MVAU on bipolar data, padded and not, stride 2
    b = _G((12, 12, 16), BIP, 1)
    b.swg(3, simd=4)
    b.mvau(32, pe=4, simd=16)
    b.swg(3, pad=1, simd=8)
    b.mvau(16, pe=2, simd=8, thresholds=0)
    gs.append(("xnor_conv", b.graph()))
    b = _G((9, 9, 8), BIP, 2)
    b.swg(3, stride=2, simd=2)
    b.mvau(8, pe=8, simd=72)
    gs.append(("stride2", b.graph()))
    # int8-input first layer (UINT8 and INT8 x bipolar), NAS-BNN stem INT8 x INT8 weights
    for i, dt in enumerate([DType.int_(8, False), DType.int_(8, True)]):
        b = _G((10, 10, 3), dt, 3 + i)
        b.swg(3, simd=3)
        b.mvau(16, pe=4, simd=9)
        gs.append((f"first_layer_{dt.finn_name()}", b.graph()))
    b = _G((8, 8, 3), DType.int_(8, True), 5)
    b.swg(3, pad=1, simd=1)
    b.mvau(8, pe=2, simd=3, w_bits=8, thresholds=0)
    gs.append(("stem_int8", b.graph()))
    b = _G((8, 8, 3), DType.int_(8, True), 6)
    b.swg(3, pad=1, simd=3)
    b.mvau(8, pe=8, simd=27, w_bits=8, thresholds=15, out_dt=DType.int_(4, False))
    gs.append(("stem_int8_thr4", b.graph()))
    # thresholds with 1 and 255 steps, maxpool, labelselect
    b = _G((6, 6, 12), DType.int_(8, False), 7)
    b.thresholding(255, pe=3, out_dt=DType.int_(8, True))
    b.thresholding(1, pe=4, lo=-100, hi=100)
    b.maxpool(2, pe=6)
    gs.append(("thresholds_pool", b.graph()))
    b = _G((6, 6, 64), DType.int_(4, False), 8)
    b.thresholding(15, pe=2, out_dt=DType.int_(4, False), lo=0, hi=16)
    b.avgpoolsum(2, pe=4)
    gs.append(("thr15_avgpool", b.graph()))
    # depthwise (VVAU) and grouped MVAU
    b = _G((8, 8, 16), DType.int_(4, True), 9)
    b.swg(3, pad=1, simd=4)
    b.mvau(16, pe=4, simd=1, w_bits=4, thresholds=0, groups=16)
    gs.append(("depthwise", b.graph()))
    b = _G((8, 8, 16), DType.int_(4, True), 10)
    b.swg(3, pad=1, simd=16)
    b.mvau(16, pe=16, simd=3, w_bits=4, thresholds=3, groups=16)
    gs.append(("depthwise_simd", b.graph()))
    b = _G((8, 8, 16), BIP, 11)
    b.swg(3, simd=8)
    b.mvau(32, pe=4, simd=12, groups=4, channels=16)
    gs.append(("grouped", b.graph()))
    # FC layers (TFC) with duplicate, GAP, labelselect
    b = _G((1, 1, 784), BIP, 12)
    b.mvau(1024, pe=16, simd=49)
    b.mvau(256, pe=8, simd=8, ram_style="distributed")
    b.mvau(10, pe=10, simd=8, thresholds=0)
    b.labelselect(pe=2)
    gs.append(("tfc", b.graph()))
    b = _G((1, 1, 784), BIP, 13)
    b.mvau(1024, pe=64, simd=784, ram_style="block")
    b.mvau(256, pe=1, simd=1, ram_style="ultra")
    gs.append(("tfc_wide", b.graph()))
    # other styles: 1x1 kernel (parallel SWG), BRAM / URAM line buffers (also > 16384 deep),
    # DSP multipliers, embedded weights, LUTRAM thresholds, threshold memory triggers
    b = _G((8, 8, 32), BIP, 15)
    b.swg(1, simd=8)
    b.mvau(16, pe=4, simd=8, thresholds=0, w_bits=3, resType="dsp", mem_mode="internal_embedded")
    b.thresholding(3, pe=2, lo=-40, hi=40, out_dt=DType.int_(2, False))
    b.swg(3, simd=1, ram_style="block")
    b.mvau(8, pe=2, simd=16, w_bits=2, thresholds=3, ram_style_thresholds="distributed")
    b.swg(3, simd=2, ram_style="ultra")
    gs.append(("styles", b.graph()))
    b = _G((4, 2100, 8), DType.int_(2, False), 16)
    b.swg(3, simd=1, ram_style="block")
    b.mvau(4, pe=1, simd=8, w_bits=2, thresholds=3, out_dt=DType.int_(2, False))
    b.thresholding(255, pe=1, out_dt=DType.int_(8, False), lo=-8, hi=12)
    b.nodes[-1].attrs.update(depth_trigger_bram=4, depth_trigger_uram=64)
    b.thresholding(255, pe=2, out_dt=DType.int_(8, False), lo=0, hi=256)
    b.nodes[-1].attrs.update(uniform_thres=1)
    gs.append(("deep_buffers", b.graph()))
    b = _G((4, 4, 32), DType.int_(6, False), 14)
    b.duplicate(pe=8)
    b.gap(pe=4)
    b.labelselect(pe=1)
    gs.append(("dup_gap", b.graph()))
    return gs


def _refold(g: HwGraph, rng) -> HwGraph:
    """A random legal folding of every foldable node."""
    fold = {}
    for n in g.nodes:
        pes, simds = legal_pe(g, n), legal_simd(g, n)
        fold[n.name] = {"PE": int(rng.choice(pes)), "SIMD": int(rng.choice(simds))}
    return g.with_folding(fold)


def _same(g, n):
    from bnhw.hw.finn_compat import finn_estimates
    ref = finn_estimates(g, n)
    if ref is None:
        return
    cyc, res = ref
    mine = node_resources(g, n)
    got = (node_cycles(g, n), mine.lut, mine.bram18, mine.uram, mine.dsp)
    want = (cyc, res.lut, res.bram18, res.uram, res.dsp)
    assert got == want, f"{n.name} ({n.op}, pe={n.pe}, simd={n.simd}): bnhw {got} != finn {want}"


# ----------------------------------------------------------------------------- tests
def test_resources_arithmetic():
    a = Resources(10.0, 1, 0, 2, 4.0)
    assert a + a == Resources(20.0, 2, 0, 4, 8.0)
    assert sum([a, a, a], Resources.zero()).bram18 == 3
    assert a.scaled(2).lut == 20.0 and a.scaled(0.5).bram18 == 1
    assert set(model_notes()) >= {"MVAU", "SWG", "Thresholding", "MaxPool", "LabelSelect", "Gather",
                                  "AddRequant", "RPReLU", "GlobalAvgPool", "Duplicate", "VVAU"}


@needs_finn
@pytest.mark.parametrize("name,g", _small_graphs(), ids=[n for n, _ in _small_graphs()])
def test_models_match_finn(name, g):
    rng = np.random.default_rng(hash(name) % 2**32)
    for trial in range(4):
        gg = g if trial == 0 else _refold(g, rng)
        for n in gg.nodes:
            _same(gg, n)


def test_op_types():
    g = dict(_small_graphs())
    kinds = {n.op: finn_op_type(gr, n) for gr in g.values() for n in gr.nodes
             if not (n.op == "MVAU" and int(n.attrs.get("groups", 1)) > 1)}
    assert kinds["SWG"] == "ConvolutionInputGenerator_rtl"
    assert kinds["MVAU"] == "MVAU_hls"
    assert kinds["Thresholding"] == "Thresholding_rtl"
    assert kinds["MaxPool"] == "Pool_hls" and kinds["LabelSelect"] == "LabelSelect_hls"
    assert kinds["GlobalAvgPool"] == "GlobalAccPool_hls"
    assert kinds["Duplicate"] == "DuplicateStreams_hls"
    dw = g["depthwise"]
    assert finn_op_type(dw, dw.nodes[1]) == "VVAU_hls"
    gr = g["grouped"]
    assert finn_op_type(gr, gr.nodes[1]) == "MVAU_hls"
    assert legal_simd(gr, gr.nodes[1]) == [1, 2, 3, 4, 6, 9, 12, 18, 36]


def test_cnv_w1a1_cycles():
    g = cnv_w1a1()
    cyc = [node_cycles(g, n) for n in g.nodes if n.op == "MVAU"]
    assert cyc == [32400, 28224, 20736, 28800, 20736, 18432, 32768, 32768, 1024]
    assert max(node_cycles(g, n) for n in g.nodes) == 32768


@needs_finn
def test_cnv_w1a1_matches_finn():
    g = cnv_w1a1()
    for n in g.nodes:
        _same(g, n)


@needs_finn
@pytest.mark.parametrize("target", [10000, 32768, 100000])
def test_setfolding_cnv_matches_finn(target):
    from bnhw.hw.finn_compat import finn_set_folding_reference
    g = cnv_w1a1()
    ref = finn_set_folding_reference(g, target)
    mine = finn_set_folding(g, target)
    _check_folding(mine, ref)


@needs_finn
@pytest.mark.parametrize("target", [40, 400, 4000])
def test_models_match_finn_after_setfolding(target):
    """parallel_window / pad_simd / depthwise SWG SIMD as SetFolding leaves them."""
    for _, g in _small_graphs():
        f = finn_set_folding(g, target)
        for n in f.nodes:
            _same(f, n)


def _check_folding(mine: HwGraph, ref: dict):
    for name, want in ref.items():
        n = mine.node(name)
        got = {}
        for key in want:
            if key == "PE":
                got[key] = n.pe
            elif key == "SIMD":
                got[key] = n.simd
            elif key == "swg_SIMD":
                got[key] = n.pe
            elif key == "parallel_window":
                got[key] = int(n.attrs.get("parallel_window", 0))
            elif key == "pad_simd":
                got[key] = int(n.attrs.get("pad_simd", n.simd))
        assert got == want, f"{name}: bnhw {got} != finn {want}"


@needs_finn
@pytest.mark.parametrize("name", ["xnor_conv", "depthwise", "depthwise_simd", "tfc",
                                  "thresholds_pool", "dup_gap", "grouped", "stem_int8",
                                  "styles", "thr15_avgpool"])
@pytest.mark.parametrize("target", [50, 500, 5000])
def test_setfolding_small_matches_finn(name, target):
    from bnhw.hw.finn_compat import finn_set_folding_reference
    g = dict(_small_graphs())[name]
    for wmax in (36, 8):
        _check_folding(finn_set_folding(g, target, mvau_wwidth_max=wmax),
                       finn_set_folding_reference(g, target, mvau_wwidth_max=wmax))
    _check_folding(finn_set_folding(g, target, two_pass_relaxation=False),
                   finn_set_folding_reference(g, target, two_pass_relaxation=False))


def test_setfolding_meets_target_without_finn():
    g = cnv_w1a1()
    f = finn_set_folding(g, 50000)
    assert max(node_cycles(f, n) for n in f.nodes) <= 50000
    # 36-bit weight streams cap SIMD at 36: the 576x64 layer cannot go below 12544 cycles,
    # and the second (relaxed) pass balances every node to that bottleneck
    f = finn_set_folding(g, 5000)
    assert max(node_cycles(f, n) for n in f.nodes) == 12544
    assert (f.node("MVAU_hls_1").pe, f.node("MVAU_hls_1").simd) == (64, 36)
    # an 8191-bit weight stream caps PE*SIMD of the 576x64 layer: 8 x 576 -> 6272 cycles
    f = finn_set_folding(g, 5000, mvau_wwidth_max=4096)
    assert max(node_cycles(f, n) for n in f.nodes) == 6272


@needs_finn
@pytest.mark.parametrize("in_bits,out_bits", [(8, 24), (24, 8), (16, 16), (1, 8), (55, 11), (50, 100), (3, 7),
                                              (128, 32), (1, 1152), (1152, 64)])
def test_width_converter_luts_equal_finns_model(in_bits, out_bits):
    """bnhw's model of FINN's StreamingDataWidthConverter LUTs = finn-plus's lut_estimation."""
    from onnx import helper as oh
    from qonnx.custom_op.registry import getCustomOp

    from bnhw.hw.finn_models import dwc_luts

    node = oh.make_node("StreamingDataWidthConverter", ["x"], ["y"], domain="finn.custom_op.fpgadataflow",
                        backend="fpgadataflow", inShape=[1, 1152], outShape=[1, 1152], inWidth=in_bits,
                        outWidth=out_bits, dataType="BINARY")
    assert dwc_luts(in_bits, out_bits) == getCustomOp(node).lut_estimation("")
