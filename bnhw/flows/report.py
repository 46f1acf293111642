"""``bnhw report``: several architectures side by side on one FPGA board.

For every architecture (a spec file or a ``bnhw zoo`` name):

* OPs, BOPs, FLOPs, Int8OPs (counted, :mod:`bnhw.estimators.ops`) and the
  number of weights (counted from the spec);
* the FPGA estimate (:func:`bnhw.hw.estimate.estimate_fpga`): whether it
  fits the board, FPS, latency, LUT / BRAM18 / DSP and their share of the
  board (modelled: FINN's analytical cycle / resource models at the best
  folding bnhw finds within ``margin`` of the board);
* top-1 accuracy on the digits test split when a checkpoint is given for it
  (measured, as ``bnhw eval`` does), "n/a" otherwise.

Writes ``report.md`` (the table and one line per column saying how it was
obtained), ``report.json`` and ``report.png`` (FPS vs OPs, utilisation,
latency).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import BnhwError
from ..estimators.ops import count_ops, format_ops
from ..spec import ArchSpec, atomic_write_text
from .outputs import check_out_folder, staged_folder, write_png

__all__ = ["report_flow", "count_params", "render_markdown", "COLUMNS"]

#: the digits evaluation of ``bnhw eval``'s defaults
EVAL_DATA, EVAL_RESOLUTION, EVAL_SPLIT = "digits", 32, "test"
#: ``--checkpoint`` placeholders for an architecture without one
NO_CHECKPOINT = ("-", "none", "")

#: column -> how it is obtained (measured / counted / modelled)
#: the FPS / latency columns when the cycle simulator gives them (``simulate=True``)
SIMULATED: dict[str, str] = {
    "FPS": "simulated: clock / steady-state initiation interval of bnhw's cycle simulator (3 frames back to back, "
           "unbounded FIFOs; within 1% of FINN's analytical slowest unit) at the highest-FPS folding that fits; "
           "0 when nothing fits",
    "latency": "simulated: one frame through the empty pipeline, first input word to last output word, in bnhw's "
               "cycle simulator / clock",
}

COLUMNS: dict[str, str] = {
    "OPs": "counted from the spec at its resolution: FLOPs + BOPs/64 + Int8OPs/8 (NAS-BNN's conventions, "
           "bnhw.estimators.ops)",
    "BOPs": "counted: binary multiply-accumulates of the k x k and 1 x 1 binary convolutions",
    "FLOPs": "counted: the float classifier, (C + 1) x classes",
    "Int8OPs": "counted: the 8-bit stem convolution",
    "params": "counted from the spec: weights of the stem, of every binary convolution and of the classifier "
              "(binary ones in brackets); batch-norm and PReLU constants not included",
    "fits": "modelled: yes if some folding's estimated LUT / BRAM18 / URAM / DSP fit {margin:.0%} of the board",
    "FPS": "modelled: clock / initiation interval (the slowest unit's cycles, FINN's analytical cycle models) at "
           "the highest-FPS folding that fits; 0 when nothing fits",
    "latency": "modelled: the longest path of per-unit cycles through the dataflow graph / clock (FINN's "
               "critical-path estimate; FIFOs and the DMA are not included)",
    "LUT": "modelled: FINN's analytical LUT estimates summed over the units, % of the board's LUTs; "
           "FIFOs, width converters and the DMA shell not included",
    "BRAM18": "modelled: FINN's BRAM18 estimates summed over the units, % of the board's BRAM18",
    "DSP": "modelled: FINN's DSP estimates summed over the units, % of the board's DSP slices",
    "accuracy": "measured: top-1 on the digits test split at 32 x 32 with the given checkpoint (as `bnhw eval`); "
                "n/a without one",
}


def count_params(spec: ArchSpec) -> dict[str, int]:
    """Weights of the network: stem (``stem_bits``), binary convolutions, classifier (+ bias)."""
    st = spec.stem
    stem = st.kernel ** 2 * spec.in_channels * st.channels
    binary = 0
    for g in spec.blocks():
        b, cin = g.block, g.in_channels
        binary += b.kernel ** 2 * (cin // b.groups) * cin + cin * b.channels
    classifier = spec.final_channels * spec.num_classes + spec.num_classes
    return {"total": stem + binary + classifier, "binary": binary, "stem": stem, "classifier": classifier}


def _check_checkpoint(ckpt: Path, spec: ArchSpec, arch: str) -> None:
    """The checkpoint's architecture must be ``spec`` (name, space, precision and class count aside:
    the evaluation re-sizes the classifier to the data's classes, as ``bnhw eval`` does)."""
    from ..quant.checkpoint import load_checkpoint

    saved, _, _ = load_checkpoint(ckpt)

    def canon(s: ArchSpec) -> ArchSpec:
        return s.replace(name="", space=None, precision=spec.precision, num_classes=1)

    if not isinstance(saved, ArchSpec) or canon(saved) != canon(spec):
        raise BnhwError(f"{ckpt} holds weights of another architecture than {arch} ({saved.short()})")


def _label(arch: str, spec: ArchSpec, taken: set[str]) -> str:
    base = spec.name or Path(arch).stem or arch
    label, i = base, 2
    while label in taken:
        label, i = f"{base} ({i})", i + 1
    taken.add(label)
    return label


def report_flow(archs: Sequence[str], target: str, out: Path, *, checkpoints: Sequence[str | Path] = (),
                margin: float = 0.85, clock_mhz: float | None = None, simulate: bool = True, force: bool = False,
                echo: Callable[[str], None] = print) -> dict:
    """Estimate / count / evaluate every architecture, write the report files into ``out``; returns the report."""
    from ..hw.boards import get_board
    from ..hw.estimate import estimate_fpga
    from ..hw.sim.simulate import SimRefine

    refine = SimRefine() if simulate else None      # simulated II / latency of each fitting design

    if not archs:
        raise BnhwError("give at least one architecture (a spec file or a `bnhw zoo` name)")
    board = get_board(target)
    if not 0 < margin <= 1:
        raise BnhwError(f"--margin must be in (0, 1], got {margin}")
    if clock_mhz is not None and not clock_mhz > 0:
        raise BnhwError(f"--clock-mhz must be positive, got {clock_mhz}")
    if len(checkpoints) > len(archs):
        raise BnhwError(f"{len(checkpoints)} --checkpoint for {len(archs)} architectures: give at most one per "
                        "architecture, in the same order ('-' for none)")
    # all input errors before any work
    from .inputs import require_hardware, resolve

    specs = [resolve(a, "report").spec for a in archs]
    check_out_folder(out, "report", force=force)
    for a, spec in zip(archs, specs):
        label = spec.name or Path(a).stem
        require_hardware(spec, label, "report", "no hardware unit produces a constant")
        if spec.kind != "blocks":
            raise BnhwError(f"bnhw report: {label} is a cell network; the report compares NAS-BNN block networks "
                            f"only (`bnhw build {a} --target {target}` estimates it, `bnhw ops {a}` counts its OPs)")
    ckpts: list[Path | None] = []
    for i in range(len(archs)):
        c = checkpoints[i] if i < len(checkpoints) else None
        if c is None or str(c).strip().lower() in NO_CHECKPOINT:
            ckpts.append(None)
            continue
        if not Path(c).is_file():
            raise BnhwError(f"{c}: no such checkpoint")
        _check_checkpoint(Path(c), specs[i], archs[i])
        ckpts.append(Path(c))

    taken: set[str] = set()
    rows = []
    for arch, spec, ckpt in zip(archs, specs, ckpts):
        label = _label(arch, spec, taken)
        ops = count_ops(spec)
        echo(f"{label}: estimating on {board.name} ...")
        est = estimate_fpga(spec, board.name, margin=margin, clock_mhz=clock_mhz, refine=refine)
        acc = None
        if ckpt is not None:
            from .train import evaluate_checkpoint

            r = evaluate_checkpoint(arch, ckpt, EVAL_DATA, EVAL_RESOLUTION, EVAL_SPLIT)
            acc = {"top1": r["accuracy"], "images": r["images"], "split": EVAL_SPLIT, "data": r["data"],
                   "checkpoint": str(ckpt)}
        rows.append({"label": label, "arch": arch, "short": spec.short(), "resolution": spec.resolution,
                     "num_classes": spec.num_classes,
                     "ops": {"ops": ops.ops, "bops": ops.bops, "flops": ops.flops, "int8ops": ops.int8ops},
                     "params": count_params(spec), "fpga": est.to_dict(), "accuracy": acc})
    report = {
        "board": board.to_dict(), "margin": margin,
        "clock_mhz": float(clock_mhz if clock_mhz is not None else board.clock_mhz),
        "archs": rows,
        "columns": {k: (SIMULATED.get(k, v) if simulate else v).format(margin=margin) for k, v in COLUMNS.items()},
        "fpga_weights": "seeded fresh weights with batch-norm statistics estimated on digits images (as `bnhw build` "
                        "without --checkpoint); cycles do not depend on weights, resources only slightly "
                        "(accumulator and constant widths)",
    }
    with staged_folder(out, "report", force=force, echo=echo) as st:
        atomic_write_text(st.work / "report.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
        md = render_markdown(report)
        atomic_write_text(st.work / "report.md", md)
        plot_report(report, st.work / "report.png")
    echo(table_markdown(report))
    echo(f"wrote {out / 'report.md'}, report.json, report.png")
    return report


# ----------------------------------------------------------------------------- rendering
def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _cells(r: dict) -> dict[str, str]:
    f, o, p = r["fpga"], r["ops"], r["params"]
    fits = f["fits"]
    res, util = f["resources"], f["utilisation"]

    def resource(k: str) -> str:
        s = f"{res[k]:,.0f} ({_pct(util[k])})"
        return s if fits else f"{s}*"

    acc = r["accuracy"]
    return {
        "arch": r["label"],
        "OPs": format_ops(o["ops"]), "BOPs": format_ops(o["bops"]), "FLOPs": format_ops(o["flops"]),
        "Int8OPs": format_ops(o["int8ops"]),
        "params": f"{format_ops(p['total'])} ({format_ops(p['binary'])})",
        "fits": "yes" if fits else "**no**",
        "FPS": f"{f['fps']:,.1f}" if fits else "0",
        "latency": f"{f['latency_ms']:.3f} ms" if fits else "n/a",
        "LUT": resource("LUT"), "BRAM18": resource("BRAM18"), "DSP": resource("DSP"),
        "accuracy": f"{100 * acc['top1']:.2f}%" if acc else "n/a",
    }


def table_markdown(report: dict) -> str:
    cols = ["arch", *COLUMNS]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if c in ("arch", "fits") else "---:"
                                                            for c in cols) + "|"]
    for r in report["archs"]:
        c = _cells(r)
        lines.append("| " + " | ".join(c[k] for k in cols) + " |")
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    b = report["board"]
    lines = [f"# bnhw report: {len(report['archs'])} architectures on {b['name']}", "",
             f"Board {b['name']} ({b['part']}): {b['LUT']:,} LUT, {b['BRAM18']:,} BRAM18, {b['URAM']} URAM, "
             f"{b['DSP']:,} DSP; clock {report['clock_mhz']:g} MHz; folding within {report['margin']:.0%} of the "
             "board.", "", table_markdown(report), ""]
    bad = [r for r in report["archs"] if not r["fpga"]["fits"]]
    if bad:
        lines += ["Not fitting the board at any folding (resources marked * are those of the fully folded design, "
                  "every PE and SIMD 1, for reference):", ""]
        lines += [f"- {r['label']}: {r['fpga']['reason']}" for r in bad]
        lines.append("")
    lines += ["## How each column was obtained", ""]
    lines += [f"- **{k}**: {v}" for k, v in report["columns"].items()]
    lines += [f"- FPGA columns use {report['fpga_weights']}; source: "
              + ", ".join(sorted({r['fpga']['source'] for r in report['archs']})), ""]
    lines += ["## Architectures", ""]
    for r in report["archs"]:
        f = r["fpga"]
        extra = f", bottleneck `{f['bottleneck']}`, II {f['ii_cycles']:,} cycles" if f["fits"] else ""
        lines.append(f"- **{r['label']}** ({r['arch']}, {r['resolution']}x{r['resolution']}, {r['num_classes']} "
                     f"classes, {f['units']} hardware units{extra}): `{r['short']}`")
        if r["accuracy"]:
            a = r["accuracy"]
            lines.append(f"  - accuracy {100 * a['top1']:.2f}% on {a['images']} {a['split']} images ({a['data']}), "
                         f"checkpoint {a['checkpoint']}")
    return "\n".join(lines) + "\n"


def plot_report(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = report["archs"]
    labels = [r["label"] for r in rows]
    fits = [r["fpga"]["fits"] for r in rows]
    board = report["board"]["name"]
    fig, axes = plt.subplots(1, 3, figsize=(max(13, 4.2 * 3), 4.6), dpi=110)

    # 1. FPS vs OPs
    ax = axes[0]
    for r, ok in zip(rows, fits):
        x, y = r["ops"]["ops"] / 1e6, r["fpga"]["fps"]
        ax.scatter([x], [y], marker="o" if ok else "x", s=40, c="C0" if ok else "C3", zorder=3)
        ax.annotate(r["label"] + ("" if ok else " (does not fit)"), (x, y), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    ax.set_xlabel("OPs (M, counted)")
    ax.set_ylabel(f"FPS on {board} (modelled)")
    ax.set_title("throughput vs OPs")
    xmax = max(r["ops"]["ops"] for r in rows) / 1e6
    ax.set_xlim(0, 1.6 * xmax)                 # room for the labels
    ax.set_ylim(0, 1.15 * max([r["fpga"]["fps"] for r in rows] + [1.0]))
    ax.grid(alpha=0.3)

    # 2. utilisation bars
    ax = axes[1]
    keys = ("LUT", "BRAM18", "DSP")
    xs = np.arange(len(rows))
    width = 0.8 / len(keys)
    for i, k in enumerate(keys):
        vals = [100 * (r["fpga"]["utilisation"][k] or 0.0) for r in rows]
        bars = ax.bar(xs + (i - 1) * width, vals, width, label=k, color=f"C{i}")
        for bar, ok in zip(bars, fits):
            if not ok:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
    ax.axhline(100, c="k", lw=0.8)
    ax.axhline(100 * report["margin"], c="k", lw=0.8, ls="--")
    ax.set_xticks(xs, labels, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel(f"% of {board} (modelled)")
    ax.set_title(f"utilisation (dashed: {report['margin']:.0%} budget; hatched: does not fit, fully folded)",
                 fontsize=8)
    ax.legend(fontsize=7)

    # 3. latency bars
    ax = axes[2]
    lat = [r["fpga"]["latency_ms"] if ok else 0.0 for r, ok in zip(rows, fits)]
    ax.bar(xs, lat, 0.6, color="C4")
    for x, ok in zip(xs, fits):
        if not ok:
            ax.text(x, 0, "does not fit", rotation=90, ha="center", va="bottom", fontsize=7, color="C3")
    ax.set_xticks(xs, labels, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("latency (ms, modelled)")
    ax.set_title("latency of one frame")
    fig.suptitle(f"bnhw report on {board} at {report['clock_mhz']:g} MHz", fontsize=10)
    fig.tight_layout()
    write_png(fig, path)

