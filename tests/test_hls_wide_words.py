"""Wide words: stream and weight words above ap_int's default 1024 bits build and C-simulate bit-exact.

The generated sources define ``AP_INT_MAX_W`` (the widest word rounded up to a multiple of 1024)
before their first ``#include <ap_int.h>`` and the build scripts pass the same ``-D``; a word above
:data:`~bnhw.hw.hls.codegen.HLS_MAX_WORD_BITS` (4096, the most Vitis HLS accepts) is a one-line
error, and the folder never picks a folding with one.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import pytest
from helpers.graphs import rand_input, reference, wide_fc_graph, wide_graph

from bnhw.errors import BnhwError
from bnhw.hw.hls import ap_types_dir, csim, generate_project, render_project
from bnhw.hw.hls.codegen import HLS_MAX_WORD_BITS, HLSError, node_words

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")


def widest_word(g) -> int:
    return max(bits for n in g.nodes for _, bits, _ in node_words(g, n))


def test_words_above_1024_bits_compile_and_csim_bit_exact(tmp_path):
    """2880-bit padded-bipolar window words (behind a width converter), 1440-bit XNOR weight words and
    1728-bit INT12 words: the sources raise AP_INT_MAX_W to 3072 themselves, consistently with the build
    scripts, and a translation unit that includes ap_int.h with a smaller limit stops at compile time."""
    g = wide_graph()
    assert widest_word(g) == 2880
    x = rand_input(g, 12, seed=1)
    assert np.array_equal(csim(g, x, tmp_path / "work"), reference(g, x))

    p = generate_project(g, tmp_path / "prj")
    files = render_project(g)
    assert "ap_uint<2880>" in files["firmware/bnhw_top.cpp"]
    for rel, text in files.items():
        if rel.endswith((".h", ".cpp")) and rel != "firmware/bnhw_dataflow.h":
            # the define comes before the first include of ap_int.h, in every generated source and header
            assert text.index("\n#define AP_INT_MAX_W 3072\n") < text.index("\n#include "), rel
    assert "-DAP_INT_MAX_W=3072" in files["build_csim.sh"]
    assert "-DAP_INT_MAX_W=3072" in files["build_prj.tcl"] and "-cflags $cflags" in files["build_prj.tcl"]

    def preprocess(*defines):
        return subprocess.run(["g++", "-E", "-std=c++14", *defines, "-DBNHW_CSIM_UNITY", f"-I{ap_types_dir()}",
                               f"-I{p / 'firmware'}", str(p / "tb/bnhw_top_tb.cpp"), "-o", "/dev/null"],
                              capture_output=True, text=True)

    assert preprocess().returncode == 0                       # the sources define it themselves
    r = preprocess("-DAP_INT_MAX_W=1024")                     # ... but never silently below the widest word
    assert r.returncode != 0 and "define AP_INT_MAX_W" in r.stderr


@pytest.mark.parametrize(("width", "padded", "what"), [(4608, False, "4608 x 1-bit BIPOLAR"),
                                                        (2304, True, "2304 x 2-bit BIPOLAR+valid")])
def test_word_above_the_hls_maximum_is_a_one_line_error_and_never_folded(width, padded, what):
    """A word above 4096 bits cannot be an ap_uint in Vitis HLS: codegen names the node, the word and the
    knob to lower; the folder's candidates (maximize_fps, the widest folding) never include such a word."""
    from bnhw.hw.folding import hls_words_fit, maximize_fps, widest_folding

    g = wide_fc_graph(width, padded)
    with pytest.raises(HLSError) as e:
        render_project(g)
    msg = str(e.value)
    assert msg == (f"MVAU_0: its 4608-bit input word ({what}) is wider than the {HLS_MAX_WORD_BITS} bits an "
                   f"ap_uint may have in Vitis HLS (AP_INT_MAX_W <= {HLS_MAX_WORD_BITS}); lower its SIMD")
    assert isinstance(e.value, BnhwError) and not hls_words_fit(g, g.nodes[0])
    unbounded = {"LUT": 1e12, "BRAM18": 1e12, "URAM": 1e12, "DSP": 1e12}
    widest, fastest = widest_folding(g), maximize_fps(g, unbounded)
    # the widest SIMD dividing the vector whose word fits: 2304 lanes of 1 bit, 1152 of 2 bits
    assert widest_word(widest.graph) == 2304 and widest_word(fastest.graph) <= HLS_MAX_WORD_BITS
    for folded in (widest, fastest):
        assert all(hls_words_fit(folded.graph, n) for n in folded.graph.nodes)
        render_project(folded.graph)


# ----------------------------------------------------------------------------- CNV-W1A1 at three foldings
CSIM_INPUTS = 6


@pytest.fixture(scope="module")
def cnv(tmp_path_factory):
    """CNV-W1A1 (seed-0 weights) exported to QONNX and lowered as ``bnhw build`` does, once for the three
    foldings, with real digits test images and their IR reference outputs (every stream: the values do
    not depend on the folding)."""
    from bnhw.hw.lower_qonnx import lower_reference
    from bnhw.quant.reference_nets import build_reference, export_reference, reference_data, reference_input

    onnx = export_reference(build_reference("cnv-w1a1", seed=0), tmp_path_factory.mktemp("cnv") / "cnv.onnx")
    graph = lower_reference(onnx, "cnv-w1a1")
    x = reference_input("cnv-w1a1", reference_data("cnv-w1a1", "test")[0][:CSIM_INPUTS])
    ref = [graph.execute(xi, return_all=True) for xi in x]
    return graph, x, ref


def _folding(name: str, graph):
    from bnhw.hw.boards import get_board
    from bnhw.hw.folding import board_budget, graph_cost, maximize_fps, widest_folding
    from bnhw.hw.foldings import load_reference_folding

    board = get_board("pynq-z2")
    if name == "default":             # `bnhw build` without --folding / --fps
        return maximize_fps(graph, board_budget(board, 0.85), board_name=board.name)
    if name == "finn-examples":       # `bnhw build --folding finn-examples`
        return graph_cost(graph.with_folding(load_reference_folding("cnv-w1a1")))
    return widest_folding(graph, board_budget(board, 1.0), board_name=board.name)


@pytest.mark.parametrize(("folding", "word", "ap_int_max_w"), [("default", 1152, 2048), ("finn-examples", 128, 1024),
                                                              ("widest", 2304, 3072)])
def test_cnv_w1a1_three_foldings_csim_bit_exact(cnv, folding, word, ap_int_max_w, tmp_path):
    """CNV-W1A1 on pynq-z2 at three foldings, C-simulated on real digits images and compared bit for bit
    with the IR, at the labels and at the classifier's accumulators (the stream before LabelSelect):

    * ``default``: what ``bnhw build`` picks, the highest FPS within 85% of the board (1152-bit words:
      SIMD = MW = 1152 for the 4th convolution; the word that failed the C simulation before);
    * ``finn-examples``: finn-examples' folding (128-bit words at most, in a max pool);
    * ``widest``: the widest SIMD x PE the target allows, :func:`bnhw.hw.folding.widest_folding` at
      margin 1.0: the estimate still fits 100% of the board's LUT / BRAM / URAM / DSP and every word is
      at most 4096 bits.  Fully unfolded CNV needs ~300k LUT, six times the board, so the units are
      widened one at a time from the least-resource design, those whose words can grow widest first:
      the last convolution reads its whole 2304-bit window at once (the widest word any folding of CNV
      has).  A stress test of wide words, not a fast design.
    """
    from bnhw.hw.boards import get_board

    graph, x, ref = cnv
    t0 = time.perf_counter()
    f = _folding(folding, graph)
    g = f.graph
    board = get_board("pynq-z2").budget()
    assert all(f.total[k] <= board[k] for k in board)
    assert widest_word(g) == word
    files = render_project(g)
    assert f"#define AP_INT_MAX_W {ap_int_max_w}\n" in files["firmware/bnhw_top.h"]
    assert np.array_equal(csim(g, x, tmp_path), np.stack([r[g.output] for r in ref]))
    pre = g.producer(g.output).inputs[0]                   # the logits before LabelSelect
    logits = np.stack([r[pre] for r in ref])
    assert np.array_equal(csim(g.truncated(pre), x, tmp_path), logits) and len(np.unique(logits)) > 1
    print(f"{folding}: II {f.ii} cycles, widest word {word} bits, {len(x)} images bit-exact "
          f"in {time.perf_counter() - t0:.1f} s")
