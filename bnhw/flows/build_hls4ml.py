"""``bnhw build --backend hls4ml``: the network's QONNX through hls4ml's own converter, fixed by bnhw's hls4ml passes
(:mod:`bnhw.hw.hls4ml_backend`), written as an hls4ml project (``hls4ml/`` in the build folder, with its
``hls4ml_config.yml``, ready for hls4ml's ``build()`` where Vitis HLS exists) and C-simulated with hls4ml's
``compile()`` + ``predict()`` (g++), bit for bit against the IR on real digits images.  Writes ``report.json`` and
``report.md``; the FINN-style parts of ``bnhw build`` (folding, FINN's models, cycle simulation) belong to the
``finn`` back end and are not run."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import BnhwError
from ..hw.ir import HwGraph
from ..spec import atomic_write_text
from .build_report import json_default
from .inputs import NetworkInput
from .prepare import LoweredQonnx, prepare_network

__all__ = ["BACKENDS", "check_backend", "build_hls4ml_into", "render_hls4ml_markdown"]

#: the back ends of ``bnhw build`` (the first is the default)
BACKENDS = ("finn", "hls4ml")


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise BnhwError(f"--backend {name!r}: unknown back end; known: {', '.join(BACKENDS)}")
    if name == "hls4ml":
        from ..hw.hls4ml_backend import hls4ml_unavailable_reason

        why = hls4ml_unavailable_reason()
        if why:
            raise BnhwError(f"--backend hls4ml: {why}")
    return name


def build_hls4ml_into(work: Path, out: Path, inp: NetworkInput, lowered: LoweredQonnx | None, *, board,
                      checkpoint: Path | None, csim_inputs: int, csim: bool,
                      echo: Callable[[str], None]) -> tuple[dict, HwGraph]:
    """The hls4ml build, written into ``work`` (renamed to ``out`` by the caller's staged folder)."""
    from ..hw import hls4ml_backend as hb

    t0 = time.time()
    prep = prepare_network(inp, work, checkpoint=checkpoint, n_inputs=csim_inputs, echo=echo, lowered=lowered)
    echo(f"{prep.name}: exported {out / 'model.onnx'}, lowered to {len(prep.graph.nodes)} hardware units; IR == "
         f"QONNX on {prep.qonnx_check['inputs']} digits images (labels)")
    why = hb.supported_graph_error(prep.graph)
    if why:
        raise hb.Hls4mlUnsupported(f"--backend hls4ml: {prep.name}: {why}")
    project_name = re.sub(r"\W", "_", prep.name)
    proj = hb.convert(prep.onnx, prep.graph, work / "hls4ml", project_name=project_name)
    echo(f"hls4ml {hb.HLS4ML_VERSION}: converted with convert_from_onnx_model ({proj.io_type}), "
         f"{len(proj.layers)} layers; bnhw's pass {hb.PASS_NAME} fixed {len(proj.fixed)} layers "
         f"({', '.join(proj.fixed)}); project in {out / 'hls4ml'}")
    if csim:
        sim = hb.csim_compare(proj, prep.graph, prep.int_inputs, echo)
    else:
        sim = {"run": False, "line": "C simulation: skipped (--no-csim)"}
        echo(sim["line"])
    hb.finalize_project(proj, out / "hls4ml")
    est = hb.estimates(proj)
    echo(f"resources: {est['why']}")
    report = {
        "network": prep.name, "kind": prep.kind, "backend": "hls4ml", "notes": prep.notes,
        "board": board.to_dict(),
        "hls4ml": {"version": hb.HLS4ML_VERSION, "folder": "hls4ml/", "project_name": project_name,
                   "io_type": proj.io_type, "backend": hb.BACKEND, "layers": proj.layers,
                   "pass": hb.PASS_NAME, "fixed_layers": proj.fixed, "defects_worked_around": hb.defects_for(proj),
                   "estimates": est, "csim": sim,
                   "input": _input_line(prep.graph, proj.input_stream),
                   "output": "the class scores: the last layer's +-1 dot products (the IR's "
                             f"{hb.score_node(prep.graph).name} output); the affine head does not change the "
                             "argmax and is left to software, as in the IR"},
        "checks": {"ir_vs_qonnx": prep.qonnx_check, "csim": sim},
        "not_run": ["hls4ml's build() (Vitis HLS synthesis, resources, latency): the vendor tools are not installed "
                    "here; run hls4ml/build_prj.tcl or hls4ml's build() where they are",
                    "folding, FINN's models and cycle simulation: the finn back end (--backend finn)"],
        "seconds": time.time() - t0,
    }
    if csim and sim.get("run") and not sim.get("bit_exact"):
        _write(work, report)
        raise BnhwError(f"--backend hls4ml: {prep.name}: {sim['line']} (see hls4ml/ in {out}.failed)")
    _write(work, report)
    prep.graph.save(work / "hw_graph.json")
    echo(f"wrote {out / 'report.md'}, report.json, model.onnx, hw_graph.json, hls4ml/ ({project_name}, "
         "hls4ml_config.yml)")
    return report, prep.graph


def _input_line(g: HwGraph, stream: str) -> str:
    s = g.streams[stream]
    shape = " x ".join(map(str, s.shape))
    if stream == g.input:
        return f"the 8-bit pixels ({shape}, HWC), one image per call; the input quantiser is in the project"
    q = g.producer(stream)
    return (f"the input quantiser's {s.dtype.finn_name()} output ({shape}, HWC; IR {q.name if q else stream}: "
            f"{len(g.nodes[0].params['thresholds'][0])} thresholds per channel on the pixel, a multi-threshold layer "
            "hls4ml does not have, so it stays in software as in FINN's Thresholding_rtl before the first conv)")


def _write(work: Path, report: dict) -> None:
    atomic_write_text(work / "report.json", json.dumps(report, indent=2, default=json_default))
    atomic_write_text(work / "report.md", render_hls4ml_markdown(report))


def render_hls4ml_markdown(r: dict) -> str:
    h = r["hls4ml"]
    lines = [f"# bnhw build: {r['network']} with hls4ml {h['version']} (target {r['board']['name']})", ""]
    lines += [f"- notes: {n}" for n in r["notes"]]
    lines += ["", "## hls4ml project", "",
              f"- folder: `{h['folder']}` (project `{h['project_name']}`, back end {h['backend']}, {h['io_type']}, "
              "`hls4ml_config.yml`)",
              f"- converted with hls4ml's `convert_from_onnx_model`; bnhw's optimizer pass `{h['pass']}` fixed "
              f"{len(h['fixed_layers'])} layers: {', '.join(h['fixed_layers'])}",
              f"- input: {h['input']}",
              f"- output: {h['output']}", "",
              "| layer | hls4ml class | output type |", "|---|---|---|"]
    lines += [f"| {lay['name']} | {lay['class']} | `{lay['output_type']}` |" for lay in h["layers"]]
    lines += ["", "## hls4ml defects worked around", ""]
    lines += [f"- **{d['name']}**: {d['what']} (fixed by {d['fix']}; docs/HLS4ML_DEFECTS.md)"
              for d in h["defects_worked_around"]]
    c = h["csim"]
    lines += ["", "## C simulation (hls4ml compile() + predict(), g++)", "", f"- {c['line']}"]
    if c.get("run"):
        lines.append(f"- compared: {c['compared_stream']}, and the labels, against bnhw's IR (`HwGraph.execute`)")
    q = r["checks"]["ir_vs_qonnx"]
    lines.append(f"- IR vs QONNX execution: labels equal on {q['labels_equal']}/{q['inputs']} images")
    e = h["estimates"]
    lines += ["", "## Resources", "", f"- {e['why']}",
              f"- known without synthesis: {e['weights_bits']:,} one-bit weights, reuse factor(s) "
              f"{', '.join(map(str, e['reuse_factors']))} (fully parallel, strategy {e['strategy']})"]
    lines += ["", "## Not run", ""] + [f"- {x}" for x in r["not_run"]]
    return "\n".join(lines) + "\n"
