"""Operation counts with the NAS-BNN conventions (paper 003, Sec. 4.1.2).

    OPs = FLOPs + BOPs / 64 + Int8OPs / 8

* a multiply-accumulate counts once;
* a binary k x k conv with groups g costs k^2 * (Cin/g) * Cout * Hout * Wout BOPs
  (the block's k x k conv maps Cin -> Cin, its 1 x 1 conv Cin -> Cout);
* the 8-bit stem conv counts as Int8OPs (k^2 * Cin * Cout * Hout * Wout);
* the classifier counts as FLOPs: (C + 1) * classes;
* BN, activations, shortcut adds / pools and global pooling are not counted.

Counts are taken at the spec's nominal resolution (224x224 for the ImageNet
space), whatever resolution a proxy data set trains at.

Cell networks (BNAS v2 / BARS, :class:`~bnhw.spec.cells.CellNetSpec`,
built as :mod:`bnhw.quant.cellnet` builds them) follow the same conventions:

* the 8-bit 3 x 3 stem: Int8OPs; the classifier: (C + 1) * classes FLOPs;
* every binary conv is BOPs, k^2 * (Cin/g) * Cout * Hout * Wout: the
  preprocessing 1 x 1 convs (``cellK.pre0`` / ``cellK.pre1``; the factorised
  reduce is two 1 x 1 stride-2 convs to C/2 + C/2 channels, i.e. Cin * C *
  Hout * Wout in all) and the edge convs (``cellK.nodeI.eJ:op``): a dilated
  conv costs like an undilated one of its kernel (the zeros of the dilation
  are skipped), a separable conv is its depthwise k x k (``.dw``) plus its
  pointwise 1 x 1 (``.pw``) conv;
* a 3 x 3 max / average pool edge: 9 FLOPs per output element (9 * C *
  Hout * Wout), the one place where pooling is counted, since it is an
  operation the search chooses; zeroise: 0;
* node sums, concatenations, the inter-cell skip (its adds and its 2 x 2
  average pool, like NAS-BNN's shortcuts), BN and the global pooling: not
  counted.

For the searches, :func:`cell_edge_ops` gives the OPs of one edge and
:func:`cell_fixed_ops` everything else, so that for any genotype::

    count_ops(spec).ops == cell_fixed_ops(spec)
        + sum(cell_edge_ops(op, cell.channels, cell.out_size)
              for cell in cell_plan(spec) for op, _, _ in cell.edges)

(:func:`bnhw.quant.cellnet.cell_plan` lists each cell's C and output size;
without it: C from ``spec.layout()``, the output size is the resolution
halved once per reduction cell up to and including this one.)  The expected
OPs of a mixed edge under architecture weights ``alpha`` are then the
constant vector ``[cell_edge_ops(o, C, H) for o in ops]`` dotted with
``softmax(alpha)``, differentiable in ``alpha``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BudgetError
from ..spec import ArchSpec

if TYPE_CHECKING:
    from ..spec.cells import CellNetSpec


@dataclass(frozen=True)
class LayerOps:
    name: str
    kind: str            # "int8", "binary" or "float"
    in_channels: int
    out_channels: int
    kernel: int
    groups: int
    stride: int
    out_size: int
    flops: int = 0
    bops: int = 0
    int8ops: int = 0

    @property
    def ops(self) -> float:
        return self.flops + self.bops / 64 + self.int8ops / 8

    @property
    def macs(self) -> int:
        return self.flops + self.bops + self.int8ops


@dataclass(frozen=True)
class OpsReport:
    arch: str
    resolution: int
    layers: tuple[LayerOps, ...]

    @property
    def flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    @property
    def bops(self) -> int:
        return sum(layer.bops for layer in self.layers)

    @property
    def int8ops(self) -> int:
        return sum(layer.int8ops for layer in self.layers)

    @property
    def ops(self) -> float:
        return self.flops + self.bops / 64 + self.int8ops / 8

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "resolution": self.resolution,
            "totals": {"flops": self.flops, "bops": self.bops, "int8ops": self.int8ops, "ops": self.ops},
            "layers": [
                {"name": lo.name, "kind": lo.kind, "in_channels": lo.in_channels,
                 "out_channels": lo.out_channels, "kernel": lo.kernel, "groups": lo.groups,
                 "stride": lo.stride, "out_size": lo.out_size, "flops": lo.flops, "bops": lo.bops,
                 "int8ops": lo.int8ops, "ops": lo.ops}
                for lo in self.layers
            ],
        }


def count_ops(spec: ArchSpec | CellNetSpec) -> OpsReport:
    """Per-layer and total FLOPs / BOPs / Int8OPs / OPs of ``spec`` (an architecture or a cell network)."""
    if spec.kind == "cells":
        return OpsReport(spec.name or "cellnet", spec.resolution, tuple(lo for lo, _ in _cell_layers(spec)))
    st = spec.stem
    h = spec.stem_out_size
    layers = [LayerOps("stem", "int8", spec.in_channels, st.channels, st.kernel, 1, st.stride, h,
                       int8ops=st.kernel ** 2 * spec.in_channels * st.channels * h * h)]
    for g in spec.blocks():
        b, cin, o = g.block, g.in_channels, g.out_size
        layers.append(LayerOps(f"{g.name}.conv{b.kernel}x{b.kernel}", "binary", cin, cin, b.kernel, b.groups,
                               b.stride, o, bops=b.kernel ** 2 * (cin // b.groups) * cin * o * o))
        layers.append(LayerOps(f"{g.name}.conv1x1", "binary", cin, b.channels, 1, 1, 1, o,
                               bops=cin * b.channels * o * o))
    c = spec.final_channels
    layers.append(LayerOps("fc", "float", c, spec.num_classes, 1, 1, 1, 1, flops=(c + 1) * spec.num_classes))
    return OpsReport(spec.name or "arch", spec.resolution, tuple(layers))


# ----------------------------------------------------------------------------- cell networks
def cell_edge_cost(op: str, channels: int, out_size: int) -> tuple[int, int]:
    """``(FLOPs, BOPs)`` of one cell edge ``op`` whose output is ``out_size x out_size x channels``
    (the stride does not matter: the cost is per output element)."""
    from ..quant.cellops import op_geometry

    g = op_geometry(op)
    hw, c = out_size * out_size, channels
    if g.kind in ("max_pool", "avg_pool"):
        return g.kernel ** 2 * c * hw, 0
    if g.kind == "conv":
        return 0, g.kernel ** 2 * c * c * hw
    if g.kind == "sep_conv":
        return 0, g.kernel ** 2 * c * hw + c * c * hw
    return 0, 0                                                   # zeroise


def cell_edge_ops(op: str, channels: int, out_size: int) -> float:
    """OPs (FLOPs + BOPs / 64) of one cell edge ``op`` with output ``out_size x out_size x channels``.

    Summed over a genotype's edges (each at its cell's C and output size)
    and added to :func:`cell_fixed_ops`, it gives ``count_ops(spec).ops``
    exactly (see the module docstring).
    """
    flops, bops = cell_edge_cost(op, channels, out_size)
    return flops + bops / 64


def cell_fixed_ops(spec: CellNetSpec) -> float:
    """OPs of everything of a cell network that is not an edge: the stem, the preprocessing convs and
    the classifier.  Depends on the genotype only through which cell inputs its edges read (a
    preprocessing conv that nothing reads is not built; with inter-cell skips ``pre1`` always is)."""
    fixed = [lo for lo, is_edge in _cell_layers(spec) if not is_edge]
    return sum(lo.flops for lo in fixed) + sum(lo.bops for lo in fixed) / 64 + sum(lo.int8ops for lo in fixed) / 8


def _cell_layers(spec: CellNetSpec) -> list[tuple[LayerOps, bool]]:
    """The rows of a cell network in network order, each with whether it is an edge."""
    from ..quant.cellnet import STEM_KERNEL, cell_plan
    from ..quant.cellops import op_geometry

    r, c0, k = spec.resolution, spec.stem_channels, STEM_KERNEL
    rows = [(LayerOps("stem", "int8", spec.in_channels, c0, k, 1, 1, r,
                      int8ops=k * k * spec.in_channels * c0 * r * r), False)]
    plans = cell_plan(spec)
    for p in plans:
        c, h, o = p.channels, p.in_size, p.out_size
        if p.has_pre0:          # a 1x1 conv, or the factorised reduce (two 1x1 stride-2 convs, C/2 each)
            rows.append((LayerOps(f"cell{p.index}.pre0", "binary", p.in_channels_pp, c, 1, 1,
                                  2 if p.reduce_pp else 1, h, bops=p.in_channels_pp * c * h * h), False))
        if p.has_pre1:
            rows.append((LayerOps(f"cell{p.index}.pre1", "binary", p.in_channels_p, c, 1, 1, 1, h,
                                  bops=p.in_channels_p * c * h * h), False))
        for j, (op, _, stride) in enumerate(p.edges):
            g = op_geometry(op)
            name = f"cell{p.index}.node{j // 2}.e{j % 2}:{op}"
            flops, bops = cell_edge_cost(op, c, o)
            if g.kind == "sep_conv":
                dw = g.kernel ** 2 * c * o * o
                rows.append((LayerOps(name + ".dw", "binary", c, c, g.kernel, c, stride, o, bops=dw), True))
                rows.append((LayerOps(name + ".pw", "binary", c, c, 1, 1, 1, o, bops=bops - dw), True))
            else:
                kind = {"zero": "none", "conv": "binary"}.get(g.kind, "float")
                rows.append((LayerOps(name, kind, c, c, g.kernel, 1, stride, o, flops=flops, bops=bops), True))
    cf = plans[-1].out_channels
    rows.append((LayerOps("fc", "float", cf, spec.num_classes, 1, 1, 1, 1,
                          flops=(cf + 1) * spec.num_classes), False))
    return rows


def ops_of(spec: ArchSpec | CellNetSpec) -> float:
    """Total OPs of ``spec`` (a float; 1 OP = one MAC-equivalent)."""
    return count_ops(spec).ops


_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}
_BUDGET_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?\s*([KkMmGg]?)\s*$")


def parse_budget(text: str | float | int) -> float:
    """Parse an OPs budget: ``57M``, ``1.2G``, ``57e6``, ``57000000``, ``500k``.

    Suffixes K, M, G (either case) multiply by 1e3, 1e6, 1e9.  Anything else,
    zero, negative or non-finite budgets raise :class:`BudgetError`.
    """
    if isinstance(text, bool):
        raise BudgetError(f"invalid budget {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _BUDGET_RE.match(str(text))
        if not m:
            raise BudgetError(f"invalid budget {text!r}: expected a number with an optional K/M/G suffix, "
                              "e.g. 57M, 1.2G, 57e6 or 57000000")
        mant, exp, suf = m.groups()
        value = float(f"{mant}e{exp or 0}") * _SUFFIX[suf.upper()]
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(f"invalid budget {text!r}: must be a positive, finite number of OPs")
    return value


def format_ops(n: float, digits: int = 2) -> str:
    """``20772760`` -> ``20.77M``."""
    for suf, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.{digits}f}{suf}"
    return f"{n:.0f}"
