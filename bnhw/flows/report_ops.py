"""Terminal rendering of OPs counts and search spaces (``bnhw ops``, ``bnhw space``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..estimators.ops import OpsReport, count_ops, format_ops
from ..spec import ArchSpec
from ..spec.space import SPACES, SearchSpace

if TYPE_CHECKING:
    from ..spec.cells import CellNetSpec


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True, width=120)


def render_ops(rep: OpsReport, spec: ArchSpec | CellNetSpec, *, totals_only: bool = False, console: Console | None = None) -> None:
    con = console or _console()
    if not totals_only:
        t = Table(title=f"{rep.arch}: operations at {rep.resolution}x{rep.resolution} (counted, not measured)",
                  title_justify="left")
        for col in ("layer", "kind", "Cin", "Cout", "k", "g", "s", "out", "FLOPs", "BOPs", "Int8OPs", "OPs"):
            t.add_column(col, justify="left" if col in ("layer", "kind") else "right")
        for lo in rep.layers:
            t.add_row(lo.name, lo.kind, str(lo.in_channels), str(lo.out_channels), str(lo.kernel), str(lo.groups),
                      str(lo.stride), f"{lo.out_size}x{lo.out_size}", format_ops(lo.flops), format_ops(lo.bops),
                      format_ops(lo.int8ops), format_ops(lo.ops))
        con.print(t)
    con.print(f"arch       {escape(spec.short())}")   # a cell genotype's "[...]" is not markup
    con.print(f"FLOPs      {rep.flops:>15,d}  ({format_ops(rep.flops)})")
    con.print(f"BOPs       {rep.bops:>15,d}  ({format_ops(rep.bops)})  /64 = {format_ops(rep.bops / 64)}")
    con.print(f"Int8OPs    {rep.int8ops:>15,d}  ({format_ops(rep.int8ops)})  /8 = {format_ops(rep.int8ops / 8)}")
    con.print(f"OPs        {rep.ops:>15,.0f}  ({format_ops(rep.ops)})  = FLOPs + BOPs/64 + Int8OPs/8")


def render_space(sp: SearchSpace, console: Console | None = None) -> None:
    con = console or _console()
    t = Table(title=f"{sp.name}: {sp.description}", title_justify="left")
    for col in ("stage", "input", "depth", "widths", "kernels", "groups", "stride"):
        t.add_column(col)
    for row in sp.describe():
        t.add_row(*row.values())
    con.print(t)
    con.print(f"classifier  global avg pool -> Linear(C, {sp.num_classes})")
    con.print(f"size        {sp.size(non_decreasing=False):.3g} architectures without the Non-Decreasing "
              f"constraint, {sp.size(non_decreasing=True):.3g} with it")
    con.print(f"smallest    {format_ops(count_ops(sp.smallest()).ops)} OPs   {sp.smallest().short()}")
    con.print(f"largest     {format_ops(count_ops(sp.largest()).ops)} OPs   {sp.largest().short()}")


def render_space_list(console: Console | None = None) -> None:
    con = console or _console()
    for name, sp in SPACES.items():
        lo, hi = count_ops(sp.smallest()).ops, count_ops(sp.largest()).ops
        con.print(f"{name:18s} {format_ops(lo):>8s} .. {format_ops(hi):>8s} OPs  {sp.description}")
