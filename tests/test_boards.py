"""The board catalogue, cross-checked against the copies FINN and hls4ml ship."""

import json
from importlib.util import find_spec
from pathlib import Path

import pytest

from bnhw.errors import BnhwError
from bnhw.hw.boards import BOARDS, get_board


def test_pynq_z2_figures():
    b = get_board("PYNQ-Z2")
    assert (b.part, b.lut, b.ff, b.bram36, b.dsp, b.clock_mhz) == ("xc7z020clg400-1", 53_200, 106_400, 140, 220, 100.0)
    assert get_board("pynq-z1").budget() == b.budget()


def test_unknown_board_lists_known_ones():
    with pytest.raises(BnhwError) as e:
        get_board("de10-nano")
    assert "de10-nano" in str(e.value) and all(name in str(e.value) for name in BOARDS)


def test_parts_match_finn_and_hls4ml():
    pytest.importorskip("finn", reason="finn-plus not installed (make install adds it)")
    from finn.util.basic import pynq_part_map
    from finn.util.platforms import platforms

    for b in BOARDS.values():               # the name FINN's builder is given is FINN's board with our part
        assert b.part == pynq_part_map[b.finn_board], b.name
    # FINN's Zynq-7020 platform model: [LUT, FF, BRAM18, URAM, DSP]
    z = platforms["Pynq-Z2"]().compute_resources[0]
    b = BOARDS["pynq-z2"]
    assert z == [b.lut, b.ff, b.bram18, b.uram, b.dsp]
    boards = Path(find_spec("hls4ml").submodule_search_locations[0]) / "backends/vivado_accelerator/supported_boards.json"
    assert json.loads(boards.read_text())["pynq-z2"]["part"] == b.part


def test_large_fifos_go_to_block_ram_on_parts_without_uram():
    from bnhw.hw.boards import BOARDS, large_fifo_style

    for b in BOARDS.values():
        assert large_fifo_style(b) == ("auto" if b.uram > 0 else "block"), b.name
    assert large_fifo_style(get_board("pynq-z2")) == "block"
