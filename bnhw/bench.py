"""``make bench``: measured results, written as JSON and a short Markdown table.

Search quality (``--only search``, about 20 minutes on 2 cores): the default
``bnhw search --budget 57M`` (NAS-BNN ImageNet space, digits at 32x32, laptop
recipe, without its stand-alone runs) for seeds 0, 1, 2, against the best of
as many random architectures under the same budget as the search evaluated,
scored the same way on the same supernet (inherited weights, BN
recalibrated, val split) and compared on the test split.  The search's own
Kendall tau is in every ``bnhw search``'s best.json.

FPGA folding (``--only fpga``, a minute): on CNV-W1A1 and a NAS-BNN-style
subnet, FINN's ``SetFolding`` at a range of cycle targets against bnhw's
resource-aware folding given exactly SetFolding's estimated LUT and BRAM as
its budget (same analytical models for both): the FPS ratio.

Cycle simulator (``--only sim``, a minute): simulated cycles per second
(timing and functional mode) on CNV-W1A1 at finn-examples' folding and on a
NAS-BNN subnet at bnhw's pynq-z2 folding, 10 frames each, and the FIFO sizing
time and result.

Embedded CPU (``--only cpu``, a few minutes): bnhw's C runtime on this machine,
one thread, median of repeated runs: the binary convolution (3x3, stride 1,
zero padding, fused threshold + bit-pack, as in a real layer) at ResNet's
layer shapes 56x56x64, 28x28x128, 14x14x256 and 7x7x512 in G binary MACs/s,
with every kernel set the CPU runs (ref, portable, avx2, avx512bw, avx512,
neon; a set it lacks is named with the reason), both the bgemm alone (M = out
pixels, N = out channels, K = 9 Cin / 64 words) and the whole conv op, against
this machine's measured XOR-popcount peaks (``src/bench_peak.c``: scalar popcnt
and the vector popcounts); the largest layer and CNV-W1A1 and a NAS-BNN subnet
end to end on 1, 2 and all cores (``--threads``), and the networks modelled on
Cortex-A9 / A53 / A72.

CPU latency predictor of the search (``--only cpulat``, a few minutes): ``--subnets`` (default 20) random
subnets of the nasbnn-cifar space (as ``bnhw search --target native`` sees them: seeded fresh weights,
lowered to the C runtime's program); the search's native prediction (the sum of per-op times from the
per-layer-shape table, :mod:`bnhw.hw.cpu.latency`) against the whole network measured in
the runtime (median of 20 runs), on one thread and on all cores: mean and max relative error, and how many
table entries the 20 networks needed.  For the ARM cores, the cycle model's instruction counts against
the instructions executed under QEMU (one inference, ``bnhw.hw.cpu.insn_count``) on the first
``--arm-subnets`` (default 5) of the same subnets, AArch64 and ARMv7 (skipped, said in one line, without the
cross toolchain).  ``--only cpulat-cells`` does the same on ``--subnets`` (there default 12) random derived cell
networks (BNAS v2 stacks and BARS stage layouts of random genotypes, as ``bnhw search --method bnas|bars
--target native`` sees them), ``--arm-subnets`` (there default 3) of them under QEMU.
``--only armcells`` (a few minutes): the ARM model's instructions against QEMU's on the two zoo cell
networks and ``--subnets`` (there default 4) random derived cell networks, AArch64 and ARMv7, whole network
and the cell ops (WPOOL, CONCAT, GAP: inlined into ``bnhw_model_run``, plus glibc's memcpy), per op kind.

BNAS v2 ablation (``--only bnas``, the longest part after the NAS-BNN search):
the paper's Table 10 at small scale: for each seed, a BNAS search with all
components ("full"), without the inter-cell skip connections ("no-skip"),
with Zeroise discarded ("no-zeroise") and without the diversity regularizer
("no-div"); each derived cell stacked into the largest network within the
same OPs budget and trained from scratch with the same recipe; test top-1 on
digits and OPs of each.  A cell drawn at random from the same space
("random", no search) is stacked and trained the same way: the baseline that
tells whether the searches found anything at this scale.

FINN code generation (``--only finn``, a few minutes): ``bnhw build NET --no-sim`` from a zoo name (or a
reference net) to FINN's generated code, wall time of the whole command in a fresh process (spec, weights,
lowering, folding, C simulation, FINN's steps), FINN's own seconds, the HW nodes with code and the bnhw units.

Larq Compute Engine side by side (``--only lce``, only when named; a few minutes, plus the first
install): LCE 0.16.0's converter (``convert_keras_model`` on larq ``QuantConv2D`` models) and interpreter
in its own virtualenv ``bench/lce-venv`` (created on demand from PyPI; if pip cannot install it, one
line says why and the part is skipped), timed at the four ResNet shapes in the same run as bnhw's whole
conv op, one thread; the ratios go to bench.json.

Benchmarks are not tests: nothing here asserts a number.  Run
``python -m bnhw.bench --quick`` for a smaller version, ``--only search`` or
``--only fpga`` for one part.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .design.train import TrainConfig, calibration_batches, evaluate_subnet
from .estimators.ops import format_ops, ops_of
from .flows.search import SearchOptions, run_search
from .spec import atomic_write_text
from .spec.space import get_space


def random_in_band(space, lo: float, hi: float, rng: random.Random, n: int) -> list:
    out, seen = [], set()
    for _ in range(200000):
        s = space.sample(rng)
        o = ops_of(s)
        if lo <= o <= hi and s not in seen:
            seen.add(s)
            out.append(s)
            if len(out) == n:
                break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--quick", action="store_true", help="fewer epochs, subnets and seeds")
    ap.add_argument("--only", choices=["search", "fpga", "sim", "cpu", "cpulat", "cpulat-cells", "armcount", "armcells", "bnas",
                                       "finn", "lce"],
                    help="run one part only (lce: Larq Compute Engine side by side, only when named)")
    ap.add_argument("--subnets", type=int, help="cpulat: random subnets of the predictor check (default 20; "
                    "cpulat-cells: random cell networks, default 12)")
    ap.add_argument("--arm-subnets", type=int, help="cpulat: of them, counted under QEMU (default 5; cpulat-cells: 3)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "bnas"):
        abl = bench_bnas_ablation(out / "bnas", quick=args.quick)
        _merge(out, "bnas", abl, _bnas_table(abl))
    if args.only in (None, "cpu"):
        cpu = bench_cpu(out / "cpu")
        _merge(out, "cpu", cpu, _cpu_table(cpu))
    if args.only in (None, "cpulat"):
        cl = bench_cpu_latency(out / "cpulat", n=args.subnets or 20,
                               n_arm=5 if args.arm_subnets is None else args.arm_subnets)
        _merge(out, "cpulat", cl, _cpu_latency_table(cl))
    if args.only in (None, "cpulat-cells"):
        cc = bench_cpu_latency(out / "cpulat-cells", n=args.subnets or 12,
                               n_arm=3 if args.arm_subnets is None else args.arm_subnets, cells=True)
        _merge(out, "cpulat-cells", cc, _cpu_latency_table(cc))
    if args.only in (None, "armcount"):
        ac = bench_arm_counts(out / "armcount")
        _merge(out, "armcount", ac, _arm_count_table(ac))
    if args.only in (None, "armcells"):
        acc = bench_arm_cells(out / "armcells", n=4 if args.subnets is None else args.subnets)
        _merge(out, "armcells", acc, _arm_cells_table(acc))
    if args.only == "lce":
        lce = bench_lce(out / "lce")
        _merge(out, "lce", lce, _lce_table(lce))
    if args.only in (None, "sim"):
        sim = bench_sim(out / "sim")
        _merge(out, "sim", sim, _sim_table(sim))
    if args.only in (None, "finn"):
        fb = bench_finn(out / "finn")
        _merge(out, "finn", fb, _finn_table(fb))
    if args.only in (None, "fpga"):
        fpga = bench_fpga(out / "fpga")
        _merge(out, "fpga", fpga, _fpga_table(fpga))
    if args.only is None or args.only == "search":
        search_bench(args, out)


def _merge(out: Path, key: str, value: dict, table: str) -> None:
    """Add ``value`` under ``key`` to bench.json and ``table`` to summary-<key>.md (other parts kept)."""
    path = out / "bench.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    atomic_write_text(out / f"summary-{key}.md", table + "\n")
    print(table)


FPGA_NETS = ("cnv-w1a1", "nasbnn-cifar-smallest", "nasbnn-cifar-largest")


def bench_fpga(out: Path) -> dict:
    """SetFolding vs bnhw folding at equal LUT/BRAM, per network and cycle target (all modelled)."""
    from .flows.prepare import prepare_network
    from .hw.boards import get_board
    from .hw.folding import FitError, graph_cost, maximize_fps
    from .hw.setfolding import finn_set_folding

    board = get_board("pynq-z2")
    rows: list[dict[str, Any]] = []
    for net in FPGA_NETS:
        t0 = time.time()
        g = prepare_network(net, out / net, n_inputs=2, echo=lambda m: None).graph
        unfolded = graph_cost(g).ii
        seen = set()
        for target in sorted({max(1, int(t)) for t in np.geomspace(unfolded / 2048, unfolded, 24)}):
            sf = graph_cost(finn_set_folding(g, target))
            if sf.ii in seen:
                continue            # SetFolding gave this design already
            seen.add(sf.ii)
            if any(sf.total[k] > board.budget()[k] for k in sf.total):
                continue            # SetFolding's design does not fit the board: no fair comparison
            budget = {"LUT": sf.total["LUT"], "BRAM18": sf.total["BRAM18"], "URAM": board.uram, "DSP": board.dsp}
            try:
                ours = maximize_fps(g, budget)
            except FitError:
                continue
            rows.append({"network": net, "target_cycles": target, "setfolding_ii": sf.ii, "bnhw_ii": ours.ii,
                         "fps_ratio": sf.ii / ours.ii, "setfolding": sf.total, "bnhw": ours.total,
                         "fps_setfolding": 100e6 / sf.ii, "fps_bnhw": 100e6 / ours.ii})
            print(f"{net} target {target}: SetFolding II {sf.ii} vs bnhw II {ours.ii} "
                  f"(x{sf.ii / ours.ii:.2f} FPS) at LUT {ours.total['LUT']:.0f}<={sf.total['LUT']:.0f}, "
                  f"BRAM18 {ours.total['BRAM18']:.0f}<={sf.total['BRAM18']:.0f}", flush=True)
        print(f"{net}: {time.time() - t0:.0f} s", flush=True)
    ratios = {net: [r["fps_ratio"] for r in rows if r["network"] == net] for net in FPGA_NETS}
    summary = {net: {"designs": len(v), "higher_fps": sum(x > 1 for x in v), "max_ratio": max(v, default=None),
                     "geomean_ratio": float(np.exp(np.mean(np.log(v)))) if v else None}
               for net, v in ratios.items()}
    return {"board": "pynq-z2", "clock_mhz": 100.0, "rows": rows, "summary": summary,
            "note": "all figures modelled with FINN's analytical cycle/resource models (bnhw.hw.finn_models)"}


#: (network, board): nasbnn-cifar-largest does not fit pynq-z2 (64,857 LUT fully folded)
FINN_NETS = (("nasbnn-cifar-smallest", "pynq-z2"), ("nasbnn-cifar-largest", "kv260"), ("cnv-w1a1", "pynq-z2"))


def bench_finn(out: Path) -> dict:
    """``bnhw build NET --no-sim`` in a fresh process per net: wall time from the name to FINN's generated code."""
    import subprocess
    import sys

    rows = []
    for net, board in FINN_NETS:
        folder = out / net
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "bnhw", "build", net, "--target", board, "--no-sim", "-o",
                            str(folder)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        row: dict[str, Any] = {"network": net, "board": board, "exit": p.returncode, "wall_s": round(wall, 1)}
        if p.returncode == 0:
            f = json.loads((folder / "report.json").read_text())["finn"]
            row.update(finn_ok=f.get("ok"), finn_front=f.get("front"), finn_s=round(f.get("seconds", 0.0), 1),
                       hw_nodes_with_code=len(f.get("codegen", {})), bnhw_units=sorted(f.get("units", {})),
                       fps_finn=f.get("network", {}).get("estimated_throughput_fps"))
        else:
            row["error"] = (p.stderr.strip().splitlines() or [""])[-1]
        print(f"{net}: {row}", flush=True)
        rows.append(row)
    return {"rows": rows, "cores": os.cpu_count(), "note": "wall time measured (fresh process, this machine); FINN's "
            "FPS is FINN's estimate (modelled)"}


def _finn_table(r: dict) -> str:
    lines = ["| network | board | exit | wall (s, measured) | FINN steps (s) | front end | HW nodes with code | "
             "bnhw units |", "|---|---|---:|---:|---:|---|---:|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['network']} | {x['board']} | {x['exit']} | {x['wall_s']} | {x.get('finn_s', '-')} | "
                     f"{x.get('finn_front', '-')} | {x.get('hw_nodes_with_code', '-')} | "
                     f"{', '.join(x.get('bnhw_units', [])) or '-'} |")
    return "\n".join(lines)


SIM_NETS = ("cnv-w1a1", "nasbnn-cifar-smallest")


def bench_sim(out: Path, frames: int = 10) -> dict:
    """Simulated cycles per wall-clock second and FIFO sizing time (measured on this machine)."""
    from .flows.prepare import prepare_network
    from .hw.boards import get_board
    from .hw.folding import board_budget, maximize_fps
    from .hw.foldings import load_reference_folding
    from .hw.sim.fifo_sizing import size_fifos
    from .hw.sim.netlist import elaborate
    from .hw.sim.simulate import simulate

    rows: list[dict[str, Any]] = []
    for name in SIM_NETS:
        prep = prepare_network(name, out / name, n_inputs=frames, echo=lambda m: None)
        if name == "cnv-w1a1":
            g, how = prep.graph.with_folding(load_reference_folding(name)), "finn-examples"
        else:
            g, how = maximize_fps(prep.graph, board_budget(get_board("pynq-z2"))).graph, "bnhw pynq-z2"
        net = elaborate(g)
        simulate(net, 2)                                   # builds / loads the C core once
        t = time.perf_counter()
        r = simulate(net, frames)
        t_timing = time.perf_counter() - t
        t = time.perf_counter()
        f = simulate(net, frames, inputs=prep.int_inputs[:frames])
        t_func = time.perf_counter() - t
        assert f.outputs is not None  # a functional run (inputs given) returns its outputs
        exact = bool(np.array_equal(f.outputs, np.stack([g.execute(x) for x in prep.int_inputs[:frames]])))
        t = time.perf_counter()
        s = size_fifos(net, max_seconds=300)
        t_size = time.perf_counter() - t
        row: dict[str, Any] = {"network": name, "folding": how, "units": len(net.units), "fifos": len(net.fifos), "frames": frames,
               "cycles": r.cycles + 1, "ii_cycles": r.ii_cycles, "analytic_ii": r.analytic_ii,
               "timing_seconds": t_timing, "cycles_per_second": (r.cycles + 1) / t_timing,
               "functional_seconds": t_func, "functional_cycles_per_second": (f.cycles + 1) / t_func,
               "functional_bit_exact": exact, "sizing_seconds": t_size, "sizing_runs": s.runs,
               "sizing_complete": s.complete, "fifos_deeper_than_2": sum(d > 2 for d in s.depths),
               "ii_sized": s.ii_sized}
        rows.append(row)
        print(f"{name}: {row['cycles']:,} cycles in {t_timing:.2f} s ({row['cycles_per_second']:,.0f} cycles/s), "
              f"functional {t_func:.2f} s, FIFO sizing {t_size:.1f} s ({s.runs} runs)", flush=True)
    return {"rows": rows, "machine": platform.processor() or platform.machine(),
            "note": "wall-clock on this (shared, noisy) machine; one run each"}


#: BNAS v2 Table 10's settings: (name, CellSearchOptions overrides)
ABLATIONS: tuple[tuple[str, dict[str, Any]], ...] = (("full", {}), ("no-skip", {"inter_cell_skip": False}), ("no-zeroise", {"zeroise": False}),
             ("no-div", {"diversity": False}))


def bench_bnas_ablation(out: Path, quick: bool = False, seeds: tuple[int, ...] = (0, 1, 2), budget: float = 3e6,
                        search_epochs: int = 4, final_epochs: int = 3, cells: int | None = 10) -> dict:
    """Full BNAS vs its three ablations and a random cell, each trained from scratch on digits, per seed.

    As in the paper's Table 10 every setting is compared at one network depth (``cells``; its channels the
    most within ``budget``); ``cells=None`` lets each derived cell pick its own depth (the Table 5 cell
    count with the most OPs within the budget), which mixes depth into the comparison."""
    from .flows.cell_search import CellSearchOptions, run_cell_search

    if quick:
        seeds, search_epochs, final_epochs = (0,), 2, 2
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for name, over in ABLATIONS:
            t0 = time.time()
            opts = CellSearchOptions(method="bnas", budget=budget, epochs=search_epochs, final_epochs=final_epochs,
                                     seed=seed, cells=cells, **over)
            d = out / f"{name}-seed{seed}"
            r = run_cell_search(opts, d, resume=(d / "config.json").exists())
            rows.append({"ablation": name, "seed": seed, "ops": r["ops"], "test_accuracy": r["test_accuracy"],
                         "val_accuracy": r["val_accuracy"], "arch": r["short"], "seconds": time.time() - t0,
                         "zeroise_edges": sum(op == "zeroise" for c in ("normal", "reduce")
                                              for op in (e["op"] for e in r["arch"]["genotype"][c]))})
            print(f"{name} seed {seed}: test acc {r['test_accuracy']:.4f} at {r['ops'] / 1e6:.2f}M OPs "
                  f"({time.time() - t0:.0f} s)", flush=True)
    for seed in seeds:
        t0 = time.time()
        r = random_cell_baseline(out / f"random-seed{seed}", seed, budget, final_epochs, cells)
        rows.append({**r, "seconds": time.time() - t0})
        print(f"random seed {seed}: test acc {r['test_accuracy']:.4f} at {r['ops'] / 1e6:.2f}M OPs "
              f"({time.time() - t0:.0f} s)", flush=True)
    return {"budget_ops": budget, "cells": cells, "search_epochs": search_epochs, "final_epochs": final_epochs,
            "seeds": list(seeds), "rows": rows, "summary": _bnas_summary(rows),
            "note": "measured on this machine: BNAS searches at 16x16 on digits (5 cells, 8 channels, 256 images per "
                    "half, architecture lr 3e-3), derived cells stacked into the largest network within the budget at 32x32 and trained from "
                    "scratch (Adam, cosine, no weight decay: the minimal-regularization scheme); top-1 on the digits "
                    "test split"}


def random_cell_baseline(out: Path, seed: int, budget: float, final_epochs: int, cells: int | None = None) -> dict:
    """The sanity baseline of the ablation: a cell drawn at random from BNAS's space (no search), stacked
    into the budget and trained exactly as the searched cells are (:func:`run_cell_search`'s defaults)."""
    from .design.bnas import candidate_ops, fit_to_budget, random_genotype
    from .estimators.ops import count_ops
    from .flows.cell_search import SCHEME_OPTIMIZERS, CellSearchOptions
    from .flows.train import FitConfig, fit

    opts = CellSearchOptions(method="bnas", budget=budget, final_epochs=final_epochs, seed=seed)
    genotype = random_genotype(candidate_ops(zeroise=opts.zeroise, separable=opts.separable), seed=seed)
    spec = fit_to_budget(genotype, budget, cells=cells, resolution=opts.resolution, name=f"bnas-random-seed{seed}")
    cfg = FitConfig(epochs=final_epochs, batch_size=opts.batch_size, seed=seed, data=opts.data,
                    resolution=opts.resolution, optimizer=SCHEME_OPTIMIZERS[opts.scheme])
    done = out / "result.json"
    res = json.loads(done.read_text()) if done.exists() else fit(spec, cfg, out, resume=(out / "train_state.pt").exists())
    return {"ablation": "random", "seed": seed, "ops": count_ops(spec).ops, "test_accuracy": res["test_accuracy"],
            "val_accuracy": res["val_accuracy"], "arch": spec.short(),
            "zeroise_edges": sum(op == "zeroise" for op, _ in genotype.normal + genotype.reduce)}


def _bnas_summary(rows: list[dict]) -> dict:
    """Per ablation: test accuracy (mean, sample std, range, per seed), its difference to full BNAS paired
    by seed (the same data split and initial seed), OPs and Zeroise edges of the derived cells."""
    summary = {}
    full = {r["seed"]: r["test_accuracy"] for r in rows if r["ablation"] == "full"}
    for name in [a for a, _ in ABLATIONS] + ["random"]:
        mine = [r for r in rows if r["ablation"] == name]
        if not mine:
            continue
        accs = [r["test_accuracy"] for r in mine]
        diffs = [r["test_accuracy"] - full[r["seed"]] for r in mine if r["seed"] in full]
        summary[name] = {"mean_test_accuracy": float(np.mean(accs)),
                         "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                         "min": float(min(accs)), "max": float(max(accs)),
                         "per_seed": {str(r["seed"]): r["test_accuracy"] for r in mine},
                         "mean_diff_to_full": float(np.mean(diffs)) if diffs else None,
                         "mean_ops": float(np.mean([r["ops"] for r in mine])),
                         "mean_zeroise_edges": float(np.mean([r["zeroise_edges"] for r in mine]))}
    return summary


def _bnas_table(r: dict) -> str:
    depth = f"{r['cells']} cells" if r.get("cells") else "depth chosen per cell"
    lines = [f"BNAS ablation on digits (measured), budget {r['budget_ops'] / 1e6:.1f}M OPs, {depth}, "
             f"{r['search_epochs']} search epochs, {r['final_epochs']} training epochs, seeds {r['seeds']}:", "",
             "| setting | test acc, mean ± std | per seed | vs full (paired) | mean OPs | Zeroise edges |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, s in r["summary"].items():
        per_seed = " / ".join(f"{100 * a:.2f}" for a in s["per_seed"].values())
        diff = "–" if name == "full" or s["mean_diff_to_full"] is None else f"{100 * s['mean_diff_to_full']:+.2f}"
        lines.append(f"| {name} | {100 * s['mean_test_accuracy']:.2f} ± {100 * s['std']:.2f} | {per_seed} | {diff} | "
                     f"{s['mean_ops'] / 1e6:.2f}M | {s['mean_zeroise_edges']:.1f} |")
    return "\n".join(lines)


#: ResNet-18/34 binary layer shapes: (feature map side, channels), 3x3 kernels, stride 1
RESNET_SHAPES = ((56, 64), (28, 128), (14, 256), (7, 512))
CPU_NETS = ("cnv-w1a1", "nasbnn-cifar-smallest")
#: rounds of the networks' timings in bench --only cpu (medians; the ratios per round)
NET_ROUNDS = 3


def resnet_layer_graph(side: int, channels: int, seed: int = 0):
    """One binary ResNet layer as the IR has it: sign -> 3x3 zero-padded window -> XNOR MVAU with
    thresholds (the folded batch norm) to a bipolar output."""
    from .hw.ir import DType, HwGraph, Node, Stream

    rng = np.random.default_rng(seed)
    C = channels
    streams = {"x": Stream("x", (side, side, C), DType.int_(8)),
               "s": Stream("s", (side, side, C), DType.bipolar()),
               "w": Stream("w", (side, side, 9 * C), DType.bipolar(padded=True)),
               "y": Stream("y", (side, side, C), DType.bipolar())}
    nodes = [Node("Thresholding_0", "Thresholding", ["x"], ["s"], {"out_bias": -1, "out_scale": 2},
                  {"thresholds": np.zeros((C, 1), dtype=np.int64)}),
             Node("SWG_0", "SWG", ["s"], ["w"], {"k": 3, "stride": 1, "pad": 1, "dilation": 1, "pad_value": 0}),
             Node("MVAU_0", "MVAU", ["w"], ["y"], {"binary_xnor": True, "groups": 1, "out_bias": -1, "out_scale": 2},
                  {"weights": rng.choice([-1, 1], (C, 9 * C)),
                   "thresholds": rng.integers(-8, 9, (C, 1))})]
    return HwGraph(f"resnet-{side}x{side}x{C}", streams, nodes, "x", "y")


def _time_bgemm(a: np.ndarray, b: np.ndarray, impl: str, min_seconds: float = 0.05, trials: int = 5) -> float:
    """Best-of-``trials`` seconds of one ``kernels.bgemm`` call (each trial repeats it for at least
    ``min_seconds`` and takes the mean), one thread."""
    import time

    from .hw.cpu.kernels import bgemm

    out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
    bgemm(a, b, impl=impl, out=out)
    n = 1
    while True:
        t = time.perf_counter()
        for _ in range(n):
            bgemm(a, b, impl=impl, out=out)
        dt = time.perf_counter() - t
        if dt >= min_seconds:
            break
        n *= 2
    best = dt / n
    for _ in range(trials - 1):
        t = time.perf_counter()
        for _ in range(n):
            bgemm(a, b, impl=impl, out=out)
        best = min(best, (time.perf_counter() - t) / n)
    return best


def bench_cpu(out: Path, repeat: int = 30) -> dict:
    """Every kernel set this CPU runs at ResNet's binary 3x3 conv shapes (the bgemm alone and the whole
    conv op, one thread) vs the measured scalar and vector popcount peaks; thread scaling; networks
    measured (one thread and all cores) and modelled."""
    from .flows.cpu_bench import CORE_ARCH, machine_name, measure_native
    from .hw.cpu import kernels as cpu_kernels
    from .hw.cpu.perfmodel import model_program
    from .hw.cpu.program import lower_cpu
    from .hw.cpu.runtime import POPCOUNT_PEAKS, CpuModel, default_threads, xorpop_peak

    out.mkdir(parents=True, exist_ok=True)
    usable = cpu_kernels.usable_kernel_sets()
    auto = cpu_kernels.resolve("auto")
    sets = [s for s in usable if s != "ref"]
    lacking = {s: cpu_kernels.kernel_set_why(s) for s in cpu_kernels.kernel_sets() if s not in usable}
    for s, why in lacking.items():
        print(f"skipping kernel set {s}: {why}", flush=True)
    peaks = {}
    for kind in POPCOUNT_PEAKS:
        if kind == "scalar" or kind in usable:
            peaks[kind] = xorpop_peak(kind=kind) / 1e9
            print(f"XOR-popcount peak {kind} (measured, one thread): {peaks[kind]:.1f} G binary MACs/s", flush=True)
    peak = max(peaks.values())
    rng = np.random.default_rng(0)
    layers = []
    for side, C in RESNET_SHAPES:
        g = resnet_layer_graph(side, C)
        prog = lower_cpu(g)
        i = next(k for k, o in enumerate(prog.ops) if o.op == "BCONV")
        bm = prog.ops[i].bmacs
        M, N, K = side * side, C, 9 * C // 64
        a = rng.integers(0, 1 << 63, (M, K), dtype=np.uint64)
        b = rng.integers(0, 1 << 63, (N, K), dtype=np.uint64)
        x = np.random.default_rng(1).integers(-128, 128, (side, side, C))
        row: dict[str, Any] = {"shape": f"{side}x{side}x{C}", "kernel": 3, "bmacs": bm, "bgemm": [M, N, K],
                               "sets": {}}
        for ks in [*sets, "ref"]:
            m = CpuModel(prog, kernels=ks, threads=1)
            per, _ = m.time(x, repeat=repeat if ks != "ref" else 3, warmup=1)
            t = float(np.median(per[:, i]))
            tb = _time_bgemm(a, b, ks, trials=5 if ks != "ref" else 1)
            row["sets"][ks] = {"conv_seconds": t, "conv_gbmacs_per_s": bm / t / 1e9, "bgemm_seconds": tb,
                               "bgemm_gbmacs_per_s": M * N * K * 64 / tb / 1e9}
        best = row["sets"][auto]
        row["auto"] = {"kernels": auto, **best}
        row["fraction_of_peak"] = best["conv_gbmacs_per_s"] / peaks.get(auto, peaks["scalar"])
        row["speedup_vs_ref"] = row["sets"]["ref"]["conv_seconds"] / best["conv_seconds"]
        for core in CORE_ARCH:
            r = model_program(prog, core)
            row.setdefault("modelled", {})[core] = {"seconds": r.rows[i].seconds,
                                                    "gbmacs_per_s": bm / r.rows[i].seconds / 1e9}
        layers.append(row)
        print(f"{row['shape']} (bgemm M={M} N={N} K={K}): " + ", ".join(
              f"{ks} {v['bgemm_gbmacs_per_s']:.1f} / {v['conv_gbmacs_per_s']:.1f}" for ks, v in row["sets"].items())
              + " G bMAC/s (bgemm / whole conv)", flush=True)
    # thread scaling: the largest layer and the networks, with the auto set, 1 thread vs all cores
    cores = default_threads()
    counts = sorted({1, 2, cores})
    g = resnet_layer_graph(*RESNET_SHAPES[0])
    prog = lower_cpu(g)
    x = np.random.default_rng(1).integers(-128, 128, (RESNET_SHAPES[0][0],) * 2 + (RESNET_SHAPES[0][1],))
    scaling: dict[str, Any] = {"layer": f"{RESNET_SHAPES[0][0]}x{RESNET_SHAPES[0][0]}x{RESNET_SHAPES[0][1]}", "kernels": auto,
               "seconds": {}}
    for t in counts:
        _, tot = CpuModel(prog, threads=t).time(x, repeat=repeat, warmup=2)
        scaling["seconds"][t] = float(np.median(tot))
    print(f"threads, {scaling['layer']} layer: " + ", ".join(f"{t}: {v * 1e3:.3f} ms" for t, v in
                                                            scaling["seconds"].items()), flush=True)
    nets = []
    from .flows.prepare import prepare_network
    progs = {}
    for name in CPU_NETS:
        prep = prepare_network(name, out / name, n_inputs=4, echo=lambda m: None)
        progs[name] = (lower_cpu(prep.graph), prep.int_inputs[0])
    # NET_ROUNDS rounds, the networks and thread counts interleaved in each, so a ratio compares times
    # taken under the same load; medians over the rounds
    load = [os.getloadavg()[0]]
    rounds: dict[str, dict[int, list[dict]]] = {n: {t: [] for t in counts} for n in CPU_NETS}
    for _ in range(NET_ROUNDS):
        for name, (prog, x) in progs.items():
            for t in counts:
                rounds[name][t].append(measure_native(prog, x, repeat=repeat * 4, threads=t))
    load.append(os.getloadavg()[0])
    for name, (prog, _x) in progs.items():
        by_round = rounds[name]
        one = float(np.median([v["seconds"] for v in by_round[1]]))
        row = {"network": name, "bmacs": prog.bmacs, "macs": prog.macs, "native_seconds": one,
               "native_binary_gops": 2 * prog.bmacs / one / 1e9, "kernels": by_round[1][0]["kernels"],
               "threads_seconds": {t: float(np.median([v["seconds"] for v in by_round[t]])) for t in counts},
               "rounds_seconds": {t: [v["seconds"] for v in by_round[t]] for t in counts}, "modelled": {}}
        for core in CORE_ARCH:
            r = model_program(prog, core)
            row["modelled"][core] = {"seconds": r.seconds, "clock_mhz": r.clock_mhz,
                                     "roofline_bmacs_per_cycle": r.roofline_bmacs_per_cycle,
                                     "kernel_bmacs_per_cycle": r.kernel_bmacs_per_cycle}
        nets.append(row)
        print(f"{name}: " + ", ".join(f"{t} thread(s) {v * 1e3:.3f} ms" for t, v in row["threads_seconds"].items())
              + " native; modelled " + ", ".join(f"{c} {v['seconds'] * 1e3:.2f} ms" for c, v in row["modelled"].items()),
              flush=True)
    # the targets' ratios, per round (same round = same load) and their medians
    cnv_r, nas_r = (rounds[n][1] for n in CPU_NETS)
    ratio = [x["seconds"] / y["seconds"] for x, y in zip(nas_r, cnv_r, strict=True)]
    speedup = {n: [x["seconds"] / y["seconds"] for x, y in zip(rounds[n][1], rounds[n][2], strict=True)]
               for n in CPU_NETS} if 2 in counts else {}
    ratios = {"nasbnn_over_cnv_1_thread": ratio, "nasbnn_over_cnv_1_thread_median": float(np.median(ratio)),
              "speedup_2_threads": speedup,
              "speedup_2_threads_median": {n: float(np.median(v)) for n, v in speedup.items()},
              "rounds": NET_ROUNDS, "load_average_1min": load}
    print(f"{CPU_NETS[1]} / {CPU_NETS[0]}, one thread, per round: " + ", ".join(f"{v:.2f}" for v in ratio)
          + "; 2 threads / 1 thread: " + "; ".join(f"{n} " + ", ".join(f"{v:.2f}" for v in sp) for n, sp in speedup.items())
          + f" (load average {load[0]:.2f} -> {load[1]:.2f})", flush=True)
    return {"machine": machine_name(), "cpu_features": cpu_kernels.kernel_cpu_features(), "cores": cores,
            "kernel_sets": sets, "auto": auto, "lacking": lacking, "peaks_gbmacs_per_s": peaks,
            "peak_gbmacs_per_s": peak, "layers": layers, "threads": scaling, "networks": nets, "ratios": ratios,
            "note": "native figures measured on this (shared, noisy) machine, median of repeated runs, one thread "
                    "unless a thread count is given; ARM figures modelled by bnhw.hw.cpu.perfmodel, not measured"}


def random_cell_nets(n: int, seed: int = 0, resolution: int = 32) -> list:
    """``n`` random derived cell networks of the kinds the cell searches return: random genotypes of the BNAS v2
    operations (none with a constant node, which no back end builds), alternately stacked BNAS-style (3, 5 or 8
    cells, 4-16 channels) and in a BARS stage layout (1-3 cells per stage, widths 0.5-1.25), default precision
    (the search's ``best_arch.json``; the lowering makes it fixed point)."""
    from .design.bnas import random_genotype
    from .spec.cells import CELL_OPS, CellNetSpec

    rng = random.Random(seed)
    out: list = []
    k = 0
    while len(out) < n:
        g = random_genotype(CELL_OPS, seed=1000 * seed + k)
        k += 1
        c = rng.randrange(4, 17, 2)
        if len(out) % 2 == 0:
            spec = CellNetSpec(g, cells=rng.choice((3, 5, 8)), init_channels=c, resolution=resolution, space="bnas",
                               name=f"random-bnas-{len(out):02d}")
        else:
            stages = tuple(rng.randint(1, 3) for _ in range(3))
            spec = CellNetSpec(g, cells=sum(stages) + 2, init_channels=c, resolution=resolution, space="bars",
                               stage_cells=stages, stage_widths=tuple(rng.choice((0.5, 0.75, 1.0, 1.25))
                                                                      for _ in range(3)),
                               name=f"random-bars-{len(out):02d}")
        if not spec.hardware_gaps():
            out.append(spec)
    return out


def bench_cpu_latency(out: Path, n: int = 20, n_arm: int = 5, seed: int = 0, repeat: int = 20,
                      cells: bool = False) -> dict:
    """The search's CPU latency predictor against measurement (native) and QEMU instruction counts (ARM), on
    random nasbnn-cifar subnets or (``cells``) random derived cell networks (:func:`random_cell_nets`)."""
    from .flows.cpu_bench import measure_native
    from .hw.cpu import insn_count as ic
    from .hw.cpu.cross import toolchain_status
    from .hw.cpu.latency import cpu_latency, machine_name, op_key, program_input, spec_cpu_program
    from .hw.cpu.program import write_model
    from .hw.cpu.runtime import default_threads

    if out.exists():
        shutil.rmtree(out)            # a fresh table: every layer shape measured in this run
    out.mkdir(parents=True)
    if cells:
        specs = random_cell_nets(n, seed)
        space_name = f"derived cell networks (BNAS / BARS) at {specs[0].resolution}x{specs[0].resolution}"
    else:
        space = get_space("nasbnn-cifar").for_task(10)
        space_name = f"{space.name} subnets"
        rng = random.Random(seed)
        pool = sorted({space.sample(rng) for _ in range(10 * n)} | {space.smallest(), space.largest()}, key=ops_of)
        # spread over the OPs range (uniform samples crowd the middle): evenly spaced in the sorted pool, both ends
        picks = sorted({round(i * (len(pool) - 1) / max(1, n - 1)) for i in range(n)})
        specs = [pool[k].replace(name=f"random-{i:02d}") for i, k in enumerate(picks)]
    arm_every = max(1, len(specs) // max(1, n_arm)) if n_arm else 0
    all_cores = default_threads()
    thread_counts = [1] + ([all_cores] if all_cores > 1 else [])
    rows: list[dict] = []
    keys: set[str] = set()
    t0 = time.time()
    for i, spec in enumerate(specs):
        prog = spec_cpu_program(spec)
        keys.update(op_key(o, prog) for o in prog.ops)
        x = program_input(prog, seed=1)      # the table is timed on seed 0's input
        row: dict[str, Any] = {"arch": spec.short(), "ops": ops_of(spec), "bmacs": prog.bmacs, "cpu_ops": len(prog.ops),
                               "op_kinds": sorted({o.op for o in prog.ops}), "native": {}, "modelled_ms": {}}
        for t in thread_counts:
            est = cpu_latency(spec, "native", threads=t, cache_path=out / f"cpu_cache_t{t}.json", program=prog)
            meas = measure_native(prog, x, repeat=repeat, threads=t)
            # the table holds per-op medians; the same statistic of this measurement (the sum of its per-op
            # medians) compares like with like on a shared machine, where whole runs catch other jobs' bursts
            op_sum = sum(r["seconds"] for r in meas["rows"]) * 1e3
            row["native"][str(t)] = {"predicted_ms": est.ms, "measured_ms": meas["seconds"] * 1e3,
                                     "rel_error": est.ms / (meas["seconds"] * 1e3) - 1,
                                     "measured_op_median_sum_ms": op_sum, "rel_error_op_medians": est.ms / op_sum - 1,
                                     "new_table_entries": est.new_table_entries, "kernels": est.kernels}
        for core in ("cortex-a9", "cortex-a53", "cortex-a72"):
            row["modelled_ms"][core] = cpu_latency(spec, core, program=prog).ms
        if arm_every and i % arm_every == 0 and i // arm_every < n_arm:
            model_file = write_model(prog, out / f"{spec.name}.bnhwcpu")
            row["arm_counts"] = {}
            for arch in ("aarch64", "armv7"):
                ok, why = toolchain_status(arch)
                if ok:
                    got = sum(ic.by_op(ic.bnhw_symbols(ic.run_count(arch, model_file, x))).values())
                    pred = ic.modelled_program_instructions(prog, arch)
                    row["arm_counts"][arch] = {"counted": got, "modelled": pred, "rel_error": pred / got - 1}
        rows.append(row)
        print(f"{i + 1}/{len(specs)} {row['ops'] / 1e6:.2f} MOPs: "
              + ", ".join(f"{t} thread(s) predicted {v['predicted_ms']:.3f} ms, measured {v['measured_ms']:.3f} ms "
                          f"({v['rel_error']:+.1%}, {v['new_table_entries']} new entries)"
                          for t, v in row["native"].items())
              + "".join(f"; {a} insns {v['rel_error']:+.1%}" for a, v in row.get("arm_counts", {}).items())
              + f" [{time.time() - t0:.0f} s]", flush=True)
    res: dict[str, Any] = {"machine": machine_name(), "space": space_name, "subnets": len(specs), "seed": seed,
                           "repeat": repeat, "rows": rows, "distinct_layer_shapes": len(keys),
                           "cpu_ops": sum(r["cpu_ops"] for r in rows), "native": {}, "arm": {}, "skipped": {}}
    for t in thread_counts:
        errs = [abs(r["native"][str(t)]["rel_error"]) for r in rows]
        errs_op = [abs(r["native"][str(t)]["rel_error_op_medians"]) for r in rows]
        res["native"][str(t)] = {"mean_abs_rel_error": statistics.mean(errs), "max_abs_rel_error": max(errs),
                                 "mean_abs_rel_error_op_medians": statistics.mean(errs_op),
                                 "max_abs_rel_error_op_medians": max(errs_op),
                                 "load_average": os.getloadavg()[0],
                                 "mean_signed_rel_error": statistics.mean(r["native"][str(t)]["rel_error"]
                                                                          for r in rows),
                                 "kernels": rows[0]["native"][str(t)]["kernels"]}
    from scipy.stats import kendalltau

    meas1 = [r["native"]["1"]["measured_ms"] for r in rows]
    res["kendall_tau_vs_measured_1_thread"] = {     # how well each ranks the subnets by measured latency
        "ops": float(kendalltau([r["ops"] for r in rows], meas1).statistic),
        "table_prediction": float(kendalltau([r["native"]["1"]["predicted_ms"] for r in rows], meas1).statistic),
        "cortex-a53_model": float(kendalltau([r["modelled_ms"]["cortex-a53"] for r in rows], meas1).statistic)}
    for arch in ("aarch64", "armv7"):
        errs = [r["arm_counts"][arch]["rel_error"] for r in rows if arch in r.get("arm_counts", {})]
        if errs:
            res["arm"][arch] = {"subnets": len(errs), "mean_abs_rel_error": statistics.mean(abs(e) for e in errs),
                                "max_abs_rel_error": max(abs(e) for e in errs), "mean_signed_rel_error":
                                statistics.mean(errs)}
        else:
            ok, why = toolchain_status(arch)
            res["skipped"][arch] = why if not ok else "--arm-subnets 0"
            print(f"ARM counts skipped: {res['skipped'][arch]}", flush=True)
    res["note"] = ("native: predicted = the search's table (the networks' ops timed in the runtime once per distinct layer shape, "
                   "median of a few runs, summed); measured = the whole network in the runtime, median of the per-run sums of per-op wall "
                   "times (bench-cpu's latency); this machine is shared, so both are noisy.  ARM: executed guest "
                   "instructions under qemu-user vs perfmodel's mixes, one per instruction (the model's cycles are not "
                   "measured anywhere)")
    return res


def _cpu_latency_table(r: dict) -> str:
    lines = [f"Search latency predictor, {r['subnets']} random {r['space']} on {r['machine']} "
             f"({r['distinct_layer_shapes']} distinct layer shapes among {r['cpu_ops']} CPU ops):", "",
             "| target | threads | kernels | mean abs error | max abs error | mean signed error |",
             "|---|---:|---|---:|---:|---:|"]
    for t, v in r["native"].items():
        lines.append(f"| native (table vs whole network measured) | {t} | {v['kernels']} | {v['mean_abs_rel_error']:.1%} "
                     f"| {v['max_abs_rel_error']:.1%} | {v['mean_signed_rel_error']:+.1%} |")
        if "mean_abs_rel_error_op_medians" in v:
            lines.append(f"| native (table vs the same runs' per-op medians summed) | {t} | {v['kernels']} | "
                         f"{v['mean_abs_rel_error_op_medians']:.1%} | {v['max_abs_rel_error_op_medians']:.1%} | |")
    for arch, v in r["arm"].items():
        lines.append(f"| {arch} (model's instructions vs QEMU-executed, {v['subnets']} subnets) | 1 | neon | "
                     f"{v['mean_abs_rel_error']:.1%} | {v['max_abs_rel_error']:.1%} | {v['mean_signed_rel_error']:+.1%} |")
    for arch, why in r["skipped"].items():
        lines.append(f"{arch} skipped: {why}")
    kt = r["kendall_tau_vs_measured_1_thread"]
    lines += ["", f"Kendall tau against the measured one-thread latency: OPs {kt['ops']:.2f}, the table's prediction "
              f"{kt['table_prediction']:.2f}, the Cortex-A53 model {kt['cortex-a53_model']:.2f}"]
    lines += ["", "| # | MOPs | M binary MACs | CPU ops | " + " | ".join(f"native {t}t predicted / measured ms"
                                                                 for t in r["native"])
              + " | A9 / A53 / A72 ms (model) |", "|---:|---:|---:|---:|" + "---:|" * (len(r["native"]) + 1)]
    for i, x in enumerate(r["rows"]):
        lines.append(f"| {i} | {x['ops'] / 1e6:.2f} | {x['bmacs'] / 1e6:.1f} | {x['cpu_ops']} | "
                     + " | ".join(f"{v['predicted_ms']:.3f} / {v['measured_ms']:.3f}" for v in x["native"].values())
                     + " | " + " / ".join(f"{x['modelled_ms'][c]:.2f}" for c in ("cortex-a9", "cortex-a53", "cortex-a72"))
                     + " |")
    return "\n".join(lines)


#: (M, N, K words) of bgemm_small as nasbnn-cifar-smallest's shallow convs call it: a block of output pixels,
#: a group's output channels (6-96), 3x3 taps of one or two words
#: bgemm_small at nasbnn's shapes: im2col blocks (M x N x K words), and tap rows (32 x 6 x 3, 32 x 12 x 3:
#: one window row of a 32-pixel image row, its 32x32 convs; 16 x 12 x 3: its 16x16 two-group conv)
SMALL_GEMM_SHAPES = ((256, 6, 9), (256, 12, 18), (256, 24, 9), (64, 48, 18), (64, 96, 9), (37, 7, 18),
                     (32, 6, 3), (32, 12, 3), (16, 12, 3))


def bench_arm_counts(out: Path) -> dict:
    """The ARM cycle model's instruction mixes against executed instruction counts under QEMU: the NEON
    bgemm at the four ResNet shapes, the shallow-conv bgemm_small at nasbnn's shapes (SMALL_GEMM_SHAPES) and
    one nasbnn-cifar-smallest inference (bnhw's own code), ARMv7 and
    AArch64.  Counts are exact executions (QEMU's block logs); the predictions are perfmodel's mixes with
    every instruction counted once."""
    from .flows.prepare import prepare_network
    from .hw.cpu import insn_count as ic
    from .hw.cpu.cross import toolchain_status
    from .hw.cpu.program import lower_cpu, write_model

    out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"bgemm": [], "network": [], "skipped": {}}
    prep = prepare_network("nasbnn-cifar-smallest", out / "nasbnn-cifar-smallest", n_inputs=1, echo=lambda m: None)
    prog = lower_cpu(prep.graph)
    model_file = write_model(prep.graph, out / "nasbnn-cifar-smallest.bnhwcpu")
    for arch in ("armv7", "aarch64"):
        ok, why = toolchain_status(arch)
        if not ok:
            print(f"ARM counts skipped: {why}", flush=True)
            res["skipped"][arch] = why
            continue
        for side, c in RESNET_SHAPES:
            M, N, K = side * side, c, 9 * c // 64
            got = ic.bgemm_count(arch, M, N, K)
            pred = ic.modelled_bgemm_instructions(arch, M, N, K)
            res["bgemm"].append({"arch": arch, "shape": f"{side}x{side}x{c}", "M": M, "N": N, "K": K,
                                 "counted": got, "modelled": pred, "rel_error": (pred - got) / got})
            print(f"{arch} bgemm {side}x{side}x{c}: counted {got:,}, modelled {pred:,.0f} "
                  f"({(pred - got) / got:+.1%})", flush=True)
        for M, N, K in SMALL_GEMM_SHAPES:
            got = ic.bgemm_count(arch, M, N, K, small=True)
            pred = ic.modelled_bgemm_small_instructions(arch, M, N, K)
            res["bgemm"].append({"arch": arch, "shape": f"small {M}x{N}x{K}", "M": M, "N": N, "K": K,
                                 "counted": got, "modelled": pred, "rel_error": (pred - got) / got})
            print(f"{arch} bgemm_small M {M} N {N} K {K}: counted {got:,}, modelled {pred:,.0f} "
                  f"({(pred - got) / got:+.1%})", flush=True)
        counts = ic.bnhw_symbols(ic.run_count(arch, model_file, prep.int_inputs[0]))
        got_ops, pred_ops = ic.by_op(counts), ic.modelled_by_op(prog, arch)
        got, pred = sum(got_ops.values()), sum(pred_ops.values())
        res["network"].append({"arch": arch, "network": "nasbnn-cifar-smallest", "counted": got, "modelled": pred,
                               "rel_error": (pred - got) / got,
                               "by_op": {k: {"counted": got_ops.get(k, 0), "modelled": pred_ops.get(k, 0.0)}
                                         for k in sorted(set(got_ops) | set(pred_ops))}})
        print(f"{arch} nasbnn-cifar-smallest: counted {got:,}, modelled {pred:,.0f} ({(pred - got) / got:+.1%})",
              flush=True)
    errs = [abs(r["rel_error"]) for r in res["bgemm"]]
    if errs:
        res["bgemm_mean_abs_rel_error"] = sum(errs) / len(errs)
        res["bgemm_max_abs_rel_error"] = max(errs)
    res["note"] = ("counted: executed guest instructions under qemu-user (-d in_asm,exec,nochain); modelled: "
                   "bnhw.hw.cpu.perfmodel's instruction mixes, one per instruction (a MODEL, checked here)")
    return res


def _arm_count_table(r: dict) -> str:
    lines = ["Executed instructions under QEMU (counted) vs the ARM cycle model's instruction mixes (modelled):", "",
             "| ISA | what | counted | modelled | error |", "|---|---|---:|---:|---:|"]
    for x in r["bgemm"]:
        lines.append(f"| {x['arch']} | bgemm {x['shape']} (M {x['M']}, N {x['N']}, K {x['K']}) | {x['counted']:,} | "
                     f"{x['modelled']:,.0f} | {x['rel_error']:+.1%} |")
    for x in r["network"]:
        lines.append(f"| {x['arch']} | {x['network']}, one inference | {x['counted']:,} | {x['modelled']:,.0f} | "
                     f"{x['rel_error']:+.1%} |")
        for k, v in x["by_op"].items():
            if v["counted"]:
                err = (v["modelled"] - v["counted"]) / v["counted"]
                lines.append(f"| {x['arch']} | &nbsp; {k} ops | {v['counted']:,} | {v['modelled']:,.0f} | {err:+.1%} |")
    if "bgemm_mean_abs_rel_error" in r:
        lines += ["", f"bgemm: mean |error| {r['bgemm_mean_abs_rel_error']:.1%}, max {r['bgemm_max_abs_rel_error']:.1%}"]
    for arch, why in r["skipped"].items():
        lines.append(f"{arch} skipped: {why}")
    return "\n".join(lines)


#: the cell ops whose code runtime.c inlines into bnhw_model_run (counted there, with glibc's memcpy)
CELL_OPS = ("WPOOL", "CONCAT", "GAP")


def bench_arm_cells(out: Path, n: int = 4, seed: int = 0) -> dict:
    """The ARM model's instruction counts against QEMU's executed instructions on cell networks: the zoo's
    bnas-kv260-8x8 and bars-kv260-8x8 and ``n`` random derived cell networks (:func:`random_cell_nets`),
    one inference each (input: ``program_input`` seed 1), AArch64 and ARMv7: the whole network (bnhw's own
    code) and the cell ops (the counted ``bnhw_model_run`` + memcpy, which also holds the run loop's own
    per-op instructions, against the modelled WPOOL + CONCAT + GAP), and the counts per op kind."""
    from .hw.cpu import insn_count as ic
    from .hw.cpu.cross import toolchain_status
    from .hw.cpu.latency import program_input, spec_cpu_program
    from .hw.cpu.program import write_model
    from .spec.zoo import get_arch

    out.mkdir(parents=True, exist_ok=True)
    specs = [get_arch("bnas-kv260-8x8"), get_arch("bars-kv260-8x8")] + random_cell_nets(n, seed)[:n]
    res: dict[str, Any] = {"rows": [], "skipped": {}, "summary": {}}
    t0 = time.time()
    for spec in specs:
        prog = spec_cpu_program(spec)
        x = program_input(prog, seed=1)
        model_file = write_model(prog, out / f"{spec.name}.bnhwcpu")
        for arch in ("aarch64", "armv7"):
            ok, why = toolchain_status(arch)
            if not ok:
                res["skipped"][arch] = why
                continue
            counts = ic.bnhw_symbols(ic.run_count(arch, model_file, x))
            got_ops, pred_ops = ic.by_op(counts), ic.modelled_by_op(prog, arch)
            got_cell = counts.get("bnhw_model_run", 0) + sum(v for s, v in counts.items() if "memcpy" in s)
            row = {"network": spec.name, "arch": arch, "cpu_ops": len(prog.ops), "counted": sum(got_ops.values()),
                   "modelled": sum(pred_ops.values()), "counted_cell": got_cell,
                   "modelled_cell": sum(pred_ops.get(k, 0.0) for k in CELL_OPS),
                   "by_op": {k: {"counted": got_ops.get(k, 0), "modelled": pred_ops.get(k, 0.0)}
                             for k in sorted(set(got_ops) | set(pred_ops))}}
            row["rel_error"] = row["modelled"] / row["counted"] - 1
            row["rel_error_cell"] = row["modelled_cell"] / got_cell - 1
            res["rows"].append(row)
            print(f"{spec.name} {arch}: counted {row['counted']:,}, modelled {row['modelled']:,.0f} "
                  f"({row['rel_error']:+.1%}); cell ops {got_cell:,} vs {row['modelled_cell']:,.0f} "
                  f"({row['rel_error_cell']:+.1%}) [{time.time() - t0:.0f} s]", flush=True)
    for arch in ("aarch64", "armv7"):
        rows = [r for r in res["rows"] if r["arch"] == arch]
        if rows:
            res["summary"][arch] = {k: {"mean_abs_rel_error": statistics.mean(abs(r[k]) for r in rows),
                                        "max_abs_rel_error": max(abs(r[k]) for r in rows),
                                        "mean_signed_rel_error": statistics.mean(r[k] for r in rows)}
                                    for k in ("rel_error", "rel_error_cell")}
    for arch, why in res["skipped"].items():
        print(f"ARM counts skipped ({arch}): {why}", flush=True)
    res["note"] = ("counted: executed guest instructions under qemu-user; modelled: perfmodel's mixes, one per "
                   "instruction (a MODEL); the counted cell ops include the run loop's own per-op instructions")
    return res


def _arm_cells_table(r: dict) -> str:
    lines = ["ARM model (modelled) vs QEMU-executed instructions (counted) on cell networks:", "",
             "| network | ISA | CPU ops | counted | modelled | error | cell ops counted | modelled | error |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        lines.append(f"| {x['network']} | {x['arch']} | {x['cpu_ops']} | {x['counted']:,} | {x['modelled']:,.0f} | "
                     f"{x['rel_error']:+.1%} | {x['counted_cell']:,} | {x['modelled_cell']:,.0f} | "
                     f"{x['rel_error_cell']:+.1%} |")
    for arch, v in r["summary"].items():
        lines.append(f"\n{arch}: whole network mean |error| {v['rel_error']['mean_abs_rel_error']:.1%}, max "
                     f"{v['rel_error']['max_abs_rel_error']:.1%}; cell ops mean |error| "
                     f"{v['rel_error_cell']['mean_abs_rel_error']:.1%}, max {v['rel_error_cell']['max_abs_rel_error']:.1%}")
    for arch, why in r["skipped"].items():
        lines.append(f"{arch} skipped: {why}")
    return "\n".join(lines)


LCE_PINS = ("larq-compute-engine==0.16.0", "larq==0.14.0", "tensorflow-cpu==2.15.1")


def _lce_python(root: Path) -> tuple[Path | None, str]:
    """bench/lce-venv's python, creating the virtualenv (LCE_PINS from PyPI) on first use; (None, why)
    when it cannot be made."""
    venv = root / "bench" / "lce-venv"
    py = venv / "bin" / "python"
    if py.exists():
        return py, ""
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
        r = subprocess.run([str(py), "-m", "pip", "install", "--progress-bar", "off", *LCE_PINS],
                           capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"cannot create {venv}: {e}"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        shutil.rmtree(venv, ignore_errors=True)
        return None, f"pip cannot install {' '.join(LCE_PINS)} on Python {sys.version.split()[0]}: {last}"
    return py, ""


def bench_lce(out: Path, repeat: int = 30) -> dict:
    """Larq Compute Engine 0.16.0 beside bnhw on ResNet's binary 3x3 conv shapes, one thread, one run:
    LCE's converter and interpreter in bench/lce-venv (bench/lce_bench.py), bnhw's whole conv op with
    the kernel set auto picks.  Never part of the tests."""
    from .flows.cpu_bench import machine_name
    from .hw.cpu import kernels as cpu_kernels
    from .hw.cpu.program import lower_cpu
    from .hw.cpu.runtime import CpuModel

    out.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[1]
    py, why = _lce_python(root)
    if py is None:
        print(f"LCE skipped: {why}", flush=True)
        return {"skipped": why}
    shapes = [f"{side}:{c}" for side, c in RESNET_SHAPES]
    r = subprocess.run([str(py), str(root / "bench" / "lce_bench.py"), str(out / "lce_raw.json"), *shapes],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        why = "LCE benchmark failed: " + (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(why, flush=True)
        return {"skipped": why}
    lce = json.loads((out / "lce_raw.json").read_text())
    rows = []
    for (side, c), lr in zip(RESNET_SHAPES, lce["rows"], strict=True):
        prog = lower_cpu(resnet_layer_graph(side, c))
        i = next(k for k, o in enumerate(prog.ops) if o.op == "BCONV")
        x = np.random.default_rng(1).integers(-128, 128, (side, side, c))
        m = CpuModel(prog, threads=1)
        per, _ = m.time(x, repeat=repeat, warmup=2)
        t = float(np.median(per[:, i]))
        bm = prog.ops[i].bmacs
        rows.append({**lr, "bmacs": bm, "bnhw_kernels": m.kernels, "bnhw_conv_seconds": t,
                     "ratio_lce_one_conv": lr["lce_one_conv_seconds"] / t,
                     "ratio_lce_packed_conv_est": lr["lce_packed_conv_seconds_est"] / t})
        print(f"{lr['shape']}: bnhw {t * 1e3:.3f} ms ({m.kernels}), LCE one conv {lr['lce_one_conv_seconds'] * 1e3:.3f} ms "
              f"({rows[-1]['ratio_lce_one_conv']:.1f}x)", flush=True)
    return {"machine": machine_name(), "cpu_features": cpu_kernels.kernel_cpu_features(),
            "lce_version": lce["lce_version"], "tensorflow": lce["tensorflow"], "rows": rows,
            "note": "one run, one thread, medians; LCE: float input -> LceQuantize -> LceBconv2d -> float output "
                    "(one conv), and (two convs - one conv) as an estimate of a bit-packed-in / bit-packed-out conv; "
                    "bnhw: the whole conv op (im2col, bgemm, padding correction, threshold + pack), packed in and out"}


def _lce_table(r: dict) -> str:
    if "skipped" in r:
        return f"LCE side by side skipped: {r['skipped']}"
    lines = [f"Larq Compute Engine {r['lce_version']} (TensorFlow {r['tensorflow']}) vs bnhw, binary 3x3 conv, one "
             f"thread on {r['machine']}, one run (ms, median):", "",
             "| shape | bnhw whole conv op | LCE one-conv model | LCE (two - one) conv | LCE / bnhw |",
             "|---|---:|---:|---:|---:|"]
    for x in r["rows"]:
        lines.append(f"| {x['shape']} | {x['bnhw_conv_seconds'] * 1e3:.3f} (`{x['bnhw_kernels']}`) | "
                     f"{x['lce_one_conv_seconds'] * 1e3:.3f} | {x['lce_packed_conv_seconds_est'] * 1e3:.3f} | "
                     f"{x['ratio_lce_one_conv']:.1f}x / {x['ratio_lce_packed_conv_est']:.1f}x |")
    return "\n".join(lines)


def _cpu_table(r: dict) -> str:
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in r["peaks_gbmacs_per_s"].items())
    sets = [*r["kernel_sets"], "ref"]
    lines = [f"Binary 3x3 convolution, one thread on {r['machine']} (XOR-popcount peaks measured, G binary MACs/s: "
             f"{peaks}; auto picks `{r['auto']}`).  G binary MACs/s of the bgemm alone / the whole conv op "
             "(im2col, bgemm, padding correction, threshold + pack):", "",
             "| layer (bgemm M, N, K words) | " + " | ".join(sets) + " | auto / ref | A9 (model) | A53 (model) | "
             "A72 (model) |", "|---|" + "---:|" * (len(sets) + 4)]
    for x in r["layers"]:
        md = x["modelled"]
        lines.append(f"| {x['shape']} ({', '.join(map(str, x['bgemm']))}) | "
                     + " | ".join(f"{x['sets'][s]['bgemm_gbmacs_per_s']:.1f} / {x['sets'][s]['conv_gbmacs_per_s']:.1f}"
                                  for s in sets)
                     + f" | {x['speedup_vs_ref']:.0f}x | "
                     + " | ".join(f"{md[c]['gbmacs_per_s']:.1f}" for c in ("cortex-a9", "cortex-a53", "cortex-a72"))
                     + " |")
    if r["lacking"]:
        lines += ["", "Not measured: " + "; ".join(f"{s} ({why})" for s, why in r["lacking"].items())]
    th = r["threads"]
    lines += ["", f"Threads (kernels `{th['kernels']}`, {r['cores']} online cores), {th['layer']} layer: "
              + ", ".join(f"{t}: {v * 1e3:.3f} ms" for t, v in th["seconds"].items()), ""]
    counts = list(r["networks"][0]["threads_seconds"]) if r["networks"] else []
    lines += ["| network | binary MACs | " + " | ".join(f"native ms, {t} thread(s)" for t in counts)
              + " | A9 ms | A53 ms | A72 ms (modelled) |", "|---|---:|" + "---:|" * (len(counts) + 3)]
    for x in r["networks"]:
        md = x["modelled"]
        lines.append(f"| {x['network']} | {x['bmacs'] / 1e6:.1f}M | "
                     + " | ".join(f"{v * 1e3:.3f}" for v in x["threads_seconds"].values()) + " | "
                     + " | ".join(f"{md[c]['seconds'] * 1e3:.2f}" for c in ("cortex-a9", "cortex-a53", "cortex-a72"))
                     + " |")
    q = r.get("ratios")
    if q:
        lines += ["", f"Medians of {q['rounds']} rounds (networks and thread counts interleaved in each round; "
                  f"1-minute load average {q['load_average_1min'][0]:.2f} before, {q['load_average_1min'][1]:.2f} after).  "
                  f"nasbnn-cifar-smallest / CNV-W1A1, one thread: {q['nasbnn_over_cnv_1_thread_median']:.2f} (per round "
                  + ", ".join(f"{v:.2f}" for v in q["nasbnn_over_cnv_1_thread"]) + ")"
                  + "".join(f"; {n} 2 threads vs 1: {v:.2f}x (per round "
                            + ", ".join(f"{w:.2f}" for w in q["speedup_2_threads"][n]) + ")"
                            for n, v in q["speedup_2_threads_median"].items())]
    return "\n".join(lines)


def _sim_table(r: dict) -> str:
    lines = ["| network | units | frames | simulated cycles | II (analytical) | timing mode | functional mode | "
             "FIFO sizing |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        lines.append(f"| {x['network']} ({x['folding']}) | {x['units']} | {x['frames']} | {x['cycles']:,} | "
                     f"{x['ii_cycles']:,.0f} ({x['analytic_ii']:,}) | {x['timing_seconds']:.2f} s = "
                     f"{x['cycles_per_second'] / 1e6:.2f} M cycles/s | {x['functional_seconds']:.2f} s, "
                     f"bit-exact {x['functional_bit_exact']} | {x['sizing_seconds']:.1f} s, {x['sizing_runs']} runs"
                     f"{'' if x['sizing_complete'] else ' (budget hit)'} |")
    return "\n".join(lines)


def _fpga_table(r: dict) -> str:
    head = ["| network | SetFolding designs fitting pynq-z2 | bnhw faster | max FPS ratio | geomean |",
            "|---|---:|---:|---:|---:|"]
    for net, x in r["summary"].items():
        if x["designs"]:
            head.append(f"| {net} | {x['designs']} | {x['higher_fps']} | {x['max_ratio']:.2f} | "
                        f"{x['geomean_ratio']:.3f} |")
        else:
            head.append(f"| {net} | 0 (no SetFolding design fits) | | | |")
    lines = head + ["", "| network | SetFolding target | SetFolding FPS | bnhw FPS (same LUT/BRAM) | ratio | LUT SF/bnhw | "
             "BRAM18 SF/bnhw |", "|---|---:|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        lines.append(f"| {x['network']} | {x['target_cycles']:,} | {x['fps_setfolding']:,.0f} | {x['fps_bnhw']:,.0f} | "
                     f"{x['fps_ratio']:.2f} | {x['setfolding']['LUT']:,.0f} / {x['bnhw']['LUT']:,.0f} | "
                     f"{x['setfolding']['BRAM18']:,.0f} / {x['bnhw']['BRAM18']:,.0f} |")
    return "\n".join(lines)


def search_bench(args, out: Path) -> None:
    """Searched vs random under the same budget: the default ``bnhw search --budget 57M`` (laptop recipe,
    without its stand-alone runs) for each seed, against the best of as many random architectures under the
    budget as the search evaluated, scored the same way (inherited weights from the same supernet, BN
    recalibrated, held-out val split) and compared on the test split."""
    from .data.datasets import load_data
    from .design.evolution import EvolutionConfig
    from .design.supernet import BinarySupernet, SupernetConfig
    from .design.train import load_training_checkpoint
    from .flows.search import RECIPES
    from .flows.standalone import StandaloneOptions

    q = args.quick
    budget = 57e6
    r = RECIPES["laptop"]
    seeds = [0] if q else [0, 1, 2]
    epochs = 2 if q else r.epochs
    t0 = time.time()
    results: dict = {"machine": {"cpu_threads": torch.get_num_threads(), "python": platform.python_version(),
                                 "torch": torch.__version__},
                     "config": {"recipe": "laptop", "epochs": epochs, "seeds": seeds, "space": "nasbnn-imagenet"},
                     "budget_ops": budget, "rows": []}
    for seed in seeds:
        run = out / f"search-seed{seed}"
        opts = SearchOptions(
            budget=budget, seed=seed,
            train=TrainConfig(epochs=epochs, warmup_epochs=epochs * r.warmup_epochs // r.epochs,
                              batch_size=r.batch_size, lr=r.lr, seed=seed),
            supernet=SupernetConfig(weight_norm=r.weight_norm, rprelu_init=r.rprelu_init,
                                    zero_init_residual=r.zero_init_residual),
            evolution=EvolutionConfig(population=r.population, generations=r.generations, bucket_mops=2.0),
            standalone=StandaloneOptions(subnets=0, epochs=0), device="cpu")
        ts = time.time()
        res = run_search(opts, run, resume=(run / "config.json").exists())
        search_s = time.time() - ts
        # as many random architectures under the budget, scored on the same supernet the same way
        space = get_space(opts.space).for_task(10)
        data = load_data("digits", 32, seed=seed)
        sn = BinarySupernet(space, opts.supernet)
        sn.load_state_dict(load_training_checkpoint(run / "supernet.pt")["weights"])
        calib = calibration_batches(data.train.tensors()[0], opts.calib_batches, opts.calib_batch_size, seed)
        xv, yv = data.val.tensors()
        xt, yt = data.test.tensors()
        randoms = random_in_band(space, 0, budget, random.Random(1000 + seed), res.evaluated)
        scored = [(evaluate_subnet(sn, s, calib, xv, yv), s) for s in randoms]
        rval, rbest = max(scored, key=lambda t: (t[0], -ops_of(t[1])))
        row = {"seed": seed, "evaluated": res.evaluated, "search_seconds": round(search_s, 1),
               "searched_ops": res.best.ops, "searched_val": res.best.score, "searched_test": res.test_accuracy,
               "random_ops": ops_of(rbest), "random_val": rval,
               "random_test": evaluate_subnet(sn, rbest, calib, xt, yt),
               "random_val_median": statistics.median(v for v, _ in scored),
               "searched_arch": res.best.spec.short(), "random_arch": rbest.short()}
        results["rows"].append(row)
        print(f"seed {seed}: searched {format_ops(row['searched_ops'])} val {row['searched_val']:.3f} test "
              f"{row['searched_test']:.3f}; best of {len(randoms)} random {format_ops(row['random_ops'])} val "
              f"{row['random_val']:.3f} test {row['random_test']:.3f}", flush=True)
    rows = results["rows"]
    for k in ("searched_val", "searched_test", "random_val", "random_test", "search_seconds"):
        results[k + "_mean"] = statistics.mean(r[k] for r in rows)
    results["seconds"] = time.time() - t0
    lines = ["| seed | architectures | searched: OPs, val, test | best random: OPs, val, test | search time |",
             "|---|---|---|---|---|"]
    for r_ in rows:
        lines.append(f"| {r_['seed']} | {r_['evaluated']} | {format_ops(r_['searched_ops'])}, "
                     f"{r_['searched_val']:.3f}, {r_['searched_test']:.3f} | {format_ops(r_['random_ops'])}, "
                     f"{r_['random_val']:.3f}, {r_['random_test']:.3f} | {r_['search_seconds'] / 60:.1f} min |")
    lines.append(f"| mean | | {results['searched_val_mean']:.3f}, {results['searched_test_mean']:.3f} | "
                 f"{results['random_val_mean']:.3f}, {results['random_test_mean']:.3f} | "
                 f"{results['search_seconds_mean'] / 60:.1f} min |")
    _merge(out, "search", results, "\n".join(lines))

if __name__ == "__main__":
    main()
