"""One preparation path from any network input to the hardware IR: a reference net (``cnv-w1a1``,
``tfc-w1a1``, trained here briefly unless ``--checkpoint`` gives weights), an architecture spec (file or
``bnhw zoo`` name; built with the fixed-point residual path) or a BNN-PYNQ-style QONNX file; each is exported
(or copied) to QONNX, lowered to the integer IR and checked against QONNX execution on real images.  Used by
``bnhw build``, ``bnhw bench-cpu``, ``bnhw export`` (reference nets) and the benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BnhwError
from ..hw.ir import HwGraph
from .inputs import Kind, NetworkInput, require_hardware, resolve
from .outputs import make_dirs

__all__ = ["PreparedNetwork", "prepare_network", "reference_model", "LoweredQonnx", "lower_qonnx_input",
           "REFERENCE_TRAIN_EPOCHS"]

#: quick training of a reference network when no --checkpoint is given (seconds on 2 cores)
REFERENCE_TRAIN_EPOCHS = {"cnv-w1a1": 1, "tfc-w1a1": 3}


@dataclass
class PreparedNetwork:
    """A network ready for hardware: its model, QONNX file, IR and real test inputs."""

    name: str
    kind: str                       # "reference" | "spec" | "qonnx"
    model: Any
    onnx: Path
    graph: HwGraph
    images: Any                     # float NCHW torch tensor (real digits images)
    int_inputs: np.ndarray          # (N, H, W, C) integer inputs of the IR
    qonnx_check: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None    # the true labels of ``images``


# ----------------------------------------------------------------------------- network preparation
def _reference_names() -> tuple[str, ...]:
    from ..quant.reference_nets import REFERENCE_NETS
    return tuple(REFERENCE_NETS)


def prepare_network(network: str | NetworkInput, out: Path, *, checkpoint: Path | None = None, n_inputs: int = 16,
                    echo: Callable[[str], None] = print, command: str = "build",
                    lowered: LoweredQonnx | None = None) -> PreparedNetwork:
    """Build/load the model, export QONNX to ``out/model.onnx``, lower it, check the IR against QONNX.

    ``network`` is anything :func:`bnhw.flows.inputs.resolve` takes for
    ``command`` (a reference network, a spec file or zoo name, a QONNX file).
    """
    inp = network if isinstance(network, NetworkInput) else resolve(network, command)
    make_dirs(out)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise BnhwError(f"{checkpoint}: no such checkpoint")
    n_inputs = max(1, int(n_inputs))
    if inp.kind is Kind.REFERENCE:
        return _prepare_reference(inp.arg, out, checkpoint, n_inputs, echo)
    if inp.kind is Kind.QONNX:
        if checkpoint is not None:
            raise BnhwError(f"--checkpoint: {inp.arg} is a QONNX model and carries its own weights")
        return _prepare_qonnx(inp, out, n_inputs, lowered)
    if inp.kind in (Kind.SPEC, Kind.ZOO, Kind.CELL_SPEC):
        return _prepare_spec(inp, out, checkpoint, n_inputs, echo)
    raise BnhwError(f"{inp.arg} is a {inp.kind}; it has no network to prepare")


def reference_model(name: str, checkpoint: Path | None, echo: Callable[[str], None] = print):
    """A reference network's Brevitas model: ``checkpoint``'s weights, or trained here briefly on the digits.

    Returns ``(model, notes)``.
    """
    from ..quant import reference_nets as rn

    info = rn.REFERENCE_NETS[name]
    notes = [info.note]
    if checkpoint is not None:
        model = rn.build_reference(name, state_dict=checkpoint)
        notes.append(f"weights from {checkpoint}")
    else:
        epochs = REFERENCE_TRAIN_EPOCHS[name]
        cached = _trained_reference_file(name, epochs)
        if cached.is_file():
            try:
                model = rn.build_reference(name, state_dict=cached)
            except Exception:  # noqa: BLE001 - a damaged cache entry is retrained, not an error
                cached.unlink(missing_ok=True)
        if cached.is_file():
            echo(f"no --checkpoint: {name} as trained earlier here ({epochs} epoch(s) on the digits; {cached})")
        else:
            echo(f"no --checkpoint: training {name} for {epochs} epoch(s) on the local digits images")
            model = rn.train_reference(name, epochs=epochs, seed=0)
            _save_atomically(model, cached)
        notes.append(f"no --checkpoint: trained here for {epochs} epoch(s) on the digits training split, "
                     f"deterministically (kept in {cached}; BNN-PYNQ's pretrained {info.dataset} weights can be "
                     "given with --checkpoint)")
    return model, notes


def _trained_reference_file(name: str, epochs: float) -> Path:
    """Where the deterministic quick training of a reference net is kept: the same network, epochs, seed,
    training code, torch / brevitas versions and thread count train the same weights, so they are trained once
    per machine (``$BNHW_WEIGHTS_CACHE``, default ``~/.cache/bnhw/weights``)."""
    import brevitas
    import torch

    from ..hw.cbuild import cache_dir, source_hash
    from ..quant import reference_nets as rn

    key = source_hash({"reference_nets.py": Path(rn.__file__).read_text()}, name, repr(epochs), "seed=0",
                      torch.__version__, str(brevitas.__version__), str(torch.get_num_threads()))
    return cache_dir("weights", "BNHW_WEIGHTS_CACHE") / f"{name}-{epochs}ep-{key[:16]}.pt"


def _save_atomically(model, path: Path) -> None:
    import os

    import torch

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)
    except OSError:             # a read-only cache only costs the next build its training
        pass


def _prepare_reference(name, out, checkpoint, n_inputs, echo) -> PreparedNetwork:
    from ..hw.lower_qonnx import lower_reference
    from ..quant import reference_nets as rn

    model, notes = reference_model(name, checkpoint, echo)
    onnx = out / "model.onnx"
    rn.export_reference(model, onnx)
    graph = lower_reference(onnx, name)
    x, y = rn.reference_data(name, "test")
    ints = rn.reference_input(name, x)
    images = x[:n_inputs]
    check = _check_ir_vs_qonnx(graph, onnx, images, ints[:n_inputs], head=None)
    labels, engine = _integer_labels(graph, ints, n_inputs)
    check["accuracy_ir"] = float((labels == y.numpy()).mean())
    check["accuracy_images"] = len(ints)
    check["accuracy_engine"] = engine
    return PreparedNetwork(name, "reference", model, onnx, graph, images, ints[:n_inputs], check, notes,
                           y[:n_inputs].numpy())


def _integer_labels(graph: HwGraph, ints: np.ndarray, n_check: int) -> tuple[np.ndarray, str]:
    """The integer network's label for every input: with bnhw's C runtime (the IR's semantics, ~100x faster than
    the IR's numpy execution; checked equal to the IR on the first ``n_check`` inputs here), or the IR's own
    execution where no C compiler is available."""
    from ..hw.cpu.runtime import CpuModel

    try:
        model = CpuModel(graph)
    except BnhwError:                       # no C compiler: the IR itself (slower)
        return graph.labels(np.stack([graph.execute(v) for v in ints])), "IR execution"
    outs = np.stack([model.run(v) for v in ints])
    ref = np.stack([graph.execute(v) for v in ints[:n_check]])
    if not np.array_equal(outs[:n_check].reshape(ref.shape), ref):
        raise BnhwError("bnhw's C runtime disagrees with the hardware IR (a runtime bug; please report it)")
    return graph.labels(outs), f"bnhw's C runtime, equal to the IR execution on the first {len(ref)}"


@dataclass
class LoweredQonnx:
    """A QONNX input lowered to the IR (before any output folder exists: its errors are input errors)."""

    graph: HwGraph
    channels: int
    size: int
    flat: bool                      # a fully connected network: the IR takes the flattened image


def lower_qonnx_input(inp: NetworkInput) -> LoweredQonnx:
    """Lower a QONNX file: BNN-PYNQ-style graphs (an input quantiser on ``pixel / 255``, binary Conv /
    MatMul with batch norm + sign, 2x2 max pools, an affine head) lower like the reference networks."""
    from qonnx.util.cleanup import cleanup_model

    from ..hw.ir import IRError
    from ..hw.lower_qonnx import lower_qonnx
    from .inputs import load_onnx

    mw = load_onnx(inp)
    shape = mw.get_tensor_shape(mw.graph.input[0].name)
    if shape is None or len(shape) != 4 or shape[0] != 1 or shape[1] not in (1, 3) or shape[2] != shape[3]:
        raise BnhwError(f"{inp.arg}: input {mw.graph.input[0].name!r} has shape {shape}; bnhw builds image networks "
                        "with a 1 x C x H x H input (C = 1 or 3) in [0, 1]")
    _, c, h, w = (int(v) for v in shape)
    flat = not any(n.op_type == "Conv" for n in mw.graph.node)
    try:
        graph = lower_qonnx(cleanup_model(mw), inp.label, (1, 1, c * h * w) if flat else (h, w, c))
    except IRError as e:
        raise BnhwError(f"{inp.arg}: {e} (bnhw lowers BNN-PYNQ-style QONNX: an input quantiser on pixel/255, binary "
                        "Conv / MatMul with batch norm + sign, 2x2 max pools, an affine head; NAS-BNN networks build "
                        "from their spec)") from None
    return LoweredQonnx(graph, c, h, flat)


def _prepare_qonnx(inp: NetworkInput, out: Path, n_inputs: int, lowered: LoweredQonnx | None) -> PreparedNetwork:
    import shutil

    from ..data.datasets import ImageSet, load_digits_data

    low = lowered or lower_qonnx_input(inp)
    onnx = out / "model.onnx"
    assert inp.path is not None                  # a QONNX input is a file
    shutil.copyfile(inp.path, onnx)
    bundle = load_digits_data(low.size, channels=low.channels, seed=0)
    assert isinstance(bundle.test, ImageSet)     # the digits are held in memory
    u8 = bundle.test.images[:n_inputs]
    images = u8.float() / 255.0
    nhwc = u8.numpy().astype(np.int64).transpose(0, 2, 3, 1)
    ints = nhwc.reshape(len(nhwc), 1, 1, -1) if low.flat else nhwc
    check = _check_ir_vs_qonnx(low.graph, onnx, images, ints, head=None)
    labels = np.array([int(low.graph.execute(v).reshape(-1)[0]) for v in ints])
    check["accuracy_ir"] = float((labels == bundle.test.labels[:n_inputs].numpy()).mean())
    check["accuracy_images"] = len(ints)
    what = "FINN-ONNX" if low.graph.meta.get("finn_onnx") else "QONNX"
    notes = [f"{what} model {inp.arg} (its own weights), lowered like BNN-PYNQ's networks; real inputs: digits "
             f"resized to {low.size}x{low.size}x{low.channels}"]
    return PreparedNetwork(inp.label, "qonnx", None, onnx, low.graph, images, ints, check, notes,
                           bundle.test.labels[:n_inputs].numpy())


def _prepare_spec(inp: NetworkInput, out, checkpoint, n_inputs, echo) -> PreparedNetwork:
    from ..data import digits_images
    from ..hw.estimate import fresh_hardware_model
    from ..hw.lower_binarynet import integer_input
    from ..hw.lowering import lower_model
    from ..quant.checkpoint import load_checkpoint, load_model
    from ..quant.export import export_qonnx
    from ..quant.model import to_fixed

    spec = inp.spec
    require_hardware(spec, inp.label, "build", "no hardware unit produces a constant")
    notes = []
    if checkpoint is not None:
        saved, _, _ = load_checkpoint(checkpoint)
        if saved.replace(name="", precision=spec.precision) != spec.replace(name=""):
            raise BnhwError(f"{checkpoint} holds weights of another architecture ({saved.short()})")
    if checkpoint is None:                   # the model the FPGA estimator sizes (seeded, calibrated)
        model = fresh_hardware_model(spec)
        notes.append("no --checkpoint: random binary weights, batch-norm statistics estimated on digits images "
                     "(accuracy is not meaningful; cycles and resources do not depend on weights)")
    else:
        model = load_model(spec, checkpoint)
        if not spec.precision.fixed:
            model = to_fixed(model)
    if not spec.precision.fixed:
        notes.append("float residual path quantised to fixed point for hardware (post-training): "
                     f"{spec.precision.residual_bits}-bit, {spec.precision.residual_frac_bits} fractional bits")
    onnx = out / "model.onnx"
    export_qonnx(model, onnx)
    graph = lower_model(model)
    images, labels = digits_images(spec.resolution, n_inputs, channels=spec.in_channels, seed=2)
    ints = integer_input(model, images)
    check = _check_ir_vs_qonnx(graph, onnx, images, ints, head=graph.meta.get("head"))
    return PreparedNetwork(inp.label, "spec", model, onnx, graph, images, ints, check, notes, labels.numpy())


def _check_ir_vs_qonnx(graph: HwGraph, onnx: Path, images, ints: np.ndarray, head) -> dict:
    """IR reference execution vs QONNX execution of the exported graph on the same real images."""
    from ..quant.export import execute_qonnx

    logits = np.asarray(execute_qonnx(onnx, images))
    outs = np.stack([graph.execute(x) for x in ints])
    labels_ir = graph.labels(outs)
    err = None
    if head is not None:
        ir_logits = graph.logits(outs)
        assert ir_logits is not None
        scale = max(float(np.abs(logits).max()), 1e-30)
        err = float(np.abs(ir_logits - logits).max()) / scale
    labels_q = logits.reshape(len(ints), -1).argmax(1)
    agree = int((labels_ir == labels_q).sum())
    res = {"inputs": len(ints), "labels_equal": agree, "max_logit_rel_error": err}
    if agree != len(ints):
        raise BnhwError(f"hardware IR disagrees with QONNX execution on {len(ints) - agree} of {len(ints)} "
                        "images (a lowering bug; please report it)")
    return res


# ----------------------------------------------------------------------------- folding
