"""QONNX export: the exported graph, executed by qonnx on real digit images,
reproduces every binary tensor of the PyTorch model bit for bit and its
logits to float32 accuracy, in both precision modes.

Why bit-exactness is expected (and must not be loosened): every tensor that
reaches a binariser is computed by the same float32 operations, rounded the
same way, on both sides (binary-conv outputs are small integers, the 8-bit
stem conv's products and sums are exact, the BN is an explicit ``Mul`` +
``Add``, the 2x2 average pool sums in the same order, which
:func:`test_avgpool_shortcut_sums_in_the_same_order_as_onnxruntime` checks;
see :mod:`bnhw.quant.layers`).  The logits are not bit-exact: the classifier
(and, in float mode, the global average pool) sums hundreds of terms in
implementation-defined order.
"""

from __future__ import annotations

import os
import random

import numpy as np
import onnx
import pytest
import torch
from helpers.onnxrt import run_onnxruntime
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from torch.nn.utils import parametrize

from bnhw.errors import BnhwError
from bnhw.quant import (
    binary_tensors,
    build_model,
    execute_qonnx,
    export_qonnx,
    recalibrate_bn,
    save_checkpoint,
)
from bnhw.quant.layers import BinaryConv2d
from bnhw.spec import ArchSpec, Precision
from bnhw.spec.space import get_space

# Logit tolerance.  The float32 rounding error of the global average pool and
# the classifier's dot products (up to ~1.5k terms) is a few ulps of the
# largest partial sums, i.e. it scales with the logit magnitude, not with each
# logit (a logit that cancels to ~0 keeps an absolute error of the same size).
# Observed: below 1e-6 of max|logit| (random CIFAR-space members, digits inputs);
# 1e-5 of max|logit| leaves a 10x margin.
RTOL = 1e-5
ATOL_OF_MAX = 1e-5

CIFAR_SPECS = {
    # stem 16 -> 16 -> 24 (groups 2, s2) -> 48 (k5, groups 4) -> 64 (tile, s2) -> 40 (truncate)
    "odd-widths": dict(stages=[[(16, 3, 1, 1), (24, 3, 2, 2)], [(48, 5, 4, 1), (64, 3, 8, 2), (40, 3, 4, 1)]]),
    # 1 input channel, stem stride 2, depthwise conv, 12 -> 40 tiles the input 4 times
    "depthwise-tiling": dict(stages=[[(12, 3, 1, 1), (12, 3, 12, 2)], [(40, 3, 4, 1), (40, 5, 8, 2)]],
                             stem=8, stem_stride=2, in_channels=1),
}


def imagenet_smallest(residual: str) -> ArchSpec:
    """The smallest NAS-BNN ImageNet subnet, written out by hand (224 x 224, 1000 classes)."""

    def stage(n: int, c: int, g: int, s: int) -> dict:
        return {"blocks": [{"channels": c, "kernel": 3, "groups": g, "stride": s}]
                + [{"channels": c, "kernel": 3, "groups": g, "stride": 1}] * (n - 1)}

    return ArchSpec.from_dict({
        "resolution": 224, "num_classes": 1000, "stem": {"channels": 24, "kernel": 3, "stride": 2},
        "stages": [stage(2, 48, 1, 1), stage(2, 96, 2, 2), stage(2, 192, 4, 2), stage(8, 384, 8, 2),
                   stage(2, 768, 16, 2)],
        "precision": {"residual": residual},
    })


def quant_nodes(mw: ModelWrapper, bits: int, scale: float) -> list:
    """``Quant`` nodes with a given bit width and (scalar) scale."""
    out = []
    for n in mw.get_nodes_by_op_type("Quant"):
        s, b = mw.get_initializer(n.input[1]), mw.get_initializer(n.input[3])
        if s is not None and b is not None and s.size == 1 and float(b) == bits and float(s) == scale:
            out.append(n)
    return out


def check_export(spec: ArchSpec, path, digits, perturb, *, seed: int, n_calib: int) -> ModelWrapper:
    """Export a recalibrated, perturbed model and compare qonnx with PyTorch on 8 real images."""
    model = perturb(build_model(spec), seed)
    x_all, _ = digits(spec.resolution, n_calib + 8, spec.in_channels)
    recalibrate_bn(model, [x_all[:n_calib]])
    x = x_all[n_calib:]
    export_qonnx(model, path)
    mw = ModelWrapper(str(path))

    logits, binary = execute_qonnx(mw, x.numpy(), return_binary=True)
    ref_binary = binary_tensors(model, x)
    with torch.no_grad():
        ref = model(x).numpy()

    n_blocks = len(list(spec.blocks()))
    assert len(ref_binary) == len(binary) == 4 * n_blocks  # 2 activation + 2 weight binarisations per block
    for i, (a, b) in enumerate(zip(ref_binary, binary, strict=True)):
        assert a.shape == b.shape, f"binary tensor {i}: shape {a.shape} vs {b.shape}"
        assert set(np.unique(b)) <= {-1.0, 1.0}
        mismatches = int((a != b).sum())
        assert mismatches == 0, f"binary tensor {i} ({a.shape}): {mismatches} elements differ"
    assert logits.shape == (8, spec.num_classes)
    np.testing.assert_allclose(logits, ref, rtol=RTOL, atol=ATOL_OF_MAX * np.abs(ref).max())

    # the input is quantised to stem_bits fixed point by the first node
    first = mw.find_consumer(mw.graph.input[0].name)
    assert first.op_type == "Quant"
    assert quant_nodes(mw, spec.precision.stem_bits, 2.0 ** -(spec.precision.stem_bits - 1)) == [first]
    p = spec.precision
    residual = quant_nodes(mw, p.residual_bits, 2.0 ** -p.residual_frac_bits)
    # stem conv and stem output, 2 per block half, the pooled features
    assert len(residual) == ((2 + 4 * n_blocks + 1) if p.fixed else 0)
    return mw


@pytest.mark.parametrize("residual", ["float", "fixed"])
@pytest.mark.parametrize("name", list(CIFAR_SPECS))
def test_cifar_export_is_bit_exact(make_spec, digits, perturb, tmp_path, name, residual):
    spec = make_spec(**CIFAR_SPECS[name], residual=residual)
    mw = check_export(spec, tmp_path / f"{name}.onnx", digits, perturb, seed=7, n_calib=16)
    if spec.precision.fixed:
        # run once more keeping every tensor: the residual path is integers times 2^-frac_bits
        x, _ = digits(spec.resolution, 2, spec.in_channels)
        ctx = execute_onnx(mw, {mw.graph.input[0].name: x[:1].numpy()}, return_full_exec_context=True)
        p = spec.precision
        for node in quant_nodes(mw, p.residual_bits, 2.0 ** -p.residual_frac_bits):
            k = ctx[node.output[0]] * 2.0 ** p.residual_frac_bits
            np.testing.assert_array_equal(k, np.round(k))
            assert k.min() >= -(2 ** 15) and k.max() <= 2 ** 15 - 1 and np.any(k != 0)


@pytest.mark.parametrize("seed", [3, 4])
def test_random_cifar_space_members_export_bit_exact(digits, perturb, tmp_path, seed):
    spec = get_space("nasbnn-cifar").sample(random.Random(seed))
    residual = "fixed" if seed % 2 else "float"
    spec = spec.replace(precision=Precision(residual=residual))
    check_export(spec, tmp_path / "m.onnx", digits, perturb, seed=seed, n_calib=16)


@pytest.mark.slow
@pytest.mark.parametrize("residual", ["float", "fixed"])
def test_imagenet_smallest_export_is_bit_exact(digits, perturb, tmp_path, residual):
    spec = imagenet_smallest(residual)
    assert get_space("nasbnn-imagenet").contains(spec.replace(space="nasbnn-imagenet"))
    check_export(spec, tmp_path / "imagenet.onnx", digits, perturb, seed=11, n_calib=8)


def test_export_leaves_the_model_alone_and_writes_atomically(make_spec, digits, perturb, tmp_path):
    spec = make_spec(**CIFAR_SPECS["odd-widths"])
    model = perturb(build_model(spec), 0).train()
    x, _ = digits(32, 8)
    path = export_qonnx(model, tmp_path / "out" / "m.onnx")
    assert path == tmp_path / "out" / "m.onnx" and os.listdir(path.parent) == ["m.onnx"]
    onnx.checker.check_model(onnx.load(str(path)))
    assert model.training  # not switched to eval
    assert all(parametrize.is_parametrized(m, "weight") for m in model.modules() if isinstance(m, BinaryConv2d))
    model.eval()
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(execute_qonnx(path, x), ref, rtol=RTOL, atol=ATOL_OF_MAX * np.abs(ref).max())
    with pytest.raises(ValueError, match="does not fit the graph input"):
        execute_qonnx(path, x[:, :1])


def test_export_from_spec_and_checkpoint(make_spec, digits, perturb, tmp_path):
    spec = make_spec(**CIFAR_SPECS["depthwise-tiling"], residual="fixed")
    model = perturb(build_model(spec, weight_norm=False), 5)
    ckpt = save_checkpoint(model, tmp_path / "m.pt")
    x, _ = digits(32, 4, 1)
    with torch.no_grad():
        ref = model(x).numpy()
    # from the spec, and from another model of the spec whose own weights the checkpoint replaces
    for source in (spec, build_model(spec)):
        path = export_qonnx(source, tmp_path / "m.onnx", checkpoint=ckpt)
        np.testing.assert_allclose(execute_qonnx(path, x), ref, rtol=RTOL, atol=ATOL_OF_MAX * np.abs(ref).max())
    with pytest.raises(BnhwError, match="no such file"):
        export_qonnx(spec, tmp_path / "n.onnx", checkpoint=tmp_path / "missing.pt")


def test_execute_qonnx_reports_unreadable_files(tmp_path):
    with pytest.raises(BnhwError, match="no such file"):
        execute_qonnx(tmp_path / "missing.onnx", np.zeros((1, 3, 32, 32), np.float32))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(BnhwError, match="not a readable ONNX model") as ei:
        execute_qonnx(bad, np.zeros((1, 3, 32, 32), np.float32))
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("channels", [24, 64])
def test_avgpool_shortcut_is_exact_on_the_fixed_point_grid_and_within_rounding_on_floats(channels):
    """The stride-2 shortcut (a 2x2 ``AveragePool``).  Fixed mode: sums of four 16-bit grid values are
    exact in any order and the division by 4 is exact, so both sides give the exact mean, bit for bit.
    Float mode: the summation order is the runtime's (ONNX Runtime's MLAS kernel picks it by instruction
    set and channel count), so each side is held to the worst case of any order against the float64
    mean, ``4 u mean|x|`` (``u = 2**-24``; 3 u for summing 4 terms in any order, with margin), not to
    the other side."""
    g = torch.Generator().manual_seed(channels)
    grid = torch.randint(-2 ** 15, 2 ** 15, (4, channels, 32, 32), generator=g).float() / 256
    exact = torch.nn.functional.avg_pool2d(grid.double(), 2, 2).float().numpy()
    np.testing.assert_array_equal(torch.nn.functional.avg_pool2d(grid, 2, 2).numpy(), exact)
    np.testing.assert_array_equal(run_onnxruntime("AveragePool", grid.numpy(), kernel_shape=[2, 2], strides=[2, 2]),
                                  exact)
    x = torch.randn(4, channels, 32, 32, generator=g) * 3
    mean = torch.nn.functional.avg_pool2d(x.double(), 2, 2).numpy()
    tol = 4 * 2.0 ** -24 * torch.nn.functional.avg_pool2d(x.double().abs(), 2, 2).numpy()
    for name, y in (("PyTorch", torch.nn.functional.avg_pool2d(x, 2, 2).numpy()),
                    ("ONNX Runtime", run_onnxruntime("AveragePool", x.numpy(), kernel_shape=[2, 2], strides=[2, 2]))):
        assert (np.abs(y - mean) <= tol).all(), f"{name}: a 2x2 mean off by more than 4 u mean|x|"
    # the tolerance has teeth: the mean of the neighbouring window is far outside it
    assert (np.abs(np.roll(mean, 1, axis=-1) - mean) > tol).mean() > 0.9


@pytest.mark.parametrize("size", [4, 6, 7])
def test_global_pool_of_fixed_point_features_is_correctly_rounded_on_both_sides(size):
    """Fixed mode: sums of 16-bit grid values are exact, and both sides divide (correctly rounded)
    by H*W, so the pooled features -- and their re-quantisation, ties at exact halves included
    (possible for 6 x 6) -- are identical."""
    g = torch.Generator().manual_seed(size)
    x = torch.randint(-2 ** 15, 2 ** 15, (16, 256, size, size), generator=g).float() / 256
    exact = (x.double().sum((2, 3), keepdim=True) / size ** 2).float().numpy()
    np.testing.assert_array_equal(torch.nn.functional.adaptive_avg_pool2d(x, 1).numpy(), exact)
    np.testing.assert_array_equal(run_onnxruntime("GlobalAveragePool", x.numpy()), exact)
