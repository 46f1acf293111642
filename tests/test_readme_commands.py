"""README.md's commands, run.

Every ``bnhw ...`` / ``make ...`` / ``torchrun ... -m bnhw`` line of README.md's shell blocks is parsed
out of the README itself (tests/helpers/readme.py: a new README line is tested the day it is written,
and a line the test cannot run is a parse error) and run, in README order, as one sequence in one
temporary folder laid out like a checkout (so ``runs/search/best_arch.json`` of a later line is what an
earlier line wrote).  Each line must exit 0 -- or, for a README transcript that shows an ``error:``
line after it, fail with exactly that line -- and write the files (and fields) the README and the
command's ``--help`` say it writes (:data:`WRITES`, :func:`check_outputs`).

How the README's lines become one sequence (the rules, each applied by :func:`run_sequence`):

* Each line that writes an output folder gets a fresh one: a folder an earlier line wrote there is
  moved aside to ``<folder>.L<its line>`` (the README's examples share default folders such as
  ``runs/search``; a user would pick another ``-o``), so the files asserted are this line's.
* A ``--resume`` line continues the folder of the latest earlier line that ran the same command without
  ``--resume`` ("after Ctrl-C"); if that folder was moved aside it is moved back first.
* A line identical to an earlier one (``bnhw search --budget 57M`` is shown twice) is not run again.
* Inputs no line produces are prepared here, before the first line that names them
  (:data:`PREPARED`): ``bad.json`` (the README's error example), ``bars-float.json`` and ``runs/a.pt``; external data
  (:data:`EXTERNAL`, ``cifar10:/data/cifar-10-batches-py``) is rewritten to a folder in the same format
  made from the bundled digits images, so the line runs the same loader.
* ``make install`` and ``make test`` run as ``make -n`` (dry run: CI ran both already, and ``make test``
  would recurse into this suite); other make targets run for real in the temporary folder (whose
  ``Makefile`` and ``bnhw/`` are links to the checkout's), skipped only when a cross compiler is missing.

In CI (``make test``) the lines that would take minutes run with the reduction flags of
:data:`REDUCTIONS` (smaller loops through the same code path, each explained there) and bnhw lines run
in process (click's runner calling the same ``bnhw.cli.main`` the console script calls; torchrun and
make lines are subprocesses).  ``make check-readme`` (``BNHW_README_FULL=1``) runs every line as written,
each bnhw line as a ``.venv/bin/bnhw`` subprocess, with no reductions; ``BNHW_README_FULL=<regex>`` does
that only for the lines whose command matches the regex (``'bnhw (build|sim) '``; the others run reduced,
for their outputs), ``BNHW_README_FULL=210,300`` for the lines starting at those README line numbers.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from helpers.readme import ReadmeCommand, ReadmeParseError, option_value, parse_readme, readme_commands

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BIN = Path(sys.prefix) / "bin"                 # the virtualenv's bnhw / torchrun
_FULL = os.environ.get("BNHW_README_FULL", "").strip()
FULL = _FULL == "1"                            # every line as written
FULL_LINES = {int(n) for n in _FULL.split(",")} if re.fullmatch(r"[\d,\s]+", _FULL) and not FULL else set()
FULL_MATCH = re.compile(_FULL) if _FULL and not FULL and not FULL_LINES else None


def unreduced(cmd: ReadmeCommand) -> bool:
    """Run ``cmd`` as written (no reductions, as a subprocess)?"""
    return (FULL or cmd.line in FULL_LINES
            or (FULL_MATCH is not None and FULL_MATCH.search(" ".join(cmd.argv)) is not None))
SUMMARY = os.environ.get("BNHW_README_SUMMARY")   # optional: per-line results as JSON, <SUMMARY>.L<chain>.json


# ----------------------------------------------------------------------------- reductions
@dataclass(frozen=True)
class Reduction:
    name: str
    applies: Callable[[ReadmeCommand], bool]
    flags: tuple[str, ...]
    why: str


def _bnhw(cmd: ReadmeCommand, sub: str) -> bool:
    return cmd.kind == "bnhw" and cmd.subcommand == sub


def _method(cmd: ReadmeCommand) -> str:
    return cmd.option("--method", default="nasbnn")


#: Extra flags appended to a README line in CI (click keeps an option's last value, so ``--epochs 6``
#: followed by ``--epochs 1`` runs 1 epoch).  Every flag must be one of the command's own options (a test
#: checks ``bnhw CMD --help``); none of them skips a stage of the command.
REDUCTIONS: tuple[Reduction, ...] = (
    Reduction("nasbnn search", lambda c: _bnhw(c, "search") and _method(c) == "nasbnn",
              ("--epochs", "1", "--train-images", "32", "--population", "2", "--generations", "1",
               "--tau-subnets", "0", "--finetune-epochs", "1"),
              "the default (5 supernet epochs over 1,222 images, population 12 x 3 generations, 8 stand-alone "
              "subnets x 1 epoch) takes about 8-9 min; this trains the same supernet (sandwich rule, Bi-Teacher, "
              "checkpoint) for one epoch of one 32-image step, runs one generation of the same evolution "
              "(mutation, crossover, BN recalibration, scoring) on 2 + 2 candidates and fine-tunes the best "
              "for one step (the stand-alone stage; its Kendall-tau sample is tested on a tiny search in "
              "tests/test_search_cli.py)"),
    Reduction("cell search", lambda c: _bnhw(c, "search") and _method(c) in ("bnas", "bars"),
              ("--epochs", "1", "--train-images", "32"),
              "8 search epochs on 2 x 256 images (2-5 min) -> 1 epoch on 32 images; the derived network, its fit "
              "to the budget, the QONNX export and its bit-exact check (most of the reduced time) are unchanged"),
    Reduction("bnas depth", lambda c: _bnhw(c, "search") and _method(c) == "bnas" and not c.flag("--cells"),
              ("--cells", "3"),
              "without --cells the final network is the Table 5 depth with the most OPs within the budget: 20 cells "
              "at 5M, whose QONNX export and check take ~2 min (QONNX clean-up grows with the square of the "
              "graph); at 3 cells the same fit of the channels to the budget (fit_to_budget over one depth instead "
              "of the ladder's), the same stacking, export and bit-exact check take seconds.  Lines that set "
              "--cells keep theirs"),
    Reduction("cell search on hardware", lambda c: _bnhw(c, "search") and _method(c) in ("bnas", "bars")
              and c.flag("--target"),
              ("--fifo-seconds", "2"),
              "each candidate's FIFO sizing bounded at 2 s instead of 20 s (past it the FIFOs keep safe depths, "
              "the documented fallback; the estimate, the FIFO pricing and the shrinking are unchanged)"),
    Reduction("cell search training", lambda c: _bnhw(c, "search") and c.flag("--final-epochs"),
              ("--final-epochs", "1"),
              "the derived network is trained from scratch for 1 epoch instead of the line's N (same scheme)"),
    Reduction("train", lambda c: _bnhw(c, "train"),
              ("--epochs", "1", "--train-images", "32"),
              "one epoch on 32 images instead of 4-10 epochs on 1,222 (same fine-tuning / from-scratch scheme)"),
    Reduction("export", lambda c: _bnhw(c, "export"),
              ("--verify", "1", "--calibration-images", "8"),
              "QONNX execution (node by node, slow at 224x224) compared with PyTorch on 1 instead of 8 images; "
              "the batch-norm statistics of the random weights estimated on 8 instead of 64 images (at 224x224 "
              "the 64 take ~50 s of the ~90 s of `bnhw export examples/nasbnn-d.json`)"),
    Reduction("build", lambda c: _bnhw(c, "build"),
              ("--csim-inputs", "4", "--fifo-seconds", "5"),
              "the bit-exact checks (IR vs QONNX, C simulation, functional cycle simulation) on 4 instead of 16 "
              "images, and the FIFO-sizing search bounded at 5 s (past it the remaining FIFOs keep safe depths, "
              "the documented fallback; nasbnn-cifar-smallest's full sizing takes ~6.5 min)"),
    Reduction("bench-cpu", lambda c: _bnhw(c, "bench-cpu"),
              ("--repeat", "2", "--images", "4"),
              "2 timed runs instead of 20 and the bit-exact check on 4 instead of 16 images"),
)


def reductions_for(cmd: ReadmeCommand) -> list[Reduction]:
    return [] if unreduced(cmd) else [r for r in REDUCTIONS if r.applies(cmd)]


# ----------------------------------------------------------------------------- what each command writes
#: Default output folder of each writing command (the ``-o`` default in bnhw/cli.py).
OUT_FOLDERS = {"search": "runs/search", "train": "runs/train", "build": "runs/build", "report": "runs/report",
               "bench-cpu": "runs/bench-cpu"}

#: Files a command writes into its output folder, as the README / ``bnhw CMD --help`` list them (a test
#: checks every name is in one of the two).  Keys: subcommand, or ``search:<method>``.
WRITES: dict[str, tuple[str, ...]] = {
    # README "Outputs in --out" and `bnhw search --help`
    "search:nasbnn": ("best_arch.json", "best.json", "pareto.csv", "pareto.png", "evaluated.csv", "supernet.pt",
                      "best_subnet.pt", "best_finetuned.pt", "standalone.csv", "search_state.json", "config.json",
                      "log.txt"),
    # README "Both write best_arch.json, search.json, best.json, model.onnx and log.txt"
    "search:bnas": ("best_arch.json", "search.json", "best.json", "model.onnx", "log.txt"),
    "search:bars": ("best_arch.json", "search.json", "best.json", "model.onnx", "log.txt"),
    # `bnhw train --help`: model.pt, arch.json, result.json and a resumable train_state.pt
    "train": ("model.pt", "arch.json", "result.json", "train_state.pt"),
    # README build step 6 "Report" and step 4 (hls/)
    "build": ("report.md", "report.json", "layers.png", "folding.json", "fifo_config.json", "model.onnx",
              "hw_graph.json", "hls/build_prj.tcl", "test_images.npy", "test_labels.npy"),
    # README "hls4ml back end": the project goes to hls4ml/ (with its hls4ml_config.yml)
    "build:hls4ml": ("report.md", "report.json", "model.onnx", "hw_graph.json", "hls4ml/hls4ml_config.yml"),
    # README "plus report.md ..., report.json and report.png" and `bnhw report --help`
    "report": ("report.md", "report.json", "report.png"),
    # `bnhw bench-cpu --help`: -o ... (bench_cpu.md, bench_cpu.json, model.bnhwcpu)
    "bench-cpu": ("bench_cpu.md", "bench_cpu.json", "model.bnhwcpu"),
}
WRITES_WITH_TARGET = ("measured.csv",)         # README: `measured.csv` with --target (the NAS-BNN search)
#: README "CPU latency in the cell searches": a cell search with a CPU --target writes these too
WRITES_WITH_CPU_TARGET = ("measured.csv", "latency.png", "cpu_cache.json")
CPU_TARGETS = ("native", "cortex-a9", "cortex-a53", "cortex-a72")

ELF_MACHINE = {"armv7": 40, "aarch64": 183, "native": {"x86_64": 62, "aarch64": 183, "armv7l": 40}}


def writes_key(cmd: ReadmeCommand) -> str | None:
    if cmd.kind != "bnhw":
        return None
    sub = cmd.subcommand
    if sub == "build" and cmd.option("--backend") == "hls4ml":
        return "build:hls4ml"
    return f"search:{_method(cmd)}" if sub == "search" else (sub if sub in WRITES else None)


# ----------------------------------------------------------------------------- inputs no line writes
def _bad_json(wd: Path) -> None:
    """README's error example `bnhw ops bad.json`: a CIFAR-space spec whose stage 2, block 1 has 5 groups on
    its 96 input channels (the README shows exactly the error this must give)."""
    d = json.loads((wd / "examples" / "nasbnn-cifar-largest.json").read_text())
    d["stages"][2]["blocks"][1]["groups"] = 5
    (wd / "bad.json").write_text(json.dumps(d, indent=2))


def _a_checkpoint(wd: Path) -> None:
    """`bnhw report nasbnn-cifar-smallest ... --checkpoint runs/a.pt`: a checkpoint of nasbnn-cifar-smallest;
    the README's `bnhw train examples/nasbnn-cifar-smallest.json ... -o runs/scratch` line wrote one."""
    src = wd / "runs" / "scratch" / "model.pt"
    if not src.is_file():
        raise FileNotFoundError(f"runs/a.pt is prepared from {src.relative_to(wd)} (the README's "
                                "`bnhw train examples/nasbnn-cifar-smallest.json` line), which is missing")
    shutil.copyfile(src, wd / "runs" / "a.pt")


def _bars_float(wd: Path) -> None:
    """README's `bnhw train bars-float.json ...`: bars-pynq-8x8's zoo spec with the float residual path (the copy
    the README tells the user to make)."""
    d = json.loads((wd / "bnhw" / "spec" / "zoo_nets" / "bars-pynq-8x8.json").read_text())
    assert d["precision"]["residual"] == "fixed"
    d["precision"]["residual"] = "float"
    (wd / "bars-float.json").write_text(json.dumps(d, indent=2))


#: Relative inputs named by a README line that no earlier line writes: made before the first line naming them.
PREPARED: dict[str, Callable[[Path], None]] = {"bad.json": _bad_json, "runs/a.pt": _a_checkpoint,
                                               "bars-float.json": _bars_float}


def _fake_cifar10(folder: Path) -> None:
    """A CIFAR-10 "python version" folder (data_batch_1..5, test_batch: pickled dicts of b"data" N x 3072
    uint8 rows, channel-major 32x32, and b"labels") holding the bundled digits images, upsampled to
    32x32 RGB: the same loader (`cifar10:DIR`) on data that exists here."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] * (255.0 / 16.0)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).round().clamp(0, 255)
    x = x.repeat(1, 3, 1, 1).to(torch.uint8).reshape(len(x), -1).numpy()
    y = d.target.astype(np.int64)
    folder.mkdir(parents=True)
    n_test = len(x) // 5
    parts = [("test_batch", slice(0, n_test))]
    per = (len(x) - n_test + 4) // 5
    parts += [(f"data_batch_{i + 1}", slice(n_test + i * per, n_test + (i + 1) * per)) for i in range(5)]
    for name, s in parts:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": x[s], b"labels": [int(v) for v in y[s]], b"batch_label": name.encode()}, f)


#: Absolute paths in README lines (data that cannot exist here) -> a maker of the same format under the
#: temporary folder; the line's path is rewritten to it.
EXTERNAL: dict[str, Callable[[Path], None]] = {"/data/cifar-10-batches-py": _fake_cifar10}


# ----------------------------------------------------------------------------- make lines
#: make targets run as ``make -n`` (what they would do is printed, nothing runs), and why.
MAKE_DRY_RUN = {
    "install": "CI's `make test` depends on `install` and ran it already; installing again would replace the "
               "virtualenv this test runs in",
    "test": "`make test` is what runs this test (.ci/run calls it): running it would recurse",
}


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", (REPO / "Makefile").read_text(), re.M))


def make_cross_compiler(arch: str) -> str:
    """The compiler the Makefile uses for ``CPU_ARCH=arch`` (``CC_<arch>``)."""
    m = re.search(rf"^CC_{re.escape(arch)}\s*[:?]?=\s*(\S+)", (REPO / "Makefile").read_text(), re.M)
    return m.group(1) if m else "gcc"


# ----------------------------------------------------------------------------- running one line
@dataclass
class Outcome:
    cmd: ReadmeCommand
    status: str = "pass"                 # pass | FAIL | skip | same | dry-run
    seconds: float = 0.0                 # wall
    cpu: float = 0.0                     # CPU seconds of this process and its children (the machine may be shared)
    flags: tuple[str, ...] = ()
    note: str = ""                       # the error line of a failure, why skipped, ...
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""

    def row(self) -> str:
        red = " ".join(self.flags) if self.flags else "-"
        return f"| L{self.cmd.line}{'.' + str(self.cmd.part) if self.cmd.part else ''} | `{' '.join(self.cmd.argv)}` " \
               f"| {red} | {self.status} | {self.seconds:.1f} | {self.cpu:.1f} | {self.note} |"


def error_line(stdout: str, stderr: str) -> str:
    lines = [ln.strip() for ln in (stderr + "\n" + stdout).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(("error:", "internal error:", "Traceback", "make:")) or "Error" in ln:
            return ln
    return lines[-1] if lines else ""


def _env(as_written: bool = False) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not as_written:
        env["OMP_NUM_THREADS"] = "1"      # CI runs pytest workers on both cores
    return env


def _subprocess(argv: list[str], wd: Path, as_written: bool = False) -> tuple[int, str, str]:
    p = subprocess.run(argv, cwd=wd, env=_env(as_written), capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def _in_process(args: list[str], wd: Path) -> tuple[int, str, str]:
    """``bnhw ARGS`` through click's test runner: ``bnhw.cli.main``, as the console script calls it."""
    import torch
    from click.testing import CliRunner

    from bnhw.cli import main

    old, threads = Path.cwd(), torch.get_num_threads()
    os.chdir(wd)
    torch.set_num_threads(1)
    try:
        r = CliRunner().invoke(main, args, prog_name="bnhw", env={"OMP_NUM_THREADS": "1"})
    finally:
        os.chdir(old)
        torch.set_num_threads(threads)
    err = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        err += f"\nTraceback: {type(r.exception).__name__}: {r.exception}"
    return r.exit_code, r.stdout, err


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _key(argv: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A command without ``--resume``, ``.venv/bin/bnhw`` spelled ``bnhw`` (what --resume / duplicates match on)."""
    return tuple("bnhw" if a == ".venv/bin/bnhw" else a for a in argv if a != "--resume")


# ----------------------------------------------------------------------------- checks of one line's outputs
def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def check_outputs(cmd: ReadmeCommand, argv: list[str], wd: Path, stdout: str) -> list[str]:
    """What is missing or wrong in what ``cmd`` (run as ``argv``: bnhw arguments) wrote into ``wd``."""
    bad: list[str] = []
    sub = cmd.subcommand
    key = writes_key(cmd)
    if key is not None:
        out = wd / option_value(argv, "-o", "--out", default=OUT_FOLDERS[sub])
        files = WRITES[key] + (WRITES_WITH_TARGET if key == "search:nasbnn" and cmd.flag("--target") else ())
        if key in ("search:bnas", "search:bars") and cmd.option("--target") in CPU_TARGETS:
            files += WRITES_WITH_CPU_TARGET
        if sub == "build" and "--no-sim" in argv:
            files = tuple(f for f in files if f != "fifo_config.json")
        bad += [f"{out.relative_to(wd)}/{f} not written" for f in files if not (out / f).is_file()]
        if bad:
            return bad
    if sub == "search" and cmd.kind == "bnhw":
        from bnhw.estimators.ops import parse_budget

        best = _json(out / "best.json")
        budget = parse_budget(option_value(argv, "--budget"))
        if not best["ops"] <= budget:
            bad.append(f"best.json ops {best['ops']:.0f} over the budget {budget:.0f}")
        if _method(cmd) == "nasbnn":
            if not 0 <= best["val_accuracy"] <= 1 or "ops_counted_at" not in best:
                bad.append("best.json lacks val_accuracy / ops_counted_at")
            metrics = best.get("metrics", {})
            if cmd.option("--min-fps") and not metrics.get("fps", 0) >= float(cmd.option("--min-fps")):
                bad.append(f"best.json fps {metrics.get('fps')} below --min-fps {cmd.option('--min-fps')}")
            if cmd.option("--max-latency-ms") and not metrics.get("latency_ms", 1e30) <= float(
                    cmd.option("--max-latency-ms")):
                bad.append(f"best.json latency {metrics.get('latency_ms')} ms over --max-latency-ms")
            cpu_target = cmd.option("--target") in CPU_TARGETS
            if cpu_target and (best.get("cpu", {}).get("ms_per_image") != metrics.get("latency_ms")
                               or best["cpu"].get("how") != ("measured" if cmd.option("--target") == "native"
                                                             else "modelled")):
                bad.append(f"best.json cpu {best.get('cpu')} is not the best's latency on {cmd.option('--target')}")
        else:
            if best.get("method") != _method(cmd) or best.get("export", {}).get("binary_mismatches") != 0:
                bad.append(f"best.json: method {best.get('method')}, export {best.get('export')}")
            arch = _json(out / "best_arch.json")
            cells = option_value(argv, "--cells")
            if cells and arch.get("cells") != int(cells):
                bad.append(f"best_arch.json has {arch.get('cells')} cells, not --cells {cells}")
            if cmd.flag("--final-epochs") and "test_accuracy" not in best:
                bad.append("best.json has no test_accuracy although --final-epochs trained the network")
            if cmd.option("--target") in CPU_TARGETS:
                cpu = best.get("cpu", {})
                bound = float(cmd.option("--max-latency-ms") or "inf")
                if not (cpu.get("ms_per_image", math.inf) <= bound and cpu.get("chosen", {}).get("short") == best["short"]
                        and cpu.get("how") == ("measured" if cmd.option("--target") == "native" else "modelled")):
                    bad.append(f"best.json cpu {cpu} is not the chosen network's latency within --max-latency-ms")
    elif sub == "export":
        f = wd / option_value(argv, "-o", "--out")
        if not f.is_file() or f.read_bytes()[:1] != b"\x08":          # an ONNX ModelProto starts with ir_version
            bad.append(f"{f.relative_to(wd)} not written (or not ONNX)")
        if "--verify" not in argv or option_value(argv, "--verify") != "0":
            if "bit-exact" not in stdout:
                bad.append("no bit-exact verification line printed")
    elif sub == "train":
        res = _json(wd / option_value(argv, "-o", "--out", default=OUT_FOLDERS[sub]) / "result.json")
        if "test_accuracy" not in res:
            bad.append("result.json has no test_accuracy")
    elif sub == "eval":
        if not re.search(r"^top-1 \d\.\d{4} on \d+ \w+ images", stdout, re.M):
            bad.append("no `top-1 ... on N test images` line")
    elif sub == "build":
        rep = _json(wd / option_value(argv, "-o", "--out", default=OUT_FOLDERS[sub]) / "report.json")
        if not rep:
            bad.append("report.json is empty")
    elif sub == "sim":
        if "--json" in argv:
            try:
                json.loads(stdout)
            except ValueError as e:
                bad.append(f"--json printed no JSON ({e})")
        elif not re.search(r"^II [\d,]+ cycles", stdout, re.M):
            bad.append("no `II ... cycles` line")
    elif sub == "run":
        images = len(np.load(wd / option_value(argv, "--input")))
        if "--json" in argv:
            try:
                out = json.loads(stdout)
            except ValueError as e:
                out = {}
                bad.append(f"--json printed no JSON ({e})")
            if out and (out.get("images") != images or len(out.get("labels", [])) != images):
                bad.append(f"--json gave {out.get('images')} images / {len(out.get('labels', []))} labels for {images}")
        elif len(stdout.split()) != images or not all(v.isdigit() for v in stdout.split()):
            bad.append(f"not one label per line for {images} images")
    elif sub == "report":
        rep = _json(wd / option_value(argv, "-o", "--out", default=OUT_FOLDERS[sub]) / "report.json")
        archs = _positional(cmd.bnhw_args[1:], {"--target", "--checkpoint", "--margin", "--clock-mhz", "-o", "--out"})
        if len(rep.get("archs", [])) != len(archs):
            bad.append(f"report.json has {len(rep.get('archs', []))} architectures, the line names {len(archs)}")
        elif sum(a["accuracy"] is not None for a in rep["archs"]) != len(_checkpoints(cmd.bnhw_args)):
            bad.append("report.json: not one accuracy per --checkpoint")
    elif sub == "bench-cpu":
        rep = _json(wd / option_value(argv, "-o", "--out", default=OUT_FOLDERS[sub]) / "bench_cpu.json")
        if rep.get("target") != cmd.option("--target", default="native"):
            bad.append(f"bench_cpu.json target {rep.get('target')}")
        # the result of a search under a CPU latency bound: bench-cpu's latency on that CPU is within the bound
        arch = _positional(cmd.bnhw_args[1:], {"--target", "--checkpoint", "--repeat", "--images", "--kernels",
                                               "--threads", "--clock-mhz", "-o", "--out"})[0]
        searched = (wd / arch).parent / "best.json"
        cpu = _json(searched).get("cpu") if searched.is_file() and arch.endswith("best_arch.json") else None
        if cpu and cpu.get("max_latency_ms") and cpu["target"] == rep.get("target") != "native" \
                and not rep["result"]["seconds"] * 1e3 <= cpu["max_latency_ms"]:
            bad.append(f"bench-cpu latency {rep['result']['seconds'] * 1e3:.3f} ms on {rep['target']} over the search's "
                       f"--max-latency-ms {cpu['max_latency_ms']:g}")
    elif sub == "ops":
        pass
    return bad


def _positional(args: tuple[str, ...], value_options: set[str]) -> list[str]:
    """The arguments of ``args`` that are not options or option values."""
    pos, i = [], 0
    while i < len(args):
        if args[i].startswith("-"):
            i += 2 if args[i] in value_options else 1
        else:
            pos.append(args[i])
            i += 1
    return pos


def _checkpoints(args: tuple[str, ...]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--checkpoint"]


# ----------------------------------------------------------------------------- the sequence
def setup_workdir(wd: Path) -> None:
    """A checkout-like folder: examples/ copied, the Makefile, pyproject.toml and bnhw/ linked (make lines)."""
    wd.mkdir(parents=True)
    shutil.copytree(REPO / "examples", wd / "examples")
    for name in ("Makefile", "pyproject.toml", "bnhw"):
        (wd / name).symlink_to(REPO / name)


@dataclass
class _Folders:
    """Who wrote which output folder (the line's key and number), and the folders moved aside."""

    wd: Path
    owner: dict[Path, tuple[tuple[str, ...], int]] = field(default_factory=dict)
    aside: dict[tuple[Path, tuple[str, ...]], tuple[Path, int]] = field(default_factory=dict)

    def _move_aside(self, folder: Path) -> None:
        if not folder.exists():
            return
        key, line = self.owner.pop(folder, ((), 0))
        dest = folder.with_name(f"{folder.name}.L{line}")
        shutil.rmtree(dest, ignore_errors=True)
        folder.rename(dest)
        self.aside[(folder, key)] = (dest, line)

    def prepare(self, folder: Path, key: tuple[str, ...], resume: bool) -> str | None:
        """Make ``folder`` ready for a line; an error message if a --resume line has nothing to continue."""
        if not resume:
            self._move_aside(folder)
            return None
        if folder in self.owner and self.owner[folder][0] == key:
            return None
        if (folder, key) in self.aside:
            self._move_aside(folder)
            dest, line = self.aside.pop((folder, key))
            dest.rename(folder)
            self.owner[folder] = (key, line)
            return None
        return (f"no earlier README line runs `{' '.join(key)}` into {folder.relative_to(self.wd)} "
                "for this --resume line to continue")

    def wrote(self, folder: Path, key: tuple[str, ...], line: int) -> None:
        if folder not in self.owner or self.owner[folder][0] != key:
            self.owner[folder] = (key, line)


def _rewrite_external(args: list[str], wd: Path) -> list[str]:
    out = []
    for a in args:
        for path, make in EXTERNAL.items():
            if path in a:
                local = wd / path.lstrip("/")
                if not local.exists():
                    make(local)
                a = a.replace(path, str(local))
        out.append(a)
    return out


def _prepare_inputs(args: list[str], wd: Path) -> None:
    for a in args:
        if a in PREPARED and not (wd / a).exists():
            PREPARED[a](wd)


def _run_make(cmd: ReadmeCommand, wd: Path, o: Outcome) -> None:
    target = cmd.subcommand
    if target in MAKE_DRY_RUN:
        o.status, o.note = "dry-run", MAKE_DRY_RUN[target]
        rc, out, err = _subprocess(["make", "-n", *cmd.argv[1:]], wd)
        o.rc, o.stdout, o.stderr = rc, out, err
        problems = [] if rc == 0 else [error_line(out, err)]
        if target == "install" and "pip install" not in out:
            problems.append("`make -n install` installs nothing")
        if target == "test":
            if not re.search(r"-m pytest .*\btests\b", out):
                problems.append("`make -n test` does not run pytest on tests/")
            ci = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()
                  if ln.strip() and not ln.lstrip().startswith("#")]
            if ci[-1] != "make test":
                problems.append(f".ci/run ends with {ci[-1]!r}, not `make test`")
        if problems:
            o.status, o.note = "FAIL", "; ".join(problems)
        return
    arch = next((a.split("=", 1)[1] for a in cmd.argv if a.startswith("CPU_ARCH=")), "native")
    cc = make_cross_compiler(arch)
    if target == "cpu-runtime" and shutil.which(cc) is None:
        o.status, o.note = "skip", f"{cc} not installed (.ci/run installs it: apt-get install -y " \
                                   f"gcc-arm-linux-gnueabihf gcc-aarch64-linux-gnu)"
        return
    rc, out, err = _subprocess(list(cmd.argv), wd)
    o.rc, o.stdout, o.stderr = rc, out, err
    if rc != 0:
        o.status, o.note = "FAIL", error_line(out, err)
        return
    if target == "cpu-runtime":
        exe = wd / "build" / "cpu" / arch / "bnhw-run"
        want = ELF_MACHINE.get(arch)
        if isinstance(want, dict):
            want = want.get(platform.machine())
        if not exe.is_file():
            o.status, o.note = "FAIL", f"{exe.relative_to(wd)} not written"
        elif want is not None and int.from_bytes(exe.read_bytes()[18:20], "little") != want:
            o.status, o.note = "FAIL", f"{exe.relative_to(wd)} is not an {arch} executable"


def run_sequence(cmds: list[ReadmeCommand], wd: Path, progress: Callable[[Outcome], None] = lambda o: None
                 ) -> list[Outcome]:
    folders = _Folders(wd)
    seen: dict[tuple[str, ...], Outcome] = {}
    outcomes: list[Outcome] = []
    for cmd in cmds:
        o = Outcome(cmd)
        outcomes.append(o)
        t0, c0 = time.perf_counter(), _cpu_seconds()
        try:
            if cmd.kind == "make":
                _run_make(cmd, wd, o)
                continue
            full = _key(cmd.argv)
            if full in seen and not cmd.flag("--resume"):
                o.status, o.note = "same", f"identical to L{seen[full].cmd.line} ({seen[full].status}); not run again"
                continue
            seen[full] = o
            o.flags = tuple(f for r in reductions_for(cmd) for f in r.flags)
            args = _rewrite_external(list(cmd.bnhw_args) + list(o.flags), wd)
            _prepare_inputs(args, wd)
            key = _key(list(cmd.argv) + list(o.flags))
            out = None
            if cmd.subcommand in OUT_FOLDERS:
                out = wd / option_value(args, "-o", "--out", default=OUT_FOLDERS[cmd.subcommand])
                msg = folders.prepare(out, key, cmd.flag("--resume"))
                if msg:
                    o.status, o.note = "FAIL", msg
                    continue
            if cmd.torchrun:
                head = [str(BIN / "torchrun"), *cmd.argv[1:cmd.argv.index("-m") + 2]]
                rc, so, se = _subprocess(head + args, wd, unreduced(cmd))
            elif unreduced(cmd):
                rc, so, se = _subprocess([str(BIN / "bnhw"), *args], wd, True)
            else:
                rc, so, se = _in_process(args, wd)
            o.rc, o.stdout, o.stderr = rc, so, se
            if out is not None and out.exists():      # a failed search leaves its partial folder: it is this line's now
                folders.wrote(out, key, cmd.line)
            if cmd.expect_error is not None:
                got = [ln for ln in se.splitlines() if ln.strip()]
                if rc == 0 or got != [cmd.expect_error]:
                    o.status = "FAIL"
                    o.note = f"expected exit != 0 and exactly {cmd.expect_error!r}; got exit {rc}, stderr {got!r}"
                else:
                    o.note = f"fails as shown (exit {rc})"
                continue
            if rc != 0:
                o.status, o.note = "FAIL", error_line(so, se)
                continue
            problems = check_outputs(cmd, args, wd, so)
            if problems:
                o.status, o.note = "FAIL", "; ".join(problems)
        except Exception as e:  # a broken prerequisite or output: this line fails, the sequence goes on
            o.status, o.note = "FAIL", f"{type(e).__name__}: {e}"
        finally:
            o.seconds, o.cpu = time.perf_counter() - t0, _cpu_seconds() - c0
            progress(o)
    return outcomes


def render(outcomes: list[Outcome]) -> str:
    head = ["| line | command | reduced by | result | wall s | CPU s | note |", "|---|---|---|---|---:|---:|---|"]
    wall, cpu = sum(o.seconds for o in outcomes), sum(o.cpu for o in outcomes)
    return "\n".join(head + [o.row() for o in outcomes]
                     + [f"\ntotal {wall:.1f} s wall, {cpu:.1f} s CPU ({'unreduced' if FULL else 'reduced'})"])


# ----------------------------------------------------------------------------- chains of lines
#: Prepared inputs (:data:`PREPARED`) and the folder of an earlier line they are made from.
PREPARED_FROM = {"runs/a.pt": "runs/scratch"}


def _place(path: str) -> str | None:
    """The workspace place a path argument names: ``runs/<folder>`` or a top-level file; ``None`` for what no
    line writes (a repository file such as ``examples/x.json``, external data ``cifar10:/...``)."""
    path = path.removeprefix("./")
    if ":" in path or (REPO / path).exists():
        return None
    parts = Path(path).parts
    return "/".join(parts[:2]) if parts[0] == "runs" and len(parts) > 1 else parts[0]


def _places(cmd: ReadmeCommand) -> tuple[set[str], set[str]]:
    """(read, written) places of a line."""
    if cmd.kind not in ("bnhw", "torchrun"):
        return set(), set()
    args = list(cmd.bnhw_args)[1:]
    out = option_value(args, "-o", "--out", default=OUT_FOLDERS.get(cmd.subcommand))
    written = {p for p in [_place(out)] if p} if out else set()
    reads = set()
    for i, a in enumerate(args):
        if a.startswith("-") or (i and args[i - 1] in ("-o", "--out")):
            continue
        if "/" in a or a.endswith((".onnx", ".json", ".pt", ".npz", ".bnhwcpu")):
            p = _place(a)
            if p:
                reads.add(PREPARED_FROM.get(p, p))
    if cmd.flag("--resume"):
        reads |= written
    return reads, written - reads


def readme_chains(cmds: list[ReadmeCommand]) -> list[list[ReadmeCommand]]:
    """The README's lines as independent chains, each in README order: a line joins the chain of the latest
    earlier line that wrote a place it reads (a --resume line: every earlier line that wrote its folder), and
    identical lines share a chain.  Chains run in separate folders, so pytest-xdist spreads them."""
    parent = list(range(len(cmds)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    last_writer: dict[str, list[int]] = {}
    first_same: dict[tuple[str, ...], int] = {}
    for i, c in enumerate(cmds):
        reads, written = _places(c)
        for p in reads:
            writers = last_writer.get(p, [])
            for j in (writers if c.flag("--resume") else writers[-1:]):
                parent[find(i)] = find(j)
        k = _key(c.argv)
        if k in first_same:
            parent[find(i)] = find(first_same[k])
        first_same.setdefault(k, i)
        for p in written | (reads & written):
            last_writer.setdefault(p, []).append(i)
    chains: dict[int, list[ReadmeCommand]] = {}
    for i, c in enumerate(cmds):
        chains.setdefault(find(i), []).append(c)
    return list(chains.values())


def _chain_params() -> list:
    try:
        chains = readme_chains(readme_commands(README))
    except ReadmeParseError:
        return [pytest.param(None, id="unparsable")]
    return [pytest.param(tuple(c.line for c in ch), id=f"L{ch[0].line}") for ch in chains]


# ----------------------------------------------------------------------------- tests
@pytest.mark.slow
@pytest.mark.parametrize("lines", _chain_params())
def test_readme_commands_run(tmp_path, lines):
    """Every README command, in order, in one folder per chain of dependent lines (reduced in CI;
    BNHW_README_FULL=1: as written)."""
    cmds = readme_commands(README)
    cmds = [c for c in cmds if c.line in lines]
    wd = tmp_path / "checkout"
    setup_workdir(wd)

    def show(o: Outcome) -> None:
        print(o.row(), flush=True)

    outcomes = run_sequence(cmds, wd, progress=show)
    table = render(outcomes)
    if SUMMARY:
        Path(f"{SUMMARY}.L{lines[0]}.json").write_text(json.dumps([{
            "line": o.cmd.line, "part": o.cmd.part, "command": " ".join(o.cmd.argv), "flags": list(o.flags),
            "status": o.status, "seconds": round(o.seconds, 1), "cpu": round(o.cpu, 1), "note": o.note, "rc": o.rc,
            "stderr_tail": o.stderr[-3000:] if o.status == "FAIL" else ""} for o in outcomes], indent=1))
    print("\n" + table)
    failed = [o for o in outcomes if o.status == "FAIL"]
    assert not failed, f"{len(failed)} README line(s) failed:\n" + "\n".join(o.row() for o in failed)


SAMPLE = """\
Intro `bnhw zoo` inline (not a block).

```sh
bnhw search --budget 57M --data cifar10:/data/x   # a comment
make install && .venv/bin/bnhw build cnv-w1a1 \\
    --target pynq-z2 -o runs/cnv
# a comment line
torchrun --nproc_per_node 2 -m bnhw search --budget 1M
```

```json
{"bnhw": "not a command"}
```

```
$ bnhw ops bad.json
error: something (in bad.json)
$ bnhw zoo
nasbnn-d ...
```
"""


def test_parser_rules():
    cmds = parse_readme(SAMPLE)
    assert [c.argv for c in cmds] == [
        ("bnhw", "search", "--budget", "57M", "--data", "cifar10:/data/x"),
        ("make", "install"),
        (".venv/bin/bnhw", "build", "cnv-w1a1", "--target", "pynq-z2", "-o", "runs/cnv"),
        ("torchrun", "--nproc_per_node", "2", "-m", "bnhw", "search", "--budget", "1M"),
        ("bnhw", "ops", "bad.json"),
        ("bnhw", "zoo"),
    ]
    assert [c.line for c in cmds] == [4, 5, 5, 8, 16, 18]
    assert [c.part for c in cmds] == [0, 0, 1, 0, 0, 0]
    assert cmds[0].text == "bnhw search --budget 57M --data cifar10:/data/x"
    assert [c.expect_error for c in cmds] == [None] * 4 + ["error: something (in bad.json)", None]
    assert [c.kind for c in cmds] == ["bnhw", "make", "bnhw", "bnhw", "bnhw", "bnhw"]
    assert cmds[3].bnhw_args == ("search", "--budget", "1M") and cmds[3].torchrun
    assert [c.subcommand for c in cmds] == ["search", "install", "build", "search", "ops", "zoo"]
    assert cmds[2].option("-o", "--out") == "runs/cnv" and cmds[0].option("--method", default="x") == "x"


@pytest.mark.parametrize("block", ["bnhw zoo | head", "bnhw zoo > x.txt", "python -m bnhw.bench", "cd runs; bnhw zoo",
                                   "bnhw search --budget 'unclosed"])
def test_parser_refuses_what_it_cannot_run(block):
    with pytest.raises(ReadmeParseError, match="README line 2"):
        parse_readme(f"```sh\n{block}\n```\n")


def test_every_readme_line_is_handled():
    """The README's own commands: each has what the sequence needs (so a new line fails here first, fast)."""
    from click.testing import CliRunner

    from bnhw.cli import main

    cmds = readme_commands(README)
    assert len(cmds) >= 30
    targets = makefile_targets()
    helps: dict[str, str] = {}
    for c in cmds:
        if c.kind == "make":
            assert c.subcommand in targets, f"L{c.line}: make {c.subcommand}: no such Makefile target"
            continue
        sub = c.subcommand
        if sub not in helps:
            r = CliRunner().invoke(main, [sub, "--help"])
            assert r.exit_code == 0, f"L{c.line}: `bnhw {sub}` is not a command"
            helps[sub] = r.output
        for a in c.bnhw_args:      # absolute paths: data that cannot exist here, made by EXTERNAL
            path = a.split(":", 1)[1] if re.match(r"^\w+:/", a) else a
            if path.startswith("/"):
                assert path in EXTERNAL, f"L{c.line}: {path} does not exist here; add it to EXTERNAL"
        for r in (r for r in REDUCTIONS if r.applies(c)):
            for f in r.flags:
                if f.startswith("-"):
                    assert re.search(rf"(^|[\s,]){re.escape(f)}\b", helps[sub]), f"{r.name}: {f} not in bnhw {sub}"
        if c.flag("--resume"):
            earlier = [d for d in cmds[:cmds.index(c)] if d.kind == "bnhw" and _key(d.argv) == _key(c.argv)]
            assert earlier, f"L{c.line}: no earlier line runs this command without --resume"
    for r in REDUCTIONS:
        assert any(r.applies(c) for c in cmds), f"reduction {r.name!r} matches no README line any more"
    readme = README.read_text()
    for key, files in WRITES.items():
        sub = key.split(":")[0]
        if sub not in helps:
            helps[sub] = CliRunner().invoke(main, [sub, "--help"]).output
        for f in files:
            name = f.split("/")[-1]
            assert name in readme or name in helps[sub], f"{key} writes {name}: neither README nor --help says so"
    for p in PREPARED:
        assert any(p in c.bnhw_args for c in cmds if c.kind == "bnhw"), f"PREPARED {p} is named by no README line"


def test_check_readme_target():
    """`make check-readme` runs this file unreduced (the lines CI reduces, as written)."""
    mk = (REPO / "Makefile").read_text()
    m = re.search(r"^check-readme:.*\n((?:\t.*\n)+)", mk, re.M)
    assert m and "BNHW_README_FULL=1" in m.group(1) and "tests/test_readme_commands.py" in m.group(1)
    assert re.search(r"^\.PHONY:.*\bcheck-readme\b", mk, re.M)


def test_output_folder_rules(tmp_path):
    """A writing line gets a fresh folder (the earlier one moved aside); --resume gets its own one back."""
    f, out = _Folders(tmp_path), tmp_path / "runs" / "search"
    a, b = ("bnhw", "search", "--budget", "57M"), ("bnhw", "search", "--budget", "57M", "--data", "x")

    def write(text: str) -> None:
        out.mkdir(parents=True)
        (out / "x").write_text(text)

    assert f.prepare(out, a, resume=False) is None
    write("a")
    f.wrote(out, a, 32)
    assert f.prepare(out, b, resume=False) is None and not out.exists()
    assert (tmp_path / "runs" / "search.L32" / "x").read_text() == "a"
    write("b")
    f.wrote(out, b, 132)
    assert f.prepare(out, a, resume=True) is None                    # `... --resume` continues L32's search
    assert (out / "x").read_text() == "a" and (tmp_path / "runs" / "search.L132" / "x").read_text() == "b"
    f.wrote(out, a, 133)
    assert f.prepare(out, a, resume=True) is None and (out / "x").read_text() == "a"
    assert f.prepare(out, b, resume=False) is None
    assert (tmp_path / "runs" / "search.L32" / "x").read_text() == "a"    # still named after the line that wrote it
    assert "no earlier README line" in f.prepare(out, ("bnhw", "search", "--budget", "1M"), resume=True)
