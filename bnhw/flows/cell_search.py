"""``bnhw search --method bnas|bars``: the cell-based searches of BNAS v2 and BARS, end to end.

1. **Search** (:mod:`bnhw.design.bnas` / :mod:`bnhw.design.bars`) on the training split at the search
   resolution: first-order DARTS alternating optimisation, weights on one half, architecture parameters
   on the other; BNAS with the diversity regularizer (Eq. 6) and Zeroise kept through Eq. 5's ``gamma``;
   BARS with its macro level (cells and width per stage) and an expected-OPs term.  Checkpointed after
   every epoch; ``--resume`` continues.
2. **Network within the budget**: BNAS stacks the derived cell (the largest Table 5-style network whose
   counted OPs fit the budget, :func:`bnhw.design.bnas.fit_to_budget`); BARS's derived layout is already
   shrunk into it.  OPs are counted by :func:`bnhw.estimators.ops.count_ops` at ``--resolution``.
3. **Training** of the stacked network from scratch (``--final-epochs``, BNAS v2's schemes: ``minimal``
   = Adam, no weight decay, cosine; ``standard`` = SGD with momentum 0.9, weight decay 3e-6, one-cycle
   learning rate 5e-2..4e-4 (their CIFAR10 scheme); ``standard-restarts`` = SGD, weight decay 3e-5, cosine
   annealing with warm restarts (their ImageNet scheme)) with top-1 on the held-out and test splits.
4. **Hardware** (``target`` with ``min_fps`` / ``max_latency_ms``, optional): the derived network's FPGA
   estimate on the board with its branch buffering (:func:`bnhw.hw.branch_buffering.estimate_with_fifos`:
   the lowered IR folded as ``bnhw build`` folds it, FINN's analytical unit models, plus the stream FIFOs
   the cycle simulator sizes, priced with FINN's FIFO model).  A network missing a bound is shrunk until
   it meets it: BNAS restacks the derived cell under a budget 0.7x the last candidate's OPs
   (:func:`~bnhw.design.bnas.fit_to_budget`: fewer cells or channels); BARS drops a cell from its
   deepest stage while the units do not fit the board even fully folded, else narrows its initial
   channels by 2; every candidate is listed in ``best.json`` (``fpga.candidates``).  None meeting the bounds: a
   one-line error.
   With a CPU ``target`` (``native``, ``cortex-a9`` / ``a53`` / ``a72``, :mod:`bnhw.hw.cpu.latency` behind
   :class:`~bnhw.hw.constraints.CpuLatency`, the same estimate as the NAS-BNN search's) the bound is
   ``max_latency_ms`` on that CPU (modelled for the ARM cores; ``native``: per-layer-shape table timed here
   with ``threads``, cached in ``cpu_cache.json``), the derived network shrunk until it meets it (BNAS as
   for a board; BARS drops cells off its deepest stage first, then narrows its channels); every candidate
   goes to ``best.json`` (``cpu.candidates``), ``measured.csv`` and ``latency.png``.
5. **Export**: QONNX of the (trained, or freshly initialised and BN-calibrated) network, run by qonnx on
   real digit images: every binary tensor must equal PyTorch's bit for bit.

Outputs in OUT: ``best_arch.json`` (a cell-network spec every bnhw command reads), ``search.json``
(genotype, architecture parameters and their history), ``best.json`` (OPs, accuracies, export check and
what each figure means), ``model.onnx``, ``model.pt`` when trained, ``log.txt``; with a CPU target
``measured.csv`` (every candidate's latency), ``latency.png`` (the candidates' OPs against latency, the
bound) and ``cpu_cache.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import BnhwError
from ..spec import atomic_write_text

__all__ = ["CellSearchOptions", "run_cell_search", "METHODS"]

METHODS = ("bnas", "bars")
#: BNAS v2's training schemes (paper 001 Sec. 5.2 / 6.1) -> ``FitConfig.optimizer``: minimal regularization
#: (Adam, cosine, no weight decay); standard as on CIFAR10 (SGD, one-cycle); standard as on ImageNet
#: (SGD, cosine with warm restarts)
SCHEME_OPTIMIZERS = {"minimal": "adam", "standard": "sgd-onecycle", "standard-restarts": "sgd-restarts"}
SCHEMES = tuple(SCHEME_OPTIMIZERS)


@dataclass
class CellSearchOptions:
    method: str
    budget: float
    data: str = "digits"
    search_resolution: int = 16
    resolution: int = 32                 # the final network's input (OPs counted there)
    epochs: int = 8                      # search epochs
    batch_size: int = 32
    images_per_half: int | None = 256    # images in each half (weights / architecture) of the search
    search_cells: int = 5
    search_channels: int = 8
    gamma: float = 1.0
    #: architecture-parameter learning rate: 10x DARTS's 3e-4, because these searches take tens of
    #: architecture steps, not the paper's ~20k (50 epochs of CIFAR-10); at 3e-4 the parameters barely move
    arch_lr: float = 3e-3
    #: BARS: "abs" pulls the expected OPs towards the budget from both sides (a hinge leaves small layouts)
    ops_penalty: str = "abs"
    lam: float = 1.0
    tau: float = 7.7
    zeroise: bool = True
    inter_cell_skip: bool = True
    diversity: bool = True
    separable: bool = False
    final_epochs: int = 0
    #: bnas: cells of the final network, its initial channels the most that fit the budget (None: the
    #: Table 5 cell counts are all tried and the network with the most OPs within the budget wins)
    cells: int | None = None
    scheme: str = "minimal"
    train_images: int | None = None
    seed: int = 0
    verify_images: int = 8
    target: str | None = None            # FPGA board or CPU of the hardware constraints
    min_fps: float | None = None         # modelled FPS (units + FIFOs fit the board) at least this
    max_latency_ms: float | None = None  # modelled (CPU native: measured) latency at most this
    threads: int | None = None           # CPU targets: threads of the native runtime (0 / None: all cores)
    margin: float = 0.85                 # share of the board the folding of the units may use
    fifo_seconds: float = 20.0           # time budget of each candidate's FIFO sizing

    HARDWARE_FIELDS = ("target", "min_fps", "max_latency_ms", "threads", "margin", "fifo_seconds")

    def to_dict(self) -> dict:
        from .search import options_record

        return options_record(self)

    @property
    def cpu_target(self) -> bool:
        from ..hw.cpu.latency import is_cpu_target

        return is_cpu_target(self.target)

    def cpu_constraint(self, cache_path: Path | None = None):
        """The :class:`~bnhw.hw.constraints.CpuLatency` of a CPU ``target`` (bad ``--threads`` /
        ``--max-latency-ms``: one line)."""
        from ..hw.constraints import CpuLatency

        assert self.target is not None
        return CpuLatency(self.target, self.max_latency_ms, threads=self.threads or 0,
                          cache_path=str(cache_path) if cache_path is not None else None)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise BnhwError(f"unknown search method {self.method!r}; choose from nasbnn, {', '.join(METHODS)}")
        if self.scheme not in SCHEMES:
            raise BnhwError(f"unknown training scheme {self.scheme!r}; choose from {', '.join(SCHEMES)}")
        if self.gamma <= 0:
            raise BnhwError(f"--gamma must be > 0, got {self.gamma}")
        if self.cells is not None and self.method != "bnas":
            raise BnhwError(f"--cells applies to --method bnas only ({self.method} searches the stage depths)")
        if self.cells is not None and self.cells < 3:
            raise BnhwError(f"--cells must be >= 3 (two of them are reduction cells), got {self.cells}")
        if self.search_resolution % 4:
            raise BnhwError(f"--search-resolution {self.search_resolution} is not divisible by 4 (two reductions)")
        from ..hw.constraints import hardware_target
        from .search import check_hardware_flags

        if self.target is not None:
            self.target = hardware_target(self.target)        # a board or a CPU; unknown: one line listing both
        check_hardware_flags(self.target, self.min_fps, self.max_latency_ms, self.threads)
        if self.target is None:
            return
        if self.cpu_target:
            self.cpu_constraint()                             # --threads on a modelled core, ...: one line
            return
        if self.min_fps is not None and not (self.min_fps >= 0 and math.isfinite(self.min_fps)):
            raise BnhwError(f"--min-fps must be a number >= 0, got {self.min_fps:g}")
        if self.max_latency_ms is not None and not (self.max_latency_ms > 0 and math.isfinite(self.max_latency_ms)):
            raise BnhwError(f"--max-latency-ms must be a positive number, got {self.max_latency_ms:g}")
        if not 0 < self.margin <= 1:
            raise BnhwError(f"--margin must be in (0, 1], got {self.margin:g}")
        if not self.fifo_seconds > 0:
            raise BnhwError(f"--fifo-seconds must be > 0, got {self.fifo_seconds:g}")

    def bounds(self) -> str:
        if self.cpu_target:
            return self.cpu_constraint().describe()
        parts = [f"fits {self.target} with its FIFOs"]
        if self.min_fps:
            parts.append(f"FPS >= {self.min_fps:g}")
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms")
        return ", ".join(parts)

    def meets(self, fits: bool, fps: float, latency_ms: float) -> bool:
        return fits and fps >= (self.min_fps or 0.0) and (self.max_latency_ms is None
                                                          or latency_ms <= self.max_latency_ms)


def _log(out: Path) -> Callable[[str], None]:
    path = out / "log.txt"

    def log(line: str) -> None:
        with open(path, "a") as f:
            f.write(line + "\n")
    return log


def _check_resumable(out: Path, opts: CellSearchOptions, resume: bool) -> None:
    from .search import read_state_json

    cfg = out / "config.json"
    mine = json.dumps(opts.to_dict(), sort_keys=True)
    if cfg.exists():
        if not resume:
            raise BnhwError(f"{out} holds a search already; use --resume to continue it or another -o")
        if read_state_json(cfg) != json.loads(mine):
            raise BnhwError(f"{out}/config.json was written by a search with other options; --resume needs the "
                            "same options")
    elif resume:
        raise BnhwError(f"nothing to resume in {out} (no config.json)")
    atomic_write_text(cfg, mine + "\n")


def _search(opts: CellSearchOptions, data, out: Path, resume: bool, emit) -> tuple:
    from ..design.bars import BarsConfig, run_bars
    from ..design.bnas import BnasConfig, fit_to_budget, run_bnas

    common: dict[str, Any] = dict(epochs=opts.epochs, batch_size=opts.batch_size, images_per_half=opts.images_per_half,
                  init_channels=opts.search_channels, lam=opts.lam, tau=opts.tau, diversity=opts.diversity,
                  zeroise=opts.zeroise, separable=opts.separable, inter_cell_skip=opts.inter_cell_skip,
                  gamma=opts.gamma, seed=opts.seed, arch_lr=opts.arch_lr)
    x, y = data.train.tensors()
    if opts.method == "bnas":
        # refuse a budget no derived cell can meet before any training: the cheapest cell (all Zeroise)
        from ..spec.cells import Genotype

        cheapest = tuple(("zeroise", i % 2) for i in range(8))
        fit_to_budget(Genotype(cheapest, cheapest), opts.budget, cells=opts.cells, resolution=opts.resolution,
                      in_channels=data.in_channels, num_classes=data.num_classes,
                      inter_cell_skip=opts.inter_cell_skip)
        cfg = BnasConfig(cells=opts.search_cells, **common)
        res = run_bnas((x, y), None, cfg, out_dir=out, resume=resume, progress=emit, num_classes=data.num_classes)
        spec = fit_to_budget(res.genotype, opts.budget, cells=opts.cells, resolution=opts.resolution,
                             in_channels=data.in_channels,
                             num_classes=data.num_classes, inter_cell_skip=opts.inter_cell_skip,
                             name=f"bnas-search-seed{opts.seed}")
        return res, spec
    bars_cfg = BarsConfig(budget=opts.budget, spec_resolution=opts.resolution, ops_penalty=opts.ops_penalty,
                          **common)
    bars_res = run_bars((x, y), None, bars_cfg, out_dir=out, resume=resume, progress=emit,
                        num_classes=data.num_classes, name=f"bars-search-seed{opts.seed}")
    return bars_res, bars_res.spec


def _meet_hardware(opts: CellSearchOptions, res, spec, data, log, emit) -> tuple:
    """The derived network, shrunk until its buffered FPGA estimate meets the bounds (module docstring, 4)."""
    from ..design.bnas import fit_to_budget
    from ..estimators.ops import format_ops, ops_of
    from ..hw.branch_buffering import MODELLED, estimate_with_fifos

    assert opts.target is not None
    tried: list[dict] = []
    for _ in range(MAX_HW_CANDIDATES):
        e = estimate_with_fifos(spec, opts.target, margin=opts.margin, fifo_seconds=opts.fifo_seconds)
        ok = opts.meets(e.fits, e.fps, e.latency_ms)
        row = {"short": spec.short(), "cells": spec.cells, "init_channels": spec.init_channels, "ops": ops_of(spec),
               "meets": ok, **e.to_dict()}
        tried.append(row)
        line = (f"hardware: {spec.cells} cells, C={spec.init_channels}, {format_ops(row['ops'])} OPs: "
                + (f"{e.fps:,.1f} FPS, latency {e.latency_ms:.3f} ms, LUT {e.resources['LUT']:,.0f} (FIFOs "
                   f"{e.fifo_lut:,.0f}), BRAM18 {e.resources['BRAM18']:,.0f} (FIFOs {e.fifo_bram18:,.0f}; "
                   f"{e.deep_fifos} FIFOs deeper than 2, deepest {e.max_depth})" if e.fits else f"does not fit "
                   f"({e.reason.split('; ')[0]})") + f" on {opts.target}: {'meets' if ok else 'misses'} "
                f"{opts.bounds()}")
        log(line)
        emit("hardware", {"line": line})
        if ok:
            break
        smaller = _shrink(opts, res, spec, data, fit_to_budget, e.estimate.fits)
        if smaller is None:
            break
        spec = smaller
    else:
        ok = False
    if not ok:
        raise BnhwError(f"no network of the derived {opts.method} cell meets {opts.bounds()} (tried "
                        f"{len(tried)}, the last {tried[-1]['cells']} cells, C={tried[-1]['init_channels']}); "
                        "relax the bounds, lower --resolution or pick a larger --target")
    fpga = {"target": opts.target, "min_fps": opts.min_fps, "max_latency_ms": opts.max_latency_ms,
            "margin": opts.margin, "resolution": f"{spec.resolution}x{spec.resolution} (the spec's)",
            "chosen": tried[-1], "candidates": tried, "shrunk": len(tried) > 1,
            "means": "modelled, not measured: " + MODELLED + "; candidates: the derived network first, then "
                     "smaller ones until one meets the bounds"}
    return spec, fpga


#: candidates the hardware bounds may reject before the search gives up
MAX_HW_CANDIDATES = 10
#: the latency estimates' cache in the run folder (``--resume`` measures nothing twice)
CPU_CACHE = "cpu_cache.json"


def _meet_cpu(opts: CellSearchOptions, res, spec, data, out: Path, log, emit) -> tuple:
    """The derived network, shrunk (:func:`_shrink`; BARS dropping cells first) until its latency on the CPU
    target meets ``max_latency_ms`` (module docstring, 4); returns it and best.json's ``cpu``."""
    from ..design.bnas import fit_to_budget
    from ..estimators.ops import format_ops, ops_of
    from .search import cpu_summary

    cpu = opts.cpu_constraint(out / CPU_CACHE)
    tried: list[dict] = []
    for _ in range(MAX_HW_CANDIDATES):
        est = cpu.estimate(spec)
        ok = cpu.feasible(est.ms)
        tried.append({"short": spec.short(), "cells": spec.cells, "init_channels": spec.init_channels,
                      "ops": ops_of(spec), "latency_ms": est.ms, "meets": ok, "cpu_ops": est.ops,
                      "bmacs": est.bmacs, "new_table_entries": est.new_table_entries})
        line = (f"cpu: {spec.cells} cells, C={spec.init_channels}, {format_ops(tried[-1]['ops'])} OPs: "
                f"{est.describe()}: {'meets' if ok else 'misses'} {cpu.describe()}")
        log(line)
        emit("hardware", {"line": line})
        if ok:
            break
        # BARS: a cell off the deepest stage first (a cell is a dozen runtime ops, each with a fixed cost that
        # narrower channels keep), then narrower channels; BNAS: restacked under 0.7x the OPs
        smaller = _shrink(opts, res, spec, data, fit_to_budget, False)
        if smaller is None:
            break
        spec = smaller
    else:
        ok = False
    if not ok:
        last = tried[-1]
        raise BnhwError(f"--max-latency-ms {opts.max_latency_ms:g}: no network of the derived {opts.method} cell "
                        f"meets {cpu.describe()} (tried {len(tried)}, the last, {last['cells']} cells, "
                        f"C={last['init_channels']}, takes {last['latency_ms']:.3f} ms); raise --max-latency-ms, "
                        "lower --resolution or pick a faster --target")
    summary = cpu_summary(est, spec, opts.max_latency_ms, measured_architectures=len(tried),
                          rejected_by_hardware_constraints=sum(not r["meets"] for r in tried),
                          resolution=f"{spec.resolution}x{spec.resolution} (the spec's)", chosen=tried[-1],
                          candidates=tried, shrunk=len(tried) > 1)
    summary["means"] += ("; candidates: the derived network first, then smaller ones (BNAS restacked under 0.7x "
                         "the OPs; BARS a cell off its deepest stage, then 2 channels narrower) until one meets the "
                         "bound")
    _write_cpu_candidates(out, tried, cpu, opts)
    return spec, summary


def _write_cpu_candidates(out: Path, tried: list[dict], cpu, opts: CellSearchOptions) -> None:
    """``measured.csv`` (every candidate's latency, as the NAS-BNN search's) and ``latency.png``."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["ops", "cells", "init_channels", "latency_ms", "feasible", "chosen", "arch"])
    for i, r in enumerate(tried):
        w.writerow([f"{r['ops']:.0f}", r["cells"], r["init_channels"], f"{r['latency_ms']:.4f}", int(r["meets"]),
                    int(i == len(tried) - 1 and r["meets"]), r["short"]])
    atomic_write_text(out / "measured.csv", buf.getvalue())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .outputs import write_png

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.plot([r["latency_ms"] for r in tried], [r["ops"] / 1e6 for r in tried], "o-", c="C0", ms=4,
            label="candidates (derived first, then shrunk)")
    for r in tried:
        ax.annotate(f"{r['cells']} cells, C={r['init_channels']}", (r["latency_ms"], r["ops"] / 1e6), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    if tried[-1]["meets"]:
        ax.scatter([tried[-1]["latency_ms"]], [tried[-1]["ops"] / 1e6], marker="*", s=160, c="C3", zorder=5,
                   label="chosen")
    if opts.max_latency_ms is not None:
        ax.axvline(opts.max_latency_ms, ls="--", c="C3", lw=1)
        ax.text(opts.max_latency_ms, ax.get_ylim()[0], f"bound {opts.max_latency_ms:g} ms ", color="C3",
                va="bottom", ha="right", fontsize=8)
    ax.set_xlabel(f"latency on {cpu.target} (ms per image, {'measured' if cpu.target == 'native' else 'modelled'})")
    ax.set_ylabel(f"OPs (M), counted at {opts.resolution}x{opts.resolution}")
    ax.set_title(f"bnhw search --method {opts.method}\n{cpu.describe()}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    write_png(fig, out / "latency.png")


def _shrink(opts: CellSearchOptions, res, spec, data, fit_to_budget, fitted: bool):
    """The next smaller candidate, or None when there is none."""
    from ..estimators.ops import ops_of

    if opts.method == "bnas":
        try:
            return fit_to_budget(res.genotype, 0.7 * ops_of(spec), cells=opts.cells, resolution=opts.resolution,
                                 in_channels=data.in_channels, num_classes=data.num_classes,
                                 inter_cell_skip=opts.inter_cell_skip, name=spec.name)
        except BnhwError:           # below the smallest network of this cell
            return None
    if not fitted and max(spec.stage_cells) > 1:
        # too many units for the board even fully folded: narrower channels barely help, a shallower stage does
        stages = list(spec.stage_cells)
        i = len(stages) - 1 - stages[::-1].index(max(stages))
        stages[i] -= 1
        return spec.replace(stage_cells=tuple(stages), cells=sum(stages) + 2)
    if spec.init_channels <= 2:
        return None
    return spec.replace(init_channels=spec.init_channels - 2)


def run_cell_search(opts: CellSearchOptions, out: Path, resume: bool = False,
                    event: Callable[[str, dict], None] | None = None) -> dict:
    """Search, stack / shrink into the budget, optionally train, export and verify; returns best.json."""
    from ..data import digits_images
    from ..data.datasets import load_data
    from ..estimators.ops import count_ops, format_ops
    from ..quant.cellnet import build_cell_model
    from ..quant.export import export_qonnx
    from ..quant.model import recalibrate_bn
    from .export import verify_export

    opts.validate()
    emit = event or (lambda name, info: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resumable(out, opts, resume)
    if resume and (out / "best.json").exists():     # finished (best.json is written last, after the export check)
        from .search import read_state_json

        return read_state_json(out / "best.json")
    log = _log(out)
    torch.manual_seed(opts.seed)
    data = load_data(opts.data, opts.search_resolution, seed=opts.seed)
    if opts.train_images is not None:
        data.train = data.train.subset(range(min(opts.train_images, len(data.train))))
    log(f"{opts.method} search on {data.describe()}; budget {format_ops(opts.budget)} OPs at "
        f"{opts.resolution}x{opts.resolution}")
    emit("data", {"describe": data.describe()})

    def on_search(name: str, info: dict) -> None:
        if name == "epoch":
            line = (f"search epoch {info['epoch']}/{info['epochs']}: loss {info['loss']:.4f}, arch loss "
                    f"{info['arch_loss']:.4f}, entropy {info['entropy']:.3f}")
            if "expected_ops" in info:
                line += f", E[OPs] {format_ops(info['expected_ops'])}"
            log(line + f"; {info.get('spec') or info['genotype']}")
        elif name == "resumed":
            log(f"resumed the search after epoch {info['epoch']}")
        emit("search." + name, info)

    res, spec = _search(opts, data, out, resume, on_search)
    rep = count_ops(spec)
    if rep.ops > opts.budget:          # the searches guarantee it; a bug otherwise
        raise BnhwError(f"derived network has {format_ops(rep.ops)} OPs, over the budget (please report it)")
    fpga = cpu = None
    if opts.cpu_target:
        spec, cpu = _meet_cpu(opts, res, spec, data, out, log, emit)
        rep = count_ops(spec)
    elif opts.target is not None:
        spec, fpga = _meet_hardware(opts, res, spec, data, log, emit)
        rep = count_ops(spec)
    spec.save(out / "best_arch.json")
    atomic_write_text(out / "search.json", json.dumps(res.to_dict(), indent=1, default=float) + "\n")
    log(f"derived: {spec.short()} ({format_ops(rep.ops)} OPs)")
    emit("derived", {"spec": spec.short(), "ops": rep.ops})

    summary = {"method": opts.method, "arch": spec.to_dict(), "short": spec.short(), "budget_ops": opts.budget,
               "ops": rep.ops, "bops": rep.bops, "flops": rep.flops, "int8ops": rep.int8ops,
               "ops_counted_at": f"{spec.resolution}x{spec.resolution}",
               "search_resolution": f"{opts.search_resolution}x{opts.search_resolution}",
               "config": opts.to_dict(), "data": data.describe()}
    if fpga is not None:
        summary["fpga"] = fpga
    if cpu is not None:
        summary["cpu"] = cpu
    if opts.final_epochs > 0:
        from .train import FitConfig, fit

        emit("train.start", {"epochs": opts.final_epochs})
        fit_res = fit(spec, FitConfig(epochs=opts.final_epochs, batch_size=opts.batch_size, seed=opts.seed,
                                      data=opts.data, resolution=opts.resolution, train_images=opts.train_images,
                                      optimizer=SCHEME_OPTIMIZERS[opts.scheme]),
                      out / "train", resume=resume, progress=lambda n, i: emit("train." + n, i))
        summary.update(val_accuracy=fit_res["val_accuracy"], test_accuracy=fit_res["test_accuracy"],
                       accuracy_means=f"top-1 on digits after training the stacked network from scratch for "
                                      f"{opts.final_epochs} epochs ({opts.scheme} scheme)")
        from ..quant.checkpoint import load_model
        model = load_model(out / "train" / "model.pt")
        log(f"trained {opts.final_epochs} epochs: val acc {fit_res['val_accuracy']:.4f}, test acc "
            f"{fit_res['test_accuracy']:.4f}")
    else:
        model = build_cell_model(spec)
        x, _ = digits_images(spec.resolution, 64, channels=spec.in_channels, seed=1)
        recalibrate_bn(model, [x[:32], x[32:]])
        summary["accuracy_means"] = "not trained (--final-epochs 0): the export is checked on fresh weights"
    onnx = out / "model.onnx"
    export_qonnx(model, onnx)
    x, _ = digits_images(spec.resolution, opts.verify_images, channels=spec.in_channels, seed=2)
    ver = verify_export(model, onnx, x)
    summary["export"] = {"file": str(onnx), "check": ver.line(), "binary_tensors": ver.binary_tensors,
                         "binary_mismatches": ver.binary_mismatches, "max_logit_error": ver.max_logit_error}
    log(ver.line())
    if not ver.ok:
        raise BnhwError(f"QONNX export of the derived network does not match PyTorch: {ver.line()}")
    atomic_write_text(out / "best.json", json.dumps(summary, indent=2, default=float) + "\n")
    return summary
