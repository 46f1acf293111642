"""BNAS v2 search: Eq. 5 (Zeroise-aware derivation), Eq. 6 (diversity regularizer), the search network
and its ablations, a tiny search with checkpoint / resume, and stacking a genotype within an OPs budget."""

import math

import pytest
import torch

from bnhw.design.bnas import (
    BNAS_CHECKPOINT,
    BnasConfig,
    SearchNetwork,
    candidate_ops,
    derive_genotype,
    diversity_term,
    edge_count,
    entropy,
    fit_to_budget,
    random_genotype,
    run_bnas,
    run_op,
    select_op,
    spec_ops,
)
from bnhw.errors import BnhwError
from bnhw.quant.cellops import CELL_OPS, SEP_OPS, ZEROISE, make_op
from bnhw.spec.cells import Genotype

OPS = CELL_OPS   # zeroise first


def probs(**kw: float) -> torch.Tensor:
    """A probability vector over CELL_OPS with the given entries, the rest sharing what is left."""
    p = torch.zeros(len(OPS), dtype=torch.float64)
    for k, v in kw.items():
        p[OPS.index(k)] = v
    rest = [i for i, o in enumerate(OPS) if o not in kw]
    p[rest] = (1 - sum(kw.values())) / len(rest)
    return p


# ----------------------------------------------------------------------------- Eq. 5
def test_gamma_one_zeroise_wins_when_it_is_the_max():
    op, score = select_op(probs(zeroise=0.4, bin_conv_3x3=0.3), OPS, 1.0)
    assert (op, score) == (ZEROISE, pytest.approx(0.4))
    op, score = select_op(probs(zeroise=0.3, bin_conv_3x3=0.4), OPS, 1.0)
    assert (op, score) == ("bin_conv_3x3", pytest.approx(0.4))


@pytest.mark.parametrize("gamma", [1.5, 3.0, 7.0])
def test_gamma_boundary_is_exact(gamma):
    pz = 0.6
    eps = 1e-9
    # just above p_z / gamma: the operation wins, with its own probability as p*
    above = probs(zeroise=pz, bin_dil_conv_5x5=pz / gamma + eps)
    op, score = select_op(above, OPS, gamma)
    assert op == "bin_dil_conv_5x5" and score == float(above[OPS.index(op)])
    # just below: zeroise wins with p* = p_z / gamma
    below = probs(zeroise=pz, bin_dil_conv_5x5=pz / gamma - eps)
    op, score = select_op(below, OPS, gamma)
    assert op == ZEROISE and score == pytest.approx(pz / gamma)
    # exactly at the boundary (a tie) the other operation wins: zeroise needs p_z / gamma strictly above
    assert select_op(probs(zeroise=pz, bin_dil_conv_5x5=pz / gamma), OPS, gamma)[0] == "bin_dil_conv_5x5"
    # the same probabilities with gamma = 1: zeroise, whatever the other op
    assert select_op(above, OPS, 1.0)[0] == ZEROISE


def test_large_gamma_never_selects_zeroise_unless_alone():
    p = probs(zeroise=0.999)                       # every other op ~1.7e-4
    assert select_op(p, OPS, 1e6)[0] != ZEROISE
    assert select_op(p, OPS, math.inf)[0] != ZEROISE
    assert select_op(torch.tensor([1.0]), (ZEROISE,), math.inf)[0] == ZEROISE
    # without zeroise among the candidates: plain argmax, ties to the first
    assert select_op(torch.tensor([0.2, 0.5, 0.3]), ("max_pool_3x3", "bin_conv_3x3", "avg_pool_3x3"), 3.0) == (
        "bin_conv_3x3", pytest.approx(0.5))
    assert select_op(torch.tensor([0.5, 0.5]), ("avg_pool_3x3", "bin_conv_3x3"))[0] == "avg_pool_3x3"
    with pytest.raises(BnhwError):
        select_op(torch.tensor([0.5, 0.5]), OPS)


def _alphas(rows: list[dict]) -> torch.Tensor:
    """Architecture parameters whose softmax is the given per-edge probabilities."""
    return torch.stack([probs(**r).log() for r in rows]).float()


def test_derive_genotype_from_hand_set_alphas():
    # nodes = 2: edges (node 0: inputs 0, 1), (node 1: inputs 0, 1, 2)
    normal = _alphas([
        {"zeroise": 0.5, "bin_conv_3x3": 0.3},          # n0 <- 0: zeroise 0.5
        {"bin_conv_5x5": 0.6},                          # n0 <- 1: conv5 0.6
        {"max_pool_3x3": 0.45},                         # n1 <- 0: max pool 0.45
        {"zeroise": 0.9},                               # n1 <- 1: zeroise 0.9
        {"bin_dil_conv_3x3": 0.4, "zeroise": 0.35},     # n1 <- 2: dil conv 0.4
    ])
    reduce = _alphas([
        {"avg_pool_3x3": 0.7},
        {"bin_conv_3x3": 0.5},
        {"bin_conv_3x3": 0.2},
        {"bin_dil_conv_5x5": 0.3},
        {"bin_conv_5x5": 0.8},
    ])
    g = derive_genotype(normal, reduce, OPS, gamma=1.0)
    # zeroise kept where it wins; node 1 keeps its two strongest edges (zeroise<1 0.9, max_pool<0 0.45)
    assert g == Genotype(normal=(("zeroise", 0), ("bin_conv_5x5", 1), ("max_pool_3x3", 0), ("zeroise", 1)),
                         reduce=(("avg_pool_3x3", 0), ("bin_conv_3x3", 1), ("bin_dil_conv_5x5", 1),
                                 ("bin_conv_5x5", 2)))
    # gamma = 3: n0 <- 0: 0.5 / 3 < 0.3 -> bin_conv_3x3; n1 <- 1: zeroise still wins its edge (0.9 / 3 = 0.3
    # against 0.017) but its p* of 0.3 now ranks below max_pool<0 (0.45) and dil_conv<2 (0.4)
    g3 = derive_genotype(normal, reduce, OPS, gamma=3.0)
    assert g3.normal == (("bin_conv_3x3", 0), ("bin_conv_5x5", 1), ("max_pool_3x3", 0), ("bin_dil_conv_3x3", 2))
    assert g3.reduce == g.reduce
    with pytest.raises(BnhwError):
        derive_genotype(normal[:4], reduce[:4], OPS)


def test_random_genotype_covers_what_a_derivation_can_return():
    ops = candidate_ops()
    gs = [random_genotype(ops, seed=s) for s in range(200)]
    assert random_genotype(ops, seed=3) == gs[3] and len(set(gs)) == 200       # seeded, and varied
    seen_ops, seen_inputs = set(), {i: set() for i in range(4)}
    for g in gs:
        for cell in (g.normal, g.reduce):
            for i in range(4):
                (o1, j1), (o2, j2) = cell[2 * i], cell[2 * i + 1]
                assert j1 < j2 < 2 + i                   # two distinct inputs, listed by input (as derived)
                seen_inputs[i].update((j1, j2))
                seen_ops.update((o1, o2))
    assert seen_ops == set(ops) and all(seen_inputs[i] == set(range(2 + i)) for i in range(4))
    assert all(o != ZEROISE for g in (random_genotype(candidate_ops(zeroise=False), seed=s) for s in range(50))
               for o, _ in g.normal + g.reduce)


# ----------------------------------------------------------------------------- Eq. 6
def test_diversity_term_value_decay_and_lambda():
    n = edge_count(4)
    alphas = [torch.zeros(n, 7), torch.zeros(n, 7)]               # uniform: log(7) per edge
    h = 2 * n * math.log(7)
    assert float(entropy(alphas)) == pytest.approx(h, rel=1e-6)
    assert float(diversity_term(alphas, 0.0, 1.0, 7.7)) == pytest.approx(-h, rel=1e-6)
    assert float(diversity_term(alphas, 7.7, 1.0, 7.7)) == pytest.approx(-h * math.exp(-1), rel=1e-6)
    assert float(diversity_term(alphas, 3.0, 0.5, 2.0)) == pytest.approx(-0.5 * h * math.exp(-1.5), rel=1e-6)
    assert float(diversity_term(alphas, 2.0, 0.0, 7.7)) == 0.0
    # a peaked edge has less entropy: the term is less negative
    peaked = [torch.zeros(1, 7)]
    peaked[0][0, 3] = 5.0
    assert 0 > float(diversity_term(peaked, 0, 1, 7.7)) > -math.log(7)


def test_diversity_gradient_matches_the_closed_form():
    torch.manual_seed(0)
    a = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    lam, tau, t = 0.7, 7.7, 2.5
    diversity_term([a, b], t, lam, tau).backward()
    for x in (a, b):
        p = torch.softmax(x.detach(), -1)
        h_edge = -(p * p.log()).sum(-1, keepdim=True)
        d_h = -p * (p.log() + h_edge)                              # dH/dalpha_i per edge
        assert torch.allclose(x.grad, -lam * math.exp(-t / tau) * d_h, atol=1e-12)
    # finite differences on one coordinate
    eps = 1e-6
    with torch.no_grad():
        ap, am = a.detach().clone(), a.detach().clone()
        ap[2, 4] += eps
        am[2, 4] -= eps
        fd = (float(diversity_term([ap, b.detach()], t, lam, tau))
              - float(diversity_term([am, b.detach()], t, lam, tau))) / (2 * eps)
    assert fd == pytest.approx(float(a.grad[2, 4]), abs=1e-7)


# ----------------------------------------------------------------------------- the search network
def test_candidate_ops_and_ablation_switches():
    assert candidate_ops() == CELL_OPS
    assert ZEROISE not in candidate_ops(zeroise=False)
    assert candidate_ops(separable=True) == CELL_OPS + SEP_OPS
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    outs = {}
    for skip in (True, False):
        torch.manual_seed(1)
        net = SearchNetwork(10, 3, cells=3, init_channels=4, nodes=2, ops=candidate_ops(separable=True),
                            inter_cell_skip=skip)
        assert net.alphas_normal.shape == (edge_count(2), len(CELL_OPS) + 2)
        outs[skip] = net(x)
        assert outs[skip].shape == (4, 10)
    assert not torch.allclose(outs[True], outs[False])
    # the architecture parameters are separate from the weights
    ids = {id(p) for p in net.weight_parameters()}
    assert all(id(a) not in ids for a in net.arch_parameters())
    assert len(ids) + 2 == len(list(net.parameters()))


def test_masked_binary_conv_ignores_masked_channels():
    torch.manual_seed(0)
    op = make_op("bin_conv_3x3", 4, 1, affine=False).eval()
    x = torch.randn(2, 4, 6, 6)
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0]).view(1, 4, 1, 1)
    y = x.clone()
    y[:, 2] = torch.randn(2, 6, 6)
    assert torch.equal(run_op(op, x, mask), run_op(op, y, mask))
    assert not torch.equal(run_op(op, x), run_op(op, y))


# ----------------------------------------------------------------------------- tiny search
TINY = dict(epochs=2, cells=3, init_channels=4, nodes=2, batch_size=16, images_per_half=32, seed=3)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """The tiny searches are dominated by small ops: one intra-op thread (see conftest)."""


@pytest.fixture(scope="module")
def tiny_data(digits):
    return digits(8, 96)


def test_tiny_search_resumes_to_the_uninterrupted_result(tmp_path, tiny_data):
    cfg = BnasConfig(**TINY)
    events = []
    full = run_bnas(tiny_data, cfg=cfg, out_dir=tmp_path / "a", progress=lambda e, i: events.append((e, i)))
    epochs = [i for e, i in events if e == "epoch"]
    assert [i["epoch"] for i in epochs] == [1, 2]
    assert {"loss", "arch_loss", "entropy", "diversity", "genotype", "genotype_dict", "alphas"} <= set(epochs[0])
    assert epochs[0]["diversity"] == pytest.approx(-epochs[0]["entropy"])      # t = 0: factor 1
    assert any(e == "step" for e, _ in events)
    assert (tmp_path / "a" / BNAS_CHECKPOINT).is_file()
    g = full.genotype
    g.validate()
    assert g.nodes == 2 and g.ops() <= set(CELL_OPS)
    assert Genotype.from_dict(epochs[-1]["genotype_dict"]) == g
    assert len(full.alphas_history) == 2 and full.alphas_history[-1]["normal"] == full.alphas_normal.tolist()

    class Stop(Exception):
        pass

    def crash(event, info):
        if event == "epoch" and info["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        run_bnas(tiny_data, cfg=cfg, out_dir=tmp_path / "b", progress=crash)
    resumed_events = []
    again = run_bnas(tiny_data, cfg=cfg, out_dir=tmp_path / "b", resume=True,
                     progress=lambda e, i: resumed_events.append((e, i)))
    assert resumed_events[0] == ("resumed", {"epoch": 1})
    assert torch.equal(again.alphas_normal, full.alphas_normal)
    assert torch.equal(again.alphas_reduce, full.alphas_reduce)
    assert again.genotype == full.genotype
    assert [h["loss"] for h in again.history] == [h["loss"] for h in full.history]
    sa, sb = full.network.state_dict(), again.network.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # other settings cannot resume this checkpoint
    with pytest.raises(BnhwError, match="other settings"):
        run_bnas(tiny_data, cfg=BnasConfig(**{**TINY, "lam": 0.5}), out_dir=tmp_path / "b", resume=True)


def test_no_zeroise_never_derives_zeroise(tiny_data):
    cfg = BnasConfig(**{**TINY, "epochs": 1, "zeroise": False, "diversity": False})
    res = run_bnas(tiny_data, cfg=cfg)
    assert ZEROISE not in res.ops and ZEROISE not in res.genotype.ops()
    assert res.history[0]["diversity"] == 0.0
    # whatever the alphas: strongly favouring the first candidate never brings zeroise back
    a = torch.full((edge_count(2), len(res.ops)), -5.0)
    a[:, 0] = 5.0
    assert ZEROISE not in derive_genotype(a, a, res.ops, gamma=0.01).ops()


# ----------------------------------------------------------------------------- OPs budget
GENOTYPE = Genotype(normal=(("bin_conv_3x3", 0), ("bin_conv_3x3", 1), ("zeroise", 0), ("max_pool_3x3", 2)),
                    reduce=(("max_pool_3x3", 0), ("bin_conv_5x5", 1), ("bin_dil_conv_3x3", 2), ("zeroise", 1)))


def test_fit_to_budget_picks_the_largest_fitting_network():
    budget = 3e6
    spec = fit_to_budget(GENOTYPE, budget, cells=8)
    assert spec.cells == 8 and spec_ops(spec) <= budget
    assert spec_ops(spec.replace(init_channels=spec.init_channels + 2)) > budget
    ladder = fit_to_budget(GENOTYPE, 20e6, num_classes=10)
    assert ladder.cells in (10, 11, 12, 15, 16, 20) and spec_ops(ladder) <= 20e6
    assert spec_ops(ladder.replace(init_channels=ladder.init_channels + 2)) > 20e6
    with pytest.raises(BnhwError, match="below the smallest network") as e:
        fit_to_budget(GENOTYPE, 1e3)
    assert "\n" not in str(e.value)
