"""Cell networks (BNAS v2 / BARS) through FINN: `bnhw build` hands a zoo cell net's IR to finn-plus as FINN's
dataflow graph (FINN's DuplicateStreams, StreamingConcat, ConvolutionInputGenerator, Pool, MVAU / VVAU,
Thresholding; bnhw's units where FINN has none or pads wrongly), FINN's execution of it equals the IR on real
digits images, bnhw's units C-simulate equal to FINN's execution, and bnhw's FIFO sizing runs as a FINN step on
the graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.finn_checks import assert_finn_took_bnhws_folding_and_model

from bnhw.cli import main
from bnhw.hw.finn_compat import finn_builder_available, finn_builder_unavailable_reason

pytestmark = pytest.mark.skipif(not finn_builder_available(),
                                reason=f"finn-plus's builder not usable: {finn_builder_unavailable_reason()}")


@pytest.fixture(scope="module")
def bnas_build(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("finn") / "bnas"
    r = CliRunner().invoke(main, ["build", "bnas-kv260-8x8", "--target", "kv260", "-o", str(out), "--no-sim",
                                  "--no-csim", "--csim-inputs", "8"])
    assert r.exit_code == 0, r.output
    return out, r.output


def _units_and_ir(out: Path):
    from qonnx.core.modelwrapper import ModelWrapper

    from bnhw.hw.ir import HwGraph

    final = ModelWrapper(str(out / "finn" / "output" / "intermediate_models" / "step_hw_codegen.onnx"))
    return final, HwGraph.load(out / "hw_graph.json")


def test_bnas_cell_net_builds_through_finn_with_finns_units_and_bnhws_where_finn_pads_wrongly(bnas_build):
    """FINN's steps run to code generation on the cell net's graph; branches, concatenations and pools are FINN's
    own units (the max pool's window generator depthwise, as FINN's Pool_hls reads it), the max pool's padding
    with the type's minimum is bnhw's ValuePadding unit (FINN's FMPadding pads zeros), and per node FINN's
    estimate equals bnhw's model, so FINN's II is bnhw's."""
    from qonnx.custom_op.registry import getCustomOp

    out, log = bnas_build
    assert "FINN: not run" not in log and "bnhw units in the graph" in log
    f = json.loads((out / "report.json").read_text())["finn"]
    assert f["run"] and f["ok"] and f["front"] == "ir", f
    assert set(f["units"]) == {"AddRequant", "Gather", "GlobalAvgPool", "ValuePadding", "WindowAvg"}
    final, g = _units_and_ir(out)
    types = {n.op_type for n in final.graph.node}
    assert {"DuplicateStreams_hls", "StreamingConcat_hls", "Pool_hls", "ConvolutionInputGenerator_rtl",
            "FMPadding_rtl", "MVAU_hls", "Thresholding_rtl", "ValuePadding_hls"} <= types
    concats = [n for n in final.graph.node if n.op_type == "StreamingConcat_hls"]
    assert max(len(n.input) for n in concats) == 4                  # a cell's four nodes
    for n in final.graph.node:
        if n.op_type == "Pool_hls" and getCustomOp(n).get_nodeattr("Function") == "MaxPool":
            swg = final.find_producer(n.input[0])
            assert getCustomOp(swg).get_nodeattr("depthwise") == 1
            assert final.find_producer(swg.input[0]).op_type == "ValuePadding_hls"
    assert sum(n.op == "WindowMax" for n in g.nodes) == sum(
        n.op_type == "Pool_hls" and getCustomOp(n).get_nodeattr("Function") == "MaxPool" for n in final.graph.node)
    assert_finn_took_bnhws_folding_and_model(out, final, f)


def test_finn_execution_of_the_bnas_build_equals_the_ir_on_every_stream(bnas_build):
    """FINN's execution of the build's FINN graph on its 8 digits images: every IR stream (after FINN's encodings)
    equals the IR's, except the zero-padded binary windows FINN pads with -1 and the accumulators behind them,
    whose difference the next AddRequant adds back (its output is compared)."""
    from bnhw.hw.finn_compat import FinnExecutor
    from bnhw.hw.finn_export import finn_dataflow_model

    out, _ = bnas_build
    _, g = _units_and_ir(out)
    fx = FinnExecutor(out / "finn" / "model.onnx")
    ex = finn_dataflow_model(g)
    imgs = np.load(out / "test_images.npy")
    assert len(imgs) == 8
    for img in imgs:
        x = g.input_integers(img.transpose(1, 2, 0))
        ref = g.execute(x, return_all=True)
        got = fx.tensors(x[None])
        compared = [s for s in ref if s not in ex.padded_minus_one]
        assert len(compared) > 100 and g.output in compared
        for s in compared:
            assert np.array_equal(ex.ir_value(s, got[s]).reshape(ref[s].shape), ref[s]), s


def test_finn_execution_of_the_bars_graph_equals_the_ir_on_real_images(tmp_path):
    """The BARS zoo net (three stages, seven max pools, nine concatenations) exported to FINN's graph: FINN's
    execution equals the IR's classifier accumulators and cell outputs on 8 digits images."""
    from bnhw.data import digits_images
    from bnhw.hw.estimate import fresh_hardware_model
    from bnhw.hw.finn_compat import FinnExecutor
    from bnhw.hw.finn_export import finn_dataflow_model
    from bnhw.hw.lower_binarynet import integer_input
    from bnhw.hw.lowering import lower_model
    from bnhw.spec.zoo import get_arch

    spec = get_arch("bars-kv260-8x8")
    model = fresh_hardware_model(spec)
    g = lower_model(model)
    ex = finn_dataflow_model(g)
    assert set(ex.units()) == {"AddRequant", "Gather", "GlobalAvgPool", "ValuePadding", "WindowAvg"}
    assert sum(r["op_type"] == "ValuePadding" for r in ex.nodes) == sum(n.op == "WindowMax" for n in g.nodes) == 7
    ex.model.save(str(tmp_path / "bars_finn.onnx"))
    fx = FinnExecutor(tmp_path / "bars_finn.onnx")
    imgs, _ = digits_images(spec.resolution, 8, channels=spec.in_channels, seed=5)
    streams = [g.output, *g.meta["cell_outputs"]]
    for x in integer_input(model, imgs):
        ref = g.execute(x, return_all=True)
        got = fx.tensors(x[None])
        for s in streams:
            assert np.array_equal(ex.ir_value(s, got[s]).reshape(ref[s].shape), ref[s]), s


def test_bnhws_new_units_c_simulate_equal_to_finns_execution(bnas_build, tmp_path):
    """FINN's generated top files of the units a cell net adds (ValuePadding, Gather at its producer's width,
    WindowAvg) and of an AddRequant reading a wide XNOR popcount (FINN's type for it widened to [0, MW]),
    compiled with g++ and fed FINN's execution's values on a real image, output what FINN's execution does."""
    import shutil

    from qonnx.custom_op.registry import getCustomOp

    from bnhw.hw.finn_compat import FinnExecutor
    from bnhw.hw.finn_ops import is_unit

    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed: the units' FINN projects cannot be compiled")
    out, _ = bnas_build
    f = json.loads((out / "report.json").read_text())["finn"]
    final, g = _units_and_ir(out)
    picked = {}
    for node in final.graph.node:
        inst = getCustomOp(node)
        if node.op_type.startswith("MVAU") and inst.get_nodeattr("binaryXnorMode") and inst.get_nodeattr(
                "noActivation") and int(inst.get_nodeattr("MW")) > 1024:
            assert inst.get_nodeattr("outputDataType") == "UINT11"            # popcounts up to MW = 1600
            (reader,) = final.find_consumers(node.output[0])
            picked.setdefault("wide popcount", (reader, getCustomOp(reader)))
        if is_unit(node) and node.op_type in ("ValuePadding_hls", "Gather_hls", "WindowAvg_hls"):
            picked.setdefault(node.op_type, (node, inst))
    assert set(picked) == {"ValuePadding_hls", "Gather_hls", "WindowAvg_hls", "wide popcount"}
    assert int(picked["Gather_hls"][1].get_nodeattr("PE")) > 1
    fx = FinnExecutor(out / "finn" / "model.onnx")
    ctx = fx.tensors(g.input_integers(np.load(out / "test_images.npy")[1].transpose(1, 2, 0))[None])
    for node, inst in picked.values():
        inst.set_nodeattr("code_gen_dir_ipgen", str(out / "finn" / f["codegen"][node.name]))
        ins = [np.rint(np.asarray(ctx[s], dtype=np.float64)) for s in node.input]
        want = np.rint(np.asarray(ctx[node.output[0]], dtype=np.float64)).astype(np.int64)
        got = inst.c_simulate(ins, tmp_path / node.name)
        assert np.array_equal(np.rint(got).astype(np.int64).reshape(-1), want.reshape(-1)), node.name


def test_bnhw_fifo_sizing_step_on_the_cell_nets_finn_graph(bnas_build, tmp_path):
    """step_bnhw_fifo_depths on the folded FINN graph of the cell net (FINN's width converters inserted, bnhw's
    units, concatenations of four streams): no deadlock at the sized depths, the simulated II is FINN's slowest
    node's, the skip paths and branches get deep FIFOs where they join, and every depth lands on FINN's nodes."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from bnhw.hw.finn_compat import finn_builder
    from bnhw.hw.finn_steps import bnhw_fifo_depths_step

    out, _ = bnas_build
    _, bc = finn_builder()
    m = ModelWrapper(str(out / "finn" / "output" / "intermediate_models" / "step_bnhw_units.onnx"))
    cfg = bc.DataflowBuildConfig(output_dir=str(tmp_path), synth_clk_period_ns=5.0, board="KV260_SOM",
                                 shell_flow_type=bc.ShellFlowType.VIVADO_ZYNQ, generate_outputs=[])
    m = bnhw_fifo_depths_step(frames=2)(m, cfg)
    r = json.loads((tmp_path / "report" / "bnhw_fifo_sizing.json").read_text())
    assert r["complete"] and r["ii_sized"] == r["ii_unbounded"] == r["finn_max_exp_cycles"] == 1024
    deep = [x for x in r["fifos"] if x["depth"] > 256]
    # the skip paths and the cell's branches, buffered where they join: into the adds and the concatenations
    joins = ("AddRequant", "StreamingConcat")
    assert deep and all(any(j in x["fifo"].split(" -> ")[1] for j in joins) for x in deep)
    assert any("AddRequant" in x["fifo"].split(" -> ")[1] for x in deep)
    concat = next(n for n in m.graph.node if n.op_type == "StreamingConcat_hls" and len(n.input) == 4)
    depths = [int(d) for d in getCustomOp(concat).get_nodeattr("inFIFODepths")]
    assert len(depths) == 4 and min(depths) >= 2
    assert cfg.auto_fifo_depths is False and Path(cfg.fifo_config_file).is_file()
