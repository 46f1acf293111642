"""The build report: ``report.md`` (what was modelled, simulated, measured and by what) and ``layers.png``, from
the ``report.json`` dictionary :mod:`bnhw.flows.build` assembles."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["render_markdown", "plot_layers", "json_default"]


def json_default(o):
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
              f"- model: {p['model']}"]
    f = r.get("finn") or {}
    finn_ok = bool(f.get("run") and f.get("ok") and f.get("total"))
    if finn_ok:
        n = f["network"]
        lines.append(f"- FINN's estimate of the graph it built (finn-plus's own reports, `finn/output/report/`): "
                     f"**{n.get('estimated_throughput_fps', 0):,.1f} FPS** (bottleneck `{n.get('max_cycles_node_name')}`"
                     f", {n.get('max_cycles', 0):,} cycles), latency {n.get('estimated_latency_ns', 0) / 1000:,.1f} us")
    lines += ["", "## Resources (modelled)", "",
              "| | LUT | BRAM18 | URAM | DSP |", "|---|---:|---:|---:|---:|",
              f"| estimated (bnhw, per IR unit) | {tot['LUT']:,.0f} | {tot['BRAM18']:,.0f} | {tot['URAM']:,.0f} | "
              f"{tot['DSP']:,.0f} |"]
    if finn_ok:
        ft = f["total"]
        lines.append(f"| FINN's estimate of its graph | {ft['LUT']:,.0f} | {ft['BRAM18']:,.0f} | {ft['URAM']:,.0f} | "
                     f"{ft['DSP']:,.0f} |")
        fr = (r.get("simulation") or {}).get("fifo_resources")
        if fr:
            lines.append(f"| FINN's graph + FIFOs at bnhw's simulated depths | {ft['LUT'] + fr['LUT']:,.0f} | "
                         f"{ft['BRAM18'] + fr['BRAM18']:,.0f} | {ft['URAM'] + fr['URAM']:,.0f} | {ft['DSP']:,.0f} |")
        fd = f.get("dwc")
        if fd and "count" in fd and fr:
            lines.append(f"| ... + the width converters FINN's InsertDWC adds ({fd['count']}) | "
                         f"{ft['LUT'] + fr['LUT'] + fd['LUT']:,.0f} | {ft['BRAM18'] + fr['BRAM18']:,.0f} | "
                         f"{ft['URAM'] + fr['URAM']:,.0f} | {ft['DSP']:,.0f} |")
    lines += [f"| board | {b['LUT']:,} | {b['BRAM18']:,} | {b['URAM']:,} | {b['DSP']:,} |",
              "| utilisation (bnhw's estimate) | "
              + " | ".join(_pct(res["utilisation"][k]) for k in ("LUT", "BRAM18", "URAM", "DSP")) + " |", "",
              f"Model: {res['model']}.", ""]
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
        lines.append(f"- top-1 accuracy of the integer network ({q.get('accuracy_engine', 'IR execution')}) on "
                     f"{q['accuracy_images']} held-out digits images: {100 * q['accuracy_ir']:.1f}%")
    cs = c["csim"]
    if "inputs" in cs:
        lines.append(f"- C simulation (generated HLS C++, g++): outputs bit-exact with the IR reference on "
                     f"{cs['outputs_bit_exact']}/{cs['inputs']} images"
                     + (f"; `{cs['compared_stream']}` (before the label select) bit-exact on "
                        f"{cs['pre_label_bit_exact']}/{cs['inputs']}" if cs.get("pre_label_bit_exact") is not None
                        else ""))
        if cs.get("schedule"):
            sc = cs["schedule"]
            lines.append(f"- the generated code's schedule (C simulation with cycle stamps: one cycle per pipelined "
                         f"loop iteration, unbounded streams; not synthesis): II {sc['ii_cycles']:,} cycles per frame, "
                         f"the estimate {sc['estimate_ii_cycles']:,} ({100 * sc['relative_error']:+.1f}%)")
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
    if f.get("front") == "ir":
        nf = f.get("nodes_from", {})
        lines += [f"FINN's front end does not take this network (its streamlining stops at grouped convolutions and "
                  f"leaves PReLU, the fixed-point residual path and average pools off the hardware), so bnhw handed "
                  f"FINN its IR as FINN's HW graph (`finn/model.onnx`): {nf.get('FINN unit', 0)} nodes are FINN's "
                  f"own units, {nf.get('bnhw unit', 0)} are bnhw units (`bnhw.hw.finn_ops`: FINN HLS nodes "
                  "`<Unit>_hls`; their estimates are bnhw's models; FINN's `PrepareIP` wrote their HLS projects "
                  "like its own, `top_<node>.cpp` wrapping bnhw's HLS code and `hls_syn_<node>.tcl`, in "
                  "`finn/finn_tmp/`, so FINN's IP steps take them; their Vitis HLS synthesis is not checked "
                  "where Vitis HLS is missing):", ""]
        lines += [f"- `{u}`: {why}" for u, why in f.get("units", {}).items()]
        lines += ["", "Zero-padded binary convolutions take a TERNARY (2-bit) input in FINN: its 1-bit encoding "
                  "would pad with -1.", ""]
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
              "Per node of FINN's graph, FINN's estimate beside bnhw's model of the same FINN op at bnhw's "
              "folding (its IR node; - : the other side has no such node):", "",
              "| FINN node | IR node | FINN cycles | bnhw cycles | FINN LUT | bnhw LUT | FINN BRAM18 | bnhw BRAM18 |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]

    def v(x):
        return "-" if x is None else f"{x:,.0f}"

    for c in f["comparison"]:
        lines.append(f"| {c['name']} | {c.get('ir_node') or '-'} | {v(c['finn_cycles'])} | {v(c['bnhw_cycles'])} | "
                     f"{v(c['finn_LUT'])} | "
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
             f"{tw['BRAM18']:,.0f} BRAM18",
             *([f"- width converters (where a unit's output word differs from its consumer's input word, FINN's "
                f"InsertDWC rule; FINN's LUT model, no BRAM): {len(dw)}, {sim['dwc_resources']['LUT']:,.0f} LUT; "
                f"design total with FIFOs and converters: {tw2['LUT']:,.0f} LUT, {tw2['BRAM18']:,.0f} BRAM18"]
               if (dw := sim.get("width_converters")) is not None and (tw2 := sim.get("total_with_fifos_and_dwcs"))
               else []),
             *([f"- **the design exceeds the board's {', '.join(sim['over_budget'])}**"] if sim["over_budget"] else []),
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

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .outputs import write_png

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
    write_png(fig, path, dpi=110)
