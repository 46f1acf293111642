"""BNAS v2 cell search (paper 001, Sec. 4 and 6.1): a DARTS-style differentiable search over the binary
cell space, with the diversity regularizer (Eq. 6) and the Zeroise-aware derivation (Eq. 5).

Search network
--------------
:class:`SearchNetwork` stacks :class:`SearchCell` s on the template of the
final network (:class:`~bnhw.spec.cells.CellNetSpec`, the BNAS v2 cell
template of Fig. 5-(b)): the 8-bit stem (:class:`~bnhw.quant.layers.Stem`),
``cells`` cells with reductions at 1/3 and 2/3 of the depth (the layout of
:meth:`CellNetSpec.layout`), global average pooling and the classifier
(:class:`~bnhw.quant.layers.Classifier`).  A cell preprocesses its inputs
``c_{k-2}``, ``c_{k-1}`` to its width ``C`` (a binary 1 x 1 conv, or a
binary factorised reduction when ``c_{k-2}`` is twice the size), every edge
``i -> j`` is a :class:`MixedOp`, the softmax-weighted sum of every
candidate operation (BN without affine parameters, as DARTS), a node sums
its incoming edges, and the output concatenates the nodes; with
``inter_cell_skip`` the preprocessed ``c_{k-1}`` (2 x 2 average pooled in a
reduction cell) is added to every node's slot of the concatenation.
``inter_cell_skip=False`` is the paper's *No Skip* ablation,
``zeroise=False`` its *No Zeroise* ablation (Zeroise is discarded from the
candidates, so it can never be derived), ``separable=True`` adds the binary
separable convolutions the paper excludes.

Objective
---------
DARTS first order: each step takes one Adam step on the architecture
parameters (lr 3e-4, betas (0.5, 0.999), weight decay 1e-3) on a batch of
the *architecture half* of the data, then one SGD step on the weights
(momentum 0.9, weight decay 3e-4, cosine-annealed learning rate from
``lr`` to ``lr_min`` over the epochs, gradient norm clipped at 5) on a
batch of the *weight half*.  The architecture loss is Eq. 6::

    L~ = L_CE - lambda * H(p) * exp(-t / tau)

with ``H(p)`` the entropy of the distribution over architectures that the
architecture parameters define: the edges' choices are independent
categoricals ``p_e = softmax(alpha_e)``, so the entropy of their joint
distribution is the **sum over the edges** (normal and reduction cell) of
each edge's entropy.  ``t`` is the 0-based epoch (``t = 0`` in the first
epoch), ``lambda = 1`` and ``tau = 7.7`` as in Sec. 6.1; ``diversity=False``
is the *No Div* ablation.  The regularizer only depends on the architecture
parameters, so it only enters the architecture step.

Derivation (Eq. 5)
------------------
Each edge keeps its best operation under ``p* = max[p_z / gamma, p_op1,
...]`` (:func:`select_op`), Zeroise included when it wins (BNAS keeps
Zeroise in the final cell); each node keeps the two incoming edges with the
highest ``p*`` (:func:`derive_genotype`).

:func:`run_bnas` runs the search with a checkpoint after every epoch
(atomic; ``resume=True`` continues after the last finished epoch and gives
the same result as an uninterrupted run on the CPU) and returns the derived
:class:`~bnhw.spec.cells.Genotype`; :func:`fit_to_budget` stacks it into
the largest :class:`~bnhw.spec.cells.CellNetSpec` within an OPs budget.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BnhwError
from ..quant.cellops import CELL_OPS, SEP_OPS, ZEROISE, BinConvOp, BinSepConvOp, make_op
from ..quant.layers import Classifier, Stem
from ..spec import Precision
from ..spec.cells import BNAS_VARIANTS, CellNetSpec, Genotype
from .train import batches, load_training_checkpoint, restore_training_state, save_training_checkpoint

if TYPE_CHECKING:
    from .bars import BarsNetwork

#: a differentiable cell-search network: BNAS's or BARS's (alphas, arch / micro / weight parameters, ops)
CellSearchNet: TypeAlias = "SearchNetwork | BarsNetwork"

__all__ = ["CellSearchConfig", "BnasConfig", "BnasResult", "MixedOp", "SearchCell", "SearchNetwork",
           "candidate_ops", "edge_count", "edge_inputs", "entropy", "diversity_term", "select_op",
           "derive_genotype", "run_bnas", "fit_to_budget", "spec_ops", "BNAS_CELL_LADDER", "BNAS_CHECKPOINT",
           "alternating_search"]

BNAS_CHECKPOINT = "bnas_search.pt"
#: the cell counts of BNAS v2 Table 5 (the variants' "ladder"), smallest first
BNAS_CELL_LADDER: tuple[int, ...] = tuple(sorted({v["cells"] for v in BNAS_VARIANTS.values()}))

Progress = Callable[[str, dict], None]


# ----------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------
@dataclass
class CellSearchConfig:
    """What BNAS and BARS share: the proxy network, the data split, both optimisers and the regularizer."""

    epochs: int = 8
    init_channels: int = 8           # C of the search network's first cells
    nodes: int = 4                   # intermediate nodes per cell
    stem_multiplier: int = 3
    batch_size: int = 32
    images_per_half: int | None = 256   # cap on each half (weights / architecture); None = all
    lr: float = 0.025                # weights: SGD, cosine-annealed from lr to lr_min
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-4            # architecture parameters: Adam (DARTS)
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    diversity: bool = True           # Eq. 6 (False: the "No Div" ablation)
    lam: float = 1.0
    tau: float = 7.7
    zeroise: bool = True             # False: the "No Zeroise" ablation (discarded from the candidates)
    separable: bool = False          # add the binary separable convs (excluded by the paper)
    inter_cell_skip: bool = True     # False: the "No Skip" ablation
    gamma: float = 1.0               # Eq. 5 (Table 5: 1 for CIFAR-10, 3 for ImageNet)
    seed: int = 0

    def validate(self) -> None:
        if self.epochs < 0:
            raise BnhwError(f"epochs must be >= 0, got {self.epochs}")
        if self.init_channels < 2 or self.nodes < 1 or self.stem_multiplier < 1:
            raise BnhwError("the search network needs init_channels >= 2, nodes >= 1 and stem_multiplier >= 1")
        if self.batch_size < 2:
            raise BnhwError(f"batch size must be >= 2 (batch norm), got {self.batch_size}")
        if self.images_per_half is not None and self.images_per_half < 2:
            raise BnhwError(f"images per half must be >= 2, got {self.images_per_half}")
        if not (self.lr > 0 and self.arch_lr > 0 and 0 <= self.lr_min <= self.lr):
            raise BnhwError("learning rates must be positive (and lr_min between 0 and lr)")
        if not self.gamma > 0:
            raise BnhwError(f"gamma (Eq. 5) must be > 0, got {self.gamma}")
        if not (self.tau > 0 and self.lam >= 0):
            raise BnhwError(f"the diversity regularizer needs tau > 0 and lambda >= 0, got {self.tau}, {self.lam}")

    @property
    def ops(self) -> tuple[str, ...]:
        return candidate_ops(self.zeroise, self.separable)


@dataclass
class BnasConfig(CellSearchConfig):
    """BNAS v2 search settings; the defaults keep a 2-core CPU search within a few minutes (16 x 16 digits).

    Sec. 6.1 searches with 8 cells, 16 channels, 50 epochs, batch 64 on half of CIFAR-10 each.
    """

    cells: int = 5

    def validate(self) -> None:
        super().validate()
        if self.cells < 1:
            raise BnhwError(f"cells must be >= 1, got {self.cells}")


def candidate_ops(zeroise: bool = True, separable: bool = False) -> tuple[str, ...]:
    """The candidate operations in their fixed order (:data:`~bnhw.quant.cellops.CELL_OPS` first)."""
    ops = CELL_OPS + (SEP_OPS if separable else ())
    return ops if zeroise else tuple(o for o in ops if o != ZEROISE)


def edge_count(nodes: int) -> int:
    """Edges of a search cell: node ``i`` has one edge from each of its ``2 + i`` possible inputs."""
    return sum(2 + i for i in range(nodes))


def edge_inputs(nodes: int) -> list[tuple[int, int]]:
    """``(node, input)`` of every edge, in the row order of the architecture parameters."""
    return [(i, j) for i in range(nodes) for j in range(2 + i)]


# ----------------------------------------------------------------------------
# Eq. 6 and Eq. 5
# ----------------------------------------------------------------------------
def entropy(alphas: Sequence[Tensor]) -> Tensor:
    """Sum over every edge (every row of every tensor) of the entropy of ``softmax(row)``, in nats."""
    total = None
    for a in alphas:
        logp = F.log_softmax(a, dim=-1)
        h = -(logp.exp() * logp).sum()
        total = h if total is None else total + h
    if total is None:
        raise BnhwError("no architecture parameters")
    return total


def diversity_term(alphas: Sequence[Tensor], epoch: float, lam: float = 1.0, tau: float = 7.7) -> Tensor:
    """The diversity regularizer of Eq. 6, ``-lambda * H(p) * exp(-epoch / tau)``, to add to the loss.

    ``H(p)`` is :func:`entropy`: the sum over the edges of each edge's entropy.
    """
    return -lam * math.exp(-epoch / tau) * entropy(alphas)


def select_op(probs: Tensor, ops: tuple[str, ...], gamma: float = 1.0) -> tuple[str, float]:
    """Eq. 5: the operation of one edge and its score ``p* = max[p_z / gamma, p_op1, ...]``.

    ``probs`` holds the edge's softmax weights in the order of ``ops``.  Zeroise is
    chosen only when ``p_z / gamma`` is strictly above every other operation's weight
    (at a tie the other operation wins); ties between other operations go to the
    first in ``ops``.  ``gamma = inf`` never chooses Zeroise unless it is the only
    candidate.
    """
    p = torch.as_tensor(probs, dtype=torch.float64).detach().reshape(-1)
    if p.numel() != len(ops) or not ops:
        raise BnhwError(f"{p.numel()} probabilities for {len(ops)} operations")
    if not gamma > 0:
        raise BnhwError(f"gamma must be > 0, got {gamma}")
    others = [i for i, o in enumerate(ops) if o != ZEROISE]
    if not others:
        return ops[0], float(p[0]) / gamma
    best = max(others, key=lambda i: (float(p[i]), -i))
    if ZEROISE in ops:
        z = ops.index(ZEROISE)
        pz = float(p[z]) / gamma
        if pz > float(p[best]):
            return ZEROISE, pz
    return ops[best], float(p[best])


def _derive_cell(alphas: Tensor, ops: tuple[str, ...], gamma: float, nodes: int) -> tuple[tuple[str, int], ...]:
    probs = F.softmax(alphas.detach().double(), dim=-1)
    edges: list[tuple[str, int]] = []
    row = 0
    for i in range(nodes):
        scored = []
        for j in range(2 + i):
            op, score = select_op(probs[row], ops, gamma)
            scored.append((score, j, op))
            row += 1
        scored.sort(key=lambda t: (-t[0], t[1]))            # highest p*, then the earlier input
        for _, j, op in sorted(scored[:2], key=lambda t: t[1]):
            edges.append((op, j))
    return tuple(edges)


def derive_genotype(alphas_normal: Tensor, alphas_reduce: Tensor, ops: tuple[str, ...],
                    gamma: float = 1.0) -> Genotype:
    """The discrete cells of the architecture parameters (rows in :func:`edge_inputs` order): each edge's
    operation by :func:`select_op` (Eq. 5, Zeroise kept when it wins), then each node's two incoming
    edges (from distinct inputs) with the highest ``p*``, listed by input."""
    for name, a in (("normal", alphas_normal), ("reduce", alphas_reduce)):
        if a.dim() != 2 or a.shape[1] != len(ops):
            raise BnhwError(f"alphas_{name} has shape {tuple(a.shape)}, expected (edges, {len(ops)})")
    nodes = 0
    while edge_count(nodes) < alphas_normal.shape[0]:
        nodes += 1
    if edge_count(nodes) != alphas_normal.shape[0] or alphas_reduce.shape[0] != alphas_normal.shape[0]:
        raise BnhwError(f"{alphas_normal.shape[0]} / {alphas_reduce.shape[0]} edges is no whole number of nodes")
    g = Genotype(_derive_cell(alphas_normal, ops, gamma, nodes), _derive_cell(alphas_reduce, ops, gamma, nodes))
    g.validate()
    return g


def random_genotype(ops: tuple[str, ...], nodes: int = 4, seed: int = 0) -> Genotype:
    """A cell drawn uniformly from what :func:`derive_genotype` can return: per node two distinct
    inputs, per edge any of ``ops``.  The random-architecture baseline a search must beat."""
    if not ops:
        raise BnhwError("no candidate operations")
    rng = random.Random(seed)

    def cell() -> tuple[tuple[str, int], ...]:
        return tuple((rng.choice(ops), j) for i in range(nodes) for j in sorted(rng.sample(range(2 + i), 2)))

    g = Genotype(cell(), cell())
    g.validate()
    return g


# ----------------------------------------------------------------------------
# search modules
# ----------------------------------------------------------------------------
def run_op(op: nn.Module, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """``op(x)``; with a channel ``mask`` (``1 x C x 1 x 1``) the binary convolutions' ±1 inputs are
    multiplied by it (a masked channel then feeds zeros, not sign(0) = +1, to the XNOR conv)."""
    if mask is None:
        return op(x)
    if isinstance(op, BinConvOp):
        return op.bn(op.conv(op.sign(x) * mask))
    if isinstance(op, BinSepConvOp):
        return run_op(op.pointwise, run_op(op.depthwise, x, mask), mask)
    return op(x)


class MixedOp(nn.Module):
    """One edge of the search cell: ``sum_o w_o * o(x)`` over the candidate operations (BN without affine)."""

    def __init__(self, channels: int, stride: int, ops: tuple[str, ...]):
        super().__init__()
        self.op_names = tuple(ops)
        self.branches = nn.ModuleList(make_op(o, channels, stride, affine=False) for o in ops)

    def forward(self, x: Tensor, weights: Tensor, mask: Tensor | None = None) -> Tensor:
        out = None
        for name, w, op in zip(self.op_names, weights, self.branches):
            if name == ZEROISE:                 # w * 0: contributes nothing, not even a gradient
                continue
            y = w * run_op(op, x, mask)
            out = y if out is None else out + y
        if out is None:                         # only Zeroise
            out = self.branches[0](x) * weights[0]
        return out


class BinFactorizedReduce(nn.Module):
    """``c_in -> c_out`` at half the size: two binary 1 x 1 stride-2 convs, on ``x`` and on ``x`` shifted
    by one pixel, concatenated (DARTS's factorised reduction with binary convs)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = False):
        super().__init__()
        self.a = BinConvOp(c_in, c_out // 2, 1, 2, affine=affine)
        self.b = BinConvOp(c_in, c_out - c_out // 2, 1, 2, affine=affine)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return torch.cat([run_op(self.a, x, mask), run_op(self.b, x[:, :, 1:, 1:], mask)], 1)


def _preprocess(c_in: int, c_out: int, reduce: bool) -> nn.Module:
    return BinFactorizedReduce(c_in, c_out) if reduce else BinConvOp(c_in, c_out, 1, affine=False)


#: one input of a cell: ``(weight, tensor, channel mask of the tensor or None)`` per candidate; a plain
#: network has one candidate of weight 1, BARS's depth choice several
StateMix = list[tuple[Any, Tensor, Tensor | None]]


class SearchCell(nn.Module):
    """A cell of the search network (the template of the module docstring).

    ``c_pp`` / ``c_p``: the channels of each candidate of the inputs ``c_{k-2}`` / ``c_{k-1}`` (one each
    in BNAS; BARS mixes several after its depth choices), each with its own preprocessing.
    """

    def __init__(self, nodes: int, c_pp: Sequence[int], c_p: Sequence[int], channels: int, reduction: bool,
                 reduction_prev: bool, ops: tuple[str, ...], inter_cell_skip: bool = True):
        super().__init__()
        self.nodes, self.channels = nodes, channels
        self.reduction, self.inter_cell_skip = reduction, inter_cell_skip
        self.pre0 = nn.ModuleList(_preprocess(c, channels, reduction_prev) for c in c_pp)
        self.pre1 = nn.ModuleList(_preprocess(c, channels, False) for c in c_p)
        self.edges = nn.ModuleList(MixedOp(channels, 2 if reduction and j < 2 else 1, ops)
                                   for _, j in edge_inputs(nodes))

    @staticmethod
    def _mix(pre: nn.ModuleList, state: StateMix, mask: Tensor | None) -> Tensor:
        if len(state) != len(pre):
            raise BnhwError(f"cell input has {len(state)} candidates, the cell expects {len(pre)}")
        out = None
        for m, (w, t, in_mask) in zip(pre, state):
            y = m(t, in_mask) if isinstance(m, BinFactorizedReduce) else run_op(m, t, in_mask)
            y = y if isinstance(w, float) and w == 1.0 else w * y
            out = y if out is None else out + y
        assert out is not None  # a cell input has at least one candidate state
        return out if mask is None else out * mask

    def forward(self, s0: StateMix | Tensor, s1: StateMix | Tensor, weights: Tensor,
                mask: Tensor | None = None) -> Tensor:
        """``weights``: the softmaxed architecture parameters of this kind of cell (edges x ops); ``mask``:
        the channel mask (``1 x C x 1 x 1``) of BARS's width choice, applied to every state."""
        s0 = [(1.0, s0, None)] if isinstance(s0, Tensor) else s0
        s1 = [(1.0, s1, None)] if isinstance(s1, Tensor) else s1
        states = [self._mix(self.pre0, s0, mask), self._mix(self.pre1, s1, mask)]
        row = 0
        for i in range(self.nodes):
            node = None
            for j in range(2 + i):
                y = self.edges[row](states[j], weights[row], mask)
                node = y if node is None else node + y
                row += 1
            assert node is not None  # every node has 2 + i >= 2 input edges
            states.append(node if mask is None else node * mask)
        out = states[2:]
        if self.inter_cell_skip:
            skip = F.avg_pool2d(states[1], 2, 2) if self.reduction else states[1]
            out = [n + skip for n in out]
        return torch.cat(out, 1)


def placeholder_genotype(nodes: int) -> Genotype:
    cell = tuple((ZEROISE, j) for _ in range(nodes) for j in (0, 1))
    return Genotype(cell, cell)


class SearchNetwork(nn.Module):
    """The BNAS search network: stem, ``cells`` search cells in the layout of
    :meth:`CellNetSpec.layout`, classifier; the architecture parameters are ``alphas_normal`` and
    ``alphas_reduce`` (edges x ops, initialised ``1e-3 * N(0, 1)`` as DARTS)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, cells: int = 5, init_channels: int = 8,
                 nodes: int = 4, stem_multiplier: int = 3, ops: tuple[str, ...] = CELL_OPS,
                 inter_cell_skip: bool = True, precision: Precision | None = None):
        super().__init__()
        self.ops, self.nodes = tuple(ops), nodes
        precision = precision or Precision()
        layout = CellNetSpec(placeholder_genotype(nodes), cells=cells, init_channels=init_channels,
                             resolution=2 ** 8, stem_multiplier=stem_multiplier).layout()
        c_stem = stem_multiplier * init_channels
        self.stem = Stem(in_channels, c_stem, 3, 1, precision)
        self.cells = nn.ModuleList()
        c_pp, c_p, red_prev = c_stem, c_stem, False
        for lay in layout:
            cell = SearchCell(nodes, [c_pp], [c_p], lay["channels"], lay["reduction"], red_prev, self.ops,
                              inter_cell_skip)
            self.cells.append(cell)
            c_pp, c_p, red_prev = c_p, nodes * lay["channels"], lay["reduction"]
        self.classifier = Classifier(c_p, num_classes, precision)
        self.reductions = sum(1 for lay in layout if lay["reduction"])
        n = edge_count(nodes)
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(n, len(self.ops)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(n, len(self.ops)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def micro_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, x: Tensor) -> Tensor:
        wn = F.softmax(self.alphas_normal, dim=-1)
        wr = F.softmax(self.alphas_reduce, dim=-1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, wr if cell.reduction else wn)
        return self.classifier(s1)

    def genotype(self, gamma: float = 1.0) -> Genotype:
        return derive_genotype(self.alphas_normal, self.alphas_reduce, self.ops, gamma)


# ----------------------------------------------------------------------------
# the alternating (first-order DARTS) search loop, shared with BARS
# ----------------------------------------------------------------------------
def _tensors(data: Any) -> tuple[Tensor, Tensor]:
    if isinstance(data, tuple | list) and len(data) == 2:
        return data[0], data[1]
    if hasattr(data, "tensors"):
        return data.tensors()
    raise BnhwError("data must be an image set (with .tensors()) or an (images, labels) pair")


def split_halves(train_data: Any, val_data: Any | None, cfg: CellSearchConfig
                 ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``(weight half, architecture half)``: ``val_data`` is the architecture half when given, else a seeded
    random half of ``train_data`` (DARTS holds out half of the training data); each capped at
    ``images_per_half``."""
    x, y = _tensors(train_data)
    if val_data is None:
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.seed * 7 + 1))
        half = len(y) // 2
        w_idx, a_idx = perm[:half], perm[half:2 * half]
        wx, wy, ax, ay = x[w_idx], y[w_idx], x[a_idx], y[a_idx]
    else:
        wx, wy = x, y
        ax, ay = _tensors(val_data)
    cap = cfg.images_per_half
    if cap is not None:
        wx, wy, ax, ay = wx[:cap], wy[:cap], ax[:cap], ay[:cap]
    if min(len(wy), len(ay)) < 2:
        raise BnhwError(f"too few images for the search ({len(wy)} / {len(ay)} per half, need >= 2)")
    return (wx, wy), (ax, ay)


def cosine_lr(cfg: CellSearchConfig, epoch: int) -> float:
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * epoch / max(1, cfg.epochs)))


def _alphas_log(net: CellSearchNet) -> dict:
    return {"normal": net.alphas_normal.detach().tolist(), "reduce": net.alphas_reduce.detach().tolist()}


def config_json(cfg: Any) -> str:
    return json.dumps(asdict(cfg), sort_keys=True, default=str)


def _betas(b: Sequence[float]) -> tuple[float, float]:
    """Adam's two betas (a JSON config holds them as a list)."""
    b1, b2 = b
    return b1, b2


def alternating_search(net: CellSearchNet, cfg: CellSearchConfig, halves, *, arch_loss: Callable[[int], tuple],
                       describe: Callable[[], dict], checkpoint: Path | None, resume: bool,
                       progress: Progress | None, kind: str, arch_groups: list[dict] | None = None) -> list[dict]:
    """First-order DARTS: per step an Adam step on ``net.arch_parameters()`` (or the parameter groups
    ``arch_groups``; cross-entropy on the architecture half plus ``arch_loss(epoch)[0]``), then an SGD
    step on ``net.weight_parameters()`` on the weight half.  After each epoch: a log (with ``describe()``'s
    entries and the alphas), an atomic checkpoint and a ``progress("epoch", log)``.  Returns the per-epoch
    logs (all of them after a resume)."""
    report = progress or (lambda event, info: None)
    (wx, wy), (ax, ay) = halves
    weights = net.weight_parameters()
    w_opt = torch.optim.SGD(weights, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    a_opt = torch.optim.Adam(arch_groups or net.arch_parameters(), lr=cfg.arch_lr, betas=_betas(cfg.arch_betas),
                             weight_decay=cfg.arch_weight_decay)
    history: list[dict] = []
    start = 0
    if resume and checkpoint is not None and checkpoint.exists():
        st = load_training_checkpoint(checkpoint)
        if st.get("kind") != kind:
            raise BnhwError(f"{checkpoint}: not a {kind} search checkpoint")
        if st.get("config") != config_json(cfg):
            raise BnhwError(f"{checkpoint}: was searched with other settings; resume with the same options")
        start, history = restore_training_state(st, weights=net, w_optimizer=w_opt, a_optimizer=a_opt)
        report("resumed", {"epoch": start})
    steps = min(len(wy) // cfg.batch_size or 1, len(ay) // cfg.batch_size or 1)
    for epoch in range(start, cfg.epochs):
        lr = cosine_lr(cfg, epoch)
        for g in w_opt.param_groups:
            g["lr"] = lr
        net.train()
        gw = torch.Generator().manual_seed(cfg.seed * 1000003 + epoch)
        ga = torch.Generator().manual_seed(cfg.seed * 1000003 + epoch + 500009)
        sums = {"loss": 0.0, "arch_loss": 0.0, "train_acc": 0.0, "arch_acc": 0.0}
        n = 0
        extra_log: dict = {}
        for step, (iw, ia) in enumerate(zip(batches(len(wy), cfg.batch_size, gw),
                                            batches(len(ay), cfg.batch_size, ga))):
            # architecture step (first order: the current weights)
            a_opt.zero_grad(set_to_none=True)
            out = net(ax[ia])
            ce_a = F.cross_entropy(out, ay[ia])
            reg, extra_log = arch_loss(epoch)
            (ce_a + reg).backward()
            a_opt.step()
            sums["arch_loss"] += float(ce_a.detach())
            sums["arch_acc"] += float((out.argmax(1) == ay[ia]).float().mean())
            # weight step
            w_opt.zero_grad(set_to_none=True)
            out = net(wx[iw])
            loss = F.cross_entropy(out, wy[iw])
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
            w_opt.step()
            sums["loss"] += float(loss.detach())
            sums["train_acc"] += float((out.argmax(1) == wy[iw]).float().mean())
            n += 1
            report("step", {"epoch": epoch + 1, "epochs": cfg.epochs, "step": step + 1, "steps": steps,
                            "loss": float(loss.detach()), "arch_loss": float(ce_a.detach())})
        log = {"epoch": epoch + 1, "epochs": cfg.epochs, "lr": lr, **{k: v / max(1, n) for k, v in sums.items()},
               **extra_log, **describe(), "alphas": _alphas_log(net)}
        history.append(log)
        if checkpoint is not None:
            save_training_checkpoint(checkpoint, weights=net.state_dict(), w_optimizer=w_opt.state_dict(),
                                     a_optimizer=a_opt.state_dict(), epoch=epoch + 1, history=history,
                                     config=config_json(cfg), kind=kind, ops=list(net.ops))
        report("epoch", log)
    return history


# ----------------------------------------------------------------------------
# BNAS
# ----------------------------------------------------------------------------
@dataclass
class BnasResult:
    genotype: Genotype
    ops: tuple[str, ...]                  # the candidate operations (columns of the alphas)
    alphas_normal: Tensor
    alphas_reduce: Tensor
    history: list[dict]                   # per epoch: losses, accuracies, entropy, genotype, alphas
    config: BnasConfig
    network: SearchNetwork | None = field(default=None, repr=False)

    @property
    def alphas_history(self) -> list[dict]:
        """Per epoch ``{"normal": [[...]], "reduce": [[...]]}`` (the raw architecture parameters)."""
        return [h["alphas"] for h in self.history]

    def to_dict(self) -> dict:
        return {"method": "bnas", "genotype": self.genotype.to_dict(), "short": self.genotype.short(),
                "ops": list(self.ops), "gamma": self.config.gamma, "config": json.loads(config_json(self.config)),
                "alphas": {"normal": self.alphas_normal.tolist(), "reduce": self.alphas_reduce.tolist()},
                "history": self.history}


def micro_regularizer(net: CellSearchNet, cfg: CellSearchConfig, epoch: int) -> tuple[Tensor, dict]:
    alphas = net.micro_parameters()
    with torch.no_grad():
        h = float(entropy(alphas))
    if not cfg.diversity or cfg.lam == 0:
        return torch.zeros(()), {"entropy": h, "diversity": 0.0}
    reg = diversity_term(alphas, epoch, cfg.lam, cfg.tau)
    return reg, {"entropy": h, "diversity": float(reg.detach())}


def run_bnas(train_data: Any, val_data: Any | None = None, cfg: BnasConfig | None = None,
             out_dir: str | Path | None = None, resume: bool = False, progress: Progress | None = None,
             num_classes: int | None = None) -> BnasResult:
    """Run the BNAS v2 search (see the module docstring).

    ``train_data`` / ``val_data``: image sets (``.tensors()``) or ``(x, y)`` pairs at the search
    resolution (divisible by 4, e.g. 16); without ``val_data`` the training data is split in halves.
    ``out_dir``: where ``bnas_search.pt`` is checkpointed after every epoch (None: no checkpoint).
    ``progress(event, info)``: ``"resumed"`` {epoch}, ``"step"`` {epoch, epochs, step, steps, loss,
    arch_loss}, ``"epoch"`` {epoch, epochs, lr, loss, arch_loss, train_acc, arch_acc, entropy,
    diversity, genotype (short text), genotype_dict, alphas}.
    """
    cfg = cfg or BnasConfig()
    cfg.validate()
    halves = split_halves(train_data, val_data, cfg)
    (wx, wy), (ax, ay) = halves
    classes = num_classes or int(max(int(wy.max()), int(ay.max()))) + 1
    torch.manual_seed(cfg.seed)
    net = SearchNetwork(classes, int(wx.shape[1]), cfg.cells, cfg.init_channels, cfg.nodes, cfg.stem_multiplier,
                        cfg.ops, cfg.inter_cell_skip)
    res = int(wx.shape[-1])
    if res % (2 ** net.reductions):
        raise BnhwError(f"search resolution {res} is not divisible by 2^{net.reductions} (the reductions)")
    ckpt = Path(out_dir) / BNAS_CHECKPOINT if out_dir is not None else None

    def describe() -> dict:
        g = net.genotype(cfg.gamma)
        return {"genotype": g.short(), "genotype_dict": g.to_dict()}

    history = alternating_search(net, cfg, halves, arch_loss=lambda e: micro_regularizer(net, cfg, e),
                                 describe=describe, checkpoint=ckpt, resume=resume, progress=progress, kind="bnas")
    return BnasResult(net.genotype(cfg.gamma), net.ops, net.alphas_normal.detach().clone(),
                      net.alphas_reduce.detach().clone(), history, cfg, net)


# ----------------------------------------------------------------------------
# stacking a genotype into a network within an OPs budget
# ----------------------------------------------------------------------------
def spec_ops(spec: CellNetSpec) -> float:
    """OPs of a cell network (:func:`bnhw.estimators.ops.count_ops`)."""
    from ..estimators import ops as ops_est

    return float(ops_est.count_ops(spec).ops)


def _largest_channels(make: Callable[[int], CellNetSpec], budget: float, lo: int, hi: int,
                      multiple: int) -> tuple[CellNetSpec, float] | None:
    """The spec with the largest channels ``c`` (a multiple of ``multiple`` in [lo, hi]) within ``budget``
    (OPs grow with the channels)."""
    k_lo, k_hi = -(-lo // multiple), hi // multiple
    if k_lo > k_hi:
        return None
    first = make(k_lo * multiple)
    ops = spec_ops(first)
    if ops > budget:
        return None
    best = (first, ops)
    while k_lo < k_hi:                        # invariant: k_lo fits
        mid = (k_lo + k_hi + 1) // 2
        s = make(mid * multiple)
        o = spec_ops(s)
        if o <= budget:
            k_lo, best = mid, (s, o)
        else:
            k_hi = mid - 1
    return best


def fit_to_budget(genotype: Genotype, budget: float, *, cells: int | None = None, resolution: int = 32,
                  in_channels: int = 3, num_classes: int = 10, stem_multiplier: int = 3,
                  inter_cell_skip: bool = True, name: str | None = None, min_channels: int = 4,
                  max_channels: int = 1024, channel_multiple: int = 2, precision: Precision | None = None,
                  space: str = "bnas") -> CellNetSpec:
    """The largest network stacked from ``genotype`` whose OPs (``count_ops``) are within ``budget``.

    With ``cells`` the depth is fixed and the initial channels are the largest multiple of
    ``channel_multiple`` in ``[min_channels, max_channels]`` that fits.  Without it every cell count of
    the Table 5 ladder (:data:`BNAS_CELL_LADDER`) gets its largest fitting channels, and the one with the
    most OPs within the budget wins (fewer cells on a tie).  Raises :class:`BnhwError` when even
    ``min_channels`` does not fit.
    """
    if not budget > 0:
        raise BnhwError(f"budget must be > 0 OPs, got {budget}")
    ladder = (cells,) if cells is not None else BNAS_CELL_LADDER
    best: tuple[CellNetSpec, float] | None = None
    for n in ladder:
        def make(c: int, n: int = n) -> CellNetSpec:
            return CellNetSpec(genotype, cells=n, init_channels=c, name=name if name is not None else f"bnas-{n}c{c}",
                               resolution=resolution, in_channels=in_channels, num_classes=num_classes,
                               stem_multiplier=stem_multiplier, inter_cell_skip=inter_cell_skip,
                               precision=precision or Precision(), space=space)
        got = _largest_channels(make, budget, min_channels, max_channels, channel_multiple)
        if got is not None and (best is None or got[1] > best[1]):
            best = got
    if best is None:
        from ..estimators.ops import format_ops

        n = ladder[0]
        c = -(-min_channels // channel_multiple) * channel_multiple
        smallest = spec_ops(CellNetSpec(genotype, cells=n, init_channels=c, resolution=resolution,
                                        in_channels=in_channels, num_classes=num_classes,
                                        stem_multiplier=stem_multiplier, inter_cell_skip=inter_cell_skip))
        raise BnhwError(f"budget {format_ops(budget)} OPs is below the smallest network of this cell "
                        f"({n} cells, {c} channels at {resolution}x{resolution}: {format_ops(smallest)} OPs); "
                        f"raise the budget{' or use fewer cells' if cells is None or cells > 1 else ''}")
    return best[0]
