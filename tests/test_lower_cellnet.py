"""Cell networks (BNAS v2 / BARS) in the hardware IR: the fixed-point Brevitas model, its QONNX export, the IR
(``lower_cellnet``), the cycle simulator and the CPU runtime agree bit for bit on real digits images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_cellnet import ALL_OPS_GENOTYPE, cell_outputs

from bnhw.errors import BnhwError
from bnhw.hw.cpu.runtime import CpuModel
from bnhw.hw.ir import HwGraph
from bnhw.hw.lower_binarynet import integer_input
from bnhw.hw.lower_cellnet import lower_cellnet
from bnhw.hw.ops import finn_ops, get_op
from bnhw.hw.sim.simulate import simulate
from bnhw.quant import binary_tensors, execute_qonnx, export_qonnx, recalibrate_bn
from bnhw.quant.cellnet import build_cell_model
from bnhw.quant.model import to_fixed
from bnhw.spec.cells import CellNetSpec, Genotype


def fixed_model(spec: CellNetSpec, digits, perturb, seed: int = 5):
    torch.manual_seed(seed)
    model = perturb(build_cell_model(spec), seed)
    x, _ = digits(spec.resolution, 40, spec.in_channels)
    recalibrate_bn(model, [x[:32]])
    return to_fixed(model), x[32:]


def check_ir_against_model(model, graph, x) -> np.ndarray:
    """Every cell output of the IR equals the model's (divided by the residual scale, HWC); returns the IR
    outputs (classifier accumulators)."""
    step = 2.0 ** -model.spec.precision.residual_frac_bits
    with torch.no_grad():
        ref = cell_outputs(model, x)
    ints = integer_input(model, x)
    names = graph.meta["cell_outputs"]
    assert len(names) == len(ref)
    outs = []
    for i in range(len(x)):
        env = graph.execute(ints[i], return_all=True)
        for k, (name, r) in enumerate(zip(names, ref, strict=True)):
            np.testing.assert_array_equal(env[name], r[i].numpy().transpose(1, 2, 0) / step, err_msg=f"cell {k}")
        outs.append(env[graph.output])
    return np.stack(outs)


def test_every_cell_op_is_bit_exact_from_brevitas_to_qonnx_ir_simulator_and_cpu(digits, perturb, tmp_path):
    """Normal and reduction cells with every op (separable convs, dilations, both pools, zeroise), a
    factorised reduce, inter-cell skips: Brevitas (fixed) = QONNX on every binary tensor, = IR on every cell
    output; the cycle simulator and the C runtime equal the IR."""
    spec = CellNetSpec(ALL_OPS_GENOTYPE, cells=3, init_channels=4, stem_multiplier=2, resolution=8, in_channels=1,
                       name="cfx")         # normal, reduction, reduction after a factorised reduce
    model, x = fixed_model(spec, digits, perturb)
    path = export_qonnx(model, tmp_path / "cfx.onnx")
    logits, binary = execute_qonnx(path, x.numpy(), return_binary=True)
    ref_binary = binary_tensors(model, x)
    assert len(ref_binary) == len(binary) > 0
    assert all(np.array_equal(a, b) for a, b in zip(ref_binary, binary, strict=True))
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())

    graph = lower_cellnet(model)
    ops = {n.op for n in graph.nodes}
    assert {"WindowMax", "WindowAvg", "Concat", "Gather", "AvgPoolSum", "Duplicate"} <= ops
    assert any(n.op == "MVAU" and int(n.attrs.get("groups", 1)) > 1 for n in graph.nodes)    # depthwise
    assert any(n.op == "SWG" and int(n.attrs.get("dilation", 1)) == 2 for n in graph.nodes)
    acc = check_ir_against_model(model, graph, x)
    ir_logits = graph.logits(acc)
    np.testing.assert_allclose(ir_logits, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    assert np.array_equal(ir_logits.argmax(1), logits.argmax(1))

    ints = integer_input(model, x[:3])
    sim = simulate(graph, frames=3, inputs=ints)
    assert not sim.deadlock and np.array_equal(sim.outputs, acc[:3])
    cpu = CpuModel(graph)
    for i in range(3):
        got = cpu.run_all(ints[i])
        env = graph.execute(ints[i], return_all=True)
        assert all(np.array_equal(v, env[s]) for s, v in got.items()) and len(got) > 50


@pytest.mark.parametrize("skip", [False, True])
def test_one_node_cells_without_concat_and_zeroise_edges_lower_bit_exact(digits, perturb, skip):
    g = Genotype(normal=(("zeroise", 0), ("avg_pool_3x3", 1)), reduce=(("bin_conv_5x5", 1), ("zeroise", 0)))
    spec = CellNetSpec(g, cells=3, init_channels=3, stem_multiplier=1, resolution=8, in_channels=1,
                       inter_cell_skip=skip, name="one-node")
    model, x = fixed_model(spec, digits, perturb, seed=7)
    graph = lower_cellnet(model)
    concats = [n.outputs[0] for n in graph.nodes if n.op == "Concat"]
    assert concats == ["cell2.pre0.concat"]                 # the factorised reduce's halves only
    check_ir_against_model(model, graph, x[:4])


def test_a_constant_node_and_a_float_model_are_refused_in_one_line():
    g = Genotype(normal=(("zeroise", 0), ("zeroise", 1)), reduce=(("max_pool_3x3", 0), ("zeroise", 1)))
    spec = CellNetSpec(g, cells=3, init_channels=2, resolution=8, in_channels=1, name="zero")
    with pytest.raises(BnhwError) as e:
        lower_cellnet(to_fixed(build_cell_model(spec)))
    msg = str(e.value)
    assert "\n" not in msg and "cell 0 (normal cell) node 0 (edges 0 and 1: both zeroise" in msg
    ok = spec.replace(genotype=Genotype(g.reduce, g.reduce))
    with pytest.raises(BnhwError, match="float residual path"):
        lower_cellnet(build_cell_model(ok))


def test_finn_graph_export_pads_max_pools_with_a_bnhw_unit_and_refuses_a_concatenated_popcount():
    """FINN's Pool_hls has no per-position divisor (WindowAvg travels as a bnhw unit) and its FMPadding pads with
    zeros only, so a max pool's padding with the type's minimum is bnhw's ValuePadding unit in front of FINN's
    window generator (no padding) and Pool_hls; an XNOR popcount read by a Concat (FINN's StreamingConcat cannot
    decode it) is refused in one line, not mis-built."""
    from helpers.graphs import cell_graph

    from bnhw.hw.finn_export import (
        FinnExportError,
        finn_dataflow_model,
        pool_window_folding,
        unit_type,
        value_padded,
        value_padding,
    )

    g = cell_graph()
    kinds = {n.op: unit_type(g, n) for n in g.nodes}
    assert kinds["WindowAvg"] == "WindowAvg" and kinds["WindowMax"] is None and kinds["Concat"] is None
    (swg,) = [n for n in g.nodes if value_padded(g, n)]
    pad, padded = value_padding(g, swg)
    assert (pad.op, pad.attrs["k"], pad.attrs["pad_value"], padded.shape) == ("SWG", 1, -128, (8, 8, 8))
    x = np.arange(6 * 6 * 8).reshape(6, 6, 8) % 200 - 100
    (y,) = get_op("SWG").execute(HwGraph.unit(pad, {**g.streams, padded.name: padded}), pad, [x])
    assert y.shape == padded.shape and np.array_equal(y[1:-1, 1:-1], x) and (y[0] == -128).all()
    with pytest.raises(FinnExportError) as e:
        finn_dataflow_model(g)
    assert "\n" not in str(e.value) and "Concat_1: reads the popcount of an XNOR MVAU" in str(e.value)
    # FINN's depthwise window generator in front of Pool_hls runs at the pool's PE, whatever bnhw folded it to
    (pool,) = g.consumers(swg.outputs[0])
    f = g.with_folding({swg.name: {"SIMD": 2}, pool.name: {"PE": 4}})
    cig = finn_ops(f, f.node(swg.name))[-1]
    assert cig.attrs["depthwise"] == 1 and cig.attrs["SIMD"] == 2
    assert pool_window_folding(f, f.node(swg.name), cig) == {"SIMD": 4}
    assert pool_window_folding(g, swg, finn_ops(g, swg)[-1]) == {}


@pytest.mark.parametrize("name", ["bnas-kv260-8x8", "bars-kv260-8x8", "bnas-pynq-8x8", "bars-pynq-8x8"])
def test_zoo_cell_nets_are_fixed_point_search_results_that_lower_bit_exact(name, digits, perturb):
    """The zoo's searched cell nets (specs checked in, found by `bnhw search --method bnas|bars --target pynq-z2`):
    listed by `bnhw zoo`, fixed point, and their IR equals the Brevitas model cell by cell on digits images."""
    from click.testing import CliRunner

    from bnhw.cli import main
    from bnhw.spec.zoo import get_arch

    spec = get_arch(name)
    assert isinstance(spec, CellNetSpec) and spec.precision.fixed and spec.name == name
    assert (len(spec.stage_cells) == 3) == name.startswith("bars")       # BARS's macro level: three stages
    r = CliRunner().invoke(main, ["zoo"])
    assert r.exit_code == 0 and any(line.startswith(name) for line in r.output.splitlines())
    model, x = fixed_model(spec.replace(precision=spec.precision.__class__()), digits, perturb)
    check_ir_against_model(model, lower_cellnet(model), x[:3])


@pytest.mark.parametrize("name,margin,min_fps", [("bnas-pynq-8x8", 0.599, 5000), ("bars-pynq-8x8", 0.85, 2000)])
def test_pynq_zoo_cell_nets_fold_to_their_search_bound_on_the_pynq_z2(name, margin, min_fps):
    """The pynq-z2 zoo cell nets (`bnhw search --target pynq-z2 --min-fps N`, the units within the search's
    `units_margin`): their folded units fit the pynq-z2 at N FPS or more, the AddRequant multipliers in DSP slices
    (in LUTs, 116 of them kept BARS's cells off the pynq-z2).  `bnhw build NAME --target pynq-z2 --margin M`
    adds the sized FIFOs and width converters (docs/RESULTS.md)."""
    from bnhw.hw.estimate import estimate_fpga
    from bnhw.spec.zoo import get_arch

    est = estimate_fpga(get_arch(name), "pynq-z2", margin=margin, cache=None)
    assert est.fits and est.fps >= min_fps, (est.fps, est.reason)
    assert est.resources["LUT"] <= margin * 53_200 and est.resources["DSP"] > 0
    assert any(f.get("mul_dsp") == 1 for f in est.folding.values())
