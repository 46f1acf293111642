"""The weight-sharing supernet: elastic choices, extraction into standalone
Brevitas models with identical outputs, and their QONNX export."""

import random

import numpy as np
import pytest
import torch

from bnhw.design.supernet import BinarySupernet, SupernetConfig
from bnhw.design.train import SandwichStep, sandwich_specs
from bnhw.errors import BnhwError
from bnhw.spec.space import get_space

SPACE = get_space("nasbnn-cifar").for_task(10)


def _trained(config=SupernetConfig(), steps=3, seed=0):
    """A tiny supernet after a few sandwich-rule steps on real digits."""
    from bnhw.data.datasets import load_data

    torch.manual_seed(seed)
    d = load_data("digits", 32)
    x, y = d.train.tensors()
    sn = BinarySupernet(SPACE, config)
    step = SandwichStep(sn)
    opt = torch.optim.Adam(sn.parameters(), 5e-3)
    rng = random.Random(seed)
    sn.train()
    for i in range(steps):
        loss, _ = step(x[i * 32:(i + 1) * 32], y[i * 32:(i + 1) * 32], sandwich_specs(sn, rng, 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
    # realistic BN statistics (they are what extraction copies)
    with torch.no_grad():
        for s in (SPACE.largest(), SPACE.smallest()):
            sn(x[:64], s)
    return sn.eval(), d


@pytest.fixture(scope="module")
def trained():
    return _trained()


def test_trained_parameters_moved(trained):
    sn, _ = trained
    # Bi-Transformation and kernel transforms start at identity and are learnt
    t = sn.stages[1][0].conv1.bi_transforms["3"]      # the smallest subnet uses 3x3 there
    assert not torch.equal(t, torch.eye(9))


@pytest.mark.parametrize("seed", range(4))
def test_extracted_subnet_equals_supernet(trained, seed):
    sn, d = trained
    x, _ = d.val.tensors()
    rng = random.Random(seed)
    for spec in [SPACE.sample(rng), SPACE.mutate(SPACE.largest(), rng, 0.5)]:
        with torch.no_grad():
            ref = sn(x[:32], spec)
            got = sn.extract(spec)(x[:32])
        assert torch.equal(ref, got), spec.short()


@pytest.mark.parametrize("config", [SupernetConfig(weight_norm=False), SupernetConfig(bi_transformation=False)])
def test_extraction_exact_with_techniques_switched_off(config):
    sn, d = _trained(config, steps=2)
    x, _ = d.val.tensors()
    spec = SPACE.sample(random.Random(5))
    with torch.no_grad():
        assert torch.equal(sn(x[:16], spec), sn.extract(spec)(x[:16]))


def test_extracted_subnet_exports_to_identical_qonnx(trained, tmp_path):
    from bnhw.flows.export import verify_export
    from bnhw.quant.export import export_qonnx

    sn, d = trained
    x, _ = d.test.tensors()
    spec = SPACE.sample(random.Random(11))
    model = sn.extract(spec)
    path = export_qonnx(model, tmp_path / "sub.onnx")
    rep = verify_export(model, path, x[:8])
    assert rep.binary_mismatches == 0 and rep.binary_tensors > 0
    assert rep.max_logit_error < 1e-5
    # ... and the QONNX output is the supernet's output for that subnet
    from bnhw.quant.export import execute_qonnx

    with torch.no_grad():
        ref = sn(x[:8], spec).numpy()
    np.testing.assert_allclose(execute_qonnx(path, x[:8]), ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_elastic_choices_share_weights():
    sn = BinarySupernet(SPACE)
    conv = sn.stages[2][1].conv1            # S3: kernels {3, 5}, groups {2, 4}
    cin = 64
    w5 = conv.real_weight(cin, cin, 5, 2)
    w3 = conv.real_weight(cin, cin, 3, 2)
    assert w5.shape == (cin, cin // 2, 5, 5) and w3.shape == (cin, cin // 2, 3, 3)
    # identity-initialised kernel transform: the 3x3 kernel is the 5x5 centre
    assert torch.equal(w3, w5[:, :, 1:4, 1:4])
    # more groups use fewer input slots of the same rows
    w_g4 = conv.real_weight(cin, cin, 5, 4)
    assert torch.equal(w_g4, w5[:, : cin // 4])
    # identity-initialised Bi-Transformation
    assert torch.equal(conv.binary_latent(w3), w3)
    with pytest.raises(BnhwError, match="groups 1 below"):
        conv.real_weight(cin, cin, 3, 1)


def test_teacher_uses_full_precision_weights(trained):
    sn, d = trained
    x, _ = d.val.tensors()
    spec = SPACE.largest()
    with torch.no_grad():
        assert not torch.equal(sn(x[:8], spec, binary_weights=False), sn(x[:8], spec))


def test_wrong_classes_rejected(trained):
    sn, _ = trained
    with pytest.raises(BnhwError, match="classes"):
        sn.extract(SPACE.smallest().replace(num_classes=7))


def _sign_inputs(sn, spec, x):
    """The inputs of every sign activation of ``spec`` on ``x`` (training-mode BN), in network order."""
    from bnhw.design.supernet import ElasticSign

    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0] - mod.bias[:, :args[0].shape[1]]))
             for m in sn.modules() if isinstance(m, ElasticSign)]
    try:
        with torch.no_grad():
            sn.train()(x, spec)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_default_init_keeps_deep_sign_activations_informative():
    """Issue 19's cause: with ReActNet's RPReLU slope 0.25 after every residual addition the negative half of
    the stream shrinks 4x per layer, so deep sign activations read +1 almost everywhere; bnhw's default
    (identity slopes, blocks starting as the identity) keeps both signs."""
    from bnhw.data.datasets import load_data

    x = load_data("digits", 32).train.tensors()[0][:64]
    spec = SPACE.largest()
    torch.manual_seed(0)
    fixed = BinarySupernet(SPACE)
    assert all(float(b.weight.detach().abs().max()) == 0 for n, b in fixed.named_modules()
               if n.endswith((".bn1.bn", ".bn2.bn")))
    torch.manual_seed(0)
    old = BinarySupernet(SPACE, SupernetConfig(rprelu_init=0.25, zero_init_residual=False))

    def positive_share(sn):
        return [float((z >= 0).float().mean()) for z in _sign_inputs(sn, spec, x)]

    deep_fixed, deep_old = positive_share(fixed)[-6:], positive_share(old)[-6:]
    assert all(0.2 < p < 0.8 for p in deep_fixed), deep_fixed
    assert max(deep_old) > 0.9, deep_old
