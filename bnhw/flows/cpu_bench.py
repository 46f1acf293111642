"""``bnhw bench-cpu``: a network on an embedded CPU, through bnhw's C runtime.

NETWORK is an architecture spec / ``bnhw zoo`` name, a reference network
(``cnv-w1a1``, ``tfc-w1a1``), a build's ``hw_graph.json`` or a CPU model file
(``.bnhwcpu``).  The network is lowered to the runtime's ops and written to
``OUT/model.bnhwcpu`` (what ``bnhw-run`` loads on the board), then:

* **checked**: the runtime's outputs equal ``HwGraph.execute`` (the IR, itself
  checked against QONNX execution of the exported model) on real digit images;
  for an ARM target also the cross-built runtime with the NEON kernels under
  QEMU when the toolchain is installed (said plainly when it is not);
* ``--target native``: **measured** on this machine: per op and whole network,
  the median wall time of repeated runs (after warm-up) and binary GOPS
  (1 XNOR-popcount multiply-accumulate = 2 ops), with the kernel set
  ``--kernels`` / ``$BNHW_KERNELS`` names (default ``auto``: the best this CPU
  runs; the report says which set ran) on ``--threads`` threads (default: all
  online cores);
* ``--target cortex-a9|cortex-a53|cortex-a72``: **modelled** with
  :mod:`bnhw.hw.cpu.perfmodel` (instruction mix of the NEON inner loops x the
  core's issue rates, at the reference board's clock), with the core's
  roofline of binary ops per cycle beside it.

Writes ``bench_cpu.json`` and ``bench_cpu.md`` (atomically) into OUT.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BnhwError
from ..hw.cpu.latency import CPU_TARGETS, machine_name
from ..hw.cpu.program import CpuProgram, lower_cpu, read_program, write_model
from ..hw.ir import HwGraph
from ..spec import atomic_write_text
from .inputs import Kind, NetworkInput, load_hw_graph, resolve
from .outputs import staged_folder

__all__ = ["CPU_TARGETS", "CORE_ARCH", "bench_cpu_flow", "load_network", "machine_name", "render_markdown"]

#: the ISA each modelled core runs (the QEMU check uses that build)
CORE_ARCH = {"cortex-a9": "armv7", "cortex-a53": "aarch64", "cortex-a72": "aarch64"}


@dataclass
class LoadedNetwork:
    name: str
    program: CpuProgram
    graph: HwGraph | None
    inputs: np.ndarray                 # (N, H, W, C) integer inputs of the program
    real_inputs: bool
    notes: list[str] = field(default_factory=list)


def _random_inputs(graph: HwGraph | None, program: CpuProgram, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = program.tensors[program.input].shape
    if graph is not None:
        t = graph.streams[graph.input].dtype
        if t.is_bipolar:
            return rng.choice([-1, 1], (n, *shape))
        return rng.integers(t.min, t.max + 1, (n, *shape))
    return rng.integers(-8, 8, (n, *shape))


def load_network(network: str | NetworkInput, out: Path, *, checkpoint: Path | None = None, images: int = 16,
                 echo: Callable[[str], None] = print, lowered=None) -> LoadedNetwork:
    """The CPU program of ``network`` and inputs to run it on (real digit images where possible)."""
    inp = network if isinstance(network, NetworkInput) else resolve(network, "bench-cpu")
    if inp.kind is Kind.CPU_MODEL:
        assert inp.path is not None  # resolve() gives a file kind its path
        prog = read_program(inp.path)
        return LoadedNetwork(inp.label, prog, None, _random_inputs(None, prog, images), False,
                             ["a model file carries no IR: outputs are not checked, inputs are random integers"])
    if inp.kind in (Kind.HW_GRAPH, Kind.BUILD_DIR):
        g = load_hw_graph(inp)
        prog = lower_cpu(g)
        return LoadedNetwork(g.name, prog, g, _random_inputs(g, prog, images), False,
                             ["inputs are random integers of the input type (a hardware graph carries no images)"])
    from .prepare import prepare_network

    echo(f"preparing {inp.arg}: model, QONNX export, IR, IR vs QONNX check on {images} digit images")
    prep = prepare_network(inp, out, checkpoint=checkpoint, n_inputs=images, echo=echo,
                           lowered=lowered)
    prog = lower_cpu(prep.graph)
    check = prep.qonnx_check
    notes = list(prep.notes) + [f"IR vs QONNX execution: {check.get('labels_equal')}/{check.get('inputs')} labels "
                                "equal on real digit images"]
    return LoadedNetwork(prep.name, prog, prep.graph, np.asarray(prep.int_inputs), True, notes)


def _check_native(net: LoadedNetwork, kernels: str | None, threads: int = 0) -> dict:
    from ..hw.cpu.runtime import CpuModel

    if net.graph is None:
        return {"checked": False, "why": "no IR to compare against"}
    m = CpuModel(net.program, kernels=kernels, threads=threads)
    equal = sum(bool(np.array_equal(m.run(x), net.graph.execute(x))) for x in net.inputs)
    if equal != len(net.inputs):
        raise BnhwError(f"CPU runtime disagrees with the IR on {len(net.inputs) - equal} of {len(net.inputs)} "
                        "inputs (a runtime bug; please report it)")
    return {"checked": True, "inputs": len(net.inputs), "equal": equal, "kernels": m.kernels,
            "threads": m.threads, "real_inputs": net.real_inputs}


def _check_qemu(net: LoadedNetwork, model_file: Path, arch: str, n: int = 4) -> dict:
    from ..hw.cpu.cross import toolchain_status
    from ..hw.cpu.runtime import run_standalone

    ok, why = toolchain_status(arch)
    if not ok:
        return {"checked": False, "why": f"not run under QEMU: {why}"}
    if net.graph is None:
        return {"checked": False, "why": "no IR to compare against"}
    xs = net.inputs[:n]
    r = run_standalone(model_file, xs, arch=arch, kernels="neon")
    ref = np.stack([net.graph.execute(x).reshape(-1) for x in xs])
    equal = int(sum(np.array_equal(a, b) for a, b in zip(r["outputs"], ref)))
    if equal != len(xs):
        raise BnhwError(f"the {arch} build (NEON kernels, under QEMU) disagrees with the IR on {len(xs) - equal} of "
                        f"{len(xs)} inputs (a kernel bug; please report it)")
    return {"checked": True, "arch": arch, "inputs": len(xs), "equal": equal, "kernels": r["kernels"]}


def measure_native(program: CpuProgram, x: np.ndarray, *, kernels: str | None = None, repeat: int = 20,
                   warmup: int = 3, threads: int = 0) -> dict:
    """Median per-op and whole-network wall time of ``repeat`` runs on this machine (after ``warmup``),
    with kernel set ``kernels`` (``None``: ``$BNHW_KERNELS`` or ``auto``) on ``threads`` threads (0: all cores)."""
    from ..hw.cpu.runtime import CpuModel

    m = CpuModel(program, kernels=kernels, threads=threads)
    per, tot = m.time(x, repeat=repeat, warmup=warmup)
    med = np.median(per, axis=0)
    rows = []
    for o, t, fused in zip(program.ops, med, m.op_fused(), strict=True):
        rows.append({"name": o.name, "op": o.op, "layer": o.layer, "bmacs": o.bmacs, "macs": o.macs,
                     "seconds": float(t), "binary_gops": 2 * o.bmacs / t / 1e9 if o.bmacs and t > 0 else None,
                     "fused": fused})
    total = float(np.median(tot))
    bm = program.bmacs
    return {"rows": rows, "seconds": total, "p10_seconds": float(np.percentile(tot, 10)),
            "p90_seconds": float(np.percentile(tot, 90)), "fps": 1.0 / total if total > 0 else None,
            "binary_gops": 2 * bm / total / 1e9 if total > 0 else None, "repeat": repeat, "warmup": warmup,
            "kernels": m.kernels, "threads": m.threads, "fused_ops": m.n_fused}


def bench_cpu_flow(network: str, target: str = "native", out: Path = Path("runs/bench-cpu"), *,
                   checkpoint: Path | None = None, repeat: int = 20, images: int = 16, kernels: str | None = None,
                   clock_mhz: float | None = None, qemu: bool = True, force: bool = False, threads: int = 0,
                   echo: Callable[[str], None] = print) -> dict:
    if target not in CPU_TARGETS:
        raise BnhwError(f"unknown CPU target {target!r}; choose one of {', '.join(CPU_TARGETS)}")
    if clock_mhz is not None and target == "native":
        raise BnhwError("--clock-mhz applies to the modelled ARM targets only (native is measured)")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise BnhwError(f"{checkpoint}: no such checkpoint")
    from ..hw.cpu import kernels as cpu_kernels
    from ..hw.cpu.runtime import default_threads

    if threads < 0:
        raise BnhwError(f"--threads must be 0 (all cores) or more, got {threads}")
    kernels = cpu_kernels.requested(kernels)   # --kernels, else $BNHW_KERNELS, else auto
    cpu_kernels.resolve(kernels)               # a set this CPU cannot run: one line naming what it has, first
    threads = threads or default_threads()
    inp = resolve(network, "bench-cpu")        # input errors before any work or any folder
    lowered = None
    if inp.kind is Kind.QONNX:
        from .prepare import lower_qonnx_input

        lowered = lower_qonnx_input(inp)
    elif inp.kind in (Kind.HW_GRAPH, Kind.BUILD_DIR):
        load_hw_graph(inp)
    out = Path(out)
    with staged_folder(out, "bench-cpu", force=force, echo=echo) as st:
        return _bench_into(st.work, out, inp, lowered, target, checkpoint, repeat, images, kernels, clock_mhz, qemu,
                           st.echo, threads)


def _bench_into(work: Path, out: Path, inp: NetworkInput, lowered, target: str, checkpoint: Path | None, repeat: int,
                images: int, kernels: str, clock_mhz: float | None, qemu: bool, echo: Callable[[str], None],
                threads: int = 0) -> dict:
    net = load_network(inp, work, checkpoint=checkpoint, images=images, echo=echo, lowered=lowered)
    write_model(net.program, work / "model.bnhwcpu")
    model_file = out / "model.bnhwcpu"
    echo(f"{net.name}: {len(net.program.ops)} CPU ops, {net.program.bmacs / 1e6:.2f} M binary MACs, "
         f"{net.program.macs / 1e6:.3f} M integer MACs per image; model file {model_file}")
    echo(f"checking the C runtime against the IR on {len(net.inputs)} "
         f"{'real digit images' if net.real_inputs else 'inputs'}")
    checks = {"native": _check_native(net, kernels, threads)}
    report: dict[str, Any] = {"network": net.name, "target": target, "model_file": str(model_file), "ops": len(net.program.ops),
              "bmacs": net.program.bmacs, "macs": net.program.macs, "notes": net.notes, "checks": checks,
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if target == "native":
        echo(f"timing {repeat} runs (after 3 warm-up runs)")
        meas = measure_native(net.program, net.inputs[0], kernels=kernels, repeat=repeat, threads=threads)
        report.update(how="measured", machine=machine_name(), result=meas)
        report["notes"].append(f"measured on this machine ({report['machine']}), {_threads(meas['threads'])}, kernels "
                               f"{meas['kernels']}: median of {repeat} runs after {meas['warmup']} warm-up runs; "
                               "the machine may be shared, so times are noisy")
        if meas["fused_ops"]:
            report["notes"].append(f"{meas['fused_ops']} pixel-wise ops (shortcut add, RPReLU, threshold / sign-pack, "
                                   "gather, pools) run fused into the pass of the convolution before them: their "
                                   "rows show 0 ms, the conv's row carries their time")
    else:
        from ..hw.cpu.perfmodel import model_program

        arch = CORE_ARCH[target]
        if qemu:
            echo(f"checking the {arch} build (NEON kernels) under QEMU")
            checks["qemu"] = _check_qemu(net, work / "model.bnhwcpu", arch)
            if not checks["qemu"]["checked"]:
                echo(checks["qemu"]["why"])
        mod = model_program(net.program, target, clock_mhz=clock_mhz)
        report.update(how="modelled", result=_model_dict(mod))
    atomic_write_text(work / "bench_cpu.json", json.dumps(report, indent=2, default=_json) + "\n")
    md = render_markdown(report)
    atomic_write_text(work / "bench_cpu.md", md + "\n")
    echo(md)
    echo(f"wrote {out / 'bench_cpu.md'} and {out / 'bench_cpu.json'}")
    return report


def _threads(n: int) -> str:
    return "one thread" if n == 1 else f"{n} threads"


def _json(o):
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def _model_dict(mod) -> dict:
    """The perf model's report as plain data (the rows in the same form as a measurement's)."""
    d = mod.to_dict() if hasattr(mod, "to_dict") else dict(mod.__dict__)
    return d


def _fmt_m(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x else "-"


def render_markdown(r: dict) -> str:
    res = r["result"]
    lines = [f"# bnhw bench-cpu {r['network']} --target {r['target']}", ""]
    if r["how"] == "measured":
        lines.append(f"**Measured** on {r['machine']} ({_threads(res.get('threads', 1))}, kernels `{res['kernels']}`, median of "
                     f"{res['repeat']} runs): latency **{res['seconds'] * 1e3:.3f} ms** (p10 "
                     f"{res['p10_seconds'] * 1e3:.3f}, p90 {res['p90_seconds'] * 1e3:.3f}), "
                     f"{res['fps']:.1f} FPS, {res['binary_gops']:.2f} binary GOPS.")
    else:
        lines.append(f"**Modelled** (not measured) for {res['core']} at {res['clock_mhz']:.0f} MHz "
                     f"({res.get('board', '')}): latency **{res['seconds'] * 1e3:.3f} ms**, {res['fps']:.1f} FPS, "
                     f"{res['binary_gops']:.2f} binary GOPS; binary-conv kernel {res['kernel_bmacs_per_cycle']:.1f} "
                     f"bMAC/cycle against the core's roofline of {res['roofline_bmacs_per_cycle']:.1f} bMAC/cycle "
                     f"({res['roofline_gops']:.1f} binary GOPS).")
    lines += ["", "| # | op | IR nodes | binary MACs | int MACs | ms | % | binary GOPS |",
              "|---:|---|---|---:|---:|---:|---:|---:|"]
    total = res["seconds"] or 1.0
    for i, row in enumerate(res["rows"]):
        g = row.get("binary_gops")
        ms = "fused" if row.get("fused") else f"{row['seconds'] * 1e3:.4f}"
        lines.append(f"| {i} | {row['op']} | {row['name']} | {_fmt_m(row['bmacs'])} | {_fmt_m(row['macs'])} | "
                     f"{ms} | {100 * row['seconds'] / total:.1f} | "
                     f"{'' if g is None else f'{g:.2f}'} |")
    lines.append(f"| | **total** | | {_fmt_m(r['bmacs'])} | {_fmt_m(r['macs'])} | {res['seconds'] * 1e3:.4f} | 100 | "
                 f"{res['binary_gops']:.2f} |")
    lines += ["", "How each figure was obtained:", ""]
    c = r["checks"]["native"]
    if c.get("checked"):
        lines.append(f"- bit-exact: the C runtime (kernels `{c['kernels']}`) equals the IR on {c['equal']}/"
                     f"{c['inputs']} {'real digit images' if c['real_inputs'] else 'inputs'}")
    else:
        lines.append(f"- not checked natively: {c['why']}")
    q = r["checks"].get("qemu")
    if q is not None:
        lines.append(f"- bit-exact under QEMU ({q['arch']}, kernels `{q['kernels']}`): {q['equal']}/{q['inputs']}"
                     if q.get("checked") else f"- {q['why']}")
    if r["how"] == "modelled":
        for n in res.get("notes", []):
            lines.append(f"- modelled: {n}")
    for n in r["notes"]:
        lines.append(f"- {n}")
    return "\n".join(lines)
