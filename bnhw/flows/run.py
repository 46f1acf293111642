"""``bnhw run BUILD_DIR --input X.npy``: the built network on the user's images, one label per image.

Engines (``--engine``), all fed the same integers (the accelerator's input):

* ``finn`` (the default when the build has FINN's graph): finn-plus's own node execution of the dataflow graph
  FINN's builder made (``finn/output/intermediate_models/step_convert_to_hw.onnx``: FINN's HW nodes with their
  weights and thresholds, before ``SpecializeLayers``; see :class:`bnhw.hw.finn_compat.FinnExecutor`);
* ``ir``: bnhw's integer IR (the reference semantics, ``hw_graph.json``);
* ``sim``: bnhw's cycle simulator in functional mode (the folded accelerator, word by word);
* ``cpu``: bnhw's C runtime (the kernels ``bnhw bench-cpu`` times);
* ``qonnx``: qonnx's execution of the exported QONNX model (``model.onnx``).

Input: a ``.npy`` array of N images, NCHW or NHWC (a single image without N, or N x H x W for one channel).
Floats are the model's input (what ``model.onnx`` takes, e.g. pixels / 255); they are quantised by the network's
input quantiser to the accelerator's integers.  Integers are those integers directly (e.g. uint8 pixels) and must
lie in the input type's range.  Float engines (finn, qonnx) get ``integers * scale``, so every engine sees the
same values.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BnhwError
from .inputs import load_hw_graph, resolve

__all__ = ["ENGINES", "RunInput", "read_images", "run_engine", "run_command"]

ENGINES = ("finn", "ir", "sim", "cpu", "qonnx")


@dataclass
class RunInput:
    """The user's images as every engine needs them."""

    ints: np.ndarray          # (N, *IR input shape): the accelerator's input integers
    floats: np.ndarray        # (N, C, H, W) float32: the model's input (ints * scale)
    ints_nchw: np.ndarray     # (N, C, H, W) the integers in the model's layout
    layout: str               # "NCHW" | "NHWC" (as given)
    kind: str                 # "float" | "integer" (as given)


def _model_input_shape(onnx_file: Path) -> tuple[int, int, int]:
    import onnx

    try:
        m = onnx.load(str(onnx_file), load_external_data=False)
        dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    except Exception as e:  # noqa: BLE001 - a damaged model file is the user's input error
        raise BnhwError(f"{onnx_file}: not a readable ONNX model ({type(e).__name__})") from None
    if len(dims) != 4 or min(dims[1:]) < 1:
        raise BnhwError(f"{onnx_file}: input shape {dims} is not 1 x C x H x W")
    return dims[1], dims[2], dims[3]


def read_images(path: Path, graph, chw: tuple[int, int, int]) -> RunInput:
    """Load and check ``path`` (.npy) against the network's input ``chw``; one-line errors."""
    c, h, w = chw
    if not path.is_file():
        raise BnhwError(f"--input {path}: no such file")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BnhwError(f"--input {path}: not a NumPy .npy array ({first})") from None
    if not isinstance(x, np.ndarray):
        raise BnhwError(f"--input {path}: a NumPy archive (.npz); give one array as .npy")
    want = f"N x {c} x {h} x {w} (NCHW) or N x {h} x {w} x {c} (NHWC)"
    shape = tuple(x.shape)
    if x.ndim == 3 and shape in ((c, h, w), (h, w, c)):
        x = x[None]
    elif x.ndim == 3 and c == 1 and shape[1:] == (h, w):
        x = x[:, None]
    if x.ndim != 4 or tuple(x.shape[1:]) not in ((c, h, w), (h, w, c)):
        raise BnhwError(f"--input {path}: shape {list(shape)}; the network takes {want}")
    if x.shape[0] == 0:
        raise BnhwError(f"--input {path}: no images (N = 0)")
    layout = "NCHW" if tuple(x.shape[1:]) == (c, h, w) else "NHWC"
    nhwc = x.transpose(0, 2, 3, 1) if layout == "NCHW" else x
    t = graph.streams[graph.input].dtype
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)):
            raise BnhwError(f"--input {path}: holds NaN or infinite values")
        kind = "float"
        ints = graph.input_integers(nhwc)
    elif x.dtype.kind in "iu":
        kind = "integer"
        lo, hi = int(x.min()), int(x.max())
        if lo < t.min or hi > t.max:
            raise BnhwError(f"--input {path}: integer inputs are the accelerator's input ({t.finn_name()}, "
                            f"{t.min}..{t.max}); found {lo}..{hi} (give floats to have them quantised)")
        ints = nhwc.astype(np.int64)
    else:
        raise BnhwError(f"--input {path}: dtype {x.dtype} is neither float nor integer")
    floats = np.ascontiguousarray(graph.input_floats(ints).transpose(0, 3, 1, 2))
    ir_shape = tuple(graph.streams[graph.input].shape)
    return RunInput(ints.reshape(len(ints), *ir_shape), floats, np.ascontiguousarray(ints.transpose(0, 3, 1, 2)),
                    layout, kind)


# ----------------------------------------------------------------------------- engines
def _ticker(engine: str, total: int, note: Callable[[str], None]) -> Callable[[int], None]:
    last = [time.monotonic()]

    def tick(done: int) -> None:
        if time.monotonic() - last[0] >= 2.0 and done < total:
            last[0] = time.monotonic()
            note(f"{engine}: {done}/{total} images")
    return tick


def _finn_model(build: Path) -> tuple[Path, str]:
    from ..hw.finn_build import finn_execution_model

    found = finn_execution_model(build / "finn")
    if found is not None:
        return found
    why = ""
    report = build / "report.json"
    if report.is_file():
        try:
            f = json.loads(report.read_text()).get("finn", {})
            why = f.get("why") or f.get("reason") or ""
        except (json.JSONDecodeError, AttributeError):
            why = ""
    raise BnhwError(f"{build}: this build has no FINN dataflow graph ({why or 'finn/ is missing'}); use --engine "
                    "ir, sim, cpu or qonnx")


def run_engine(engine: str, build: Path, graph, data: RunInput, note: Callable[[str], None] = lambda s: None
               ) -> tuple[np.ndarray, dict[str, Any]]:
    """Labels of every image with ``engine``, and what else is worth reporting."""
    n = len(data.ints)
    tick = _ticker(engine, n, note)
    extra: dict[str, Any] = {}
    if engine == "ir":
        outs = []
        for i, v in enumerate(data.ints):
            outs.append(graph.execute(v))
            tick(i + 1)
        return graph.labels(np.stack(outs)), extra
    if engine == "sim":
        from ..hw.sim.simulate import simulate

        res = simulate(graph, n, inputs=data.ints)
        assert res.outputs is not None
        extra["ii_cycles"] = res.ii_cycles
        return graph.labels(res.outputs), extra
    if engine == "cpu":
        from ..hw.cpu.runtime import CpuModel

        model = CpuModel(graph)
        outs = []
        for i, v in enumerate(data.ints):
            outs.append(model.run(v))
            tick(i + 1)
        extra["kernels"] = model.kernels
        return graph.labels(np.stack(outs)), extra
    if engine == "qonnx":
        from ..quant.export import execute_qonnx

        logits = np.asarray(execute_qonnx(build / "model.onnx", data.floats))
        return logits.reshape(n, -1).argmax(1), extra
    if engine == "finn":
        from ..hw.finn_compat import FinnExecutor, finn_unavailable_reason

        model_file, front = _finn_model(build)
        try:
            fx = FinnExecutor(model_file)
        except RuntimeError:
            raise BnhwError(f"--engine finn: {finn_unavailable_reason()}") from None
        outs = []
        # FINN's front end: the model's floats, or (built with bnhw's pixel input) the integers themselves, NCHW;
        # bnhw's exported HW graph: the IR's integer input, NHWC, and the IR's output
        images = data.ints if front == "ir" else data.ints_nchw if fx.integer_input else data.floats
        for i, v in enumerate(images):
            outs.append(fx(v[None]).reshape(-1))
            tick(i + 1)
        flat = np.stack(outs)
        extra["finn_graph"] = str(model_file.relative_to(build))
        if front == "ir":
            return graph.labels(np.rint(flat).astype(np.int64)), extra
        return (flat[:, 0].astype(np.int64) if flat.shape[1] == 1 else flat.argmax(1)), extra
    raise BnhwError(f"--engine {engine!r}: one of {', '.join(ENGINES)}")


def run_command(build: Path, input_path: Path, engine: str | None, as_json: bool,
                echo: Callable[[str], None] = print) -> dict[str, Any]:
    """``bnhw run``: labels on stdout (or one JSON object), notes and progress on stderr."""
    def note(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    inp = resolve(build, "run")
    assert inp.path is not None
    graph = load_hw_graph(inp)
    onnx_file = inp.path / "model.onnx"
    if not onnx_file.is_file():
        raise BnhwError(f"{inp.path}: no model.onnx (a build folder written by `bnhw build` has one)")
    data = read_images(Path(input_path), graph, _model_input_shape(onnx_file))
    if engine is None:
        from ..hw.finn_build import finn_execution_model

        engine = "finn" if finn_execution_model(inp.path / "finn") is not None else "ir"
        if engine == "ir":
            note(f"{inp.path}: no FINN dataflow graph in this build; running bnhw's IR (--engine ir)")
    t0 = time.perf_counter()
    labels, extra = run_engine(engine, inp.path, graph, data, note)
    seconds = time.perf_counter() - t0
    note(f"{engine}: {len(labels)} images in {seconds:.2f} s ({data.kind} input, {data.layout})")
    out = {"labels": [int(v) for v in labels], "engine": engine, "images": len(labels), "network": graph.name,
           "input_kind": data.kind, "input_layout": data.layout, "seconds": round(seconds, 3), **extra}
    if as_json:
        echo(json.dumps(out))
    else:
        for v in out["labels"]:
            echo(str(v))
    return out
