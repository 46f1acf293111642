"""Lowering fixed-point BinaryNets to the hardware IR: ``HwGraph.execute`` reproduces
the exported QONNX graph (run by qonnx) and the PyTorch model bit for bit, on real
digit images, at every residual-path ``Quant`` tensor and every binary activation;
and the float32-exactness argument of the fixed-point path (``bnhw.quant.layers``)
holds at its worst cases.
"""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx

from bnhw.errors import BnhwError
from bnhw.hw.ir import DType, HwGraph, Node, Stream, round_half_even_shift
from bnhw.hw.lower_binarynet import integer_input, lower_binarynet
from bnhw.quant import build_model, export_qonnx, recalibrate_bn
from bnhw.quant.export import _with_batch, execution_order
from bnhw.quant.layers import (
    Dyadic,
    FoldedBatchNorm2d,
    LearnableSign,
    ResidualQuant,
    RPReLU,
    binary_bn_format,
    rprelu,
    rprelu_format,
    sign_thresholds,
    stem_bn_format,
)
from bnhw.quant.model import to_fixed
from bnhw.spec import ArchSpec, Precision
from bnhw.spec.space import get_space

FIXED = Precision(residual="fixed")
SPACE = get_space("nasbnn-cifar")
N_IMAGES = 16

NAME_RE = re.compile(r"^(ConvolutionInputGenerator_rtl|MVAU_hls|Thresholding_rtl|DuplicateStreams_hls|Pool_hls|"
                     r"GlobalAccPool_hls|Gather|AddRequant|RPReLU)_\d+$")


def shallow_subnet(stem: int, stages: list[list[tuple[int, int, int]]]) -> ArchSpec:
    """A subnet built from the CIFAR space's per-stage choices (widths, kernels, groups, the
    stages' strides and the stem), shallower than the space's depths so that it exports fast."""
    for sc, layers in zip(SPACE.stages, stages, strict=True):
        for w, k, g in layers:
            assert w in sc.widths and k in sc.kernels and g in sc.groups
    assert stem in SPACE.stem_widths
    return SPACE.build(stem, stages, precision=FIXED)


def random_shallow_subnet(seed: int, depth: int = 1) -> ArchSpec:
    rng = random.Random(seed)
    prev = rng.choice(SPACE.stem_widths)
    stem, stages = prev, []
    for sc in SPACE.stages:
        layers = []
        for _ in range(depth):
            w = rng.choice(sc.widths)
            layers.append((w, rng.choice(sc.kernels), rng.choice([g for g in sc.groups if prev % g == 0])))
            prev = w
        stages.append(layers)
    return shallow_subnet(stem, stages)


SUBNETS = {
    # k5 grouped (2 < C), stride-2 halves, widths 8 -> 12 -> 16 -> 32 -> 48 -> 96 -> 192 (tiling),
    # a same-width block (identity shortcut) with groups 4 of 48 channels, and a 192 -> 192 one
    "space-choices": lambda: shallow_subnet(8, [[(12, 3, 1), (16, 3, 1)], [(32, 5, 2)], [(48, 3, 4), (48, 5, 2)],
                                                [(96, 5, 8)], [(192, 3, 16), (192, 5, 8)]]),
    "random": lambda: random_shallow_subnet(5),
}


def depthwise_subnet(make_spec) -> ArchSpec:
    # 1 input channel, stem stride 2, a depthwise stride-2 conv (groups = channels: not in the space),
    # 12 -> 40 tiles the input channels, 40 -> 40 with groups 8 and kernel 5
    return make_spec([[(12, 3, 1, 1), (12, 3, 12, 2)], [(40, 3, 4, 1), (40, 5, 8, 2)]],
                     stem=8, stem_stride=2, in_channels=1, residual="fixed")


# ----------------------------------------------------------------------------
# comparison machinery
# ----------------------------------------------------------------------------
def nchw_to_hwc(t: np.ndarray) -> np.ndarray:
    if t.ndim == 2:                               # N x C (the pooled features)
        t = t[:, :, None, None]
    return t.transpose(0, 2, 3, 1)


def residual_streams(g: HwGraph) -> list[str]:
    """The IR streams that correspond to the residual-path Quant tensors, in order."""
    return [n.outputs[0] for n in g.nodes if n.op in ("AddRequant", "RPReLU", "GlobalAvgPool")]


def torch_probes(model, x: torch.Tensor) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Every ResidualQuant output and every LearnableSign output of the PyTorch model, in order."""
    res: list[np.ndarray] = []
    sign: list[np.ndarray] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: res.append(o.detach().numpy().copy()))
             for m in model.modules() if isinstance(m, ResidualQuant)]
    hooks += [m.register_forward_hook(lambda _m, _i, o: sign.append(o.detach().numpy().copy()))
              for m in model.modules() if isinstance(m, LearnableSign)]
    try:
        with torch.no_grad():
            logits = model(x).numpy()
    finally:
        for h in hooks:
            h.remove()
    return res, sign, logits


def check_lowering(model, x: torch.Tensor, path) -> dict:
    """Lower, export and compare; returns statistics of what was compared."""
    p = model.spec.precision
    g = lower_binarynet(model)
    export_qonnx(model, path)
    mw = _with_batch(ModelWrapper(str(path)), len(x))
    ctx = execute_onnx(mw, {mw.graph.input[0].name: x.numpy()}, return_full_exec_context=True)
    order = execution_order(mw)
    runtime = [n for n in order if mw.get_initializer(n.input[0]) is None]
    quants = [n.output[0] for n in runtime if n.op_type == "Quant"]
    binary = [n.output[0] for n in runtime if n.op_type == "BipolarQuant"]

    xi = integer_input(model, x)
    np.testing.assert_array_equal(nchw_to_hwc(ctx[quants[0]]) * 2.0 ** (p.stem_bits - 1), xi)
    envs = [g.execute(xi[i], return_all=True) for i in range(len(x))]

    def hw(stream: str) -> np.ndarray:
        return np.stack([e[stream] for e in envs])

    res_streams = residual_streams(g)
    thr_streams = [n.outputs[0] for n in g.nodes if n.op == "Thresholding"]
    t_res, t_sign, t_logits = torch_probes(model, x)
    assert len(quants) - 1 == len(res_streams) == len(t_res) == 2 + 4 * len(model.blocks) + 1
    assert len(binary) == len(thr_streams) == len(t_sign) == 2 * len(model.blocks)
    saturated = total = 0
    lsb = 2.0 ** p.residual_frac_bits
    for q, s, t in zip(quants[1:], res_streams, t_res, strict=True):
        got = hw(s)
        ref = nchw_to_hwc(ctx[q]) * lsb
        assert ref.shape == got.shape, s
        mism = int((ref != got).sum())
        assert mism == 0, f"{s}: {mism} of {got.size} elements differ from QONNX"
        np.testing.assert_array_equal(nchw_to_hwc(t) * lsb, got, err_msg=f"{s} vs PyTorch")
        dt = g.streams[s].dtype
        saturated += int(((got == dt.min) | (got == dt.max)).sum())
        total += got.size
    for q, s, t in zip(binary, thr_streams, t_sign, strict=True):
        got = hw(s)
        assert int((nchw_to_hwc(ctx[q]) != got).sum()) == 0, f"{s}: binary activations differ"
        np.testing.assert_array_equal(nchw_to_hwc(t), got)

    acc = hw(g.output).reshape(len(x), -1)
    head = g.meta["head"]
    logits = acc * np.asarray(head["scale"]) + np.asarray(head["bias"])
    ref = ctx[mw.graph.output[0].name]
    tol = 1e-5 * np.abs(ref).max()
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=tol)
    np.testing.assert_allclose(t_logits, ref, rtol=1e-5, atol=tol)
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 4 * tol      # a label is only defined up to the float error
    assert clear.sum() >= len(x) // 2
    np.testing.assert_array_equal(logits.argmax(1)[clear], ref.argmax(1)[clear])
    return {"graph": g, "saturated": saturated, "total": total}


def check_graph_structure(g: HwGraph, model) -> None:
    p = model.spec.precision
    names = [n.name for n in g.nodes]
    assert len(set(names)) == len(names) and all(NAME_RE.match(n) for n in names), names
    layers = {n.layer for n in g.nodes}
    assert layers == {"stem", "classifier"} | {f"block{i}.conv{h}" for i in range(len(model.blocks))
                                               for h in (1, 2)}
    res = DType.int_(p.residual_bits, True, 2.0 ** -p.residual_frac_bits)
    for s in residual_streams(g):
        assert g.streams[s].dtype == res
    assert g.streams[g.input].dtype == DType.int_(p.stem_bits, True, 2.0 ** -(p.stem_bits - 1))
    for n in g.nodes:
        out = g.out_stream(n).dtype
        if n.op == "Thresholding":
            assert out == DType.bipolar() and n.params["thresholds"].shape == (g.in_stream(n).channels, 1)
        if n.op == "SWG" and g.in_stream(n).dtype.is_bipolar:
            assert out == DType.bipolar(padded=True) and n.attrs["pad_value"] == 0
        if n.op == "MVAU" and n.attrs["binary_xnor"]:
            k, cin, groups = n.attrs["k"], n.attrs["channels"], n.attrs["groups"]
            fan_in = k * k * cin // groups
            assert n.params["weights"].shape == (g.out_stream(n).channels, fan_in)
            assert out.min <= -fan_in and fan_in <= out.max and not out.is_bipolar
            assert "thresholds" not in n.params
        if n.op == "AddRequant" and len(n.inputs) == 2:
            src = g.producer(n.inputs[1])
            want = p.bn_frac_bits - p.residual_frac_bits - (2 if src.op == "AvgPoolSum" else 0)
            assert n.attrs["shortcut_shift"] == want


# ----------------------------------------------------------------------------
# bit-exact lowering on real images
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SUBNETS))
def test_lowering_is_bit_exact_on_space_subnets(name, digits, perturb, tmp_path):
    spec = SUBNETS[name]()
    model = perturb(build_model(spec), 3)
    x_all, _ = digits(32, 16 + N_IMAGES, 3)
    recalibrate_bn(model, [x_all[:16]])
    _perturb_stats(model, seed=4)
    stats = check_lowering(model, x_all[16:], tmp_path / "m.onnx")
    check_graph_structure(stats["graph"], model)
    ops = [n.op for n in stats["graph"].nodes]
    assert "AvgPoolSum" in ops and "Gather" in ops
    if name == "space-choices":
        nodes = stats["graph"].nodes
        assert any(1 < n.attrs["groups"] < n.attrs["channels"] for n in nodes if n.op == "MVAU")
        assert {n.attrs["k"] for n in nodes if n.op == "SWG"} == {3, 5}
        shortcut_ops = {stats["graph"].producer(n.inputs[1]).op for n in nodes
                        if n.op == "AddRequant" and len(n.inputs) == 2}
        assert shortcut_ops == {"Duplicate", "AvgPoolSum", "Gather"}      # identity, pooled, gathered


def test_lowering_is_bit_exact_with_depthwise_and_tiling(make_spec, digits, perturb, tmp_path):
    spec = depthwise_subnet(make_spec)
    model = perturb(build_model(spec, weight_norm=False), 8)
    x_all, _ = digits(32, 16 + N_IMAGES, 1)
    recalibrate_bn(model, [x_all[:16]])
    stats = check_lowering(model, x_all[16:], tmp_path / "dw.onnx")
    g = stats["graph"]
    check_graph_structure(g, model)
    dw = [n for n in g.nodes if n.op == "MVAU" and n.attrs["binary_xnor"] and n.attrs["groups"] == n.attrs["channels"]]
    assert len(dw) == 1 and dw[0].params["weights"].shape == (12, 9)


def test_lowering_of_a_converted_float_model_with_extreme_constants(make_spec, digits, perturb, tmp_path):
    """Post-training conversion (to_fixed) of a float model whose constants leave their grids'
    ranges: clamped BN scales, slopes beyond +-1, shifts and thresholds beyond the residual range,
    and saturating sums -- still bit-exact, saturation included."""
    spec = make_spec([[(16, 3, 2, 2)], [(24, 5, 4, 1), (32, 3, 8, 2)]], stem=8)
    float_model = perturb(build_model(spec), 9)
    x_all, _ = digits(32, 16 + N_IMAGES, 3)
    recalibrate_bn(float_model, [x_all[:16]])
    g = torch.Generator().manual_seed(10)
    with torch.no_grad():
        for m in float_model.modules():
            if isinstance(m, FoldedBatchNorm2d):
                c = m.num_features
                m.weight.mul_(torch.where(torch.rand(c, generator=g) < 0.3, 300.0, 1.0))
                m.running_var[: c // 4] = 1e-9                          # a huge, clamped scale
                m.bias.add_(torch.where(torch.rand(c, generator=g) < 0.2, 1e4, 0.0))
            elif isinstance(m, RPReLU):
                m.prelu.weight.uniform_(-3.0, 3.0, generator=g)
                m.shift_in[0, :2, 0, 0] = torch.tensor([500.0, -500.0])
                m.shift_out[0, -1, 0, 0] = 1e3
            elif isinstance(m, LearnableSign):
                m.bias[0, :2, 0, 0] = torch.tensor([1e3, -1e3])                # always -1 / always +1
    model = to_fixed(float_model)
    assert model.spec.precision.fixed and not float_model.spec.precision.fixed
    stats = check_lowering(model, x_all[16:], tmp_path / "x.onnx")
    assert stats["saturated"] > 0.01 * stats["total"]
    thr = [n.params["thresholds"] for n in stats["graph"].nodes if n.op == "Thresholding"]
    assert all(t[0, 0] == 2 ** 15 and t[1, 0] == -(2 ** 15) for t in thr)


def _perturb_stats(model, seed: int) -> None:
    """Move the recalibrated BN statistics (mean shifts, variance scales) off the data's."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FoldedBatchNorm2d):
                c = m.num_features
                m.running_mean.add_(torch.randn(c, generator=g) * m.running_var.sqrt() * 0.3)
                m.running_var.mul_(torch.empty(c).uniform_(0.5, 2.0, generator=g))


def test_lowering_refuses_float_models_and_to_fixed_keeps_the_weights(make_spec, digits):
    spec = make_spec([[(16, 3, 1, 1)]])
    model = build_model(spec)
    with pytest.raises(BnhwError, match="float residual path") as ei:
        lower_binarynet(model)
    assert "\n" not in str(ei.value)
    fixed = to_fixed(model)
    assert fixed.spec == spec.replace(precision=FIXED) and not fixed.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), fixed.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x, _ = digits(32, 4)
    with torch.no_grad():
        assert torch.equal(to_fixed(fixed)(x), fixed(x))
        assert not torch.equal(fixed(x), model(x))


def test_integer_input_matches_the_quantiser(make_spec):
    model = build_model(make_spec([[(16, 3, 1, 1)]], residual="fixed"))
    x = torch.tensor([-1.0, -0.5, 0.3, 0.999, 1.0, 1.5 / 128, 2.5 / 128, -0.5 / 128]).view(1, 1, 1, 8)
    x = x.expand(1, 3, 1, 8)
    got = integer_input(model, x)
    assert got.shape == (1, 1, 8, 3) and got.dtype == np.int64
    with torch.no_grad():
        ref = (model.stem.input_quant(x) * 128).numpy()
    np.testing.assert_array_equal(got, nchw_to_hwc(ref))
    assert got[0, 0, :, 0].tolist() == [-128, -64, 38, 127, 127, 2, 2, 0]


# ----------------------------------------------------------------------------
# the exactness argument at its worst cases
# ----------------------------------------------------------------------------
def requant(v: np.ndarray, shift: int, bits: int) -> np.ndarray:
    return np.clip(round_half_even_shift(v, shift), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def quant_float(t: torch.Tensor, p: Precision) -> np.ndarray:
    """What the residual quantiser produces, as integers."""
    with torch.no_grad():
        return (ResidualQuant(p)(t) * 2.0 ** p.residual_frac_bits).numpy().astype(np.int64)


@pytest.mark.parametrize("fan_in", [1, 9, 25, 27, 8 * 25, 96, 384, 1536, 2 ** 12 - 1, 2 ** 12])
def test_binary_bn_plus_shortcut_is_exact_in_float32_at_the_bounds(fan_in):
    p = FIXED
    fmt = binary_bn_format(p, fan_in)
    F, R = p.bn_frac_bits, p.residual_frac_bits
    rng = np.random.default_rng(fan_in)
    n = 4096
    P = rng.integers(-fan_in, fan_in + 1, n)
    P[:8] = [fan_in, -fan_in] * 4
    A = rng.integers(-fmt.a.max_int, fmt.a.max_int + 1, n)
    A[:8] = [fmt.a.max_int] * 4 + [-fmt.a.max_int] * 4
    B = rng.integers(-fmt.b.max_int, fmt.b.max_int + 1, n)
    B[:8] = [fmt.b.max_int, fmt.b.max_int, -fmt.b.max_int, -fmt.b.max_int] * 2
    assert np.abs(P * A).max() < 2 ** 23
    for pooled in (False, True):
        top = 2 ** (p.residual_bits - 1 + (2 if pooled else 0))
        S = rng.integers(-top, top, n)
        S[:8] = [top - 1, -top] * 4
        frac_s = R + (2 if pooled else 0)
        a = torch.from_numpy(A.astype(np.float32)) / 2.0 ** F
        b = torch.from_numpy(B.astype(np.float32)) / 2.0 ** F
        s = torch.from_numpy(S.astype(np.float32)) / 2.0 ** frac_s
        y = torch.from_numpy(P.astype(np.float32)) * a + b + s
        exact = P * A + B + (S << (F - frac_s))
        assert np.abs(exact).max() < 2 ** 24
        np.testing.assert_array_equal((y.double() * 2.0 ** F).numpy(), exact.astype(np.float64))
        np.testing.assert_array_equal(quant_float(y, p), requant(exact, F - R, p.residual_bits))


def test_binary_bn_format_bounds():
    for k in (1, 2, 3, 9, 1536, 2 ** 21):
        fmt = binary_bn_format(FIXED, k)
        assert k * fmt.a.max_int < 2 ** 23 and 2 * k * fmt.a.max_int >= 2 ** 22   # tight within 2x
        assert fmt.b.max_int < 2 ** 21
    assert binary_bn_format(Precision(), 9) is None
    with pytest.raises(ValueError):
        binary_bn_format(FIXED, 2 ** 22)


def test_stem_bn_is_exact_or_saturates_identically():
    p = FIXED
    fmt = stem_bn_format(p)
    R, fa = p.residual_frac_bits, fmt.a.frac
    rng = np.random.default_rng(0)
    n = 1 << 16
    X = rng.integers(-(2 ** 15), 2 ** 15, n)
    A = rng.integers(-fmt.a.max_int, fmt.a.max_int + 1, n)
    A[::3] = rng.integers(-300, 300, len(A[::3]))              # the unsaturated regime
    B = rng.integers(-fmt.b.max_int, fmt.b.max_int + 1, n)
    ext = np.array([2 ** 15 - 1, -(2 ** 15)])
    X[:16] = np.repeat(ext, 8)
    A[:16] = np.tile(np.repeat([fmt.a.max_int, -fmt.a.max_int], 4), 2)
    B[:16] = np.tile([fmt.b.max_int, -fmt.b.max_int], 8)
    x = torch.from_numpy(X.astype(np.float32)) / 2.0 ** R
    a = torch.from_numpy(A.astype(np.float32)) / 2.0 ** fa
    b = torch.from_numpy(B.astype(np.float32)) / 2.0 ** (R + fa)
    got = quant_float(x * a + b, p)
    exact = requant(X * A + B, fa, p.residual_bits)
    np.testing.assert_array_equal(got, exact)
    assert 0.05 < np.mean(np.abs(exact) >= 2 ** 15 - 1) < 0.95        # both regimes exercised


def test_rprelu_is_exact_or_saturates_identically():
    p = FIXED
    fmt = rprelu_format(p)
    assert fmt.slope.max_int * 2.0 ** -fmt.slope.frac == 1.0          # slopes in [-1, 1] at 16 bits
    rng = np.random.default_rng(1)
    n = 1 << 14
    C = 64
    X = rng.integers(-(2 ** 15), 2 ** 15, (n, C))
    X[:4] = np.array([2 ** 15 - 1, -(2 ** 15), 0, 1])[:, None]
    S_in = rng.integers(-fmt.shift.max_int, fmt.shift.max_int + 1, C)
    Q = rng.integers(-fmt.slope.max_int, fmt.slope.max_int + 1, C)
    S_out = rng.integers(-fmt.shift.max_int, fmt.shift.max_int + 1, C)
    S_in[:4], Q[:4], S_out[:4] = fmt.shift.max_int, fmt.slope.max_int, fmt.shift.max_int
    S_in[4:8], Q[4:8], S_out[4:8] = -fmt.shift.max_int, -fmt.slope.max_int, -fmt.shift.max_int
    S_in[8:12], Q[8:12], S_out[8:12] = fmt.shift.max_int, -fmt.slope.max_int, fmt.shift.max_int
    res = DType.int_(p.residual_bits, True, 2.0 ** -p.residual_frac_bits)
    node = Node("RPReLU_0", "RPReLU", ["x"], ["y"], {"frac": fmt.slope.frac},
                {"S_in": S_in, "slope": Q, "S_out": S_out})
    g = HwGraph("t", {"x": Stream("x", (n, 1, C), res), "y": Stream("y", (n, 1, C), res)}, [node], "x", "y")
    exact = g.execute(X[:, None, :])[:, 0, :]
    r = 2.0 ** p.residual_frac_bits

    def t(v, scale):
        return torch.from_numpy(np.asarray(v, dtype=np.float32)) / scale

    y = rprelu(t(X, r)[:, :, None, None], t(S_in, r).view(1, C, 1, 1), t(Q, 2.0 ** fmt.slope.frac),
               t(S_out, r).view(1, C, 1, 1), fmt)            # already on the grids: fmt is the identity
    np.testing.assert_array_equal(quant_float(y, p)[:, :, 0, 0], exact)
    assert np.any(np.abs(exact) == 2 ** 15 - 1) and np.any(exact == -(2 ** 15))


def test_sign_thresholds_match_the_float32_comparison_everywhere():
    R = 8
    lo, hi = -(2 ** 15), 2 ** 15 - 1
    b = torch.tensor([0.0, -0.0, 1 / 256, 0.5 / 256, -1.5 / 256, 0.3, -0.7, 127.99, 127.999, 128.0, -128.0,
                      -128.01, 1e9, -1e9, 1e-30, -1e-30, 3.0000001, 2 ** -30])
    b = torch.cat([b, torch.randn(200, generator=torch.Generator().manual_seed(0)) * 40])
    t = sign_thresholds(b, R, lo, hi)
    X = np.arange(lo, hi + 1, dtype=np.int64)
    x = torch.from_numpy(X.astype(np.float32)) / 2.0 ** R
    ls = LearnableSign(len(b))
    with torch.no_grad():
        ls.bias.copy_(b.view(1, -1, 1, 1))
        out = ls(x.view(-1, 1, 1, 1).expand(-1, len(b), 1, 1).contiguous()).numpy()[:, :, 0, 0]
    np.testing.assert_array_equal(out, np.where(X[:, None] >= t[None, :], 1.0, -1.0))
    assert t[b.tolist().index(1e9)] == hi + 1 and t[b.tolist().index(-1e9)] == lo


def test_dyadic_rounding_is_half_even_clamped_and_straight_through():
    d = Dyadic(4, 20)
    w = torch.tensor([0.5 / 16, 1.5 / 16, -2.5 / 16, 0.3, 100.0, -100.0], requires_grad=True)
    q = d.quantize(w)
    assert q.tolist() == [0.0, 2 / 16, -2 / 16, 5 / 16, 20 / 16, -20 / 16]
    q.sum().backward()
    assert w.grad.tolist() == [1.0] * 6
    np.testing.assert_array_equal(d.integers(q), [0, 2, -2, 5, 20, -20])
    with pytest.raises(ValueError):
        d.integers(torch.tensor([0.01]))
