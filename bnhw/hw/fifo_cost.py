"""Resource cost of a stream FIFO, as finn-plus 1.6.1 models its ``fifo.sv`` StreamingFIFO.

What is modelled
----------------
finn-plus builds every StreamingFIFO from one RTL module, ``finn-rtllib/fifo/hdl/fifo.sv``, and
estimates it with a model kept in ``finn/util/resource_models.py`` (``_resolve`` picks the storage
style, ``_fifo_cost`` prices it; ``StreamingFIFO.get_fifo_cost`` calls both).  This module is
bnhw's own re-implementation of that model, so a FIFO depth chosen by bnhw's cycle simulator can
be costed without importing FINN.  Only the non-Versal half is written out: 7-series and
UltraScale+ parts (the pynq-z2's xc7z020 is a 7-series Zynq).  Versal differs in its RAMB18E5
and URAM288E5 aspect ladders, in the SRL cascade mux and in a flat URAM read-path cost; none of
that is here.

The model has two parts.

* **Style** (:func:`fifo_style`): a copy of the ``RAM_STYLE_EFF`` ladder in ``fifo.sv``.  It
  depends on the depth, the width and the requested style only -- not on the part.
* **Cost** (:func:`fifo_cost`): tile counts are exact (read off the RTL's memory geometry and
  the RAMB18 / URAM288 simple-dual-port aspects); the LUT terms are FINN's linear fits to
  out-of-context Vivado runs, so LUTs are estimates that FINN reports to within a few percent.
  BRAM is counted in RAMB18 halves (``bram18``), URAM in URAM288 blocks.

URAM on a part without URAM
---------------------------
Neither FINN nor this module looks at the part when choosing the style: a FIFO deeper than 2028
entries (and at least 5 bits wide) resolves to ``"ultra"`` and is costed in URAM288 blocks even
on the xc7z020, which has no URAM.  On such a part Vivado drops the attribute and builds the
array in BRAM instead; like FINN, this module reports the cost *as asked*, not as delivered.
A caller that targets a URAM-less part should request ``"block"`` explicitly for deep FIFOs, or
translate the URAM figure itself.

Widths
------
``width_bits`` is the **padded** stream width, the one FINN hands the model
(``HWCustomOp.get_instream_width_padded``).  FINN pads every AXI stream width with
``qonnx.util.basic.roundup_to_integer_multiple(width, 8)``: up to the next multiple of 8, with
anything below 8 becoming 8 (a 1-bit stream is 8 bits wide); only a width of 0 stays 0.
:func:`padded_width` does the same, so a FINN-equivalent figure is
``fifo_cost(depth, padded_width(raw_bits))``.  The model itself accepts any width >= 1.

Depth below 2
-------------
``fifo.sv`` refuses ``DEPTH < 2`` and FINN's cost model returns zero for it (such FIFOs appear
as placeholders, e.g. depth 0).  Here both :func:`fifo_style` and :func:`fifo_cost` report
style ``"none"`` for them, and the cost is zero.  (FINN's ``_resolve`` alone would say ``"srl"``
at those depths, because its first test is ``depth <= 33``.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

__all__ = ["FIFO_STYLES", "FifoCost", "build_style", "fifo_cost", "fifo_style", "padded_width"]

#: Storage styles a FIFO may be requested in (FINN's ``ram_style`` attribute values).
FIFO_STYLES = ("auto", "srl", "distributed", "block", "ultra")

# --- thresholds of fifo.sv's RAM_STYLE_EFF ladder (exact, from the RTL) ----------------------
_SHIFT_ALWAYS_MAX_DEPTH = 33  # up to here a shift register, whatever was requested
_SHIFT_AUTO_MAX_DEPTH = 64  # ... and, under "auto", up to here for narrow words
_SHIFT_AUTO_MAX_WIDTH = 11  # "narrow" = fewer than 12 bits
_LUTRAM_AUTO_MAX_DEPTH = 257  # 256 LUTRAM rows plus the output register
_LUTRAM_AUTO_MAX_WIDTH = 4  # words under 5 bits stay in LUTRAM at any depth
_BRAM_AUTO_MAX_DEPTH = 2028  # deeper than this goes to URAM

# --- memory geometry (exact) -------------------------------------------------------------------
# Smallest address space that fills one primitive: RAMB18 as 512 x 36, URAM288 as 4096 x 72.
_BRAM_MIN_ADDR_BITS = 9
_URAM_MIN_ADDR_BITS = 12
# The URAM path keeps 16 entries in an output queue outside the memory array.
_URAM_QUEUE_DEPTH = 16
# RAMB18 simple-dual-port aspects as (bits per row, rows), widest first.
_RAMB18_ASPECTS = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))
# UltraScale+ URAM288 has the single 72 x 4096 aspect; a word is never split across aspects.
_URAM_WIDTH, _URAM_ROWS = 72, 4096

# --- fitted constants (FINN's fits to Vivado runs) ---------------------------------------------
# A small high address space joins the URAM when its RAMB18 count reaches this many times
# its URAM count; otherwise it takes BRAM of its own.
_HI_SPACE_URAM_RATIO = 7
# A high address space is put in a RAM primitive (not LUTRAM) when rows^2 * width >= 2^20.
_HI_SPACE_RAM_THRESHOLD = 2**20


@dataclass(frozen=True)
class FifoCost:
    """Resources of one FIFO: RAMB18 halves, URAM288 blocks, LUTs, and the storage style used.

    ``style`` is one of ``"srl"``, ``"distributed"``, ``"block"``, ``"ultra"``, or ``"none"`` for a
    FIFO shallower than 2 entries (which costs nothing).
    """

    bram18: int
    uram: int
    lut: int
    style: str

    def as_dict(self) -> dict[str, int | str]:
        """The fields as a plain dict (``bram18``, ``uram``, ``lut``, ``style``)."""
        return asdict(self)


def padded_width(bits: int) -> int:
    """A stream width rounded up as FINN pads AXI streams: to a multiple of 8, at least 8; 0 stays 0.

    Mirrors ``get_instream_width_padded`` (``roundup_to_integer_multiple(bits, 8)`` for a non-zero
    width).
    """
    if bits < 0:
        raise ValueError(f"stream width must be >= 0, got {bits}")
    if bits == 0:
        return 0
    return max(8, -(-bits // 8) * 8)


def _check(depth: int, width_bits: int, requested: str) -> None:
    if depth < 0:
        raise ValueError(f"FIFO depth must be >= 0, got {depth}")
    if width_bits < 1:
        raise ValueError(f"FIFO width must be >= 1 bit, got {width_bits}")
    if requested not in FIFO_STYLES:
        raise ValueError(f"unknown FIFO style {requested!r}; expected one of {FIFO_STYLES}")


def fifo_style(depth: int, width_bits: int, requested: str = "auto") -> str:
    """The storage style ``fifo.sv`` elaborates for a ``depth`` x ``width_bits`` FIFO.

    Returns ``"srl"`` (SRL shift register), ``"distributed"`` (LUTRAM), ``"block"`` (RAMB18/36)
    or ``"ultra"`` (URAM288), and ``"none"`` for ``depth < 2``.  ``requested`` is honoured above
    depth 33 (an explicit ``"ultra"`` stays ``"ultra"`` on a part without URAM, as in FINN);
    ``"auto"`` walks the RTL's depth/width ladder.  ``width_bits`` is the padded width.
    """
    _check(depth, width_bits, requested)
    if depth < 2:
        return "none"
    if depth <= _SHIFT_ALWAYS_MAX_DEPTH:
        return "srl"
    if requested != "auto":
        return requested
    if depth <= _SHIFT_AUTO_MAX_DEPTH and width_bits <= _SHIFT_AUTO_MAX_WIDTH:
        return "srl"
    if depth <= _LUTRAM_AUTO_MAX_DEPTH or width_bits <= _LUTRAM_AUTO_MAX_WIDTH:
        return "distributed"
    if depth <= _BRAM_AUTO_MAX_DEPTH:
        return "block"
    return "ultra"


# --- helpers -----------------------------------------------------------------------------------


def _clog2(n: int) -> int:
    """SystemVerilog ``$clog2``: bits needed to address ``n`` items (0 for ``n <= 1``)."""
    return (n - 1).bit_length() if n > 1 else 0


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _address_spaces(depth: int, uram: bool) -> tuple[int, int]:
    """Address bits ``(lo, hi)`` of the memory-backed FIFO's two spaces; ``hi == 0`` for one space.

    The array holds ``depth - 1`` entries (the output register holds one), less the URAM output
    queue.  When that is just over a power of two and above one primitive, the RTL splits it into
    a half-size space plus a small extra one instead of doubling.
    """
    min_bits = _URAM_MIN_ADDR_BITS if uram else _BRAM_MIN_ADDR_BITS
    needed = max(depth - 1 - (_URAM_QUEUE_DEPTH if uram else 0), 1)
    lo = _clog2(needed)
    if lo <= min_bits:
        return lo, 0
    rest_bits = _clog2(needed - 2 ** (lo - 1))
    if rest_bits >= lo - 1:
        return lo, 0
    return lo - 1, max(rest_bits, 1)


def _hi_space_in_ram(rows: int, width: int) -> bool:
    """Whether synthesis puts a ``rows`` x ``width`` high address space in a RAM primitive (fitted)."""
    return rows * rows * width >= _HI_SPACE_RAM_THRESHOLD


def _lutram_luts(rows: int, width: int) -> int:
    """LUTs of a ``rows`` x ``width`` LUTRAM: 32 rows x 2 bits per LUT, plus a fitted quarter."""
    return _ceil_div(rows, 32) * _ceil_div(width, 2) * 5 // 4


def _space_select_luts(width: int) -> int:
    """LUTs choosing between the lo and hi spaces (pointer compare + W-bit 2:1 mux), fitted."""
    return 18 + 3 * width // 7


@lru_cache(maxsize=4096)
def _ramb18_layout(rows: int, width: int) -> tuple[int, int]:
    """``(tiles, depth_groups)`` of the cheapest RAMB18 layout of a ``rows`` x ``width`` array.

    Vivado may slice the word into fields of different aspects, so the tile count is a minimum over
    every way of cutting ``width`` into aspect widths (a greedy widest-first cut is not always
    optimal).  ``depth_groups`` is the largest number of tiles stacked in depth for one field --
    the reach of the read mux -- taken from the first cheapest cut in widest-first order.
    """
    per_aspect = [(bits, _ceil_div(rows, aspect_rows)) for bits, aspect_rows in _RAMB18_ASPECTS]
    best: list[tuple[int, int]] = [(0, 0)]  # best[w] = (tiles, depth_groups) for the low w bits
    for w in range(1, width + 1):
        best.append(min(
            ((stack + best[max(w - bits, 0)][0], max(stack, best[max(w - bits, 0)][1]))
             for bits, stack in per_aspect),
            key=lambda option: option[0],  # min() keeps the first, i.e. widest, of equal-cost cuts
        ))
    return best[width]


def _uram_layout(rows: int, width: int) -> tuple[int, int]:
    """``(blocks, depth_groups)`` of a ``rows`` x ``width`` array in 72 x 4096 URAM288 blocks."""
    groups = _ceil_div(rows, _URAM_ROWS)
    return groups * _ceil_div(width, _URAM_WIDTH), groups


def _counter_bits(depth: int) -> int:
    """Width of the RTL's occupancy counter, the variable the control LUT fits are linear in."""
    return _clog2(depth + 1) + 1


# --- per-style costs ---------------------------------------------------------------------------


def _srl_cost(depth: int, width: int) -> FifoCost:
    # The output register takes one entry; the shift register keeps at least 4 stages.
    # One SRLC32E (one LUT) holds 32 stages of one bit; 7-series/UltraScale+ F7/F8 muxes
    # chain the cascade for free.  Control: fitted 5 * counter_bits - 7.
    stages = depth - 1 if depth > 4 else 4
    srls = _ceil_div(stages, 32)
    return FifoCost(0, 0, srls * width + 5 * _counter_bits(depth) - 7, "srl")


def _lutram_cost(depth: int, width: int) -> FifoCost:
    # Rows rounded up to a power of two.  Each 128 rows past the first add a LUT per 2 bits of
    # read mux (floor).  Control: fitted 8 * counter_bits - 15 (separate read/write pointers).
    rows = 2 ** _clog2(depth - 1)
    read_mux = (rows // 128) * (width // 2)
    return FifoCost(0, 0, _lutram_luts(rows, width) + read_mux + 8 * _counter_bits(depth) - 15, "distributed")


def _bram_cost(depth: int, width: int) -> FifoCost:
    lo, hi = _address_spaces(depth, uram=False)
    tiles, groups = _ramb18_layout(2**lo, width)
    extra_luts = 0
    if hi:
        extra_luts += _space_select_luts(width)
        if _hi_space_in_ram(2**hi, width):
            hi_tiles, hi_groups = _ramb18_layout(2**hi, width)
            tiles, groups = tiles + hi_tiles, max(groups, hi_groups)
        else:
            extra_luts += _lutram_luts(2**hi, width)
    # Fitted: 54 fixed, 3 per depth group (cascade decode), 2/5 per tile (enables); the BRAM
    # address ports take the pointers directly, so no counter term.
    return FifoCost(tiles, 0, 54 + 3 * groups + 2 * tiles // 5 + extra_luts, "block")


def _uram_cost(depth: int, width: int) -> FifoCost:
    lo, hi = _address_spaces(depth, uram=True)
    blocks, groups = _uram_layout(2**lo, width)
    bram18 = 0
    lut = 6 * _counter_bits(depth)  # fitted control, pointers plus the URAM credit counter
    if hi:
        lut += _space_select_luts(width)
        hi_rows = 2**hi
        if not _hi_space_in_ram(hi_rows, width):
            # LUTRAM, plus one SRL16E per bit to delay it to the URAM read latency
            lut += _lutram_luts(hi_rows, width) + width
        else:
            hi_blocks = _uram_layout(hi_rows, width)[0]
            hi_tiles = _ramb18_layout(hi_rows, width)[0]
            # A hi space of a full URAM keeps the URAM style; a smaller one is left to synthesis,
            # which (fitted) prefers URAM only when BRAM would take many more primitives.
            if hi >= _URAM_MIN_ADDR_BITS or hi_tiles >= _HI_SPACE_URAM_RATIO * hi_blocks:
                blocks += hi_blocks
            else:
                bram18 = hi_tiles
    # Fitted: the 16-entry output queue costs a LUT per bit; beyond 8 depth groups every
    # further 4 add one more register stage per bit.
    lut += max(1, groups // 4 - 2) * width
    return FifoCost(bram18, blocks, lut, "ultra")


_COST_BY_STYLE = {"srl": _srl_cost, "distributed": _lutram_cost, "block": _bram_cost, "ultra": _uram_cost}


def fifo_cost(depth: int, width_bits: int, requested: str = "auto") -> FifoCost:
    """Resources of a ``depth`` x ``width_bits`` ``fifo.sv`` FIFO on a 7-series / UltraScale+ part.

    ``width_bits`` is the padded stream width (see :func:`padded_width`); ``requested`` is FINN's
    ``ram_style`` (``"auto"``, ``"srl"``, ``"distributed"``, ``"block"``, ``"ultra"``).  The style
    actually built is :func:`fifo_style`'s and is returned in ``FifoCost.style``.  ``depth < 2``
    costs nothing (style ``"none"``).  URAM is reported as requested/resolved even on parts that
    have none.
    """
    style = fifo_style(depth, width_bits, requested)
    if style == "none":
        return FifoCost(0, 0, 0, "none")
    return _COST_BY_STYLE[style](depth, width_bits)


def build_style(depth: int, width_bits: int, large_style: str = "auto", lut_per_bram18: float | None = None) -> str:
    """The ``ram_style`` a build requests for a ``depth`` x ``width_bits`` FIFO (what it is costed and built with).

    * A FIFO ``fifo.sv`` would put in block RAM or URAM by itself gets ``large_style`` -- FINN's
      ``large_fifo_mem_style``, which pins only those FIFOs ("block" on a part without URAM); the others stay
      ``"auto"`` (a shift register or LUTRAM), as FINN's builder leaves them.
    * With ``lut_per_bram18`` (the board's exchange rate of LUTs for one RAMB18, its LUT count over its BRAM18
      count), a FIFO deeper than 33 entries that ``"auto"`` keeps in LUTs is requested in ``"block"`` when that
      saves more than ``lut_per_bram18`` LUTs per RAMB18 it takes: a deep skip FIFO of a cell network in LUTRAM
      costs the LUTs a LUT-bound design lacks while the board's block RAM sits idle.  FINN builds such a FIFO
      as requested (an explicit ``ram_style`` in its ``fifo_config_file`` wins over ``"auto"``).

    ``"none"`` below depth 2, like :func:`fifo_style`."""
    auto = fifo_style(depth, width_bits, "auto")
    if auto == "none":
        return "none"
    if auto in ("block", "ultra"):
        return large_style
    if lut_per_bram18 is not None and depth > _SHIFT_ALWAYS_MAX_DEPTH:
        lut, bram = fifo_cost(depth, width_bits, "auto"), fifo_cost(depth, width_bits, "block")
        if bram.bram18 > 0 and lut.lut - bram.lut > lut_per_bram18 * bram.bram18:
            return "block"
    return "auto"
