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
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import BudgetError
from ..spec import ArchSpec


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

    def to_dict(self) -> dict:
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


def count_ops(spec: ArchSpec) -> OpsReport:
    """Per-layer and total FLOPs / BOPs / Int8OPs / OPs of ``spec``."""
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


def ops_of(spec: ArchSpec) -> float:
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
