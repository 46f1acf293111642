"""FPGA estimate of a network *with* its stream FIFOs: what a cell network's branches cost in buffering.

:func:`bnhw.hw.estimate.estimate_fpga` folds the lowered IR for the board and prices the compute units
with FINN's analytical models; it sees no FIFOs.  A chain network needs none worth counting, but a cell
network does: a skip path (the inter-cell skip, an identity edge, a short branch next to a deep one)
must hold every word its sibling branch has not consumed yet before the concatenation or the add
joins them, and that buffer is exactly what an OPs count (and a unit-by-unit estimate) misses.

:func:`estimate_with_fifos` adds it the way ``bnhw build`` does, on the same folded graph:

1. the estimate (cached) and its folding applied to the spec's hardware IR
   (:func:`~bnhw.hw.estimate.spec_hw_graph` + :meth:`~bnhw.hw.ir.HwGraph.with_folding`);
2. the cycle simulator's netlist of it, FIFOs sized by simulation to the smallest depths keeping the
   unbounded-FIFO II (:func:`bnhw.hw.sim.fifo_sizing.size_fifos`, with a time budget: when it runs
   out the depths are safe, not minimal);
3. every FIFO deeper than 2 priced with FINN's ``fifo.sv`` model in the memory style a build requests for it
   (:func:`~bnhw.hw.fifo_cost.build_style`: the board's large-FIFO style for the ones ``fifo.sv`` puts in
   BRAM / URAM, block RAM for LUTRAM ones where that saves more LUTs per RAMB18 than the board's exchange rate;
   :func:`~bnhw.hw.sim.fifo_sizing.fifo_resources`) and added to the units' resources, with the
   LUTs of the stream width converters the netlist needs (:func:`~bnhw.hw.sim.netlist.width_converters`),
   as ``bnhw build`` totals them;
4. the design fits only if units + FIFOs are within the board (the folding's ``margin`` applies to the
   units only, as in ``bnhw build``); when the FIFOs push it over, the units are folded again with the
   margin lowered by the FIFOs' share of the resource that overflowed (at most :data:`REFITS` times; a margin
   the units alone then do not fit is raised halfway back towards the last one that overflowed), a slower
   design that leaves the buffers room; one that still does not fit gets FPS 0.

The FPS stays the folded design's (the sized FIFOs keep the unbounded II by construction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..spec import ArchSpec

__all__ = ["BufferedEstimate", "estimate_with_fifos", "MODELLED", "REFITS"]

#: how often the units are folded again, with a smaller margin, when their FIFOs push the design over (or, when
#: that margin left the units themselves no room, with one halfway back)
REFITS = 3

#: what the buffered estimate models, for reports
MODELLED = ("units: bnhw's folding of the lowered IR for the board with FINN's analytical cycle/resource models "
            "(as `bnhw build`); branch buffering: stream FIFOs sized by bnhw's cycle simulator to the smallest "
            "depths keeping the II, priced with FINN's fifo.sv model (in the memory style the build requests) and added to the units' resources, plus the "
            "stream width converters' LUTs; the network with seeded fresh weights (BN statistics on digits); the "
            "DMA shell is not counted; when the FIFOs overflow the board the units are folded again within a "
            "smaller margin")


@dataclass
class BufferedEstimate:
    estimate: Any                                   # the units' FpgaEstimate
    fits: bool                                      # units + FIFOs within the board
    fps: float                                      # 0 when it does not fit
    latency_ms: float                               # inf when it does not fit
    fifo_bram18: float = 0.0
    fifo_lut: float = 0.0
    fifo_uram: float = 0.0
    fifos: int = 0
    deep_fifos: int = 0                             # deeper than 2 (instantiated)
    max_depth: int = 0
    fifo_words: int = 0
    sizing_complete: bool = True
    sizing_seconds: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)     # units + FIFOs
    reason: str = ""
    margin: float = 0.85                            # the units' folding margin finally used
    dwc_lut: float = 0.0                            # stream width converters (bnhw's netlist, as the build)

    def to_dict(self) -> dict:
        return {"fits": self.fits, "fps": self.fps, "latency_ms": self.latency_ms if self.fits else None,
                "resources_with_fifos": self.resources,
                "fifo": {"bram18": self.fifo_bram18, "lut": self.fifo_lut, "uram": self.fifo_uram,
                         "fifos": self.fifos, "deeper_than_2": self.deep_fifos, "max_depth": self.max_depth,
                         "total_words": self.fifo_words, "width_converter_lut": self.dwc_lut, "sizing_complete": self.sizing_complete,
                         "sizing_seconds": round(self.sizing_seconds, 2)},
                "units": self.estimate.to_dict(), "reason": self.reason, "units_margin": self.margin}


def estimate_with_fifos(spec: ArchSpec, board: str, *, margin: float = 0.85,
                        fifo_seconds: float = 60.0, cache=None) -> BufferedEstimate:
    """``spec`` (a chain or a cell network) on ``board``: the folded units' estimate plus the FIFOs the cycle simulator sizes for it."""
    from .boards import get_board, large_fifo_style, lut_per_bram18
    from .estimate import DEFAULT_CACHE, estimate_fpga, spec_hw_graph, torch_threads
    from .sim.fifo_sizing import depth_summary, fifo_resources, size_fifos
    from .sim.netlist import elaborate, width_converters

    b = get_board(board)
    store = DEFAULT_CACHE if cache is None else cache
    budget = b.budget()
    m = margin
    too_wide: float | None = None         # a margin whose units leave their FIFOs no room
    too_narrow: float | None = None       # a margin the units alone do not fit
    for attempt in range(REFITS + 1):
        est = estimate_fpga(spec, b.name, margin=m, cache=store)
        if not est.fits:
            if too_wide is None or attempt == REFITS:
                why = est.reason + (f" (units folded within {m:.2f} of the board to leave room for their FIFOs)"
                                    if m < margin else "")
                return BufferedEstimate(est, False, 0.0, math.inf, resources=dict(est.resources), reason=why,
                                        margin=m)
            too_narrow, m = m, (m + too_wide) / 2          # between the two: units that fit, FIFOs with room
            continue
        with torch_threads(1):
            g = spec_hw_graph(spec).with_folding(est.folding)
        net = elaborate(g)
        sizing = size_fifos(net, max_seconds=fifo_seconds)
        fres = fifo_resources(net, sizing.depths, large_fifo_style(b), lut_per_bram18(b))
        fifo = {"LUT": float(sum(r["lut"] for r in fres)), "BRAM18": float(sum(r["bram18"] for r in fres)),
                "URAM": float(sum(r["uram"] for r in fres)), "DSP": 0.0}
        dwc_lut = float(sum(d["lut"] for d in width_converters(net)))     # as `bnhw build` adds them
        total = {k: float(est.resources[k]) + fifo[k] + (dwc_lut if k == "LUT" else 0.0) for k in est.resources}
        over = [k for k in ("LUT", "BRAM18", "URAM", "DSP") if total.get(k, 0.0) > budget[k]]
        if not over or attempt == REFITS:
            break
        # fold again leaving the FIFOs' and converters' share of the tightest resource free (above a margin the
        # units alone were found not to fit)
        too_wide = m
        m = min(m, min(margin - (total[k] - est.resources[k]) / budget[k] for k in over))
        if too_narrow is not None and m <= too_narrow:
            m = (too_narrow + too_wide) / 2
        if m <= 0.05:
            break
    ds = depth_summary(sizing.depths)
    fits = not over
    return BufferedEstimate(
        est, fits, float(est.fps) if fits else 0.0, float(est.latency_ms or 0.0) if fits else math.inf,
        fifo_bram18=fifo["BRAM18"], fifo_lut=fifo["LUT"], fifo_uram=fifo["URAM"], fifos=ds["fifos"],
        deep_fifos=ds["deeper_than_2"], max_depth=ds["max"], fifo_words=ds["total_words"],
        sizing_complete=sizing.complete, sizing_seconds=sizing.seconds, resources=total, margin=m, dwc_lut=dwc_lut,
        reason="" if fits else f"with its FIFOs the design exceeds the board's {', '.join(over)}")
