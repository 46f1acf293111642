"""The FINN back end's first part (bnhw.hw.finn_build): `bnhw build` hands the QONNX network to finn-plus's own
dataflow builder with bnhw's folding, FINN runs offline to its code generation, and its estimates are reported
beside bnhw's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bnhw.cli import main
from bnhw.hw.finn_compat import finn_builder_available, finn_builder_unavailable_reason

pytestmark = pytest.mark.skipif(not finn_builder_available(),
                                reason=f"finn-plus's builder not usable: {finn_builder_unavailable_reason()}")


@pytest.fixture(scope="module")
def tfc_build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finn") / "tfc"
    r = CliRunner().invoke(main, ["build", "tfc-w1a1", "--target", "pynq-z2", "-o", str(out), "--csim-inputs", "2",
                                  "--no-sim"])
    assert r.exit_code == 0, r.output
    assert "FINN (finn-plus) built the dataflow graph" in r.output
    return out


def test_finn_runs_its_own_steps_to_code_generation_with_bnhw_folding(tfc_build):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from bnhw.hw.finn_compat import finn_builder

    _, bc = finn_builder()
    f = json.loads((tfc_build / "report.json").read_text())["finn"]
    assert f["run"] and f["ok"] and f["steps_run"] == list(bc.hw_codegen_dataflow_steps)
    final = ModelWrapper(str(tfc_build / "finn" / "output" / "intermediate_models" / "step_hw_codegen.onnx"))
    hw = [n for n in final.graph.node if n.domain.startswith("finn.custom_op.fpgadataflow")]
    assert hw and set(f["codegen"]) == {n.name for n in hw}          # every HW node has its generated code
    for name, d in f["codegen"].items():
        assert any((tfc_build / "finn" / d).iterdir()), name
    ours = json.loads((tfc_build / "folding.json").read_text())
    applied = {n.name: getCustomOp(n) for n in hw}
    mvaus = [k for k in ours if k.startswith("MVAU_hls")]
    assert mvaus
    for k in mvaus:                                                  # FINN applied bnhw's folding
        assert applied[k].get_nodeattr("PE") == ours[k]["PE"] and applied[k].get_nodeattr("SIMD") == ours[k]["SIMD"]


def test_finn_estimates_of_the_mvaus_equal_bnhw_models(tfc_build):
    f = json.loads((tfc_build / "report.json").read_text())["finn"]
    rows = {c["name"]: c for c in f["comparison"]}
    mv = [c for n, c in rows.items() if n.startswith("MVAU_hls")]
    assert len(mv) == 4
    for c in mv:
        assert c["finn_cycles"] == c["bnhw_cycles"] and c["finn_LUT"] == pytest.approx(c["bnhw_LUT"]), c
        assert c["finn_BRAM18"] == c["bnhw_BRAM18"], c
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
    assert folding["MVAU_hls_0"] == json.loads((tfc_build / "folding.json").read_text())["MVAU_hls_0"]


def test_a_nasbnn_net_says_why_finn_is_not_run(tmp_path):
    r = CliRunner().invoke(main, ["build", "nasbnn-cifar-smallest", "--target", "pynq-z2", "-o", str(tmp_path / "n"),
                                  "--csim-inputs", "1", "--no-sim", "--no-csim"])
    assert r.exit_code == 0, r.output
    f = json.loads((tmp_path / "n" / "report.json").read_text())["finn"]
    assert f["run"] is False and "grouped convolutions" in f["why"] and "FINN: not run" in r.output
    assert not (tmp_path / "n" / "finn").exists()


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
