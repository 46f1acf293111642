"""The integer hardware IR (bnhw.hw.ir): types, structure checks, folding, truncation, serialisation and
the exact integer helpers every back end shares."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.graphs import Builder, bin_graph, int_graph, rand_input

from bnhw.hw.ir import (
    DType,
    HwGraph,
    IRError,
    Node,
    Stream,
    round_half_even_div,
    round_half_even_shift,
    threshold_out,
)


@pytest.mark.parametrize("lo,hi,name", [(0, 1, "UINT1"), (0, 255, "UINT8"), (-1, 0, "INT1"), (-128, 127, "INT8"),
                                        (-129, 5, "INT9"), (0, 256, "UINT9"), (-5, 1000, "INT11")])
def test_for_range_is_the_narrowest_type(lo, hi, name):
    t = DType.for_range(lo, hi)
    assert t.finn_name() == name and t.min <= lo and hi <= t.max
    narrower = DType.int_(t.bits - 1, t.signed) if t.bits > 1 else None
    assert narrower is None or not (narrower.min <= lo and hi <= narrower.max)


def test_bipolar_type():
    t = DType.bipolar()
    assert (t.min, t.max, t.finn_name(), t.is_bipolar) == (-1, 1, "BIPOLAR", True)
    assert DType.from_dict(t.to_dict()) == t


def test_round_half_even_is_exact_on_ties():
    num = np.arange(-20, 21)
    for den in (1, 2, 3, 4, 8):
        expect = np.array([round(v / den) for v in num])      # Python's round: half to even
        assert np.array_equal(round_half_even_div(num, den), expect)
    assert np.array_equal(round_half_even_shift(np.array([5, 6, 7, -5]), 1), [2, 3, 4, -2])
    assert np.array_equal(round_half_even_shift(np.array([3, -3]), -2), [12, -12])


def test_threshold_out_counts_crossed_thresholds():
    thr = np.array([[-1, 4], [0, 10]])                  # per channel (last axis of acc)
    acc = np.array([[-2, 0], [4, 10]])
    assert np.array_equal(threshold_out(acc, thr, out_bias=-1), [[-1, 0], [1, 1]])
    assert np.array_equal(threshold_out(acc, thr, out_bias=-1, out_scale=2), [[-1, 1], [3, 3]])


def _tiny(op: str = "Thresholding") -> tuple[dict, list[Node]]:
    streams = {"x": Stream("x", (2, 2, 1), DType.int_(4)), "y": Stream("y", (2, 2, 1), DType.int_(2))}
    return streams, [Node("t", op, ["x"], ["y"], {"out_bias": 0}, {"thresholds": np.array([[0]])})]


@pytest.mark.parametrize("break_it,msg", [
    (lambda s, n: n[0].__setattr__("op", "Conv"), "unknown op 'Conv'"),
    (lambda s, n: n[0].__setattr__("inputs", ["z"]), "used before it is produced"),
    (lambda s, n: n.append(Node("t", "Thresholding", ["x"], ["y"])), "duplicate node name"),
    (lambda s, n: n.append(Node("u", "Thresholding", ["x"], ["y"])), "produced twice"),
    (lambda s, n: n[0].__setattr__("outputs", ["q"]), "is not declared"),
])
def test_malformed_graphs_are_refused(break_it, msg):
    streams, nodes = _tiny()
    HwGraph("ok", streams, nodes, "x", "y")
    break_it(streams, nodes)
    with pytest.raises(IRError, match=msg):
        HwGraph("bad", streams, nodes, "x", "y")


def test_folding_round_trips_and_unknown_nodes_are_refused():
    g = bin_graph()
    f = g.folding()
    assert f and all("PE" in v for v in f.values())
    name = next(k for k, v in f.items() if "SIMD" in v)
    g2 = g.with_folding({name: {"PE": 1, "SIMD": 1}})
    assert g2.folding()[name] == {"PE": 1, "SIMD": 1} and g.folding() == f      # a copy; g is untouched
    with pytest.raises(IRError, match="does not have"):
        g.with_folding({"nope": {"PE": 2}})


def test_truncated_graph_computes_the_inner_stream():
    g = int_graph()
    x = rand_input(g, 3, seed=1)
    inner = g.nodes[len(g.nodes) // 2].outputs[0]
    gt = g.truncated(inner)
    assert gt.output == inner and len(gt.nodes) < len(g.nodes)
    for v in x:
        full = g.execute(v, return_all=True)
        assert np.array_equal(gt.execute(v), full[inner])


def test_save_and_load_give_the_same_graph(tmp_path):
    g = int_graph(seed=3)
    g.save(tmp_path / "hw_graph.json")
    h = HwGraph.load(tmp_path / "hw_graph.json")
    assert h.to_dict() == g.to_dict()
    for v in rand_input(g, 4, seed=2):
        assert np.array_equal(h.execute(v), g.execute(v))


def test_execution_checks_stream_ranges():
    """A value outside its stream's declared type is an error, not silent wrap-around."""
    b = Builder("r", (1, 1, 2), DType.int_(8))
    y = b.add("Thresholding", "x", (1, 1, 2), DType.int_(1, signed=False), {"out_bias": 5},
              {"thresholds": np.array([[0], [0]])})
    g = b.graph(y)
    with pytest.raises(IRError):
        g.execute(np.array([[[1, 2]]]))
