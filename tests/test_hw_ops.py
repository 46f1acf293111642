"""The op registry (bnhw.hw.ops): every op is registered once, every back end has a unit for every op, and
the facts an op states (value ranges, legal foldings) hold on real graphs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.graphs import (
    bin_graph,
    bireal_graph,
    cell_graph,
    cnv_graph,
    fold,
    int_graph,
    rand_input,
    requant_graph,
    rprelu_gap_graph,
)

from bnhw.hw.cpu.program import CPU_OPS
from bnhw.hw.hls.codegen import HLS_OPS
from bnhw.hw.ir import HwGraph, IRError, Node
from bnhw.hw.ops import HwOp, folding_error, get_op, model_notes, op_names, register, unregister
from bnhw.hw.sim.netlist import SIM_OPS

GRAPHS = {"int": int_graph, "bin": bin_graph, "bireal": bireal_graph, "cnv": cnv_graph,
          "requant": lambda seed: requant_graph(), "rprelu_gap": lambda seed: rprelu_gap_graph(), "cell": cell_graph}


def test_registry_lists_every_op_once_with_its_facts():
    names = op_names()
    assert len(names) == len(set(names)) == 14
    for name in names:
        op = get_op(name)
        assert op.name == name and op.finn_name and op.notes, name
        assert type(op).execute is not HwOp.execute, f"{name} has no reference execution"
    assert set(model_notes()) >= set(names)
    with pytest.raises(IRError, match="unknown op 'Conv'"):
        get_op("Conv")
    with pytest.raises(ValueError, match="registered twice"):
        register(type(get_op("MVAU")))


@pytest.mark.parametrize("backend", [HLS_OPS, SIM_OPS, CPU_OPS], ids=["hls", "sim", "cpu"])
def test_every_back_end_has_a_unit_for_every_op(backend):
    assert backend == set(op_names())


def test_an_op_without_a_back_end_unit_is_one_error_naming_it():
    """What a newcomer sees after adding an op module but no HLS / simulator unit yet."""
    from bnhw.hw.hls.codegen import HLSError
    from bnhw.hw.hls.project import render_project
    from bnhw.hw.sim.netlist import SimError, elaborate

    class Negate(HwOp):
        name, finn_name = "NegateForTest", "Negate"
        notes = {"NegateForTest": "test op"}

        def execute(self, g, n, ins):
            return [-ins[0]]

    register(Negate)
    try:
        g = int_graph(0)
        last = g.nodes[-1]
        s = g.streams[last.outputs[0]]
        from bnhw.hw.ir import Stream
        streams = dict(g.streams, neg=Stream("neg", s.shape, s.dtype.for_range(-s.dtype.max, -s.dtype.min)))
        g2 = HwGraph(g.name, streams, [*g.nodes, Node("Negate_0", "NegateForTest", [g.output], ["neg"])],
                     g.input, "neg")
        x = rand_input(g, 1, 0)[0]
        assert np.array_equal(g2.execute(x), -g.execute(x))          # the registry runs it
        with pytest.raises(HLSError, match="Negate_0: the HLS generator has no unit for op 'NegateForTest'"):
            render_project(g2)
        with pytest.raises(SimError, match="Negate_0: the cycle simulator has no unit for op 'NegateForTest'"):
            elaborate(g2)
    finally:
        unregister("NegateForTest")


@pytest.mark.parametrize("gname", list(GRAPHS))
def test_value_ranges_hold_and_mvau_bounds_are_reached(gname):
    """The range an op states for its internal arithmetic contains what it computes on random inputs, and
    an MVAU's stated accumulator bound is reached by the input of the signs of one weight row."""
    g = GRAPHS[gname](0)
    env_all = [g.execute(x, return_all=True) for x in rand_input(g, 4, 1)]
    checked = 0
    for n in g.nodes:
        r = get_op(n.op).value_range(g, n)
        if r is None:
            continue
        lo, hi = r
        assert lo <= hi
        if n.op == "MVAU" and "thresholds" not in n.params:
            for env in env_all:
                out = env[n.outputs[0]]
                assert lo <= out.min() and out.max() <= hi, n.name
            checked += 1
        if n.op in ("AddRequant", "RPReLU"):
            for env in env_all:
                x = env[n.inputs[0]]
                if n.op == "AddRequant":
                    acc = x * n.params["A"].astype(np.int64) + n.params["B"].astype(np.int64)
                    if len(n.inputs) > 1:
                        acc = acc + (env[n.inputs[1]] << int(n.attrs.get("shortcut_shift", 0)))
                    acc = acc << max(0, -int(n.attrs["shift"]))
                else:
                    frac = int(n.attrs["frac"])
                    y = x - n.params["S_in"].astype(np.int64)
                    y = np.where(y >= 0, y << frac, y * n.params["slope"].astype(np.int64))
                    acc = y + (n.params["S_out"].astype(np.int64) << frac)
                assert lo <= acc.min() and acc.max() <= hi, n.name
            checked += 1
    for n in g.nodes:
        if n.op == "MVAU" and int(n.attrs.get("groups", 1)) == 1:
            w = np.asarray(n.params["weights"], dtype=np.int64)
            t = g.in_stream(n).dtype
            xhi = 1 if t.is_bipolar else t.max
            xlo = -1 if t.is_bipolar else t.min
            row = int(np.argmax(np.where(w > 0, w * xhi, w * xlo).sum(axis=1)))
            x = np.where(w[row] > 0, xhi, xlo)
            assert int(w[row] @ x) == get_op("MVAU").value_range(g, n)[1]
            checked += 1
    assert checked


@pytest.mark.parametrize("gname", ["int", "bin", "cnv", "bireal"])
def test_every_listed_folding_is_legal_and_others_are_refused(gname):
    g = GRAPHS[gname](0)
    for n in g.nodes:
        op = get_op(n.op)
        fs = op.foldings(g, n)
        assert (1, 1) in fs, n.name
        for pe, simd in fs[:: max(1, len(fs) // 6)]:
            m = fold(g, "none").with_folding({n.name: {"PE": pe, "SIMD": simd}}) if op.foldable else g
            if op.foldable:
                assert folding_error(m, m.node(n.name)) is None
        if op.foldable:
            bad_pe = max(op.legal_pe(g, n)) + 1
            while bad_pe in op.legal_pe(g, n):
                bad_pe += 1
            m = g.with_folding({n.name: {"PE": bad_pe}})
            assert f"{n.name}: PE={bad_pe} is not allowed" in folding_error(m, m.node(n.name))
