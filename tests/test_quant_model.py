"""The Brevitas network builder: shapes, shortcuts, weight normalisation,
BN recalibration, the fixed-point residual path, checkpoints and the digits data."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from brevitas.nn import QuantIdentity
from torch import nn
from torch.nn.utils import parametrize

from bnhw.data import digits_images
from bnhw.errors import BnhwError
from bnhw.quant import (
    baked_copy,
    binary_tensors,
    build_model,
    load_checkpoint,
    load_model,
    recalibrate_bn,
    save_checkpoint,
)
from bnhw.quant.binarizers import fixed_point_act_quant
from bnhw.quant.layers import (
    WEIGHT_NORM_EPS,
    BinaryBlock,
    BinaryConv2d,
    ChannelShortcut,
    FoldedBatchNorm2d,
    LearnableSign,
    ResidualQuant,
)
from bnhw.spec import Precision
from bnhw.spec.space import get_space

FLOAT = Precision()
FIXED = Precision(residual="fixed")

# odd widths (16 -> 24 -> 48 -> 64 -> 40), groups, kernel 5, stride-2 blocks
ODD = [[(16, 3, 1, 1), (24, 3, 2, 2)], [(48, 5, 4, 1), (64, 3, 8, 2), (40, 3, 4, 1)]]


def sign(t: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1, as Brevitas and QONNX binarise."""
    return torch.where(t >= 0, 1.0, -1.0)


# ----------------------------------------------------------------------------
# shapes and structure
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("residual", ["float", "fixed"])
@pytest.mark.parametrize("stem_stride,in_channels", [(1, 3), (2, 1)])
def test_forward_shape_and_determinism(make_spec, digits, residual, stem_stride, in_channels):
    spec = make_spec(ODD, stem_stride=stem_stride, in_channels=in_channels, residual=residual)
    model = build_model(spec)
    assert model.spec is spec and not model.training
    assert len(model.blocks) == len(list(spec.blocks()))
    x, _ = digits(32, 4, in_channels)
    y1, y2 = model(x), model(x)
    assert y1.shape == (4, 10) and torch.isfinite(y1).all()
    assert torch.equal(y1, y2)  # constant scales only: eval mode is a pure function


@pytest.mark.parametrize("cin,cout,groups,stride", [(48, 64, 4, 2), (64, 48, 8, 1), (24, 24, 24, 2), (16, 40, 1, 1)])
def test_block_shapes(cin, cout, groups, stride):
    blk = BinaryBlock(cin, cout, 3, groups, stride, FLOAT).eval()
    assert blk.conv1.latent_weight.shape == (cin, cin // groups, 3, 3)
    assert blk.conv1.groups == groups and blk.conv1.stride == (stride, stride)
    assert blk.conv2.latent_weight.shape == (cout, cin, 1, 1)
    assert isinstance(blk.shortcut1, nn.AvgPool2d if stride == 2 else nn.Identity)
    y = blk(torch.randn(2, cin, 8, 8))
    assert y.shape == (2, cout, 8 // stride, 8 // stride)


def test_channel_shortcut_tiles_and_truncates():
    x = torch.arange(48.0).view(1, 48, 1, 1).expand(2, 48, 3, 3)
    up = ChannelShortcut(48, 64)(x)
    assert up.shape == (2, 64, 3, 3)
    assert torch.equal(up[:, :48], x) and torch.equal(up[:, 48:], x[:, :16])
    big = ChannelShortcut(16, 40)(x[:, :16])
    assert torch.equal(big[0, :, 0, 0], torch.arange(40.0) % 16)
    assert torch.equal(ChannelShortcut(64, 48)(up), x)
    assert ChannelShortcut(48, 48)(x) is x


@pytest.mark.parametrize("precision", [FLOAT, FIXED], ids=["float", "fixed"])
def test_block_shortcuts_when_convs_are_silenced(precision):
    """With both BNs zeroed the block is act2(tile(act1(pool(x)))): checks both shortcut paths."""
    torch.manual_seed(0)
    blk = BinaryBlock(48, 64, 3, 4, 2, precision).eval()
    with torch.no_grad():
        for bn in (blk.bn1, blk.bn2):
            bn.weight.zero_()
            bn.bias.zero_()
        for act in (blk.act1, blk.act2):
            act.shift_in.normal_(0, 0.1)
            act.shift_out.normal_(0, 0.1)
    x = torch.randn(2, 48, 8, 8)
    pooled = nn.functional.avg_pool2d(x, 2)
    q = (lambda t: torch.round(t * 256).clamp(-2**15, 2**15 - 1) / 256) if precision.fixed else (lambda t: t)
    h = q(blk.act1(q(pooled)))
    expected = q(blk.act2(q(torch.cat([h, h[:, :16]], dim=1))))
    torch.testing.assert_close(blk(x), expected, rtol=0, atol=0)


def test_grouped_conv_binary_weights_and_integer_outputs():
    torch.manual_seed(1)
    conv = BinaryConv2d(16, 16, 3, groups=4, stride=2).eval()
    wb = conv.binary_weight()
    assert wb.shape == (16, 4, 3, 3) and set(wb.unique().tolist()) == {-1.0, 1.0}
    x = sign(torch.randn(2, 16, 8, 8))
    y = conv(x)
    assert y.shape == (2, 16, 4, 4)
    assert torch.equal(y, torch.round(y)) and y.abs().max() <= 4 * 9
    torch.testing.assert_close(y, nn.functional.conv2d(x, wb, stride=2, padding=1, groups=4), rtol=0, atol=0)


@pytest.mark.parametrize("weight_norm", [True, False])
def test_training_step_reaches_every_parameter_and_leaves_latents_alone(make_spec, digits, weight_norm):
    model = build_model(make_spec(ODD, residual="fixed"), weight_norm=weight_norm).train()
    with torch.no_grad():  # latent weights beyond the ±1 clamp
        for m in model.modules():
            if isinstance(m, BinaryConv2d):
                m.latent_weight.mul_(10)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "batches" not in k}
    x, y = digits(32, 16)
    nn.functional.cross_entropy(model(x), y).backward()
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), f"{k} modified by a forward pass"
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------
# weight normalisation
# ----------------------------------------------------------------------------
def test_weight_norm_normalises_each_output_channel():
    torch.manual_seed(2)
    conv = BinaryConv2d(24, 32, 3, groups=2)
    with torch.no_grad():  # distinct channel offsets and scales
        conv.latent_weight.mul_(torch.linspace(0.1, 3.0, 32).view(-1, 1, 1, 1))
        conv.latent_weight.add_(torch.linspace(-0.5, 0.5, 32).view(-1, 1, 1, 1))
    w = conv.weight.detach()
    flat = w.flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(32), rtol=0, atol=1e-5)
    raw_var = conv.latent_weight.detach().flatten(1).var(1, unbiased=False)
    torch.testing.assert_close(flat.var(1, unbiased=False), raw_var / (raw_var + WEIGHT_NORM_EPS))


def test_weight_norm_switch_changes_binary_weights_exactly_where_mean_shift_flips_sign():
    torch.manual_seed(3)
    on = BinaryConv2d(16, 16, 3, groups=2)
    off = BinaryConv2d(16, 16, 3, groups=2, weight_norm=False)
    assert parametrize.is_parametrized(on, "weight") and not parametrize.is_parametrized(off, "weight")
    with torch.no_grad():
        raw = torch.randn(16, 8, 3, 3) + torch.linspace(-1.0, 1.0, 16).view(-1, 1, 1, 1)
        on.latent_weight.copy_(raw)
        off.latent_weight.copy_(raw)
    b_on, b_off = on.binary_weight(), off.binary_weight()
    mean = raw.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.equal(b_off, sign(raw))
    assert torch.equal(b_on, sign(raw - mean))
    flips = sign(raw) != sign(raw - mean)
    assert flips.any() and not flips.all()
    assert torch.equal(b_on != b_off, flips)


def test_model_weight_norm_switch(make_spec):
    spec = make_spec(ODD)
    on, off = build_model(spec), build_model(spec, weight_norm=False)
    convs_on = [m for m in on.modules() if isinstance(m, BinaryConv2d)]
    assert len(convs_on) == 2 * len(on.blocks)
    assert all(parametrize.is_parametrized(m, "weight") for m in convs_on)
    assert not any(parametrize.is_parametrized(m, "weight") for m in off.modules() if isinstance(m, BinaryConv2d))
    assert any(".parametrizations.weight.original" in k for k in on.state_dict())
    assert not any("parametrizations" in k for k in off.state_dict())


def test_baked_copy_is_identical_and_leaves_the_original_intact(make_spec, digits, perturb):
    model = perturb(build_model(make_spec(ODD, residual="fixed")), 0)
    x, _ = digits(32, 4)
    baked = baked_copy(model)
    assert not baked.weight_norm and not any("parametrizations" in k for k in baked.state_dict())
    for a, b in zip(binary_tensors(model, x), binary_tensors(baked, x), strict=True):
        np.testing.assert_array_equal(a, b)
    assert torch.equal(model(x), baked(x))
    assert all(parametrize.is_parametrized(m, "weight") for m in model.modules() if isinstance(m, BinaryConv2d))


# ----------------------------------------------------------------------------
# BN recalibration
# ----------------------------------------------------------------------------
def test_recalibrate_bn_is_a_cumulative_average(make_spec, digits):
    model = build_model(make_spec(ODD))
    x, _ = digits(32, 48)
    batches = list(x.split(16))
    recalibrate_bn(model, [(b, None) for b in batches])
    assert not model.training
    assert all(bn.momentum == 0.1 for bn in model.modules() if isinstance(bn, FoldedBatchNorm2d))
    # the stem BN sees the stem conv output: its running mean is the mean of the batch means
    with torch.no_grad():
        conv_out = [model.stem.conv(model.stem.input_quant(b)) for b in batches]
    expected_mean = torch.stack([c.mean(dim=(0, 2, 3)) for c in conv_out]).mean(0)
    expected_var = torch.stack([c.var(dim=(0, 2, 3), unbiased=True) for c in conv_out]).mean(0)
    torch.testing.assert_close(model.stem.bn.running_mean, expected_mean)
    torch.testing.assert_close(model.stem.bn.running_var, expected_var)
    for bn in model.modules():
        if isinstance(bn, FoldedBatchNorm2d):
            assert bn.num_batches_tracked == 3
            assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    # recalibrating again on the same data gives the same statistics (reset, not accumulated)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recalibrate_bn(model, batches + batches, max_batches=3)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(model, [])


def test_folded_bn_matches_batch_norm():
    bn = FoldedBatchNorm2d(8).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    x = torch.randn(2, 8, 5, 5)
    ref = nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    torch.testing.assert_close(bn(x), ref)


# ----------------------------------------------------------------------------
# fixed-point residual path
# ----------------------------------------------------------------------------
def test_fixed_mode_residual_tensors_are_on_the_grid(make_spec, digits, perturb):
    spec = make_spec(ODD, residual="fixed")
    model = perturb(build_model(spec), 1)
    x, _ = digits(32, 16)
    recalibrate_bn(model, [x])
    quants = [m for m in model.modules() if isinstance(m, ResidualQuant)]
    assert len(quants) == 2 + 4 * len(model.blocks) + 1
    for q in quants:
        assert q.act_quant.scale().item() == 2.0 ** -8 and q.act_quant.bit_width().item() == 16
    seen: list[torch.Tensor] = []
    handles = [q.register_forward_hook(lambda _m, _i, out: seen.append(out.detach())) for q in quants]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    assert len(seen) == len(quants)
    for t in seen:
        k = t * 256
        assert torch.equal(k, torch.round(k))
        assert k.min() >= -2**15 and k.max() <= 2**15 - 1
        assert (k != 0).any()
    assert not any(isinstance(m, ResidualQuant) for m in build_model(make_spec(ODD)).modules())


@pytest.mark.parametrize("bits,frac", [(16, 8), (8, 7), (12, 4), (24, 20), (4, 0)])
def test_fixed_point_quantiser(bits, frac):
    q = QuantIdentity(act_quant=fixed_point_act_quant(bits, frac))
    assert q.act_quant.scale().item() == 2.0 ** -frac and q.act_quant.bit_width().item() == bits
    lsb, top = 2.0 ** -frac, 2 ** (bits - 1)
    x = torch.tensor([0.5 * lsb, 1.5 * lsb, -2.5 * lsb, 1e9, -1e9])
    expected = torch.tensor([0.0, 2.0, -2.0, top - 1, -top]) * lsb  # half to even, saturating
    assert torch.equal(q(x), expected)


def test_input_quantiser_is_stem_bits_fixed_point(make_spec):
    model = build_model(make_spec(ODD))
    x = torch.tensor([-1.0, -0.5, 0.3, 0.999, 1.0]).view(1, 1, 1, 5)
    y = model.stem.input_quant(x)
    torch.testing.assert_close(y * 128, torch.tensor([-128.0, -64.0, 38.0, 127.0, 127.0]).view(1, 1, 1, 5))


# ----------------------------------------------------------------------------
# random architectures from the search spaces
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_cifar_space_members(digits, seed):
    space = get_space("nasbnn-cifar")
    spec = space.sample(random.Random(seed))
    x, _ = digits(spec.resolution, 4)
    for precision in (FLOAT, FIXED):
        model = build_model(spec.replace(precision=precision))
        assert model(x).shape == (4, spec.num_classes)
    # binary activations: one per sign, N x C x H x W, following the spec's geometry
    model = build_model(spec)
    acts = binary_tensors(model, x, weights=False)
    geoms = list(spec.blocks())
    assert len(acts) == 2 * len(geoms)
    for g, a1, a2 in zip(geoms, acts[0::2], acts[1::2], strict=True):
        assert a1.shape == (4, g.in_channels, g.in_size, g.in_size)
        assert a2.shape == (4, g.in_channels, g.out_size, g.out_size)


# ----------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("weight_norm", [True, False])
def test_checkpoint_round_trip(make_spec, digits, perturb, tmp_path, weight_norm):
    spec = make_spec(ODD, residual="fixed")
    model = perturb(build_model(spec, weight_norm=weight_norm), 2)
    x, _ = digits(32, 8)
    recalibrate_bn(model, [x])
    path = save_checkpoint(model, tmp_path / "ck" / "model.pt", epoch=3, top1=0.5, note="hi")
    assert os.listdir(path.parent) == ["model.pt"]  # atomic: no temp file left behind
    spec2, state, extra = load_checkpoint(path)
    assert spec2 == spec and extra == {"epoch": 3, "top1": 0.5, "note": "hi"}
    assert state.keys() == model.state_dict().keys()
    loaded = load_model(path)
    assert loaded.weight_norm == weight_norm and not loaded.training
    assert torch.equal(loaded(x), model(x))
    # the same weights in another precision mode (e.g. float-trained, evaluated fixed)
    other = load_model(spec.replace(precision=FLOAT), path)
    assert other.spec.precision == FLOAT and other(x).shape == (8, 10)
    # overwriting is atomic as well
    save_checkpoint(loaded, path)
    assert load_checkpoint(path)[2] == {}


def test_checkpoint_errors_are_one_line(make_spec, tmp_path):
    spec = make_spec(ODD)
    good = save_checkpoint(build_model(spec), tmp_path / "good.pt")
    data = good.read_bytes()
    cases = {
        "missing.pt": None,
        "truncated.pt": data[: len(data) // 2],
        "garbage.pt": b"\x00not a checkpoint" * 100,
        "empty.pt": b"",
    }
    for name, content in cases.items():
        p = tmp_path / name
        if content is not None:
            p.write_bytes(content)
        for load in (load_checkpoint, load_model):
            with pytest.raises(BnhwError) as ei:
                load(p)
            msg = str(ei.value)
            assert "\n" not in msg and str(p) in msg
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(BnhwError, match="cannot write"):
        save_checkpoint(build_model(spec), blocker / "m.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(BnhwError, match="not a bnhw checkpoint"):
        load_checkpoint(foreign)
    payload = torch.load(good, weights_only=True)
    payload["state_dict"]["stem.bn.weight"] = [1.0, 2.0]
    torch.save(payload, tmp_path / "malformed.pt")
    with pytest.raises(BnhwError, match="malformed bnhw checkpoint"):
        load_model(tmp_path / "malformed.pt")


def test_load_model_from_a_bundled_name_and_a_spec_file(make_spec, tmp_path):
    model = load_model("nasbnn-cifar-smallest")
    assert model.spec.resolution == 32 and model.weight_norm
    spec = make_spec(ODD)
    assert load_model(spec.save(tmp_path / "arch.json")).spec == spec


def test_checkpoint_that_does_not_fit_the_spec(make_spec, tmp_path):
    path = save_checkpoint(build_model(make_spec(ODD)), tmp_path / "m.pt")
    wider = make_spec([[(16, 3, 1, 1), (32, 3, 2, 2)], [(48, 5, 4, 1), (64, 3, 8, 2), (40, 3, 4, 1)]])
    with pytest.raises(BnhwError, match=r"weights do not fit the spec: .*wrong shape") as ei:
        load_model(wider, path)
    assert "\n" not in str(ei.value)
    deeper = make_spec(ODD + [[(40, 3, 1, 1)]])
    with pytest.raises(BnhwError, match="missing"):
        load_model(deeper, path)
    with pytest.raises(BnhwError, match="unexpected|missing"):
        load_model(make_spec(ODD), path, weight_norm=False)


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def test_digits_images():
    x, y = digits_images(20, n=30, channels=2, seed=5)
    assert x.shape == (30, 2, 20, 20) and x.dtype == torch.float32
    assert y.shape == (30,) and y.dtype == torch.int64 and set(y.tolist()) <= set(range(10))
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1 and x.max() > 0.9
    assert torch.equal(x[:, 0], x[:, 1])
    x2, y2 = digits_images(20, n=30, channels=2, seed=5)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = digits_images(20, n=30, channels=2, seed=6)
    assert not torch.equal(x, x3)
    full, labels = digits_images(8, channels=1)
    assert full.shape == (1797, 1, 8, 8) and torch.bincount(labels).min() > 170
    with pytest.raises(ValueError):
        digits_images(8, n=0)


def test_learnable_sign_zero_maps_to_plus_one():
    s = LearnableSign(2)
    with torch.no_grad():
        s.bias.copy_(torch.tensor([0.5, -0.25]).view(1, 2, 1, 1))
    x = torch.tensor([[0.5, 0.4999], [-0.25, -0.3]]).view(1, 2, 1, 2)
    assert s(x).flatten().tolist() == [1.0, -1.0, 1.0, -1.0]
