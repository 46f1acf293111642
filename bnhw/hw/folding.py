"""Resource-aware folding: choose PE / SIMD for every unit of a dataflow graph.

FINN's ``SetFolding`` (re-implemented in :mod:`bnhw.hw.setfolding`) walks the
graph once, raising SIMD and then PE of each layer until it meets a target
cycle count, and never looks at resources: the user guesses a target, builds,
and finds out whether it fits.  bnhw turns it around:

* for a candidate initiation interval ``T`` (cycles per frame), every unit
  independently takes the (PE, SIMD) of **least resource cost** whose cycle
  count is ``<= T`` (cost = the unit's LUT, BRAM18, URAM and DSP estimates
  from :mod:`bnhw.hw.finn_models`, each divided by the budget for
  that resource; a resource the board lacks is forbidden);
* the smallest ``T`` whose total fits the budget is found by bisection over
  the achievable cycle counts (``maximize_fps``); if a single weighting
  misses the budget only on one resource, that resource's weight is raised
  and the choice repeated (a few rounds), which trades e.g. BRAM for LUTs;
* ``min_resources_for_fps`` is the same per-unit choice at the ``T`` a
  target FPS implies;
* ``widest_folding`` is the other extreme, for testing the widest words a
  target can hold: fully unfolded if that fits the budget, else the units
  widened one at a time (widest words first) as far as the budget allows.

Every folding considered is one bnhw's HLS code can implement: besides
FINN's divisibility rules, no stream or weight word of a unit may be wider
than :data:`~bnhw.hw.hls.codegen.HLS_MAX_WORD_BITS` (4096 bits, the largest
``AP_INT_MAX_W`` Vitis HLS accepts; see :func:`~bnhw.hw.hls.codegen.node_words`).

Sliding-window generators are folded like any other unit (their SIMD need
not equal the MVAU's: a width converter joins them, as FINN inserts one
when ``SetFolding`` leaves a generator narrower than its MVAU).  Total
resources are the sum of the units' estimates: FIFOs, data-width
converters and the DMA shell are not in it, which is why the budget keeps a
safety margin (``margin=0.85`` of the board by default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import BnhwError
from .finn_models import Resources
from .hls.codegen import HLS_MAX_WORD_BITS, node_words
from .ir import HwGraph, Node
from .ops import get_op, node_cycles, node_resources

__all__ = ["FitError", "FoldingResult", "FoldOption", "graph_cost", "maximize_fps", "min_resources_for_fps",
           "widest_folding", "fastest_fit", "cheapest_fit", "pareto", "RESOURCE_KEYS", "board_budget",
           "hls_words_fit"]

RESOURCE_KEYS = ("LUT", "BRAM18", "URAM", "DSP")
MAX_STREAM_BITS = 8191      # widest ap_int HLS accepts (FINN's MAX_ALLOWED_AP_INT_W)


class FitError(BnhwError):
    """The network cannot fit the budget at any folding."""


def _res_dict(r: Resources) -> dict[str, float]:
    return {"LUT": float(r.lut), "BRAM18": float(r.bram18), "URAM": float(r.uram), "DSP": float(r.dsp)}


def critical_path_cycles(g: HwGraph, cycles: Mapping[str, int]) -> int:
    """Longest path of per-unit cycle counts from the graph input to its output (FINN's latency estimate)."""
    finish: dict[str, int] = {g.input: 0}
    for n in g.nodes:
        start = max(finish.get(s, 0) for s in n.inputs)
        for o in n.outputs:
            finish[o] = start + cycles[n.name]
    return finish[g.output]


def board_budget(board, margin: float = 0.85) -> dict[str, float]:
    """``margin`` times the board's LUT / BRAM18 / URAM / DSP."""
    return {k: v * margin for k, v in board.budget().items()}


@dataclass
class FoldingResult:
    graph: HwGraph
    cycles: dict[str, int]
    resources: dict[str, dict[str, float]]
    total: dict[str, float]
    ii: int

    def fps(self, clock_mhz: float) -> float:
        return clock_mhz * 1e6 / self.ii


def graph_cost(g: HwGraph) -> FoldingResult:
    """Per-unit cycles and resources of ``g`` at its current folding."""
    cycles = {n.name: int(node_cycles(g, n)) for n in g.nodes}
    res = {n.name: _res_dict(node_resources(g, n)) for n in g.nodes}
    total = {k: sum(r[k] for r in res.values()) for k in RESOURCE_KEYS}
    return FoldingResult(g, cycles, res, total, max(cycles.values()) if cycles else 1)


# ----------------------------------------------------------------------------- per-unit options
@dataclass(frozen=True)
class FoldOption:
    """One legal folding of a unit with its cycles and resources (LUT, BRAM18, URAM, DSP)."""

    pe: int
    simd: int
    pad_simd: int | None
    parallel_window: int | None
    cycles: int
    res: tuple[float, float, float, float]     # LUT, BRAM18, URAM, DSP
    mul_dsp: int | None = None                 # an elementwise unit's multiplier: 1 in DSP slices, 0 in LUTs


def _stream_bits(g: HwGraph, n: Node, pe: int, simd: int) -> int:
    """Widest stream (input, weight, output) of ``n`` at this folding, in bits."""
    ib = max(1, g.in_stream(n).dtype.bits)
    ob = max(1, g.out_stream(n).dtype.bits)
    if n.op == "MVAU":
        wbits = 1 if n.attrs.get("binary_xnor") else int(n.attrs.get("weight_bits", 8))
        return max(simd * ib, pe * simd * wbits, pe * ob)
    return max(simd * ib, pe * ib, pe * ob)


def hls_words_fit(g: HwGraph, n: Node) -> bool:
    """Whether every word of ``n`` at its folding fits an ``ap_uint`` of Vitis HLS (:data:`HLS_MAX_WORD_BITS`)."""
    return all(bits <= HLS_MAX_WORD_BITS for _, bits, _ in node_words(g, n))


def _options(g: HwGraph, n: Node, prune: bool = True) -> list[FoldOption]:
    """Every legal folding of ``n``, Pareto-pruned on (cycles, resources) unless ``prune`` is false."""
    out: list[FoldOption] = []
    padded = n.op == "SWG" and int(n.attrs.get("pad", 0)) > 0
    channels = g.in_stream(n).channels
    op = get_op(n.op)
    multiplier = op.multiplier(g, n)
    variants = []
    for pe, simd in get_op(n.op).foldings(g, n):
        extra = {"pad_simd": simd} if padded else {}       # the padding unit in front runs as wide
        variants.append((pe, simd, extra))
        if n.op == "SWG" and simd == channels:             # FINN's parallel window mode needs SIMD = C
            variants.append((pe, simd, {**extra, "parallel_window": 1}))
    if multiplier is not None:                              # its multiplier in LUTs or in DSP slices
        variants = [(pe, simd, {**extra, "mul_dsp": d}) for pe, simd, extra in variants for d in (0, 1)]
    for pe, simd, extra in variants:
        if _stream_bits(g, n, pe, simd) > MAX_STREAM_BITS:
            continue
        m = Node(n.name, n.op, n.inputs, n.outputs, {**n.attrs, "pe": pe, "simd": simd, **extra}, n.params,
                 n.layer)
        if not hls_words_fit(g, m):
            continue
        cyc = int(node_cycles(g, m))
        r = node_resources(g, m)
        vec = (float(r.lut), float(r.bram18), float(r.uram), float(r.dsp))
        out.append(FoldOption(pe, simd, extra.get("pad_simd"), extra.get("parallel_window"), cyc, vec,
                              extra.get("mul_dsp")))
    return pareto(out) if prune else out


def pareto(opts: list[FoldOption]) -> list[FoldOption]:
    opts = sorted(opts, key=lambda o: (o.cycles, o.res))
    kept: list[FoldOption] = []
    for o in opts:
        if not any(k.cycles <= o.cycles and all(a <= b for a, b in zip(k.res, o.res)) for k in kept):
            kept.append(o)
    return kept


#: BRAM-vs-LUT weights tried by :meth:`_Problem.fit` (geometric, both sides of 1)
_LAMBDAS = tuple(2.0 ** e for e in (0, -1, 1, -2, 2, -3, 3, -4, 4, -6, 6, -8, 8))


class _Problem:
    """The choice of one option per unit: ``options`` maps each unit's name to its foldings (any front end: the
    IR's cost models, or FINN's own estimates in :mod:`bnhw.hw.finn_steps`)."""

    def __init__(self, options: Mapping[str, list[FoldOption]], budget: Mapping[str, float]):
        self.budget = {k: float(budget.get(k, 0.0)) for k in RESOURCE_KEYS}
        self.units: list[str] = list(options)
        self.options = {k: list(v) for k, v in options.items()}
        # every option of every unit in one flat table (unit order, then option order), so that
        # :meth:`choose` is a few array operations instead of a Python loop over all options
        self._flat = [o for n in self.units for o in self.options[n]]
        self._unit = np.array([u for u, n in enumerate(self.units) for _ in self.options[n]], dtype=np.int64)
        self._cyc = np.array([o.cycles for o in self._flat], dtype=np.int64)
        self._res = np.array([o.res for o in self._flat], dtype=np.float64).reshape(len(self._flat), 4)
        bud = np.array([self.budget[k] for k in RESOURCE_KEYS], dtype=np.float64)
        self._bud = np.where(bud > 0, bud, 1.0)
        self._forbidden = ((self._res > 0) & (bud <= 0)).any(axis=1)      # needs a resource the budget lacks
        self._first = np.searchsorted(self._unit, np.arange(len(self.units)))
        self._min_cycles = max((min((o.cycles for o in self.options[n]), default=math.inf)
                                for n in self.units), default=0)

    def cost(self, o: FoldOption, w: tuple[float, ...]) -> float:
        c = 0.0
        for i, k in enumerate(RESOURCE_KEYS):
            if o.res[i] > 0:
                if self.budget[k] <= 0:
                    return math.inf
                c += w[i] * o.res[i] / self.budget[k]
        return c

    def choose(self, T: int, w: tuple[float, ...]) -> dict[str, FoldOption] | None:
        """Per unit, the option of least :meth:`cost` (ties: fewer cycles, then the earlier option)
        among those with ``cycles <= T``; ``None`` if some unit has none."""
        if not self.units:
            return {}
        if self._min_cycles > T:
            return None
        cost = np.zeros(len(self._flat))
        for i in range(len(RESOURCE_KEYS)):       # the same float operations, in the same order, as cost()
            col = self._res[:, i]
            cost = cost + np.where(col > 0, (w[i] * col) / self._bud[i], 0.0)
        cost[self._forbidden] = math.inf
        order = np.lexsort((self._cyc, cost, self._cyc > T, self._unit))   # stable: ties keep option order
        best = order[self._first]
        return {n: self._flat[j] for n, j in zip(self.units, best.tolist())}

    def total(self, pick: Mapping[str, FoldOption]) -> list[float]:
        return [sum(o.res[i] for o in pick.values()) for i in range(len(RESOURCE_KEYS))]

    def violations(self, pick) -> list[int]:
        t = self.total(pick)
        return [i for i, k in enumerate(RESOURCE_KEYS) if t[i] > self.budget[k] + 1e-9]

    def fit(self, T: int) -> dict[str, FoldOption] | None:
        """A choice meeting ``T`` within budget, or ``None``.

        Feasibility at a fixed ``T`` is a multiple-choice knapsack with one
        constraint per resource.  It is searched by Lagrangian weighting: for
        each weight vector every unit takes its cheapest option under those
        weights; the BRAM weight is scanned over a geometric grid (LUT vs
        BRAM is the trade-off folding makes), and a resource still over
        budget has its weight raised.
        """
        first = self.choose(T, (1.0, 1.0, 1.0, 1.0))
        if first is None:
            return None
        if not self.violations(first):
            return first
        for lam in _LAMBDAS:
            w = [1.0, lam, 1.0, 1.0]
            for _ in range(4):
                pick = self.choose(T, tuple(w))
                bad = self.violations(pick)
                if not bad:
                    return pick
                for i in bad:
                    w[i] *= 4.0
        return None

    def achievable(self) -> list[int]:
        return sorted({o.cycles for opts in self.options.values() for o in opts})


def _graph_problem(g: HwGraph, budget: Mapping[str, float]) -> _Problem:
    return _Problem({n.name: _options(g, n) for n in g.nodes}, budget)


def _graph_options(g: HwGraph) -> tuple[dict[str, list[FoldOption]], dict[str, list[FoldOption]]]:
    """Every legal folding of every unit, and the Pareto-pruned ones the choice is made among."""
    every = {n.name: _options(g, n, prune=False) for n in g.nodes}
    return every, {k: pareto(v) for k, v in every.items()}


def _balance_to_ii(pick: Mapping[str, FoldOption], every: Mapping[str, list[FoldOption]]) -> dict[str, FoldOption]:
    """Every unit slowed to the narrowest folding that keeps it within the design's II at no more of any resource.

    The per-unit choice breaks ties of cost towards the fastest option, and the Pareto front keeps only the
    fastest of equal-resource foldings: a unit FINN's models price the same at any width (a StreamingConcat, a
    DuplicateStreams, an MVAU whose LUTs do not grow with SIMD) ran as wide as it could, far faster than the
    design's II.  In a cell network that is what made it large: wide words need width converters from and to
    their narrow neighbours (up to 4,098 LUT each on bnas-kv260-8x8) and wide stream FIFOs, which the unit models
    do not see.  Balancing every branch to the II the slowest unit sets costs the units nothing and narrows the
    streams; :func:`_follow_producers` then widens a channel-wise unit again where its producer's word is wider."""
    ii = max((o.cycles for o in pick.values()), default=0)
    out = dict(pick)
    for name, o in pick.items():
        if o.cycles >= ii:
            continue
        same = [c for c in every.get(name, ()) if c.cycles <= ii and all(a <= b for a, b in zip(c.res, o.res))]
        if same:
            out[name] = max(same, key=lambda c: (c.cycles, -c.pe * c.simd, tuple(-r for r in c.res)))
    return out


def _apply(g: HwGraph, pick: Mapping[str, FoldOption],
           every: Mapping[str, list[FoldOption]] | None = None) -> HwGraph:
    """``g`` folded as ``pick`` says; with ``every`` (all legal foldings per unit) balanced to the II first."""
    if every is not None:
        pick = _balance_to_ii(pick, every)
    fold: dict[str, dict[str, int]] = {}
    wiring = {n.name for n in g.nodes if n.op == "Gather"}
    for name, o in pick.items():
        if name in wiring:          # pure wiring: it passes its producer's words on (a PE of 1 would be a unit
            continue                # reading one element per cycle, which the 0-cycle model does not see)
        fold[name] = {"PE": o.pe, "SIMD": o.simd}
        if o.pad_simd is not None:
            fold[name]["pad_simd"] = o.pad_simd
        if o.parallel_window is not None:
            fold[name]["parallel_window"] = o.parallel_window
        if o.mul_dsp is not None:
            fold[name]["mul_dsp"] = o.mul_dsp
    _follow_producers(g, fold, max((o.cycles for o in pick.values()), default=0))
    return g.with_folding(fold)


def _follow_producers(g: HwGraph, fold: dict[str, dict[str, int]], ii: int) -> None:
    """A channel-wise unit takes its producer's word width (its PE) where that costs it nothing more and keeps
    it within the II.  The per-unit choice cannot see width converters (FINN's ``InsertDWC`` puts one wherever a
    producer's word differs from its consumer's): a free DuplicateStreams is fully parallel on the Pareto front,
    so behind an RPReLU at PE 1 it needed a converter on every side, up to 3,000 LUT each on NAS-BNN nets.  Units
    are visited in graph order, so a follower's consumers can follow it in turn."""
    for n in g.nodes:
        if n.name not in fold or not get_op(n.op).follows_producer:
            continue
        prod = g.producer(n.inputs[0])
        if prod is None or prod.name not in fold or not get_op(prod.op).pe_words_out:
            continue
        pe, now = fold[prod.name]["PE"], fold[n.name]["PE"]
        if pe == now or pe not in get_op(n.op).legal_pe(g, n):
            continue
        dsp = {"mul_dsp": fold[n.name]["mul_dsp"]} if "mul_dsp" in fold[n.name] else {}
        old = Node(n.name, n.op, n.inputs, n.outputs, {**n.attrs, **dsp, "pe": now}, n.params, n.layer)
        new = Node(n.name, n.op, n.inputs, n.outputs, {**n.attrs, **dsp, "pe": pe}, n.params, n.layer)
        r_old, r_new = _res_dict(node_resources(g, old)), _res_dict(node_resources(g, new))
        if node_cycles(g, new) <= ii and all(r_new[k] <= r_old[k] for k in RESOURCE_KEYS):
            fold[n.name]["PE"] = pe


def _explain_misfit(p: _Problem, board_name: str) -> str:
    # the cheapest possible design: every unit at its least-resource option
    pick = {n: min(p.options[n], key=lambda o: o.res) for n in p.units}
    tot = p.total(pick)
    worst = max(range(len(RESOURCE_KEYS)),
                key=lambda i: tot[i] / p.budget[RESOURCE_KEYS[i]] if p.budget[RESOURCE_KEYS[i]] else
                (math.inf if tot[i] else 0))
    k = RESOURCE_KEYS[worst]
    return (f"does not fit {board_name}: even fully folded it needs {tot[worst]:,.0f} {k} "
            f"but the budget is {p.budget[k]:,.0f} {k}; use a smaller network (a lower --budget in "
            f"`bnhw search`) or a larger board")


def fastest_fit(options: Mapping[str, list[FoldOption]], budget: Mapping[str, float], *,
                board_name: str = "the budget") -> dict[str, FoldOption]:
    """Per unit, the option giving the smallest initiation interval whose total fits ``budget``."""
    p = _Problem(options, budget)
    cand = p.achievable()
    if not cand or p.fit(cand[-1]) is None:
        raise FitError(_explain_misfit(p, board_name))
    lo, hi = 0, len(cand) - 1          # cand[hi] feasible
    while lo < hi:
        mid = (lo + hi) // 2
        if p.fit(cand[mid]) is not None:
            hi = mid
        else:
            lo = mid + 1
    # feasibility is not strictly monotone in T: scan a little below the bisection result
    best = hi
    for j in range(max(0, hi - 16), hi):
        if p.fit(cand[j]) is not None:
            best = j
            break
    chosen = p.fit(cand[best])
    assert chosen is not None          # cand[hi] fits (bisection invariant) and best is hi or a fitting j
    return chosen


def cheapest_fit(options: Mapping[str, list[FoldOption]], cycles: int, budget: Mapping[str, float], *,
                 clock_mhz: float, board_name: str = "the budget", fps: float | None = None) -> dict[str, FoldOption]:
    """Per unit, the least-resource option of at most ``cycles`` cycles (``fps``: the target it came from, for
    messages), the total within ``budget``."""
    p = _Problem(options, budget)
    fps = fps if fps is not None else clock_mhz * 1e6 / max(cycles, 1)
    if cycles < 1 or p.choose(cycles, (1.0,) * 4) is None:
        fastest = min(max(min(o.cycles for o in opts) for opts in p.options.values()), 10**18)
        raise FitError(f"{fps:,.0f} FPS is out of reach: the fastest folding of this network runs at "
                       f"{clock_mhz * 1e6 / fastest:,.0f} FPS at {clock_mhz:g} MHz")
    pick = p.fit(cycles)
    if pick is None:
        best = fastest_fit(options, budget, board_name=board_name)
        ii = max(o.cycles for o in best.values())
        raise FitError(f"{fps:,.0f} FPS does not fit {board_name}: the best folding within its resources "
                       f"reaches {clock_mhz * 1e6 / ii:,.0f} FPS; lower --fps, use a smaller network or a "
                       f"larger board")
    return pick


def maximize_fps(g: HwGraph, budget: Mapping[str, float], *, board_name: str = "the budget") -> FoldingResult:
    """The folding with the smallest initiation interval whose estimated resources fit ``budget``."""
    every, opts = _graph_options(g)
    return graph_cost(_apply(g, fastest_fit(opts, budget, board_name=board_name), every))


def min_resources_for_fps(g: HwGraph, fps: float, clock_mhz: float, budget: Mapping[str, float], *,
                          board_name: str = "the budget") -> FoldingResult:
    """The least-resource folding reaching ``fps`` at ``clock_mhz``; :class:`FitError` if none fits."""
    every, opts = _graph_options(g)
    T = int(clock_mhz * 1e6 // fps)
    return graph_cost(_apply(g, cheapest_fit(opts, T, budget, clock_mhz=clock_mhz, board_name=board_name, fps=fps),
                             every))


def _word_bits(g: HwGraph, n: Node, o: FoldOption) -> int:
    """The widest word of unit ``n`` at option ``o``."""
    m = Node(n.name, n.op, n.inputs, n.outputs, {**n.attrs, "pe": o.pe, "simd": o.simd}, n.params, n.layer)
    return max((bits for _, bits, _ in node_words(g, m)), default=0)


def widest_folding(g: HwGraph, budget: Mapping[str, float] | None = None, *,
                   board_name: str = "the budget") -> FoldingResult:
    """The widest folding of ``g`` (widest words, most SIMD x PE lanes) whose estimate fits ``budget``.

    A unit's candidates are all its legal foldings bnhw's HLS can build (divisibility, the grouped-MVAU
    rule, every word within :data:`HLS_MAX_WORD_BITS`), not only the Pareto-optimal ones.

    * Every unit at its widest candidate (``PE = MH`` and ``SIMD = MW`` for an MVAU, ``SIMD = C`` for a
      window generator, ``PE = C`` for an elementwise unit, as far as the word limit allows) is returned
      when that fits ``budget`` (always when ``budget`` is ``None``): the fully unfolded design.
    * Otherwise the units are widened one at a time from the least-resource design, those whose words
      can grow widest first, each to its widest candidate that keeps the total within ``budget`` (the
      units not yet widened at their least-resource folding; "widest": the widest word, then the most
      PE x SIMD lanes).  So the widest word of the result is the widest any folding within ``budget``
      can have, then the next unit's, and so on.  This is the extreme of wide words, not a fast
      design: units widened late may stay narrow (and slow).

    :class:`FitError` when not even the least-resource design fits.
    """
    p = _graph_problem(g, budget if budget is not None else {k: math.inf for k in RESOURCE_KEYS})
    every: dict[str, list[FoldOption]] = {}
    for n in g.nodes:
        # widest first: the widest word, then the most lanes (PE x SIMD), then the fastest, then the cheapest
        keyed = [((_word_bits(g, n, o), o.pe * o.simd, -o.cycles, tuple(-r for r in o.res)), o)
                 for o in _options(g, n, prune=False)]
        if not keyed:
            raise FitError(f"{n.name} has no folding bnhw's HLS code can implement")
        every[n.name] = [o for _, o in sorted(keyed, key=lambda ko: ko[0], reverse=True)]
    widest = {name: opts[0] for name, opts in every.items()}
    if budget is None or not p.violations(widest):
        return graph_cost(_apply(g, widest))
    ones = (1.0,) * len(RESOURCE_KEYS)
    pick = {n.name: min(every[n.name], key=lambda o: (p.cost(o, ones), o.cycles)) for n in g.nodes}
    if p.violations(pick):
        raise FitError(_explain_misfit(p, board_name))
    total = p.total(pick)
    bud = [p.budget[k] + 1e-9 for k in RESOURCE_KEYS]
    for n in sorted(g.nodes, key=lambda n: _word_bits(g, n, widest[n.name]), reverse=True):
        cur = pick[n.name]
        for o in every[n.name]:
            if o == cur:                    # the rest are narrower
                break
            new = [t - a + b for t, a, b in zip(total, cur.res, o.res)]
            if all(x <= b for x, b in zip(new, bud)):
                pick[n.name], total = o, new
                break
    return graph_cost(_apply(g, pick))
