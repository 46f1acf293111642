"""Cell networks (BNAS v2 / BARS): the Brevitas model, its OPs, its bit-exact QONNX
export, checkpoints, and the command line (``bnhw ops`` works, ``bnhw build`` refuses)."""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from helpers.onnxrt import run_onnxruntime
from torch import nn

from bnhw.estimators.ops import cell_edge_cost, cell_edge_ops, cell_fixed_ops, count_ops
from bnhw.quant import binary_tensors, execute_qonnx, export_qonnx, load_model, recalibrate_bn, save_checkpoint
from bnhw.quant.cellnet import (
    CellNet,
    FixedAvgPool,
    FixedBinConvOp,
    XnorConv2d,
    avg_pool_counts,
    build_cell_model,
    cell_plan,
    make_exact,
    make_fixed,
)
from bnhw.quant.cellops import ALL_OPS, BinConvOp, make_op
from bnhw.quant.layers import FoldedBatchNorm2d, Stem
from bnhw.spec import Precision, load_spec
from bnhw.spec.cells import CellNetSpec, Genotype, bnas_variant
from bnhw.spec.zoo import EXAMPLE_GENOTYPE, get_arch

RTOL = ATOL_OF_MAX = 1e-5          # logits: as tests/test_export.py

#: every operation, the separable conv included, in both cells; a factorised reduce follows each reduction
ALL_OPS_GENOTYPE = Genotype(
    normal=(("bin_conv_3x3", 0), ("bin_conv_3x3", 1), ("max_pool_3x3", 0), ("bin_dil_conv_3x3", 1),
            ("bin_conv_5x5", 2), ("avg_pool_3x3", 1), ("bin_dil_conv_5x5", 3), ("zeroise", 0)),
    reduce=(("max_pool_3x3", 0), ("bin_conv_3x3", 1), ("avg_pool_3x3", 1), ("bin_dil_conv_3x3", 0),
            ("bin_sep_conv_3x3", 2), ("max_pool_3x3", 1), ("bin_sep_conv_5x5", 3), ("zeroise", 2)))


def single_op_genotype(op: str) -> Genotype:
    """Two nodes, every edge ``op``: node 0 reads both cell inputs, node 1 node 0 and c_{k-1}."""
    edges = ((op, 0), (op, 1), (op, 2), (op, 1))
    return Genotype(normal=edges, reduce=edges)


def zeroise_genotype() -> Genotype:
    edges = (("zeroise", 0), ("zeroise", 1), ("zeroise", 2), ("zeroise", 1))
    return Genotype(normal=edges, reduce=edges)


def cell_outputs(model: CellNet, x: torch.Tensor) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = []
    handles = [c.register_forward_hook(lambda _m, _i, o: outs.append(o)) for c in model.cells]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return outs


# ----------------------------------------------------------------------------- the model
@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("op", ALL_OPS)
def test_every_op_in_normal_and_reduction_cells_has_the_planned_shapes(op, skip):
    # 5 cells: reductions at 1 and 3, normal cells after them read c_{k-2} through a factorised reduce
    spec = CellNetSpec(single_op_genotype(op), cells=5, init_channels=3, resolution=8, in_channels=1,
                       num_classes=4, inter_cell_skip=skip)
    torch.manual_seed(0)
    model = build_cell_model(spec)
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        outs = cell_outputs(model, x)
        assert model(x).shape == (2, 4)
    plan = cell_plan(spec)
    assert [p.reduction for p in plan] == [False, True, False, True, False]
    assert [p.reduce_pp for p in plan] == [False, False, True, False, True]
    for p, o in zip(plan, outs, strict=True):
        assert o.shape == (2, p.out_channels, p.out_size, p.out_size)
        assert p.out_channels == 2 * p.channels
    assert [p.channels for p in plan] == [3, 6, 6, 12, 12]
    assert [p.out_size for p in plan] == [8, 4, 4, 2, 2]


def test_the_inter_cell_skip_adds_the_preprocessed_input_to_every_node():
    spec = CellNetSpec(ALL_OPS_GENOTYPE, cells=3, init_channels=4, resolution=8, num_classes=3)
    torch.manual_seed(1)
    with_skip = build_cell_model(spec)
    without = build_cell_model(spec.replace(inter_cell_skip=False))
    without.load_state_dict(with_skip.state_dict())     # the same modules: the skip has no weights
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        a, b = cell_outputs(with_skip, x), cell_outputs(without, x)
        assert not torch.allclose(with_skip(x), without(x))
        # cell 1 (a reduction) from cell 0's output of the skip network
        c_pp = with_skip.stem(x)
        cell = with_skip.cells[1]
        ref_nodes = without.cells[1](c_pp, a[0])
        skip = F.avg_pool2d(cell.pre1(a[0]), 2, 2)
        out = cell(c_pp, a[0])
    assert cell.plan.reduction and torch.equal(out, a[1])
    c = cell.plan.channels
    for i in range(cell.plan.nodes):
        torch.testing.assert_close(out[:, i * c:(i + 1) * c], ref_nodes[:, i * c:(i + 1) * c] + skip)
    assert not torch.equal(a[0], b[0])


@pytest.mark.parametrize("skip", [True, False])
def test_with_skips_the_gradient_reaches_the_stem_even_when_every_edge_is_zeroise(skip):
    spec = CellNetSpec(zeroise_genotype(), cells=3, init_channels=4, resolution=8, inter_cell_skip=skip)
    torch.manual_seed(2)
    model = build_cell_model(spec).train()
    x = torch.rand(8, 3, 8, 8) * 2 - 1
    loss = F.cross_entropy(model(x), torch.arange(8) % 10)
    loss.backward()
    grad = model.stem.conv.weight.grad
    if skip:
        assert grad is not None and float(grad.abs().sum()) > 0
    else:                                # every cell outputs zeros: nothing reaches the stem
        assert grad is None or float(grad.abs().sum()) == 0


def test_exact_ops_compute_what_make_op_computes_with_the_same_weights():
    torch.manual_seed(3)
    for name in ("bin_conv_3x3", "bin_dil_conv_5x5", "bin_sep_conv_3x3"):
        plain = make_op(name, 6, 2)
        exact = make_exact(make_op(name, 6, 2))
        exact.load_state_dict(plain.state_dict())          # same keys, same shapes
        assert any(isinstance(m, XnorConv2d) for m in exact.modules())
        assert any(isinstance(m, FoldedBatchNorm2d) for m in exact.modules())
        x = torch.randn(4, 6, 8, 8)
        for mode in (True, False):
            plain.train(mode)
            exact.train(mode)
            torch.testing.assert_close(exact(x), plain(x), rtol=1e-5, atol=1e-5)


def test_fixed_point_ops_are_the_float_ops_on_the_grid_and_train():
    """A fixed-mode binary conv is the float one up to the grid (same weights, beta folded into the BN); the
    3x3 average pool is round_half_even(window sum / in-image taps), ties included; a training step runs."""
    torch.manual_seed(4)
    p = Precision(residual="fixed")
    step = 2.0 ** -p.residual_frac_bits
    x = torch.round(torch.randn(3, 6, 8, 8) * 64) * step
    for name, stride in (("bin_conv_3x3", 1), ("bin_dil_conv_5x5", 2), ("bin_sep_conv_3x3", 2)):
        plain = make_exact(nn.Sequential(make_op(name, 6, stride)))
        plain.train()
        plain(x)                                            # BN statistics off their defaults
        plain.eval()
        fixed = make_fixed(copy.deepcopy(plain), p).eval()
        fixed.load_state_dict(plain.state_dict())           # same keys, same shapes
        assert any(isinstance(m, FixedBinConvOp) for m in fixed.modules())
        with torch.no_grad():
            a, b = plain(x), fixed(x)
        grid = b / step
        assert torch.equal(grid, torch.round(grid))         # on the grid
        if name != "bin_sep_conv_3x3":                      # (nested signs: a flip is not a rounding error)
            assert float((a - b).abs().max()) < 0.02, name
        fixed.train()
        fixed(x).square().sum().backward()
        assert all(q.grad is not None for q in fixed.parameters() if q.requires_grad)
    ties = 0
    for stride in (1, 2):
        s = torch.zeros(1, 1, 6, 6)
        s[0, 0, 0, 0], s[0, 0, 0, 2], s[0, 0, 5, 5] = 3.0, 15.0, -9.0       # 6-tap windows summing to 6n + 3
        s = s * step
        xx = torch.cat([s, x[:1, :1, :6, :6]], dim=1)
        out = FixedAvgPool(3, stride, p)(xx) / step
        xi = (xx / step).double().numpy()[0]
        counts = avg_pool_counts(6, 3, stride, 1)
        pad = np.pad(xi, ((0, 0), (1, 1), (1, 1)))
        ho = counts.shape[0]
        sums = np.array([[[pad[c, i * stride:i * stride + 3, j * stride:j * stride + 3].sum()
                           for j in range(ho)] for i in range(ho)] for c in range(2)])
        np.testing.assert_array_equal(out[0].numpy(), np.round(sums / counts))     # numpy rounds half to even
        assert set(np.unique(counts)) == {4, 6, 9}
        ties += int((np.abs(sums / counts - np.round(sums / counts)) == 0.5).sum())
    assert ties >= 4                                                                 # ties were rounded


def test_checkpoint_round_trip_and_a_training_step(tmp_path):
    spec = CellNetSpec(ALL_OPS_GENOTYPE, cells=3, init_channels=4, resolution=8, num_classes=5, name="ck")
    torch.manual_seed(4)
    model = build_cell_model(spec).train()
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    y = torch.arange(16) % 5
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    path = save_checkpoint(model, tmp_path / "m.pt", note="cell")
    again = load_model(path)
    assert isinstance(again, CellNet) and again.spec == spec
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    again = load_model(spec, path)                          # a spec plus a checkpoint
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


# ----------------------------------------------------------------------------- OPs
def test_hand_count_of_a_tiny_cell_network():
    g = Genotype(normal=(("bin_conv_3x3", 0), ("max_pool_3x3", 1)),
                 reduce=(("bin_dil_conv_3x3", 1), ("zeroise", 0)))
    # 3 cells: normal (C=4), reduction (C=8), reduction (C=16, c_{k-2} through a factorised reduce)
    spec = CellNetSpec(g, cells=3, init_channels=4, stem_multiplier=2, resolution=8, in_channels=1,
                       num_classes=5, name="tiny")
    rep = count_ops(spec)
    by = {lo.name: lo for lo in rep.layers}
    assert by["stem"].int8ops == 9 * 1 * 8 * 8 * 8
    assert by["cell0.pre0"].bops == by["cell0.pre1"].bops == 8 * 4 * 8 * 8
    assert by["cell0.node0.e0:bin_conv_3x3"].bops == 9 * 4 * 4 * 8 * 8
    assert by["cell0.node0.e1:max_pool_3x3"].flops == 9 * 4 * 8 * 8
    assert by["cell1.pre0"].bops == 8 * 8 * 8 * 8 and by["cell1.pre1"].bops == 4 * 8 * 8 * 8
    assert by["cell1.node0.e0:bin_dil_conv_3x3"].bops == 9 * 8 * 8 * 4 * 4
    assert by["cell1.node0.e1:zeroise"].ops == 0
    assert by["cell2.pre0"].bops == 4 * 16 * 4 * 4 and by["cell2.pre0"].stride == 2   # factorised reduce
    assert by["cell2.pre1"].bops == 8 * 16 * 4 * 4
    assert by["cell2.node0.e0:bin_dil_conv_3x3"].bops == 9 * 16 * 16 * 2 * 2
    assert by["fc"].flops == (16 + 1) * 5
    assert (rep.int8ops, rep.bops, rep.flops) == (4608, 40960, 2389)
    assert rep.ops == 2389 + 40960 / 64 + 4608 / 8 == 3605


def test_edge_costs():
    c, h = 12, 7
    assert cell_edge_ops("zeroise", c, h) == 0
    assert cell_edge_cost("bin_dil_conv_3x3", c, h) == cell_edge_cost("bin_conv_3x3", c, h) == (0, 9 * c * c * h * h)
    assert cell_edge_cost("bin_dil_conv_5x5", c, h) == cell_edge_cost("bin_conv_5x5", c, h)
    assert cell_edge_cost("bin_sep_conv_5x5", c, h) == (0, 25 * c * h * h + c * c * h * h)
    assert cell_edge_cost("max_pool_3x3", c, h) == cell_edge_cost("avg_pool_3x3", c, h) == (9 * c * h * h, 0)
    assert cell_edge_ops("bin_conv_5x5", c, h) == 25 * c * c * h * h / 64


def random_genotype(rng: random.Random, nodes: int) -> Genotype:
    def cell():
        return tuple((rng.choice(ALL_OPS), rng.randrange(2 + i)) for i in range(nodes) for _ in range(2))
    return Genotype(normal=cell(), reduce=cell())


@pytest.mark.parametrize("seed", range(6))
def test_edge_ops_plus_fixed_ops_is_count_ops(seed):
    """What the searches rely on: sum over the genotype's edges of cell_edge_ops(op, C, out) + the fixed part."""
    rng = random.Random(seed)
    g = random_genotype(rng, rng.choice([2, 3, 4]))
    kw = {"stage_cells": (1, 2, 1), "stage_widths": (1.0, 0.75, 1.5), "cells": 6} if seed % 3 == 0 else \
        {"cells": rng.choice([3, 5, 8])}
    spec = CellNetSpec(g, init_channels=rng.choice([4, 6, 16]), resolution=32, num_classes=10,
                       inter_cell_skip=seed % 2 == 0, **kw)
    size, total = spec.resolution, 0.0
    for cell in spec.layout():              # each cell's C and output size, straight from the layout
        size //= 2 if cell["reduction"] else 1
        edges = spec.genotype.reduce if cell["reduction"] else spec.genotype.normal
        total += sum(cell_edge_ops(op, cell["channels"], size) for op, _ in edges)
    assert total + cell_fixed_ops(spec) == count_ops(spec).ops


def test_count_ops_equals_the_operations_of_the_built_model():
    """Count every conv / pool the built model executes with hooks and compare with the estimator."""
    spec = CellNetSpec(ALL_OPS_GENOTYPE, cells=5, init_channels=4, resolution=16, num_classes=7,
                       stem_multiplier=2)
    model = build_cell_model(spec)
    counted = {"int8": 0, "bops": 0, "flops": 0}

    def conv_hook(m, _i, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        counted["bops"] += k * (m.in_channels // m.groups) * out[0].numel()

    def pool_hook(m, _i, out):
        if m.kernel_size == 3:                   # the edges' pools (the 2x2 skip pool is not counted)
            counted["flops"] += 9 * out[0].numel()

    def stem_hook(m, _i, out):
        counted["int8"] += 9 * m.in_channels * out[0].numel()

    handles = []
    for m in model.modules():
        if isinstance(m, XnorConv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
            handles.append(m.register_forward_hook(pool_hook))
        elif isinstance(m, Stem):
            handles.append(m.conv.register_forward_hook(stem_hook))
    with torch.no_grad():
        model(torch.zeros(1, 3, 16, 16))
    for h in handles:
        h.remove()
    rep = count_ops(spec)
    fc = (model.classifier.fc.in_features + 1) * 7
    assert (rep.int8ops, rep.bops, rep.flops) == (counted["int8"], counted["bops"], counted["flops"] + fc)


def test_example_networks_in_the_zoo():
    mini = get_arch("bnas-mini-example")
    assert isinstance(mini, CellNetSpec) and mini.genotype == Genotype.from_dict(EXAMPLE_GENOTYPE)
    assert mini == bnas_variant(Genotype.from_dict(EXAMPLE_GENOTYPE), "mini", name="bnas-mini-example")
    assert mini.genotype.ops() == {op for op in ALL_OPS if "sep" not in op}
    assert (mini.cells, mini.init_channels, mini.resolution) == (10, 24, 32)
    assert count_ops(mini).ops == 10_307_338
    assert count_ops(get_arch("bnas-a-example")).ops > 4 * count_ops(mini).ops


# ----------------------------------------------------------------------------- export
#: float32 unit roundoff
U32 = 2.0 ** -24
#: ONNX Runtime's CPU AveragePool differs by opset: up to 18 MLAS' vectorised kernel (its summation order
#: depends on the instruction set and the channel count), from 19 on a plain loop; the export uses opset 20
POOL_OPSETS = [13, 20]


def ort_pool(x: np.ndarray, opset: int, **attrs) -> np.ndarray:
    """One ``AveragePool`` on ONNX Runtime at ``opset`` (tests/helpers/onnxrt.py pins opset 13)."""
    node = onnx.helper.make_node("AveragePool", ["x"], ["y"], **attrs)
    graph = onnx.helper.make_graph(
        [node], "pool", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x.shape))],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    m = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def avg_pool_3x3_both(x: torch.Tensor, stride: int, opset: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``avg_pool_3x3`` edge (padding not counted) in PyTorch and on ONNX Runtime."""
    ref = make_op("avg_pool_3x3", x.shape[1], stride)(x).numpy()
    y = ort_pool(x.numpy(), opset, kernel_shape=[3, 3], strides=[stride, stride], pads=[1, 1, 1, 1],
                 count_include_pad=0)
    return ref, y


@pytest.mark.parametrize("opset", POOL_OPSETS)
@pytest.mark.parametrize("stride", [1, 2])
def test_3x3_average_pool_is_a_correctly_rounded_mean_in_pytorch_and_onnxruntime(stride, opset):
    """The avg_pool_3x3 edge in both runtimes, on real values: a float sum of a window (4, 6 or 9 terms,
    padding not counted) is exact only up to its summation order, which PyTorch and ONNX Runtime choose
    differently per instruction set and channel count.  Each side is held to the worst case of *any*
    order instead of to the other: ``|y - mean| <= 12 u mean|x|`` (``u = 2**-24``; 8 u for summing 9
    terms, 1 u for the division, margin for a reciprocal multiply) against the float64 mean."""
    x = torch.randn(4, 24, 16, 16, generator=torch.Generator().manual_seed(stride)) * 3
    ref, y = avg_pool_3x3_both(x, stride, opset)
    x64 = x.double()
    mean = F.avg_pool2d(x64, 3, stride, 1, count_include_pad=False).numpy()
    tol = 12 * U32 * F.avg_pool2d(x64.abs(), 3, stride, 1, count_include_pad=False).numpy()
    for name, got in (("PyTorch", ref), ("ONNX Runtime", y)):
        assert got.shape == mean.shape, name
        err = np.abs(got - mean)
        assert (err <= tol).all(), f"{name}: {int((err > tol).sum())} means off by more than 12 u mean|x|"
    # a mean computed wrong (padding counted, a shifted window) is far outside the tolerance
    counted = F.avg_pool2d(x64, 3, stride, 1, count_include_pad=True).numpy()
    assert (np.abs(counted - mean) > tol).any()


@pytest.mark.parametrize("opset", POOL_OPSETS)
@pytest.mark.parametrize("stride", [1, 2])
def test_3x3_average_pool_of_fixed_point_values_binarises_identically(stride, opset):
    """What bit-exactness can rest on: window sums of fixed-point values (``k * 2**-6``, small ``k``) are
    exact in any order, so the sign a binariser takes of the pooled value (``x >= 0 -> +1``) is the sign
    of the exact sum in both runtimes -- exact zeros (cancelling windows) included; and where every mean
    is exactly representable (``k`` multiples of 36, so that the divisions by 4, 6 and 9 are exact) the
    pooled values themselves are identical on both sides, whatever the instruction set."""
    g = torch.Generator().manual_seed(10 + stride)
    k = torch.randint(-3, 4, (4, 24, 16, 16), generator=g).double()
    exact_sum = F.avg_pool2d(k, 3, stride, 1, count_include_pad=False, divisor_override=1).numpy()
    assert (exact_sum == 0).sum() > 100                        # the threshold is exercised
    ref, y = avg_pool_3x3_both((k / 64).float(), stride, opset)
    for name, got in (("PyTorch", ref), ("ONNX Runtime", y)):
        np.testing.assert_array_equal(np.where(got >= 0, 1.0, -1.0), np.where(exact_sum >= 0, 1.0, -1.0),
                                      err_msg=f"{name}: binarised pool")
        assert (got[exact_sum == 0] == 0).all(), name
    x = (36 * k / 64).float()
    exact_mean = F.avg_pool2d(36 * k / 64, 3, stride, 1, count_include_pad=False).float().numpy()
    ref, y = avg_pool_3x3_both(x, stride, opset)
    np.testing.assert_array_equal(ref, exact_mean)
    np.testing.assert_array_equal(y, exact_mean)


def test_xnor_conv_is_exported_as_a_sign_conv_then_a_scale(tmp_path):
    """Why :class:`XnorConv2d`: with ``±1`` weights on ``±1`` activations the conv sums integers -- exact
    in any order, on any machine -- and the scale ``beta`` is an elementwise (correctly rounded) ``Mul``,
    so PyTorch and ONNX Runtime agree bit for bit.  The scaled weights ``beta * sign(W)`` compute the
    same function only up to the rounding of a 216-term float sum, which depends on the summation order
    (runtime, instruction set): held to the worst case of any order, ``215 u sum|terms|``."""
    g = torch.Generator().manual_seed(0)
    x = torch.where(torch.randn(2, 24, 8, 8, generator=g) >= 0, 1.0, -1.0)
    conv = XnorConv2d(24, 24, 3).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(24, 24, 3, 3, generator=g))
        sign_w = torch.where(conv.weight >= 0, 1.0, -1.0)
        beta = conv.weight.abs().mean(dim=(1, 2, 3))
        assert torch.equal(beta, conv.constants()[0])
        exact_int = F.conv2d(x.double(), sign_w.double(), padding=1)      # integers, |.| <= 216
        assert torch.equal(exact_int, exact_int.round())
        y = conv(x).numpy()
        scaled = {"PyTorch": F.conv2d(x, sign_w * beta.view(-1, 1, 1, 1), padding=1).numpy()}
    beta4 = beta.view(1, -1, 1, 1).numpy()
    torch_int = F.conv2d(x, sign_w, padding=1).numpy()

    def ort_conv(w: torch.Tensor) -> np.ndarray:
        return run_onnxruntime("Conv", x.numpy(), {"w": w.numpy()}, pads=[1, 1, 1, 1])

    ort_int = ort_conv(sign_w)
    np.testing.assert_array_equal(torch_int, exact_int.numpy())
    np.testing.assert_array_equal(ort_int, exact_int.numpy())
    np.testing.assert_array_equal(y, exact_int.float().numpy() * beta4)       # the model: int conv * beta
    np.testing.assert_array_equal(ort_int * beta4, y)                         # the export's Conv, Mul
    scaled["ONNX Runtime"] = ort_conv(sign_w * beta.view(-1, 1, 1, 1))
    exact = exact_int.numpy() * beta4.astype(np.float64)
    tol = 215 * U32 * 216 * beta4.astype(np.float64)
    for name, s in scaled.items():
        assert (np.abs(s - exact) <= tol).all(), f"{name}: scaled-weight conv off by more than 215 u sum|terms|"
    wrong_beta = exact_int.numpy() * np.roll(beta4, 1, axis=1)                # the tolerance has teeth
    assert (np.abs(wrong_beta - exact) > tol).mean() > 0.5

    # the export: every binary conv is Conv(BipolarQuant(x), BipolarQuant(W), scale 1), then Mul(beta)
    spec = CellNetSpec(single_op_genotype("bin_conv_3x3"), cells=2, init_channels=4, resolution=8, name="x")
    torch.manual_seed(0)
    model = build_cell_model(spec)
    path = export_qonnx(model, tmp_path / "x.onnx")
    graph = onnx.load(str(path)).graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    betas = [m.constants()[0].detach().numpy() for m in model.modules() if isinstance(m, XnorConv2d)]
    convs = [n for n in graph.node if n.op_type == "Conv" and producer[n.input[1]].op_type == "BipolarQuant"]
    assert len(convs) == len(betas) > 0
    for n, b in zip(convs, betas, strict=True):
        assert producer[n.input[0]].op_type == "BipolarQuant"                  # the activation binariser
        wq = producer[n.input[1]]
        assert inits[wq.input[1]] == 1.0                                       # ±1 weights
        (mul,) = consumers[n.output[0]]
        assert mul.op_type == "Mul"
        np.testing.assert_array_equal(inits[mul.input[1]].reshape(-1), b)


def test_qonnx_export_is_bit_exact_on_every_binary_tensor(digits, perturb, tmp_path):
    spec = CellNetSpec(ALL_OPS_GENOTYPE, cells=5, init_channels=8, stem_multiplier=2, resolution=16, name="cx")
    torch.manual_seed(5)
    model = perturb(build_cell_model(spec), 5)          # BN gammas / betas off their defaults
    x_all, _ = digits(16, 40)
    recalibrate_bn(model, [x_all[:32]])
    x = x_all[32:]
    path = export_qonnx(model, tmp_path / "cell.onnx")
    logits, binary = execute_qonnx(path, x.numpy(), return_binary=True)
    ref_binary = binary_tensors(model, x)
    with torch.no_grad():
        ref = model(x).numpy()
    n_convs = sum(isinstance(m, BinConvOp) for m in model.modules())
    assert len(ref_binary) == len(binary) == 2 * n_convs        # activation + weight binariser per conv
    for i, (a, b) in enumerate(zip(ref_binary, binary, strict=True)):
        assert a.shape == b.shape, f"binary tensor {i}: shape {a.shape} vs {b.shape}"
        assert set(np.unique(b)) <= {-1.0, 1.0}
        mismatches = int((a != b).sum())
        assert mismatches == 0, f"binary tensor {i} ({a.shape}): {mismatches} elements differ"
    assert logits.shape == (8, 10)
    np.testing.assert_allclose(logits, ref, rtol=RTOL, atol=ATOL_OF_MAX * np.abs(ref).max())
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"BipolarQuant", "MaxPool", "AveragePool", "Concat", "Slice"} <= ops


def test_export_of_a_cell_whose_nodes_coincide(digits, tmp_path):
    """Nodes 0-2 of the reduction cell all compute pool(c_{k-2}) + pool(c_{k-1}): the exporter merges them and
    the cell output concatenates one tensor three times.  qonnx's tensor renaming replaces only the first of
    repeated node inputs (found in a searched no-skip network); the export must still execute and match."""
    same = (("avg_pool_3x3", 0), ("avg_pool_3x3", 1))
    reduce = same * 3 + (("zeroise", 1), ("bin_dil_conv_3x3", 3))
    normal = (("avg_pool_3x3", 0), ("bin_conv_3x3", 1)) + same * 2 + (("bin_conv_3x3", 4), ("max_pool_3x3", 0))
    spec = CellNetSpec(Genotype(normal=normal, reduce=reduce), cells=4, init_channels=8, resolution=16,
                       inter_cell_skip=False, name="coinciding")
    torch.manual_seed(2)
    model = build_cell_model(spec).eval()
    x_all, _ = digits(16, 40)
    recalibrate_bn(model, [x_all[:32]])
    x = x_all[32:]
    path = export_qonnx(model, tmp_path / "c.onnx")
    graph = onnx.load(str(path)).graph
    repeated = [n for n in graph.node if len(set(n.input)) < len(n.input)]
    assert any(n.op_type == "Concat" for n in repeated)         # the case is exercised
    assert not any(n.op_type == "Identity" for n in graph.node)
    logits, binary = execute_qonnx(path, x.numpy(), return_binary=True)
    ref_binary = binary_tensors(model, x)
    assert len(binary) == len(ref_binary) > 0
    assert all(np.array_equal(a, b) for a, b in zip(ref_binary, binary, strict=True))
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(logits, ref, rtol=RTOL, atol=ATOL_OF_MAX * np.abs(ref).max())


# ----------------------------------------------------------------------------- command line
def bnhw(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "bnhw", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_ops_works_and_build_and_report_refuse_a_constant_node_in_one_line(tmp_path):
    """Every cell op lowers (tests/test_lower_cellnet.py); a node of two zeroise edges is a constant zero tensor,
    which no unit produces: refused in one line naming the cell, the node, the edges and the op."""
    from click.testing import CliRunner

    from bnhw.cli import main

    spec = CellNetSpec(ALL_OPS_GENOTYPE, cells=4, init_channels=8, resolution=16, name="tiny-cells")
    assert spec.hardware_gaps() == ()
    reduce = ALL_OPS_GENOTYPE.reduce[:6] + (("zeroise", 3), ("zeroise", 2))
    spec = spec.replace(genotype=Genotype(ALL_OPS_GENOTYPE.normal, reduce))
    f = spec.save(tmp_path / "cells.json")
    assert load_spec(f) == spec
    p = bnhw("ops", f, "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["arch"] == "tiny-cells" and d["totals"]["ops"] == count_ops(spec).ops
    assert any(lo["name"] == "cell1.node2.e0:bin_sep_conv_3x3.dw" for lo in d["layers"])

    p = bnhw("build", f, "-o", tmp_path / "b")
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.strip().splitlines() if x.strip()]
    assert lines[-1].startswith("error: bnhw build: tiny-cells is a cell network") and "Traceback" not in p.stderr
    assert "cell 1 (reduction cell) node 3 (edges 6 and 7: both zeroise" in lines[-1]
    assert "no lowering to the hardware IR" in lines[-1]
    assert not (tmp_path / "b" / "model.onnx").exists()

    r = CliRunner().invoke(main, ["report", str(f), "-o", str(tmp_path / "r")])
    assert r.exit_code == 2
    assert "error: bnhw report: tiny-cells is a cell network" in r.output and len(r.output.splitlines()) == 1
    r = CliRunner().invoke(main, ["ops", "bnas-mini-example", "--totals"])
    assert r.exit_code == 0 and "10,307,338" in r.output and "normal[bin_conv_3x3<0" in r.output
