"""bnhw's steps for FINN builds: resource-aware folding (:func:`step_bnhw_folding`) and FIFO sizing by cycle
simulation (:func:`step_bnhw_fifo_depths`, see its docstring), for any FINN graph; and the steps bnhw's own
builds of its IR need (:func:`step_bnhw_node_order`, :func:`step_bnhw_units`).

FINN's ``step_target_fps_parallelization`` runs ``SetFolding``: it meets a cycle target node by node and never
looks at resources, so the user guesses ``target_fps``, builds and finds out whether the design fits.  bnhw's
folding turns this around (:mod:`bnhw.hw.folding`): every unit takes the least-resource folding meeting a cycle
target, and the smallest target whose total fits the board is found by bisection.  Here the per-unit options come
from **FINN's own estimates** of the specialised graph in the build (``get_exp_cycles``, ``lut_estimation``,
``bram_estimation``, ``uram_estimation``, ``dsp_estimation`` on each node at each legal folding, after FINN's
bit-width minimisation), so the step works on any FINN graph, not only on bnhw's networks.

Use it in place of ``step_target_fps_parallelization``::

    from finn.builder.build_dataflow_config import DataflowBuildConfig, default_build_dataflow_steps
    from bnhw.hw.finn_steps import step_bnhw_folding

    steps = [step_bnhw_folding if s == "step_target_fps_parallelization" else s
             for s in default_build_dataflow_steps]
    cfg = DataflowBuildConfig(output_dir="out", board="Pynq-Z2", synth_clk_period_ns=10.0, steps=steps, ...)

``step_bnhw_folding`` fits the board ``cfg.board`` names (at ``margin`` = 0.85 of its LUT / BRAM18 / URAM / DSP)
and maximises FPS; with ``cfg.target_fps`` set it takes the least resources reaching that FPS instead.
:func:`bnhw_folding_step` makes a step with another board, margin or FPS target.  The step writes
``report/bnhw_folding.json`` (per node: folding, FINN's cycles and resources; the II and FPS) and
``bnhw_folding_config.json`` (FINN's folding-config format) into ``cfg.output_dir``.

bnhw's units (:mod:`bnhw.hw.finn_ops`, in graphs bnhw exported from its IR) fold as their IR op allows, with
their models' estimates.  Legal foldings follow FINN's own rules (``SetFolding``'s op lists): MVAU ``PE | MH``, ``SIMD | MW``; PE ops
(Thresholding, elementwise, DuplicateStreams, GlobalAccPool, ...) ``PE | NumChannels``; LabelSelect
``PE | Labels``; FMPadding and non-depthwise window generators ``SIMD | channels`` (RTL window generators also
``parallel_window`` at ``SIMD = channels``); a depthwise window generator shares its VVAU's / Pool's PE (the pair
is one unit; VVAU ``SIMD | k*k`` once PE is full); Split / Concat a common divisor of their channels.  HLS nodes
never get a stream wider than FINN's ``MAX_ALLOWED_AP_INT_W``.  Other nodes keep their attributes (their cycles
still bound the II).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BnhwError
from ..spec import atomic_write_text
from .boards import BOARDS, Board, get_board, lut_per_bram18
from .folding import RESOURCE_KEYS, FoldOption, board_budget, cheapest_fit, fastest_fit, pareto

try:    # registers bnhw's units with FINN: `finn build` of a bnhw build folder imports this module (its steps) first
    from . import finn_ops  # noqa: F401
except ImportError:     # FINN is not installed: none of these steps can run
    pass

__all__ = ["step_bnhw_folding", "bnhw_folding_step", "finn_folding_options", "complete_folding_step", "step_bnhw_units",
           "step_bnhw_fifo_depths", "bnhw_fifo_depths_step",
           "step_bnhw_node_order", "NODE_ORDER_KEY", "widen_xnor_popcounts"]

_PE_OPS = ("DuplicateStreams_hls", "GlobalAccPool_hls", "Thresholding_hls", "Thresholding_rtl",
           "ReplicateStream_hls", "ChannelwiseOp_hls", "AddStreams_hls", "Reshape_rtl")
_DEPTHWISE_CONSUMERS = ("VVAU_hls", "VVAU_rtl", "Pool_hls")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, int(n) + 1) if n % d == 0]


def _is_hw(node) -> bool:
    return node.domain.startswith("finn.custom_op.fpgadataflow.")


def _max_width() -> int:
    from finn.util.basic import MAX_ALLOWED_AP_INT_W

    return int(MAX_ALLOWED_AP_INT_W)


def _legal(model, inst, node) -> bool:
    """Whether FINN accepts the node's current folding: its folded stream shapes exist (FINN asserts the
    divisibility rules there) and, for an HLS node, no stream is wider than ``MAX_ALLOWED_AP_INT_W``."""
    streams = [i for i, t in enumerate(node.input) if t and model.get_initializer(t) is None]
    try:
        ws = [int(inst.get_outstream_width())]
        for i in streams:
            inst.get_folded_input_shape(i)
            ws.append(int(inst.get_instream_width(i)))
        inst.get_folded_output_shape()
        if node.op_type.startswith("MVAU") and inst.get_nodeattr("mem_mode") == "internal_decoupled":
            ws.append(int(inst.get_instream_width(1)))          # the weight stream
    except AssertionError:
        return False
    return not node.domain.endswith(".hls") or max(ws) <= _max_width()


def _estimate(insts, part: str) -> tuple[int, tuple[float, float, float, float]]:
    cyc = max(int(i.get_exp_cycles()) for i in insts)
    res = [0.0, 0.0, 0.0, 0.0]
    for i in insts:
        for k, v in enumerate((i.lut_estimation(part), i.bram_estimation(part), i.uram_estimation(part),
                               i.dsp_estimation(part))):
            res[k] += float(v or 0)
    return cyc, (res[0], res[1], res[2], res[3])


# one unit: the nodes it sets, and its candidate attribute assignments (one dict per node, in order)
_Unit = tuple[list[Any], list[list[dict[str, int]]]]


def _units(model) -> Iterator[tuple[str, _Unit]]:
    from qonnx.custom_op.registry import getCustomOp

    from .finn_ops import is_unit  # (importing it registers bnhw's units with FINN)

    paired = set()
    for node in model.graph.node:
        if node.op_type in _DEPTHWISE_CONSUMERS:
            prod = model.find_producer(node.input[0])
            if prod is not None and prod.op_type.startswith("ConvolutionInputGenerator"):
                paired.add(prod.name)
    for node in model.graph.node:
        if not _is_hw(node) or node.name in paired:
            continue
        t = node.op_type
        inst = getCustomOp(node)
        if is_unit(node):                    # the IR op's own legal foldings (bnhw.hw.ops)
            from .ops import get_op

            g, n = inst.ir()
            op = get_op(n.op)
            cands = [[{"PE": pe, **({"SIMD": simd} if op.folds_simd else {})}] for pe, simd in op.foldings(g, n)]
            yield node.name, ([node], cands if op.foldable else [[{}]])
        elif t in ("MVAU_hls", "MVAU_rtl"):
            mw, mh = int(inst.get_nodeattr("MW")), int(inst.get_nodeattr("MH"))
            yield node.name, ([node], [[{"PE": pe, "SIMD": simd}] for pe in _divisors(mh) for simd in _divisors(mw)])
        elif t in _PE_OPS or t.startswith("Elementwise"):
            try:
                c = int(inst.get_nodeattr("NumChannels"))
            except AttributeError:
                c = int(inst.get_normal_output_shape()[-1])
            yield node.name, ([node], [[{"PE": pe}] for pe in _divisors(c)])
        elif t == "LabelSelect_hls":
            yield node.name, ([node], [[{"PE": pe}] for pe in _divisors(int(inst.get_nodeattr("Labels")))])
        elif t in _DEPTHWISE_CONSUMERS:
            c = int(inst.get_nodeattr("Channels"))
            prod = model.find_producer(node.input[0])
            swg = prod if prod is not None and prod.op_type.startswith("ConvolutionInputGenerator") else None
            k = int(np.prod(inst.get_nodeattr("Kernel"))) if t.startswith("VVAU") else 1
            cands = []
            for pe in _divisors(c):
                for simd in (_divisors(k) if pe == c else [1]):
                    own = {"PE": pe, **({"SIMD": simd} if t.startswith("VVAU") else {})}
                    if swg is None:
                        cands.append([own])
                    else:
                        sw = {"SIMD": pe}
                        if swg.op_type.endswith("_rtl"):
                            sw["parallel_window"] = int(simd > 1)
                        cands.append([own, sw])
            yield node.name, (([node, swg] if swg is not None else [node]), cands)
        elif t.startswith("ConvolutionInputGenerator") and int(inst.get_nodeattr("depthwise")) == 0:
            c = int(inst.get_nodeattr("IFMChannels"))
            cands = [[{"SIMD": s, **({"parallel_window": 0} if t.endswith("_rtl") else {})}] for s in _divisors(c)]
            if t.endswith("_rtl"):
                cands.append([{"SIMD": c, "parallel_window": 1}])
            yield node.name, ([node], cands)
        elif t.startswith("FMPadding"):
            yield node.name, ([node], [[{"SIMD": s}] for s in _divisors(int(inst.get_nodeattr("NumChannels")))])
        elif t in ("StreamingSplit_hls", "StreamingConcat_hls"):
            chans = [int(v) for v in inst.get_nodeattr("ChannelsPerStream")]
            common = sorted(set.intersection(*(set(_divisors(v)) for v in chans)))
            yield node.name, ([node], [[{"SIMD": s}] for s in common])
        else:                                   # not folded here: its current attributes
            yield node.name, ([node], [[{}]])


def _option_of(assign: list[dict[str, int]], cyc: int, res) -> FoldOption:
    first = assign[0]
    return FoldOption(int(first.get("PE", 1)), int(first.get("SIMD", 1)), None,
                      int(first["parallel_window"]) if "parallel_window" in first else None, cyc, res)


def finn_folding_options(model, part: str) -> tuple[dict[str, list[FoldOption]], dict[tuple[str, FoldOption],
                                                                                         list[dict[str, int]]]]:
    """Per unit of the FINN ``model`` (specialised, bit widths minimised), its legal foldings with FINN's own
    cycles and resources (Pareto-pruned); and, per (unit, option), the attributes to set on its node(s)."""
    from qonnx.custom_op.registry import getCustomOp

    options: dict[str, list[FoldOption]] = {}
    assigns: dict[tuple[str, FoldOption], list[dict[str, int]]] = {}
    for name, (nodes, cands) in _units(model):
        insts = [getCustomOp(n) for n in nodes]
        saved = [{k: inst.get_nodeattr(k) for k in ("PE", "SIMD", "parallel_window") if _has(inst, k)}
                 for inst in insts]
        opts = []
        for assign in cands:
            for inst, a in zip(insts, assign):
                for k, v in a.items():
                    inst.set_nodeattr(k, v)
            if not all(_legal(model, inst, n) for inst, n in zip(insts, nodes)):
                continue
            cyc, res = _estimate(insts, part)
            o = _option_of(assign, cyc, res)      # (PE, SIMD, parallel_window) of the first node decide the rest
            opts.append(o)
            assigns[(name, o)] = assign
        for inst, s in zip(insts, saved):                      # leave the model as it was
            for k, v in s.items():
                inst.set_nodeattr(k, v)
        if not opts:
            raise BnhwError(f"{name}: no folding of this {nodes[0].op_type} keeps its streams within "
                            f"{_max_width()} bits")
        options[name] = pareto(opts)
    return options, assigns


def _has(inst, key: str) -> bool:
    try:
        inst.get_nodeattr(key)
        return True
    except AttributeError:
        return False


def _board_of(cfg) -> Board:
    for b in BOARDS.values():
        if b.finn_board and b.finn_board == cfg.board:
            return b
    known = ", ".join(b.finn_board for b in BOARDS.values() if b.finn_board)
    raise BnhwError(f"step_bnhw_folding: board {cfg.board!r} is not one bnhw models ({known}); use "
                    "bnhw_folding_step(board=...) with a bnhw board name")


def bnhw_folding_step(board: str | None = None, margin: float = 0.85, fps: float | None = None
                      ) -> Callable[[Any, Any], Any]:
    """A FINN builder step applying bnhw's folding: ``board`` (a bnhw board name; default: ``cfg.board``),
    ``margin`` of its resources, ``fps`` (default: ``cfg.target_fps``; None: the fastest folding that fits)."""

    def step_bnhw_folding(model, cfg):
        from .finn_compat import minimized_copy

        b = get_board(board) if board is not None else _board_of(cfg)
        part = b.part
        clock = 1000.0 / float(cfg.synth_clk_period_ns)
        options, assigns = finn_folding_options(minimized_copy(model), part)
        budget = board_budget(b, margin)
        target = fps if fps is not None else getattr(cfg, "target_fps", None)
        if target:
            pick = cheapest_fit(options, int(clock * 1e6 // target), budget, clock_mhz=clock, board_name=b.name,
                                fps=float(target))
        else:
            pick = fastest_fit(options, budget, board_name=b.name)
        return _apply(model, pick, assigns, cfg, b, clock, budget)

    return step_bnhw_folding


def _apply(model, pick: dict[str, FoldOption], assigns, cfg, b: Board, clock: float, budget: dict[str, float]):
    from qonnx.custom_op.registry import getCustomOp

    by_name = {n.name: n for n in model.graph.node}
    units = dict(_units(model))
    config: dict[str, Any] = {"Defaults": {}}
    rows = []
    for name, o in pick.items():
        nodes, _ = units[name]
        for node, a in zip(nodes, assigns[(name, o)]):
            inst = getCustomOp(by_name[node.name])
            for k, v in a.items():
                inst.set_nodeattr(k, v)
            if a:
                config[node.name] = dict(a)
        rows.append({"unit": name, "nodes": [n.name for n in nodes], "folding": assigns[(name, o)],
                     "cycles": o.cycles, **dict(zip(RESOURCE_KEYS, o.res))})
    ii = max((o.cycles for o in pick.values()), default=1)
    total = {k: sum(r[k] for r in rows) for k in RESOURCE_KEYS}
    report = {"board": b.name, "clock_mhz": clock, "ii_cycles": ii, "fps": clock * 1e6 / max(ii, 1),
              "total": total, "budget": budget, "units": rows,
              "how": "bnhw's resource-aware folding over FINN's own per-node estimates (after bit-width "
                     "minimisation); FIFOs and width converters are not in the total"}
    out = Path(cfg.output_dir)
    (out / "report").mkdir(parents=True, exist_ok=True)
    _write(out / "report" / "bnhw_folding.json", report)
    _write(out / "bnhw_folding_config.json", config)
    return model


def _write(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


#: the step for ``DataflowBuildConfig.steps`` with the build's own board and ``target_fps``
step_bnhw_folding = bnhw_folding_step()


def complete_folding_step(target_cycles: int, part: str = "xc7z020clg400-1") -> Callable[[Any, Any], Any]:
    """A FINN builder step for after ``step_apply_folding_config``: every unit the folding config does not name
    (nodes FINN's graph has and the config's author did not fold, e.g. FINN's ``Reshape_rtl`` in front of a
    fully connected network) gets its least-resource folding of at most ``target_cycles`` cycles (FINN's own
    estimates; the fastest one if none is that fast).  So a folding chosen for bnhw's IR reaches its II in
    FINN's graph too.  Writes ``report/bnhw_completed_folding.json``."""

    def step_bnhw_complete_folding(model, cfg):
        from qonnx.custom_op.registry import getCustomOp

        from .finn_compat import minimized_copy

        named: set[str] = set()
        if getattr(cfg, "folding_config_file", None):
            named = {k for k in json.loads(Path(cfg.folding_config_file).read_text()) if k != "Defaults"}
        options, assigns = finn_folding_options(minimized_copy(model), part)
        units = dict(_units(model))
        by_name = {n.name: n for n in model.graph.node}
        done = []
        for name, opts in options.items():
            nodes, _ = units[name]
            if any(n.name in named for n in nodes) or not any(assigns[(name, o)][0] for o in opts):
                continue                            # folded by the config, or a node without folding
            fast = [o for o in opts if o.cycles <= target_cycles]
            o = min(fast, key=lambda o: (o.res, o.cycles)) if fast else min(opts, key=lambda o: (o.cycles, o.res))
            for node, a in zip(nodes, assigns[(name, o)]):
                inst = getCustomOp(by_name[node.name])
                for k, v in a.items():
                    inst.set_nodeattr(k, v)
            done.append({"unit": name, "nodes": [n.name for n in nodes], "folding": assigns[(name, o)],
                         "cycles": o.cycles,
                         **dict(zip(RESOURCE_KEYS, o.res))})
        out = Path(cfg.output_dir) / "report"
        out.mkdir(parents=True, exist_ok=True)
        _write(out / "bnhw_completed_folding.json", {"target_cycles": target_cycles, "units": done})
        return model

    return step_bnhw_complete_folding



#: the model metadata key holding the node order :func:`step_bnhw_node_order` restores
NODE_ORDER_KEY = "bnhw_node_order"


def step_bnhw_node_order(model, cfg):
    """A FINN builder step for right after ``step_specialize_layers`` in a graph that holds nodes of other domains
    (bnhw's units): finn-plus's ``SpecializeLayers`` counts only its own generic nodes when it puts a specialised
    node back, so with other nodes in between it reorders the graph (out of topological order).  The step puts
    the nodes back in the order the model's metadata ``bnhw_node_order`` lists (each node's first output tensor,
    which specialisation keeps; :func:`bnhw.hw.finn_export.finn_dataflow_model` writes it) and names them as
    FINN's ``GiveUniqueNodeNames`` does in that order.  Without the metadata it changes nothing."""
    order = model.get_metadata_prop(NODE_ORDER_KEY)
    if not order:
        return model
    rank = {t: i for i, t in enumerate(json.loads(order))}
    nodes = sorted(model.graph.node, key=lambda n: rank.get(n.output[0], len(rank)))
    count: dict[str, int] = {}
    for n in nodes:
        i = count.get(n.op_type, 0)
        count[n.op_type] = i + 1
        n.name = f"{n.op_type}_{i}"
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def widen_xnor_popcounts(model):
    """Give every XNOR MVAU without activation (its output is the popcount ``p`` in ``[0, MW]``, which a bnhw
    unit decodes) an accumulator and output type holding ``[0, MW]`` (:func:`bnhw.hw.finn_models.popcount_dt`,
    which bnhw's netlist gives the stream too).  FINN's ``MinimizeAccumulatorWidth`` sizes it from the bipolar
    dot product of the weights with a BINARY (0 / 1) input, e.g. INT11 for ``MW`` = 1600, which a popcount
    overflows (FINN's own flows put thresholds behind every XNOR MVAU and never see it).
    The readers take the new type (``InferDataTypes``)."""
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.infer_datatypes import InferDataTypes

    from .finn_models import popcount_dt

    changed = False
    for node in model.graph.node:
        if not node.op_type.startswith("MVAU"):
            continue
        inst = getCustomOp(node)
        if not (int(inst.get_nodeattr("binaryXnorMode")) and int(inst.get_nodeattr("noActivation"))):
            continue
        cur = inst.get_nodeattr("outputDataType")
        dt = DataType[popcount_dt(int(inst.get_nodeattr("MW")), cur)]
        if dt.name == cur:
            continue
        inst.set_nodeattr("accDataType", dt.name)
        inst.set_nodeattr("outputDataType", dt.name)
        model.set_tensor_datatype(node.output[0], dt)
        changed = True
    return model.transform(InferDataTypes(), cleanup=False) if changed else model


def step_bnhw_units(model, cfg):
    """FINN's ``step_generate_estimate_reports`` for a graph holding bnhw's units (:mod:`bnhw.hw.finn_ops`), with
    bnhw's own reports of them.  It first puts the nodes back in the exported order (:func:`step_bnhw_node_order`:
    qonnx's model cleanup after FINN's bit-width steps re-sorts the graph, and FINN's next ``GiveUniqueNodeNames``
    would rename by the new order):

    * ``report/estimate_layer_cycles.json`` and ``estimate_layer_resources.json``: FINN's own analyses
      (``exp_cycles_per_layer``, ``res_estimation``) of FINN's nodes, as FINN's step writes them;
    * ``report/estimate_bnhw_units.json``: per unit, cycles and resources (bnhw's models);
    * ``report/estimate_network_performance_bnhw.json``: FINN's network figures over every node, units included
      (the slowest node sets the II; the latency is the longest path of node cycles, FINN's
      ``dataflow_performance`` formula).

    The units' code is FINN's business: they are HLS nodes, so ``step_hw_codegen`` (``PrepareIP``) writes each
    one's ``top_<node>.cpp`` and ``hls_syn_<node>.tcl`` (:class:`bnhw.hw.finn_ops.IrUnit`)."""
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from qonnx.custom_op.registry import getCustomOp

    from .finn_ops import is_unit

    model = widen_xnor_popcounts(model)
    model = step_bnhw_node_order(model, cfg)     # qonnx's cleanup re-sorts the graph; names follow the order
    out = Path(cfg.output_dir)
    part = cfg._resolve_fpga_part()
    clk_ns = float(cfg.synth_clk_period_ns)
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    cycles: dict[str, int] = {k: int(v) for k, v in model.analysis(exp_cycles_per_layer).items()}
    resources = model.analysis(lambda m: res_estimation(m, part))
    _write(report / "estimate_layer_cycles.json", cycles)
    _write(report / "estimate_layer_resources.json", resources)
    units: dict[str, dict[str, float]] = {}
    for node in model.graph.node:
        if is_unit(node):
            inst = getCustomOp(node)
            units[node.name] = {"cycles": int(inst.get_exp_cycles()), **inst.node_res_estimation(part)}
            cycles[node.name] = int(units[node.name]["cycles"])
    path: dict[str, int] = {}                   # longest path of node cycles ending at each tensor
    for node in model.graph.node:
        here = max((path.get(t, 0) for t in node.input), default=0) + cycles.get(node.name, 0)
        for t in node.output:
            path[t] = here
    worst = max(cycles, key=lambda k: cycles[k]) if cycles else ""
    fps = 1e9 / (clk_ns * cycles[worst]) if worst and cycles[worst] else 0.0
    _write(report / "estimate_bnhw_units.json", units)
    _write(report / "estimate_network_performance_bnhw.json", {
        "critical_path_cycles": max(path.values(), default=0), "max_cycles": cycles.get(worst, 0),
        "max_cycles_node_name": worst, "estimated_throughput_fps": fps,
        "estimated_latency_ns": max(path.values(), default=0) * clk_ns, "nodes": len(cycles),
        "bnhw_units": len(units)})
    return model


# ----------------------------------------------------------------------------- FIFO sizing as a FINN step
def _dataflow_nodes(model) -> list:
    """The HW nodes of a FINN graph as :class:`~bnhw.hw.sim.dataflow_netlist.DataflowNode` records (FINN's
    folded stream shapes and datatypes, its expected cycles); a non-HW node is a one-line error."""
    from qonnx.custom_op.registry import getCustomOp

    from .sim.dataflow_netlist import DataflowNode

    produced = {t for n in model.graph.node for t in n.output}
    first_input = model.graph.input[0].name
    out = []
    for node in model.graph.node:
        if not _is_hw(node):
            raise BnhwError(f"{node.name}: {node.op_type} is not a FINN HW node; FIFO sizing needs the dataflow "
                            "partition (run it after step_create_dataflow_partition and step_specialize_layers)")
        inst = getCustomOp(node)
        ins = [i for i, t in enumerate(node.input)
               if t and model.get_initializer(t) is None and (t in produced or t == first_input)]
        attrs = {a.name: inst.get_nodeattr(a.name) for a in node.attribute
                 if a.name in inst.get_nodeattr_types()}
        out.append(DataflowNode(
            name=node.name, op_type=node.op_type, inputs=[node.input[i] for i in ins], outputs=list(node.output),
            attrs=attrs, in_folded=[tuple(int(d) for d in inst.get_folded_input_shape(i)) for i in ins],
            out_folded=[tuple(int(d) for d in inst.get_folded_output_shape(q)) for q in range(len(node.output))],
            in_bits=[int(inst.get_input_datatype(i).bitwidth()) for i in ins],
            out_bits=[int(inst.get_output_datatype(q).bitwidth()) for q in range(len(node.output))],
            exp_cycles=int(inst.get_exp_cycles()), extra={"input_index": ins}))
    return out


def bnhw_fifo_depths_step(frames: int = 5, max_seconds: float = 300.0) -> Callable[[Any, Any], Any]:
    """A FINN builder step sizing the FIFOs of any FINN dataflow graph with bnhw's cycle simulator, in place of
    FINN's RTL-simulation sizing (``auto_fifo_depths``, which needs Vivado's simulator and hours on a large net).
    Put it after the folding (``step_apply_folding_config`` / ``step_minimize_bit_width``) and before
    ``step_generate_hardware`` (or ``step_hw_codegen``).

    The step inserts FINN's width converters into a copy of the graph (``InsertDWC``, as FINN's FIFO step will),
    elaborates it into the simulator's netlist (:mod:`bnhw.hw.sim.dataflow_netlist`: the schedule bnhw models for
    each FINN op), sizes every FIFO to the smallest depth that keeps the unbounded-FIFO II
    (:func:`bnhw.hw.sim.fifo_sizing.size_fifos`, ``frames`` frames, at most ``max_seconds``), and writes the depths
    into the graph as FINN's ``inFIFODepths`` / ``outFIFODepths``.  It then makes FINN's FIFO step keep them:
    ``cfg.auto_fifo_depths`` off and ``cfg.fifo_config_file`` set to a file naming the FIFOs FINN will insert
    (:func:`bnhw.hw.finn_build.finn_fifo_depths`).  Writes ``report/bnhw_fifo_sizing.json`` (every FIFO with its
    depth and the II with one slot less, the II with unbounded and sized FIFOs, FINN's slowest node's cycles) and
    ``bnhw_fifo_depths.json`` (FINN's ``fifo_config_file`` format) into ``cfg.output_dir``."""

    def step_bnhw_fifo_depths(model, cfg):
        import logging

        from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
        from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
        from qonnx.custom_op.registry import getCustomOp

        from .finn_build import finn_fifo_depths
        from .sim.dataflow_netlist import elaborate_dataflow
        from .sim.fifo_sizing import size_fifos

        log = logging.getLogger("bnhw.finn_steps")
        b = _board_of(cfg)
        with_dwcs = model.transform(InsertDWC()).transform(SpecializeLayers(b.part))
        nodes = _dataflow_nodes(with_dwcs)
        net = elaborate_dataflow(nodes, with_dwcs.graph.input[0].name, with_dwcs.graph.output[0].name)
        sized = size_fifos(net, frames=frames, max_seconds=max_seconds, progress=lambda s: log.info("bnhw FIFO sizing: %s", s))
        by_name = {n.name: n for n in model.graph.node}
        index = {n.name: n.extra["input_index"] for n in nodes}
        rows = []
        for f, d in zip(net.fifos, sized.depths):
            src, dst = net.units[f.src], net.units[f.dst]
            depth = max(2, int(d))
            if src.name in by_name:
                _set_depth(getCustomOp(by_name[src.name]), "outFIFODepths", src.outs.index(net.fifos.index(f)), depth)
            if dst.node in by_name:                 # a node simulated as several units: its ports name the input
                pos = dst.ins.index(net.fifos.index(f))
                port = dst.ports[pos] if dst.ports else pos
                if port >= 0:
                    _set_depth(getCustomOp(by_name[dst.node]), "inFIFODepths", index[dst.node][port], depth)
            rows.append({"fifo": f.name, "depth": int(d), "words_per_frame": f.words, "width_bits": f.width * f.bits})
        out = Path(cfg.output_dir)
        (out / "report").mkdir(parents=True, exist_ok=True)
        tmp = out / "bnhw_fifo_sizing_model.onnx"
        model.save(str(tmp))
        depths = finn_fifo_depths(tmp, b.part, str(getattr(cfg.large_fifo_mem_style, "value", "auto")),
                                  lut_per_bram18(b))
        tmp.unlink()
        if "error" in depths:
            raise BnhwError(f"step_bnhw_fifo_depths: {depths['error']}")
        path = out / "bnhw_fifo_depths.json"
        _write(path, depths)
        cfg.auto_fifo_depths = False
        cfg.fifo_config_file = path.resolve()
        _write(out / "report" / "bnhw_fifo_sizing.json", {
            "how": "bnhw's cycle simulator on FINN's graph with FINN's width converters (each unit scheduled as "
                   "bnhw models its FINN op; modelled, not RTL simulation): the smallest depth per FIFO keeping "
                   "the unbounded-FIFO II",
            "ii_unbounded": sized.ii_unbounded, "ii_sized": sized.ii_sized,
            "finn_max_exp_cycles": max((n.exp_cycles for n in nodes), default=0),
            "runs": sized.runs, "seconds": round(sized.seconds, 2), "complete": sized.complete,
            "fifos": rows, "finn_fifos": depths["fifo_depths"]})
        return model

    return step_bnhw_fifo_depths


def _set_depth(inst, attr: str, k: int, depth: int) -> None:
    cur = [int(x) for x in inst.get_nodeattr(attr)]
    cur += [2] * (k + 1 - len(cur))
    cur[k] = depth
    inst.set_nodeattr(attr, cur)


#: the FIFO-sizing step for ``DataflowBuildConfig.steps`` (5 frames, at most 300 s)
step_bnhw_fifo_depths = bnhw_fifo_depths_step()
