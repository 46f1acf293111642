"""The FINN back end, first part: hand a QONNX network to finn-plus's own dataflow builder with bnhw's folding,
run FINN's steps offline up to its code generation, and read back what FINN estimates.

``finn_codegen(model, folding, out, board=..., clock_mhz=...)`` writes into ``out``:

* ``folding_config.json``: bnhw's folding in FINN's folding-config format (node names are FINN's names after
  ``step_specialize_layers``, which bnhw's IR uses);
* ``output/``: finn-plus's build folder from ``build_dataflow_cfg`` with FINN's ``hw_codegen_dataflow_steps``
  (``step_qonnx_to_finn`` ... ``step_specialize_layers``, ``step_apply_folding_config``,
  ``step_minimize_bit_width``, ``step_generate_estimate_reports``, ``step_hw_codegen``): the intermediate
  models, ``report/estimate_*.json`` (FINN's own estimates of the graph it built) and, per hardware node,
  its generated code (``code_gen_dir_ipgen``);
* ``dataflow_build_config.json``: a ``DataflowBuildConfig`` (loaded by FINN's own class) for FINN's full
  default flow with the same folding: on a machine with Vivado, ``finn build dataflow_build_config.json
  model.onnx`` continues to stitched IP, bitfile, PYNQ driver and deployment package.  Without Vivado the
  build stops after code generation and :class:`FinnBuild` says so; nothing later is attempted or faked.

finn-plus's offline quirks live in :mod:`bnhw.hw.finn_compat`; this module only drives its builder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..spec import atomic_write_text
from .boards import Board, large_fifo_style, lut_per_bram18
from .fifo_cost import build_style
from .finn_compat import finn_build_dir, finn_builder, vivado_available

__all__ = ["FinnBuild", "finn_codegen", "finn_codegen_ir", "FINN_OUTPUT_DIR", "FINN_EXECUTION_MODEL", "finn_execution_model"]

FINN_OUTPUT_DIR = "output"
#: the graph ``bnhw run --engine finn`` executes with FINN's node execution (see
#: :class:`bnhw.hw.finn_compat.FinnExecutor`: FINN's HW nodes before ``SpecializeLayers``)
FINN_EXECUTION_MODEL = f"{FINN_OUTPUT_DIR}/intermediate_models/step_convert_to_hw.onnx"


@dataclass
class FinnBuild:
    """What finn-plus's builder did with the network."""

    folder: str
    ok: bool                                    # every step up to step_hw_codegen ran
    steps_run: list[str]
    stopped_at: str | None = None               # the step that failed
    reason: str = ""                            # its error, one line
    seconds: float = 0.0
    network: dict[str, Any] = field(default_factory=dict)   # report/estimate_network_performance.json
    layers: list[dict[str, Any]] = field(default_factory=list)   # per FINN node: cycles and resources
    codegen: dict[str, str] = field(default_factory=dict)   # HW node -> its code-generation folder
    vivado: bool = False                        # FINN's synthesis steps could run here
    #: how FINN got the network: "qonnx" (FINN's front end from step_qonnx_to_finn) or "ir" (bnhw's IR exported
    #: as FINN's HW graph, :mod:`bnhw.hw.finn_export`)
    front: str = "qonnx"
    #: the graph FINN's node execution runs (relative to the folder): FINN's HW nodes before SpecializeLayers
    execution_model: str = FINN_EXECUTION_MODEL
    #: bnhw units in the graph: op type -> why no FINN unit serves (empty for the QONNX front end)
    units: dict[str, str] = field(default_factory=dict)
    #: the width converters FINN's ``InsertDWC`` adds to the generated graph (its later steps do), with FINN's LUT
    #: estimate of each: {"count", "LUT", "converters": [{"name", "after", "in_bits", "out_bits", "LUT"}]} or
    #: {"error": ...}
    dwc: dict[str, Any] = field(default_factory=dict)
    #: FINN's FIFO-depth file for its full flow (:func:`finn_fifo_depths`): {"file", "fifos", "deeper_than_2"}
    #: or {"error": ...}; empty without bnhw's FIFO sizing
    fifo_depths: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        if not self.ok:
            return f"FINN's builder stopped at {self.stopped_at}: {self.reason}"
        if self.vivado:
            nxt = "`finn build dataflow_build_config.json model.onnx` continues to the bitfile"
        else:
            nxt = ("Vivado is not installed: stopped after code generation; on a machine with Vivado, `finn build "
                   "dataflow_build_config.json model.onnx` in this folder continues to the bitfile")
        if self.units:
            nxt += (f"; bnhw's units ({', '.join(self.units)}) are FINN HLS nodes, whose HLS projects FINN's "
                    "PrepareIP wrote like its own (C-simulated with g++ by bnhw's tests; their Vitis HLS synthesis "
                    "is not checked without Vitis HLS)")
        return (f"FINN (finn-plus) built the dataflow graph and generated code for {len(self.codegen)} HW nodes in "
                f"{self.seconds:.0f} s; FINN estimates {self.network.get('estimated_throughput_fps', 0):,.1f} FPS "
                f"(bottleneck {self.network.get('max_cycles_node_name')}); {nxt}")


def finn_execution_model(finn_dir: Path) -> tuple[Path, str] | None:
    """``(graph FINN's node execution runs, front end)`` of the FINN build in ``finn_dir`` (``None``: none)."""
    info = finn_dir / "finn_build.json"
    try:
        d = json.loads(info.read_text()) if info.is_file() else {}
    except json.JSONDecodeError:
        d = {}
    model = finn_dir / str(d.get("execution_model", FINN_EXECUTION_MODEL))
    return (model, str(d.get("front", "qonnx"))) if model.is_file() else None


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _config(bc, out: Path, folding_file: Path, board: Board, clock_mhz: float, steps, outputs):
    return bc.DataflowBuildConfig(
        output_dir=out, synth_clk_period_ns=1000.0 / clock_mhz, board=board.finn_board,
        shell_flow_type=bc.ShellFlowType.VIVADO_ZYNQ, folding_config_file=folding_file, steps=steps,
        generate_outputs=outputs, save_intermediate_models=True)


def _layers(report: Path) -> list[dict[str, Any]]:
    cyc = json.loads((report / "estimate_layer_cycles.json").read_text()) if (report / "estimate_layer_cycles.json").is_file() else {}
    res_f = report / "estimate_layer_resources.json"
    res = json.loads(res_f.read_text()) if res_f.is_file() else {}
    units_f = report / "estimate_bnhw_units.json"
    units = json.loads(units_f.read_text()) if units_f.is_file() else {}
    rows = []
    for name in cyc:
        r = res.get(name, {})
        rows.append({"name": name, "cycles": int(cyc[name]), "LUT": float(r.get("LUT", 0)),
                     "BRAM18": float(r.get("BRAM_18K", 0)), "URAM": float(r.get("URAM", 0)),
                     "DSP": float(r.get("DSP", 0)), "source": "FINN"})
    for name, r in units.items():
        rows.append({"name": name, "cycles": int(r["cycles"]), "LUT": float(r.get("LUT", 0)),
                     "BRAM18": float(r.get("BRAM_18K", 0)), "URAM": float(r.get("URAM", 0)),
                     "DSP": float(r.get("DSP", 0)), "source": "bnhw unit"})
    return rows


def finn_width_converters(model_path: Path) -> dict[str, Any]:
    """The width converters FINN's ``InsertDWC`` puts into the graph at ``model_path`` (as FINN's steps after code
    generation do, before FIFO insertion), each with FINN's LUT estimate; the model file is not changed.
    FINN inserts them between two of its own HW nodes only (not next to bnhw's units, whose widths their own
    code adapts)."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from . import finn_ops  # noqa: F401  (registers bnhw's units with FINN before their graph is read)

    try:
        model = ModelWrapper(str(model_path)).transform(InsertDWC())
    except Exception as e:  # noqa: BLE001 - FINN's own refusal, reported
        return {"error": f"FINN's InsertDWC failed: {type(e).__name__}: {e}".splitlines()[0][:300]}
    rows: list[dict[str, Any]] = []
    luts = 0
    for node in model.graph.node:
        if node.op_type.startswith("StreamingDataWidthConverter"):
            inst = getCustomOp(node)
            producer = model.find_producer(node.input[0])
            lut = int(inst.lut_estimation(""))
            luts += lut
            rows.append({"name": node.name or f"DWC after {producer.name if producer else '?'}",
                         "after": producer.name if producer else None,
                         "in_bits": int(inst.get_nodeattr("inWidth")), "out_bits": int(inst.get_nodeattr("outWidth")),
                         "LUT": lut})
    return {"count": len(rows), "LUT": float(luts), "converters": rows}


#: the FIFO-depth file of a build folder (FINN's ``fifo_config_file`` format), read by FINN's full flow
FIFO_DEPTHS_FILE = "fifo_depths.json"


def finn_fifo_depths(model_path: Path, part: str, large_fifo_style: str,
                     lut_per_bram18: float | None = None) -> dict[str, Any]:
    """FINN's FIFO-depth file for the graph at ``model_path`` (the code-generation model, whose nodes carry
    bnhw's ``inFIFODepths`` / ``outFIFODepths``): FINN's own ``step_set_fifo_depths`` (``auto_fifo_depths`` off)
    inserts width converters and FIFOs with ``InsertDWC``, ``InsertFIFO(create_shallow_fifos=True)``,
    ``SpecializeLayers``, ``GiveUniqueNodeNamesRecursive`` and ``GiveReadableTensorNames``, then requires a
    ``fifo_config_file`` naming every ``StreamingFIFO_rtl`` it made (``ApplyFIFODepthsFromFile``).  The same
    transformations run here, offline, so the file names FINN's FIFOs as its full flow will; each FIFO keeps
    the depth ``InsertFIFO`` took from bnhw's attributes and the memory style bnhw costs it in
    (:func:`~bnhw.hw.fifo_cost.build_style`: deep ones in ``large_fifo_style`` memory, with ``lut_per_bram18``
    LUTRAM ones in block RAM where that saves more LUTs per RAMB18).  The model
    file is not changed.  Returns FINN's format (``fifo_depths``, ``impl_style``, ``ram_style``) or
    ``{"error": ...}``."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from finn.transformation.qonnx.give_unique_node_names_recursive import GiveUniqueNodeNamesRecursive
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveReadableTensorNames

    from . import finn_ops  # noqa: F401  (registers bnhw's units with FINN before their graph is read)

    try:
        model = ModelWrapper(str(model_path))
        for t in (InsertDWC(), InsertFIFO(create_shallow_fifos=True), SpecializeLayers(part),
                  GiveUniqueNodeNamesRecursive(), GiveReadableTensorNames()):
            model = model.transform(t)
    except Exception as e:  # noqa: BLE001 - FINN's own refusal, reported
        return {"error": f"FINN's FIFO insertion failed: {type(e).__name__}: {e}".splitlines()[0][:300]}
    out: dict[str, Any] = {"fifo_depths": {}, "impl_style": {}, "ram_style": {}}
    for node in model.get_nodes_by_op_type("StreamingFIFO_rtl"):
        inst = getCustomOp(node)
        depth = int(inst.get_nodeattr("depth"))
        style = str(inst.get_nodeattr("ram_style"))
        if style == "auto" and depth >= 2:
            style = build_style(depth, int(inst.get_instream_width_padded()), large_fifo_style, lut_per_bram18)
        out["fifo_depths"][node.name] = depth
        out["impl_style"][node.name] = str(inst.get_nodeattr("impl_style"))
        out["ram_style"][node.name] = style
    return out


def _codegen_dirs(model_path: Path, root: Path) -> dict[str, str]:
    """HW node -> its code-generation folder (relative to ``root``: the build folder may be moved)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from . import finn_ops  # noqa: F401  (registers bnhw's units with FINN before their graph is read)

    out: dict[str, str] = {}
    if not model_path.is_file():
        return out
    model = ModelWrapper(str(model_path))
    for node in model.graph.node:
        if not node.domain.startswith("finn.custom_op.fpgadataflow"):
            continue
        d = getCustomOp(node).get_nodeattr("code_gen_dir_ipgen")
        if d and Path(d).is_dir() and any(Path(d).iterdir()):
            out[node.name] = os.path.relpath(d, root)
    return out


def _failed_step(log: Path) -> tuple[str | None, str]:
    if not log.is_file():
        return None, "no build log"
    text = log.read_text(errors="replace")
    steps = re.findall(r"Running step: (\w+)", text)
    errs = [ln.split("ERROR:", 1)[1].strip() for ln in text.splitlines() if "ERROR:" in ln]
    msg = next((e for e in reversed(errs) if e and not e.startswith(("File ", "Traceback", "^"))), "")
    return (steps[-1] if steps else None), msg[:300]


def _with_pixel_input(src: Path, dst: Path) -> None:
    """``src`` with FINN's end-to-end pre-processing in front: the input becomes the UINT8 pixels and a ``Div``
    by 255 gives the model its float input (as FINN's BNN-PYNQ examples merge brevitas's ``ToTensor``), so FINN
    streamlines the division into the first thresholds and builds an accelerator that takes 8-bit pixels, like
    bnhw's IR."""
    import numpy as np
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    mw = ModelWrapper(str(src))
    old = mw.graph.input[0]
    shape = [d.dim_value for d in old.type.tensor_type.shape.dim]
    pixels = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, shape)
    mw.graph.input.remove(old)
    mw.graph.input.insert(0, pixels)
    mw.graph.value_info.append(old)
    mw.set_initializer("pixel_scale", np.asarray(255.0, dtype=np.float32))
    mw.graph.node.insert(0, helper.make_node("Div", ["pixels", "pixel_scale"], [old.name], name="ToTensor_Div"))
    mw.set_tensor_datatype("pixels", DataType["UINT8"])
    mw.save(str(dst))


def finn_codegen(model: Path, folding: Mapping[str, Mapping[str, int]], out: Path, *, board: Board,
                 clock_mhz: float, target_cycles: int | None = None, pixel_input: bool = False,
                 fifo_depths: Mapping[str, Mapping[str, Any]] | None = None) -> FinnBuild:
    """Run finn-plus's dataflow builder on the QONNX ``model`` with ``folding`` (FINN folding-config format) up
    to code generation, into ``out`` (see the module docstring).  With ``target_cycles`` (the folding's II), the
    FINN nodes ``folding`` does not name get their least-resource folding meeting it
    (:func:`bnhw.hw.finn_steps.complete_folding_step`).  ``pixel_input``: the model takes ``pixels / 255``;
    FINN gets it with the division in front and a UINT8 input (:func:`_with_pixel_input`).  ``fifo_depths``
    (``inFIFODepths`` / ``outFIFODepths`` per FINN node: bnhw's simulated sizing) go into the folding config and
    FINN's full flow then keeps them (``auto_fifo_depths`` off) instead of sizing FIFOs in RTL simulation."""
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()                 # FINN changes directories: every path it is given is absolute
    if pixel_input:
        _with_pixel_input(model, out / "model.onnx")
    else:
        shutil.copyfile(model, out / "model.onnx")
    _, bc = finn_builder()
    steps: list[Any] = list(bc.hw_codegen_dataflow_steps)
    if target_cycles:
        from .finn_steps import complete_folding_step

        steps.insert(steps.index("step_apply_folding_config") + 1, complete_folding_step(target_cycles, board.part))
    return _build(out, folding, board, clock_mhz, steps, None, fifo_depths, "qonnx", FINN_EXECUTION_MODEL, {})


#: FINN's steps after ``step_convert_to_hw`` that build a graph which already is FINN's HW graph (the IR front end)
IR_FRONT_STEPS = ("step_apply_folding_config", "step_minimize_bit_width")


def finn_codegen_ir(export, out: Path, *, board: Board, clock_mhz: float,
                    fifo_depths: Mapping[str, Mapping[str, Any]] | None = None) -> FinnBuild:
    """Run finn-plus's builder on the FINN graph :func:`bnhw.hw.finn_export.finn_dataflow_model` made from bnhw's
    IR (``export``), from ``step_specialize_layers`` to ``step_hw_codegen``, then bnhw's units' step
    (:func:`bnhw.hw.finn_steps.step_bnhw_units`: their estimates and HLS code); the folding is the export's."""
    from .finn_ops import UNITS
    from .finn_steps import step_bnhw_node_order, step_bnhw_units

    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    export.model.save(str(out / "model.onnx"))
    full = ["step_specialize_layers", "bnhw.hw.finn_steps.step_bnhw_node_order",
            *_after(finn_builder()[1].default_build_dataflow_steps, "step_specialize_layers")]
    full = [s for s in full if s != "step_target_fps_parallelization"]
    full = [step if step != "step_generate_estimate_reports" else "bnhw.hw.finn_steps.step_bnhw_units" for step in full]
    return _build(out, export.folding, board, clock_mhz,
                  ["step_specialize_layers", step_bnhw_node_order, *IR_FRONT_STEPS, step_bnhw_units, "step_hw_codegen"], full, fifo_depths,
                  "ir", "model.onnx", {u: UNITS[u].why for u in export.units()})


def _after(steps, name: str) -> list[str]:
    steps = [s for s in steps if isinstance(s, str)]
    return steps[steps.index(name) + 1:]


def _build(out: Path, folding: Mapping[str, Mapping[str, int]], board: Board, clock_mhz: float, steps: list[Any],
           full_steps: list[str] | None, fifo_depths: Mapping[str, Mapping[str, Any]] | None, front: str,
           execution_model: str, units: dict[str, str]) -> FinnBuild:
    bd, bc = finn_builder()
    folding_file = out / "folding_config.json"
    config: dict[str, dict[str, Any]] = {k: dict(v) for k, v in folding.items() if k != "Defaults"}
    for k, v in (fifo_depths or {}).items():
        if k != "Defaults":
            config.setdefault(k, {}).update(v)
    _write_json(folding_file, {"Defaults": {}, **config})
    # FINN's full default flow (steps=None) from this folder, for a machine with Vivado
    full = _config(bc, Path(FINN_OUTPUT_DIR), Path("folding_config.json"), board, clock_mhz, full_steps,
                   [bc.DataflowOutputType.ESTIMATE_REPORTS, bc.DataflowOutputType.STITCHED_IP,
                    bc.DataflowOutputType.BITFILE, bc.DataflowOutputType.PYNQ_DRIVER,
                    bc.DataflowOutputType.DEPLOYMENT_PACKAGE])
    if fifo_depths:
        # bnhw's simulated depths: the folding config sets them as node attributes, FINN's InsertFIFO takes them
        # and its FIFO step then applies the depth file (written below from the generated graph)
        full.auto_fifo_depths = False
        full.fifo_config_file = Path(FIFO_DEPTHS_FILE)
    # deep FIFOs in block RAM where the part has no URAM (fifo.sv's own choice would be URAM), as bnhw costs them
    full.large_fifo_mem_style = bc.LargeFIFOMemStyle(large_fifo_style(board))
    _write_json(out / "dataflow_build_config.json", json.loads(json.dumps(full.to_dict(), default=str)))
    dest = out / FINN_OUTPUT_DIR
    if dest.exists():
        shutil.rmtree(dest)
    tmp = out / "finn_tmp"
    tmp.mkdir(exist_ok=True)
    cfg = _config(bc, dest, folding_file, board, clock_mhz, steps,
                  [bc.DataflowOutputType.ESTIMATE_REPORTS])
    t0 = time.perf_counter()
    crash = ""
    with finn_build_dir(tmp), open(out / "finn_console.log", "w") as console, contextlib.redirect_stdout(console), \
            contextlib.redirect_stderr(console):
        try:
            rc = bd.build_dataflow_cfg(str(out / "model.onnx"), cfg)
        except Exception as e:  # noqa: BLE001 - FINN's own failure, reported (bnhw's build goes on without it)
            rc, crash = 1, f"{type(e).__name__}: {e}".splitlines()[0][:300]
    seconds = time.perf_counter() - t0
    log = dest / "build_dataflow.log"
    steps = re.findall(r"Running step: (\w+)", log.read_text(errors="replace")) if log.is_file() else []
    res = FinnBuild(folder=str(out), ok=rc == 0, steps_run=steps, seconds=seconds, vivado=vivado_available(),
                    front=front, execution_model=execution_model, units=units)
    if rc != 0:
        res.stopped_at, res.reason = _failed_step(log)
        res.reason = crash or res.reason
    report = dest / "report"
    for name in ("estimate_network_performance_bnhw.json", "estimate_network_performance.json"):
        if (report / name).is_file():          # bnhw's covers bnhw's units too
            res.network = json.loads((report / name).read_text())
            break
    res.layers = _layers(report)
    models = dest / "intermediate_models"
    res.codegen = _codegen_dirs(models / "step_hw_codegen.onnx", out)
    if res.codegen:
        res.dwc = finn_width_converters(models / "step_hw_codegen.onnx")
        _write_json(report / "estimate_dwc_bnhw.json", res.dwc)
    if res.codegen and fifo_depths:
        depths = finn_fifo_depths(models / "step_hw_codegen.onnx", board.part, large_fifo_style(board),
                                 lut_per_bram18(board))
        res.fifo_depths = {k: v for k, v in depths.items() if k == "error"} or {
            "file": FIFO_DEPTHS_FILE, "fifos": len(depths["fifo_depths"]),
            "deeper_than_2": sum(1 for d in depths["fifo_depths"].values() if d > 2)}
        if "error" not in depths:
            _write_json(out / FIFO_DEPTHS_FILE, depths)
    completed = report / "bnhw_completed_folding.json"
    if completed.is_file():         # FINN's full flow has no bnhw step: its folding config says the same
        for u in json.loads(completed.read_text())["units"]:
            for node, attrs in zip(u["nodes"], u["folding"]):
                config.setdefault(node, {}).update(attrs)
        _write_json(folding_file, {"Defaults": {}, **config})
    if rc == 0 and not res.codegen:
        res.ok, res.stopped_at, res.reason = False, "step_hw_codegen", "no HW node has a code-generation folder"
    _write_json(out / "finn_build.json", res.to_dict())
    return res
