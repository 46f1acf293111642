"""bnhw's fifo.sv cost model: hand-checked values, and equality with finn-plus 1.6.1's own model."""

from __future__ import annotations

import pytest

from bnhw.hw.fifo_cost import FIFO_STYLES, FifoCost, fifo_cost, fifo_style, padded_width

BOUNDARY_DEPTHS = [2, 3, 4, 5, 32, 33, 34, 35, 63, 64, 65, 66, 129, 256, 257, 258, 512, 513, 514, 1024, 1025,
                   2027, 2028, 2029, 2030, 4096, 4097, 4113, 4114, 8192, 8210, 16384, 32768, 32786, 65536, 65537,
                   70000]
DEPTHS = sorted(set(BOUNDARY_DEPTHS) | set(range(2, 80)) | {int(1.37**k) for k in range(3, 36)})
WIDTHS = sorted({1, 2, 3, 4, 5, 8, 11, 12, 16, 18, 19, 24, 32, 36, 37, 40, 54, 64, 72, 73, 96, 128, 144, 145, 200,
                 256, 288, 300})


def test_shallow_one_bit_fifo_is_a_few_lut_srl() -> None:
    # depth 2, 1 bit: shift register of the minimum 4 stages -> 1 SRLC32E per bit = 1 LUT;
    # counter bits = clog2(3) + 1 = 3, control = 5*3 - 7 = 8  ->  9 LUTs, no RAM.
    assert fifo_cost(2, 1) == FifoCost(bram18=0, uram=0, lut=9, style="srl")
    # an explicit memory request cannot beat the depth <= 33 rule
    assert fifo_cost(2, 1, "block").style == "srl"


def test_1024x64_fifo_is_four_bram18() -> None:
    # depth 1024, 64 bit, auto: deeper than 257, wider than 4 bits, not deeper than 2028 -> block.
    # Array entries = 1023 -> lo = clog2(1023) = 10 address bits; rest = clog2(1023 - 512) = 9 is not
    # below lo - 1 = 9, so no split: one 1024 x 64 space.  At 1024 rows a RAMB18 holds 18 bits
    # (1024 x 18), or 36 bits with two stacked 512 x 36: ceil(64 / 18) = 4 tiles either way, and
    # 3 tiles give only 54 bits.  The first cheapest cut (widest first) is 36 + 28 bits in 512 x 36
    # tiles, 2 deep -> depth_groups = 2.  LUT = 54 + 3*2 + (2*4)//5 = 61.
    assert fifo_cost(1024, 64) == FifoCost(bram18=4, uram=0, lut=61, style="block")


def test_hand_checked_lutram_and_uram() -> None:
    # depth 100, 16 bit -> distributed; rows = 2**clog2(99) = 128: LUTRAM ceil(128/32)*ceil(16/2)*5//4 = 40,
    # read mux 128//128 * 16//2 = 8, counter bits clog2(101)+1 = 8 -> control 8*8 - 15 = 49. Total 97.
    assert fifo_cost(100, 16) == FifoCost(0, 0, 97, "distributed")
    # depth 4096, 72 bit -> ultra; array = 4096 - 16 - 1 = 4079 entries -> 12 address bits = one 72 x 4096
    # URAM288; control 6 * (clog2(4097)+1) = 84, output queue 1 LUT/bit = 72. Total 156.
    assert fifo_cost(4096, 72) == FifoCost(0, 1, 156, "ultra")


@pytest.mark.parametrize(("depth", "width", "requested", "style"), [
    (0, 8, "auto", "none"), (1, 8, "ultra", "none"), (33, 300, "ultra", "srl"), (34, 11, "auto", "srl"),
    (34, 12, "auto", "distributed"), (64, 11, "auto", "srl"), (65, 11, "auto", "distributed"),
    (257, 300, "auto", "distributed"), (258, 5, "auto", "block"), (70000, 4, "auto", "distributed"),
    (2028, 8, "auto", "block"), (2029, 8, "auto", "ultra"), (5000, 8, "block", "block"), (300, 8, "srl", "srl"),
])
def test_style_ladder(depth: int, width: int, requested: str, style: str) -> None:
    assert fifo_style(depth, width, requested) == style
    assert fifo_cost(depth, width, requested).style == style


def test_depth_below_two_costs_nothing() -> None:
    for depth in (0, 1):
        cost = fifo_cost(depth, 64, "ultra")
        assert cost.as_dict() == {"bram18": 0, "uram": 0, "lut": 0, "style": "none"}


def test_padded_width_and_bad_arguments() -> None:
    assert [padded_width(b) for b in (0, 1, 7, 8, 9, 16, 17, 300)] == [0, 8, 8, 8, 16, 16, 24, 304]
    with pytest.raises(ValueError):
        fifo_style(64, 8, "shift")
    with pytest.raises(ValueError):
        fifo_cost(64, 0)
    with pytest.raises(ValueError):
        fifo_cost(-1, 8)


def test_matches_finn_plus_model() -> None:
    rm = pytest.importorskip("finn.util.resource_models",
                             reason="finn-plus 1.6.1 not importable: nothing to compare bnhw's FIFO model against")
    from qonnx.util.basic import roundup_to_integer_multiple

    for bits in range(1, 301):
        assert padded_width(bits) == roundup_to_integer_multiple(bits, 8)

    mismatches = []
    for depth in DEPTHS:
        for width in WIDTHS:
            for requested in FIFO_STYLES:
                ours = fifo_cost(depth, width, requested)
                style = rm._resolve(depth, width, requested)
                theirs = rm._fifo_cost(depth, width, style, versal=False)
                if (fifo_style(depth, width, requested), ours.style, ours.bram18, ours.uram, ours.lut) != (
                        style, style, theirs.bram, theirs.uram, theirs.lut):
                    mismatches.append((depth, width, requested, ours, style, theirs))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:5]}"


def test_build_style_pins_only_the_large_fifos_like_finns_large_fifo_mem_style():
    """FINN's ``large_fifo_mem_style`` pins only the FIFOs ``fifo.sv`` would put in BRAM / URAM by itself; bnhw
    used to cost every FIFO deeper than 33 on a URAM-less part in block RAM (a 100 x 64-bit one: 2 BRAM18 that
    FINN builds as 241 LUTs of LUTRAM)."""
    from bnhw.hw.boards import get_board, lut_per_bram18
    from bnhw.hw.fifo_cost import build_style

    assert build_style(1, 16, "block") == "none"
    assert build_style(300, 16, "block") == "block"           # fifo.sv: block by itself
    assert build_style(3000, 16, "block") == "block"          # ... URAM by itself, pinned to block
    assert build_style(3000, 16, "auto") == "auto"
    assert build_style(100, 64, "block") == "auto"            # LUTRAM, left to fifo.sv as FINN leaves it
    assert fifo_cost(100, 64, build_style(100, 64, "block")) == fifo_cost(100, 64, "auto")
    # the exchange rate: block RAM where it saves more LUTs per RAMB18 than the board's LUT / BRAM18
    pynq = lut_per_bram18(get_board("pynq-z2"))
    assert 189 < pynq < 191
    lut, bram = fifo_cost(200, 32, "auto"), fifo_cost(200, 32, "block")
    assert (lut.style, bram.bram18) == ("distributed", 1) and lut.lut - bram.lut > pynq
    assert build_style(200, 32, "block", pynq) == "block"
    lut, bram = fifo_cost(100, 64, "auto"), fifo_cost(100, 64, "block")
    assert lut.lut - bram.lut < pynq * bram.bram18                 # 184 LUT for 2 RAMB18: not worth it
    assert build_style(100, 64, "block", pynq) == "auto"
    assert build_style(33, 400, "block", 1.0) == "auto"         # a shift register whatever is asked
