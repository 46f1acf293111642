"""Evolutionary Pareto search with a synthetic objective (no training needed)."""

import math

import pytest

from bnhw.design.constraints import OpsBudget
from bnhw.design.evolution import (
    EvolutionConfig,
    EvolutionSearch,
    SearchState,
    best_under,
    bucket_of,
    pareto_front,
    spec_key,
)
from bnhw.errors import BnhwError
from bnhw.estimators.ops import ops_of
from bnhw.spec.space import get_space


def synthetic_score(spec):
    """Larger is better, grows with OPs but penalises groups: a known optimum to climb to."""
    ops = ops_of(spec)
    groups = sum(b.groups for s in spec.stages for b in s.blocks)
    return math.log(ops) - 0.01 * groups


class Counter:
    def __init__(self):
        self.calls = []

    def __call__(self, specs):
        self.calls.extend(spec_key(s) for s in specs)
        return [synthetic_score(s) for s in specs]


def _search(budget=57e6, gens=4, seed=0, evaluate=None, bucket=5.0, space="nasbnn-imagenet", constraints=None):
    cfg = EvolutionConfig(population=12, generations=gens, bucket_mops=bucket)
    return EvolutionSearch(get_space(space), constraints or [OpsBudget(budget)], evaluate or Counter(), cfg, seed)


def test_search_respects_budget_and_never_reevaluates():
    ev = Counter()
    s = _search(evaluate=ev)
    state = s.run()
    assert len(ev.calls) == len(set(ev.calls)) == len(state.evaluated)
    assert all(c.ops <= 57e6 for c in state.evaluated.values())
    best = best_under(state.evaluated.values(), s.constraints)
    assert best.ops <= 57e6
    # evolution improves on the random initial population
    gen0 = max(c.score for c in state.evaluated.values() if c.generation == 0)
    assert best.score >= gen0


def test_pareto_front_is_non_dominated():
    state = _search().run()
    front = pareto_front(state.evaluated.values())
    assert front
    for f in front:
        for c in state.evaluated.values():
            assert not (c.score > f.score and c.ops < f.ops)
    assert [f.ops for f in front] == sorted(f.ops for f in front)


@pytest.mark.parametrize("step", [0.25, 0.5, 1.0, 7.5])
def test_buckets_below_one_mops(step):
    assert bucket_of(0.26e6, 0.25) == 1 and bucket_of(0.24e6, 0.25) == 0
    # the CIFAR space spans < 2 MOPs: sub-MOPs buckets must still separate candidates
    s = _search(budget=1.0e6, gens=2, bucket=step, space="nasbnn-cifar")
    state = s.run()
    nb = len({bucket_of(c.ops, step) for c in state.evaluated.values()})
    assert nb >= (2 if step < 1 else 1)
    assert len(s.parents(state)) <= nb * s.config.parents_per_bucket


def test_resume_gives_the_same_result_without_rescoring(tmp_path):
    full = _search(gens=4).run()
    path = tmp_path / "state.json"
    ev1 = Counter()
    _search(gens=2, evaluate=ev1).run(state_path=path)
    ev2 = Counter()
    resumed = _search(gens=4, evaluate=ev2).run(state_path=path, resume=True)
    assert not set(ev1.calls) & set(ev2.calls)       # nothing scored twice
    assert set(resumed.evaluated) == set(full.evaluated)
    assert resumed.generation == 4


def test_budget_below_smallest_is_a_clear_error():
    with pytest.raises(BnhwError, match="below the smallest subnet"):
        _search(budget=10e6).run()


def test_corrupted_state(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{"version": 1, "generation": 3')
    with pytest.raises(BnhwError, match="corrupted"):
        _search().run(state_path=p, resume=True)
    with pytest.raises(BnhwError, match="corrupted"):
        SearchState.from_json('{"version": 99}')


def test_extra_constraints_plug_in():
    class MaxDepth:
        name, unit = "depth", "blocks"

        def measure(self, spec):
            return sum(spec.depths)

        def feasible(self, v):
            return v <= 17

        def describe(self):
            return "depth <= 17"

    s = _search(constraints=[OpsBudget(200e6), MaxDepth()], gens=2)
    state = s.run()
    assert all(c.metrics["depth"] <= 17 and c.ops <= 200e6 for c in state.evaluated.values())
