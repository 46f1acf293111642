"""FIFO sizing by simulation: the smallest depths that keep the unbounded throughput.

FINN sizes FIFOs with an RTL simulation of the whole accelerator (hours for a
large network, and it needs Vivado's simulator); bnhw runs its cycle
simulator instead:

1. simulate with unbounded FIFOs: the reference steady-state II and every
   FIFO's peak occupancy (a depth equal to the peak reproduces that run
   exactly);
2. set all deeper FIFOs to 2 together, splitting the group in halves wherever
   that costs throughput (group testing: ``k`` FIFOs that need more cost
   about ``k log n`` simulations, not ``n``);
3. binary-search each FIFO that needs more than 2 down to the smallest depth
   that keeps the II, the others held at their current depths;
4. lower the depth-2 FIFOs to 1 the same way.

Every FIFO's depth ``d`` comes with evidence: a simulation in which it had
``d - 1`` slots, the others at least their final depths, and the II got worse
(or the accelerator deadlocked).  The II is monotone in every depth (a max-plus
system), so that evidence also holds at the final depths: the result is
*locally minimal*, no single FIFO can lose a slot.  ``verify=True`` re-runs
the check for every FIFO at the final depths instead of relying on
monotonicity.

Depths are in words of the FIFO's stream.  A depth of 1 or 2 costs nothing:
FINN does not instantiate FIFOs that shallow (the AXI-stream handshake between
two units already buffers that much); deeper ones are costed with FINN's
``fifo.sv`` model (:mod:`bnhw.hw.fifo_cost`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..fifo_cost import build_style, fifo_cost, padded_width
from .engine import UNBOUNDED, run_engine
from .netlist import Netlist
from .simulate import steady_ii

__all__ = ["FifoSizing", "size_fifos", "fifo_resources", "finn_fifo_config", "finn_unit_names"]

Progress = Callable[[str], None]


@dataclass
class FifoSizing:
    depths: list[int]
    ii_unbounded: float
    ii_sized: float
    frames: int
    runs: int
    peak: list[int]                                  # peak occupancy with unbounded FIFOs
    # II with that FIFO one slot smaller (None: deadlocked, or still running at twice the unbounded
    # first-frame latency plus one II per frame, i.e. throughput lost)
    one_less: list[float | None] = field(default_factory=list)
    verified: bool = False
    complete: bool = True                            # False: the time budget ran out (depths safe, not minimal)
    seconds: float = 0.0

    def minimal_everywhere(self) -> bool:
        """Every FIFO deeper than 1 loses throughput (or deadlocks) with one slot less."""
        return self.complete and all(d <= 1 or (v is None or v > self.ii_unbounded)
                                     for d, v in zip(self.depths, self.one_less))


class _Runner:
    """Runs trials; a trial still running at ``cap`` cycles has lost throughput (or deadlocked): it is
    stopped there and counts as a failure (``None``), so a bad trial costs no more than a good one."""

    def __init__(self, net: Netlist, frames: int, say: Progress):
        self.net, self.frames, self.runs, self.say = net, frames, 0, say
        self.cap: int | None = None
        self.t0 = time.time()

    def ii(self, depths) -> float | None:
        self.runs += 1
        if self.runs % 50 == 0:
            self.say(f"{self.runs} simulations, {time.time() - self.t0:.0f} s")
        raw = run_engine(self.net, list(depths), self.frames, max_cycles=self.cap)
        return None if raw.cycles < 0 else steady_ii(raw.frame_done)


def size_fifos(net: Netlist, *, frames: int = 5, verify: bool = False, max_seconds: float | None = None,
               progress: Progress | None = None) -> FifoSizing:
    """Smallest FIFO depths keeping the unbounded-FIFO II (see the module docstring)."""
    say = progress or (lambda s: None)
    r = _Runner(net, frames, say)
    t0 = time.time()
    raw = run_engine(net, [UNBOUNDED] * len(net.fifos), frames)
    r.runs += 1
    ref = steady_ii(raw.frame_done)
    if ref is None:
        raise ValueError("FIFO sizing needs at least 2 frames and a run that finishes")
    # a trial keeping the II finishes one II per frame after its first frame; allow the first frame
    # twice the unbounded latency before calling the trial a failure
    r.cap = int(2 * raw.frame_done[0] + (frames + 1) * ref) + 1000
    peak = [max(1, int(v)) for v in raw.fifo_max]

    def ok(d) -> bool:
        v = r.ii(d)
        return v is not None and v <= ref + 1e-9

    # start from the peaks of a run whose input arrives one frame per II: unthrottled, the input DMA
    # runs ahead and every FIFO before the bottleneck fills with frames that merely wait
    thr = run_engine(net, [UNBOUNDED] * len(net.fifos), frames, period=int(math.ceil(ref)))
    r.runs += 1
    depths = [max(1, int(v)) for v in thr.fifo_max]
    if not ok(depths):
        depths = list(peak)
        if not ok(depths):                  # cannot happen: the peak run never blocks a write
            raise RuntimeError("internal: peak-occupancy depths do not reproduce the unbounded run")
    say(f"unbounded II {ref:.0f} cycles; {len(depths)} FIFOs, peak occupancy up to {max(peak)} "
        f"({max(depths)} with the input paced at one frame per II)")
    out_of_time = [False]

    def timed_out() -> bool:
        if max_seconds is not None and time.time() - t0 > max_seconds:
            out_of_time[0] = True
        return out_of_time[0]

    # evidence of minimality: the II seen with a FIFO one slot below its final depth (others at depths
    # >= their final ones; throughput is monotone in every depth, so the evidence stays valid)
    fails: dict[tuple[int, int], float | None] = {}

    def lower_group(idx: list[int], target: int) -> None:
        """Set the FIFOs ``idx`` to ``target`` where that keeps the II (group testing, halves on failure)."""
        if not idx or timed_out():
            return
        trial = list(depths)
        for i in idx:
            trial[i] = target
        v = r.ii(trial)
        if v is not None and v <= ref + 1e-9:
            for i in idx:
                depths[i] = target
            return
        if len(idx) == 1:
            fails[(idx[0], target)] = v
            return
        h = len(idx) // 2
        lower_group(idx[:h], target)
        lower_group(idx[h:], target)

    def shrink(i: int) -> None:
        lo, hi = 1, depths[i]                # hi is known to be good
        while lo < hi and not timed_out():
            mid = (lo + hi) // 2
            trial = list(depths)
            trial[i] = mid
            v = r.ii(trial)
            if v is not None and v <= ref + 1e-9:
                hi = mid
            else:
                fails[(i, mid)] = v
                lo = mid + 1
        depths[i] = hi

    # 2. every FIFO to 2 where possible (most need no more than the handshake), by group testing
    lower_group([i for i, d in enumerate(depths) if d > 2], 2)
    # 3. binary search the ones that need more, deepest first
    deep = sorted((i for i, d in enumerate(depths) if d > 2), key=lambda i: -depths[i])
    say(f"{len(deep)} FIFOs need more than 2 slots; searching their depths")
    for i in deep:
        shrink(i)
    # 4. the depth-2 ones to 1 where that keeps the II
    lower_group([i for i, d in enumerate(depths) if d == 2], 1)
    one_less: list[float | None] = [None] * len(depths)
    for i, d in enumerate(depths):
        if d > 1 and not timed_out():
            if (i, d - 1) not in fails:      # 2 came from the peak: test 1 alone
                trial = list(depths)
                trial[i] = d - 1
                fails[(i, d - 1)] = r.ii(trial)
            one_less[i] = fails[(i, d - 1)]
    verified = False
    if verify and not timed_out():                               # re-check every FIFO one slot smaller with the final depths
        for i, d in enumerate(depths):
            if d > 1:
                trial = list(depths)
                trial[i] = d - 1
                one_less[i] = r.ii(trial)
        verified = True
    final = r.ii(depths)
    say(f"sized: {sum(1 for d in depths if d > 2)} FIFOs deeper than 2, II {final:.0f} ({r.runs} runs)")
    if out_of_time[0]:
        say(f"time budget of {max_seconds:g} s used up: the remaining FIFOs keep safe (not minimal) depths")
    return FifoSizing(depths, ref, float(final) if final is not None else float("inf"), frames, r.runs, peak,
                      one_less, verified, complete=not out_of_time[0], seconds=time.time() - t0)


def fifo_resources(net: Netlist, depths: list[int], style: str = "auto",
                   lut_per_bram18: float | None = None) -> list[dict]:
    """FINN's cost of every FIFO at ``depths`` (depth <= 2: not instantiated, free), each in the memory style a build
    requests for it (:func:`~bnhw.hw.fifo_cost.build_style`): ``style`` for the FIFOs ``fifo.sv`` would put in
    block RAM / URAM (FINN's ``large_fifo_mem_style``: ``"block"`` on a part without URAM), and with
    ``lut_per_bram18`` (:func:`~bnhw.hw.boards.lut_per_bram18`) block RAM for the LUTRAM ones where that saves
    more LUTs per RAMB18 than the board's exchange rate."""
    out = []
    for f, d in zip(net.fifos, depths):
        w = padded_width(f.width * f.bits)
        want = build_style(int(d), w, style, lut_per_bram18) if d > 2 else "none"
        c = fifo_cost(int(d), w, want) if want != "none" else None
        out.append({"name": f.name, "depth": int(d), "width_bits": w, "ram_style": want,
                    "style": c.style if c else "none", "bram18": c.bram18 if c else 0,
                    "uram": c.uram if c else 0, "lut": c.lut if c else 0})
    return out


def finn_unit_names(net: Netlist, nodes: list[dict[str, str]] | None = None) -> dict[str, str]:
    """Simulated unit -> the name finn-plus's builder gives the same FINN op (:func:`bnhw.hw.ops.finn_graph_ops`):
    the k-th unit of an IR node modelling FINN op type T is the k-th T op of that node.  ``nodes``: the FINN graph
    is bnhw's IR exported (:attr:`bnhw.hw.finn_export.FinnExport.nodes`), whose bnhw units (AddRequant, ...,
    GroupedMVAU) stand for one IR node each, or for one FINN op of it (ValuePadding: the FMPadding_rtl of a
    max pool's window generator).  Width converters and the DMAs are not listed (FINN inserts and names
    its own)."""
    from ..ops import finn_graph_ops

    if nodes is not None:
        rows = [(r["finn"], r["ir"], r.get("models", r["final"])) for r in nodes]   # the FINN op each stands for
    elif net.graph is not None:
        rows = [(name, ir, op.op_type) for name, ir, op in finn_graph_ops(net.graph)]
    else:
        raise ValueError("finn_unit_names: a netlist from a FINN graph already has FINN's names")
    pending: dict[tuple[str, str], list[str]] = {}
    per_node: dict[str, list[str]] = {}
    for name, ir, t in rows:
        pending.setdefault((ir, t), []).append(name)
        per_node.setdefault(ir, []).append(name)
    sim_units: dict[str, int] = {}
    for u in net.units:
        if u.kind not in ("source", "sink"):
            sim_units[u.node] = sim_units.get(u.node, 0) + 1
    out: dict[str, str] = {}
    given: dict[tuple[str, str], str] = {}
    for u in net.units:
        if u.kind in ("source", "sink"):
            continue
        names = pending.get((u.node, u.finn_op))
        if names:
            out[u.name] = given[(u.node, u.finn_op)] = names.pop(0)
        elif u.ports and (u.node, u.finn_op) in given:       # a further unit of one FINN node (a long concat)
            out[u.name] = given[(u.node, u.finn_op)]
        elif len(per_node.get(u.node, [])) == 1 and sim_units[u.node] == 1:    # a bnhw unit for the node
            out[u.name] = per_node[u.node][0]
    return out


def finn_fifo_config(net: Netlist, depths: list[int], folding: dict | None = None,
                     names: dict[str, str] | None = None) -> dict:
    """A FINN folding config with ``inFIFODepths`` / ``outFIFODepths`` per unit (FINN's attribute names;
    the FIFO between two units is listed as the consumer's input and the producer's output).  With ``names``
    (:func:`finn_unit_names`) the units are keyed by finn-plus's node names and the others left out."""
    cfg: dict = {"Defaults": {}}
    for k, v in (folding or {}).items():
        cfg[k] = dict(v)
    for u in net.units:
        if u.kind in ("source", "sink") or (names is not None and u.name not in names):
            continue
        # the units of one node built as several (a long concat) share the node's entry
        e = cfg.setdefault(names[u.name] if names is not None else u.node if u.ports else u.name, {})
        # FINN instantiates no FIFO of depth <= 2 (the stream handshake between two units, which
        # bnhw simulates as depth 2); 1 is written as 2, which is never slower
        if u.ports:                              # one of several units of a FINN node: its ports say which inputs
            ins = e.setdefault("inFIFODepths", [])
            for f, port in zip(u.ins, u.ports):
                if port >= 0:
                    ins.extend([2] * (port + 1 - len(ins)))
                    ins[port] = max(2, int(depths[f]))
            if u.name == u.node:                 # the last unit writes the node's output
                e["outFIFODepths"] = [max(2, int(depths[f])) for f in u.outs]
            continue
        e["inFIFODepths"] = [max(2, int(depths[f])) for f in u.ins]
        e["outFIFODepths"] = [max(2, int(depths[f])) for f in u.outs]
    return cfg


def depth_summary(depths: list[int]) -> dict:
    d = np.asarray(depths)
    return {"fifos": int(d.size), "deeper_than_2": int((d > 2).sum()), "max": int(d.max()) if d.size else 0,
            "total_words": int(d.sum())}
