"""``bnhw build``: network -> QONNX -> hardware IR -> folded dataflow accelerator -> HLS + C simulation -> report.

Steps (each reported with what it measured or modelled):

1. the network: a reference net by name (``cnv-w1a1``, ``tfc-w1a1``) or an
   architecture spec (file or ``bnhw zoo`` name), with ``--checkpoint``
   weights or fresh weights whose batch-norm statistics are estimated on
   the digits images; spec networks are built with the fixed-point residual
   path (post-training, when the weights come from a float model);
2. QONNX export, then lowering to the integer hardware IR
   (:mod:`bnhw.hw.ir`), checked against QONNX execution on real images;
3. folding: ``--folding FILE`` (FINN folding-config JSON), ``--fps N``
   (least resources reaching N FPS) or, by default, the highest FPS within
   ``--margin`` of the board (:mod:`bnhw.hw.folding`); FINN's
   ``SetFolding`` at the same cycle target is reported beside it;
4. per-unit cycles and LUT / BRAM / URAM / DSP from FINN's analytical models
   (:mod:`bnhw.hw.finn_models`);
5. the HLS project (:mod:`bnhw.hw.hls`) and its C simulation with g++,
   compared bit for bit with the IR reference on real images;
6. synthesis only when the vendor tools are on PATH (they are not on a
   plain machine: the report says so).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BnhwError
from ..hw.boards import Board, get_board, large_fifo_style, lut_per_bram18
from ..hw.ir import HwGraph
from ..spec import atomic_write_text
from .build_report import json_default, plot_layers, render_markdown
from .inputs import Kind, NetworkInput, resolve
from .outputs import staged_folder
from .prepare import LoweredQonnx, PreparedNetwork, lower_qonnx_input, prepare_network

__all__ = ["BuildOptions", "BuildResult", "build_flow", "load_folding_file", "finn_comparison"]


@dataclass
class BuildOptions:
    network: str
    target: str = "pynq-z2"
    out: Path = Path("runs/build")
    folding: Path | None = None
    fps: float | None = None
    clock_mhz: float | None = None
    margin: float = 0.85
    checkpoint: Path | None = None
    csim_inputs: int = 16
    csim: bool = True
    sim: bool = True                    # cycle simulation + FIFO sizing
    sim_frames: int = 10
    fifo_seconds: float = 300.0         # time budget of the FIFO sizing search
    finn: bool = True                   # hand the QONNX network to finn-plus's builder (up to code generation)
    backend: str = "finn"               # finn: bnhw's dataflow build (+ FINN); hls4ml: hls4ml's converter + csim
    force: bool = False                 # replace an -o that another command wrote (see bnhw.flows.outputs)


@dataclass
class BuildResult:
    report: dict
    out: Path
    graph: HwGraph


def load_folding_file(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BnhwError(f"{path}: no such folding file") from None
    except (OSError, json.JSONDecodeError) as e:
        raise BnhwError(f"{path}: not a JSON folding config ({e})") from None
    if not isinstance(data, dict):
        raise BnhwError(f"{path}: a folding config is a JSON object {{node name: {{\"PE\": .., \"SIMD\": ..}}}}")
    return data


def _apply_folding_file(graph: HwGraph, path: Path) -> HwGraph:
    from ..hw.folding import hls_words_fit
    from ..hw.hls.codegen import HLS_MAX_WORD_BITS
    from ..hw.ir import IRError
    from ..hw.ops import folding_error

    data = load_folding_file(path)
    # a FIFO config written by `bnhw build` (fifo_config.json) also lists width converters and the
    # window units inside pools by their FIFO depths only: those entries carry no folding
    fifo_keys = {"inFIFODepths", "outFIFODepths"}
    data = {k: v for k, v in data.items()
            if not (isinstance(v, dict) and v and set(v) <= fifo_keys and k not in graph.folding())}
    data = {k: {kk: vv for kk, vv in v.items() if kk not in fifo_keys} if isinstance(v, dict) else v
            for k, v in data.items()}
    try:
        g = graph.with_folding(data)
    except IRError as e:
        raise BnhwError(f"{path}: {e}; nodes are: {', '.join(graph.folding())}") from None
    for n in g.nodes:
        if n.name not in data:
            continue
        why = folding_error(g, n)
        if why:
            raise BnhwError(f"{path}: {why}")
        if not hls_words_fit(g, n):
            raise BnhwError(f"{path}: {n.name} at PE={n.pe} SIMD={n.simd} has a word wider than the "
                            f"{HLS_MAX_WORD_BITS} bits of an ap_uint in Vitis HLS; lower its SIMD or PE")
    return g


def finn_folding_json(g: HwGraph) -> dict:
    """FINN's folding-config format: ``{"Defaults": {}, node: {"PE": .., "SIMD": ..}}``."""
    return {"Defaults": {}, **g.folding()}


# ----------------------------------------------------------------------------- the flow
def build_flow(opts: BuildOptions, echo: Callable[[str], None] = print) -> BuildResult:
    """Build into ``opts.out`` atomically (see :func:`bnhw.flows.outputs.staged_folder`)."""
    board = get_board(opts.target)
    clock = float(opts.clock_mhz or board.clock_mhz)
    if clock <= 0:
        raise BnhwError("--clock-mhz must be positive")
    if not 0 < opts.margin <= 1:
        raise BnhwError("--margin must be in (0, 1]")
    if opts.fps is not None and opts.fps <= 0:
        raise BnhwError("--fps must be positive")
    if opts.folding is not None and opts.fps is not None:
        raise BnhwError("give either --folding or --fps, not both")
    from .build_hls4ml import build_hls4ml_into, check_backend

    check_backend(opts.backend)
    if opts.backend == "hls4ml" and (opts.folding is not None or opts.fps is not None):
        raise BnhwError(f"{'--folding' if opts.folding is not None else '--fps'}: a folding of the finn back end; "
                        "--backend hls4ml builds hls4ml's fully parallel project (reuse factor 1)")
    inp = resolve(opts.network, "build")        # input errors before any work or any folder
    lowered = lower_qonnx_input(inp) if inp.kind is Kind.QONNX else None
    if opts.checkpoint is not None and not Path(opts.checkpoint).is_file():
        raise BnhwError(f"{opts.checkpoint}: no such checkpoint")
    if opts.folding is not None and str(opts.folding) != "finn-examples":
        load_folding_file(Path(opts.folding))
    if str(opts.folding) == "finn-examples":
        from ..hw.foldings import REFERENCE_FOLDINGS
        if inp.label not in REFERENCE_FOLDINGS:
            raise BnhwError(f"--folding finn-examples exists only for {', '.join(REFERENCE_FOLDINGS)}, not for "
                            f"{inp.arg}")
    out = Path(opts.out)
    with staged_folder(out, "build", force=opts.force, echo=echo) as st:
        if opts.backend == "hls4ml":
            report, graph = build_hls4ml_into(st.work, out, inp, lowered, board=board, checkpoint=opts.checkpoint,
                                              csim_inputs=opts.csim_inputs, csim=opts.csim, echo=st.echo)
            return BuildResult(report, out, graph)
        return _build_into(st.work, out, inp, lowered, opts, board, clock, st.echo)


def _build_into(work: Path, out: Path, inp: NetworkInput, lowered: LoweredQonnx | None, opts: BuildOptions,
                board: Board, clock: float, echo: Callable[[str], None]) -> BuildResult:
    """The build proper, writing into ``work`` (renamed to ``out`` when it returns)."""
    from ..hw.folding import (
        FitError,
        board_budget,
        critical_path_cycles,
        graph_cost,
        maximize_fps,
        min_resources_for_fps,
    )
    from ..hw.ops import finn_op_type, model_notes
    from ..hw.setfolding import finn_set_folding

    t0 = time.time()
    prep = prepare_network(inp, work, checkpoint=opts.checkpoint, n_inputs=opts.csim_inputs, echo=echo,
                           lowered=lowered)
    echo(f"{prep.name}: exported {out / 'model.onnx'}, lowered to {len(prep.graph.nodes)} hardware units; IR == "
         f"QONNX on {prep.qonnx_check['inputs']} digits images (labels)")
    budget = board_budget(board, opts.margin)

    if opts.folding is not None:
        path = Path(opts.folding)
        if str(opts.folding) == "finn-examples":
            from ..hw.foldings import REFERENCE_FOLDINGS, reference_folding_path
            if prep.name not in REFERENCE_FOLDINGS:
                raise BnhwError(f"--folding finn-examples exists only for {', '.join(REFERENCE_FOLDINGS)}")
            path = reference_folding_path(prep.name)
        folded = graph_cost(_apply_folding_file(prep.graph, path))
        how = f"from {opts.folding}" + (" (finn-examples' folding for this network)" if path != Path(opts.folding)
                                        else "")
    elif opts.fps is not None:
        folded = min_resources_for_fps(prep.graph, opts.fps, clock, budget, board_name=board.name)
        how = f"bnhw: least resources reaching {opts.fps:g} FPS"
    else:
        folded = maximize_fps(prep.graph, budget, board_name=board.name)
        how = f"bnhw: highest FPS within {opts.margin:.0%} of the board's LUT/BRAM/URAM/DSP"
    g = folded.graph
    total = folded.total
    over = [k for k in ("LUT", "BRAM18", "URAM", "DSP") if total[k] > board.budget()[k]]
    if over:
        k = over[0]
        raise FitError(f"{prep.name} does not fit {board.name} at this folding: {total[k]:,.0f} {k} estimated, "
                       f"the board has {board.budget()[k]:,} {k}; fold more (omit --folding/--fps to let bnhw "
                       f"choose), use a smaller network (a lower --budget in `bnhw search`) or a larger board")
    fps = folded.fps(clock)
    latency_cycles = critical_path_cycles(g, folded.cycles)
    echo(f"folding ({how}): II {folded.ii:,} cycles -> {fps:,.1f} FPS at {clock:g} MHz; "
         f"LUT {total['LUT']:,.0f} BRAM18 {total['BRAM18']:,.0f} DSP {total['DSP']:,.0f}")

    # FINN's SetFolding at the same cycle target, for comparison
    sf = graph_cost(finn_set_folding(prep.graph, folded.ii))
    # C simulation
    csim = _run_csim(g, prep, work, opts, echo)
    sim = _run_sim(g, prep, clock, board, folded.total, opts, echo) if opts.sim else None
    finn = _run_finn(g, prep, work, board, clock, folded, opts, echo, sim.pop("_finn_fifos") if sim else None)
    report = _report(opts, board, clock, prep, folded, how, latency_cycles, sf, csim, finn_op_type, model_notes,
                     time.time() - t0, sim)
    report["finn"] = finn
    _write_outputs(work, report, g)
    _write_test_images(work, prep)
    if sim is not None:
        atomic_write_text(work / "fifo_config.json", json.dumps(sim.pop("_finn_config"), indent=2))
    echo(f"wrote {out / 'report.md'}, report.json, layers.png, folding.json"
         + (", fifo_config.json" if sim is not None else "") + ", hls/, test_images.npy (try `bnhw run "
         f"{out} --input {out / 'test_images.npy'}`)")
    return BuildResult(report, out, g)


def finn_comparison(g: HwGraph, folded, layers: list[dict]) -> list[dict]:
    """Per node of the graph finn-plus built: FINN's own estimate beside bnhw's model of the same FINN op
    (:mod:`bnhw.hw.finn_models`, at bnhw's folding; the IR node it belongs to); ``None`` where FINN has a node
    bnhw does not model (a ``Reshape_rtl``, the affine head) or bnhw one FINN did not build."""
    from ..hw.finn_models import op_cycles, op_resources
    from ..hw.ops import finn_graph_ops

    finn = {fl["name"]: fl for fl in layers}
    ours = {name: (ir, op) for name, ir, op in finn_graph_ops(g)}
    rows = []
    for name in [*finn, *(k for k in ours if k not in finn)]:
        f = finn.get(name)
        ir, op = ours.get(name, (None, None))
        r = op_resources(op) if op is not None else None
        rows.append({"name": name, "ir_node": ir,
                     "finn_cycles": f["cycles"] if f else None, "bnhw_cycles": op_cycles(op) if op else None,
                     "finn_LUT": f["LUT"] if f else None, "bnhw_LUT": float(r.lut) if r else None,
                     "finn_BRAM18": f["BRAM18"] if f else None, "bnhw_BRAM18": float(r.bram18) if r else None})
    return rows


def finn_comparison_ir(g: HwGraph, export, layers: list[dict]) -> list[dict]:
    """:func:`finn_comparison` for a FINN graph exported from the IR (:mod:`bnhw.hw.finn_export`): per FINN node,
    FINN's estimate (a bnhw unit's: its IrUnit's, i.e. bnhw's model) beside bnhw's model of the same op."""
    from ..hw.finn_models import op_cycles, op_resources
    from ..hw.ops import finn_ops, node_cycles, node_resources

    finn = {fl["name"]: fl for fl in layers}
    rows = []
    for r in export.nodes:
        n = g.node(r["ir"])
        f = finn.get(r["finn"])
        if r["finn_op"] is None:                  # a bnhw unit standing for the whole IR node
            cyc, res = node_cycles(g, n), node_resources(g, n)
        else:
            op = finn_ops(g, n)[r["finn_op"]]
            if r.get("finn_attrs"):               # set by the export (a max pool's window generator at its PE)
                op = dataclasses.replace(op, attrs={**op.attrs, **r["finn_attrs"]})
            cyc, res = op_cycles(op), op_resources(op)
        rows.append({"name": r["finn"], "ir_node": n.name, "source": r["source"],
                     "finn_cycles": f["cycles"] if f else None, "bnhw_cycles": cyc,
                     "finn_LUT": f["LUT"] if f else None, "bnhw_LUT": float(res.lut),
                     "finn_BRAM18": f["BRAM18"] if f else None, "bnhw_BRAM18": float(res.bram18)})
    return rows


def _run_finn(g: HwGraph, prep: PreparedNetwork, work: Path, board: Board, clock: float, folded, opts: BuildOptions,
              echo, fifo_depths: Callable[..., dict] | None) -> dict:
    """Hand the network to finn-plus's own builder with bnhw's folding, up to FINN's code generation: the reference
    nets' QONNX through FINN's own front end, every other network as bnhw's IR exported to FINN's HW graph."""
    from ..hw.finn_compat import finn_builder_available, finn_builder_unavailable_reason

    if not opts.finn:
        return {"run": False, "why": "--no-finn"}
    if not finn_builder_available():
        why = finn_builder_unavailable_reason()
        echo(f"FINN: not run: {why}")
        return {"run": False, "why": why}
    if prep.kind == "spec":
        return _run_finn_ir(g, work, board, clock, echo, fifo_depths)
    from ..hw.finn_build import finn_codegen
    from ..hw.ops import finn_folding_config

    t_in = g.streams[g.input].dtype
    res = finn_codegen(prep.onnx, finn_folding_config(g), work / "finn", board=board, clock_mhz=clock,
                       target_cycles=folded.ii, fifo_depths=fifo_depths() if fifo_depths else None,
                       pixel_input=not t_in.signed and t_in.bits == 8 and abs(t_in.scale * 255 - 1) < 1e-12)
    echo(f"FINN: {res.line()}")
    d = res.to_dict()
    d.update(run=True, folder="finn/", comparison=finn_comparison(g, folded, res.layers),
             total={k: float(sum(x[k] for x in res.layers)) for k in ("LUT", "BRAM18", "URAM", "DSP")})
    return d


def _run_finn_ir(g: HwGraph, work: Path, board: Board, clock: float, echo,
                 fifo_depths: Callable[..., dict] | None) -> dict:
    from ..hw.finn_build import finn_codegen_ir
    from ..hw.finn_export import FinnExportError, finn_dataflow_model

    try:
        export = finn_dataflow_model(g)
    except FinnExportError as e:
        echo(f"FINN: not run: {e}")
        return {"run": False, "why": str(e)}
    res = finn_codegen_ir(export, work / "finn", board=board, clock_mhz=clock,
                          fifo_depths=fifo_depths(export.nodes) if fifo_depths else None)
    echo(f"FINN: {res.line()}")
    if res.units:
        echo(f"FINN: bnhw units in the graph (FINN has no unit for them): {', '.join(res.units)}")
    d = res.to_dict()
    d.update(run=True, folder="finn/", comparison=finn_comparison_ir(g, export, res.layers),
             total={k: float(sum(x[k] for x in res.layers)) for k in ("LUT", "BRAM18", "URAM", "DSP")},
             nodes_from={"FINN unit": sum(r["source"] == "FINN unit" for r in export.nodes),
                         "bnhw unit": sum(r["source"] == "bnhw unit" for r in export.nodes)})
    return d


def _run_csim(g: HwGraph, prep: PreparedNetwork, out: Path, opts: BuildOptions, echo) -> dict:
    from ..hw.hls import csim, generate_project, vendor_tools

    tools = vendor_tools()
    hls_dir = out / "hls"
    generate_project(g, hls_dir)
    res: dict[str, Any] = {"project": "hls/ (in the build folder)", "vendor_tools": tools}
    if not opts.csim:
        res["csim"] = "skipped (--no-csim)"
        return res
    ref = np.stack([g.execute(x) for x in prep.int_inputs])
    got = csim(g, prep.int_inputs, work_dir=hls_dir)
    exact = int(sum(np.array_equal(a, b) for a, b in zip(ref, got)))
    # the output before the label select / the classifier accumulators: a much stronger check
    pre = g.output
    last = g.producer(g.output)
    if last is not None and last.op == "LabelSelect":
        pre = last.inputs[0]
    acc_exact = None
    if pre != g.output:
        gt = g.truncated(pre)
        ref_acc = np.stack([gt.execute(x) for x in prep.int_inputs])
        got_acc = csim(gt, prep.int_inputs, work_dir=out / "hls_acc")
        acc_exact = int(sum(np.array_equal(a, b) for a, b in zip(ref_acc, got_acc)))
    res.update({"inputs": len(prep.int_inputs), "outputs_bit_exact": exact, "pre_label_bit_exact": acc_exact,
                "compared_stream": pre})
    n = len(prep.int_inputs)
    if exact != n or (acc_exact is not None and acc_exact != n):
        raise BnhwError(f"C simulation differs from the IR reference on {n - min(exact, acc_exact or n)} of {n} "
                        f"inputs (see hls/ in the build folder)")
    echo(f"C simulation (g++): bit-exact with the IR reference on {n}/{n} digits images"
         + (f" (and on the {pre} accumulators)" if acc_exact is not None else ""))
    res["schedule"] = _hls_schedule(g, prep, hls_dir)
    sc = res["schedule"]
    echo(f"HLS code's schedule (C simulation with cycle stamps, {sc['frames']} frames): II {sc['ii_cycles']:,} "
         f"cycles per frame, the estimate {sc['estimate_ii_cycles']:,} ({100 * sc['relative_error']:+.1f}%)")
    if tools.get("available"):
        res["synthesis"] = _run_vendor_synthesis(tools["hls"], hls_dir, echo)
    else:
        echo(f"{tools['message']} (stopped after C simulation)")
    return res


def _hls_schedule(g: HwGraph, prep: PreparedNetwork, hls_dir: Path) -> dict:
    """The per-frame cycle count of the generated HLS code's schedule (:func:`bnhw.hw.hls.csim_cycles`: each
    pipelined-loop iteration one cycle, unbounded streams) on 3 frames back to back, against the II estimate."""
    from ..hw.hls import csim_cycles
    from ..hw.ops import node_cycles

    x = np.asarray(prep.int_inputs)
    frames = np.concatenate([x] * (-(-3 // len(x))))[:3]
    r = csim_cycles(g, frames, work_dir=hls_dir)
    est = max(node_cycles(g, n) for n in g.nodes)
    return {"frames": r["frames"], "ii_cycles": r["ii_cycles"], "first_frame_cycles": r["first_frame_cycles"],
            "estimate_ii_cycles": int(est), "relative_error": r["ii_cycles"] / est - 1.0,
            "how": "g++ C simulation of the generated code with cycle stamps (bnhw_dataflow.h, BNHW_TIMING): every "
                   "iteration of a pipelined loop one cycle, a word readable the cycle after it was written, "
                   "unbounded streams; what Vitis HLS builds if it meets every PIPELINE II=1 pragma, not synthesis"}


def _run_sim(g: HwGraph, prep: PreparedNetwork, clock: float, board: Board, total: dict, opts: BuildOptions,
             echo) -> dict:
    """Cycle simulation: II and latency with unbounded and sized FIFOs, functional check, FIFO sizing."""
    from ..hw.sim.fifo_sizing import depth_summary, fifo_resources, finn_fifo_config, finn_unit_names, size_fifos
    from ..hw.sim.netlist import elaborate, width_converters
    from ..hw.sim.simulate import simulate

    t = time.time()
    net = elaborate(g)
    frames = max(2, int(opts.sim_frames))
    unb = simulate(net, frames, clock_mhz=clock)
    echo(f"cycle simulation ({len(net.units)} units, {len(net.fifos)} FIFOs, {frames} frames, unbounded FIFOs): "
         f"II {unb.ii_cycles:,.0f} cycles (analytical {unb.analytic_ii:,}), first output after "
         f"{unb.first_output_cycles:,} cycles")
    # functional mode on the real inputs: the simulator's data path against the IR reference
    xs = prep.int_inputs
    fun = simulate(net, len(xs), inputs=xs, clock_mhz=clock)
    assert fun.outputs is not None               # functional mode: inputs given
    ref = np.stack([g.execute(x) for x in xs])
    exact = int(sum(np.array_equal(a, b) for a, b in zip(ref, fun.outputs)))
    if exact != len(xs):
        raise BnhwError(f"cycle simulator output differs from the IR reference on {len(xs) - exact} of {len(xs)} "
                        "inputs (a simulator bug: please report it)")
    echo(f"cycle simulator (functional mode): bit-exact with the IR reference on {exact}/{len(xs)} digits images")
    sizing = size_fifos(net, max_seconds=opts.fifo_seconds, progress=lambda s: echo(f"FIFO sizing: {s}"))
    sized = simulate(net, frames, depths=sizing.depths, clock_mhz=clock)
    fres = fifo_resources(net, sizing.depths, large_fifo_style(board), lut_per_bram18(board))
    fifo_total = {"LUT": float(sum(r["lut"] for r in fres)), "BRAM18": float(sum(r["bram18"] for r in fres)),
                  "URAM": float(sum(r["uram"] for r in fres)), "DSP": 0.0}
    with_fifos = {k: total[k] + fifo_total[k] for k in total}
    dwcs = width_converters(net)
    dwc_total = {"LUT": float(sum(d["lut"] for d in dwcs)), "BRAM18": 0.0, "URAM": 0.0, "DSP": 0.0}
    with_all = {k: with_fifos[k] + dwc_total[k] for k in total}
    over = [k for k in ("LUT", "BRAM18", "URAM", "DSP") if with_all[k] > board.budget()[k]]
    echo(f"FIFOs sized ({sizing.runs} simulations): {depth_summary(sizing.depths)['deeper_than_2']} deeper than 2, "
         f"{fifo_total['LUT']:,.0f} LUT, {fifo_total['BRAM18']:,.0f} BRAM18; {len(dwcs)} width converters, "
         f"{dwc_total['LUT']:,.0f} LUT; sized II {sized.ii_cycles:,.0f} cycles (unbounded {unb.ii_cycles:,.0f})"
         + (f"; WARNING: with FIFOs and width converters the design exceeds the board's {over[0]}" if over else ""))
    fifos = []
    for f, r, pk, ol in zip(net.fifos, fres, sizing.peak, sizing.one_less):
        fifos.append({**r, "stream": f.stream, "peak_unbounded": pk, "ii_one_less": ol})
    return {
        "frames": frames, "units": len(net.units), "fifos_count": len(net.fifos),
        "unbounded": unb.to_dict(), "sized": sized.to_dict(),
        "functional": {"inputs": len(xs), "bit_exact": exact},
        "fifo_sizing": {"depths_summary": depth_summary(sizing.depths), "runs": sizing.runs,
                        "locally_minimal": sizing.minimal_everywhere(), "complete": sizing.complete,
                        "seconds": sizing.seconds, "time_budget_s": opts.fifo_seconds,
                        "ii_unbounded": sizing.ii_unbounded, "ii_sized": sizing.ii_sized},
        "fifos": fifos, "fifo_resources": fifo_total, "total_with_fifos": with_fifos,
        "width_converters": dwcs, "dwc_resources": dwc_total, "total_with_fifos_and_dwcs": with_all,
        "over_budget": over,
        "seconds": time.time() - t,
        "_finn_config": finn_fifo_config(net, sizing.depths, g.folding()),
        "_finn_fifos": lambda nodes=None: finn_fifo_config(net, sizing.depths, None, finn_unit_names(net, nodes)),
    }


def _run_vendor_synthesis(hls: str, hls_dir: Path, echo) -> dict:
    """Run the generated ``build_prj.tcl`` with the vendor HLS tool (only where it is installed)."""
    import subprocess

    echo(f"running {hls} -f build_prj.tcl in {hls_dir} (log: vendor_hls.log)")
    with open(hls_dir / "vendor_hls.log", "w") as log:
        rc = subprocess.call([hls, "-f", "build_prj.tcl"], cwd=hls_dir, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0:
        raise BnhwError(f"{hls} failed (exit {rc}); see {hls_dir / 'vendor_hls.log'}")
    return {"tool": hls, "exit": rc, "log": str(hls_dir / "vendor_hls.log")}


def _report(opts, board: Board, clock, prep, folded, how, latency_cycles, sf, csim, finn_op_type, model_notes,
            seconds, sim: dict | None = None) -> dict:
    g = folded.graph
    layers = []
    for n in g.nodes:
        r = folded.resources[n.name]
        layers.append({"name": n.name, "op": n.op, "finn_op": finn_op_type(g, n), "layer": n.layer,
                       "PE": n.pe, "SIMD": n.simd if n.op in ("MVAU", "SWG") else None,
                       "cycles": folded.cycles[n.name], **{k: r[k] for k in ("LUT", "BRAM18", "URAM", "DSP")}})
    bott = max(layers, key=lambda d: d["cycles"])["name"]
    util = {k: (folded.total[k] / v if v else None) for k, v in board.budget().items()}
    return {
        "network": prep.name, "kind": prep.kind, "notes": prep.notes,
        "board": board.to_dict(), "clock_mhz": clock, "margin": opts.margin,
        "folding": {"source": how, "file": str(opts.folding) if opts.folding else None},
        "performance": {"ii_cycles": folded.ii, "bottleneck": bott, "fps": clock * 1e6 / folded.ii,
                        "latency_cycles": latency_cycles, "latency_us": latency_cycles / clock,
                        "model": "FINN analytical cycle models per unit (get_exp_cycles); II = slowest unit; "
                                 "latency = longest path of per-unit cycles (FINN's critical-path estimate)"},
        "resources": {"total": folded.total, "utilisation": util, "board": board.budget(),
                      "model": "FINN analytical resource models per unit (lut/bram/uram/dsp_estimation) of FINN's "
                               "hardware library; FIFOs and width converters are added under 'simulation' "
                               "(total_with_fifos_and_dwcs), the DMA shell is not included; the "
                               "HLS C++ bnhw generates (same streams and folding) is verified by C simulation, its "
                               "synthesised resources are not measured here"},
        "finn_setfolding": {"target_cycles": folded.ii, "ii_cycles": sf.ii, "fps": clock * 1e6 / sf.ii,
                            "total": sf.total},
        "layers": layers,
        "checks": {"ir_vs_qonnx": prep.qonnx_check, "csim": csim},
        "models": model_notes(),
        "simulation": sim,
        "not_run": _not_run(csim, sim),
        "seconds": seconds,
    }


def _not_run(csim: dict, sim: dict | None = None) -> list[str]:
    tools = csim.get("vendor_tools", {})
    out = []
    if not tools.get("available"):
        out.append("HLS synthesis, RTL, place-and-route, bitfile and PYNQ driver: Vitis HLS / Vivado are not on "
                   "PATH (run hls/build_prj.tcl where they are)")
    out.append("measured resources and timing closure: only analytical estimates are reported")
    out.append("RTL simulation of the stitched design: bnhw's cycle simulator models FINN's units instead "
               "(see 'Cycle simulation')")
    if sim is None:
        out.append("cycle simulation and FIFO sizing (--no-sim)")
    return out


def _write_test_images(out: Path, prep: PreparedNetwork) -> None:
    """The real images the bit-exact checks ran on, as the model takes them (float NCHW), and their labels: an
    input for ``bnhw run``."""
    np.save(out / "test_images.npy", np.asarray(prep.images, dtype=np.float32))
    if prep.labels is not None:
        np.save(out / "test_labels.npy", np.asarray(prep.labels, dtype=np.int64))


def _write_outputs(out: Path, report: dict, g: HwGraph) -> None:
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=json_default))
    atomic_write_text(out / "folding.json", json.dumps(finn_folding_json(g), indent=2))
    atomic_write_text(out / "report.md", render_markdown(report))
    g.save(out / "hw_graph.json")
    plot_layers(report, out / "layers.png")
