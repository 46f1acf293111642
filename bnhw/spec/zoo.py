"""Named architectures: reference subnets from the papers and the canonical
members of the bundled spaces.  Any command that takes ``ARCH.json`` also
accepts one of these names (``bnhw ops nasbnn-d``).

NAS-BNN Table 6 (paper 003) as extracted from the PDF is partly garbled:
columns A and D reproduce their stated OPs exactly with the conventions of
:mod:`bnhw.estimators.ops` (A: 20.77M vs 21M, D: 124.09M vs 124M) and are
bundled; B, C, E and F lose or reorder cells in the extraction (their
recomputed OPs are 53M, 77M, 118M and 167M against 57M, 87M, 160M, 180M) and
are not bundled rather than guessed.  Column A lists seven S4 layers where
the space's minimum depth is eight; with eight it is the space's smallest
subnet and gives the 21M of the table.

The cell networks ``bnas-mini-example`` and ``bnas-a-example`` are the
BNAS v2 Table 5 macro layouts (BNAS-mini: 10 cells, C = 24; BNAS-A: 20
cells, C = 36) stacked from :data:`EXAMPLE_GENOTYPE`, a hand-written cell
that uses every operation of the search space.  It is an example for the
tools, **not** the cell BNAS v2 found (its Fig. 5 is not reproduced here),
so neither network's OPs or accuracy are the paper's.

The cell networks ``bnas-kv260-8x8`` and ``bars-kv260-8x8`` were **found by bnhw's own searches**
(``bnhw search --method bnas|bars --target kv260 --min-fps 20000`` at 8x8, docs/RESULTS.md has the
commands and what they measured), ``bnas-pynq-8x8`` and ``bars-pynq-8x8`` by the same searches for the
pynq-z2 (``--target pynq-z2 --min-fps 5000`` / ``2000``); their specs are checked in under ``zoo_nets/`` with the fixed-point
precision (``residual="fixed"``) the hardware runs.  Like every zoo net they have no trained weights:
the build flow gives them seeded fresh weights with batch-norm statistics estimated on digits images
(:func:`bnhw.hw.estimate.fresh_hardware_model`), or ``--checkpoint`` supplies trained ones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BnhwError
from .arch import ArchSpec
from .space import get_space

if TYPE_CHECKING:
    from .cells import CellNetSpec

#: an EXAMPLE cell (not a searched one, not the paper's): 4 nodes, ``(op, input)`` per edge, inputs
#: 0 = c_{k-2}, 1 = c_{k-1}, 2 + j = node j; every operation of the BNAS v2 space appears
EXAMPLE_GENOTYPE = {
    "normal": [["bin_conv_3x3", 0], ["bin_conv_3x3", 1],
               ["max_pool_3x3", 0], ["bin_dil_conv_3x3", 1],
               ["bin_conv_5x5", 2], ["avg_pool_3x3", 1],
               ["bin_dil_conv_5x5", 3], ["zeroise", 0]],
    "reduce": [["max_pool_3x3", 0], ["bin_conv_3x3", 1],
               ["avg_pool_3x3", 1], ["bin_dil_conv_3x3", 0],
               ["bin_conv_3x3", 2], ["max_pool_3x3", 1],
               ["bin_conv_5x5", 3], ["zeroise", 2]],
}


def _nasbnn_d() -> ArchSpec:
    sp = get_space("nasbnn-imagenet")
    return sp.build(48, [
        [(48, 3, 1), (96, 3, 1)],
        [(192, 5, 2), (192, 3, 2)],
        [(384, 3, 2), (384, 3, 4), (384, 3, 4)],
        [(768, 3, 4)] * 3 + [(768, 5, 8)] + [(768, 5, 4)] * 3 + [(768, 3, 4)],
        [(1536, 5, 8), (1536, 5, 8), (1536, 3, 8)],
    ], name="nasbnn-d")


def _named(space: str, which: str, name: str) -> Callable[[], ArchSpec]:
    def make() -> ArchSpec:
        sp = get_space(space)
        spec = sp.smallest() if which == "smallest" else sp.largest()
        return spec.replace(name=name)
    return make


def _bnas_example(variant: str) -> Callable[[], CellNetSpec]:
    def make() -> CellNetSpec:
        from .cells import Genotype, bnas_variant

        return bnas_variant(Genotype.from_dict(EXAMPLE_GENOTYPE), variant, name=f"bnas-{variant}-example")
    return make


ZOO_NETS = Path(__file__).with_name("zoo_nets")


def _checked_in(name: str) -> Callable[[], CellNetSpec]:
    def make() -> CellNetSpec:
        from .cells import CellNetSpec

        return CellNetSpec.from_json((ZOO_NETS / f"{name}.json").read_text())
    return make


ARCHS: dict[str, tuple[Callable[[], ArchSpec | CellNetSpec], str]] = {
    "nasbnn-a": (_named("nasbnn-imagenet", "smallest", "nasbnn-a"),
                 "NAS-BNN-A of paper 003 Table 6 (21M OPs); equals the smallest subnet"),
    "nasbnn-d": (_nasbnn_d, "NAS-BNN-D of paper 003 Table 6 (124M OPs)"),
    "nasbnn-smallest": (_named("nasbnn-imagenet", "smallest", "nasbnn-smallest"),
                        "smallest subnet of the NAS-BNN ImageNet space"),
    "nasbnn-largest": (_named("nasbnn-imagenet", "largest", "nasbnn-largest"),
                       "largest subnet of the NAS-BNN ImageNet space"),
    "nasbnn-cifar-smallest": (_named("nasbnn-cifar", "smallest", "nasbnn-cifar-smallest"),
                              "smallest subnet of the CIFAR-scale NAS-BNN space"),
    "nasbnn-cifar-largest": (_named("nasbnn-cifar", "largest", "nasbnn-cifar-largest"),
                             "largest subnet of the CIFAR-scale NAS-BNN space"),
    "bnas-mini-example": (_bnas_example("mini"),
                          "BNAS-mini layout (BNAS v2 Table 5) with an EXAMPLE cell, not the paper's searched cell"),
    "bnas-a-example": (_bnas_example("a"),
                       "BNAS-A layout (BNAS v2 Table 5) with an EXAMPLE cell, not the paper's searched cell"),
    "bnas-kv260-8x8": (_checked_in("bnas-kv260-8x8"),
                      "BNAS v2 cell found by bnhw search --method bnas --target kv260 --min-fps 20000 (8x8, fixed point)"),
    "bars-kv260-8x8": (_checked_in("bars-kv260-8x8"),
                      "BARS network found by bnhw search --method bars --target kv260 --min-fps 20000 (8x8, fixed point)"),
    "bnas-pynq-8x8": (_checked_in("bnas-pynq-8x8"),
                      "BNAS v2 cell found by bnhw search --method bnas --target pynq-z2 --min-fps 5000 (8x8, fixed point)"),
    "bars-pynq-8x8": (_checked_in("bars-pynq-8x8"),
                      "BARS network found by bnhw search --method bars --target pynq-z2 --min-fps 2000 (8x8, fixed point)"),
}


def get_arch(name: str) -> ArchSpec | CellNetSpec:
    try:
        make, _ = ARCHS[name]
    except KeyError:
        raise BnhwError(f"{name!r} is neither a .json file nor a known architecture "
                        f"(known: {', '.join(ARCHS)})") from None
    return make()
