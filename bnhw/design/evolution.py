"""Evolutionary search for the accuracy / OPs Pareto front (NAS-BNN Sec. 3,
after once-for-all's evolution finder), self-contained and resumable.

* The population lives in a search space; every child comes from
  ``space.mutate`` or ``space.crossover`` and so never leaves the space.
* Constraints (:mod:`bnhw.design.constraints`) filter candidates before they
  are scored; the OPs budget is one of them, latency / FPS models of a
  hardware target are others.
* Parents are the best ``parents_per_bucket`` candidates of every OPs bucket
  (``bucket_mops`` wide, a float: steps below 1 MOPs work), so the whole
  front improves, not only its top.
* Every architecture is scored once (a cache keyed by the canonical spec);
  ``evaluate`` receives a batch, so callers can spread it over ranks.
* After each generation the whole state is written atomically; a search
  started again with ``resume=True`` continues after the last finished
  generation and re-scores nothing.
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import distributed as dist_util
from ..errors import BnhwError
from ..estimators.ops import format_ops, ops_of
from ..spec import ArchSpec, atomic_write_text
from ..spec.space import SearchSpace
from .constraints import Constraint, all_feasible, measure_all

STATE_VERSION = 1


def spec_key(spec: ArchSpec) -> str:
    """Canonical identity of an architecture (its name does not count)."""
    return spec.replace(name="").to_json(indent=None)


@dataclass
class Candidate:
    spec: ArchSpec
    score: float                      # the objective (accuracy, higher is better)
    metrics: dict[str, float]         # constraint values; always has "ops"
    generation: int

    @property
    def ops(self) -> float:
        return self.metrics["ops"]

    def to_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "score": self.score, "metrics": self.metrics,
                "generation": self.generation}

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        return cls(ArchSpec.from_dict(d["spec"]), float(d["score"]), {k: float(v) for k, v in d["metrics"].items()},
                   int(d["generation"]))


@dataclass
class EvolutionConfig:
    population: int = 32
    generations: int = 8
    mutate_prob: float = 0.2
    mutation_ratio: float = 0.5       # share of children made by mutation (the rest by crossover)
    parents_per_bucket: int = 2
    bucket_mops: float = 5.0          # width of an OPs bucket in MOPs (may be < 1)
    max_attempts: int = 200           # tries to draw one new feasible, unseen child

    def validate(self) -> None:
        if self.population < 2:
            raise BnhwError(f"population must be >= 2, got {self.population}")
        if self.generations < 0:
            raise BnhwError(f"generations must be >= 0, got {self.generations}")
        if not (self.bucket_mops > 0 and math.isfinite(self.bucket_mops)):
            raise BnhwError(f"bucket width must be a positive number of MOPs, got {self.bucket_mops}")
        if not 0 <= self.mutation_ratio <= 1 or not 0 <= self.mutate_prob <= 1:
            raise BnhwError("mutation ratio and probability must lie in [0, 1]")


@dataclass
class SearchState:
    generation: int = 0               # generations finished
    evaluated: dict[str, Candidate] = field(default_factory=dict)
    population: list[str] = field(default_factory=list)
    rng_state: tuple[Any, ...] | None = None   # random.Random.getstate(); set by every run

    def to_json(self) -> str:
        assert self.rng_state is not None  # EvolutionSearch.run creates the state with its rng's state
        v, internal, gauss = self.rng_state
        return json.dumps({
            "version": STATE_VERSION, "generation": self.generation, "population": self.population,
            "rng_state": [v, list(internal), gauss],
            "evaluated": [c.to_dict() for c in self.evaluated.values()],
        })

    @classmethod
    def from_json(cls, text: str) -> SearchState:
        try:
            d = json.loads(text)
            if d.get("version") != STATE_VERSION:
                raise ValueError(f"state version {d.get('version')!r}")
            cands = [Candidate.from_dict(c) for c in d["evaluated"]]
            v, internal, gauss = d["rng_state"]
            return cls(generation=int(d["generation"]),
                       evaluated={spec_key(c.spec): c for c in cands},
                       population=list(d["population"]),
                       rng_state=(v, tuple(internal), gauss))
        except (ValueError, KeyError, TypeError) as e:
            raise BnhwError(f"search state is corrupted or from another version ({e})") from None


def bucket_of(ops: float, bucket_mops: float) -> int:
    """OPs bucket index; ``bucket_mops`` is a float number of MOPs (0.25 works)."""
    return int(math.floor(ops / (bucket_mops * 1e6)))


def pareto_front(cands: Iterable[Candidate]) -> list[Candidate]:
    """Candidates not dominated in (higher score, lower OPs), sorted by OPs."""
    front: list[Candidate] = []
    for c in sorted(cands, key=lambda c: (c.ops, -c.score)):
        if not front or c.score > front[-1].score:
            front.append(c)
    return front


Evaluate = Callable[[Sequence[ArchSpec]], Sequence[float]]
Progress = Callable[[str, dict], None]


class EvolutionSearch:
    def __init__(self, space: SearchSpace, constraints: list[Constraint], evaluate: Evaluate,
                 config: EvolutionConfig | None = None, seed: int = 0):
        self.space = space
        self.constraints = list(constraints)
        if not any(c.name == "ops" for c in self.constraints):
            raise BnhwError("the search needs an OPs constraint (an OpsBudget)")
        self.evaluate = evaluate
        self.config = config or EvolutionConfig()
        self.config.validate()
        self.seed = seed

    # -------------------------------------------------------------- feasibility
    def check_feasible_at_all(self) -> None:
        smallest = self.space.smallest()
        m = measure_all(self.constraints, smallest)
        for c in self.constraints:
            if c.name == "ops" and not c.feasible(m["ops"]):
                raise BnhwError(f"budget {c.describe()} is below the smallest subnet of {self.space.name} "
                                f"({format_ops(m['ops'])} OPs)")

    def _metrics(self, spec: ArchSpec) -> dict[str, float] | None:
        m = {"ops": ops_of(spec)}
        for c in self.constraints:          # cheapest first: OPs are known, skip the rest if over budget
            if c.name not in m:
                m[c.name] = float(c.measure(spec))
            if not c.feasible(m[c.name]):
                return None
        return m

    # ------------------------------------------------------------------- state
    def _save(self, state: SearchState, path: Path | None) -> None:
        if path is not None and dist_util.is_main():   # every rank reads the state, one writes it
            atomic_write_text(path, state.to_json())

    def _score(self, state: SearchState, specs: list[ArchSpec], metrics: list[dict], gen: int) -> None:
        new = [(s, m) for s, m in zip(specs, metrics) if spec_key(s) not in state.evaluated]
        if not new:
            return
        scores = list(self.evaluate([s for s, _ in new]))
        if len(scores) != len(new):
            raise RuntimeError(f"evaluate returned {len(scores)} scores for {len(new)} architectures")
        for (s, m), sc in zip(new, scores):
            state.evaluated[spec_key(s)] = Candidate(s.replace(name=""), float(sc), m, gen)

    def _draw(self, rng: random.Random, make: Callable[[], ArchSpec], seen: set[str]) -> tuple[ArchSpec, dict] | None:
        for _ in range(self.config.max_attempts):
            s = make()
            k = spec_key(s)
            if k in seen:
                continue
            m = self._metrics(s)
            if m is not None:
                seen.add(k)
                return s, m
        return None

    def parents(self, state: SearchState) -> list[Candidate]:
        buckets: dict[int, list[Candidate]] = {}
        for c in state.evaluated.values():
            buckets.setdefault(bucket_of(c.ops, self.config.bucket_mops), []).append(c)
        out = []
        for b in sorted(buckets):
            out.extend(sorted(buckets[b], key=lambda c: -c.score)[: self.config.parents_per_bucket])
        return out

    # --------------------------------------------------------------------- run
    def run(self, state_path: str | Path | None = None, resume: bool = False,
            progress: Progress | None = None) -> SearchState:
        cfg = self.config
        path = Path(state_path) if state_path else None
        self.check_feasible_at_all()
        report = progress or (lambda event, info: None)
        if resume and path is not None and path.exists():
            state = SearchState.from_json(path.read_text())
            rng = random.Random()
            assert state.rng_state is not None  # from_json sets it
            rng.setstate(state.rng_state)
            report("resumed", {"generation": state.generation, "evaluated": len(state.evaluated)})
        else:
            rng = random.Random(self.seed)
            state = SearchState(rng_state=rng.getstate())
        seen = set(state.evaluated)

        if state.generation == 0 and not state.population:
            # generation 0: the smallest subnet plus random feasible samples
            specs, metrics = [], []
            first = [self.space.smallest()]
            for s in first:
                m = self._metrics(s)
                if m is not None and spec_key(s) not in seen:
                    seen.add(spec_key(s))
                    specs.append(s)
                    metrics.append(m)
            while len(specs) < cfg.population:
                got = self._draw(rng, lambda: self.space.sample(rng), seen)
                if got is None:
                    break
                specs.append(got[0])
                metrics.append(got[1])
            if not specs and not state.evaluated:
                bounds = "; ".join(c.describe() for c in self.constraints)
                raise BnhwError(f"no architecture of {self.space.name} met every constraint in "
                                f"{cfg.max_attempts} random draws ({bounds}); relax the constraints")
            self._score(state, specs, metrics, 0)
            state.population = [spec_key(s) for s in specs]
            state.rng_state = rng.getstate()
            self._save(state, path)
            report("generation", self._summary(state, 0))

        while state.generation < cfg.generations:
            gen = state.generation + 1
            parents = self.parents(state)
            n_mut = int(round(cfg.population * cfg.mutation_ratio))
            specs, metrics = [], []
            for i in range(cfg.population):
                make: Callable[[], ArchSpec]
                if i < n_mut or len(parents) < 2:
                    p = rng.choice(parents)
                    make = functools.partial(self.space.mutate, p.spec, rng, prob=cfg.mutate_prob)
                else:
                    a, b = rng.sample(parents, 2)
                    make = functools.partial(self.space.crossover, a.spec, b.spec, rng)
                got = self._draw(rng, make, seen) or self._draw(rng, lambda: self.space.sample(rng), seen)
                if got is not None:
                    specs.append(got[0])
                    metrics.append(got[1])
            self._score(state, specs, metrics, gen)
            state.population = [spec_key(s) for s in specs]
            state.generation = gen
            state.rng_state = rng.getstate()
            self._save(state, path)
            report("generation", self._summary(state, gen))
        return state

    def _summary(self, state: SearchState, gen: int) -> dict:
        best = max(state.evaluated.values(), key=lambda c: c.score)
        return {"generation": gen, "generations": self.config.generations, "evaluated": len(state.evaluated),
                "best_score": best.score, "best_ops": best.ops, "best_metrics": dict(best.metrics),
                "front": len(pareto_front(state.evaluated.values()))}


def best_under(cands: Iterable[Candidate], constraints: list[Constraint]) -> Candidate | None:
    ok = [c for c in cands if all_feasible(constraints, c.metrics)]
    return max(ok, key=lambda c: (c.score, -c.ops)) if ok else None
