"""Search spaces as data: the NAS-BNN space (paper 003, Table 1 and Sec. 3.2)
and a CIFAR-scale variant of the same template.

A :class:`SearchSpace` lists, per stage, the choices of depth, width, kernel
size and groups and the stage's stride.  Architectures are plain
:class:`~bnhw.spec.ArchSpec` objects; the space samples, mutates and crosses
them over, always returning valid specs that satisfy the Non-Decreasing (ND)
channel constraint of Eq. 3 when the space enforces it, and counts its size
exactly (with and without ND) by dynamic programming over layer widths.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import BnhwError, SpecError
from .arch import ArchSpec, BlockSpec, Precision, StageSpec, StemSpec


@dataclass(frozen=True)
class StageChoices:
    """Choices of one searchable stage; ``stride`` is carried by its first block."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    kernels: tuple[int, ...]
    groups: tuple[int, ...]
    stride: int
    resolution: int = 0   # nominal input size of the stage (for display only)

    def __post_init__(self) -> None:
        for name in ("depths", "widths", "kernels", "groups"):
            vals = getattr(self, name)
            if not vals or list(vals) != sorted(set(vals)) or min(vals) < 1:
                raise ValueError(f"stage choices {name} must be sorted, unique and positive: {vals}")

    @property
    def layer_options(self) -> int:
        return len(self.widths) * len(self.kernels) * len(self.groups)


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    resolution: int
    num_classes: int
    stem_widths: tuple[int, ...]
    stages: tuple[StageChoices, ...]
    stem_kernel: int = 3
    stem_stride: int = 2
    in_channels: int = 3
    non_decreasing: bool = True

    # ------------------------------------------------------------------ basics
    @property
    def max_depth(self) -> int:
        return sum(max(s.depths) for s in self.stages)

    def with_constraint(self, non_decreasing: bool) -> SearchSpace:
        return replace(self, non_decreasing=non_decreasing)

    def for_task(self, num_classes: int) -> SearchSpace:
        """The same space with a classifier for ``num_classes`` (e.g. a proxy data set)."""
        return replace(self, num_classes=num_classes)

    def build(self, stem: int, stages: Sequence[Sequence[tuple[int, int, int]]], name: str = "",
              precision: Precision | None = None) -> ArchSpec:
        """An :class:`ArchSpec` of this space from per-stage ``(width, kernel, groups)`` layers
        (strides are the stages'); structural validity is checked, membership is not."""
        st = []
        for sc, layers in zip(self.stages, stages):
            st.append(StageSpec(tuple(
                BlockSpec(channels=w, kernel=k, groups=g, stride=sc.stride if i == 0 else 1)
                for i, (w, k, g) in enumerate(layers))))
        return ArchSpec(
            name=name, space=self.name, resolution=self.resolution, in_channels=self.in_channels,
            num_classes=self.num_classes,
            stem=StemSpec(channels=stem, kernel=self.stem_kernel, stride=self.stem_stride),
            stages=tuple(st), precision=precision or Precision())

    @staticmethod
    def _genes(spec: ArchSpec) -> tuple[int, list[list[tuple[int, int, int]]]]:
        return spec.stem.channels, [[(b.channels, b.kernel, b.groups) for b in s.blocks] for s in spec.stages]

    # ------------------------------------------------------------- validation
    def validate(self, spec: ArchSpec) -> None:
        """Raise :class:`SpecError` naming the field if ``spec`` is not in this space.

        The number of classes is the task's, not the space's: a subnet of the
        ImageNet space trained on a 10-class proxy set is still in the space
        (``num_classes`` here is only the default for new specs)."""
        def bad(field: str, msg: str) -> SpecError:
            return SpecError(field, f"{msg} (space {self.name})")

        if spec.resolution != self.resolution:
            raise bad("resolution", f"is {spec.resolution}, the space's nominal resolution is {self.resolution}")
        if spec.in_channels != self.in_channels:
            raise bad("in_channels", f"is {spec.in_channels}, the space has {self.in_channels}")
        if spec.stem.channels not in self.stem_widths:
            raise bad("stem.channels", f"{spec.stem.channels} not in {list(self.stem_widths)}")
        if (spec.stem.kernel, spec.stem.stride) != (self.stem_kernel, self.stem_stride):
            raise bad("stem", f"kernel/stride must be {self.stem_kernel}/{self.stem_stride}")
        if len(spec.stages) != len(self.stages):
            raise bad("stages", f"has {len(spec.stages)} stages, the space has {len(self.stages)}")
        prev = spec.stem.channels
        for si, (stage, sc) in enumerate(zip(spec.stages, self.stages)):
            d = stage.depth
            if d > max(sc.depths):
                raise bad(f"stages[{si}].blocks", f"depth {d} is deeper than the space allows (max {max(sc.depths)})")
            if d not in sc.depths:
                raise bad(f"stages[{si}].blocks", f"depth {d} not in {list(sc.depths)}")
            for bi, b in enumerate(stage.blocks):
                p = f"stages[{si}].blocks[{bi}]"
                if b.channels not in sc.widths:
                    raise bad(f"{p}.channels", f"{b.channels} not in {list(sc.widths)}")
                if b.kernel not in sc.kernels:
                    raise bad(f"{p}.kernel", f"{b.kernel} not in {list(sc.kernels)}")
                if b.groups not in sc.groups:
                    raise bad(f"{p}.groups", f"{b.groups} not in {list(sc.groups)}")
                want = sc.stride if bi == 0 else 1
                if b.stride != want:
                    raise bad(f"{p}.stride", f"is {b.stride}, the space fixes it to {want}")
                if self.non_decreasing and b.channels < prev:
                    raise bad(f"{p}.channels",
                              f"{b.channels} < {prev} of the previous layer violates the Non-Decreasing constraint")
                prev = b.channels

    def contains(self, spec: ArchSpec) -> bool:
        try:
            self.validate(spec)
        except SpecError:
            return False
        return True

    def satisfies_nd(self, spec: ArchSpec) -> bool:
        w = spec.widths()
        return all(b >= a for a, b in zip(w, w[1:]))

    # ------------------------------------------------------- canonical members
    def smallest(self) -> ArchSpec:
        """Fewest OPs: minimal depth and width, smallest kernel, most groups."""
        layers = [[(min(sc.widths), min(sc.kernels), max(sc.groups))] * min(sc.depths) for sc in self.stages]
        spec = self.build(min(self.stem_widths), layers, name=f"{self.name}-smallest")
        self.validate(spec)
        return spec

    def largest(self) -> ArchSpec:
        """Most OPs: maximal depth and width, largest kernel, fewest groups."""
        layers = [[(max(sc.widths), max(sc.kernels), min(sc.groups))] * max(sc.depths) for sc in self.stages]
        return self.build(max(self.stem_widths), layers, name=f"{self.name}-largest")

    # ---------------------------------------------------------------- sampling
    def _valid_groups(self, sc: StageChoices, cin: int) -> list[int]:
        gs = [g for g in sc.groups if cin % g == 0]
        if not gs:
            raise BnhwError(f"space {self.name}: no groups choice in {list(sc.groups)} divides {cin} channels")
        return gs

    def sample(self, rng: random.Random, name: str = "") -> ArchSpec:
        """A random architecture: depths uniform, then widths (sorted under ND), kernels, groups."""
        stem = rng.choice(self.stem_widths)
        prev = stem
        stages = []
        for sc in self.stages:
            d = rng.choice(sc.depths)
            if self.non_decreasing:
                allowed = [w for w in sc.widths if w >= prev]
                if not allowed:
                    raise BnhwError(f"space {self.name}: no width >= {prev} in {list(sc.widths)}")
                widths = sorted(rng.choice(allowed) for _ in range(d))
            else:
                widths = [rng.choice(sc.widths) for _ in range(d)]
            layers = []
            for w in widths:
                layers.append((w, rng.choice(sc.kernels), rng.choice(self._valid_groups(sc, prev))))
                prev = w
            stages.append(layers)
        return self.build(stem, stages, name=name)

    # ---------------------------------------------------------------- mutation
    def _width_bounds(self, flat: list[int], i: int) -> tuple[int, int]:
        lo = flat[i - 1] if i > 0 else 0
        hi = flat[i + 1] if i + 1 < len(flat) else 1 << 30
        return lo, hi

    def mutate(self, spec: ArchSpec, rng: random.Random, prob: float = 0.1, name: str = "") -> ArchSpec:
        """Resample each gene with probability ``prob``, never leaving the (ND) space.

        Depth genes add blocks at the end of a stage (width between the stage's
        last width and the next stage's first) or drop trailing blocks; a
        width gene is redrawn between its neighbours' widths under ND; groups
        are redrawn among the choices that divide the block's input width.
        """
        self.validate(spec)
        stem, stages = self._genes(spec)
        if rng.random() < prob:
            hi = stages[0][0][0] if self.non_decreasing else 1 << 30
            stem = rng.choice([w for w in self.stem_widths if w <= hi] or [stem])
        for si, sc in enumerate(self.stages):
            layers = stages[si]
            if rng.random() < prob:
                d = rng.choice(sc.depths)
                if d < len(layers):
                    del layers[d:]
                while len(layers) < d:
                    lo = layers[-1][0]
                    nxt = self._next_width(stages, si)
                    opts = [w for w in sc.widths if lo <= w <= nxt] if self.non_decreasing else list(sc.widths)
                    w = rng.choice(opts or [lo])
                    layers.append((w, rng.choice(sc.kernels), rng.choice(sc.groups)))
            for li in range(len(layers)):
                w, k, g = layers[li]
                if rng.random() < prob:
                    if self.non_decreasing:
                        flat = [stem] + [x[0] for s in stages for x in s]
                        idx = 1 + sum(len(s) for s in stages[:si]) + li
                        lo, hi = self._width_bounds(flat, idx)
                        w = rng.choice([c for c in sc.widths if lo <= c <= hi] or [w])
                    else:
                        w = rng.choice(sc.widths)
                if rng.random() < prob:
                    k = rng.choice(sc.kernels)
                if rng.random() < prob:
                    g = rng.choice(sc.groups)
                layers[li] = (w, k, g)
        child = self._repair(stem, stages, rng)
        return child.replace(name=name) if name else child

    @staticmethod
    def _next_width(stages: list[list[tuple[int, int, int]]], si: int) -> int:
        for s in stages[si + 1:]:
            if s:
                return s[0][0]
        return 1 << 30

    # --------------------------------------------------------------- crossover
    def crossover(self, a: ArchSpec, b: ArchSpec, rng: random.Random, name: str = "") -> ArchSpec:
        """Uniform crossover: each stage's depth and each layer's (width, kernel,
        groups) come from either parent; the child is repaired onto the ND space."""
        self.validate(a)
        self.validate(b)
        sa, la = self._genes(a)
        sb, lb = self._genes(b)
        stem = rng.choice((sa, sb))
        stages = []
        for si in range(len(self.stages)):
            d = rng.choice((len(la[si]), len(lb[si])))
            layers = []
            for li in range(d):
                opts = [p[si][li] for p in (la, lb) if li < len(p[si])]
                layers.append(rng.choice(opts))
            stages.append(layers)
        child = self._repair(stem, stages, rng)
        return child.replace(name=name) if name else child

    # ------------------------------------------------------------------ repair
    def _repair(self, stem: int, stages: list[list[tuple[int, int, int]]], rng: random.Random) -> ArchSpec:
        """Project genes onto the space: raise widths to keep ND (smallest
        allowed choice not below the previous width) and redraw groups that do
        not divide the input width."""
        prev = stem
        fixed = []
        for sc, layers in zip(self.stages, stages):
            out = []
            for w, k, g in layers:
                if self.non_decreasing and w < prev:
                    i = bisect.bisect_left(sc.widths, prev)
                    if i == len(sc.widths):
                        raise BnhwError(f"space {self.name}: cannot keep widths non-decreasing past {prev}")
                    w = sc.widths[i]
                if prev % g:
                    g = rng.choice(self._valid_groups(sc, prev))
                out.append((w, k, g))
                prev = w
            fixed.append(out)
        spec = self.build(stem, fixed)
        self.validate(spec)
        return spec

    # -------------------------------------------------------------------- size
    def size(self, non_decreasing: bool | None = None) -> int:
        """Exact number of distinct architectures (DP over the width of the previous layer)."""
        nd = self.non_decreasing if non_decreasing is None else non_decreasing
        states: dict[int, int] = {w: 1 for w in self.stem_widths}
        for sc in self.stages:
            total: dict[int, int] = {}
            cur = states
            for d in range(1, max(sc.depths) + 1):
                nxt: dict[int, int] = {}
                for cin, n in cur.items():
                    per = len(sc.kernels) * sum(1 for g in sc.groups if cin % g == 0)
                    for w in sc.widths:
                        if nd and w < cin:
                            continue
                        nxt[w] = nxt.get(w, 0) + n * per
                cur = nxt
                if d in sc.depths:
                    for w, n in cur.items():
                        total[w] = total.get(w, 0) + n
            states = total
        return sum(states.values())

    def describe(self) -> list[dict[str, Any]]:
        rows = [{"stage": "stem", "input": f"{self.resolution}x{self.resolution}", "depth": "1",
                 "widths": _fmt(self.stem_widths), "kernels": str(self.stem_kernel), "groups": "1",
                 "stride": str(self.stem_stride)}]
        for i, sc in enumerate(self.stages):
            rows.append({"stage": f"S{i + 1}", "input": f"{sc.resolution}x{sc.resolution}",
                         "depth": _fmt(sc.depths), "widths": _fmt(sc.widths), "kernels": _fmt(sc.kernels),
                         "groups": _fmt(sc.groups), "stride": str(sc.stride)})
        return rows


def _fmt(vals: Iterable[int]) -> str:
    vals = list(vals)
    return str(vals[0]) if len(vals) == 1 else "{" + ", ".join(map(str, vals)) + "}"


# ---------------------------------------------------------------------------
# the bundled spaces
# ---------------------------------------------------------------------------
def _stage_sizes(resolution: int, stem_stride: int, strides: Sequence[int]) -> list[int]:
    size = resolution // stem_stride
    out = []
    for s in strides:
        out.append(size)
        size //= s
    return out


def nasbnn_space(name: str, *, resolution: int, num_classes: int, width_mult: float = 1.0,
                 stem_stride: int = 2, stage_strides: Sequence[int] = (1, 2, 2, 2, 2),
                 description: str = "") -> SearchSpace:
    """The template of NAS-BNN Table 1, optionally scaled in width."""
    def w(*vals: int) -> tuple[int, ...]:
        return tuple(int(round(v * width_mult)) for v in vals)

    depths = ((2, 3), (2, 3), (2, 3), (8, 9), (2, 3))
    widths = (w(48, 64, 96), w(96, 128, 192), w(192, 256, 384), w(384, 512, 768), w(768, 1024, 1536))
    kernels = ((3,), (3, 5), (3, 5), (3, 5), (3, 5))
    groups = ((1,), (1, 2), (2, 4), (4, 8), (8, 16))
    sizes = _stage_sizes(resolution, stem_stride, stage_strides)
    stages = tuple(StageChoices(depths=d, widths=wi, kernels=k, groups=g, stride=s, resolution=r)
                   for d, wi, k, g, s, r in zip(depths, widths, kernels, groups, stage_strides, sizes))
    return SearchSpace(name=name, description=description, resolution=resolution, num_classes=num_classes,
                       stem_widths=w(24, 32, 48), stages=stages, stem_stride=stem_stride)


SPACES: dict[str, SearchSpace] = {
    "nasbnn-imagenet": nasbnn_space(
        "nasbnn-imagenet", resolution=224, num_classes=1000,
        description="NAS-BNN (paper 003) Table 1: MobileNetV1 template, 224x224, 1000 classes"),
    "nasbnn-cifar": nasbnn_space(
        "nasbnn-cifar", resolution=32, num_classes=10, width_mult=0.25, stem_stride=1,
        description="NAS-BNN template at CIFAR scale: 32x32, 10 classes, widths x0.25, stem stride 1 "
                    "(stages see 32, 32, 16, 8, 4)"),
}


def get_space(name: str) -> SearchSpace:
    try:
        return SPACES[name]
    except KeyError:
        raise BnhwError(f"unknown search space {name!r} (known: {', '.join(SPACES)})") from None
