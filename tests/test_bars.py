"""BARS two-level search: the macro relaxation (depth mixture, width masks), the expected-OPs term, the
shrinking into the budget, and a tiny search with checkpoint / resume within the budget."""

import pytest
import torch

from bnhw.design.bars import (
    BARS_CHECKPOINT,
    BarsConfig,
    BarsNetwork,
    ExpectedOps,
    auto_spec_channels,
    ops_penalty,
    run_bars,
    shrink_to_budget,
)
from bnhw.design.bnas import edge_count, spec_ops
from bnhw.errors import BnhwError
from bnhw.quant.cellops import CELL_OPS
from bnhw.spec.cells import CellNetSpec, Genotype

TEMPLATE = dict(init_channels=8, resolution=16, in_channels=3, num_classes=10, stem_multiplier=3,
                inter_cell_skip=True)


def _uniform_genotype(normal_op: str, reduce_op: str, nodes: int = 2) -> Genotype:
    """Every edge the same op; node i reads inputs (0, 1) for i = 0 and (0, i + 1) after (so pre0 is read)."""
    def cell(op):
        return tuple(e for i in range(nodes) for e in ((op, 0), (op, 1 if i == 0 else i + 1)))
    return Genotype(cell(normal_op), cell(reduce_op))


def _one_hot(n: int, i: int) -> torch.Tensor:
    t = torch.zeros(n, dtype=torch.float64)
    t[i] = 1.0
    return t


@pytest.mark.parametrize("layout", [((0, 1, 2), (2, 1, 0)), ((1, 1, 0), (0, 2, 2))])
def test_expected_ops_is_exact_for_a_deterministic_architecture(layout):
    depths, widths = (1, 2, 3), (0.5, 0.75, 1.0)
    exp = ExpectedOps(depths, widths, 2, CELL_OPS, **TEMPLATE)
    di, wi = layout
    pd = torch.stack([_one_hot(3, i) for i in di])
    pw = torch.stack([_one_hot(3, i) for i in wi])
    n = edge_count(2)
    pn = torch.stack([_one_hot(len(CELL_OPS), CELL_OPS.index("bin_conv_5x5"))] * n)
    pr = torch.stack([_one_hot(len(CELL_OPS), CELL_OPS.index("max_pool_3x3"))] * n)
    spec = exp.spec(_uniform_genotype("bin_conv_5x5", "max_pool_3x3"), tuple(depths[i] for i in di),
                    tuple(widths[i] for i in wi))
    assert float(exp(pd, pw, pn, pr)) == pytest.approx(spec_ops(spec), rel=1e-12)


def test_expected_ops_is_differentiable_in_the_macro_parameters():
    torch.manual_seed(0)
    net = BarsNetwork(10, 3, init_channels=4, nodes=2, depths=(1, 2), widths=(0.5, 1.0))
    exp = ExpectedOps(net.depths, net.widths, 2, net.ops, **TEMPLATE)
    e = exp.of(net)
    smallest, largest = float(exp.fixed.min()), float(exp.fixed.max())
    ev = e.item()
    assert smallest < ev
    pen = ops_penalty(e, ev / 2)                 # over budget: a gradient
    pen.backward()
    for p in (net.beta_depth, net.beta_width):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # more depth / width costs more: the gradient lowers the larger choices' logits
    assert (net.beta_depth.grad[:, 1] > 0).all() and (net.beta_width.grad[:, 1] > 0).all()
    assert net.alphas_normal.grad is not None and net.alphas_normal.grad.abs().sum() > 0
    # without the micro gradient only the macro parameters receive one
    net.zero_grad(set_to_none=True)
    ops_penalty(exp.of(net, micro_grad=False), ev / 2).backward()
    assert net.alphas_normal.grad is None and net.beta_width.grad.abs().sum() > 0
    # within the budget the term is zero (hinge and log form)
    assert float(ops_penalty(e, ev * 2).detach()) == 0.0
    assert float(ops_penalty(e, ev * 2, "log").detach()) == 0.0
    assert float(ops_penalty(e, ev / 2, "log").detach()) == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert float(ops_penalty(e, ev * 2, "abs").detach()) == pytest.approx(0.5)       # two-sided
    assert largest > smallest


def test_width_mask_and_depth_mixture():
    torch.manual_seed(0)
    net = BarsNetwork(10, 3, init_channels=4, nodes=2, depths=(1, 2), widths=(0.5, 1.0))
    with torch.no_grad():
        net.beta_width.copy_(torch.tensor([[30.0, -30.0]] * 3))            # all stages: width 0.5
    _, pw = net.probs()
    m = net.mask(1, pw[1]).detach().flatten()                              # stage 1: 8 channels at full width
    assert torch.allclose(m[:4], torch.ones(4)) and float(m[4:].abs().max()) < 1e-12
    assert net.derive_layout() == ((1, 1, 1), (0.5, 0.5, 0.5))
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    assert net(x).shape == (4, 10)
    with torch.no_grad():
        net.beta_depth.copy_(torch.tensor([[-30.0, 30.0]] * 3))
    assert net.derive_layout()[0] == (2, 2, 2)


def test_auto_spec_channels_puts_the_budget_at_the_uniform_start():
    t = {k: v for k, v in TEMPLATE.items() if k != "init_channels"}
    depths, widths = (1, 2), (0.5, 1.0)

    def uniform(c):
        exp = ExpectedOps(depths, widths, 2, CELL_OPS, init_channels=c, **t)
        u = torch.full((3, 2), 0.5, dtype=torch.float64)
        pc = torch.full((edge_count(2), len(CELL_OPS)), 1 / len(CELL_OPS), dtype=torch.float64)
        return float(exp(u, u, pc, pc)), exp

    budget = uniform(20)[0] * 1.01
    c = auto_spec_channels(budget, depths, widths, 2, CELL_OPS, **t)
    assert c == 20 and uniform(c)[0] <= budget < uniform(c + 2)[0]
    exp = uniform(c)[1]
    assert float(exp.fixed.max()) > 0 and exp.smallest_fixed() < budget
    assert auto_spec_channels(1.0, depths, widths, 2, CELL_OPS, **t) == 2


G = _uniform_genotype("bin_conv_3x3", "bin_conv_3x3", nodes=4)


def test_shrink_to_budget_narrows_then_shortens():
    big = CellNetSpec(G, cells=11, init_channels=16, stage_cells=(3, 3, 3), stage_widths=(1.0, 1.0, 1.0))
    smallest = big.replace(cells=5, stage_cells=(1, 1, 1), stage_widths=(0.5, 0.5, 0.5))
    ops_big, ops_small = spec_ops(big), spec_ops(smallest)
    same, steps = shrink_to_budget(big, ops_big, (1, 2, 3), (0.5, 0.75, 1.0))
    assert same == big and steps == []
    budget = ops_small + 0.6 * (ops_big - ops_small)
    fit, steps = shrink_to_budget(big, budget, (1, 2, 3), (0.5, 0.75, 1.0))
    assert spec_ops(fit) <= budget and steps and "width" in steps[0]
    assert fit.cells == sum(fit.stage_cells) + 2
    # narrowing alone cannot reach a budget just above the smallest network: depth goes too
    fit, steps = shrink_to_budget(big, ops_small * 1.01, (1, 2, 3), (0.5, 0.75, 1.0))
    assert spec_ops(fit) <= ops_small * 1.01 and any("depth" in s for s in steps)
    assert all("width" in s for s in steps[:steps.index(next(s for s in steps if "depth" in s))])
    with pytest.raises(BnhwError, match="below the smallest BARS network"):
        shrink_to_budget(big, ops_small * 0.9, (1, 2, 3), (0.5, 0.75, 1.0))


TINY = dict(epochs=2, init_channels=4, nodes=2, batch_size=16, images_per_half=32, seed=5, depths=(1, 2),
            widths=(0.5, 1.0), spec_channels=8, spec_resolution=16)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """The tiny searches are dominated by small ops: one intra-op thread (see conftest)."""


@pytest.fixture(scope="module")
def tiny_data(digits):
    return digits(8, 96)


def _budget() -> float:
    """Between the smallest layout with the costliest cell and the largest layout with a conv cell."""
    gs = [_uniform_genotype(op, op) for op in ("bin_conv_5x5", "max_pool_3x3")]
    t = dict(TEMPLATE, init_channels=8)
    small = max(spec_ops(CellNetSpec(g, cells=5, stage_cells=(1, 1, 1), stage_widths=(0.5, 0.5, 0.5), **t))
                for g in gs)
    large = spec_ops(CellNetSpec(gs[0], cells=8, stage_cells=(2, 2, 2), stage_widths=(1.0, 1.0, 1.0), **t))
    assert small < large
    return small * 1.2


def test_tiny_bars_search_lands_within_the_budget_and_resumes(tmp_path, tiny_data):
    budget = _budget()
    cfg = BarsConfig(budget=budget, **TINY)
    events = []
    res = run_bars(tiny_data, cfg=cfg, out_dir=tmp_path / "a", progress=lambda e, i: events.append((e, i)))
    spec = res.spec
    assert spec_ops(spec) <= budget and res.ops == spec_ops(spec)
    assert len(spec.stage_cells) == 3 and set(spec.stage_cells) <= {1, 2} and set(spec.stage_widths) <= {0.5, 1.0}
    assert spec.resolution == 16 and spec.init_channels == 8 and spec.cells == sum(spec.stage_cells) + 2
    assert spec.genotype == res.genotype and res.genotype.nodes == 2
    CellNetSpec.from_dict(spec.to_dict())                                  # a valid, serialisable spec
    epochs = [i for e, i in events if e == "epoch"]
    assert [i["epoch"] for i in epochs] == [1, 2]
    assert {"expected_ops", "ops_penalty", "depth_probs", "width_probs", "spec", "spec_ops"} <= set(epochs[0])
    assert (tmp_path / "a" / BARS_CHECKPOINT).is_file()

    class Stop(Exception):
        pass

    def crash(event, info):
        if event == "epoch":
            raise Stop

    with pytest.raises(Stop):
        run_bars(tiny_data, cfg=cfg, out_dir=tmp_path / "b", progress=crash)
    again = run_bars(tiny_data, cfg=cfg, out_dir=tmp_path / "b", resume=True)
    assert again.spec == res.spec
    assert torch.equal(again.depth_probs, res.depth_probs) and torch.equal(again.width_probs, res.width_probs)
    assert torch.equal(again.alphas_normal, res.alphas_normal)


def test_bars_refuses_an_impossible_budget_before_training(tiny_data):
    events = []
    with pytest.raises(BnhwError, match="below the smallest BARS network") as e:
        run_bars(tiny_data, cfg=BarsConfig(budget=1e3, **TINY), progress=lambda ev, i: events.append(ev))
    assert events == [] and "\n" not in str(e.value)
    with pytest.raises(BnhwError, match="budget"):
        run_bars(tiny_data, cfg=BarsConfig(**TINY))
