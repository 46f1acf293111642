"""``bnhw export``: Brevitas model -> QONNX, then verification by execution.

Verification runs the exported graph with qonnx on real images (the digits
set at the spec's resolution) and compares it with the PyTorch model: every
binary tensor (activations and weights) must be bit-exact, and the logits
equal within 1e-5 relative to the largest logit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import BnhwError
from ..spec import ArchSpec

LOGIT_RTOL = 1e-5


@dataclass
class VerifyReport:
    images: int
    binary_tensors: int
    binary_mismatches: int
    max_logit_error: float      # max |torch - qonnx| / max |logit|
    top1_agree: float

    @property
    def ok(self) -> bool:
        return self.binary_mismatches == 0 and self.max_logit_error <= LOGIT_RTOL

    def line(self) -> str:
        return (f"verified on {self.images} digits images: {self.binary_tensors - self.binary_mismatches}/"
                f"{self.binary_tensors} binary tensors bit-exact, max logit error {self.max_logit_error:.2e} "
                f"(relative), top-1 agreement {100 * self.top1_agree:.0f}%")


def with_residual(spec: ArchSpec, mode: str) -> ArchSpec:
    if mode == "spec" or mode == spec.precision.residual:
        return spec
    return spec.replace(precision=dataclasses.replace(spec.precision, residual=mode))


def verify_export(model: torch.nn.Module, onnx_path: Path, x: torch.Tensor) -> VerifyReport:
    from ..quant.export import binary_tensors, execute_qonnx

    model = model.eval()
    with torch.no_grad():
        ref = model(x).numpy()
    ref_bin = binary_tensors(model, x)
    logits, got_bin = execute_qonnx(onnx_path, x, return_binary=True)
    mism = sum(1 for a, b in zip(ref_bin, got_bin) if a.shape != b.shape or not np.array_equal(a, b))
    mism += abs(len(ref_bin) - len(got_bin))
    scale = max(float(np.abs(ref).max()), 1e-30)
    err = float(np.abs(ref - logits).max()) / scale
    agree = float((ref.argmax(1) == logits.argmax(1)).mean())
    return VerifyReport(len(x), max(len(ref_bin), len(got_bin)), mism, err, agree)


def export_flow(arch: str, out: Path, *, checkpoint: Path | None = None, precision: str = "spec",
                verify: int = 8, force: bool = False, calibration_images: int = 64,
                echo=print) -> VerifyReport | None:
    """Export ``arch`` to QONNX at ``out``; the file appears only once it is written and verified.

    A failed verification leaves the export next to ``out`` as ``<stem>.failed.onnx`` and says so.
    """
    from .inputs import Kind, resolve
    from .outputs import check_out_file

    out = Path(out)
    inp = resolve(arch, "export")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise BnhwError(f"{checkpoint}: no such checkpoint")
    if out.is_dir():
        raise BnhwError(f"-o {out}: is a folder; give a .onnx file name")
    if out.suffix.lower() != ".onnx":
        raise BnhwError(f"-o {out}: give a .onnx file name")
    check_out_file(out, force=force)
    if inp.kind is Kind.REFERENCE:
        if precision != "spec":
            raise BnhwError(f"--precision applies to architecture specs; {inp.arg} is a reference network")
        return _export_reference(inp.arg, out, checkpoint, verify, echo)
    return _export_spec(inp, out, checkpoint, precision, verify, echo, calibration_images)


def _staged_file(out: Path) -> Path:
    import os

    return out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")


def _publish(tmp: Path, out: Path, ok: bool, line: str, echo) -> None:
    import os

    if ok:
        os.replace(tmp, out)
        return
    failed = out.with_name(f"{out.stem}.failed{out.suffix}")
    os.replace(tmp, failed)
    raise BnhwError(f"the QONNX export does not match PyTorch: {line}; not written to {out} (the export is kept as "
                    f"{failed})")


def _export_reference(name: str, out: Path, checkpoint: Path | None, verify: int, echo) -> VerifyReport | None:
    from ..quant import reference_nets as rn
    from .prepare import reference_model

    model, _ = reference_model(name, checkpoint, echo)
    tmp = _staged_file(out)
    try:
        rn.export_reference(model, tmp)
        rep = None
        if verify:
            x, _ = rn.reference_data(name, "test")
            rep = verify_export(model, tmp, x[:verify])
            echo(rep.line())
        _publish(tmp, out, rep is None or rep.ok, rep.line() if rep else "", echo)
    finally:
        tmp.unlink(missing_ok=True)
    c, h, w = rn.REFERENCE_NETS[name].input_shape
    echo(f"wrote {out} (QONNX, {name}, input 1x{c}x{h}x{w} in [0, 1])")
    return rep


def _export_spec(inp, out: Path, checkpoint: Path | None, precision: str, verify: int, echo,
                 calibration_images: int = 64) -> VerifyReport | None:
    from ..data import digits_images
    from ..quant.checkpoint import load_checkpoint, load_model
    from ..quant.export import export_qonnx
    from ..quant.model import recalibrate_bn

    spec = inp.spec
    if checkpoint is not None:
        saved, _, _ = load_checkpoint(checkpoint)
        if saved.replace(name="", precision=spec.precision) != spec.replace(name=""):
            raise BnhwError(f"{checkpoint} holds weights of another architecture ({saved.short()})")
    spec = with_residual(spec, precision)
    model = load_model(spec, checkpoint)
    if checkpoint is None:
        # random weights: estimate realistic BN statistics so the check is meaningful
        x, _ = digits_images(spec.resolution, calibration_images, channels=spec.in_channels, seed=1)
        recalibrate_bn(model, [x[i:i + 32] for i in range(0, len(x), 32)])
        echo("no --checkpoint: random weights, BN statistics estimated on digits images")
    tmp = _staged_file(out)
    try:
        export_qonnx(model, tmp)
        rep = None
        if verify:
            x, _ = digits_images(spec.resolution, verify, channels=spec.in_channels, seed=2)
            rep = verify_export(model, tmp, x)
            echo(rep.line())
        _publish(tmp, out, rep is None or rep.ok, rep.line() if rep else "", echo)
    finally:
        tmp.unlink(missing_ok=True)
    echo(f"wrote {out} (QONNX, {spec.precision.residual} residual path, input 1x{spec.in_channels}x"
         f"{spec.resolution}x{spec.resolution})")
    return rep
