"""The cycle simulator (bnhw.hw.sim): steady-state II against FINN's analytical cycle counts,
functional mode bit-exact against the IR reference and QONNX execution on real digits images,
FIFO back-pressure semantics, deadlock detection and FIFO sizing on a network with shortcuts."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from bnhw.hw.boards import get_board
from bnhw.hw.folding import board_budget, maximize_fps
from bnhw.hw.ir import DType, HwGraph, Node, Stream
from bnhw.hw.lower_binarynet import integer_input, lower_binarynet
from bnhw.hw.ops import node_cycles
from bnhw.hw.sim.fifo_sizing import fifo_resources, finn_fifo_config, size_fifos
from bnhw.hw.sim.netlist import elaborate
from bnhw.hw.sim.simulate import simulate
from bnhw.quant import build_model, export_qonnx, recalibrate_bn
from bnhw.quant.export import execute_qonnx


def analytic_ii(g: HwGraph) -> int:
    return max(node_cycles(g, n) for n in g.nodes)


def loop_units_match_their_analytic_cycles(r, frames: int) -> None:
    """Every FINN loop unit is busy for its analytical cycle count per frame (+ its pipeline drain)."""
    for u in r.units:
        if u["kind"] == "loop":
            assert abs(u["busy_per_frame"] - u["analytic_cycles"]) <= 0.01 * u["analytic_cycles"] + 1, u


# ----------------------------------------------------------------------------- CNV-W1A1
@pytest.fixture(scope="module")
def cnv(tmp_path_factory):
    from bnhw.hw.foldings import load_reference_folding
    from bnhw.hw.lower_qonnx import lower_reference
    from bnhw.quant.reference_nets import build_reference, export_reference, reference_data, reference_input

    onnx = export_reference(build_reference("cnv-w1a1", seed=3), tmp_path_factory.mktemp("cnv") / "cnv.onnx")
    g = lower_reference(onnx, "cnv-w1a1").with_folding(load_reference_folding("cnv-w1a1"))
    x, _ = reference_data("cnv-w1a1", "test")
    return g, onnx, x[:10], reference_input("cnv-w1a1", x[:10])


def test_cnv_ii_equals_the_slowest_analytical_unit_and_functional_mode_matches_qonnx(cnv):
    g, onnx, images, xi = cnv
    r = simulate(g, len(xi), inputs=xi)
    assert not r.deadlock
    assert r.analytic_ii == analytic_ii(g) == 32768                     # MVAU_hls_6/7 at finn-examples' folding
    assert abs(r.ii_cycles - r.analytic_ii) <= 0.01 * r.analytic_ii
    assert r.fps == pytest.approx(100e6 / r.ii_cycles)
    loop_units_match_their_analytic_cycles(r, len(xi))
    # functional mode: labels equal QONNX execution of the exported network and the IR reference
    labels_q = np.asarray(execute_qonnx(onnx, images)).reshape(len(xi), -1).argmax(1)
    assert np.array_equal(r.outputs.reshape(-1), labels_q)
    assert np.array_equal(r.outputs, np.stack([g.execute(x) for x in xi]))
    # ... and the class scores before the label select, bit for bit
    pre = g.truncated(g.producer(g.output).inputs[0])
    rp = simulate(pre, 4, inputs=xi[:4])
    assert np.array_equal(rp.outputs, np.stack([pre.execute(x) for x in xi[:4]]))
    assert len(np.unique(rp.outputs.reshape(4, -1), axis=0)) == 4           # real, distinct inputs
    # latency: reported, explained unit by unit from the input DMA to the output DMA
    assert 0 < r.first_output_cycles <= r.frame_latency_cycles < r.cycles
    path = r.latency_path
    assert path[0]["unit"] == "input_dma" and path[-1]["unit"] == "output_dma"
    assert [p["first_output"] for p in path] == sorted(p["first_output"] for p in path)
    assert path[-1]["first_output"] - path[0]["first_output"] == r.first_output_cycles
    swg = next(p for p in path if p["finn_op"] == "ConvolutionInputGenerator_rtl")
    assert "window buffer" in swg["why"]


def test_cnv_fifo_sizing_keeps_the_unbounded_throughput(cnv):
    g, *_ = cnv
    net = elaborate(g)
    s = size_fifos(net, frames=5)
    assert s.complete and s.ii_sized == s.ii_unbounded == 32768
    assert s.minimal_everywhere()
    assert all(1 <= d <= p for d, p in zip(s.depths, s.peak))
    assert sum(s.depths) < sum(s.peak) / 10                                 # far below the unbounded peaks
    r = simulate(net, 6, depths=s.depths)
    assert r.ii_cycles == 32768
    cost = fifo_resources(net, s.depths)
    assert all(c["lut"] == 0 and c["bram18"] == 0 for c in cost if c["depth"] <= 2)
    assert any(c["lut"] > 0 for c in cost if c["depth"] > 2)
    cfg = finn_fifo_config(net, s.depths, g.folding())
    assert cfg["MVAU_hls_0"]["PE"] == g.node("MVAU_hls_0").pe
    assert sum(len(v.get("inFIFODepths", [])) for v in cfg.values() if isinstance(v, dict)) == len(net.fifos) - 1


# ----------------------------------------------------------------------------- searched-space subnets
def _subnet(make_spec, digits, stages, *, stem=8, in_channels=3, weight_norm=True, seed=0, resolution=32):
    spec = make_spec(stages, stem=stem, in_channels=in_channels, residual="fixed", resolution=resolution)
    torch.manual_seed(seed)
    model = build_model(spec, weight_norm=weight_norm)
    x, _ = digits(resolution, 24, in_channels)
    recalibrate_bn(model, [x[:16]])
    model.eval()
    return model, lower_binarynet(model), x[16:], integer_input(model, x[16:])


SUBNETS = {
    # grouped k5 conv, stride-2 downsampling (avg-pool shortcut), channel tiling (gather), identity shortcut
    "grouped": ([[(16, 3, 1, 1), (16, 5, 2, 1)], [(32, 3, 4, 2), (32, 3, 2, 1)]], 3, True),
    # a depthwise stride-2 conv (FINN's VVAU) and a 12 -> 40 tiling shortcut
    "depthwise": ([[(12, 3, 1, 1), (12, 3, 12, 2)], [(40, 3, 4, 1), (40, 5, 8, 2)]], 1, False),
}


@pytest.mark.parametrize("name", list(SUBNETS))
@pytest.mark.parametrize("folding", ["unfolded", "pynq-z2"])
def test_subnet_ii_and_functional_mode(name, folding, make_spec, digits):
    stages, cin, wn = SUBNETS[name]
    model, g, images, xi = _subnet(make_spec, digits, stages, in_channels=cin, weight_norm=wn)
    if folding == "pynq-z2":
        g = maximize_fps(g, board_budget(get_board("pynq-z2"))).graph
    ops = {n.op for n in g.nodes}
    assert {"AddRequant", "Duplicate", "GlobalAvgPool"} <= ops
    r = simulate(g, len(xi), inputs=xi)
    assert abs(r.ii_cycles - analytic_ii(g)) <= 0.01 * analytic_ii(g)
    loop_units_match_their_analytic_cycles(r, len(xi))
    assert np.array_equal(r.outputs, np.stack([g.execute(x) for x in xi]))      # classifier accumulators
    if name == "depthwise":
        assert any(u["finn_op"] == "VVAU_hls" for u in r.units)


def test_subnet_functional_mode_equals_qonnx_logits(make_spec, digits, tmp_path):
    stages, cin, wn = SUBNETS["grouped"]
    model, g, images, xi = _subnet(make_spec, digits, stages, in_channels=cin, weight_norm=wn)
    export_qonnx(model, tmp_path / "m.onnx")
    logits = np.asarray(execute_qonnx(tmp_path / "m.onnx", images)).reshape(len(xi), -1)
    r = simulate(maximize_fps(g, board_budget(get_board("pynq-z2"))).graph, len(xi), inputs=xi)
    head = g.meta["head"]
    sim_logits = r.outputs.reshape(len(xi), -1) * np.asarray(head["scale"]) + np.asarray(head["bias"])
    assert np.abs(sim_logits - logits).max() <= 1e-5 * np.abs(logits).max()
    assert np.array_equal(sim_logits.argmax(1), logits.argmax(1))


def test_fifo_sizing_on_a_shortcut_network_is_minimal(make_spec, digits):
    """Sized FIFOs keep the unbounded II; any FIFO one slot smaller loses throughput or deadlocks."""
    # 16x16 input: two identity shortcuts (8 -> 8), a stride-2 grouped block with an avg-pool + tiling shortcut
    _, g, _, _ = _subnet(make_spec, digits, [[(8, 3, 1, 1), (8, 3, 2, 1)], [(16, 3, 2, 2)]], resolution=16)
    g = maximize_fps(g, board_budget(get_board("pynq-z2"))).graph
    net = elaborate(g)
    s = size_fifos(net, frames=5, verify=True)
    assert s.verified and s.complete
    assert s.ii_sized == s.ii_unbounded
    assert simulate(net, 8, depths=s.depths).ii_cycles == simulate(net, 8).ii_cycles
    dropped = 0
    for i, d in enumerate(s.depths):
        if d < 2:
            continue
        smaller = list(s.depths)
        smaller[i] = d - 1
        r = simulate(net, 5, depths=smaller)
        assert r.deadlock or r.ii_cycles > s.ii_unbounded, net.fifos[i].name
        dropped += 1
    assert dropped >= 1
    # the identity shortcut (a Duplicate output read by an AddRequant) must hold the branch's latency
    shortcut_streams = {n.inputs[1] for n in g.nodes if n.op == "AddRequant" and len(n.inputs) == 2
                        and g.producer(n.inputs[1]).op == "Duplicate"}
    short = [i for i, f in enumerate(net.fifos) if f.stream in shortcut_streams]
    assert short and max(s.depths[i] for i in short) > 2


# ----------------------------------------------------------------------------- semantics on hand-built graphs
def _chain(n_units: int, channels: int = 64) -> HwGraph:
    t = DType.int_(4)
    streams = {f"s{i}": Stream(f"s{i}", (1, 1, channels), t) for i in range(n_units + 1)}
    nodes = [Node(f"Thresholding_rtl_{i}", "Thresholding", [f"s{i}"], [f"s{i + 1}"],
                  {"pe": 1, "out_bias": -8},
                  {"thresholds": np.tile(np.arange(-7, 8, dtype=np.int64), (channels, 1))})
             for i in range(n_units)]
    return HwGraph("chain", streams, nodes, "s0", f"s{n_units}")


def test_fifo_depth_one_halves_the_rate_and_two_keeps_it():
    g = _chain(3)
    x = np.random.default_rng(0).integers(-8, 8, size=(4, 1, 1, 64))
    full = simulate(g, 4, depths=2, inputs=x)
    half = simulate(g, 4, depths=1, inputs=x)
    assert full.ii_cycles == 64                             # one word per cycle
    assert half.ii_cycles == 128                            # a full depth-1 FIFO cannot take a word while read
    assert np.array_equal(full.outputs, half.outputs)
    assert np.array_equal(full.outputs, np.stack([g.execute(v) for v in x]))
    loops = [u for u in half.units if u["kind"] == "loop"]
    assert half.units[0]["name"] == "input_dma" and half.units[0]["stalled"] >= 4 * 64 - 1   # every other cycle
    assert all(u["starved"] >= 4 * 64 for u in loops)      # ... and the units wait every other cycle
    assert all(u["stalled"] == 0 for u in full.units)


def _shortcut_graph(channels: int = 16) -> HwGraph:
    b, t = DType.bipolar(), DType.int_(8)
    s = {"x": Stream("x", (1, 1, channels), b), "a": Stream("a", (1, 1, channels), b),
         "sc": Stream("sc", (1, 1, channels), b), "m": Stream("m", (1, 1, channels), DType.int_(6)),
         "y": Stream("y", (1, 1, channels), t)}
    w = np.where(np.random.default_rng(1).random((channels, channels)) < 0.5, -1, 1)
    nodes = [Node("DuplicateStreams_hls_0", "Duplicate", ["x"], ["a", "sc"], {"pe": 1}),
             Node("MVAU_hls_0", "MVAU", ["a"], ["m"], {"pe": 1, "simd": 1, "binary_xnor": True}, {"weights": w}),
             Node("AddRequant_0", "AddRequant", ["m", "sc"], ["y"], {"pe": 1, "shift": 0, "shortcut_shift": 2},
                  {"A": np.ones(channels, np.int64), "B": np.zeros(channels, np.int64)})]
    return HwGraph("shortcut", s, nodes, "x", "y")


def test_shortcut_fifo_too_shallow_deadlocks_and_sizing_finds_the_depth():
    g = _shortcut_graph()
    net = elaborate(g)
    x = np.where(np.random.default_rng(2).random((3, 1, 1, 16)) < 0.5, -1, 1)
    ok = simulate(net, 3, inputs=x)
    assert np.array_equal(ok.outputs, np.stack([g.execute(v) for v in x]))
    sc = next(i for i, f in enumerate(net.fifos) if net.units[f.dst].name == "AddRequant_0"
              and net.units[f.src].name == "DuplicateStreams_hls_0")
    depths = [2] * len(net.fifos)
    depths[sc] = 1
    r = simulate(net, 3, depths=depths)
    assert r.deadlock                           # the MVAU needs the whole vector before its first output
    s = size_fifos(net, frames=4, verify=True)
    assert s.depths[sc] > 2 and s.ii_sized == s.ii_unbounded


def test_sim_cli(tmp_path, cnv):
    g, *_ = cnv
    g.save(tmp_path / "hw_graph.json")
    p = subprocess.run([sys.executable, "-m", "bnhw.cli", "sim", str(tmp_path), "--frames", "3"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "II 32,768 cycles" in p.stdout and "MVAU_hls_6" in p.stdout
    p = subprocess.run([sys.executable, "-m", "bnhw.cli", "sim", str(tmp_path), "--frames", "3", "--json"],
                       capture_output=True, text=True)
    assert json.loads(p.stdout)["ii_cycles"] == 32768
    p = subprocess.run([sys.executable, "-m", "bnhw.cli", "sim", str(tmp_path / "nope")], capture_output=True,
                       text=True)
    assert p.returncode != 0 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_sim_cli_reports_a_deadlock_in_one_line(tmp_path):
    _shortcut_graph().save(tmp_path / "hw_graph.json")
    p = subprocess.run([sys.executable, "-m", "bnhw.cli", "sim", str(tmp_path), "--fifos", "1"],
                       capture_output=True, text=True)
    lines = [x for x in p.stderr.strip().splitlines() if x.startswith("error:")]
    assert p.returncode == 2 and len(lines) == 1 and "deadlocks" in lines[0] and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "bnhw.cli", "sim", str(tmp_path), "--fifos", "sized"],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "II 256 cycles" in p.stdout


def test_fifo_config_file_reads_back_the_sized_depths(tmp_path):
    """The config `bnhw build` writes (FINN's inFIFODepths/outFIFODepths) gives `bnhw sim --fifos FILE`
    the depths that were sized, including the FIFO into the output DMA (listed only as an output)."""
    from bnhw.flows.simulate import fifo_depths
    from bnhw.hw.sim.fifo_sizing import finn_fifo_config

    g = _shortcut_graph()
    net = elaborate(g)
    s = size_fifos(net, frames=4)
    depths = [max(2, d) for d in s.depths]
    assert max(depths) > 2 and any(net.units[f.dst].kind == "sink" for f in net.fifos)
    p = tmp_path / "fifo_config.json"
    p.write_text(json.dumps(finn_fifo_config(net, s.depths)))
    assert fifo_depths(net, str(p), print) == depths
    g.save(tmp_path / "hw_graph.json")
    for extra in (["--fifos", str(p)], ["--fifos", "sized", "--json"]):
        r = subprocess.run([sys.executable, "-m", "bnhw.cli", "sim", str(tmp_path), *extra],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ii_cycles"] == 256 and "FIFO sizing" in r.stderr


def test_fifo_config_of_a_four_stream_concat_reads_back(tmp_path):
    """A concat of four streams is simulated as two chained units: the config keys every input's depth under
    the node's name (FINN's one StreamingConcat), and `bnhw sim --fifos FILE` reads them back; the stream
    between the two units is internal to FINN's node (depth 2)."""
    from helpers.graphs import cell_graph

    from bnhw.flows.simulate import fifo_depths
    from bnhw.hw.sim.fifo_sizing import finn_fifo_config

    g = cell_graph()
    net = elaborate(g)
    parts = [u for u in net.units if u.ports and u.name != u.node]
    assert parts                                                   # the graph has a concat of four streams
    s = size_fifos(net, frames=3)
    cfg = finn_fifo_config(net, s.depths)
    assert not any(u.name in cfg for u in parts)                   # no entry under a simulated part's name
    node = parts[0].node
    assert len(cfg[node]["inFIFODepths"]) == len(g.node(node).inputs) == 4
    p = tmp_path / "fifo_config.json"
    p.write_text(json.dumps(cfg))
    got = fifo_depths(net, str(p), print)
    for i, f in enumerate(net.fifos):
        u = net.units[f.dst]
        internal = u.ports and u.ports[u.ins.index(i)] < 0
        assert got[i] == (2 if internal else max(2, s.depths[i])), (i, u.name)


# ----------------------------------------------------------------------------- FINN graphs (timing netlist)
def _dnode(name, op, ins, outs, in_f, out_f, **attrs):
    from bnhw.hw.sim.dataflow_netlist import DataflowNode

    return DataflowNode(name, op, ins, outs, attrs, in_f, out_f, [1] * len(ins), [1] * len(outs))


def test_a_finn_graph_with_an_op_bnhw_does_not_model_is_one_line():
    from bnhw.hw.sim.dataflow_netlist import elaborate_dataflow
    from bnhw.hw.sim.netlist import SimError

    nodes = [_dnode("Lookup_hls_0", "Lookup_hls", ["x"], ["y"], [(1, 8, 1)], [(1, 8, 4)])]
    with pytest.raises(SimError) as e:
        elaborate_dataflow(nodes, "x", "y")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("Lookup_hls_0: ") and "Lookup_hls" in msg and "MVAU" in msg


def test_a_finn_graph_without_its_width_converters_is_refused():
    from bnhw.hw.sim.dataflow_netlist import elaborate_dataflow
    from bnhw.hw.sim.netlist import SimError

    nodes = [_dnode("Thresholding_rtl_0", "Thresholding_rtl", ["x"], ["t"], [(1, 4, 2)], [(1, 4, 2)]),
             _dnode("MVAU_hls_0", "MVAU_hls", ["t"], ["y"], [(1, 2, 4)], [(1, 2, 2)], MW=8, MH=4, SIMD=4, PE=2,
                    numInputVectors=[1])]
    with pytest.raises(SimError, match="InsertDWC"):
        elaborate_dataflow(nodes, "x", "y")


def test_finn_max_pool_and_mvau_schedules_reach_their_cycle_counts():
    """StreamingMaxPool 4x4 -> 2x2 (2 channel folds) then an MVAU (MW=4, SIMD=2, MH=4, PE=1, per pixel): the
    simulated II is the slower unit's words per frame, every output pixel written once."""
    from bnhw.hw.sim.dataflow_netlist import elaborate_dataflow
    from bnhw.hw.sim.engine import UNBOUNDED, run_engine
    from bnhw.hw.sim.simulate import steady_ii

    nodes = [_dnode("StreamingMaxPool_hls_0", "StreamingMaxPool_hls", ["x"], ["p"], [(1, 4, 4, 2, 2)],
                    [(1, 2, 2, 2, 2)], ImgDim=[4, 4], PoolDim=[2, 2], NumChannels=4, PE=2),
             _dnode("MVAU_hls_0", "MVAU_hls", ["p"], ["y"], [(1, 2, 2, 2, 2)], [(1, 2, 2, 4, 1)], MW=4, MH=4,
                    SIMD=2, PE=1, numInputVectors=[1, 2, 2])]
    net = elaborate_dataflow(nodes, "x", "y")
    pool = net.unit("StreamingMaxPool_hls_0")
    assert pool.positions == 32 and int(((pool.flags >> 4) & 1).sum()) == 8
    mvau = net.unit("MVAU_hls_0")
    assert mvau.positions == 4 * 4 * 2                 # pixels x NF x SF
    raw = run_engine(net, [UNBOUNDED] * len(net.fifos), 6)
    assert steady_ii(raw.frame_done) == 32
