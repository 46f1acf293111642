"""The ranking check of a search: the stand-alone sample and Kendall's tau."""

import random

import pytest

from bnhw.design.evolution import Candidate, spec_key
from bnhw.design.ranking import kendall, spread_sample
from bnhw.estimators.ops import ops_of
from bnhw.spec.space import get_space


def _cands(n, seed=0):
    sp = get_space("nasbnn-cifar")
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        s = sp.sample(rng)
        if spec_key(s) in seen:
            continue
        seen.add(spec_key(s))
        out.append(Candidate(s, rng.random(), {"ops": ops_of(s)}, 0))
    return out


@pytest.mark.parametrize("best_index", [0, 17, 39])
def test_spread_sample_covers_the_ops_range_and_holds_the_best(best_index):
    cands = _cands(40)
    by_ops = sorted(cands, key=lambda c: c.ops)
    best = by_ops[best_index]
    picked = spread_sample(cands, best, 8)
    assert len(picked) == 8 and len({spec_key(c.spec) for c in picked}) == 8
    assert any(spec_key(c.spec) == spec_key(best.spec) for c in picked)
    ops = [c.ops for c in picked]
    assert ops == sorted(ops)
    # both ends of the range are there unless the best replaced one of them
    assert ops[0] == by_ops[0].ops or best_index == 0 or ops[0] == best.ops
    assert ops[-1] == by_ops[-1].ops or ops[-1] == best.ops
    # spread: every eighth of the OPs-sorted list holds a pick (not eight neighbours)
    ranks = sorted(by_ops.index(c) for c in picked)
    assert ranks[-1] - ranks[0] >= 30


def test_spread_sample_with_few_or_repeated_candidates():
    cands = _cands(5)
    assert len(spread_sample(cands + cands, cands[2], 8)) == 5         # duplicates count once
    assert spread_sample(cands, cands[0], 0) == []
    one = spread_sample(cands, cands[3], 1)
    assert [spec_key(c.spec) for c in one] == [spec_key(cands[3].spec)]


def test_kendall_tau_and_p_value():
    a = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    same = kendall(a, [x * 2 for x in a])
    assert same.tau == pytest.approx(1.0) and same.p_value < 0.001 and same.n == 8
    rev = kendall(a, a[::-1])
    assert rev.tau == pytest.approx(-1.0)
    # one swapped neighbour pair: 27 of 28 pairs concordant
    swapped = kendall(a, [0.1, 0.2, 0.4, 0.3, 0.5, 0.6, 0.7, 0.8])
    assert swapped.tau == pytest.approx((27 - 1) / 28)
    # undefined cases are tau 0, p 1, never NaN
    flat = kendall(a, [0.5] * 8)
    assert (flat.tau, flat.p_value) == (0.0, 1.0)
    assert kendall([0.3], [0.4]).tau == 0.0
    with pytest.raises(ValueError):
        kendall(a, a[:3])
    assert "Kendall tau +1.000" in same.describe()
