"""The FINN back end's first part (bnhw.hw.finn_build): `bnhw build` hands the QONNX network to finn-plus's own
dataflow builder with bnhw's folding, FINN runs offline to its code generation, and its estimates are reported
beside bnhw's."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.finn_checks import assert_finn_took_bnhws_folding_and_model

from bnhw.cli import main
from bnhw.hw.finn_compat import finn_builder_available, finn_builder_unavailable_reason

pytestmark = pytest.mark.skipif(not finn_builder_available(),
                                reason=f"finn-plus's builder not usable: {finn_builder_unavailable_reason()}")


@pytest.fixture(scope="module")
def tfc_build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finn") / "tfc"
    r = CliRunner().invoke(main, ["build", "tfc-w1a1", "--target", "pynq-z2", "-o", str(out), "--csim-inputs", "2",
                                  "--sim-frames", "3", "--fifo-seconds", "20"])
    assert r.exit_code == 0, r.output
    assert "FINN (finn-plus) built the dataflow graph" in r.output
    return out


def test_finn_runs_its_own_steps_to_code_generation_with_bnhw_folding(tfc_build):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from bnhw.hw.finn_compat import finn_builder

    _, bc = finn_builder()
    f = json.loads((tfc_build / "report.json").read_text())["finn"]
    steps = list(bc.hw_codegen_dataflow_steps)
    steps.insert(steps.index("step_apply_folding_config") + 1, "step_bnhw_complete_folding")
    assert f["run"] and f["ok"] and f["steps_run"] == steps
    final = ModelWrapper(str(tfc_build / "finn" / "output" / "intermediate_models" / "step_hw_codegen.onnx"))
    hw = [n for n in final.graph.node if n.domain.startswith("finn.custom_op.fpgadataflow")]
    assert hw and set(f["codegen"]) == {n.name for n in hw}          # every HW node has its generated code
    for name, d in f["codegen"].items():
        assert any((tfc_build / "finn" / d).iterdir()), name
    ours = json.loads((tfc_build / "finn" / "folding_config.json").read_text())
    ir = json.loads((tfc_build / "folding.json").read_text())
    applied = {n.name: getCustomOp(n) for n in hw}
    assert {k for k in ir if k.startswith("MVAU_hls")} <= set(ours)
    for k, attrs in ours.items():                                    # FINN applied bnhw's folding, node by node
        if k in applied:
            assert all(applied[k].get_nodeattr(a) == v for a, v in attrs.items()), (k, attrs)
    assert set(ours) - set(applied) == {"Defaults", "LabelSelect_hls_0"}    # FINN ends in its affine head
    done = json.loads((tfc_build / "finn" / "output" / "report" / "bnhw_completed_folding.json").read_text())
    assert sorted(u["unit"] for u in done["units"]) == ["ElementwiseAdd_hls_0", "ElementwiseMul_hls_0", "Reshape_rtl_0"]


def test_bnhw_fifo_depths_are_finn_node_attributes(tfc_build):
    """bnhw's simulated FIFO sizing goes into FINN's graph under FINN's node names (FINN's ApplyConfig sets
    inFIFODepths / outFIFODepths), and FINN's full flow is told to keep them instead of sizing its own."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    cfg = json.loads((tfc_build / "finn" / "folding_config.json").read_text())
    ours = json.loads((tfc_build / "fifo_config.json").read_text())             # bnhw's units
    assert cfg["MVAU_hls_1"]["inFIFODepths"] == ours["MVAU_hls_1"]["inFIFODepths"]
    final = ModelWrapper(str(tfc_build / "finn" / "output" / "intermediate_models" / "step_hw_codegen.onnx"))
    nodes = {n.name: getCustomOp(n) for n in final.graph.node if n.name in cfg}
    with_depths = [k for k, v in cfg.items() if "inFIFODepths" in v and k in nodes]
    assert len(with_depths) >= 5
    for k in with_depths:
        assert list(nodes[k].get_nodeattr("inFIFODepths")) == cfg[k]["inFIFODepths"], k
        assert list(nodes[k].get_nodeattr("outFIFODepths")) == cfg[k]["outFIFODepths"], k
    full = json.loads((tfc_build / "finn" / "dataflow_build_config.json").read_text())
    assert full["auto_fifo_depths"] is False
    # FINN's extra node's folding (bnhw's completion step) is written down for the full flow, as FINN applied it
    assert nodes["Reshape_rtl_0"].get_nodeattr("PE") == cfg["Reshape_rtl_0"]["PE"] > 1


def test_finns_own_full_flow_takes_bnhws_fifo_depths(tfc_build, tmp_path, monkeypatch):
    """The build folder's DataflowBuildConfig, run by FINN's own builder with FINN's default steps up to
    step_generate_hardware (code generation, IP generation, FIFO step): FINN's step_set_fifo_depths inserts its
    FIFOs and applies bnhw's depth file, so its fifo_sizing report has bnhw's simulated depths.  Vivado HLS is not
    here: only FINN's step_hw_ipgen is replaced by a no-op.  (Before the depth file, FINN stopped at that step:
    "auto_fifo_depths is set to False but no fifo_config_file provided".)"""
    import shutil

    from bnhw.hw.finn_compat import finn_build_dir, finn_builder

    bd, bc = finn_builder()                     # FINN's offline settings first, then its modules
    import finn.builder.build_dataflow_steps as finn_steps
    work = tmp_path / "finn"
    shutil.copytree(tfc_build / "finn", work, ignore=shutil.ignore_patterns("output", "finn_tmp"))
    monkeypatch.setattr(finn_steps, "step_hw_ipgen", lambda model, cfg, parent_node=None: model)
    monkeypatch.chdir(work)                     # `finn build` runs in the folder (the file paths are relative)
    cfg = bc.DataflowBuildConfig.construct_from(work / "dataflow_build_config.json")
    assert cfg.steps is None and cfg.auto_fifo_depths is False
    steps = list(bc.default_build_dataflow_steps)
    cfg.steps = steps[:steps.index("step_generate_hardware") + 1]
    cfg.output_dir = work / "output"
    (tmp_path / "tmp").mkdir()
    with finn_build_dir(tmp_path / "tmp"):
        rc = bd.build_dataflow_cfg(str(work / "model.onnx"), cfg)
    assert rc == 0, (work / "output" / "build_dataflow.log").read_text()[-3000:]
    finn_sized = json.loads((work / "output" / "report" / "fifo_sizing.json").read_text())["fifo_depths"]
    ours = json.loads((work / "fifo_depths.json").read_text())["fifo_depths"]
    assert finn_sized == ours and len(ours) >= 10
    # the depths are bnhw's simulated ones: FINN's FIFO between two MVAUs = bnhw's sizing of that connection
    sim = json.loads((tfc_build / "fifo_config.json").read_text())
    deep = {k: v for k, v in sim.items() if k != "Defaults" and max(v.get("inFIFODepths", [0])) > 2}
    assert deep and sorted(d for d in ours.values() if d > 2) == sorted(max(v["inFIFODepths"]) for v in deep.values())
    info = json.loads((tfc_build / "finn" / "finn_build.json").read_text())["fifo_depths"]
    assert info == {"file": "fifo_depths.json", "fifos": len(ours), "deeper_than_2": sum(d > 2 for d in ours.values())}


def test_finn_estimates_of_every_node_equal_bnhw_models(tfc_build):
    """Per node of the graph FINN built: FINN's own cycles, LUT and BRAM18 = bnhw's models of that FINN op at
    bnhw's folding (the input Thresholding included: FINN gets the 8-bit pixel input bnhw's IR takes)."""
    f = json.loads((tfc_build / "report.json").read_text())["finn"]
    rows = {c["name"]: c for c in f["comparison"]}
    both = [c for c in rows.values() if c["finn_cycles"] is not None and c["bnhw_cycles"] is not None]
    assert {c["name"] for c in both} >= {"Thresholding_rtl_0", *(f"MVAU_hls_{i}" for i in range(4))}
    for c in both:
        assert c["finn_cycles"] == c["bnhw_cycles"] and c["finn_LUT"] == pytest.approx(c["bnhw_LUT"]), c
        assert c["finn_BRAM18"] == c["bnhw_BRAM18"], c
    finn_total = json.loads((tfc_build / "finn" / "output" / "report" / "estimate_layer_resources.json").read_text())
    assert f["total"]["LUT"] == finn_total["total"]["LUT"] and f["total"]["BRAM18"] == finn_total["total"]["BRAM_18K"]
    md = (tfc_build / "report.md").read_text()
    assert "| FINN's estimate of its graph |" in md and "| FINN's graph + FIFOs at bnhw's simulated depths |" in md
    assert "FINN's estimate of the graph it built" in md
    only_finn = sorted(c["name"] for c in rows.values() if c["bnhw_cycles"] is None)
    assert only_finn == ["ElementwiseAdd_hls_0", "ElementwiseMul_hls_0", "Reshape_rtl_0"], only_finn
    md = (tfc_build / "report.md").read_text()
    assert "## FINN (finn-plus's own builder)" in md and "| MVAU_hls_0 |" in md


def test_the_dataflow_build_config_loads_in_finn(tfc_build):
    from bnhw.hw.finn_compat import finn_builder

    _, bc = finn_builder()
    cfg = bc.DataflowBuildConfig.construct_from(tfc_build / "finn" / "dataflow_build_config.json")
    assert cfg.steps is None                                         # FINN's full default flow
    assert Path(cfg.folding_config_file).name == "folding_config.json" and cfg.board == "Pynq-Z2"
    assert bc.DataflowOutputType.BITFILE in cfg.generate_outputs
    folding = json.loads((tfc_build / "finn" / "folding_config.json").read_text())
    ir = json.loads((tfc_build / "folding.json").read_text())["MVAU_hls_0"]
    assert {k: folding["MVAU_hls_0"][k] for k in ir} == ir
    assert cfg.auto_fifo_depths is False                             # bnhw's sized FIFOs are in the config


@pytest.fixture(scope="module")
def nas_build(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("finn") / "nas"
    r = CliRunner().invoke(main, ["build", "nasbnn-cifar-smallest", "--target", "pynq-z2", "-o", str(out),
                                  "--no-sim", "--no-csim", "--csim-inputs", "6"])
    assert r.exit_code == 0, r.output
    return out, r.output


def test_a_nasbnn_net_goes_to_finn_as_bnhws_ir_and_finn_generates_its_code(nas_build):
    """FINN's front end cannot take a NAS-BNN net; bnhw hands FINN its IR as FINN's HW graph, FINN's own steps run
    to code generation, every node (FINN's units and bnhw's) has generated code, FINN applied bnhw's folding, and
    per node FINN's estimate equals bnhw's model."""
    from qonnx.core.modelwrapper import ModelWrapper

    out, log = nas_build
    f = json.loads((out / "report.json").read_text())["finn"]
    assert f["run"] and f["ok"] and f["front"] == "ir", f
    assert f["steps_run"] == ["step_specialize_layers", "step_bnhw_node_order", "step_apply_folding_config",
                              "step_minimize_bit_width", "step_bnhw_units", "step_hw_codegen"]
    assert set(f["units"]) == {"AddRequant", "Gather", "GlobalAvgPool", "GroupedMVAU", "RPReLU"}
    assert "bnhw units in the graph" in log
    final = ModelWrapper(str(out / "finn" / "output" / "intermediate_models" / "step_hw_codegen.onnx"))
    types = {n.op_type for n in final.graph.node}
    assert {"MVAU_hls", "ConvolutionInputGenerator_rtl", "FMPadding_rtl", "Thresholding_rtl", "Pool_hls",
            "DuplicateStreams_hls"} <= types                          # FINN's own units, specialised by FINN
    assert not any(n.domain == "finn.custom_op.fpgadataflow" for n in final.graph.node)
    assert set(f["codegen"]) == {n.name for n in final.graph.node} and len(f["codegen"]) == f["nodes_from"][
        "FINN unit"] + f["nodes_from"]["bnhw unit"]
    assert len(assert_finn_took_bnhws_folding_and_model(out, final, f)) > 100
    md = (out / "report.md").read_text()
    assert "bnhw units" in md and "`GroupedMVAU`" in md and "TERNARY" in md


def test_the_nasbnn_finn_config_loads_in_finn(nas_build):
    """The continuation config names bnhw's steps by module path (FINN imports them)."""
    from bnhw.hw.finn_compat import finn_builder

    out, _ = nas_build
    _, bc = finn_builder()
    cfg = bc.DataflowBuildConfig.construct_from(out / "finn" / "dataflow_build_config.json")
    assert cfg.steps[:2] == ["step_specialize_layers", "bnhw.hw.finn_steps.step_bnhw_node_order"]
    assert "bnhw.hw.finn_steps.step_bnhw_units" in cfg.steps and "step_qonnx_to_finn" not in cfg.steps


def test_every_kind_of_bnhw_unit_is_a_finn_hls_node_whose_project_c_simulates_equal_to_finns_execution(
        nas_build, tmp_path):
    """Each bnhw unit is a FINN HLS node (FINN's ``is_hls_node``) whose project FINN's own ``PrepareIP`` wrote:
    ``hls_syn_<node>.tcl`` names the top function ``<node>`` and ``top_<node>.cpp`` defines it with the ports
    FINN's stitching expects (``in0_V``, ..., ``out0_V``, ``ap_ctrl_none``).  That top file, compiled with g++
    and fed words packed as FINN's rtlsim packs them with the values FINN's execution of the whole graph gives
    the unit's inputs on a real image (XNOR popcounts, BINARY bits padded with -1, a padding correction folded
    into a bias per position class), outputs what FINN's execution of the unit does."""
    import re
    import shutil

    import numpy as np
    from finn.util.fpgadataflow import is_hls_node
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from bnhw.hw.finn_compat import FinnExecutor
    from bnhw.hw.finn_ops import is_unit
    from bnhw.hw.ir import HwGraph

    out, _ = nas_build
    f = json.loads((out / "report.json").read_text())["finn"]
    final = ModelWrapper(str(out / "finn" / "output" / "intermediate_models" / "step_hw_codegen.onnx"))
    kinds = {}
    for node in final.graph.node:
        if is_unit(node):
            assert is_hls_node(node), node.name
            inst = getCustomOp(node)
            inst.set_nodeattr("code_gen_dir_ipgen", str(out / "finn" / f["codegen"][node.name]))
            d = inst.description()
            border = any(a.name == "param_border" for a in node.attribute)
            kinds.setdefault((node.op_type, border, d["decode"][0][:8]), (node, inst))
    assert {k[0] for k in kinds} == {"AddRequant_hls", "Gather_hls", "GlobalAvgPool_hls", "GroupedMVAU_hls",
                                     "RPReLU_hls"}
    assert any(k[0] == "AddRequant_hls" and k[1] and k[2] == "popcount" for k in kinds)   # border + popcount
    for node, inst in kinds.values():
        code = Path(inst.get_nodeattr("code_gen_dir_ipgen"))
        tcl = (code / f"hls_syn_{node.name}.tcl").read_text()
        assert f'set config_toplevelfxn "{node.name}"' in tcl and f"top_{node.name}.cpp" in tcl
        top = (code / f"top_{node.name}.cpp").read_text()
        intf = inst.get_verilog_top_module_intf_names()
        ports = [p for p, _ in intf["s_axis"] + intf["m_axis"]]
        assert ports == [f"in{i}_V" for i in range(len(node.input))] + ["out0_V"]
        sig = re.search(rf"void {node.name}\((.*)\)", top).group(1)
        assert re.findall(r"&(\w+)", sig) == ports, sig
        assert all(f"#pragma HLS INTERFACE axis port={p}" in top for p in ports)
        assert "#pragma HLS INTERFACE ap_ctrl_none port=return" in top
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed: the units' FINN projects are generated and checked, not compiled")
    g = HwGraph.load(out / "hw_graph.json")
    fx = FinnExecutor(out / "finn" / "model.onnx")
    ctx = fx.tensors(g.input_integers(np.load(out / "test_images.npy")[0].transpose(1, 2, 0))[None])
    for node, inst in sorted(kinds.values(), key=lambda ni: ni[0].name):
        d = inst.description()
        ins = [np.rint(np.asarray(ctx[s["name"]], dtype=np.float64)) for s in d["inputs"]]
        want = np.rint(np.asarray(ctx[d["outputs"][0]["name"]], dtype=np.float64)).astype(np.int64)
        got = inst.c_simulate(ins, tmp_path / node.name)
        assert np.array_equal(np.rint(got).astype(np.int64).reshape(-1), want.reshape(-1)), node.name


def test_finns_hls_synth_ip_takes_a_bnhw_unit_and_stops_only_at_the_missing_vitis_hls(nas_build, monkeypatch):
    """FINN's own ``HLSSynthIP`` accepts a bnhw unit (FINN's ``is_hls_node``), finds its project (the Tcl script
    ``PrepareIP`` wrote) and fails where Vitis HLS is missing: the error names the tool, not bnhw's node."""
    import shutil

    from finn.transformation.fpgadataflow.hlssynth_ip import HLSSynthIP
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.util.basic import qonnx_make_model

    from bnhw.hw.finn_ops import is_unit

    if shutil.which("vitis_hls") or shutil.which("vitis-run"):
        pytest.skip("Vitis HLS is installed here: HLSSynthIP would synthesise the unit (minutes), not fail")
    out, _ = nas_build
    f = json.loads((out / "report.json").read_text())["finn"]
    final = ModelWrapper(str(out / "finn" / "output" / "intermediate_models" / "step_hw_codegen.onnx"))
    node = next(n for n in final.graph.node if is_unit(n) and n.op_type == "AddRequant_hls")
    inst = getCustomOp(node)
    inst.set_nodeattr("code_gen_dir_ipgen", str(out / "finn" / f["codegen"][node.name]))
    vi = [helper.make_tensor_value_info(t, TensorProto.FLOAT, final.get_tensor_shape(t))
          for t in (*node.input, *node.output)]
    one = ModelWrapper(qonnx_make_model(helper.make_graph([node], "unit", vi[:len(node.input)],
                                                          vi[len(node.input):])))
    monkeypatch.setenv("XILINX_VIVADO", "/nonexistent/Xilinx/Vivado/2024.1")   # the version FINN parses
    monkeypatch.delenv("FINN_TOOL_DIR_OVERRIDE", raising=False)
    with pytest.raises(Exception, match="vitis_hls") as e:
        one.transform(HLSSynthIP(num_workers=1))
    assert node.name not in str(e.value) and "not supported" not in str(e.value), e.value


def test_finns_create_stitched_ip_connects_bnhw_units_by_their_ports(nas_build, tmp_path, monkeypatch):
    """FINN's own ``CreateStitchedIP`` on two chained bnhw units (their ``ip_path`` / ``ip_vlnv`` set as
    ``HLSSynthIP`` would, which needs Vitis HLS) writes Vivado's block design: one IP cell per unit, the first
    unit's ``out0_V`` into the second's ``in0_V``, clock and reset on ``ap_clk`` / ``ap_rst_n``; it stops only
    where Vivado is missing."""
    import shutil

    from finn.transformation.fpgadataflow.create_stitched_ip import CreateStitchedIP
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.util.basic import qonnx_make_model

    from bnhw.hw.finn_compat import finn_build_dir
    from bnhw.hw.finn_ops import is_unit

    if shutil.which("vivado"):
        pytest.skip("Vivado is installed here: CreateStitchedIP would need the synthesised IPs (HLSSynthIP)")
    out, _ = nas_build
    f = json.loads((out / "report.json").read_text())["finn"]
    final = ModelWrapper(str(out / "finn" / "output" / "intermediate_models" / "step_hw_codegen.onnx"))
    pair = next((n, c) for n in final.graph.node if is_unit(n)
                for c in [final.find_consumer(n.output[0])] if c is not None and is_unit(c) and len(c.input) == 1)
    for n in pair:
        inst = getCustomOp(n)
        code = str(out / "finn" / f["codegen"][n.name])
        inst.set_nodeattr("code_gen_dir_ipgen", code)
        inst.set_nodeattr("ip_path", code)
        inst.set_nodeattr("ip_vlnv", f"xilinx.com:hls:{n.name}:1.0")
    ts = [pair[0].input[0], pair[0].output[0], pair[1].output[0]]
    vi = {t: helper.make_tensor_value_info(t, TensorProto.FLOAT, final.get_tensor_shape(t)) for t in ts}
    two = ModelWrapper(qonnx_make_model(helper.make_graph(list(pair), "two", [vi[ts[0]]], [vi[ts[2]]],
                                                          value_info=[vi[ts[1]]])))
    monkeypatch.setenv("XILINX_VIVADO", "/nonexistent/Xilinx/Vivado/2024.1")
    monkeypatch.delenv("FINN_TOOL_DIR_OVERRIDE", raising=False)
    with finn_build_dir(tmp_path), pytest.raises(Exception, match="vivado not found"):
        two.transform(CreateStitchedIP("xc7z020clg400-1", 10.0))
    tcl = next(tmp_path.glob("vivado_stitch_proj_*/make_project.tcl")).read_text()
    a, b = pair[0].name, pair[1].name
    for cmd in (f"create_bd_cell -type ip -vlnv xilinx.com:hls:{a}:1.0 {a}",
                f"create_bd_cell -type ip -vlnv xilinx.com:hls:{b}:1.0 {b}",
                f"connect_bd_intf_net [get_bd_intf_pins {a}/out0_V] [get_bd_intf_pins {b}/in0_V]",
                f"make_bd_intf_pins_external [get_bd_intf_pins {a}/in0_V]",
                f"make_bd_intf_pins_external [get_bd_intf_pins {b}/out0_V]",
                f"[get_bd_pins {b}/ap_clk]", f"[get_bd_pins {b}/ap_rst_n]"):
        assert cmd in tcl, cmd


def test_finns_full_flow_from_the_nasbnn_build_folder_stops_only_at_the_missing_vitis_hls(nas_build, tmp_path):
    """FINN's full flow, run from the build folder's ``dataflow_build_config.json`` in a fresh process (which
    imports bnhw's steps, and so registers its units, as ``finn build`` would), runs every step to
    ``step_generate_hardware``, generates the code of every node, bnhw's units included, and stops at IP
    generation only because ``vitis_hls`` is missing."""
    import shutil
    import subprocess
    import sys

    if shutil.which("vitis_hls") or shutil.which("vitis-run"):
        pytest.skip("Vitis HLS is installed here: the flow would synthesise every node (hours), not fail")
    out, _ = nas_build
    work = tmp_path / "finn"
    shutil.copytree(out / "finn", work, ignore=shutil.ignore_patterns("output", "finn_tmp"))
    script = ("from pathlib import Path\n"
              "from bnhw.hw.finn_compat import finn_build_dir, finn_builder\n"
              "bd, bc = finn_builder()\n"
              "cfg = bc.DataflowBuildConfig.construct_from(Path('dataflow_build_config.json').resolve())\n"
              "cfg.output_dir = str(Path('output').resolve())\n"
              "Path('tmp').mkdir()\n"
              "with finn_build_dir(Path('tmp')):\n"
              "    print('rc', bd.build_dataflow_cfg('model.onnx', cfg))\n")
    env = {k: v for k, v in os.environ.items() if k != "FINN_TOOL_DIR_OVERRIDE"}
    env["XILINX_VIVADO"] = "/nonexistent/Xilinx/Vivado/2024.1"
    r = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True,
                       timeout=600)
    log = (work / "output" / "build_dataflow.log").read_text()
    # FINN's builder logs its failure and, run non-interactively, raises it again
    assert r.returncode == 0 or r.stderr.rstrip().endswith("vitis_hls not found in PATH"), r.stderr[-2000:]
    steps = re.findall(r"Running step: (\w+)", log)
    assert steps[-1] == "step_generate_hardware" and "step_bnhw_units" in steps, steps
    assert "vitis_hls not found in PATH" in log and "Codegen for the current model done" in log, log[-2000:]
    made = {p.name.split("_hls_")[0].removeprefix("code_gen_ipgen_") for p in (work / "tmp").glob("code_gen_ipgen_*")}
    assert {"AddRequant", "RPReLU", "Gather", "GlobalAvgPool", "GroupedMVAU", "MVAU"} <= made, made


def test_bnhw_run_on_a_nasbnn_build_runs_finn_and_every_engine_agrees(nas_build):
    out, _ = nas_build
    x = str(out / "test_images.npy")
    r = _run(str(out), "--input", x, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["engine"] == "finn" and d["finn_graph"] == "finn/model.onnx" and d["images"] == 6
    for e in ("ir", "sim", "cpu", "qonnx"):
        assert json.loads(_run(str(out), "--input", x, "--engine", e, "--json").stdout)["labels"] == d["labels"], e


@pytest.mark.parametrize("net, images", [("nasbnn-cifar-smallest", 2), ("nasbnn-cifar-largest", 1)])
def test_finn_execution_of_the_exported_graph_equals_the_ir_on_every_stream(net, images, tmp_path):
    """FINN's node execution of bnhw's exported graph (FINN's units and bnhw's) on real digits images: every
    stream equals the IR's (after FINN's encodings: BINARY bits, XNOR popcounts), the classifier's accumulators
    included, except the zero-padded windows FINN pads with -1 and the accumulators behind them, whose difference
    the next AddRequant adds back (its output is compared)."""
    import numpy as np

    from bnhw.data import digits_images
    from bnhw.hw.estimate import fresh_hardware_model
    from bnhw.hw.finn_compat import FinnExecutor
    from bnhw.hw.finn_export import finn_dataflow_model
    from bnhw.hw.lower_binarynet import integer_input, lower_binarynet
    from bnhw.spec.zoo import get_arch

    spec = get_arch(net)
    model = fresh_hardware_model(spec)
    g = lower_binarynet(model)
    ex = finn_dataflow_model(g)
    assert {r["source"] for r in ex.nodes} == {"FINN unit", "bnhw unit"}
    ex.model.save(str(tmp_path / "finn.onnx"))
    fx = FinnExecutor(tmp_path / "finn.onnx")
    imgs, _ = digits_images(spec.resolution, images, channels=spec.in_channels, seed=5)
    for x in integer_input(model, imgs):
        ref = g.execute(x, return_all=True)
        got = fx.tensors(x[None])
        assert all(s in got for s in ref)
        skipped = set(ex.padded_minus_one)
        assert skipped and all(s.endswith((".window", ".acc")) for s in skipped)
        compared = [s for s in ref if s not in skipped]
        for s in compared:
            assert np.array_equal(ex.ir_value(s, got[s]).reshape(ref[s].shape), ref[s]), s
        assert len(ex.encodings) > 0


def test_two_finn_builds_in_one_process(tmp_path):
    """finn-plus caches its build directory at first use; a second build in the same process (after the first
    folder is gone, as a published build's staging folder is) must still run."""
    import shutil

    from bnhw.hw.boards import get_board
    from bnhw.hw.finn_build import finn_codegen

    r = CliRunner().invoke(main, ["export", "tfc-w1a1", "-o", str(tmp_path / "tfc.onnx"), "--verify", "1"])
    assert r.exit_code == 0, r.output
    folding = {"MVAU_hls_0": {"PE": 16, "SIMD": 49}}
    first = finn_codegen(tmp_path / "tfc.onnx", folding, tmp_path / "a", board=get_board("pynq-z2"), clock_mhz=100)
    shutil.rmtree(tmp_path / "a")
    second = finn_codegen(tmp_path / "tfc.onnx", folding, tmp_path / "b", board=get_board("pynq-z2"), clock_mhz=100)
    assert first.ok and second.ok, (first.reason, second.reason)
    assert all((tmp_path / "b" / d).is_dir() for d in second.codegen.values()) and second.codegen


# ----------------------------------------------------------------------------- bnhw run
def _run(*args: str):
    return CliRunner().invoke(main, ["run", *args])


@pytest.fixture(scope="module")
def tfc_images(tmp_path_factory):
    import numpy as np

    from bnhw.quant import reference_nets as rn

    x, y = rn.reference_data("tfc-w1a1", "test")
    d = tmp_path_factory.mktemp("images")
    np.save(d / "x.npy", x[:24].numpy())
    return d / "x.npy", y[:24].numpy()


def test_bnhw_run_gives_the_same_labels_with_every_engine(tfc_build, tfc_images):
    """FINN's own execution of its dataflow graph = bnhw's IR = cycle simulator = C runtime = QONNX, on real
    images; the labels are the network's (it was trained on these digits: far above chance)."""
    x, y = tfc_images
    labels = {}
    for engine in ("finn", "ir", "sim", "cpu", "qonnx"):
        r = _run(str(tfc_build), "--input", str(x), "--engine", engine, "--json")
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)                                  # stdout is exactly one JSON object
        assert out["engine"] == engine and out["images"] == len(y) and len(out["labels"]) == len(y)
        labels[engine] = out["labels"]
    assert all(v == labels["finn"] for v in labels.values()), labels
    assert (labels["finn"] == y).mean() > 0.5
    r = _run(str(tfc_build), "--input", str(x))                     # default: FINN's graph, one label a line
    assert r.exit_code == 0 and r.stdout.split() == [str(v) for v in labels["finn"]], r.output


def test_finn_execution_is_bit_exact_with_the_ir_accumulators(tfc_build, tfc_images):
    """Stronger than labels: the integer accumulator of FINN's last MVAU equals the IR's, image by image."""
    import numpy as np

    from bnhw.flows.run import read_images
    from bnhw.hw.finn_build import FINN_EXECUTION_MODEL
    from bnhw.hw.finn_compat import FinnExecutor
    from bnhw.hw.ir import HwGraph

    g = HwGraph.load(tfc_build / "hw_graph.json")
    data = read_images(tfc_images[0], g, (1, 28, 28))
    fx = FinnExecutor(tfc_build / "finn" / FINN_EXECUTION_MODEL)
    from qonnx.custom_op.registry import getCustomOp

    node = [n for n in fx.model.graph.node if n.op_type == "MVAU"][-1]
    op = getCustomOp(node)
    assert op.get_nodeattr("binaryXnorMode") == 1         # FINN's XNOR-popcount: it outputs the popcount
    k = op.get_nodeattr("MW")
    assert fx.integer_input                                # FINN's graph takes the UINT8 pixels, as the IR does
    for ints, nchw in zip(data.ints[:8], data.ints_nchw[:8]):
        finn_acc = 2 * fx.tensors(nchw[None])[node.output[0]].reshape(-1) - k      # +-1 dot product
        ir_acc = g.execute(ints, return_all=True)[g.meta["final_acc"]].reshape(-1)
        assert np.array_equal(finn_acc, ir_acc)


def test_bnhw_run_reads_integers_nhwc_and_single_images(tfc_build, tfc_images, tmp_path):
    import numpy as np

    x, _ = tfc_images
    ref = json.loads(_run(str(tfc_build), "--input", str(x), "--engine", "ir", "--json").stdout)["labels"]
    u8 = np.clip(np.rint(np.load(x) * 255), 0, 255).astype(np.uint8)
    np.save(tmp_path / "u8.npy", u8.transpose(0, 2, 3, 1))         # the accelerator's integers, NHWC
    out = json.loads(_run(str(tfc_build), "--input", str(tmp_path / "u8.npy"), "--engine", "ir", "--json").stdout)
    assert out["labels"] == ref and out["input_kind"] == "integer" and out["input_layout"] == "NHWC"
    np.save(tmp_path / "one.npy", np.load(x)[3])                    # one image, C x H x W
    out = json.loads(_run(str(tfc_build), "--input", str(tmp_path / "one.npy"), "--engine", "ir", "--json").stdout)
    assert out["labels"] == ref[3:4]


@pytest.mark.parametrize("case, message", [
    ("shape", "shape [4, 3, 28, 28]; the network takes N x 1 x 28 x 28 (NCHW) or N x 28 x 28 x 1 (NHWC)"),
    ("range", "integer inputs are the accelerator's input (UINT8, 0..255); found -1..255"),
    ("nan", "holds NaN or infinite values"),
    ("object", "not a NumPy .npy array"),
    ("text", "not a NumPy .npy array"),
    ("missing", "no such file"),
    ("bool", "dtype bool is neither float nor integer"),
])
def test_bnhw_run_bad_input_is_one_line(tfc_build, tmp_path, case, message):
    import numpy as np

    f = tmp_path / "x.npy"
    if case == "shape":
        np.save(f, np.zeros((4, 3, 28, 28), np.float32))
    elif case == "range":
        a = np.full((2, 1, 28, 28), 255, np.int16)
        a[0, 0, 0, 0] = -1
        np.save(f, a)
    elif case == "nan":
        a = np.zeros((2, 1, 28, 28), np.float32)
        a[1, 0, 3, 3] = np.nan
        np.save(f, a)
    elif case == "object":
        np.save(f, np.array([None, 1], dtype=object), allow_pickle=True)
    elif case == "text":
        f.write_text("1,2,3\n")
    elif case == "bool":
        np.save(f, np.zeros((2, 1, 28, 28), bool))
    r = _run(str(tfc_build), "--input", str(f))
    assert r.exit_code != 0 and r.exception is None or isinstance(r.exception, SystemExit), r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --input") and message in lines[0], r.output


# ----------------------------------------------------------------------------- bnhw's folding as a FINN step
def _finn_build_with(step, model: Path, out: Path, **cfg_kw):
    from bnhw.hw.finn_compat import finn_build_dir, finn_builder

    bd, bc = finn_builder()
    steps = [step if s == "step_target_fps_parallelization" else s for s in bc.hw_codegen_dataflow_steps]
    assert step in steps
    (out / "tmp").mkdir(parents=True)
    cfg = bc.DataflowBuildConfig(output_dir=str(out / "o"), synth_clk_period_ns=10.0, board="Pynq-Z2",
                                 shell_flow_type=bc.ShellFlowType.VIVADO_ZYNQ, steps=steps,
                                 generate_outputs=[bc.DataflowOutputType.ESTIMATE_REPORTS], **cfg_kw)
    with finn_build_dir(out / "tmp"):
        rc = bd.build_dataflow_cfg(str(model), cfg)
    assert rc == 0, (out / "o" / "build_dataflow.log").read_text()[-3000:]
    rep = out / "o" / "report"
    return (json.loads((rep / "bnhw_folding.json").read_text()),
            json.loads((rep / "estimate_network_performance.json").read_text()),
            json.loads((rep / "estimate_layer_resources.json").read_text())["total"])


def test_bnhw_folding_runs_as_a_step_of_a_finn_build(tfc_build, tmp_path):
    """A FINN build config with step_bnhw_folding in place of step_target_fps_parallelization runs to FINN's code
    generation; FINN's own estimate reports of the result equal what the step chose (II and resources), within
    the board budget; a tighter margin gives a design within it; an FPS target is met with fewer resources."""
    from bnhw.hw.boards import get_board
    from bnhw.hw.finn_steps import bnhw_folding_step, step_bnhw_folding

    chosen, perf, total = _finn_build_with(step_bnhw_folding, tfc_build / "model.onnx", tmp_path / "a")
    assert perf["max_cycles"] == chosen["ii_cycles"]
    assert total["LUT"] == chosen["total"]["LUT"] and total["BRAM_18K"] == chosen["total"]["BRAM18"]
    board = get_board("pynq-z2")
    assert chosen["total"]["LUT"] <= 0.85 * board.lut and chosen["total"]["BRAM18"] <= 0.85 * board.bram18
    assert len(list((tmp_path / "a" / "tmp").iterdir())) == len(chosen["units"])   # code for every HW node

    small, perf_s, total_s = _finn_build_with(bnhw_folding_step(board="pynq-z2", margin=0.15), tfc_build / "model.onnx",
                                              tmp_path / "b")
    assert total_s["LUT"] <= 0.15 * board.lut and total_s["BRAM_18K"] <= 0.15 * board.bram18
    assert small["ii_cycles"] >= chosen["ii_cycles"] and perf_s["max_cycles"] == small["ii_cycles"]

    slow, perf_f, total_f = _finn_build_with(step_bnhw_folding, tfc_build / "model.onnx", tmp_path / "c",
                                             target_fps=100_000)
    assert perf_f["max_cycles"] <= 1000 and perf_f["estimated_throughput_fps"] >= 100_000
    assert total_f["LUT"] < total["LUT"]


def test_bnhw_folding_step_folds_bnhw_units_in_an_exported_graph(nas_build, tmp_path):
    """step_bnhw_folding on bnhw's exported NAS-BNN graph (no folding config) folds FINN's nodes and bnhw's units
    alike (the units' legal foldings and estimates are their IR op's); the design fits the board and is as fast as
    bnhw's own folding of the IR, whose per-node figures FINN's equal."""
    from bnhw.hw.boards import get_board
    from bnhw.hw.finn_compat import finn_build_dir, finn_builder
    from bnhw.hw.finn_export import finn_dataflow_model
    from bnhw.hw.finn_steps import step_bnhw_folding
    from bnhw.hw.folding import board_budget, maximize_fps
    from bnhw.hw.ir import HwGraph

    out, _ = nas_build
    # the network up to its first channel-doubling block (grouped MVAU, padding-corrected AddRequant, RPReLU,
    # Gather, average-pool shortcut): FINN's estimates at every legal folding of ~60 nodes instead of 212
    g = HwGraph.load(out / "hw_graph.json").truncated("block2.h2.out").with_folding({})
    finn_dataflow_model(g).model.save(str(tmp_path / "part.onnx"))
    bd, bc = finn_builder()
    steps = ["step_specialize_layers", "bnhw.hw.finn_steps.step_bnhw_node_order", step_bnhw_folding,
             "step_minimize_bit_width", "bnhw.hw.finn_steps.step_bnhw_units", "step_hw_codegen"]
    (tmp_path / "tmp").mkdir()
    cfg = bc.DataflowBuildConfig(output_dir=str(tmp_path / "o"), synth_clk_period_ns=10.0, board="Pynq-Z2",
                                 shell_flow_type=bc.ShellFlowType.VIVADO_ZYNQ, steps=steps,
                                 generate_outputs=[bc.DataflowOutputType.ESTIMATE_REPORTS])
    with finn_build_dir(tmp_path / "tmp"):
        rc = bd.build_dataflow_cfg(str(tmp_path / "part.onnx"), cfg)
    assert rc == 0, (tmp_path / "o" / "build_dataflow.log").read_text()[-3000:]
    rep = tmp_path / "o" / "report"
    chosen = json.loads((rep / "bnhw_folding.json").read_text())
    perf = json.loads((rep / "estimate_network_performance_bnhw.json").read_text())
    assert perf["max_cycles"] == chosen["ii_cycles"] and perf["bnhw_units"] > 10
    folded_units = [u for u in chosen["units"] if u["unit"].startswith(("AddRequant", "RPReLU", "GroupedMVAU"))
                    and any(v > 1 for a in u["folding"] for v in a.values())]
    assert folded_units                                              # bnhw's units were folded too
    board = get_board("pynq-z2")
    assert chosen["total"]["LUT"] <= 0.85 * board.lut and chosen["total"]["BRAM18"] <= 0.85 * board.bram18
    ours = maximize_fps(g, board_budget(board, 0.85), board_name=board.name)
    assert chosen["ii_cycles"] <= ours.ii


# ----------------------------------------------------------------------------- a model from outside
def _finn_onnx(qonnx_file: Path, out: Path) -> None:
    """The FINN-ONNX model FINN's end-to-end TFC example makes from a Brevitas export: qonnx clean-up, FINN's
    ConvertQONNXtoFINN, tidy-up (shapes, constants, unique and readable names)."""
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames, RemoveStaticGraphInputs
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    m = cleanup_model(ModelWrapper(str(qonnx_file))).transform(ConvertQONNXtoFINN())
    for t in (InferShapes(), FoldConstants(), GiveUniqueNodeNames(), GiveReadableTensorNames(),
              RemoveStaticGraphInputs()):
        m = m.transform(t)
    m.save(str(out))


def test_an_external_finn_onnx_model_builds_and_runs_with_its_exporters_labels(tmp_path):
    """TFC-W1A1 as someone else would bring it: a Brevitas model exported to QONNX and converted by FINN's own
    transformations to FINN-ONNX (MultiThreshold activations, weights folded to BIPOLAR initializers).  bnhw
    builds it (FINN's builder included) and `bnhw run` on real images gives the Brevitas model's labels."""
    import numpy as np
    import torch

    from bnhw.flows.prepare import reference_model
    from bnhw.quant import reference_nets as rn

    model, _ = reference_model("tfc-w1a1", None, echo=lambda s: None)
    rn.export_reference(model, tmp_path / "tfc.onnx")
    _finn_onnx(tmp_path / "tfc.onnx", tmp_path / "tfc_finn.onnx")
    r = CliRunner().invoke(main, ["build", str(tmp_path / "tfc_finn.onnx"), "--target", "pynq-z2", "-o",
                                  str(tmp_path / "b"), "--csim-inputs", "4", "--no-sim"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rep["finn"]["ok"] and "FINN-ONNX model" in " ".join(rep.get("notes", [])) + r.output
    x, _ = rn.reference_data("tfc-w1a1", "test")
    np.save(tmp_path / "x.npy", x[:32].numpy())
    model.eval()
    with torch.no_grad():
        brevitas = model(x[:32]).argmax(1).tolist()
    for engine in ("finn", "ir"):
        r = _run(str(tmp_path / "b"), "--input", str(tmp_path / "x.npy"), "--engine", engine, "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["labels"] == brevitas, engine


# ----------------------------------------------------------------------------- finn_compat's faster weight packing
@pytest.mark.parametrize("dt", ["BIPOLAR", "BINARY", "INT8", "UINT4", "INT3", "UINT1", "INT16", "FIXED<8,4>"])
def test_fast_hex_packing_gives_finn_plus_own_strings(dt):
    """finn_compat replaces finn-plus's element-by-element weight-file packing; every string must be the same
    (shapes, bit widths, reversal, padding, the errors too)."""
    import numpy as np
    from qonnx.core.datatype import DataType

    from bnhw.hw.finn_compat import finn_builder

    finn_builder()
    import finn.util.data_packing as dp

    fast = dp.pack_innermost_dim_as_hex_string
    orig = fast.original
    d = DataType[dt]
    rng = np.random.default_rng(1)

    def outcome(f, *a, **k):
        try:
            r = f(*a, **k)
            return r.dtype.kind, r.shape, r.tolist()
        except Exception as e:  # noqa: BLE001 - the same failure is part of "the same"
            return type(e).__name__

    for shape in [(5,), (3, 7), (2, 3, 4), (16, 64)]:
        if d.is_fixed_point():
            lo, hi = int(d.min() / d.scale_factor()), int(d.max() / d.scale_factor())
            x = rng.integers(lo, hi + 1, size=shape) * d.scale_factor()
        elif dt == "BIPOLAR":
            x = rng.choice([-1, 1], size=shape)
        else:
            x = rng.integers(d.min(), d.max() + 1, size=shape)
        x = x.astype(np.float32)
        bits = shape[-1] * d.bitwidth()
        for pad in (bits, -(-bits // 4) * 4, -(-bits // 4) * 4 + 8, bits - 4):
            for rev in (False, True):
                assert outcome(fast, x, d, pad, reverse_inner=rev) == outcome(orig, x, d, pad, reverse_inner=rev)
    bad = np.full((2, 3), 0.5, np.float32)                               # not an integer
    assert outcome(fast, bad, DataType["INT4"], 12) == outcome(orig, bad, DataType["INT4"], 12)


def test_finns_width_converters_are_the_ones_bnhws_simulator_inserts(nas_build):
    """The width converters FINN's InsertDWC adds to the exported graph (as its steps after code generation do)
    are the converters bnhw's netlist inserts, with the same widths and FINN's LUTs: its element widths are FINN's,
    the zero-padded sign streams as FINN's 1-bit BINARY (padded with -1, the AddRequant after the conv adds back
    what the border taps took) and an XNOR MVAU's accumulator as FINN's unsigned popcount (one bit less than the
    IR's bipolar sum; balanced foldings put converters behind these MVAUs)."""
    from collections import Counter

    from bnhw.hw.finn_models import dwc_luts
    from bnhw.hw.ir import HwGraph
    from bnhw.hw.ops.mvau import finn_popcount
    from bnhw.hw.sim.netlist import elaborate, width_converters

    out, _ = nas_build
    dwc = json.loads((out / "report.json").read_text())["finn"]["dwc"]
    g = HwGraph.load(out / "hw_graph.json")
    ours = width_converters(elaborate(g))
    assert dwc["count"] == len(ours) > 20
    finn = Counter((d["in_bits"], d["out_bits"]) for d in dwc["converters"])
    mine = Counter((d["in_bits"], d["out_bits"]) for d in ours)
    assert finn == mine
    pop = [d for d in ours if finn_popcount(g, d["stream"]) is not None]
    # popcount streams behind XNOR MVAUs (balanced foldings put converters there): elements one bit narrower
    # than the IR's bipolar sums, as FINN carries them
    assert any(d["out_bits"] % (g.streams[d["stream"]].dtype.bits - 1) == 0 and d["out_bits"] %
               g.streams[d["stream"]].dtype.bits for d in pop)
    # FINN's LUTs = bnhw's model of the same converters
    assert dwc["LUT"] == sum(d["lut"] for d in ours) == sum(n * dwc_luts(a, b) for (a, b), n in finn.items())
