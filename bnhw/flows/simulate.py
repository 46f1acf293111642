"""``bnhw sim``: cycle-simulate a built accelerator (its ``hw_graph.json``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import BnhwError
from .inputs import load_hw_graph, resolve


def fifo_depths(net, fifos: str, echo):
    from ..hw.sim.fifo_sizing import size_fifos

    if fifos == "unbounded":
        return None
    if fifos == "sized":
        return size_fifos(net, progress=lambda s: echo(f"FIFO sizing: {s}")).depths
    if fifos.isdigit():
        if int(fifos) < 1:
            raise BnhwError("--fifos: a depth must be >= 1")
        return int(fifos)
    p = Path(fifos)
    if not p.is_file():
        raise BnhwError(f"--fifos {fifos!r}: give 'unbounded', 'sized', a depth, or a FIFO config file")
    try:
        cfg = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise BnhwError(f"{p}: not JSON ({e.msg})") from None
    if not isinstance(cfg, dict):
        raise BnhwError(f"{p}: not a FIFO config (a JSON object of units)")
    depths = []
    for i, f in enumerate(net.fifos):
        # the FIFO between two units is the consumer's input; the one into the output DMA (a sink,
        # which FINN's config does not list) is the producer's output
        u = net.units[f.dst]
        key, ports = "inFIFODepths", u.ins
        if u.kind in ("source", "sink"):
            u = net.units[f.src]
            key, ports = "outFIFODepths", u.outs
        # a node simulated as several units (a concat of more than three streams): the node's entry lists its
        # inputs (u.ports says which), the stream between its units is internal to the FINN node (depth 2)
        name, slot = u.name, ports.index(i)
        if u.ports:
            name = u.node
            if key == "inFIFODepths":
                slot = u.ports[slot]
            elif u.name != u.node:
                slot = -1
            if slot < 0:
                depths.append(2)
                continue
        entry = cfg.get(name, {})
        listed = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(listed, list) or not 0 <= slot < len(listed) \
                or (not u.ports and len(listed) != len(ports)):
            raise BnhwError(f"{p}: no {key} for unit {name!r} (write it with `bnhw build`)")
        try:
            d = int(listed[slot])
        except (TypeError, ValueError):
            raise BnhwError(f"{p}: {u.name}.{key} must be integers") from None
        if d < 1:
            raise BnhwError(f"{p}: {u.name}.{key}: a depth must be >= 1")
        depths.append(d)
    return depths


def sim_command(graph: Path, *, frames: int, fifos: str, clock_mhz: float, as_json: bool,
                echo: Callable[[str], None] = print) -> dict:
    from ..hw.sim.netlist import elaborate
    from ..hw.sim.simulate import simulate

    g = load_hw_graph(resolve(graph, "sim"))
    net = elaborate(g)
    # with --json, stdout is the JSON alone: progress goes to stderr
    progress = (lambda s: print(s, file=sys.stderr)) if as_json else echo
    r = simulate(net, frames, depths=fifo_depths(net, fifos, progress), clock_mhz=clock_mhz)
    d = r.to_dict()
    if as_json:
        echo(json.dumps(d, indent=1))
        return d
    if r.deadlock:
        raise BnhwError(f"the accelerator deadlocks with these FIFO depths ({fifos}): no unit can move; "
                        "make the FIFOs deeper (--fifos sized finds the smallest that keep the throughput)")
    ii = f"{r.ii_cycles:,.0f}" if r.ii_cycles else "n/a (one frame)"
    echo(f"{g.name}: {len(net.units)} units, {len(net.fifos)} FIFOs ({fifos}), {frames} frames, "
         f"{r.cycles + 1:,} cycles simulated")
    echo(f"II {ii} cycles (largest analytical unit: {r.analytic_ii:,}) -> {r.fps:,.1f} FPS at {clock_mhz:g} MHz; "
         f"first output after {r.first_output_cycles:,} cycles, frame latency {r.frame_latency_cycles:,} cycles "
         f"({r.frame_latency_cycles / clock_mhz:,.1f} us)")
    echo(f"{'unit':<40} {'FINN op':<32} {'analytical':>10} {'busy/frame':>10} {'starved':>9} {'stalled':>9}")
    for u in r.units:
        echo(f"{u['name']:<40} {u['finn_op']:<32} {u['analytic_cycles']:>10,} {u['busy_per_frame']:>10,.0f} "
             f"{u['starved']:>9,} {u['stalled']:>9,}")
    return d
