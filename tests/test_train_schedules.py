"""The training schemes of ``fit`` (BNAS v2 paper 001 Sec. 5.2 / 6.1): their optimizers, learning-rate
schedules, and resuming a one-cycle run after a crash."""

import math

import pytest
import torch

from bnhw.flows.train import ONECYCLE_MIN_RATIO, FitConfig, _optimizer, fit, one_cycle
from bnhw.quant.checkpoint import load_model
from bnhw.spec import load_spec


def lrs(cfg: FitConfig, total: int) -> list[float]:
    opt, sched = _optimizer(torch.nn.Linear(2, 2), cfg, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_one_cycle_rises_then_falls_between_the_papers_rates():
    total = 100
    lr = lrs(FitConfig(optimizer="sgd-onecycle"), total)
    assert lr[0] == pytest.approx(4e-4) and max(lr) == pytest.approx(5e-2)
    peak = lr.index(max(lr))
    assert peak == 30                                           # 30% warm-up
    assert all(a < b for a, b in zip(lr[:peak], lr[1:peak + 1]))
    assert all(a > b for a, b in zip(lr[peak:], lr[peak + 1:]))
    assert one_cycle(total, total) == pytest.approx(ONECYCLE_MIN_RATIO)
    assert one_cycle(10 * total, total) == pytest.approx(ONECYCLE_MIN_RATIO)   # clamped past the end
    assert one_cycle(15, total) == pytest.approx(ONECYCLE_MIN_RATIO + (1 - ONECYCLE_MIN_RATIO) / 2)


def test_optimizers_of_the_schemes():
    model = torch.nn.Linear(2, 2)
    opt, _ = _optimizer(model, FitConfig(optimizer="sgd-onecycle"), 10)
    g = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD) and g["momentum"] == 0.9 and g["weight_decay"] == 3e-6
    opt, _ = _optimizer(model, FitConfig(optimizer="sgd-restarts"), 10)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["weight_decay"] == 3e-5
    opt, _ = _optimizer(model, FitConfig(optimizer="adam"), 10)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["weight_decay"] == 0.0


def test_warm_restarts_every_fifth_of_the_run():
    lr = lrs(FitConfig(optimizer="sgd-restarts"), 50)
    assert [i for i in range(50) if lr[i] == pytest.approx(0.1)] == [0, 10, 20, 30, 40]
    assert lr[5] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 5 / 10)))


def test_one_cycle_run_resumes_after_a_crash_to_the_same_weights(tmp_path, one_torch_thread):
    spec = load_spec("nasbnn-cifar-smallest")
    cfg = FitConfig(epochs=2, train_images=64, batch_size=32, optimizer="sgd-onecycle", resolution=16)
    straight = fit(spec, cfg, tmp_path / "a")

    class Crash(Exception):
        pass

    def crash_after_first(name, info):
        if name == "epoch":
            raise Crash

    with pytest.raises(Crash):
        fit(spec, cfg, tmp_path / "b", progress=crash_after_first)
    resumed = fit(spec, cfg, tmp_path / "b", resume=True)
    assert resumed["history"] == straight["history"]
    a, b = load_model(tmp_path / "a" / "model.pt"), load_model(tmp_path / "b" / "model.pt")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
