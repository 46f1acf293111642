"""Shared fixtures: hand-built specs, digit images, and a parameter perturbation."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

# Several pytest-xdist workers share the cores: one OpenMP / torch thread per worker (and per subprocess a
# test starts, which inherits the environment).  Two workers with two spinning OpenMP threads each on two
# cores run small torch workloads several times slower than one thread each.  Set before torch is imported.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_var] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn

from bnhw.data import digits_images
from bnhw.spec import ArchSpec


@pytest.fixture(scope="session")
def make_spec() -> Callable[..., ArchSpec]:
    """Build an :class:`ArchSpec` by hand from ``(channels, kernel, groups, stride)`` tuples per stage.

    ``make_spec([[(16, 3, 1, 1), (24, 3, 2, 2)], [(48, 5, 4, 2)]], stem=16, residual="fixed")``.
    """

    def make(stages: list[list[tuple[int, int, int, int]]], *, stem: int = 16, stem_stride: int = 1,
             resolution: int = 32, num_classes: int = 10, in_channels: int = 3,
             residual: str = "float") -> ArchSpec:
        return ArchSpec.from_dict({
            "resolution": resolution,
            "in_channels": in_channels,
            "num_classes": num_classes,
            "stem": {"channels": stem, "kernel": 3, "stride": stem_stride},
            "stages": [{"blocks": [{"channels": c, "kernel": k, "groups": g, "stride": s}
                                   for c, k, g, s in stage]} for stage in stages],
            "precision": {"residual": residual},
        })

    return make


@pytest.fixture(scope="session")
def digits() -> Callable[..., tuple[Tensor, Tensor]]:
    """``digits(resolution, n, channels=3)``: cached real digit images in [-1, 1] and labels."""
    return functools.lru_cache(maxsize=None)(
        lambda resolution, n, channels=3: digits_images(resolution, n, channels=channels))


@pytest.fixture(scope="session")
def perturb() -> Callable[[nn.Module, int], nn.Module]:
    """``perturb(model, seed)``: move thresholds, RPReLU and BN affine parameters off their defaults.

    Thresholds and RPReLU shifts get N(0, 0.2) / N(0, 0.1) noise, PReLU slopes
    U(0.05, 0.5), BN gammas U(0.5, 1.5) and betas N(0, 0.1), so that every
    learnable of the real-valued path is exercised (the defaults are 0 and 1).
    """
    from bnhw.quant.layers import FoldedBatchNorm2d, LearnableSign, RPReLU

    @torch.no_grad()
    def run(model: nn.Module, seed: int = 0) -> nn.Module:
        g = torch.Generator().manual_seed(seed)

        def noise(t: Tensor, std: float) -> None:
            t.add_(torch.randn(t.shape, generator=g) * std)

        for m in model.modules():
            if isinstance(m, LearnableSign):
                noise(m.bias, 0.2)
            elif isinstance(m, RPReLU):
                noise(m.shift_in, 0.1)
                noise(m.shift_out, 0.1)
                m.prelu.weight.copy_(0.05 + 0.45 * torch.rand(m.prelu.weight.shape, generator=g))
            elif isinstance(m, FoldedBatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                noise(m.bias, 0.1)
        return model

    return run


if os.environ.get("OMP_NUM_THREADS") == "1":
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module: small CPU workloads (tiny searches, small models) are
    dominated by small ops, and two xdist workers with two threads each oversubscribe two cores
    (several times slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    """The README's command chains (the longest tests, up to ~1 min each) first, so that pytest-xdist
    (``--dist worksteal``, see the Makefile) spreads them over the workers instead of ending on one."""
    items.sort(key=lambda it: 0 if it.nodeid.startswith("tests/test_readme_commands.py::test_readme_commands_run")
               else 1)
