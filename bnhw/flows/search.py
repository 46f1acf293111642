"""``bnhw search``: NAS-BNN end to end.

1. load the data (default: scikit-learn's digits, nothing downloaded) at the
   training (proxy) resolution;
2. train the weight-sharing supernet of the space with the sandwich rule,
   Bi-Teacher, Bi-Transformation and weight normalisation, checkpointing
   every epoch;
3. evolutionary search of the accuracy / OPs Pareto front under the budget
   (and any other constraints), every candidate scored with inherited
   weights after BN recalibration on the held-out split of the training
   data, its OPs counted at the space's nominal resolution;
4. train a sample of the evaluated architectures stand-alone (spread over the
   OPs range, the best among them; :mod:`bnhw.flows.standalone`): the best's
   run is its fine-tuned model, and Kendall's tau between inherited and
   stand-alone accuracy says how well the supernet ranked;
5. write the best architecture under the budget, the front (CSV + PNG), the
   extracted and fine-tuned best subnet's weights, the ranking check, the
   time of every phase and a log into the output folder.

With a hardware target (``target`` plus ``min_fps`` and / or
``max_latency_ms``) every candidate within the OPs budget is also estimated
on that FPGA board (:func:`bnhw.hw.estimate.estimate_fpga`: lowered to
the hardware IR, folded for the highest FPS within the board, FINN's
analytical cycle / resource models) before it is scored; candidates missing
the FPS / latency bound are never scored, and the best architecture, the
front and every output consider all constraints.  Estimates are cached in
``fpga_cache.json`` (so ``resume`` re-estimates nothing) and every
architecture measured against the hardware constraints, feasible or not, is
listed in ``measured.csv``.

With a CPU target (``target`` one of ``native``, ``cortex-a9``,
``cortex-a53``, ``cortex-a72``, plus ``max_latency_ms`` and for ``native``
``threads``) the hardware constraint is the latency of one image on that CPU
(:class:`bnhw.hw.constraints.CpuLatency`): the ARM cycle model of the C
runtime's program for the cores, the sum of per-op times measured on this
machine (one measurement per layer shape, :mod:`bnhw.hw.cpu.latency`) for
``native``; latencies and the measured table are cached in
``cpu_cache.json``.

Re-running with ``resume=True`` skips finished epochs and generations.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import distributed as dist_util
from ..data.datasets import DataBundle, load_data
from ..design.constraints import Constraint, OpsBudget, all_feasible
from ..design.evolution import Candidate, EvolutionConfig, EvolutionSearch, best_under, pareto_front, spec_key
from ..design.supernet import BinarySupernet, SupernetConfig
from ..design.train import TrainConfig, calibration_batches, evaluate_subnet, resolve_device, train_supernet
from ..errors import BnhwError
from ..estimators.ops import count_ops, format_ops, ops_of
from ..hw.constraints import CpuLatency, FpgaFps, FpgaLatency
from ..hw.cpu.latency import is_cpu_target
from ..spec import ArchSpec, atomic_write_text
from ..spec.space import SearchSpace, get_space
from .standalone import StandaloneOptions, StandaloneResult, train_standalone

Event = Callable[[str, dict], None]


@dataclass
class SearchOptions:
    budget: float
    space: str = "nasbnn-imagenet"
    data: str = "digits"
    resolution: int = 32                 # training (proxy) resolution
    train: TrainConfig = field(default_factory=TrainConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    standalone: StandaloneOptions = field(default_factory=StandaloneOptions)
    calib_batches: int = 2
    calib_batch_size: int = 128
    train_images: int | None = None      # use only this many training images (quick runs)
    seed: int = 0
    target: str | None = None            # FPGA board or CPU of the hardware constraints
    min_fps: float | None = None         # modelled FPS on ``target`` at least this (0: record the FPS only)
    max_latency_ms: float | None = None  # modelled (CPU native: measured) latency on ``target`` at most this
    threads: int | None = None           # CPU targets: threads of the native runtime (0 / None: all cores)
    margin: float = 0.85                 # share of the board's resources the folding may use
    recipe: str = "laptop"               # the recipe the defaults came from (RECIPES), for the record
    device: str = "auto"                 # torch device: auto (CUDA when present), cpu, cuda, cuda:N

    HARDWARE_FIELDS = ("target", "min_fps", "max_latency_ms", "margin")

    def to_dict(self) -> dict:
        return options_record(self)

    @property
    def cpu_target(self) -> bool:
        return is_cpu_target(self.target)


FPGA_CACHE = "fpga_cache.json"
CPU_CACHE = "cpu_cache.json"


@dataclass(frozen=True)
class Recipe:
    """Defaults of a NAS-BNN search; :meth:`with_overrides` applies the options a user gave."""

    epochs: int
    warmup_epochs: int
    batch_size: int
    lr: float
    weight_norm: bool
    population: int
    generations: int
    tau_subnets: int
    finetune_epochs: int
    finetune_lr: float | None
    describe: str
    rprelu_init: float = 1.0
    zero_init_residual: bool = True

    def with_overrides(self, **given: Any) -> Recipe:
        """This recipe with the given (not ``None``) values; other epochs keep the recipe's share of warm-up."""
        from dataclasses import replace

        given = {k: v for k, v in given.items() if v is not None}
        if "epochs" in given and "warmup_epochs" not in given and self.epochs:
            given["warmup_epochs"] = given["epochs"] * self.warmup_epochs // self.epochs
        return replace(self, **given)


RECIPES = {
    # Learns within ~10 minutes on 2 CPU cores (issue 19's measurements, docs/METHODS.md): the teacher trains
    # alone first so that the students distil from a teacher that knows something, and weight normalisation
    # is off (it cost a third of every step and slowed early learning).
    "laptop": Recipe(epochs=5, warmup_epochs=2, batch_size=32, lr=2e-3, weight_norm=False, population=12,
                     generations=3, tau_subnets=8, finetune_epochs=1, finetune_lr=None,
                     describe="laptop: learns within ~10 minutes on 2 CPU cores"),
    # NAS-BNN's own settings (paper 003 Sec. 4.1): Adam 5e-4, weight decay 5e-6, batch 512, 512 epochs, weight
    # normalisation, no warm-up; pipeline 2 fine-tunes at 1e-5 (100 epochs in Table 2).
    "paper": Recipe(epochs=512, warmup_epochs=0, batch_size=512, lr=5e-4, weight_norm=True, population=100,
                    generations=20, tau_subnets=8, finetune_epochs=100, finetune_lr=1e-5,
                    describe="paper: NAS-BNN's supernet and fine-tuning settings (GPU scale)",
                    rprelu_init=0.25, zero_init_residual=False),
}


def options_record(opts) -> dict:
    """A search's options as its ``config.json`` records them: the hardware fields (``opts.HARDWARE_FIELDS``)
    only with a ``--target``, ``threads`` only when given, so searches without them keep the config.json
    (and the ``--resume`` check) they had before those flags existed."""
    d = asdict(opts)
    if opts.target is None:
        for k in opts.HARDWARE_FIELDS:
            d.pop(k, None)
    if opts.threads is None:
        d.pop("threads", None)
    return d


def check_hardware_flags(target: str | None, min_fps: float | None, max_latency_ms: float | None,
                         threads: int | None) -> None:
    """One line for hardware flags of ``bnhw search`` (any method) that do not go together: a bound without
    ``--target``, ``--threads`` without a CPU target, ``--min-fps`` with one.  ``target``: canonical
    (:func:`~bnhw.hw.constraints.hardware_target`) or ``None``."""
    if target is None:
        if min_fps is not None or max_latency_ms is not None:
            flag = "--min-fps" if min_fps is not None else "--max-latency-ms"
            raise BnhwError(f"{flag} needs a board: add --target BOARD (e.g. --target pynq-z2)")
        if threads is not None:
            raise BnhwError("--threads needs a CPU target: add --target native (or cortex-a9|a53|a72)")
    elif is_cpu_target(target):
        if min_fps is not None:
            raise BnhwError(f"--min-fps applies to FPGA boards; for the CPU target {target} bound the latency "
                            "with --max-latency-ms")
    elif threads is not None:
        raise BnhwError(f"--threads applies to CPU targets (native, cortex-a9|a53|a72), not the board {target}")


def hardware_constraints(opts: SearchOptions, cache_path: Path | None = None) -> list[Constraint]:
    """The FPS / latency constraints ``opts`` asks for (none without a target); bad input is one line.
    ``cache_path``: the estimates' JSON cache (FPGA_CACHE or CPU_CACHE in the run folder)."""
    check_hardware_flags(opts.target, opts.min_fps, opts.max_latency_ms, opts.threads)
    if opts.target is None:
        return []
    cache = str(cache_path) if cache_path is not None else None
    if opts.cpu_target:
        return [CpuLatency(opts.target, opts.max_latency_ms, threads=opts.threads or 0, cache_path=cache)]
    if opts.min_fps is not None and opts.min_fps < 0:
        raise BnhwError(f"--min-fps must be >= 0, got {opts.min_fps:g}")
    # --target alone (or --min-fps 0): the FPS is recorded for every candidate, without a minimum
    out: list[Constraint] = [FpgaFps(opts.target, opts.min_fps or 0.0, margin=opts.margin, cache_path=cache)]
    if opts.max_latency_ms is not None:
        out.append(FpgaLatency(opts.target, opts.max_latency_ms, margin=opts.margin, cache_path=cache))
    return out


class MeasureLog:
    """Wraps constraints so that every value they measure is kept, feasible or not (``measured.csv``).

    The evolution discards a candidate that misses a constraint before
    scoring it; this log is what still shows it.  It is kept in
    ``DIR/measured.json`` (written after every generation) so ``resume``
    keeps it.
    """

    def __init__(self, path: Path | None, load: bool = True):
        self.path = path
        self.rows: dict[str, dict] = {}
        if load and path is not None and path.is_file():
            try:
                self.rows = dict(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                self.rows = {}

    def wrap(self, c: Constraint) -> Constraint:
        return _Logged(c, self)

    def record(self, spec: ArchSpec, name: str, value: float) -> None:
        row = self.rows.setdefault(spec_key(spec), {"arch": spec.short(), "ops": ops_of(spec)})
        row[name] = float(value)

    def save(self) -> None:
        if self.path is not None and dist_util.is_main():
            atomic_write_text(self.path, json.dumps(self.rows) + "\n")


class _Logged:
    def __init__(self, inner: Constraint, log: MeasureLog):
        self.inner, self.log = inner, log
        self.name, self.unit = inner.name, inner.unit

    def measure(self, spec: ArchSpec) -> float:
        v = float(self.inner.measure(spec))
        self.log.record(spec, self.name, v)
        return v

    def feasible(self, value: float) -> bool:
        return self.inner.feasible(value)

    def describe(self) -> str:
        return self.inner.describe()

    def __getattr__(self, name: str):            # estimate(), board, ... of the wrapped constraint
        return getattr(self.inner, name)


@dataclass
class SearchOutcome:
    best: Candidate
    test_accuracy: float                  # inherited weights, BN recalibrated
    front: list[Candidate]
    evaluated: int
    out: Path
    standalone: StandaloneResult = field(default_factory=StandaloneResult)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    chance: float = 0.0                   # accuracy of guessing the most frequent test class
    largest_val_accuracy: float = 0.0     # the space's largest subnet (the teacher), inherited, val split
    median_val_accuracy: float = 0.0      # median inherited val accuracy of every evaluated architecture


class RunLog:
    """Appends timestamped lines to ``DIR/log.txt`` (rank 0 only)."""

    def __init__(self, path: Path):
        self.path = path
        self.t0 = time.time()

    def __call__(self, msg: str) -> None:
        if dist_util.is_main():
            with open(self.path, "a") as f:
                f.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')} +{time.time() - self.t0:7.1f}s] {msg}\n")


def read_state_json(path: Path) -> Any:   # a JSON value
    """A JSON state file of a run folder (state is never pickled); an unreadable or damaged one raises a
    one-line :class:`BnhwError` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BnhwError(f"{path}: not a readable bnhw state file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None


def _check_search_state(path: Path) -> None:
    """Refuse a damaged ``search_state.json`` of a resumed search in one line, before any training."""
    import random

    from ..design.evolution import SearchState

    if not path.exists():
        return
    try:
        rng_state = SearchState.from_json(path.read_text(encoding="utf-8")).rng_state
        assert rng_state is not None  # from_json sets it
        random.Random().setstate(rng_state)
    except BnhwError as e:
        raise BnhwError(f"{path}: {e}") from None
    except (OSError, UnicodeDecodeError, ValueError, TypeError, OverflowError) as e:
        raise BnhwError(f"{path}: search state is corrupted or from another version ({type(e).__name__})") from None


def _check_resumable(out: Path, opts: SearchOptions, resume: bool) -> None:
    cfg_path = out / "config.json"
    mine = json.dumps(opts.to_dict(), sort_keys=True)
    if cfg_path.exists():
        if not resume:
            if (out / "supernet.pt").exists() or (out / "search_state.json").exists():
                raise BnhwError(f"{out} already holds a search; pass --resume to continue it or choose another --out")
        elif read_state_json(cfg_path) != json.loads(mine):
            raise BnhwError(f"{out} holds a search with other settings; resume with the same options")
    if resume:
        _check_search_state(out / "search_state.json")
    if dist_util.is_main():
        atomic_write_text(cfg_path, json.dumps(opts.to_dict(), indent=2, sort_keys=True) + "\n")


def run_search(opts: SearchOptions, out: Path, resume: bool = False, event: Event | None = None,
               constraints: list[Constraint] | None = None) -> SearchOutcome:
    emit = event or (lambda name, info: None)
    opts.standalone.validate()
    device = resolve_device(opts.device)
    clock = _PhaseClock()
    cache_file = out / (CPU_CACHE if opts.cpu_target else FPGA_CACHE)
    hw = hardware_constraints(opts, cache_file if dist_util.is_main() else None)   # bad input: before any work
    out.mkdir(parents=True, exist_ok=True)
    _check_resumable(out, opts, resume)
    log = RunLog(out / "log.txt")
    torch.manual_seed(opts.seed)

    data = load_data(opts.data, opts.resolution, seed=opts.seed)
    if opts.train_images is not None:
        data.train = data.train.subset(range(min(opts.train_images, len(data.train))))
    base = get_space(opts.space)
    if data.in_channels != base.in_channels:
        raise BnhwError(f"data has {data.in_channels} channels, space {base.name} expects {base.in_channels}")
    space = base.for_task(data.num_classes)
    measured = MeasureLog(out / "measured.json", load=resume)
    extra = [measured.wrap(c) for c in hw + list(constraints or [])]
    cons: list[Constraint] = [OpsBudget(opts.budget)] + extra
    smallest = count_ops(space.smallest()).ops
    if smallest > opts.budget:
        raise BnhwError(f"budget {format_ops(opts.budget)} OPs is below the smallest subnet of {space.name} "
                        f"({format_ops(smallest)} OPs); raise --budget or pick another --space")
    log(f"data {data.describe()}; OPs counted at {space.resolution}x{space.resolution}, "
        f"training at {opts.resolution}x{opts.resolution}")
    emit("data", {"describe": data.describe(), "ops_resolution": space.resolution,
                  "train_resolution": opts.resolution})
    log("constraints: " + "; ".join(c.describe() for c in cons)
        + (f" (hardware modelled at {space.resolution}x{space.resolution})" if extra else ""))
    emit("constraints", {"describe": [c.describe() for c in cons], "hw_resolution": space.resolution,
                         "hardware": bool(extra)})
    _check_smallest(space, extra[:len(hw)], log)        # the hardware bounds only (other constraints may differ)

    # -- 1. supernet ---------------------------------------------------------
    supernet = BinarySupernet(space, opts.supernet).to(device)
    ckpt = out / "supernet.pt"
    clock.lap("data")

    def on_train(name: str, info: dict) -> None:
        if name == "epoch":
            log(f"epoch {info['epoch']} ({info['phase']}): teacher loss {info['loss_teacher']:.4f}"
                + (", student losses " + ", ".join(f"{v:.4f}" for v in info["loss_students"])
                   if info["loss_students"] else ""))
        elif name == "resumed":
            log(f"resumed supernet training after epoch {info['epoch']}")
        emit("train." + name, info)

    train_supernet(supernet, data.train, opts.train, checkpoint=ckpt, resume=resume, progress=on_train,
                   extra={"space": space.name, "num_classes": space.num_classes,
                          "supernet_config": asdict(opts.supernet)})
    clock.lap("supernet training")

    # -- 2. evolutionary search ---------------------------------------------
    x_train, _ = data.train.tensors()
    calib = calibration_batches(x_train, opts.calib_batches, opts.calib_batch_size, opts.seed)
    xv, yv = data.val.tensors()
    counter = {"n": 0}

    def evaluate(specs: Sequence[ArchSpec]) -> list[float]:
        mine = dist_util.split_for_rank(specs)
        accs = []
        for s in mine:
            accs.append(evaluate_subnet(supernet, s, calib, xv, yv))
            counter["n"] += 1
            emit("search.eval", {"done": counter["n"]})
        return dist_util.gather_in_order(accs, len(specs))

    def on_search(name: str, info: dict) -> None:
        if name == "generation":
            measured.save()
            info = dict(info, rejected=sum(1 for r in measured.rows.values() if not _feasible_row(cons, r)))
            log(f"generation {info['generation']}/{info['generations']}: {info['evaluated']} evaluated, best val "
                f"acc {info['best_score']:.4f} at {format_ops(info['best_ops'])} OPs"
                + _extra_metrics(extra, info.get("best_metrics", {}))
                + f", front of {info['front']}"
                + (f"; {info['rejected']} rejected by {', '.join(c.name for c in extra)}" if extra else ""))
        elif name == "resumed":
            log(f"resumed search after generation {info['generation']}")
        emit("search." + name, info)

    search = EvolutionSearch(space, cons, evaluate, opts.evolution, seed=opts.seed)
    state = search.run(state_path=out / "search_state.json", resume=resume,
                       progress=on_search)
    measured.save()
    cands = list(state.evaluated.values())
    best = best_under(cands, cons)
    if best is None:
        raise BnhwError("no evaluated architecture satisfies every constraint ("
                        + "; ".join(c.describe() for c in cons) + "); relax them or search longer")
    front = pareto_front(c for c in cands if all_feasible(cons, c.metrics))
    xt, yt = data.test.tensors()
    test_acc = evaluate_subnet(supernet, best.spec, calib, xt, yt)
    largest_acc = evaluate_subnet(supernet, space.largest(), calib, xv, yv)   # the teacher, binary weights
    clock.lap("evolutionary search")
    log(f"best under {format_ops(opts.budget)}: {format_ops(best.ops)} OPs{_extra_metrics(extra, best.metrics)}, "
        f"inherited val acc {best.score:.4f}, test acc {test_acc:.4f}: {best.spec.short()}")

    # -- 3. stand-alone training: the best's fine-tuning, Kendall's tau ------
    def on_standalone(name: str, info: dict) -> None:
        if name == "standalone.done":
            log(f"stand-alone {info['subnet']}/{info['subnets']}: {format_ops(info['ops'])} OPs, inherited val "
                f"{info['inherited_val_accuracy']:.4f}, stand-alone test {info['standalone_test_accuracy']:.4f}"
                + (" (the best)" if info["best"] else ""))
        emit(name, info)

    standalone = train_standalone(out, ckpt, supernet, cands, best, opts.standalone, data=opts.data,
                                  resolution=opts.resolution, batch_size=opts.train.batch_size, seed=opts.seed,
                                  train_images=opts.train_images, device=str(device), event=on_standalone)
    if standalone.correlation is not None:
        log(f"ranking: {standalone.correlation.describe()} ({opts.standalone.describe()})")
    clock.lap("stand-alone training")

    # -- 4. outputs ----------------------------------------------------------
    best_spec = best.spec.replace(name=f"search-{format_ops(opts.budget)}-seed{opts.seed}")
    chance = chance_accuracy(yt)
    if dist_util.is_main():
        _write_outputs(out, opts, data, space, best, best_spec, test_acc, front, cands, supernet, calib, cons,
                       measured, standalone, chance, largest_acc)
    clock.lap("outputs")
    if dist_util.is_main():
        atomic_write_text(out / "best.json", json.dumps(
            dict(json.loads((out / "best.json").read_text()), phase_seconds=clock.laps), indent=2) + "\n")
    dist_util.barrier()
    return SearchOutcome(best, test_acc, front, len(cands), out, standalone, dict(clock.laps), chance, largest_acc,
                         statistics.median(c.score for c in cands))


class _PhaseClock:
    """Wall time of each phase of this run (a resumed run counts only what it did itself)."""

    def __init__(self) -> None:
        self.t = time.time()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.time()
        self.laps[name] = round(now - self.t, 1)
        self.t = now


def chance_accuracy(y) -> float:
    """Accuracy of always guessing the most frequent class of ``y``."""
    counts = torch.bincount(y)
    return float(counts.max()) / max(1, len(y))


def _check_smallest(space: SearchSpace, extra: list[Constraint], log: RunLog) -> None:
    """Refuse, before any training, hardware bounds the space's smallest subnet misses.

    The smallest subnet has the fewest channels, layers and weights of the
    space; when it does not fit the board, or misses the FPS / latency bound,
    (nearly) every architecture does, and the search would spend its time
    estimating candidates it must reject.
    """
    if not extra:
        return
    sm = space.smallest()
    for c in extra:
        v = c.measure(sm)
        log(f"smallest subnet of {space.name}: {c.name} = {_fmt_metric(c.name, v)} ({c.describe()})")
        if c.feasible(v):
            continue
        hw: Any = c                   # an FPGA or CPU constraint (wrapped by MeasureLog): it has estimate()
        est: Any = hw.estimate(sm) if hasattr(hw, "estimate") else None
        if is_cpu_target(getattr(hw, "target", None)):
            raise BnhwError(f"--max-latency-ms {hw.max_ms:g}: the smallest subnet of {space.name} already takes "
                            f"{est.describe()}; raise --max-latency-ms (or pick a faster --target)")
        if est is not None and not est.fits:
            raise BnhwError(f"the smallest subnet of {space.name} ({space.resolution}x{space.resolution}) "
                            f"{est.reason.split('; ')[0]}: no architecture of the space will fit; pick a larger "
                            f"--target or a smaller --space (e.g. nasbnn-cifar)")
        raise BnhwError(f"the smallest subnet of {space.name} reaches {_fmt_metric(c.name, v)} {c.unit} "
                        f"(modelled), which misses {c.describe()}; relax the bound or pick a larger --target")


def _feasible_row(cons: list[Constraint], row: dict) -> bool:
    return all(c.feasible(row[c.name]) for c in cons if c.name in row)


def _fmt_metric(name: str, v: float) -> str:
    """A constraint value for the CSV files (plain numbers)."""
    if name == "fps":
        return f"{v:.1f}"
    if name == "latency_ms":
        return "inf" if v == float("inf") else f"{v:.4f}"
    return f"{v:g}"


def _extra_metrics(extra: list[Constraint], metrics: dict) -> str:
    """``", 1,808.4 FPS, 19.6367 ms"``: the extra constraints' values for log lines."""
    parts = []
    for c in extra:
        if c.name in metrics:
            v = metrics[c.name]
            parts.append(f"{v:,.1f} {c.unit}" if c.name == "fps" else f"{_fmt_metric(c.name, v)} {c.unit}")
    return (", " + ", ".join(parts)) if parts else ""


def _write_outputs(out: Path, opts: SearchOptions, data: DataBundle, space: SearchSpace, best: Candidate,
                   best_spec: ArchSpec, test_acc: float, front: list[Candidate], cands: list[Candidate],
                   supernet: BinarySupernet, calib, cons: list[Constraint], measured: MeasureLog,
                   standalone: StandaloneResult, chance: float, largest_acc: float) -> None:
    from ..quant.checkpoint import save_checkpoint
    from ..quant.model import recalibrate_bn

    extra = [c for c in cons if c.name != "ops"]
    names = [c.name for c in extra]
    best_spec.save(out / "best_arch.json")
    summary = {
        "arch": best_spec.to_dict(),
        "short": best_spec.short(),
        "budget_ops": opts.budget,
        "constraints": [c.describe() for c in cons],
        "metrics": best.metrics,
        "ops": best.ops,
        "ops_counted_at": f"{space.resolution}x{space.resolution} (the space's nominal resolution, "
                          f"{space.num_classes} classes)",
        "trained_at": f"{opts.resolution}x{opts.resolution} on {data.name}",
        "val_accuracy": best.score,
        "val_accuracy_means": "top-1 on the held-out split of the training data, weights inherited from the "
                              "supernet, BN recalibrated (pipeline 1, paper 003)",
        "test_accuracy": test_acc,
        "test_accuracy_means": "top-1 on the test split, weights inherited from the supernet, BN recalibrated",
        "chance_accuracy": chance,
        "largest_val_accuracy": largest_acc,
        "median_val_accuracy": statistics.median(c.score for c in cands),
        "supernet_means": "largest: the space's largest subnet (the teacher) with binary weights; median: over every "
                          "evaluated architecture (evaluated.csv); both inherited, BN recalibrated, val split",
        "finetuned_val_accuracy": standalone.best["standalone_val_accuracy"] if standalone.best else None,
        "finetuned_test_accuracy": standalone.best["standalone_test_accuracy"] if standalone.best else None,
        "finetuned_means": (f"the best architecture {opts.standalone.describe()} (best_finetuned.pt)"
                            if standalone.best else "not fine-tuned (--finetune-epochs 0)"),
        "kendall_tau": standalone.correlation.tau if standalone.correlation else None,
        "kendall_p": standalone.correlation.p_value if standalone.correlation else None,
        "tau_subnets": standalone.correlation.n if standalone.correlation else 0,
        "tau_means": ("Kendall's tau-b (two-sided p) between the inherited val accuracy and the stand-alone test "
                      f"accuracy of subnets spread over the OPs range, the best among them; stand-alone: "
                      f"{opts.standalone.describe()}; see standalone.csv") if standalone.correlation
        else "not measured (--tau-subnets 0)",
        "kendall_tau_loss": standalone.loss_correlation.tau if standalone.loss_correlation else None,
        "kendall_p_loss": standalone.loss_correlation.p_value if standalone.loss_correlation else None,
        "kendall_tau_ceiling": standalone.ceiling.tau if standalone.ceiling else None,
        "kendall_tau_ceiling_loss": standalone.loss_ceiling.tau if standalone.loss_ceiling else None,
        "tau_loss_means": "the same subnets' inherited val loss vs stand-alone test loss (mean cross-entropy)",
        "tau_ceiling_means": "tau between the same inherited subnets' val and test accuracy (loss): how steadily the "
                             "splits rank these subnets at all; an accuracy tau above it is not to be expected",
        "data": data.describe(),
        "evaluated_architectures": len(cands),
    }
    if opts.cpu_target:
        summary["cpu"] = _cpu_summary(opts, extra, best_spec, measured, cons)
    elif opts.target is not None:
        fpga = next((c for c in extra if hasattr(c, "estimate")), None)
        est = fpga.estimate(best_spec) if fpga is not None else None
        rows = list(measured.rows.values())
        summary["fpga"] = {
            "target": opts.target, "min_fps": opts.min_fps, "max_latency_ms": opts.max_latency_ms,
            "margin": opts.margin, "resolution": f"{space.resolution}x{space.resolution} (the spec's)",
            "estimate": est.to_dict() if est is not None else None,
            "measured_architectures": len(rows),
            "rejected_by_hardware_constraints": sum(1 for r in rows if not _feasible_row(cons, r)),
            "means": "modelled, not measured: the network with seeded fresh weights lowered to bnhw's hardware IR, "
                     "folded for the highest FPS within the board (FINN's analytical cycle and resource models); "
                     "see measured.csv for every architecture the hardware constraints measured",
        }
    atomic_write_text(out / "best.json", json.dumps(summary, indent=2) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["ops", "mops", *names, "val_accuracy", "generation", "arch"])
    for c in front:
        w.writerow([f"{c.ops:.0f}", f"{c.ops / 1e6:.3f}", *(_fmt_metric(n, c.metrics[n]) for n in names),
                    f"{c.score:.4f}", c.generation, c.spec.short()])
    atomic_write_text(out / "pareto.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["ops", *names, "val_accuracy", "generation", "arch"])
    for c in sorted(cands, key=lambda c: c.ops):
        w.writerow([f"{c.ops:.0f}", *(_fmt_metric(n, c.metrics[n]) for n in names), f"{c.score:.4f}",
                    c.generation, c.spec.short()])
    atomic_write_text(out / "evaluated.csv", buf.getvalue())
    if extra:
        scored = {spec_key(c.spec) for c in cands}
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["ops", *names, "feasible", "scored", "arch"])
        for k, r in sorted(measured.rows.items(), key=lambda kv: kv[1]["ops"]):
            w.writerow([f"{r['ops']:.0f}", *(_fmt_metric(n, r[n]) if n in r else "" for n in names),
                        int(_feasible_row(cons, r)), int(k in scored), r["arch"]])
        atomic_write_text(out / "measured.csv", buf.getvalue())
    if standalone.rows:
        buf = io.StringIO()
        w = csv.writer(buf)
        columns = ("inherited_val_accuracy", "inherited_test_accuracy", "standalone_val_accuracy",
                   "standalone_test_accuracy", "inherited_val_loss", "inherited_test_loss", "standalone_val_loss",
                   "standalone_test_loss")
        w.writerow(["ops", *columns, "best", "arch"])
        for r in standalone.rows:
            w.writerow([f"{r['ops']:.0f}", *(f"{r[k]:.4f}" for k in columns), int(r["best"]), r["arch"]])
        atomic_write_text(out / "standalone.csv", buf.getvalue())
    plot_front(out / "pareto.png", cands, front, best, opts.budget, space, data.name, opts.resolution,
               standalone.correlation, latency_of=_latency_label(opts), max_latency_ms=opts.max_latency_ms)
    model = supernet.extract(best.spec)
    recalibrate_bn(model, calib)
    save_checkpoint(model.eval(), out / "best_subnet.pt", source="supernet", val_accuracy=best.score,
                    test_accuracy=test_acc)


def _cpu_summary(opts: SearchOptions, extra: list[Constraint], best_spec: ArchSpec, measured: MeasureLog,
                 cons: list[Constraint]) -> dict:
    """best.json's ``cpu`` (:func:`cpu_summary`) with the count of architectures measured and rejected."""
    cpu: Any = next(c for c in extra if c.name == "latency_ms")     # the CpuLatency (wrapped by MeasureLog)
    rows = list(measured.rows.values())
    return cpu_summary(cpu.estimate(best_spec), best_spec, opts.max_latency_ms,
                       measured_architectures=len(rows),
                       rejected_by_hardware_constraints=sum(1 for r in rows if not _feasible_row(cons, r)))


def cpu_summary(est: Any, spec: Any, max_latency_ms: float | None, **extra: Any) -> dict:
    """best.json's ``cpu`` of a search's chosen network ``spec`` (any spec kind) from its
    :class:`~bnhw.hw.cpu.latency.CpuLatencyEstimate` ``est``: ms per image, kernel set, threads, modelled or
    measured, and what that means; for ``native`` also the network timed whole in the runtime beside the
    table's prediction.  ``extra`` goes in as it is (before ``means``)."""
    d: dict[str, Any] = {
        "target": est.target, "max_latency_ms": max_latency_ms, "ms_per_image": est.ms, "how": est.how,
        "kernels": est.kernels, "threads": est.threads, "where": est.where, "estimate": est.to_dict(), **extra,
    }
    if est.how == "measured":
        from ..hw.cpu.latency import program_input, spec_cpu_program
        from .cpu_bench import measure_native

        prog = spec_cpu_program(spec)
        x = program_input(prog, seed=1)
        whole = measure_native(prog, x, kernels=est.kernels, repeat=20, threads=est.threads)
        d["whole_network_ms"] = whole["seconds"] * 1e3
        d["means"] = ("measured on this machine: the sum of per-op wall times of the C runtime from a table of one "
                      "entry per layer shape (each timed once, in the first network that had it, median of a few "
                      "runs; cpu_cache.json); whole_network_ms: the chosen network itself timed in the runtime, "
                      "median of 20 runs (the machine may be shared: noisy)")
    else:
        d["means"] = ("modelled, not measured: the network with seeded fresh weights lowered to the C runtime's ops, "
                      "bnhw.hw.cpu.perfmodel's issue model of one core at its reference board's clock (what "
                      "`bnhw bench-cpu --target CORE` prints); see measured.csv for every architecture measured")
    return d


def _latency_label(opts: SearchOptions) -> str | None:
    """The x label of the accuracy-vs-latency panel (``None``: no latency constraint, no panel)."""
    if opts.cpu_target:
        return f"latency on {opts.target} (ms, {'measured' if opts.target == 'native' else 'modelled'})"
    if opts.max_latency_ms is not None:
        return f"latency on {opts.target} (ms, modelled)"
    return None


def plot_front(path: Path, cands: list[Candidate], front: list[Candidate], best: Candidate, budget: float,
               space: SearchSpace, data_name: str, resolution: int, tau=None, latency_of: str | None = None,
               max_latency_ms: float | None = None) -> None:
    """The front as a PNG; ``tau`` (a :class:`~bnhw.design.ranking.RankCorrelation`) goes into the title.  With
    ``latency_of`` (an axis label) a second panel shows the accuracy against each candidate's ``latency_ms``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .outputs import write_png

    lat = [c for c in cands if math.isfinite(c.metrics.get("latency_ms", math.inf))] if latency_of else []
    if lat:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=120)
        ax2.scatter([c.metrics["latency_ms"] for c in lat], [100 * c.score for c in lat], s=12, c="0.7",
                    label="evaluated")
        fl = [c for c in front if c in lat]
        ax2.plot([c.metrics["latency_ms"] for c in fl], [100 * c.score for c in fl], "o", c="C0", ms=4,
                 label="OPs Pareto front")
        if "latency_ms" in best.metrics:
            ax2.scatter([best.metrics["latency_ms"]], [100 * best.score], marker="*", s=160, c="C3", zorder=5,
                        label="best")
        if max_latency_ms is not None:
            ax2.axvline(max_latency_ms, ls="--", c="C3", lw=1)
            ax2.text(max_latency_ms, ax2.get_ylim()[0], f"bound {max_latency_ms:g} ms ", color="C3", va="bottom",
                     ha="right", fontsize=8)
        ax2.set_xlabel(latency_of)
        ax2.set_ylabel("val top-1 (%)")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8, loc="lower right")
    else:
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter([c.ops / 1e6 for c in cands], [100 * c.score for c in cands], s=12, c="0.7", label="evaluated")
    ax.plot([c.ops / 1e6 for c in front], [100 * c.score for c in front], "o-", c="C0", ms=4, label="Pareto front")
    ax.scatter([best.ops / 1e6], [100 * best.score], marker="*", s=160, c="C3", zorder=5, label="best under budget")
    ax.axvline(budget / 1e6, ls="--", c="C3", lw=1)
    ax.text(budget / 1e6, ax.get_ylim()[0], f"budget {format_ops(budget)} ", color="C3", va="bottom", ha="right",
            fontsize=8)
    ax.set_xlabel(f"OPs (M), counted at {space.resolution}x{space.resolution}")
    ax.set_ylabel(f"val top-1 (%), {data_name} at {resolution}x{resolution}, inherited weights")
    ax.set_title(f"bnhw search: {space.name}" + (f"; ranking {tau.describe()}" if tau is not None else ""),
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    write_png(fig, path)


def summary_lines(result: SearchOutcome, opts: SearchOptions) -> list[str]:
    """The end-of-run summary ``bnhw search`` prints: what was found, how good it is, how long each phase took
    and the next commands, with this run's paths."""
    b, out = result.best, result.out
    lines = []
    hw = ""
    if opts.cpu_target:
        hw = (f", latency {b.metrics['latency_ms']:.3f} ms on {opts.target} "
              f"({'measured per layer shape' if opts.target == 'native' else 'modelled'})")
    elif opts.target is not None:
        hw = f", {b.metrics['fps']:,.1f} FPS on {opts.target}"
        if "latency_ms" in b.metrics:
            hw += f", latency {b.metrics['latency_ms']:.3f} ms"
        hw += " (modelled)"
    bound = format_ops(opts.budget) + "".join(
        ([f", >= {opts.min_fps:g} FPS"] if opts.min_fps else [])
        + ([f", <= {opts.max_latency_ms:g} ms"] if opts.max_latency_ms else []))
    lines.append(f"best under {bound}: {format_ops(b.ops)} OPs ({100 * b.ops / opts.budget:.0f}% of the budget, at "
                 f"the space's nominal resolution){hw} ({result.evaluated} architectures evaluated)")
    lines.append(f"  {b.spec.short()}")
    acc = (f"  accuracy: inherited val {b.score:.4f}, inherited test {result.test_accuracy:.4f}")
    sa = result.standalone
    if sa.best is not None:
        acc += f", fine-tuned test {sa.best['standalone_test_accuracy']:.4f}"
    lines.append(acc + f" (chance {result.chance:.4f})")
    lines.append(f"  supernet: largest subnet val {result.largest_val_accuracy:.4f}, median of the {result.evaluated} "
                 f"evaluated {result.median_val_accuracy:.4f}")
    if sa.correlation is not None:
        c = sa.correlation
        lines.append(f"  ranking: {c.describe()}: inherited val vs stand-alone test accuracy; "
                     + sa.describe_ceiling())
    else:
        lines.append("  ranking: not measured (--tau-subnets 0 or --finetune-epochs 0)")
    if result.phase_seconds:
        lines.append("  time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.phase_seconds.items())
                     + f" (total {sum(result.phase_seconds.values()):.0f} s)")
    files = "best_arch.json, best.json, pareto.csv, pareto.png, evaluated.csv, supernet.pt, best_subnet.pt" \
        + (", best_finetuned.pt, standalone.csv" if sa.best is not None else "") \
        + (", measured.csv" if opts.target is not None else "")
    lines.append(f"wrote into {out}/: {files}")
    ckpt = out / ("best_finetuned.pt" if sa.best is not None else "best_subnet.pt")
    board = "pynq-z2" if opts.target is None or opts.cpu_target else opts.target
    cpu = opts.target if opts.cpu_target else "cortex-a53"
    threads = f" --threads {opts.threads}" if opts.cpu_target and opts.threads else ""
    lines.append("next:")
    lines.append(f"  bnhw build {out}/best_arch.json --checkpoint {ckpt} --target {board} -o {out}-build")
    lines.append(f"  bnhw bench-cpu {out}/best_arch.json --checkpoint {ckpt} --target {cpu}{threads} -o {out}-cpu")
    lines.append(f"  bnhw report {out}/best_arch.json --checkpoint {ckpt} --target {board} -o {out}-report")
    return lines
