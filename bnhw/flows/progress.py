"""Live progress for long commands (rich progress bars on stderr)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _bars() -> tuple[Console, Progress]:
    """A stderr console and a progress display: description, bar, done/total, info, elapsed, remaining."""
    console = Console(stderr=True)
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn())
    return console, Progress(*cols, console=console, transient=False)


@contextlib.contextmanager
def search_progress(opts, enabled: bool = True) -> Iterator:
    """Yields an event callback for :func:`bnhw.flows.search.run_search` that drives two bars."""
    if not enabled:
        yield lambda name, info: None
        return
    console, prog = _bars()
    started = False
    pending: list[str] = []
    train = prog.add_task("supernet", total=None, info="")
    evo = prog.add_task("search  ", total=None, info="", visible=False)
    alone = prog.add_task("stand-alone", total=None, info="", visible=False)
    try:
        def on_event(name: str, info: dict) -> None:
            nonlocal started
            if not started and name not in ("data", "constraints"):   # output starts with the work (input errors first)
                prog.start()
                started = True
                for line in pending:
                    console.print(line)
            if name == "data":
                pending.append(f"[dim]{info['describe']}; OPs counted at {info['ops_resolution']}x"
                               f"{info['ops_resolution']}, training at {info['train_resolution']}x"
                               f"{info['train_resolution']}[/dim]")
            elif name == "constraints":
                line = "constraints: " + "; ".join(info["describe"])
                if info.get("hardware"):
                    line += f" (hardware modelled at {info['hw_resolution']}x{info['hw_resolution']})"
                pending.append(f"[dim]{line}[/dim]")
            elif name == "train.step":
                total = info["epochs"] * info["steps"]
                done = (info["epoch"] - 1) * info["steps"] + info["step"]
                prog.update(train, total=total, completed=done,
                            info=f"epoch {info['epoch']}/{info['epochs']} loss {info['loss']:.3f}")
            elif name == "train.resumed":
                console.print(f"resumed supernet training after epoch {info['epoch']}")
            elif name == "train.epoch":
                console.print(f"epoch {info['epoch']}: teacher loss {info['loss_teacher']:.3f}")
            elif name == "search.resumed":
                console.print(f"resumed search after generation {info['generation']}")
                prog.update(train, visible=False)
            elif name == "search.eval":
                gens = opts.evolution.generations + 1
                prog.update(evo, visible=True, total=gens * opts.evolution.population, completed=info["done"])
            elif name == "standalone.start":
                prog.update(alone, visible=True, total=info["subnets"], completed=0,
                            info=f"{info['subnets']} subnets x {info['epochs']} epochs")
            elif name == "standalone.step":
                prog.update(alone, info=f"subnet {info['subnet']}/{info['subnets']}: epoch {info['epoch']}/"
                            f"{info['epochs']} step {info['step']}/{info['steps']} loss {info['loss']:.3f}")
            elif name == "standalone.done":
                prog.update(alone, completed=info["subnet"],
                            info=f"subnet {info['subnet']}/{info['subnets']}: {info['ops'] / 1e6:.1f}M, inherited "
                            f"{100 * info['inherited_val_accuracy']:.1f}% -> stand-alone "
                            f"{100 * info['standalone_test_accuracy']:.1f}%")
            elif name == "search.generation":
                fps = info.get("best_metrics", {}).get("fps")
                rejected = info.get("rejected")
                prog.update(evo, visible=True, info=f"gen {info['generation']}/{info['generations']} best "
                            f"{100 * info['best_score']:.1f}% @ {info['best_ops'] / 1e6:.1f}M"
                            + (f", {fps:,.0f} FPS" if fps is not None else "")
                            + (f" ({rejected} rejected by the hardware constraints)" if rejected else ""))

        yield on_event
    finally:
        if started:
            prog.stop()


@contextlib.contextmanager
def cell_search_progress(opts, enabled: bool = True) -> Iterator:
    """Yields an event callback for :func:`bnhw.flows.cell_search.run_cell_search`: a bar over the search's
    steps (loss, epoch, current derived cell on each epoch line), then one over the final training."""
    if not enabled:
        yield lambda name, info: None
        return
    console, prog = _bars()
    search = prog.add_task(f"{opts.method} search", total=None, info="")
    train = prog.add_task("training", total=None, info="", visible=False)
    prog.start()
    try:
        def on_event(name: str, info: dict) -> None:
            if name == "data":
                console.print(f"[dim]{info['describe']}[/dim]")
            elif name == "search.step":
                prog.update(search, total=info["epochs"] * info["steps"],
                            completed=(info["epoch"] - 1) * info["steps"] + info["step"],
                            info=f"epoch {info['epoch']}/{info['epochs']} loss {info['loss']:.3f}")
            elif name == "search.epoch":
                extra = f", E[OPs] {info['expected_ops'] / 1e6:.2f}M" if "expected_ops" in info else ""
                console.print(f"epoch {info['epoch']}: loss {info['loss']:.3f}, entropy {info['entropy']:.3f}{extra}")
            elif name == "search.resumed":
                console.print(f"resumed the search after epoch {info['epoch']}")
            elif name == "derived":
                console.print(f"derived: {escape(info['spec'])}")
            elif name == "hardware":
                console.print(escape(info["line"]))
            elif name == "train.step":
                prog.update(train, visible=True, total=info["epochs"] * info["steps"],
                            completed=(info["epoch"] - 1) * info["steps"] + info["step"],
                            info=f"epoch {info['epoch']}/{info['epochs']} loss {info['loss']:.3f}")
            elif name == "train.epoch":
                console.print(f"training epoch {info['epoch']}: val acc {info['val_accuracy']:.4f}")
        yield on_event
    finally:
        prog.stop()
