"""The ``bnhw`` command line.

Every command turns user mistakes (bad specs, budgets, files) into a one-line
``error: ...`` on stderr and a non-zero exit status; set ``BNHW_DEBUG=1`` to
see tracebacks of unexpected failures.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import click

from . import __version__
from .errors import BnhwError

# brevitas warns at import about an optional CUDA package
warnings.filterwarnings("ignore", message="fast_hadamard_transform package not found")

EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70
EXIT_OS = 74           # sysexits' EX_IOERR


class BnhwGroup(click.Group):
    """A click group that prints library errors as one line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BnhwError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except OSError as e:           # the file system said no (full disk, permissions): not a bnhw bug
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {where}{e.strerror or type(e).__name__}", err=True)
            ctx.exit(EXIT_OS)
        except Exception as e:  # an internal failure: still one line unless debugging
            if os.environ.get("BNHW_DEBUG"):
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            click.echo(f"internal error: {type(e).__name__}: {msg} (set BNHW_DEBUG=1 for a traceback)", err=True)
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=BnhwGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bnhw")
def main() -> None:
    """bnhw: hardware-aware co-design of binary neural networks.

    Search 1-bit CNNs under an operations budget, model them in Brevitas,
    export QONNX, build FPGA dataflow accelerators and run them on embedded
    CPUs.  ARCH arguments are architecture spec files (JSON, see
    `bnhw sample`) or bundled names (see `bnhw zoo`).
    """


# ---------------------------------------------------------------------------
@main.command()
@click.argument("arch")
@click.option("--json", "as_json", is_flag=True, help="Print the per-layer counts as JSON.")
@click.option("--totals", is_flag=True, help="Print only the totals.")
def ops(arch: str, as_json: bool, totals: bool) -> None:
    """Count FLOPs, BOPs, Int8OPs and OPs of ARCH, per layer and in total.

    OPs = FLOPs + BOPs/64 + Int8OPs/8 (NAS-BNN conventions: one MAC counts
    once; binary k x k conv with groups g: k^2 (Cin/g) Cout Hout Wout BOPs;
    8-bit stem: Int8OPs; classifier: (C+1) classes FLOPs; BN, activations,
    shortcuts and pooling not counted), at the spec's nominal resolution.
    """
    from .estimators.ops import count_ops
    from .flows.inputs import resolve
    from .flows.report_ops import render_ops

    spec = resolve(arch, "ops").spec
    rep = count_ops(spec)
    if as_json:
        click.echo(json.dumps(rep.to_dict(), indent=2))
        return
    render_ops(rep, spec, totals_only=totals)


# ---------------------------------------------------------------------------
@main.command()
@click.argument("name", required=False)
def space(name: str | None) -> None:
    """Describe a search space (choices per stage, size with and without the
    Non-Decreasing constraint, OPs of its smallest and largest subnets), or
    list the spaces when NAME is omitted."""
    from .flows.report_ops import render_space, render_space_list

    if name is None:
        render_space_list()
    else:
        from .spec.space import get_space

        render_space(get_space(name))


@main.command()
def zoo() -> None:
    """List the bundled architectures usable wherever ARCH is expected."""
    from .estimators.ops import format_ops, ops_of
    from .spec.zoo import ARCHS, get_arch

    for n, (_, desc) in ARCHS.items():
        click.echo(f"{n:24s} {format_ops(ops_of(get_arch(n))):>9s} OPs  {desc}")


@main.command()
@click.option("--space", "space_name", default="nasbnn-imagenet", show_default=True, help="Search space.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("-n", "count", default=1, show_default=True, type=click.IntRange(1, 100000),
              help="Number of architectures.")
@click.option("--no-nd", is_flag=True, help="Sample without the Non-Decreasing constraint.")
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Write to this file (n=1) or folder (n>1) instead of stdout.")
@click.option("--force", is_flag=True, help="Replace an existing -o (a file, or a folder another command wrote).")
def sample(space_name: str, seed: int, count: int, no_nd: bool, out: Path | None, force: bool) -> None:
    """Sample random architectures of a space as spec JSON."""
    import random

    from .flows.outputs import check_out_file, check_out_folder
    from .spec.space import get_space

    sp = get_space(space_name).with_constraint(not no_nd)
    if out is not None:
        if count == 1:
            check_out_file(out, force=force)
        else:
            check_out_folder(out, "sample", force=force)
    rng = random.Random(seed)
    specs = [sp.sample(rng, name=f"{sp.name}-seed{seed}-{i}") for i in range(count)]
    if no_nd:
        specs = [s.replace(space=None) for s in specs]
    if out is None:
        for s in specs:
            click.echo(s.to_json(indent=None if count > 1 else 2))
    elif count == 1:
        specs[0].save(out)
        click.echo(f"wrote {out}")
    else:
        from .flows.outputs import claim_folder

        with claim_folder(out, "sample", force=force):
            for s in specs:
                s.save(out / f"{s.name}.json")
        click.echo(f"wrote {count} specs to {out}/")


# ---------------------------------------------------------------------------
@main.command()
@click.argument("arch")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Output .onnx file.")
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Weights (from `bnhw train`/`search`).")
@click.option("--precision", type=click.Choice(["spec", "float", "fixed"]), default="spec", show_default=True,
              help="Real-valued path: as in the spec, float, or fixed point (integer hardware).")
@click.option("--verify", default=8, show_default=True, type=click.IntRange(0, 1797),
              help="Execute the QONNX model on this many digits images and compare with PyTorch (0: skip).")
@click.option("--calibration-images", default=64, show_default=True, type=click.IntRange(1, 1797),
              help="Without --checkpoint: digits images the batch-norm statistics of the random weights are "
                   "estimated on.")
@click.option("--force", is_flag=True, help="Replace an existing -o (a file, or a folder another command wrote).")
def export(arch: str, out: Path, checkpoint: Path | None, precision: str, verify: int, calibration_images: int,
           force: bool) -> None:
    """Export ARCH as a QONNX model (Brevitas export_qonnx + qonnx cleanup).

    Without --checkpoint the weights are random and BN statistics are
    estimated on the bundled digits data, which is enough to check the
    export numerically.  --verify runs qonnx execution against PyTorch:
    every binary tensor must match bit-exactly.
    """
    from .flows.export import export_flow

    export_flow(arch, out, checkpoint=checkpoint, precision=precision, verify=verify, force=force,
                calibration_images=calibration_images, echo=click.echo)


# ---------------------------------------------------------------------------
@main.command()
@click.option("--budget", required=True, help="OPs budget: 57M, 1.2G, 57e6, 57000000.")
@click.option("--method", type=click.Choice(["nasbnn", "bnas", "bars"]), default="nasbnn", show_default=True,
              help="nasbnn: supernet + evolutionary Pareto search (paper 003); bnas: BNAS v2 cell search; bars: BARS "
                   "macro + micro cell search.")
@click.option("--space", "space_name", default="nasbnn-imagenet", show_default=True,
              help="Search space (nasbnn).")
@click.option("--data", default="digits", show_default=True,
              help="digits (bundled, nothing downloaded), cifar10:DIR (python batches) or folder:DIR.")
@click.option("--resolution", default=32, show_default=True, type=click.IntRange(8, 1024),
              help="Training (proxy) resolution; OPs are always counted at the space's nominal resolution.")
@click.option("--recipe", type=click.Choice(["laptop", "paper"]), default="laptop", show_default=True,
              help="nasbnn defaults: laptop (learns within ~10 minutes on 2 CPU cores: teacher warm-up, no weight "
                   "normalisation, short fine-tuning) or paper (NAS-BNN's: Adam 5e-4, batch 512, 512 epochs, weight "
                   "normalisation, 100 fine-tuning epochs at 1e-5; for GPUs).  Options given explicitly win.")
@click.option("--epochs", type=click.IntRange(0, 100000),
              help="Supernet epochs, teacher warm-up included (nasbnn, default: the recipe's) or cell-search epochs "
                   "(bnas/bars, default 8).")
@click.option("--warmup-epochs", type=click.IntRange(0, 100000),
              help="nasbnn: first epochs that train the teacher (largest subnet) alone [default: the recipe's].")
@click.option("--batch-size", type=click.IntRange(2, 65536),
              help="Images per training step (the sandwich rule trains four subnets on each) [default: the "
                   "recipe's; 32 for bnas/bars].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Adam learning rate (cosine schedule) [default: the recipe's].")
@click.option("--population", type=click.IntRange(2, 100000),
              help="Architectures per generation of the evolutionary search [default: the recipe's].")
@click.option("--generations", type=click.IntRange(0, 100000),
              help="Generations of the evolutionary search (0: only the initial population) [default: the recipe's].")
@click.option("--tau-subnets", type=click.IntRange(0, 10000),
              help="nasbnn: subnets (spread over the OPs range, the best among them) trained stand-alone to measure "
                   "the ranking's Kendall tau (0: skip) [default: the recipe's, 8].")
@click.option("--finetune-epochs", type=click.IntRange(0, 100000),
              help="nasbnn: epochs of each stand-alone run, the best's fine-tuning (0: none, and no tau) [default: "
                   "the recipe's].")
@click.option("--tau-init", type=click.Choice(["inherit", "scratch"]), default="inherit", show_default=True,
              help="nasbnn: stand-alone runs start from the supernet's weights (NAS-BNN pipeline 2) or from scratch.")
@click.option("--device", default="auto", show_default=True,
              help="nasbnn: torch device of the supernet training and search: auto (CUDA when present), cpu, cuda, "
                   "cuda:N.")
@click.option("--bucket", "bucket_mops", default=2.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Width of the Pareto buckets in MOPs (may be below 1).")
@click.option("--teacher", type=click.Choice(["fwba", "bwba", "none"]), default="fwba", show_default=True,
              help="fwba: Bi-Teacher; bwba: largest binary subnet; none: no distillation.")
@click.option("--no-bi-transformation", is_flag=True, help="Ablation: switch Bi-Transformation off.")
@click.option("--weight-norm/--no-weight-norm", default=None,
              help="Channel-wise weight normalisation (NAS-BNN Eq. 6) [default: the recipe's; paper on, laptop off].")
@click.option("--train-images", type=click.IntRange(1), default=None,
              help="Use only the first N training images (quick experiments, smoke tests).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Random seed of data split, weights, sampling and evolution.")
@click.option("-o", "--out", default="runs/search", show_default=True, type=click.Path(path_type=Path),
              help="Output folder.")
@click.option("--resume", is_flag=True, help="Continue an interrupted search in --out.")
@click.option("--target", help="Hardware of the constraints: an FPGA board (pynq-z2, pynq-z1, ultra96-v2, kv260, "
              "zcu104; alone, the modelled FPS of every candidate is recorded) or a CPU (native: latency measured "
              "here per layer shape with the C runtime; cortex-a9, cortex-a53, cortex-a72: the ARM cycle model; "
              "alone, every candidate's latency is recorded).")
@click.option("--min-fps", type=click.FloatRange(min=0), help="Keep only architectures whose modelled FPS on "
              "--target (a board) is at least this.")
@click.option("--max-latency-ms", type=click.FloatRange(min=0, min_open=True),
              help="Keep only architectures whose latency per image on --target is at most this (modelled; "
                   "--target native: measured).")
@click.option("--threads", type=click.IntRange(0, 256), default=None,
              help="CPU --target native: threads of the runtime the latency is measured with (0: all online "
                   "cores, the default; the modelled ARM cores are one core).")
@click.option("--margin", default=0.85, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Fraction of --target's LUT/BRAM/URAM/DSP the folding of each candidate may use.")
@click.option("--fifo-seconds", default=20.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="bnas/bars with --target: time budget of each candidate's FIFO sizing by the cycle simulator "
                   "(when it runs out the depths are safe, not minimal).")
@click.option("--search-resolution", default=16, show_default=True, type=click.IntRange(8, 1024),
              help="bnas/bars: image size of the cell search (the final network is counted and trained at "
                   "--resolution).")
@click.option("--gamma", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="bnas/bars: Eq. 5's transferability factor (Zeroise's weight is divided by it).")
@click.option("--no-zeroise", is_flag=True, help="bnas/bars ablation: discard Zeroise from the candidates.")
@click.option("--no-inter-cell-skip", is_flag=True, help="bnas/bars ablation: the DARTS cell template.")
@click.option("--no-diversity", is_flag=True, help="bnas/bars ablation: no diversity regularizer (Eq. 6).")
@click.option("--separable", is_flag=True, help="bnas/bars: add binary separable convs to the candidates.")
@click.option("--cells", type=click.IntRange(3), default=None,
              help="bnas: cells of the final network (its channels the most that fit --budget) [default: the "
                   "Table 5 cell count that gives the most OPs within --budget].")
@click.option("--final-epochs", default=0, show_default=True, type=click.IntRange(0, 100000),
              help="bnas/bars: train the derived network from scratch for this many epochs.")
@click.option("--scheme", type=click.Choice(["minimal", "standard", "standard-restarts"]), default="minimal",
              show_default=True,
              help="bnas/bars: training of the derived network: minimal regularization (Adam, cosine, no weight "
                   "decay), standard (SGD, one-cycle 5e-2..4e-4, BNAS v2 on CIFAR10) or standard-restarts (SGD, "
                   "cosine with warm restarts, BNAS v2 on ImageNet).")
@click.option("--force", is_flag=True, help="Replace an existing -o (a file, or a folder another command wrote).")
def search(budget, method, space_name, data, resolution, recipe, epochs, warmup_epochs, batch_size, lr, population,
           generations, tau_subnets, finetune_epochs, tau_init, device, bucket_mops, teacher, no_bi_transformation,
           weight_norm, train_images, seed, out, resume, target, min_fps,
           max_latency_ms, threads, margin, fifo_seconds, search_resolution, gamma, no_zeroise, no_inter_cell_skip, no_diversity,
           separable, cells, final_epochs, scheme, force) -> None:
    """Search the most accurate binary network under an OPs budget (NAS-BNN).

    Trains a weight-sharing supernet (sandwich rule, Bi-Teacher,
    Bi-Transformation, optionally weight normalisation), runs an
    evolutionary Pareto search with the OPs estimator in the loop, then
    trains a sample of subnets stand-alone (the best's fine-tuning, and
    Kendall's tau of the ranking).  Writes into --out: best_arch.json
    (spec), best.json (OPs, accuracies, tau, time per phase, what they
    mean), pareto.csv / pareto.png, evaluated.csv, standalone.csv,
    supernet.pt, best_subnet.pt, best_finetuned.pt, search_state.json,
    config.json and log.txt, and prints a summary with the next commands.
    Interrupt at any time;
    --resume continues without redoing finished epochs or generations.
    Runs under torchrun (gloo/NCCL) too.

    With --target BOARD and --min-fps N (and/or --max-latency-ms) only
    architectures whose modelled FPS (latency) on the board meets the bound
    are scored and returned (FINN's analytical models at the best folding
    within --margin of the board, at the space's nominal resolution); the FPS of
    every candidate goes into the CSVs and best.json, every architecture
    the hardware constraints measured into measured.csv.  With --target
    cortex-a9|cortex-a53|cortex-a72|native and --max-latency-ms N the bound is
    the latency of one image on that CPU through bnhw's C runtime: the ARM
    cycle model, or for native the sum of per-op times measured here (each
    layer shape once, --threads, cached in cpu_cache.json).  With --method
    bnas|bars (--target a board) the derived network is estimated with its
    stream FIFOs (the skip paths' buffering, sized by the cycle simulator)
    and shrunk until it meets the bounds; best.json lists every candidate
    under "fpga".  With --method bnas|bars and a CPU --target the derived
    network's latency on it is the bound (the same estimate as for nasbnn),
    the network shrunk the same way; every candidate is under "cpu" in
    best.json and in measured.csv and latency.png.
    """
    from . import distributed as dist_util
    from .design.evolution import EvolutionConfig
    from .design.supernet import SupernetConfig
    from .design.train import TrainConfig, resolve_device
    from .estimators.ops import parse_budget
    from .flows.progress import search_progress
    from .flows.search import RECIPES, SearchOptions, hardware_constraints, run_search
    from .flows.standalone import StandaloneOptions
    from .hw.constraints import hardware_target

    budget = parse_budget(budget)
    if method != "nasbnn":
        epochs = 8 if epochs is None else epochs
        batch_size = 32 if batch_size is None else batch_size
        _cell_search(method, budget, data, resolution, search_resolution, epochs, batch_size, train_images, seed,
                     out, resume, force, gamma, no_zeroise, no_inter_cell_skip, no_diversity, separable, cells,
                     final_epochs, scheme, target, min_fps, max_latency_ms, threads, margin, fifo_seconds)
        return
    if target is not None:
        target = hardware_target(target)     # a board or a CPU; unknown: one line listing both
    r = RECIPES[recipe].with_overrides(epochs=epochs, warmup_epochs=warmup_epochs, batch_size=batch_size, lr=lr,
                                       population=population, generations=generations, weight_norm=weight_norm,
                                       tau_subnets=tau_subnets, finetune_epochs=finetune_epochs)
    opts = SearchOptions(
        budget=budget, space=space_name, data=data, resolution=resolution, seed=seed, train_images=train_images,
        train=TrainConfig(epochs=r.epochs, warmup_epochs=min(r.warmup_epochs, r.epochs), batch_size=r.batch_size,
                          lr=r.lr, teacher=teacher, seed=seed),
        supernet=SupernetConfig(weight_norm=r.weight_norm, bi_transformation=not no_bi_transformation,
                                rprelu_init=r.rprelu_init, zero_init_residual=r.zero_init_residual),
        evolution=EvolutionConfig(population=r.population, generations=r.generations, bucket_mops=bucket_mops),
        standalone=StandaloneOptions(subnets=r.tau_subnets, epochs=r.finetune_epochs, init=tau_init,
                                     lr=r.finetune_lr),
        recipe=recipe, device=device,
        target=target, min_fps=min_fps, max_latency_ms=max_latency_ms, threads=threads, margin=margin)
    hardware_constraints(opts)          # --min-fps without --target, with a CPU, ...: one line, before any work
    resolve_device(device)              # a device this machine lacks: one line, before the folder is claimed
    dist_util.init_from_env()
    with _claimed(out, "search", force), search_progress(opts, enabled=dist_util.is_main()) as on_event:
        result = run_search(opts, out, resume=resume, event=on_event)
    if dist_util.is_main():
        from .flows.search import summary_lines

        for line in summary_lines(result, opts):
            click.echo(line)


def _claimed(out: Path, command: str, force: bool):
    """The -o folder of a resumable run: checked, locked and marked (by the main process under torchrun)."""
    import contextlib

    from . import distributed as dist_util
    from .flows.outputs import claim_folder

    return claim_folder(out, command, force=force) if dist_util.is_main() else contextlib.nullcontext(out)


def _cell_search(method, budget, data, resolution, search_resolution, epochs, batch_size, train_images, seed, out,
                 resume, force, gamma, no_zeroise, no_inter_cell_skip, no_diversity, separable, cells, final_epochs,
                 scheme, target=None, min_fps=None, max_latency_ms=None, threads=None, margin=0.85,
                 fifo_seconds=20.0) -> None:
    """``bnhw search --method bnas|bars`` (see bnhw.flows.cell_search)."""
    from .estimators.ops import format_ops
    from .flows.cell_search import CellSearchOptions, run_cell_search
    from .flows.progress import cell_search_progress

    opts = CellSearchOptions(method=method, budget=budget, data=data, resolution=resolution,
                             search_resolution=search_resolution, epochs=epochs, batch_size=batch_size,
                             train_images=train_images, seed=seed, gamma=gamma, zeroise=not no_zeroise,
                             inter_cell_skip=not no_inter_cell_skip, diversity=not no_diversity, separable=separable,
                             cells=cells, final_epochs=final_epochs, scheme=scheme, target=target, min_fps=min_fps,
                             max_latency_ms=max_latency_ms, threads=threads, margin=margin, fifo_seconds=fifo_seconds)
    opts.validate()                     # bad hardware flags: one line, before the folder is claimed
    with _claimed(out, "search", force), cell_search_progress(opts) as on_event:
        r = run_cell_search(opts, out, resume=resume, event=on_event)
    acc = (f", val acc {r['val_accuracy']:.4f}, test acc {r['test_accuracy']:.4f}" if "test_accuracy" in r
           else " (not trained: --final-epochs 0)")
    click.echo(f"{method}: {format_ops(r['ops'])} OPs (budget {format_ops(budget)}, counted at "
               f"{r['ops_counted_at']}){acc}")
    click.echo(f"  {r['short']}")
    if "fpga" in r:
        f, c = r["fpga"], r["fpga"]["chosen"]
        res = c["resources_with_fifos"]
        click.echo(f"  {f['target']} (modelled, units + sized FIFOs + width converters, units folded within "
                   f"{c['units_margin']:.2f} of the board): {c['fps']:,.1f} FPS, latency "
                   f"{c['latency_ms']:.3f} ms, LUT {res['LUT']:,.0f}, BRAM18 {res['BRAM18']:,.0f} (FIFOs: "
                   f"{c['fifo']['bram18']:,.0f} BRAM18, {c['fifo']['lut']:,.0f} LUT, {c['fifo']['deeper_than_2']} "
                   f"deeper than 2); {len(f['candidates'])} candidate(s) estimated"
                   + (", the derived network shrunk to meet the bounds" if f["shrunk"] else ""))
    if "cpu" in r:
        c = r["cpu"]
        bound = f" (bound {c['max_latency_ms']:g} ms)" if c["max_latency_ms"] is not None else ""
        click.echo(f"  {c['target']}: {c['estimate']['ms']:.3f} ms per image{bound}, {c['how']}, {c['kernels']} kernels, "
                   f"{c['threads']} thread(s); {len(c['candidates'])} candidate(s) estimated"
                   + (", the derived network shrunk to meet the bound" if c["shrunk"] else ""))
    click.echo(f"  {r['export']['check']}")
    click.echo(f"wrote {out}/best_arch.json, best.json, search.json, model.onnx, log.txt"
               + (", measured.csv, latency.png, cpu_cache.json" if "cpu" in r else ""))


@main.command()
@click.argument("arch")
@click.option("--supernet", type=click.Path(path_type=Path),
              help="supernet.pt of a `bnhw search`: inherit its weights and fine-tune (pipeline 2).")
@click.option("--init", "init", type=click.Path(path_type=Path),
              help="model.pt of a `bnhw train`: start from its weights and fine-tune (learning rate as with "
                   "--supernet); e.g. a float-residual model fine-tuned in ARCH's fixed-point form.")
@click.option("--data", default="digits", show_default=True, help="digits, cifar10:DIR or folder:DIR.")
@click.option("--resolution", default=32, show_default=True, type=click.IntRange(8, 1024),
              help="Image size the network is trained at (the spec's resolution only counts OPs).")
@click.option("--epochs", default=4, show_default=True, type=click.IntRange(0, 100000),
              help="Training epochs.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(2, 65536),
              help="Images per training step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Peak learning rate [default: Adam 2e-3 from scratch, 2e-4 fine-tuning; see --optimizer].")
@click.option("--train-images", type=click.IntRange(1), default=None, help="Use only the first N training images.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Random seed of data split and weights.")
@click.option("-o", "--out", default="runs/train", show_default=True, type=click.Path(path_type=Path),
              help="Output folder (model.pt, arch.json, result.json, train_state.pt).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--optimizer", type=click.Choice(["adam", "sgd-onecycle", "sgd-restarts"]), default="adam",
              show_default=True,
              help="adam: cosine, no weight decay (minimal regularization); sgd-onecycle: BNAS v2's standard "
                   "CIFAR10 scheme (momentum 0.9, weight decay 3e-6, one-cycle 5e-2..4e-4); sgd-restarts: its "
                   "ImageNet scheme (weight decay 3e-5, cosine with warm restarts, peak 0.1).")
@click.option("--device", default="auto", show_default=True,
              help="Torch device: auto (CUDA when present), cpu, cuda, cuda:N.")
@click.option("--force", is_flag=True, help="Replace an existing -o (a file, or a folder another command wrote).")
def train(arch, supernet, init, data, resolution, epochs, batch_size, lr, train_images, seed, out, resume,
          optimizer, device, force) -> None:
    """Train ARCH: fine-tune from a supernet (--supernet, NAS-BNN pipeline 2) or
    from a trained model's weights (--init, e.g. a short fixed-point fine-tune
    of a float-residual model: ARCH with "residual": "fixed"), or
    from scratch with the minimal-regularization scheme of BNAS v2 (Adam, no
    weight decay, cosine, no colour jitter).  Writes model.pt (a checkpoint
    `bnhw export --checkpoint` takes), arch.json, result.json and a resumable
    train_state.pt into --out.  Runs under torchrun (DDP) too."""
    from . import distributed as dist_util
    from .flows.inputs import resolve
    from .flows.train import FitConfig, fit

    spec = resolve(arch, "train").spec
    if supernet is not None and not Path(supernet).is_file():
        raise BnhwError(f"--supernet {supernet}: no such checkpoint")
    if init is not None and supernet is not None:
        raise BnhwError("--init and --supernet: give one starting point, not both")
    if init is not None and not Path(init).is_file():
        raise BnhwError(f"--init {init}: no such checkpoint")
    dist_util.init_from_env()
    cfg = FitConfig(scheme="finetune" if supernet or init else "scratch", epochs=epochs, batch_size=batch_size, lr=lr,
                    seed=seed, data=data, resolution=resolution, train_images=train_images, optimizer=optimizer,
                    device=device)

    def progress(name, info):
        if name == "epoch" and dist_util.is_main():
            click.echo(f"epoch {info['epoch']}/{epochs}: loss {info['loss']:.4f}, val acc {info['val_accuracy']:.4f}",
                       err=True)
        elif name == "resumed" and dist_util.is_main():
            click.echo(f"resumed after epoch {info['epoch']}", err=True)

    with _claimed(out, "train", force):
        res = fit(spec, cfg, out, supernet=supernet, init=init, resume=resume, progress=progress)
    if dist_util.is_main():
        click.echo(f"{cfg.scheme}: val acc {res['val_accuracy']:.4f}, test acc {res['test_accuracy']:.4f} "
                   f"({res['data']}); wrote {out}/model.pt")


@main.command("eval")
@click.argument("arch")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path), help="Weights (model.pt).")
@click.option("--data", default="digits", show_default=True, help="digits, cifar10:DIR or folder:DIR.")
@click.option("--resolution", default=32, show_default=True, type=click.IntRange(8, 1024),
              help="Image size the network is evaluated at.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True,
              help="Data split to evaluate on.")
def eval_cmd(arch, checkpoint, data, resolution, split) -> None:
    """Top-1 accuracy of ARCH with the weights of --checkpoint on a data split."""
    from .flows.inputs import resolve
    from .flows.train import evaluate_checkpoint

    resolve(arch, "eval")
    if not checkpoint.is_file():
        raise BnhwError(f"--checkpoint {checkpoint}: no such checkpoint")
    r = evaluate_checkpoint(arch, checkpoint, data, resolution, split)
    click.echo(f"top-1 {r['accuracy']:.4f} on {r['images']} {split} images ({r['data']})")


@main.command()
@click.argument("archs", nargs=-1, required=True)
@click.option("--target", default="pynq-z2", show_default=True,
              help="Board: pynq-z2, pynq-z1, ultra96-v2, kv260, zcu104.")
@click.option("--checkpoint", "checkpoints", multiple=True,
              help="Weights for the accuracy column, once per ARCH in the same order ('-' for none).")
@click.option("--margin", default=0.85, show_default=True, type=float,
              help="Fraction of the board's LUT/BRAM/URAM/DSP the folding may use.")
@click.option("--clock-mhz", type=float, help="Fabric clock (default: the board's).")
@click.option("-o", "--out", default="runs/report", show_default=True, type=click.Path(path_type=Path),
              help="Output folder.")
@click.option("--analytical", is_flag=True, help="FINN's analytical II / latency instead of the cycle simulator's.")
@click.option("--force", is_flag=True, help="Replace an existing -o (a file, or a folder another command wrote).")
def report(archs, target, checkpoints, margin, clock_mhz, out, analytical, force) -> None:
    """Compare architectures side by side on an FPGA board.

    Each ARCH (a spec file or a `bnhw zoo` name): OPs / BOPs / FLOPs and
    weights (counted), whether it fits the board, FPS, latency, LUT / BRAM18
    / DSP and their share of the board (modelled: FINN's analytical models
    at the best folding within --margin of the board), and top-1 accuracy
    on the digits test split for an ARCH given a --checkpoint (measured).
    Writes report.md, report.json and report.png into --out and prints the
    table.
    """
    from .flows.report import report_flow

    report_flow(list(archs), target, out, checkpoints=list(checkpoints), margin=margin, clock_mhz=clock_mhz,
                simulate=not analytical, force=force, echo=click.echo)

# ---------------------------------------------------------------------------
DEFAULT_SEARCH_ARCH = Path("runs/search/best_arch.json")


@main.command()
@click.argument("network", required=False)
@click.option("--target", default="pynq-z2", show_default=True,
              help="Board: pynq-z2, pynq-z1, ultra96-v2, kv260, zcu104.")
@click.option("-o", "--out", default="runs/build", show_default=True, type=click.Path(path_type=Path),
              help="Output folder (report, folding, QONNX, HLS project).")
@click.option("--folding", type=click.Path(path_type=Path),
              help="Hand-written FINN folding config (JSON), or 'finn-examples' for the reference networks.")
@click.option("--fps", type=float, help="Reach this FPS with the fewest resources (default: the highest FPS "
              "that fits the board).")
@click.option("--clock-mhz", type=float, help="Fabric clock (default: the board's).")
@click.option("--margin", default=0.85, show_default=True, type=float,
              help="Fraction of the board's LUT/BRAM/URAM/DSP the folding may use.")
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Weights (from `bnhw train`/`search`).")
@click.option("--csim-inputs", default=16, show_default=True, type=click.IntRange(1, 1797),
              help="Real images for the bit-exact checks (IR vs QONNX, C simulation vs IR).")
@click.option("--no-csim", is_flag=True, help="Generate the HLS project but skip its C simulation.")
@click.option("--no-sim", is_flag=True, help="Skip the cycle simulation and FIFO sizing.")
@click.option("--sim-frames", default=10, show_default=True, type=click.IntRange(2, 10000),
              help="Frames the cycle simulation runs back to back.")
@click.option("--fifo-seconds", default=300.0, show_default=True, type=click.FloatRange(min=0),
              help="Time budget of the FIFO sizing search (past it, the remaining FIFOs keep safe depths).")
@click.option("--no-finn", is_flag=True,
              help="Do not hand the QONNX network to finn-plus's builder (finn/: FINN's graph, estimates and code).")
@click.option("--backend", default="finn", show_default=True,
              help="finn: bnhw's folded dataflow accelerator (HLS, cycle simulation, FINN's builder); hls4ml: an "
                   "hls4ml project from hls4ml's own converter, fixed by bnhw's passes, C-simulated bit-exact.")
@click.option("--force", is_flag=True, help="Replace an existing -o (a file, or a folder another command wrote).")
def build(network, target, out, folding, fps, clock_mhz, margin, checkpoint, csim_inputs, no_csim, no_sim,
          sim_frames, fifo_seconds, no_finn, backend, force) -> None:
    """Build a streaming XNOR-popcount dataflow accelerator for NETWORK on a board.

    NETWORK is a reference network (cnv-w1a1, tfc-w1a1), an architecture
    spec file or a `bnhw zoo` name; without it, the result of `bnhw search`
    (runs/search/best_arch.json).  Writes report.md / report.json /
    layers.png (per-unit folding, cycles, LUT, BRAM, DSP, FPS, latency),
    folding.json, fifo_config.json (simulated FIFO depths), model.onnx and
    the HLS project with its C simulation; for the reference nets and QONNX
    files also finn/: finn-plus's own builder run offline with bnhw's
    folding up to FINN's code generation (its graph, estimates, generated
    code and a DataflowBuildConfig to continue where Vivado exists).
    With --backend hls4ml: hls4ml's own project (hls4ml/, hls4ml_config.yml),
    fixed by bnhw's hls4ml passes and C-simulated bit-exact against the IR,
    with report.md / report.json, model.onnx and hw_graph.json.
    """
    from .flows.build import BuildOptions, build_flow

    if network is None:
        if not DEFAULT_SEARCH_ARCH.is_file():
            raise BnhwError("no NETWORK given and no runs/search/best_arch.json; give a network: cnv-w1a1, "
                            "tfc-w1a1, an architecture spec file or a `bnhw zoo` name")
        network = str(DEFAULT_SEARCH_ARCH)
        click.echo(f"building {network} (the result of `bnhw search`)")
    build_flow(BuildOptions(network=network, target=target, out=out, folding=folding, fps=fps, clock_mhz=clock_mhz,
                            margin=margin, checkpoint=checkpoint, csim_inputs=csim_inputs, csim=not no_csim,
                            sim=not no_sim, sim_frames=sim_frames, fifo_seconds=fifo_seconds, finn=not no_finn,
                            backend=backend, force=force),
               echo=click.echo)


@main.command()
@click.argument("graph", type=click.Path(path_type=Path))
@click.option("--frames", default=10, show_default=True, type=click.IntRange(1, 100000),
              help="Frames to run back to back.")
@click.option("--fifos", "fifos", default="unbounded", show_default=True,
              help="FIFO depths: 'unbounded', 'sized' (size them first), a depth for all, or a FINN config "
                   "with inFIFODepths (e.g. a build's fifo_config.json).")
@click.option("--clock-mhz", default=100.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Fabric clock for FPS and latency.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def sim(graph: Path, frames: int, fifos: str, clock_mhz: float, as_json: bool) -> None:
    """Cycle-simulate a folded accelerator: GRAPH is a build folder or its hw_graph.json.

    Prints the steady-state II, FPS, first-output and frame latency, and per
    unit busy / starved / stalled cycles.
    """
    from .flows.simulate import sim_command

    sim_command(graph, frames=frames, fifos=fifos, clock_mhz=clock_mhz, as_json=as_json, echo=click.echo)


@main.command("run")
@click.argument("build_dir", type=click.Path(path_type=Path))
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path),
              help="Images as a .npy array: N x C x H x W or N x H x W x C; floats are the model's input "
                   "(e.g. pixels / 255), integers the accelerator's (e.g. uint8 pixels).")
@click.option("--engine", type=click.Choice(["finn", "ir", "sim", "cpu", "qonnx"]),
              help="finn: FINN's own execution of its dataflow graph (default when the build has one); ir: "
                   "bnhw's integer IR; sim: the cycle simulator; cpu: bnhw's C runtime; qonnx: model.onnx.")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"labels": [...], "engine": ..., "images": N, ...}.')
def run_cmd(build_dir: Path, input_path: Path, engine: str | None, as_json: bool) -> None:
    """Run a built network on your images: one predicted label per image.

    BUILD_DIR is a folder written by `bnhw build`.  Every engine gets the
    same integers (the accelerator's input), so their labels agree bit for
    bit.  Notes and progress go to stderr.
    """
    from .flows.run import run_command

    run_command(build_dir, input_path, engine, as_json, echo=click.echo)


@main.command("bench-cpu")
@click.argument("network")
@click.option("--target", default="native", show_default=True,
              help="native (measured here), cortex-a9, cortex-a53 or cortex-a72 (modelled).")
@click.option("-o", "--out", default="runs/bench-cpu", show_default=True, type=click.Path(path_type=Path),
              help="Output folder (bench_cpu.md, bench_cpu.json, model.bnhwcpu).")
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Weights (from `bnhw train`/`search`).")
@click.option("--repeat", default=20, show_default=True, type=click.IntRange(1, 100000),
              help="Timed runs (native); the median is reported.")
@click.option("--images", default=16, show_default=True, type=click.IntRange(1, 1797),
              help="Real images for the bit-exact check.")
@click.option("--kernels", default=None,
              type=click.Choice(["auto", "ref", "portable", "avx2", "avx512", "avx512bw", "neon", "opt"]),  # KERNEL_SET_NAMES
              help="Kernel set of the native runtime: auto (default: the best this CPU runs; opt is an alias), "
                   "ref, portable, avx2, avx512 (with VPOPCNTDQ), avx512bw (without), neon.  Without it "
                   "$BNHW_KERNELS names the set.  A set this CPU lacks is an error.")
@click.option("--threads", default=0, show_default=True, type=click.IntRange(0, 256),
              help="Threads of the native runtime (0: all online cores); outputs do not depend on it.")
@click.option("--clock-mhz", type=click.FloatRange(min=0, min_open=True),
              help="Core clock of a modelled ARM target (default: its reference board's).")
@click.option("--no-qemu", is_flag=True, help="ARM targets: skip the bit-exact check of the cross build under QEMU.")
@click.option("--force", is_flag=True, help="Replace an existing -o (a file, or a folder another command wrote).")
def bench_cpu(network, target, out, checkpoint, repeat, images, kernels, threads, clock_mhz, no_qemu, force) -> None:
    """Run NETWORK on an embedded CPU through bnhw's C kernels.

    NETWORK is an architecture spec or `bnhw zoo` name, cnv-w1a1 / tfc-w1a1,
    a build's hw_graph.json or a .bnhwcpu model file.  The runtime is first
    checked bit-exact against the IR on real images.  --target native
    measures per-op and whole-network latency and binary GOPS on this
    machine; an ARM core target models them (NEON instruction mix x the
    core's issue rates at its board's clock) and prints the core's roofline.
    """
    from .flows.cpu_bench import bench_cpu_flow

    bench_cpu_flow(network, target, out, checkpoint=checkpoint, repeat=repeat, images=images, kernels=kernels,
                   clock_mhz=clock_mhz, qemu=not no_qemu, force=force, threads=threads, echo=click.echo)


def run() -> None:  # console-script entry point
    main(prog_name="bnhw")


if __name__ == "__main__":  # pragma: no cover
    run()
