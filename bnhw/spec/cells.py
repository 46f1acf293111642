"""Cell-based binary architectures (BNAS v2, BARS): the genotype of a cell and the spec of a network
stacked from cells.

A **cell** (DARTS / BNAS v2 Fig. 5) has two inputs, the outputs ``c_{k-2}`` and
``c_{k-1}`` of the two previous cells (the stem's output for the first cell),
each first mapped to the cell's width ``C`` by a preprocessing binary 1 x 1
conv, ``s0 = pre0(c_{k-2})`` and ``s1 = pre1(c_{k-1})``; when ``c_{k-2}`` is
twice the size of ``c_{k-1}`` (after a reduction cell) ``pre0`` is a
factorised reduction: binary 1 x 1 stride-2 convs on ``c_{k-2}`` and on
``c_{k-2}`` shifted by one pixel, to ``C // 2`` and ``C - C // 2`` channels,
concatenated.  The cell has ``nodes`` intermediate nodes; node ``i`` sums two edges, each an
operation (:data:`bnhw.quant.cellops.CELL_OPS`) applied to an earlier state
(0 = ``s0``, 1 = ``s1``, ``2 + j`` = node ``j``).  The cell's output
concatenates the intermediate nodes (``nodes * C`` channels).  In a
**reduction** cell the edges from the two inputs have stride 2 and ``C``
doubles.  With **inter-cell skip connections** (BNAS v2 Sec. 4.2, the red
lines of Fig. 5-(b)) ``skip = s1`` (2 x 2 stride-2 average pooled in a
reduction cell) is added to every node before the concatenation, ``out =
concat(node_0 + skip, ..., node_{n-1} + skip)``: each cell forwards its input
through one 1 x 1 binary conv whatever its edges compute (with every edge
``zeroise`` its output is the tiled ``skip``), so information and gradients
pass from cell to cell around the edge operations.  A preprocessing conv
that no edge (and, for ``pre1``, no skip) reads is not built.
:mod:`bnhw.quant.cellnet` builds these networks.

A **network** (:class:`CellNetSpec`): a ``stem_bits``-bit 3 x 3 stride-1 stem conv to
``stem_multiplier * init_channels`` channels, ``cells`` cells with reductions
at 1/3 and 2/3 of the depth, global average pooling and a float classifier
(BNAS v2 Table 5 names the variants by ``cells`` and ``init_channels``).
BARS's macro level chooses ``stage_cells`` (cells per stage) and
``stage_widths`` (width multipliers) instead of the uniform layout.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

from ..errors import BnhwError, SpecError
from .arch import Precision, atomic_write_text, check_keys, int_field

__all__ = ["ZEROISE", "CELL_OPS", "SEP_OPS", "ALL_OPS", "Genotype", "CellNetSpec", "BNAS_VARIANTS", "bnas_variant", "is_cell_spec",
           "CELL_SPEC_KIND"]

CELL_SPEC_KIND: Final = "cells"

ZEROISE = "zeroise"
#: the BNAS v2 search space (Table 3), in a fixed order (architecture parameters index it)
CELL_OPS = ("zeroise", "max_pool_3x3", "avg_pool_3x3", "bin_conv_3x3", "bin_conv_5x5", "bin_dil_conv_3x3",
            "bin_dil_conv_5x5")
#: separable convolutions: only on request (the paper excludes them, Sec. 4.1.2)
SEP_OPS = ("bin_sep_conv_3x3", "bin_sep_conv_5x5")
ALL_OPS = CELL_OPS + SEP_OPS
EDGE_KEYS = ("op", "input")


@dataclass(frozen=True)
class Genotype:
    """Two edges per intermediate node for the normal and the reduction cell: ``(op, input)`` pairs,
    node ``i``'s edges at ``2 i`` and ``2 i + 1``; ``input`` 0 / 1 are the cell inputs, ``2 + j`` node ``j``."""

    normal: tuple[tuple[str, int], ...]
    reduce: tuple[tuple[str, int], ...]

    @property
    def nodes(self) -> int:
        return len(self.normal) // 2

    @classmethod
    def from_dict(cls, d: Any, path: str = "genotype") -> Genotype:
        check_keys(d, ("normal", "reduce"), path)
        cells = {}
        for kind in ("normal", "reduce"):
            edges = d.get(kind)
            if not isinstance(edges, list) or not edges or len(edges) % 2:
                raise SpecError(f"{path}.{kind}", "expected a non-empty list of edges, two per node")
            out = []
            for i, e in enumerate(edges):
                ep = f"{path}.{kind}[{i}]"
                if isinstance(e, list | tuple) and len(e) == 2:
                    e = {"op": e[0], "input": e[1]}
                check_keys(e, EDGE_KEYS, ep)
                op = e.get("op")
                if op not in ALL_OPS:
                    raise SpecError(f"{ep}.op", f"unknown operation {op!r} (one of {', '.join(ALL_OPS)})")
                out.append((op, int_field(e, "input", ep, minimum=0)))
            cells[kind] = tuple(out)
        g = cls(cells["normal"], cells["reduce"])
        g.validate(path)
        return g

    def validate(self, path: str = "genotype") -> None:
        if len(self.normal) != len(self.reduce):
            raise SpecError(path, f"normal cell has {len(self.normal) // 2} nodes, reduction cell "
                                  f"{len(self.reduce) // 2}")
        for kind, edges in (("normal", self.normal), ("reduce", self.reduce)):
            for i, (op, src) in enumerate(edges):
                node = i // 2
                if op not in ALL_OPS:
                    raise SpecError(f"{path}.{kind}[{i}].op", f"unknown operation {op!r}")
                if src >= 2 + node:
                    raise SpecError(f"{path}.{kind}[{i}].input",
                                    f"node {node} can read states 0..{1 + node} (the two cell inputs and "
                                    f"earlier nodes), got {src}")

    def to_dict(self) -> dict[str, Any]:
        return {k: [{"op": op, "input": src} for op, src in getattr(self, k)] for k in ("normal", "reduce")}

    def ops(self) -> set[str]:
        return {op for op, _ in self.normal + self.reduce}

    def short(self) -> str:
        def cell(edges: tuple[tuple[str, int], ...]) -> str:
            return " ".join(f"{op}<{src}" for op, src in edges)
        return f"normal[{cell(self.normal)}] reduce[{cell(self.reduce)}]"


@dataclass(frozen=True)
class CellNetSpec:
    """A network stacked from one normal and one reduction cell (see the module docstring); a
    :class:`~bnhw.spec.protocol.NetworkSpec`."""

    kind: ClassVar[Literal["cells"]] = CELL_SPEC_KIND

    genotype: Genotype
    cells: int = 8
    init_channels: int = 16
    name: str = ""
    resolution: int = 32
    in_channels: int = 3
    num_classes: int = 10
    stem_multiplier: int = 3
    inter_cell_skip: bool = True
    #: BARS macro level: cells per stage (3 stages, a reduction cell between stages) and the width
    #: multiplier of each stage relative to the uniform layout; empty = the uniform BNAS layout
    stage_cells: tuple[int, ...] = ()
    stage_widths: tuple[float, ...] = ()
    precision: Precision = field(default_factory=Precision)
    space: str = ""
    version: int = 1

    KEYS = ("version", "kind", "name", "space", "resolution", "in_channels", "num_classes", "cells",
            "init_channels", "stem_multiplier", "inter_cell_skip", "stage_cells", "stage_widths", "genotype",
            "precision")

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ layout
    def layout(self) -> list[dict[str, Any]]:
        """Per cell: ``reduction`` (bool), ``channels`` (its C), and the stride of its inputs."""
        if self.stage_cells:
            widths = self.stage_widths or (1.0,) * len(self.stage_cells)
            out = []
            for s, (n, w) in enumerate(zip(self.stage_cells, widths)):
                c = max(1, round(self.init_channels * (2 ** s) * w))
                if s > 0:
                    out.append({"reduction": True, "channels": c})
                out += [{"reduction": False, "channels": c} for _ in range(n)]
            return out
        reductions = {self.cells // 3, 2 * self.cells // 3}
        out, c = [], self.init_channels
        for i in range(self.cells):
            red = i in reductions and self.cells >= 3
            if red:
                c *= 2
            out.append({"reduction": red, "channels": c})
        return out

    @property
    def stem_channels(self) -> int:
        return self.stem_multiplier * self.init_channels

    # ------------------------------------------------------------------ validation / serialisation
    def validate(self) -> None:
        self.genotype.validate()
        if self.cells < 1:
            raise SpecError("cells", f"must be >= 1, got {self.cells}")
        if self.stage_cells:
            if len(self.stage_cells) != 3 or any(n < 1 for n in self.stage_cells):
                raise SpecError("stage_cells", "expected three stages of at least one cell each")
            if self.stage_widths and (len(self.stage_widths) != 3 or any(w <= 0 for w in self.stage_widths)):
                raise SpecError("stage_widths", "expected three positive width multipliers")
            if self.cells != sum(self.stage_cells) + 2:
                raise SpecError("cells", f"{self.cells} != sum(stage_cells) + 2 reduction cells "
                                         f"= {sum(self.stage_cells) + 2}")
        elif self.stage_widths:
            raise SpecError("stage_widths", "given without stage_cells")
        red = sum(1 for c in self.layout() if c["reduction"])
        if self.resolution % (2 ** red):
            raise SpecError("resolution", f"{self.resolution} is not divisible by 2^{red} (the reductions)")

    @classmethod
    def from_dict(cls, d: Any) -> CellNetSpec:
        check_keys(d, cls.KEYS, "")
        if d.get("kind") != CELL_SPEC_KIND:
            raise SpecError("kind", f"expected {CELL_SPEC_KIND!r} for a cell network")
        skip = d.get("inter_cell_skip", True)
        if not isinstance(skip, bool):
            raise SpecError("inter_cell_skip", f"expected true or false, got {skip!r}")
        widths = d.get("stage_widths", [])
        if not isinstance(widths, list) or not all(isinstance(w, int | float) for w in widths):
            raise SpecError("stage_widths", "expected a list of numbers")
        stage_cells = d.get("stage_cells", [])
        if not isinstance(stage_cells, list):
            raise SpecError("stage_cells", "expected a list of integers")
        return cls(
            genotype=Genotype.from_dict(d.get("genotype")),
            cells=int_field(d, "cells", ""),
            init_channels=int_field(d, "init_channels", ""),
            name=str(d.get("name", "")),
            resolution=int_field(d, "resolution", "", default=32),
            in_channels=int_field(d, "in_channels", "", default=3),
            num_classes=int_field(d, "num_classes", "", default=10, minimum=2),
            stem_multiplier=int_field(d, "stem_multiplier", "", default=3),
            inter_cell_skip=skip,
            stage_cells=tuple(int_field({"n": n}, "n", f"stage_cells[{i}]") for i, n in enumerate(stage_cells)),
            stage_widths=tuple(float(w) for w in widths),
            precision=Precision.from_dict(d.get("precision", {})),
            space=str(d.get("space", "")),
            version=int_field(d, "version", "", default=1),
        )

    def to_dict(self) -> dict[str, Any]:
        d = {"version": self.version, "kind": CELL_SPEC_KIND, "name": self.name, "space": self.space,
             "resolution": self.resolution, "in_channels": self.in_channels, "num_classes": self.num_classes,
             "cells": self.cells, "init_channels": self.init_channels, "stem_multiplier": self.stem_multiplier,
             "inter_cell_skip": self.inter_cell_skip, "genotype": self.genotype.to_dict(),
             "precision": self.precision.to_dict()}
        if self.stage_cells:
            d["stage_cells"] = list(self.stage_cells)
            d["stage_widths"] = list(self.stage_widths)
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> CellNetSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SpecError("", f"not valid JSON ({e.msg} at line {e.lineno})") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_text(path, self.to_json() + "\n")

    def replace(self, **changes: Any) -> CellNetSpec:
        return replace(self, **changes)

    def hardware_gaps(self) -> tuple[str, ...]:
        """What of this network has no lowering to the hardware IR (:mod:`bnhw.hw.lower_cellnet` lowers every
        operation and the cell structure): a node both of whose edges are ``zeroise`` (a constant zero tensor,
        which no hardware unit produces), one entry per such node naming its first cell, the node, the edges
        and the op."""
        layout = self.layout()
        out = []
        for kind, edges in (("normal", self.genotype.normal), ("reduction", self.genotype.reduce)):
            cells = [i for i, c in enumerate(layout) if c["reduction"] == (kind == "reduction")]
            for node in range(len(edges) // 2 if cells else 0):
                a, b = edges[2 * node], edges[2 * node + 1]
                if a[0] == b[0] == ZEROISE:
                    out.append(f"cell {cells[0]} ({kind} cell) node {node} (edges {2 * node} and {2 * node + 1}: "
                               f"both {ZEROISE}, a constant zero node)")
        return tuple(out)

    def short(self) -> str:
        lay = (f"stages {list(self.stage_cells)} x{list(self.stage_widths)}" if self.stage_cells
               else f"{self.cells} cells")
        return (f"{lay}, C={self.init_channels}{'' if self.inter_cell_skip else ', no inter-cell skips'}: "
                f"{self.genotype.short()}")


#: BNAS v2 Table 5: cells, initial channels, gamma (Eq. 5) of the published variants
BNAS_VARIANTS: dict[str, dict[str, int]] = {
    "mini": {"cells": 10, "init_channels": 24, "gamma": 1},
    "a": {"cells": 20, "init_channels": 36, "gamma": 1},
    "b": {"cells": 12, "init_channels": 64, "gamma": 1},
    "c": {"cells": 16, "init_channels": 108, "gamma": 1},
    "d": {"cells": 12, "init_channels": 64, "gamma": 3},
    "e": {"cells": 12, "init_channels": 68, "gamma": 3},
    "f": {"cells": 15, "init_channels": 68, "gamma": 3},
    "g": {"cells": 11, "init_channels": 74, "gamma": 3},
    "h": {"cells": 16, "init_channels": 128, "gamma": 3},
}


def bnas_variant(genotype: Genotype, variant: str, **kw: Any) -> CellNetSpec:
    """The BNAS-``variant`` network (Table 5) stacked from ``genotype``."""
    v = BNAS_VARIANTS.get(variant.lower())
    if v is None:
        raise BnhwError(f"unknown BNAS variant {variant!r}; choose from {', '.join(BNAS_VARIANTS)}")
    return CellNetSpec(genotype, cells=v["cells"], init_channels=v["init_channels"],
                       name=kw.pop("name", f"bnas-{variant.lower()}"), **kw)


def is_cell_spec(d: Mapping[str, Any] | Any) -> bool:
    from .protocol import spec_kind

    return spec_kind(d) == CELL_SPEC_KIND
