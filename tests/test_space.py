"""Search spaces: sizes, canonical members, and property tests showing that
sampling, mutation and crossover never leave the (Non-Decreasing) space."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnhw.errors import BnhwError, SpecError
from bnhw.estimators.ops import ops_of
from bnhw.spec import ArchSpec
from bnhw.spec.space import SPACES, get_space

SPACE_NAMES = list(SPACES)


def _brute_force_size(sp, nd):
    """Enumerate every architecture of a tiny space (independent of the DP)."""
    import itertools

    def stage_seqs(sc):
        for d in sc.depths:
            yield from itertools.product(itertools.product(sc.widths, sc.kernels, sc.groups), repeat=d)

    n = 0
    for stem in sp.stem_widths:
        for combo in itertools.product(*(list(stage_seqs(sc)) for sc in sp.stages)):
            prev, ok = stem, True
            for layers in combo:
                for w, _, g in layers:
                    if prev % g or (nd and w < prev):
                        ok = False
                        break
                    prev = w
                if not ok:
                    break
            n += ok
    return n


def test_paper_space_sizes():
    sp = get_space("nasbnn-imagenet")
    # paper 003 Sec. 3.2: ~4.0e21 without the ND constraint, 3.3e17 with it
    assert sp.size(non_decreasing=False) == pytest.approx(4.0e21, rel=0.02)
    assert sp.size(non_decreasing=True) == pytest.approx(3.3e17, rel=0.02)
    # closed form without ND: stem x prod_stages sum_d options^d
    closed = 3 * (3**2 + 3**3) * (12**2 + 12**3) ** 3 * (12**8 + 12**9)
    assert sp.size(non_decreasing=False) == closed


def test_size_dp_matches_enumeration_on_a_tiny_space():
    from bnhw.spec.space import SearchSpace, StageChoices

    tiny = SearchSpace(
        name="tiny", description="", resolution=16, num_classes=2, stem_widths=(4, 8),
        stages=(StageChoices((1, 2), (4, 8, 12), (3,), (1, 2), 1), StageChoices((1, 2), (8, 12, 16), (3, 5), (2, 4), 2)))
    for nd in (False, True):
        assert tiny.size(non_decreasing=nd) == _brute_force_size(tiny, nd)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_smallest_and_largest_bound_the_space(name):
    sp = get_space(name)
    lo, hi = ops_of(sp.smallest()), ops_of(sp.largest())
    rng = random.Random(1)
    for _ in range(200):
        o = ops_of(sp.sample(rng))
        assert lo <= o <= hi
    assert sp.contains(sp.smallest()) and sp.contains(sp.largest())


spaces = st.sampled_from(SPACE_NAMES)
seeds = st.integers(0, 2**32 - 1)
probs = st.floats(0.0, 1.0)


def _check(sp, spec):
    sp.validate(spec)                          # raises if outside the space
    assert sp.satisfies_nd(spec)
    assert ArchSpec.from_json(spec.to_json()) == spec


@settings(max_examples=1500, deadline=None)
@given(spaces, seeds)
def test_random_samples_are_valid(name, seed):
    sp = get_space(name)
    _check(sp, sp.sample(random.Random(seed)))


@settings(max_examples=1500, deadline=None)
@given(spaces, seeds, probs)
def test_mutations_are_valid(name, seed, prob):
    sp = get_space(name)
    rng = random.Random(seed)
    spec = sp.sample(rng)
    for _ in range(3):
        spec = sp.mutate(spec, rng, prob=prob)
        _check(sp, spec)


@settings(max_examples=1500, deadline=None)
@given(spaces, seeds)
def test_crossovers_are_valid(name, seed):
    sp = get_space(name)
    rng = random.Random(seed)
    a, b = sp.sample(rng), sp.sample(rng)
    child = sp.crossover(a, b, rng)
    _check(sp, child)
    # each stage's depth comes from one of the parents
    for i, d in enumerate(child.depths):
        assert d in (a.depths[i], b.depths[i])


def test_mutation_explores_and_prob_zero_is_identity():
    sp = get_space("nasbnn-imagenet")
    rng = random.Random(0)
    spec = sp.sample(rng)
    assert sp.mutate(spec, rng, prob=0.0) == spec
    children = {sp.mutate(spec, rng, prob=0.3) for _ in range(50)}
    assert len(children) > 40


def test_sampling_without_nd_reaches_decreasing_widths():
    sp = get_space("nasbnn-imagenet").with_constraint(False)
    rng = random.Random(0)
    specs = [sp.sample(rng) for _ in range(200)]
    assert any(not sp.satisfies_nd(s) for s in specs)
    nd = get_space("nasbnn-imagenet")
    with pytest.raises(SpecError, match="Non-Decreasing"):
        nd.validate(next(s for s in specs if not sp.satisfies_nd(s)))


def test_unknown_space():
    with pytest.raises(BnhwError, match="unknown search space 'x'.*nasbnn-imagenet"):
        get_space("x")
