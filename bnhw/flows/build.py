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

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BnhwError
from ..hw.boards import Board, get_board
from ..hw.ir import HwGraph
from ..spec import atomic_write_text
from .inputs import Kind, NetworkInput, require_hardware, resolve
from .outputs import make_dirs, staged_folder

__all__ = ["BuildOptions", "BuildResult", "build_flow", "load_folding_file", "prepare_network"]

#: quick training of a reference network when no --checkpoint is given (seconds on 2 cores)
REFERENCE_TRAIN_EPOCHS = {"cnv-w1a1": 1, "tfc-w1a1": 3}


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
    force: bool = False                 # replace an -o that another command wrote (see bnhw.flows.outputs)


@dataclass
class PreparedNetwork:
    """A network ready for hardware: its model, QONNX file, IR and real test inputs."""

    name: str
    kind: str                       # "reference" | "spec" | "qonnx"
    model: Any
    onnx: Path
    graph: HwGraph
    images: Any                     # float NCHW torch tensor (real digits images)
    int_inputs: np.ndarray          # (N, H, W, C) integer inputs of the IR
    qonnx_check: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class BuildResult:
    report: dict
    out: Path
    graph: HwGraph


# ----------------------------------------------------------------------------- network preparation
def _reference_names() -> tuple[str, ...]:
    from ..quant.reference_nets import REFERENCE_NETS
    return tuple(REFERENCE_NETS)


def prepare_network(network: str | NetworkInput, out: Path, *, checkpoint: Path | None = None, n_inputs: int = 16,
                    echo: Callable[[str], None] = print, command: str = "build",
                    lowered: LoweredQonnx | None = None) -> PreparedNetwork:
    """Build/load the model, export QONNX to ``out/model.onnx``, lower it, check the IR against QONNX.

    ``network`` is anything :func:`bnhw.flows.inputs.resolve` takes for
    ``command`` (a reference network, a spec file or zoo name, a QONNX file).
    """
    inp = network if isinstance(network, NetworkInput) else resolve(network, command)
    make_dirs(out)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise BnhwError(f"{checkpoint}: no such checkpoint")
    n_inputs = max(1, int(n_inputs))
    if inp.kind is Kind.REFERENCE:
        return _prepare_reference(inp.arg, out, checkpoint, n_inputs, echo)
    if inp.kind is Kind.QONNX:
        if checkpoint is not None:
            raise BnhwError(f"--checkpoint: {inp.arg} is a QONNX model and carries its own weights")
        return _prepare_qonnx(inp, out, n_inputs, lowered)
    if inp.kind in (Kind.SPEC, Kind.ZOO, Kind.CELL_SPEC):
        return _prepare_spec(inp, out, checkpoint, n_inputs, echo)
    raise BnhwError(f"{inp.arg} is a {inp.kind}; it has no network to prepare")


def reference_model(name: str, checkpoint: Path | None, echo: Callable[[str], None] = print):
    """A reference network's Brevitas model: ``checkpoint``'s weights, or trained here briefly on the digits.

    Returns ``(model, notes)``.
    """
    from ..quant import reference_nets as rn

    info = rn.REFERENCE_NETS[name]
    notes = [info.note]
    if checkpoint is not None:
        model = rn.build_reference(name, state_dict=checkpoint)
        notes.append(f"weights from {checkpoint}")
    else:
        epochs = REFERENCE_TRAIN_EPOCHS[name]
        echo(f"no --checkpoint: training {name} for {epochs} epoch(s) on the local digits images")
        model = rn.train_reference(name, epochs=epochs, seed=0)
        notes.append(f"no --checkpoint: trained here for {epochs} epoch(s) on the digits training split "
                     f"(BNN-PYNQ's pretrained {info.dataset} weights can be given with --checkpoint)")
    return model, notes


def _prepare_reference(name, out, checkpoint, n_inputs, echo) -> PreparedNetwork:
    from ..hw.lower_qonnx import lower_reference
    from ..quant import reference_nets as rn

    model, notes = reference_model(name, checkpoint, echo)
    onnx = out / "model.onnx"
    rn.export_reference(model, onnx)
    graph = lower_reference(onnx, name)
    x, y = rn.reference_data(name, "test")
    ints = rn.reference_input(name, x)
    images = x[:n_inputs]
    check = _check_ir_vs_qonnx(graph, onnx, images, ints[:n_inputs], head=None)
    labels = np.array([int(graph.execute(v).reshape(-1)[0]) for v in ints])
    check["accuracy_ir"] = float((labels == y.numpy()).mean())
    check["accuracy_images"] = len(ints)
    return PreparedNetwork(name, "reference", model, onnx, graph, images, ints[:n_inputs], check, notes)


@dataclass
class LoweredQonnx:
    """A QONNX input lowered to the IR (before any output folder exists: its errors are input errors)."""

    graph: HwGraph
    channels: int
    size: int
    flat: bool                      # a fully connected network: the IR takes the flattened image


def lower_qonnx_input(inp: NetworkInput) -> LoweredQonnx:
    """Lower a QONNX file: BNN-PYNQ-style graphs (an input quantiser on ``pixel / 255``, binary Conv /
    MatMul with batch norm + sign, 2x2 max pools, an affine head) lower like the reference networks."""
    from qonnx.util.cleanup import cleanup_model

    from ..hw.ir import IRError
    from ..hw.lower_qonnx import lower_qonnx
    from .inputs import load_onnx

    mw = load_onnx(inp)
    shape = mw.get_tensor_shape(mw.graph.input[0].name)
    if shape is None or len(shape) != 4 or shape[0] != 1 or shape[1] not in (1, 3) or shape[2] != shape[3]:
        raise BnhwError(f"{inp.arg}: input {mw.graph.input[0].name!r} has shape {shape}; bnhw builds image networks "
                        "with a 1 x C x H x H input (C = 1 or 3) in [0, 1]")
    _, c, h, w = (int(v) for v in shape)
    flat = not any(n.op_type == "Conv" for n in mw.graph.node)
    try:
        graph = lower_qonnx(cleanup_model(mw), inp.label, (1, 1, c * h * w) if flat else (h, w, c))
    except IRError as e:
        raise BnhwError(f"{inp.arg}: {e} (bnhw lowers BNN-PYNQ-style QONNX: an input quantiser on pixel/255, binary "
                        "Conv / MatMul with batch norm + sign, 2x2 max pools, an affine head; NAS-BNN networks build "
                        "from their spec)") from None
    return LoweredQonnx(graph, c, h, flat)


def _prepare_qonnx(inp: NetworkInput, out: Path, n_inputs: int, lowered: LoweredQonnx | None) -> PreparedNetwork:
    import shutil

    from ..data.datasets import ImageSet, load_digits_data

    low = lowered or lower_qonnx_input(inp)
    onnx = out / "model.onnx"
    assert inp.path is not None                  # a QONNX input is a file
    shutil.copyfile(inp.path, onnx)
    bundle = load_digits_data(low.size, channels=low.channels, seed=0)
    assert isinstance(bundle.test, ImageSet)     # the digits are held in memory
    u8 = bundle.test.images[:n_inputs]
    images = u8.float() / 255.0
    nhwc = u8.numpy().astype(np.int64).transpose(0, 2, 3, 1)
    ints = nhwc.reshape(len(nhwc), 1, 1, -1) if low.flat else nhwc
    check = _check_ir_vs_qonnx(low.graph, onnx, images, ints, head=None)
    labels = np.array([int(low.graph.execute(v).reshape(-1)[0]) for v in ints])
    check["accuracy_ir"] = float((labels == bundle.test.labels[:n_inputs].numpy()).mean())
    check["accuracy_images"] = len(ints)
    notes = [f"QONNX model {inp.arg} (its own weights), lowered like BNN-PYNQ's networks; real inputs: digits "
             f"resized to {low.size}x{low.size}x{low.channels}"]
    return PreparedNetwork(inp.label, "qonnx", None, onnx, low.graph, images, ints, check, notes)


def _prepare_spec(inp: NetworkInput, out, checkpoint, n_inputs, echo) -> PreparedNetwork:
    from ..data import digits_images
    from ..hw.estimate import fresh_hardware_model
    from ..hw.lower_binarynet import integer_input, lower_binarynet
    from ..quant.checkpoint import load_checkpoint, load_model
    from ..quant.export import export_qonnx
    from ..quant.model import BinaryNet, to_fixed

    spec = inp.spec
    require_hardware(spec, inp.label, "build",
                     f"only NAS-BNN block networks and {'/'.join(_reference_names())} build")
    notes = []
    if checkpoint is not None:
        saved, _, _ = load_checkpoint(checkpoint)
        if saved.replace(name="", precision=spec.precision) != spec.replace(name=""):
            raise BnhwError(f"{checkpoint} holds weights of another architecture ({saved.short()})")
    if checkpoint is None:                   # the model the FPGA estimator sizes (seeded, calibrated)
        model = fresh_hardware_model(spec)
        notes.append("no --checkpoint: random binary weights, batch-norm statistics estimated on digits images "
                     "(accuracy is not meaningful; cycles and resources do not depend on weights)")
    else:
        model = load_model(spec, checkpoint)
        assert isinstance(model, BinaryNet)      # an ArchSpec builds a BinaryNet
        if not spec.precision.fixed:
            model = to_fixed(model)
    if not spec.precision.fixed:
        notes.append("float residual path quantised to fixed point for hardware (post-training): "
                     f"{spec.precision.residual_bits}-bit, {spec.precision.residual_frac_bits} fractional bits")
    onnx = out / "model.onnx"
    export_qonnx(model, onnx)
    graph = lower_binarynet(model)
    images, _ = digits_images(spec.resolution, n_inputs, channels=spec.in_channels, seed=2)
    ints = integer_input(model, images)
    check = _check_ir_vs_qonnx(graph, onnx, images, ints, head=graph.meta.get("head"))
    return PreparedNetwork(inp.label, "spec", model, onnx, graph, images, ints, check, notes)


def _check_ir_vs_qonnx(graph: HwGraph, onnx: Path, images, ints: np.ndarray, head) -> dict:
    """IR reference execution vs QONNX execution of the exported graph on the same real images."""
    from ..quant.export import execute_qonnx

    logits = np.asarray(execute_qonnx(onnx, images))
    outs = np.stack([graph.execute(x) for x in ints])
    if head is not None:
        acc = outs.reshape(len(ints), -1).astype(np.float64)
        ir_logits = acc * np.asarray(head["scale"]) + np.asarray(head["bias"])
        scale = max(float(np.abs(logits).max()), 1e-30)
        err = float(np.abs(ir_logits - logits).max()) / scale
        labels_ir = ir_logits.argmax(1)
    else:
        err = None
        labels_ir = outs.reshape(len(ints), -1)[:, 0] if outs.reshape(len(ints), -1).shape[1] == 1 \
            else outs.reshape(len(ints), -1).argmax(1)
    labels_q = logits.reshape(len(ints), -1).argmax(1)
    agree = int((labels_ir == labels_q).sum())
    res = {"inputs": len(ints), "labels_equal": agree, "max_logit_rel_error": err}
    if agree != len(ints):
        raise BnhwError(f"hardware IR disagrees with QONNX execution on {len(ints) - agree} of {len(ints)} "
                        "images (a lowering bug; please report it)")
    return res


# ----------------------------------------------------------------------------- folding
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
    finn = _run_finn(g, prep, work, board, clock, folded, opts, echo)
    report = _report(opts, board, clock, prep, folded, how, latency_cycles, sf, csim, finn_op_type, model_notes,
                     time.time() - t0, sim)
    report["finn"] = finn
    _write_outputs(work, report, g)
    if sim is not None:
        atomic_write_text(work / "fifo_config.json", json.dumps(sim.pop("_finn_config"), indent=2))
    echo(f"wrote {out / 'report.md'}, report.json, layers.png, folding.json"
         + (", fifo_config.json" if sim is not None else "") + ", hls/")
    return BuildResult(report, out, g)


def finn_comparison(g: HwGraph, folded, layers: list[dict]) -> list[dict]:
    """FINN's estimate of each node of the graph FINN built beside bnhw's model of the IR node of that name
    (``None`` where the other side has no such node)."""
    ours = {n.name: n for n in g.nodes}
    rows = []
    for fl in layers:
        n = ours.get(fl["name"])
        rows.append({"name": fl["name"], "finn_cycles": fl["cycles"], "bnhw_cycles": folded.cycles.get(fl["name"]) if n
                     else None, "finn_LUT": fl["LUT"], "bnhw_LUT": folded.resources[fl["name"]]["LUT"] if n else None,
                     "finn_BRAM18": fl["BRAM18"],
                     "bnhw_BRAM18": folded.resources[fl["name"]]["BRAM18"] if n else None})
    seen = {fl["name"] for fl in layers}
    rows += [{"name": n.name, "finn_cycles": None, "bnhw_cycles": folded.cycles[n.name], "finn_LUT": None,
              "bnhw_LUT": folded.resources[n.name]["LUT"], "finn_BRAM18": None,
              "bnhw_BRAM18": folded.resources[n.name]["BRAM18"]} for n in g.nodes if n.name not in seen]
    return rows


def _run_finn(g: HwGraph, prep: PreparedNetwork, work: Path, board: Board, clock: float, folded, opts: BuildOptions,
              echo) -> dict:
    """Hand the QONNX network to finn-plus's own builder with bnhw's folding, up to FINN's code generation."""
    from ..hw.finn_compat import finn_builder_available, finn_builder_unavailable_reason

    if not opts.finn:
        return {"run": False, "why": "--no-finn"}
    if prep.kind == "spec":
        why = ("FINN's builder does not take bnhw's NAS-BNN / cell networks yet (its streamline stops at grouped "
               "convolutions; the fixed-point residual path, RPReLU and average pools have no FINN unit): the "
               "hardware is bnhw's own HLS")
        echo(f"FINN: not run: {why}")
        return {"run": False, "why": why}
    if not finn_builder_available():
        why = finn_builder_unavailable_reason()
        echo(f"FINN: not run: {why}")
        return {"run": False, "why": why}
    from ..hw.finn_build import finn_codegen
    from ..hw.ops import finn_folding_config

    res = finn_codegen(prep.onnx, finn_folding_config(g), work / "finn", board=board, clock_mhz=clock)
    echo(f"FINN: {res.line()}")
    d = res.to_dict()
    d.update(run=True, folder="finn/", comparison=finn_comparison(g, folded, res.layers))
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
    if tools.get("available"):
        res["synthesis"] = _run_vendor_synthesis(tools["hls"], hls_dir, echo)
    else:
        echo(f"{tools['message']} (stopped after C simulation)")
    return res


def _run_sim(g: HwGraph, prep: PreparedNetwork, clock: float, board: Board, total: dict, opts: BuildOptions,
             echo) -> dict:
    """Cycle simulation: II and latency with unbounded and sized FIFOs, functional check, FIFO sizing."""
    from ..hw.sim.fifo_sizing import depth_summary, fifo_resources, finn_fifo_config, size_fifos
    from ..hw.sim.netlist import elaborate
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
    fres = fifo_resources(net, sizing.depths)
    fifo_total = {"LUT": float(sum(r["lut"] for r in fres)), "BRAM18": float(sum(r["bram18"] for r in fres)),
                  "URAM": float(sum(r["uram"] for r in fres)), "DSP": 0.0}
    with_fifos = {k: total[k] + fifo_total[k] for k in total}
    over = [k for k in ("LUT", "BRAM18", "URAM", "DSP") if with_fifos[k] > board.budget()[k]]
    echo(f"FIFOs sized ({sizing.runs} simulations): {depth_summary(sizing.depths)['deeper_than_2']} deeper than 2, "
         f"{fifo_total['LUT']:,.0f} LUT, {fifo_total['BRAM18']:,.0f} BRAM18; sized II {sized.ii_cycles:,.0f} cycles "
         f"(unbounded {unb.ii_cycles:,.0f})" + (f"; WARNING: with FIFOs the design exceeds the board's {over[0]}"
                                                 if over else ""))
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
        "fifos": fifos, "fifo_resources": fifo_total, "total_with_fifos": with_fifos, "over_budget": over,
        "seconds": time.time() - t,
        "_finn_config": finn_fifo_config(net, sizing.depths, g.folding()),
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
                               "hardware library; FIFOs, width converters and the DMA shell are not included; the "
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


def _write_outputs(out: Path, report: dict, g: HwGraph) -> None:
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=_json))
    atomic_write_text(out / "folding.json", json.dumps(finn_folding_json(g), indent=2))
    atomic_write_text(out / "report.md", render_markdown(report))
    g.save(out / "hw_graph.json")
    plot_layers(report, out / "layers.png")


def _json(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render_markdown(r: dict) -> str:
    b, p, res = r["board"], r["performance"], r["resources"]
    tot = res["total"]
    lines = [f"# bnhw build: {r['network']} on {b['name']}", "",
             f"Board {b['name']} ({b['part']}): {b['LUT']:,} LUT, {b['BRAM18']:,} BRAM18, {b['URAM']} URAM, "
             f"{b['DSP']} DSP; clock {r['clock_mhz']:g} MHz.  Folding: {r['folding']['source']}.", ""]
    lines += [f"- notes: {n}" for n in r["notes"]]
    lines += ["", "## Throughput and latency (modelled)", "",
              f"- initiation interval: **{p['ii_cycles']:,} cycles** (bottleneck `{p['bottleneck']}`)",
              f"- throughput: **{p['fps']:,.1f} FPS** at {r['clock_mhz']:g} MHz",
              f"- latency: {p['latency_cycles']:,} cycles = {p['latency_us']:,.1f} us",
              f"- model: {p['model']}", "",
              "## Resources (modelled)", "",
              "| | LUT | BRAM18 | URAM | DSP |", "|---|---:|---:|---:|---:|",
              f"| estimated | {tot['LUT']:,.0f} | {tot['BRAM18']:,.0f} | {tot['URAM']:,.0f} | {tot['DSP']:,.0f} |",
              f"| board | {b['LUT']:,} | {b['BRAM18']:,} | {b['URAM']:,} | {b['DSP']:,} |",
              "| utilisation | " + " | ".join(_pct(res["utilisation"][k]) for k in ("LUT", "BRAM18", "URAM", "DSP"))
              + " |", "", f"Model: {res['model']}.", ""]
    sf = r["finn_setfolding"]
    lines += ["## FINN SetFolding at the same cycle target (modelled)", "",
              f"target {sf['target_cycles']:,} cycles: II {sf['ii_cycles']:,} cycles, {sf['fps']:,.1f} FPS, "
              f"LUT {sf['total']['LUT']:,.0f}, BRAM18 {sf['total']['BRAM18']:,.0f}, DSP {sf['total']['DSP']:,.0f} "
              f"(bnhw: LUT {tot['LUT']:,.0f}, BRAM18 {tot['BRAM18']:,.0f})", ""]
    lines += ["## Per unit", "", "| unit | FINN op | layer | PE | SIMD | cycles | LUT | BRAM18 | DSP |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for d in r["layers"]:
        mark = " **(bottleneck)**" if d["name"] == p["bottleneck"] else ""
        lines.append(f"| {d['name']}{mark} | {d['finn_op']} | {d['layer']} | {d['PE']} | {d['SIMD'] or ''} | "
                     f"{d['cycles']:,} | {d['LUT']:,.0f} | {d['BRAM18']:,.0f} | {d['DSP']:,.0f} |")
    c = r["checks"]
    q = c["ir_vs_qonnx"]
    lines += ["", "## What was checked (measured)", "",
              f"- hardware IR vs QONNX execution of `model.onnx` on {q['inputs']} digits images: labels equal on "
              f"{q['labels_equal']}/{q['inputs']}"
              + (f", logits max relative error {q['max_logit_rel_error']:.2e}" if q.get("max_logit_rel_error")
                 is not None else "")]
    if q.get("accuracy_ir") is not None:
        lines.append(f"- top-1 accuracy of the integer network (IR execution) on {q['accuracy_images']} held-out "
                     f"digits images: {100 * q['accuracy_ir']:.1f}%")
    cs = c["csim"]
    if "inputs" in cs:
        lines.append(f"- C simulation (generated HLS C++, g++): outputs bit-exact with the IR reference on "
                     f"{cs['outputs_bit_exact']}/{cs['inputs']} images"
                     + (f"; `{cs['compared_stream']}` (before the label select) bit-exact on "
                        f"{cs['pre_label_bit_exact']}/{cs['inputs']}" if cs.get("pre_label_bit_exact") is not None
                        else ""))
    else:
        lines.append(f"- C simulation: {cs.get('csim')}")
    lines += _render_sim(r)
    lines += _render_finn(r)
    lines += ["", "## Not run", ""] + [f"- {x}" for x in r["not_run"] or ["(everything ran)"]]
    lines += ["", "## Estimation models", ""] + [f"- {k}: {v}" for k, v in r["models"].items()]
    return "\n".join(lines) + "\n"


def _render_finn(r: dict) -> list[str]:
    f = r.get("finn")
    if not f:
        return []
    lines = ["", "## FINN (finn-plus's own builder)", ""]
    if not f.get("run"):
        return lines + [f"Not run: {f['why']}."]
    if not f["ok"]:
        return lines + [f"FINN's builder stopped at `{f['stopped_at']}`: {f['reason']} (log: "
                        "`finn/output/build_dataflow.log`)."]
    n = f["network"]
    lines += [f"`finn/`: finn-plus ran {len(f['steps_run'])} steps offline ({', '.join(f['steps_run'])}) on "
              f"`model.onnx` with bnhw's folding (`finn/folding_config.json`) in {f['seconds']:.0f} s and "
              f"generated the code of {len(f['codegen'])} HW nodes (`finn/finn_tmp/`).  FINN's estimates of the "
              f"graph it built (`finn/output/report/`, modelled by FINN): "
              f"**{n.get('estimated_throughput_fps', 0):,.1f} FPS**, bottleneck `{n.get('max_cycles_node_name')}` "
              f"({n.get('max_cycles', 0):,} cycles), latency {n.get('estimated_latency_ns', 0) / 1000:,.1f} us.  "
              + ("Vivado is here: `finn build dataflow_build_config.json model.onnx` in `finn/` continues to the "
                 "bitfile." if f["vivado"] else
                 "Vivado is not installed: the FINN build stops after code generation; on a machine with Vivado, "
                 "`finn build dataflow_build_config.json model.onnx` in `finn/` continues to stitched IP, bitfile, "
                 "PYNQ driver and deployment package."), "",
              "Per node, FINN's estimate beside bnhw's model of the IR node of the same name "
              "(- : the other side has no such node):", "",
              "| node | FINN cycles | bnhw cycles | FINN LUT | bnhw LUT | FINN BRAM18 | bnhw BRAM18 |",
              "|---|---:|---:|---:|---:|---:|---:|"]

    def v(x):
        return "-" if x is None else f"{x:,.0f}"

    for c in f["comparison"]:
        lines.append(f"| {c['name']} | {v(c['finn_cycles'])} | {v(c['bnhw_cycles'])} | {v(c['finn_LUT'])} | "
                     f"{v(c['bnhw_LUT'])} | {v(c['finn_BRAM18'])} | {v(c['bnhw_BRAM18'])} |")
    return lines


def _render_sim(r: dict) -> list[str]:
    sim = r.get("simulation")
    if not sim:
        return []
    u, z = sim["unbounded"], sim["sized"]
    clock = r["clock_mhz"]
    fs = sim["fifo_sizing"]
    fr = sim["fifo_resources"]
    tw = sim["total_with_fifos"]
    dev = abs(u["ii_cycles"] - u["analytic_ii"]) / u["analytic_ii"] if u["analytic_ii"] else 0.0
    lines = ["", "## Cycle simulation (simulated)", "",
             f"bnhw's cycle-level simulator ({sim['units']} units: FINN's MVAU / VVAU / Thresholding / Pool loops "
             "with their PE x SIMD schedules, sliding-window generators and width converters as concurrent "
             f"reader/writer buffers, {sim['fifos_count']} FIFOs with back-pressure), {sim['frames']} frames back "
             "to back.", "",
             "| | II (cycles) | FPS | first output (cycles) | frame latency (cycles) | frame latency (us) |",
             "|---|---:|---:|---:|---:|---:|",
             f"| unbounded FIFOs | {u['ii_cycles']:,.0f} | {u['fps']:,.1f} | {u['first_output_cycles']:,} | "
             f"{u['frame_latency_cycles']:,} | {u['frame_latency_cycles'] / clock:,.1f} |",
             f"| sized FIFOs | {z['ii_cycles']:,.0f} | {z['fps']:,.1f} | {z['first_output_cycles']:,} | "
             f"{z['frame_latency_cycles']:,} | {z['frame_latency_cycles'] / clock:,.1f} |",
             f"| analytical | {u['analytic_ii']:,} | {clock * 1e6 / u['analytic_ii']:,.1f} | | "
             f"{r['performance']['latency_cycles']:,} (sum along the longest path) | |", "",
             f"- simulated II vs the largest analytical per-unit cycle count: {100 * dev:.2f}% apart",
             f"- functional mode: the simulator's data path is bit-exact with the IR reference on "
             f"{sim['functional']['bit_exact']}/{sim['functional']['inputs']} digits images",
             f"- FIFO sizing ({fs['runs']} simulations): {fs['depths_summary']['deeper_than_2']} of "
             f"{fs['depths_summary']['fifos']} FIFOs need more than 2 slots (deepest "
             f"{fs['depths_summary']['max']} words); "
             + ("each is the smallest depth keeping the unbounded II (one slot less was simulated and lost "
                "throughput or deadlocked)" if fs["complete"] else
                f"**the search stopped at its {fs['time_budget_s']:g} s budget**: the depths keep the unbounded II "
                "but some are not minimal (raise --fifo-seconds)")
             + "; written to `fifo_config.json` (FINN's folding-config format, `inFIFODepths` / "
             "`outFIFODepths` per unit)",
             f"- FIFO cost (FINN's fifo.sv model; depth <= 2 is not instantiated): {fr['LUT']:,.0f} LUT, "
             f"{fr['BRAM18']:,.0f} BRAM18, {fr['URAM']:,.0f} URAM; design total with FIFOs: {tw['LUT']:,.0f} LUT, "
             f"{tw['BRAM18']:,.0f} BRAM18" + (f" -- **exceeds the board's {', '.join(sim['over_budget'])}**"
                                              if sim["over_budget"] else ""),
             "",
             "First-output latency, unit by unit (frame 0 through an empty pipeline: each unit's first output word "
             "and why it waits; the wait includes the rate at which its producer delivers what it needs):", "",
             "| unit | FINN op | first output (cycle) | adds | why |", "|---|---|---:|---:|---|"]
    for p in u["latency_path"]:
        lines.append(f"| {p['unit']} | {p['finn_op']} | {p['first_output']:,} | {p['adds']:,} | {p['why']} |")
    deep = [f for f in sim["fifos"] if f["depth"] > 2]
    if deep:
        lines += ["", "FIFOs deeper than 2 (sized):", "",
                  "| FIFO | depth | peak (unbounded) | width (bits) | style | LUT | BRAM18 | II with one slot less |",
                  "|---|---:|---:|---:|---|---:|---:|---:|"]
        for f in sorted(deep, key=lambda f: -f["depth"]):
            ol = "deadlock" if f["ii_one_less"] is None else f"{f['ii_one_less']:,.0f}"
            lines.append(f"| {f['name']} | {f['depth']:,} | {f['peak_unbounded']:,} | {f['width_bits']} | "
                         f"{f['style']} | {f['lut']:,} | {f['bram18']:,} | {ol} |")
    lines += ["", "Per-unit activity over the run (cycles; busy / starved = waiting for input / stalled = output "
              "full):", "", "| unit | FINN op | analytical cycles | busy per frame | starved | stalled |",
              "|---|---|---:|---:|---:|---:|"]
    for d in u["units"]:
        lines.append(f"| {d['name']} | {d['finn_op']} | {d['analytic_cycles']:,} | {d['busy_per_frame']:,.0f} | "
                     f"{d['starved']:,} | {d['stalled']:,} |")
    return lines


def plot_layers(r: dict, path: Path) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..spec import atomic_write_bytes

    layers = [d for d in r["layers"] if d["cycles"] > 0 or d["LUT"] > 0]
    names = [d["name"] for d in layers]
    fig, axes = plt.subplots(3, 1, figsize=(max(8, 0.35 * len(names)), 9), sharex=True)
    axes[0].bar(names, [d["cycles"] for d in layers], color="tab:blue")
    axes[0].axhline(r["performance"]["ii_cycles"], color="k", ls="--", lw=0.8)
    axes[0].set_ylabel("cycles / frame")
    axes[0].set_title(f"{r['network']} on {r['board']['name']}: {r['performance']['fps']:,.0f} FPS at "
                      f"{r['clock_mhz']:g} MHz (modelled)")
    axes[1].bar(names, [d["LUT"] for d in layers], color="tab:orange")
    axes[1].set_ylabel("LUT")
    axes[2].bar(names, [d["BRAM18"] for d in layers], color="tab:green")
    axes[2].set_ylabel("BRAM18")
    axes[2].tick_params(axis="x", rotation=90, labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
