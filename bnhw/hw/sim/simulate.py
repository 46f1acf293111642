"""Run the cycle simulator on a folded graph and summarise what happened.

:func:`simulate` elaborates the graph (:mod:`.netlist`), runs the C core
(:mod:`.engine`) for a number of back-to-back frames and returns a
:class:`SimResult`: per-unit busy / starved / stalled cycles, per-FIFO peak
occupancy, the steady-state initiation interval (from the spacing of the
last frames' completions), FPS at the clock, the first-output and frame
latencies with a breakdown of where the first output's latency comes from,
and (functional mode) the output of every frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ...errors import BnhwError
from ..ir import HwGraph
from .engine import S_FIELDS, UNBOUNDED, RawRun, run_engine
from .netlist import Netlist, SimError, Unit, elaborate

__all__ = ["simulate", "SimResult", "steady_ii", "resolve_depths", "latency_path"]


@dataclass
class SimResult:
    graph: str
    frames: int
    clock_mhz: float
    cycles: int                          # until the last output word of the last frame left
    deadlock: bool
    ii_cycles: float | None              # steady-state initiation interval (None: < 2 frames, or deadlock)
    first_output_cycles: int             # first output word of frame 0, from the first input word
    frame_latency_cycles: int            # frame 0's last output word, from its first input word
    frame_done: list[int]
    units: list[dict] = field(default_factory=list)
    fifos: list[dict] = field(default_factory=list)
    latency_path: list[dict] = field(default_factory=list)
    analytic_ii: int = 0                 # largest FINN per-unit cycle count
    outputs: np.ndarray | None = None    # functional mode: (frames, *out shape)

    @property
    def fps(self) -> float:
        return 0.0 if not self.ii_cycles else self.clock_mhz * 1e6 / self.ii_cycles

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("outputs")
        d["fps"] = self.fps
        return d


def steady_ii(frame_done: np.ndarray) -> float | None:
    """Mean completion spacing over the second half of the frames (the pipeline has filled)."""
    fd = np.asarray(frame_done, dtype=np.int64)
    if fd.size < 2 or np.any(fd < 0):
        return None
    k = max(1, (fd.size - 1) // 2)
    return float(fd[-1] - fd[-1 - k]) / k


def resolve_depths(net: Netlist, depths) -> list[int]:
    """``None`` / ``"unbounded"``: never full; an int: every FIFO; a list: per FIFO; a dict: by FIFO
    name (others unbounded)."""
    n = len(net.fifos)
    if depths is None or (isinstance(depths, str) and depths == "unbounded"):
        return [UNBOUNDED] * n
    if isinstance(depths, int):
        return [int(depths)] * n
    if isinstance(depths, dict):
        out = [UNBOUNDED] * n
        names = {f.name: i for i, f in enumerate(net.fifos)}
        for k, v in depths.items():
            if k not in names:
                raise SimError(f"no FIFO named {k!r} in this netlist")
            out[names[k]] = int(v)
        return out
    d = [int(x) for x in depths]
    if len(d) != n:
        raise SimError(f"{len(d)} FIFO depths for {n} FIFOs")
    return d


def _why(net: Netlist, u: Unit) -> str:
    """Why a unit's first output comes when it does (its fill condition)."""
    ip = u.iparams
    if u.kind == "router":
        assert u.need is not None          # every router has its per-word input needs
        if u.finn_op == "ConvolutionInputGenerator_rtl":
            return (f"window buffer fills first: {int(u.need[0])} input words (the rows and pixels under the "
                    f"first window) before the first output word")
        if u.finn_op == "StreamingDataWidthConverter_rtl":
            return f"collects {int(u.need[0])} input word(s) for its first output word"
        if u.finn_op == "FMPadding_rtl":
            return "emits padding at once; interior words as they arrive"
        return f"needs {int(u.need[0])} input word(s) for its first output word"
    if u.kind != "loop":
        return ""
    if u.op == "mvau":
        return (f"reads one input vector ({ip['SFG']} words of {ip['SIMD']}) while computing the first "
                f"{ip['PE']} outputs, then a {u.latency}-cycle pipeline")
    if u.op == "vvau":
        return f"reads {ip['TC']} words per output word, {u.latency}-cycle pipeline"
    if u.op == "gap":
        return f"accumulates the whole frame ({ip['pixels']} pixels x {ip['C'] // ip['PE']} words) first"
    if u.op == "label":
        return "reads every class score before choosing"
    if u.op in ("poolmax", "poolsum", "poolavg"):
        return f"reads the {ip['KK']} taps of a window per output word"
    if u.op == "concat":
        return "copies one word of one of its inputs per cycle, the inputs in turn"
    return f"one word in, one word out, {u.latency}-cycle pipeline"


def latency_path(net: Netlist, raw: RawRun) -> list[dict]:
    """The chain of units that decided when the first output word left, from input to output.

    Walks back from the output DMA through, at each unit, the input whose first word arrived last
    (the one it waited for)."""
    fw = raw.unit_stats[:, S_FIELDS.index("first_write")]
    fr = raw.unit_stats[:, S_FIELDS.index("first_read")]
    idx = {id(u): i for i, u in enumerate(net.units)}
    k = idx[id(net.unit("output_dma"))]
    chain = []
    seen = set()
    while k not in seen:
        seen.add(k)
        u = net.units[k]
        chain.append(k)
        if not u.ins:
            break
        srcs = [net.fifos[f].src for f in u.ins]
        k = max(srcs, key=lambda s: fw[s])
    chain.reverse()
    out = []
    prev = 0
    for k in chain:
        u = net.units[k]
        t = int(fw[k]) if u.kind != "sink" else int(fr[k])
        out.append({"unit": u.name, "node": u.node, "finn_op": u.finn_op, "first_input": int(fr[k]),
                    "first_output": t, "adds": t - prev, "why": _why(net, u)})
        prev = t
    return out


def simulate(g: HwGraph | Netlist, frames: int = 10, *, depths=None, inputs: np.ndarray | None = None,
             clock_mhz: float = 100.0, max_cycles: int | None = None) -> SimResult:
    """Simulate ``frames`` back-to-back frames of the folded graph ``g``.

    ``depths``: FIFO depths (see :func:`resolve_depths`; default unbounded).  ``inputs``
    ``(frames, H, W, C)`` integer frames switch on the functional mode: the outputs are returned in
    ``SimResult.outputs`` with the graph output's shape.
    """
    net = g if isinstance(g, Netlist) else elaborate(g)
    graph = net.graph
    if graph is None:
        raise BnhwError("simulate: a netlist elaborated from a FINN graph is for FIFO sizing (timing) only")
    if frames < 1:
        raise BnhwError("simulate: frames must be >= 1")
    d = resolve_depths(net, depths)
    flat = None
    if inputs is not None:
        x = np.asarray(inputs)
        shape = tuple(graph.streams[graph.input].shape)
        if x.ndim == 3:
            x = x[None]
        if tuple(x.shape[1:]) != shape:
            raise BnhwError(f"simulate: inputs must be [N, {', '.join(map(str, shape))}], got {list(x.shape)}")
        if x.shape[0] != frames:
            raise BnhwError(f"simulate: {x.shape[0]} input frames for frames={frames}")
        flat = x.reshape(frames, -1)
    raw = run_engine(net, d, frames, inputs=flat, max_cycles=max_cycles)
    st = raw.unit_stats
    col = {k: i for i, k in enumerate(S_FIELDS)}
    units = []
    for i, u in enumerate(net.units):
        if u.kind in ("source", "sink") and u.name not in ("input_dma", "output_dma"):
            continue
        s = {k: int(st[i, c]) for k, c in col.items()}
        units.append({"name": u.name, "node": u.node, "kind": u.kind, "finn_op": u.finn_op,
                      "analytic_cycles": int(u.analytic_cycles),
                      "busy_per_frame": s["busy"] / frames, **s,
                      "idle": max(0, (raw.cycles if raw.cycles >= 0 else raw.deadlock_cycle) + 1
                                  - s["busy"] - s["starved"] - s["stalled"]),
                      "note": u.note})
    fifos = [{"name": f.name, "stream": f.stream, "width": f.width, "bits": f.bits * f.width,
              "depth": (None if dd == UNBOUNDED else int(dd)), "max_occupancy": int(raw.fifo_max[i])}
             for i, (f, dd) in enumerate(zip(net.fifos, d))]
    deadlock = raw.cycles == -1
    if raw.cycles == -2:
        raise BnhwError(f"simulation of {graph.name!r} did not finish within {max_cycles} cycles")
    out = None
    if raw.output is not None and not deadlock:
        out = raw.output.astype(np.int64).reshape((frames, *graph.streams[graph.output].shape))
    from ..ops import node_cycles
    analytic = max([node_cycles(graph, n) for n in graph.nodes] + [0])
    src = net.unit("input_dma")
    t0 = int(st[net.units.index(src), col["first_write"]])
    sink_i = net.units.index(net.unit("output_dma"))
    first_out = int(st[sink_i, col["first_read"]])
    return SimResult(
        graph=graph.name, frames=frames, clock_mhz=float(clock_mhz), cycles=int(raw.cycles), deadlock=deadlock,
        ii_cycles=None if deadlock else steady_ii(raw.frame_done),
        first_output_cycles=(first_out - t0) if first_out >= 0 else -1,
        frame_latency_cycles=(int(raw.frame_done[0]) - t0 + 1) if raw.frame_done[0] >= 0 else -1,
        frame_done=[int(v) for v in raw.frame_done], units=units, fifos=fifos,
        latency_path=[] if deadlock else latency_path(net, raw), analytic_ii=int(analytic), outputs=out)


class SimRefine:
    """``refine`` hook of :func:`bnhw.hw.estimate.estimate_fpga`: the simulated steady-state II and
    single-frame latency (unbounded FIFOs, ``frames`` back to back) instead of the analytical ones."""

    label = "cycle simulator (unbounded FIFOs)"

    def __init__(self, frames: int = 3):
        self.frames = int(frames)

    def __call__(self, g: HwGraph) -> dict:
        r = simulate(g, self.frames)
        if r.ii_cycles is None:
            raise SimError(f"{g.name}: the cycle simulation of {self.frames} frames has no steady state "
                           "(a deadlock, or fewer than 2 frames)")
        return {"ii_cycles": float(r.ii_cycles), "latency_cycles": int(r.frame_latency_cycles)}
