"""How well a supernet ranks its subnets.

A weight-sharing search is only as good as the ranking its inherited
accuracies give: the evolution keeps the architectures whose *inherited*
accuracy is highest, so what matters is whether the same architectures
are also the best once trained on their own.  The usual measure (once-for-
all, NAS-BNN Sec. 4, and the NAS-benchmark literature) is Kendall's rank
correlation tau between the two accuracies over a sample of subnets.

This module picks the sample and computes tau; the stand-alone training is
the caller's (``bnhw.flows.search``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .evolution import Candidate, spec_key


def spread_sample(cands: Sequence[Candidate], best: Candidate, n: int) -> list[Candidate]:
    """``n`` candidates spread evenly over the OPs range of ``cands`` (sorted by OPs), ``best`` among them.

    Evenly spaced ranks of the OPs-sorted list, so the sample covers small and large subnets alike;
    when ``best`` is not drawn it replaces the drawn candidate nearest to it in OPs.  Fewer than ``n``
    candidates: all of them.
    """
    unique: dict[str, Candidate] = {}
    for c in sorted(cands, key=lambda c: (c.ops, -c.score)):
        unique.setdefault(spec_key(c.spec), c)
    pool = list(unique.values())
    if n <= 0:
        return []
    if len(pool) <= n:
        picked = pool
    else:
        idx = sorted({round(i * (len(pool) - 1) / (n - 1)) for i in range(n)} if n > 1 else {0})
        picked = [pool[i] for i in idx]
    keys = {spec_key(c.spec) for c in picked}
    if spec_key(best.spec) not in keys:
        nearest = min(range(len(picked)), key=lambda i: abs(picked[i].ops - best.ops))
        picked[nearest] = best
    return sorted(picked, key=lambda c: c.ops)


@dataclass(frozen=True)
class RankCorrelation:
    tau: float          # Kendall's tau-b (ties counted)
    p_value: float      # two-sided, H0: no association
    n: int

    def describe(self) -> str:
        return f"Kendall tau {self.tau:+.3f} (p = {self.p_value:.3g}, {self.n} subnets)"


def kendall(inherited: Sequence[float], standalone: Sequence[float]) -> RankCorrelation:
    """Kendall's tau-b between two accuracy lists of the same subnets, with its two-sided p-value.

    Undefined (fewer than two subnets, or one list constant): tau 0, p 1.
    """
    from scipy.stats import kendalltau

    if len(inherited) != len(standalone):
        raise ValueError(f"{len(inherited)} inherited but {len(standalone)} stand-alone accuracies")
    n = len(inherited)
    if n < 2 or len(set(inherited)) < 2 or len(set(standalone)) < 2:
        return RankCorrelation(0.0, 1.0, n)
    r = kendalltau(inherited, standalone)
    return RankCorrelation(float(r.statistic), float(r.pvalue), n)
