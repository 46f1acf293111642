"""BARS-style two-level differentiable search (paper 002): the BNAS cell (micro level) jointly with the
network layout (macro level: depth and width of each of the three stages), under an OPs budget.

Micro level
-----------
The cell alphas, mixed operations, cells, regularizer and derivation of
:mod:`bnhw.design.bnas` (Eq. 5 / Eq. 6), shared by every cell of a kind.

Macro level
-----------
The network has three stages (a reduction cell between two stages, the
layout of :class:`~bnhw.spec.cells.CellNetSpec` with ``stage_cells`` /
``stage_widths``); each stage has two categorical choices with softmax
parameters (``beta_depth``, ``beta_width``: 3 x choices):

* **depth** (cells per stage, e.g. {1, 2, 3}): the stage runs its largest
  depth and what follows it (the next stage's reduction cell, or the
  classifier) sees the softmax-weighted mixture of the states after ``d``
  cells, for every candidate ``d``.  A cell reads two states (``c_{k-1}``,
  ``c_{k-2}``), so both are mixed; each candidate gets its own
  preprocessing (the channels of the state before the first cell differ)
  and the mixture is taken after it.
* **width** (multiplier of the stage's channels, e.g. {0.5, 0.75, 1.0}):
  the network has the largest width and a stage's states are multiplied by
  the channel mask ``m = sum_w pi_w * [c < round(C w)]`` (the expected
  "channel is kept").  As ``sign`` ignores positive scales (and maps 0 to
  +1), masking the states alone would not reach the binary convolutions;
  their ±1 inputs are multiplied by the mask of the stage they come from
  (:func:`bnhw.design.bnas.run_op`), so a masked channel adds nothing to an
  XNOR conv, and a partly kept one a proportional share.

OPs term
--------
``E[OPs]`` (:class:`ExpectedOps`) is the expected OPs of the *final*
network (``spec_channels`` channels at ``spec_resolution``, not the small
proxy; without ``spec_channels``, :func:`auto_spec_channels` puts the
budget at the uniform starting point of the search) under the current softmaxes: the macro choices are independent per
stage, so the expectation of the stem / preprocessing / classifier OPs
(:func:`bnhw.estimators.ops.cell_fixed_ops`) is taken over the table of
every layout, and a cell's edges cost ``sum_e k_e sum_o p_eo
cell_edge_ops(o, C, size)`` with ``k_e = 2 / (2 + i)`` for an edge into
node ``i`` (a derived node keeps 2 of its ``2 + i`` incoming edges; exact
when every edge has the same operation).  The architecture loss adds
``mu * max(0, E[OPs] / budget - 1)`` (``ops_penalty="hinge"``) or ``mu *
max(0, log(E[OPs] / budget))`` (``"log"``); both leave a network below the
budget alone, ``"abs"`` (``mu * |E[OPs] / budget - 1|``) also pulls it up
towards the budget.  The stem / preprocessing /
classifier table assumes every preprocessing conv is built (a derived cell
whose edges never read ``c_{k-2}`` drops one), so it errs on the safe side.

By default the OPs term's gradient reaches the macro parameters only
(``ops_grad_micro=False``; its value still depends on the cell
probabilities): the layout balances accuracy against complexity, the cell
is chosen by accuracy (and the diversity regularizer).  Under Adam a
consistent penalty gradient moves every cell alpha by about the learning
rate per step whatever its size, and in short searches it turned every
edge into Zeroise (the cheapest operation) within a few steps, leaving a
skip-only network far below the budget; ``ops_grad_micro=True`` restores
the gradient.  The macro parameters have their own Adam learning rate
(``macro_lr``, 10x DARTS's 3e-4 by default): 18 numbers that must move
within a few hundred steps.

After the search the layout is the argmax of each stage's choices; its OPs
are counted exactly (``count_ops``) and, over the budget, it shrinks one
step at a time (first a stage's width to the next smaller choice, then a
stage's depth), each time taking the fitting step that keeps the most OPs,
or else the one that saves the most, until it fits.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BnhwError
from ..quant.cellops import CELL_OPS
from ..quant.layers import Classifier, Stem
from ..spec import Precision
from ..spec.cells import CellNetSpec, Genotype
from .bnas import (
    CellSearchConfig,
    Progress,
    SearchCell,
    alternating_search,
    config_json,
    derive_genotype,
    edge_inputs,
    micro_regularizer,
    placeholder_genotype,
    split_halves,
)

__all__ = ["BarsConfig", "BarsResult", "BarsNetwork", "ExpectedOps", "run_bars", "shrink_to_budget",
           "ops_penalty", "auto_spec_channels", "stage_channels", "BARS_CHECKPOINT", "STAGES"]

BARS_CHECKPOINT = "bars_search.pt"
STAGES = 3
PENALTIES = ("hinge", "log", "abs")


@dataclass
class BarsConfig(CellSearchConfig):
    """BARS search settings: the shared search settings of :class:`~bnhw.design.bnas.CellSearchConfig`, the
    macro choices, the OPs budget and the final network's template."""

    epochs: int = 6
    budget: float | None = None              # OPs of the final network (required)
    depths: tuple[int, ...] = (1, 2, 3)      # candidate cells per stage
    widths: tuple[float, ...] = (0.5, 0.75, 1.0)   # candidate width multipliers per stage
    mu: float = 1.0                          # weight of the OPs term
    macro_lr: float | None = 3e-3            # Adam lr of the depth / width parameters (None: arch_lr)
    ops_grad_micro: bool = False             # let the OPs term's gradient reach the cell alphas too
    ops_penalty: str = "hinge"               # "hinge": max(0, E/B - 1); "log": max(0, log(E/B)); "abs": |E/B - 1|
    spec_channels: int | None = None         # init_channels of the final network (None: auto_spec_channels)
    spec_resolution: int = 32                # resolution the final network's OPs are counted at

    def validate(self) -> None:
        super().validate()
        if self.budget is None or not (self.budget > 0 and math.isfinite(self.budget)):
            raise BnhwError(f"BARS needs a positive OPs budget, got {self.budget}")
        if not self.depths or any(int(d) != d or d < 1 for d in self.depths) or len(set(self.depths)) != len(
                self.depths):
            raise BnhwError(f"depths must be distinct integers >= 1, got {list(self.depths)}")
        if not self.widths or any(not w > 0 for w in self.widths) or len(set(self.widths)) != len(self.widths):
            raise BnhwError(f"widths must be distinct positive multipliers, got {list(self.widths)}")
        if self.ops_penalty not in PENALTIES:
            raise BnhwError(f"ops_penalty must be one of {PENALTIES}, got {self.ops_penalty!r}")
        if self.macro_lr is not None and not self.macro_lr > 0:
            raise BnhwError(f"macro_lr must be > 0, got {self.macro_lr}")
        if self.mu < 0 or (self.spec_channels is not None and self.spec_channels < 2):
            raise BnhwError("mu must be >= 0 and spec_channels >= 2")
        if self.spec_resolution % 4:
            raise BnhwError(f"spec resolution {self.spec_resolution} is not divisible by 4 (two reductions)")


def stage_channels(init_channels: int, stage: int, width: float) -> int:
    """Channels of a stage, as :meth:`CellNetSpec.layout` computes them."""
    return max(1, round(init_channels * (2 ** stage) * width))


def ops_penalty(expected: Tensor, budget: float, kind: str = "hinge") -> Tensor:
    """``max(0, E / B - 1)`` (hinge) or ``max(0, log(E / B))`` (log), zero within the budget; or
    ``|E / B - 1|`` (abs), which also pulls an expected network below the budget up towards it."""
    ratio = expected / budget
    if kind == "log":
        return F.relu(torch.log(ratio))
    if kind == "abs":
        return (ratio - 1).abs()
    return F.relu(ratio - 1)


# ----------------------------------------------------------------------------
# search network
# ----------------------------------------------------------------------------
class BarsNetwork(nn.Module):
    """The largest network of the macro space (every stage at its largest depth and width) with the
    micro alphas (``alphas_normal`` / ``alphas_reduce``, as :class:`~bnhw.design.bnas.SearchNetwork`)
    and the macro parameters ``beta_depth`` / ``beta_width`` (3 x choices, zero = uniform)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, init_channels: int = 8, nodes: int = 4,
                 stem_multiplier: int = 3, ops: tuple[str, ...] = CELL_OPS, depths: tuple[int, ...] = (1, 2, 3),
                 widths: tuple[float, ...] = (0.5, 0.75, 1.0), inter_cell_skip: bool = True,
                 precision: Precision | None = None):
        super().__init__()
        self.ops, self.nodes = tuple(ops), nodes
        self.depths, self.widths = tuple(sorted(depths)), tuple(sorted(widths))
        self.reductions = STAGES - 1
        precision = precision or Precision()
        c_stem = stem_multiplier * init_channels
        self.stem = Stem(in_channels, c_stem, 3, 1, precision)
        self.max_channels = [stage_channels(init_channels, s, max(self.widths)) for s in range(STAGES)]
        for s, c in enumerate(self.max_channels):      # mask table: widths x channels, 1 where kept
            keep = torch.zeros(len(self.widths), c)
            for i, w in enumerate(self.widths):
                keep[i, :min(c, stage_channels(init_channels, s, w))] = 1.0
            self.register_buffer(f"keep{s}", keep)
        self.reduce_cells = nn.ModuleList()
        self.stage_cells = nn.ModuleList()
        pp, p, red_prev = [c_stem], [c_stem], False      # channels of each candidate of c_{k-2}, c_{k-1}
        for s in range(STAGES):
            c = self.max_channels[s]
            if s > 0:
                self.reduce_cells.append(SearchCell(nodes, pp, p, c, True, red_prev, self.ops, inter_cell_skip))
                pp, p, red_prev = p, [nodes * c], True
            cells, after = nn.ModuleList(), []
            for _ in range(max(self.depths)):
                cells.append(SearchCell(nodes, pp, p, c, False, red_prev, self.ops, inter_cell_skip))
                pp, p, red_prev = p, [nodes * c], False
                after.append((pp[0], p[0]))
            self.stage_cells.append(cells)
            pp = [after[d - 1][0] for d in self.depths]
            p = [after[d - 1][1] for d in self.depths]
        self.classifier = Classifier(p[0], num_classes, precision)
        n = len(edge_inputs(nodes))
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(n, len(self.ops)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(n, len(self.ops)))
        self.beta_depth = nn.Parameter(torch.zeros(STAGES, len(self.depths)))
        self.beta_width = nn.Parameter(torch.zeros(STAGES, len(self.widths)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce, self.beta_depth, self.beta_width]

    def micro_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def macro_parameters(self) -> list[nn.Parameter]:
        return [self.beta_depth, self.beta_width]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def mask(self, stage: int, width_probs: Tensor) -> Tensor:
        """The stage's expected channel mask ``1 x C x 1 x 1``."""
        keep = getattr(self, f"keep{stage}")
        return (width_probs @ keep).view(1, -1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        wn = F.softmax(self.alphas_normal, dim=-1)
        wr = F.softmax(self.alphas_reduce, dim=-1)
        pd = F.softmax(self.beta_depth, dim=-1)
        pw = F.softmax(self.beta_width, dim=-1)
        stem = self.stem(x)
        pp: list = [(1.0, stem, None)]
        p: list = [(1.0, stem, None)]
        for s in range(STAGES):
            m = self.mask(s, pw[s])
            mt = m.repeat(1, self.nodes, 1, 1)
            if s > 0:
                r = self.reduce_cells[s - 1](pp, p, wr, m)
                pp, p = p, [(1.0, r, mt)]
            after = []
            stage = self.stage_cells[s]
            assert isinstance(stage, nn.ModuleList)  # one ModuleList of cells per stage
            for cell in stage:
                o = cell(pp, p, wn, m)
                pp, p = p, [(1.0, o, mt)]
                after.append((pp[0], p[0]))
            pp = [(pd[s, i], after[d - 1][0][1], after[d - 1][0][2]) for i, d in enumerate(self.depths)]
            p = [(pd[s, i], after[d - 1][1][1], after[d - 1][1][2]) for i, d in enumerate(self.depths)]
        feat = None
        for w, t, _ in p:
            feat = w * t if feat is None else feat + w * t
        return self.classifier(feat)

    def probs(self) -> tuple[Tensor, Tensor]:
        return F.softmax(self.beta_depth, dim=-1), F.softmax(self.beta_width, dim=-1)

    def derive_layout(self) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """The most likely depth and width of every stage."""
        d = tuple(self.depths[int(i)] for i in self.beta_depth.detach().argmax(-1))
        w = tuple(self.widths[int(i)] for i in self.beta_width.detach().argmax(-1))
        return d, w

    def genotype(self, gamma: float = 1.0) -> Genotype:
        return derive_genotype(self.alphas_normal, self.alphas_reduce, self.ops, gamma)


# ----------------------------------------------------------------------------
# expected OPs
# ----------------------------------------------------------------------------
class ExpectedOps:
    """``E[OPs]`` of the final network under the macro / micro softmaxes (see the module docstring).

    ``template`` holds the final network's :class:`CellNetSpec` fields (``init_channels``, ``resolution``,
    ``in_channels``, ``num_classes``, ``stem_multiplier``, ``inter_cell_skip``, ...); its OPs come from
    :func:`bnhw.estimators.ops.cell_fixed_ops` and :func:`~bnhw.estimators.ops.cell_edge_ops`.
    """

    def __init__(self, depths: tuple[int, ...], widths: tuple[float, ...], nodes: int, ops: tuple[str, ...],
                 **template: Any):
        from ..estimators import ops as ops_est

        self.depths, self.widths = tuple(sorted(depths)), tuple(sorted(widths))   # BarsNetwork's order
        self.nodes, self.ops = nodes, tuple(ops)
        self.template = dict(template)
        self.placeholder = placeholder_genotype(nodes)
        nd, nw = len(self.depths), len(self.widths)
        fixed = torch.zeros((nd,) * STAGES + (nw,) * STAGES, dtype=torch.float64)
        for di in itertools.product(range(nd), repeat=STAGES):
            for wi in itertools.product(range(nw), repeat=STAGES):
                fixed[di + wi] = float(ops_est.cell_fixed_ops(self.spec(
                    self.placeholder, tuple(self.depths[i] for i in di), tuple(self.widths[i] for i in wi))))
        self.fixed = fixed
        c0, res = self.template["init_channels"], self.template["resolution"]
        table = torch.zeros(STAGES, nw, len(self.ops), dtype=torch.float64)
        for s in range(STAGES):
            for i, w in enumerate(self.widths):
                c, size = stage_channels(c0, s, w), res // (2 ** s)
                for k, o in enumerate(self.ops):
                    table[s, i, k] = float(ops_est.cell_edge_ops(o, c, size))
        self.edge_table = table                      # stage x width x op: OPs of one edge
        self.edge_weight = torch.tensor([min(1.0, 2.0 / (2 + i)) for i, _ in edge_inputs(nodes)],
                                        dtype=torch.float64)
        self.depth_values = torch.tensor(self.depths, dtype=torch.float64)

    def spec(self, genotype: Genotype, stage_cells: tuple[int, ...], stage_widths: tuple[float, ...],
             **kw: Any) -> CellNetSpec:
        fields = {**self.template, **kw}
        return CellNetSpec(genotype, cells=sum(stage_cells) + STAGES - 1, stage_cells=tuple(stage_cells),
                           stage_widths=tuple(float(w) for w in stage_widths), **fields)

    def smallest_fixed(self) -> float:
        """The stem / preprocessing / classifier OPs of the smallest layout (a lower bound of every OPs)."""
        return float(self.fixed.min())

    def __call__(self, depth_probs: Tensor, width_probs: Tensor, normal_probs: Tensor,
                 reduce_probs: Tensor) -> Tensor:
        pd, pw = depth_probs.double(), width_probs.double()
        joint = torch.einsum("a,b,c,d,e,f->abcdef", pd[0], pd[1], pd[2], pw[0], pw[1], pw[2])
        e_fixed = (joint * self.fixed).sum()
        cell_n = torch.einsum("e,eo,swo->sw", self.edge_weight, normal_probs.double(), self.edge_table)
        cell_r = torch.einsum("e,eo,swo->sw", self.edge_weight, reduce_probs.double(), self.edge_table)
        e_depth = (pd * self.depth_values).sum(-1)                       # expected cells per stage
        e_edges = (e_depth * (pw * cell_n).sum(-1)).sum() + (pw[1:] * cell_r[1:]).sum()
        return e_fixed + e_edges

    def of(self, net: BarsNetwork, micro_grad: bool = True) -> Tensor:
        """``E[OPs]`` of ``net``'s current softmaxes; ``micro_grad=False`` treats the cell probabilities
        as constants (the gradient reaches the macro parameters only)."""
        pd, pw = net.probs()
        pn, pr = F.softmax(net.alphas_normal, -1), F.softmax(net.alphas_reduce, -1)
        if not micro_grad:
            pn, pr = pn.detach(), pr.detach()
        return self(pd, pw, pn, pr)


def auto_spec_channels(budget: float, depths: tuple[int, ...], widths: tuple[float, ...], nodes: int,
                       ops: tuple[str, ...], *, multiple: int = 2, max_channels: int = 1024, **template: Any) -> int:
    """The final network's ``init_channels`` when none is given: the largest multiple of ``multiple`` whose
    ``E[OPs]`` with every choice uniform (macro and micro, as the search starts) is within ``budget``, so
    the budget sits inside the macro space (the largest layouts exceed it, the smallest are well below)
    and the search starts at the boundary the OPs term enforces.  ``multiple`` when even that exceeds it."""
    def uniform_ops(c: int) -> float:
        exp = ExpectedOps(depths, widths, nodes, ops, **{**template, "init_channels": c})
        nd, nw, n = len(exp.depths), len(exp.widths), len(edge_inputs(nodes))
        pd = torch.full((STAGES, nd), 1.0 / nd, dtype=torch.float64)
        pw = torch.full((STAGES, nw), 1.0 / nw, dtype=torch.float64)
        pc = torch.full((n, len(exp.ops)), 1.0 / len(exp.ops), dtype=torch.float64)
        return float(exp(pd, pw, pc, pc))

    lo, hi = 1, max(1, max_channels // multiple)        # in units of ``multiple``; lo is assumed to fit
    if uniform_ops(lo * multiple) > budget:
        return lo * multiple
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if uniform_ops(mid * multiple) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo * multiple


# ----------------------------------------------------------------------------
# shrinking a derived layout into the budget
# ----------------------------------------------------------------------------
def shrink_to_budget(spec: CellNetSpec, budget: float, depths: tuple[int, ...], widths: tuple[float, ...]
                     ) -> tuple[CellNetSpec, list[str]]:
    """``spec`` (a stage layout) made to fit ``budget`` (``count_ops``) by lowering, one step at a time, a
    stage's width to the next smaller choice while any can be, then a stage's depth; each step takes the
    fitting candidate with the most OPs, or the one that saves the most.  Returns the spec and the steps."""
    from ..estimators.ops import format_ops
    from .bnas import spec_ops

    depths, widths = tuple(sorted(depths)), tuple(sorted(widths))
    steps: list[str] = []
    ops = spec_ops(spec)

    def one_step_smaller(field: str, choices: tuple) -> list[tuple[CellNetSpec, str]]:
        """Every layout with one stage's ``field`` lowered to the next smaller of ``choices``."""
        out = []
        for s in range(STAGES):
            now = getattr(spec, field)[s]
            smaller = [x for x in choices if x < now]
            if smaller:
                values = list(getattr(spec, field))
                values[s] = smaller[-1]
                extra = {"cells": sum(values) + STAGES - 1} if field == "stage_cells" else {}
                what = "width" if field == "stage_widths" else "depth"
                out.append((spec.replace(**{field: tuple(values)}, **extra),
                            f"stage {s + 1} {what} {now:g} -> {smaller[-1]:g}"))
        return out

    while ops > budget:
        cands = one_step_smaller("stage_widths", widths) or one_step_smaller("stage_cells", depths)
        if not cands:
            raise BnhwError(f"budget {format_ops(budget)} OPs is below the smallest BARS network of the derived "
                            f"cell ({format_ops(ops)} OPs at {spec.init_channels} channels, "
                            f"{spec.resolution}x{spec.resolution}); raise the budget or lower the channels")
        scored = [(spec_ops(c), c, why) for c, why in cands]
        fitting = [t for t in scored if t[0] <= budget]
        ops, spec, why = max(fitting, key=lambda t: t[0]) if fitting else min(scored, key=lambda t: t[0])
        steps.append(why)
    return spec, steps


# ----------------------------------------------------------------------------
# the search
# ----------------------------------------------------------------------------
@dataclass
class BarsResult:
    spec: CellNetSpec                     # the derived network, shrunk into the budget
    derived_spec: CellNetSpec             # the argmax layout before shrinking
    shrink_steps: list[str]
    ops: float                            # count_ops of ``spec``
    expected_ops: float                   # E[OPs] at the end of the search
    genotype: Genotype
    ops_names: tuple[str, ...]            # candidate operations (columns of the alphas)
    alphas_normal: Tensor
    alphas_reduce: Tensor
    depth_probs: Tensor
    width_probs: Tensor
    history: list[dict]
    config: BarsConfig
    network: BarsNetwork | None = field(default=None, repr=False)

    @property
    def alphas_history(self) -> list[dict]:
        return [h["alphas"] for h in self.history]

    def to_dict(self) -> dict:
        return {"method": "bars", "spec": self.spec.to_dict(), "short": self.spec.short(), "ops": self.ops,
                "budget": self.config.budget, "expected_ops": self.expected_ops,
                "derived_spec": self.derived_spec.to_dict(), "shrink_steps": self.shrink_steps,
                "genotype": self.genotype.to_dict(), "candidate_ops": list(self.ops_names),
                "depths": list(self.config.depths), "widths": list(self.config.widths),
                "depth_probs": self.depth_probs.tolist(), "width_probs": self.width_probs.tolist(),
                "config": json.loads(config_json(self.config)),
                "alphas": {"normal": self.alphas_normal.tolist(), "reduce": self.alphas_reduce.tolist()},
                "history": self.history}


def run_bars(train_data: Any, val_data: Any | None = None, cfg: BarsConfig | None = None,
             out_dir: str | Path | None = None, resume: bool = False, progress: Progress | None = None,
             num_classes: int | None = None, name: str | None = None) -> BarsResult:
    """Run the BARS search (module docstring) and return the derived :class:`CellNetSpec` within
    ``cfg.budget`` OPs (counted by ``count_ops`` at ``cfg.spec_resolution``).

    Same data / checkpoint (``bars_search.pt`` in ``out_dir``) / resume / progress contract as
    :func:`bnhw.design.bnas.run_bnas`; the ``"epoch"`` event also carries ``expected_ops``,
    ``ops_penalty``, ``depth_probs``, ``width_probs``, ``spec`` (the argmax network, short text) and
    ``spec_ops`` (its ``count_ops``).  Raises :class:`BnhwError` before any training when the budget is
    below the stem / preprocessing / classifier OPs of the smallest layout.
    """
    from ..estimators.ops import format_ops
    from .bnas import spec_ops

    if cfg is None:
        raise BnhwError("BARS needs a config with an OPs budget")
    cfg.validate()
    halves = split_halves(train_data, val_data, cfg)
    (wx, wy), (ax, ay) = halves
    classes = num_classes or int(max(int(wy.max()), int(ay.max()))) + 1
    in_ch = int(wx.shape[1])
    res = int(wx.shape[-1])
    if res % 4:
        raise BnhwError(f"search resolution {res} is not divisible by 4 (the two reductions)")
    assert cfg.budget is not None  # cfg.validate() refuses a missing budget
    budget = float(cfg.budget)
    template: dict[str, Any] = dict(resolution=cfg.spec_resolution, in_channels=in_ch, num_classes=classes,
                    stem_multiplier=cfg.stem_multiplier, inter_cell_skip=cfg.inter_cell_skip, space="bars")
    channels = cfg.spec_channels or auto_spec_channels(budget, cfg.depths, cfg.widths, cfg.nodes, cfg.ops,
                                                       **template)
    expected = ExpectedOps(cfg.depths, cfg.widths, cfg.nodes, cfg.ops, init_channels=channels, **template)
    if expected.smallest_fixed() > budget:
        raise BnhwError(f"budget {format_ops(budget)} OPs is below the smallest BARS network "
                        f"({format_ops(expected.smallest_fixed())} OPs for its stem, preprocessing and classifier "
                        f"at {channels} channels, {cfg.spec_resolution}x{cfg.spec_resolution}); raise the "
                        f"budget{' or lower the channels' if cfg.spec_channels else ''}")
    torch.manual_seed(cfg.seed)
    net = BarsNetwork(classes, in_ch, cfg.init_channels, cfg.nodes, cfg.stem_multiplier, cfg.ops, cfg.depths,
                      cfg.widths, cfg.inter_cell_skip)
    ckpt = Path(out_dir) / BARS_CHECKPOINT if out_dir is not None else None
    spec_name = name if name is not None else f"bars-{format_ops(budget)}"

    def derived() -> CellNetSpec:
        d, w = net.derive_layout()
        return expected.spec(net.genotype(cfg.gamma), d, w, name=spec_name)

    def arch_loss(epoch: int) -> tuple[Tensor, dict]:
        reg, info = micro_regularizer(net, cfg, epoch)
        e_ops = expected.of(net, micro_grad=cfg.ops_grad_micro)
        pen = cfg.mu * ops_penalty(e_ops, budget, cfg.ops_penalty)
        return reg + pen.float(), {**info, "expected_ops": float(e_ops.detach()), "ops_penalty": float(pen.detach())}

    def describe() -> dict:
        s = derived()
        with torch.no_grad():
            pd, pw = net.probs()
            e_ops = float(expected.of(net))
        return {"genotype": s.genotype.short(), "genotype_dict": s.genotype.to_dict(), "spec": s.short(),
                "spec_ops": spec_ops(s), "expected_ops": e_ops,
                "depth_probs": pd.detach().tolist(), "width_probs": pw.detach().tolist()}

    groups: list[dict[str, Any]] = [{"params": net.micro_parameters()},
              {"params": net.macro_parameters(), "lr": cfg.macro_lr if cfg.macro_lr is not None else cfg.arch_lr}]
    history = alternating_search(net, cfg, halves, arch_loss=arch_loss, describe=describe, checkpoint=ckpt,
                                 resume=resume, progress=progress, kind="bars", arch_groups=groups)
    first = derived()
    spec, steps = shrink_to_budget(first, budget, cfg.depths, cfg.widths)
    pd, pw = net.probs()
    with torch.no_grad():
        e_ops = float(expected.of(net))
    return BarsResult(spec, first, steps, spec_ops(spec), e_ops, spec.genotype, net.ops,
                      net.alphas_normal.detach().clone(), net.alphas_reduce.detach().clone(), pd.detach().clone(),
                      pw.detach().clone(), history, cfg, net)
