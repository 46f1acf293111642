"""FINN's reference binary networks CNV-W1A1 and TFC-W1A1 (BNN-PYNQ), as Brevitas models.

The two networks of the BNN-PYNQ / finn-examples suite, with the module
layout of Brevitas' ``bnn_pynq`` example models (so that their state dicts
match key for key):

``cnv-w1a1`` (CIFAR-10 style, input ``3 x 32 x 32`` in [0, 1]):
    ``x -> 2x - 1 -> 8-bit signed quantiser (scale 2**-7, Q1.7)``, then six
    unpadded 3x3 convolutions 3-64-64 | pool | 64-128-128 | pool | 128-256-256
    (each followed by a batch norm and a sign activation), three fully
    connected layers 256-512-512-``num_classes`` (batch norm + sign after the
    first two) and a per-tensor affine ``TensorNorm`` on the logits.  Weights
    and activations are 1-bit (``BipolarQuant`` in QONNX, sign(0) = +1).
``tfc-w1a1`` (MNIST style, input ``1 x 28 x 28`` in [0, 1]):
    ``x -> flatten -> 2x - 1 -> sign`` (a bipolar input quantiser), then the
    fully connected layers 784-64-64-64-``num_classes`` with batch norm +
    sign after the hidden ones, dropout (training only) and ``TensorNorm``.

Real CIFAR-10 / MNIST and the pretrained BNN-PYNQ weights cannot be fetched
here.  :func:`train_reference` therefore trains the networks briefly and
deterministically on scikit-learn's bundled digits (resized to 32x32x3 for
CNV, 28x28x1 for TFC; see :mod:`bnhw.data`), so that batch-norm statistics
and binary activations are realistic.  A user who has the published
BNN-PYNQ checkpoints (``cnv_1w1a-758c8fef.pth``, ``tfc_1w1a-45185b4d.pth``)
can load them from a local file with ``build_reference(name,
state_dict=PATH)`` or :func:`load_reference_weights`.

:func:`export_reference` writes the QONNX graph (Brevitas ``export_qonnx``,
qonnx cleanup, and batch norms turned into ``Mul`` + ``Add`` with qonnx's
``BatchNormToAffine``, so that every float operation of the graph is a
single IEEE float32 operation that :mod:`bnhw.hw.lower_qonnx` can reproduce
bit for bit).  The hardware lowering (FINN's streamlined integer network) is
:func:`bnhw.hw.lower_qonnx.lower_reference`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from brevitas.core.bit_width import BitWidthImplType
from brevitas.core.quant import QuantType
from brevitas.core.restrict_val import FloatToIntImplType, RestrictValueType
from brevitas.core.scaling import ScalingImplType
from brevitas.core.zero_point import ZeroZeroPoint
from brevitas.inject import ExtendedInjector
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from brevitas.quant.solver import ActQuantSolver, WeightQuantSolver
from dependencies import value
from torch import Tensor, nn

from ..errors import BnhwError

__all__ = [
    "REFERENCE_NETS", "ReferenceNet", "TensorNorm", "build_reference", "export_reference",
    "load_reference_weights", "qonnx_input", "reference_data", "reference_input", "train_reference",
]


# ----------------------------------------------------------------------------- quantisers
class _ConstQuant(ExtendedInjector):
    """Constant-scale, zero-point-free quantisation; 1 bit means sign (binary)."""

    bit_width_impl_type = BitWidthImplType.CONST
    scaling_impl_type = ScalingImplType.CONST
    restrict_scaling_type = RestrictValueType.FP
    zero_point_impl = ZeroZeroPoint
    float_to_int_impl_type = FloatToIntImplType.ROUND
    scaling_per_output_channel = False
    narrow_range = True
    signed = True

    @value
    def quant_type(bit_width):  # a dependency-injection rule, not a method
        if bit_width is None:
            return QuantType.FP
        return QuantType.BINARY if bit_width == 1 else QuantType.INT


class BinaryWeightQuant(_ConstQuant, WeightQuantSolver):
    """Bipolar weights with scale 1 (``BipolarQuant`` in QONNX)."""

    scaling_const = 1.0


class ActQuant(_ConstQuant, ActQuantSolver):
    """Activations in [-1, 1]: sign for 1 bit, fixed point otherwise."""

    min_val = -1.0
    max_val = 1.0


class TensorNorm(nn.Module):
    """A per-tensor batch norm on the logits (one mean, variance, weight and bias)."""

    running_mean: Tensor    # buffers (registered in __init__)
    running_var: Tensor

    def __init__(self, eps: float = 1e-4, momentum: float = 0.1):
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))
        self.register_buffer("running_mean", torch.zeros(1))
        self.register_buffer("running_var", torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            mean = x.mean()
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * x.var(unbiased=True))
            return (x - mean) / (x.var(unbiased=False) + self.eps).pow(0.5) * self.weight + self.bias
        return (x - self.running_mean) / (self.running_var + self.eps).pow(0.5) * self.weight + self.bias


def _act(bits: int, **kw: Any) -> QuantIdentity:
    return QuantIdentity(act_quant=ActQuant, bit_width=bits, **kw)


def _uniform_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (QuantConv2d, QuantLinear)):
            nn.init.uniform_(m.weight.data, -1.0, 1.0)


# ----------------------------------------------------------------------------- networks
CNV_CONVS = ((64, False), (64, True), (128, False), (128, True), (256, False), (256, False))
CNV_FCS = ((256, 512), (512, 512))


class CNV(nn.Module):
    """BNN-PYNQ's CNV (``conv_features`` / ``linear_features`` as in Brevitas' example)."""

    def __init__(self, num_classes: int = 10, weight_bits: int = 1, act_bits: int = 1, in_bits: int = 8,
                 in_channels: int = 3):
        super().__init__()
        self.conv_features = nn.ModuleList()
        self.linear_features = nn.ModuleList()
        # Q1.7 input: [-1, 1 - 2**-7] in steps of 2**-7
        self.conv_features.append(_act(in_bits, min_val=-1.0, max_val=1.0 - 2.0 ** -7, narrow_range=False,
                                       restrict_scaling_type=RestrictValueType.POWER_OF_TWO))
        ch = in_channels
        for out_ch, pool in CNV_CONVS:
            self.conv_features.append(QuantConv2d(ch, out_ch, kernel_size=3, bias=False,
                                                  weight_quant=BinaryWeightQuant, weight_bit_width=weight_bits))
            ch = out_ch
            self.conv_features.append(nn.BatchNorm2d(ch, eps=1e-4))
            self.conv_features.append(_act(act_bits))
            if pool:
                self.conv_features.append(nn.MaxPool2d(kernel_size=2))
        for fin, fout in CNV_FCS:
            self.linear_features.append(QuantLinear(fin, fout, bias=False, weight_quant=BinaryWeightQuant,
                                                    weight_bit_width=weight_bits))
            self.linear_features.append(nn.BatchNorm1d(fout, eps=1e-4))
            self.linear_features.append(_act(act_bits))
        self.linear_features.append(QuantLinear(CNV_FCS[-1][1], num_classes, bias=False,
                                                weight_quant=BinaryWeightQuant, weight_bit_width=weight_bits))
        self.linear_features.append(TensorNorm())
        _uniform_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = 2.0 * x - torch.tensor([1.0], device=x.device)
        for m in self.conv_features:
            x = m(x)
        x = x.view(x.shape[0], -1)
        for m in self.linear_features:
            x = m(x)
        return x


class TFC(nn.Module):
    """BNN-PYNQ's TFC (``features`` as in Brevitas' ``FC`` example)."""

    def __init__(self, num_classes: int = 10, hidden: tuple[int, ...] = (64, 64, 64), weight_bits: int = 1,
                 act_bits: int = 1, in_bits: int = 1, in_features: int = 28 * 28, dropout: float = 0.2):
        super().__init__()
        self.features = nn.ModuleList()
        self.features.append(_act(in_bits))
        self.features.append(nn.Dropout(p=dropout))
        fin = in_features
        for fout in hidden:
            self.features.append(QuantLinear(fin, fout, bias=False, weight_quant=BinaryWeightQuant,
                                             weight_bit_width=weight_bits))
            fin = fout
            self.features.append(nn.BatchNorm1d(fout))
            self.features.append(_act(act_bits))
            self.features.append(nn.Dropout(p=dropout))
        self.features.append(QuantLinear(fin, num_classes, bias=False, weight_quant=BinaryWeightQuant,
                                         weight_bit_width=weight_bits))
        self.features.append(TensorNorm())
        _uniform_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = x.view(x.shape[0], -1)
        x = 2.0 * x - torch.tensor([1.0], device=x.device)
        for m in self.features:
            x = m(x)
        return x


@dataclass(frozen=True)
class ReferenceNet:
    """What a reference network expects: input shape (C, H, W), data set, input bits."""

    name: str
    input_shape: tuple[int, int, int]
    dataset: str
    note: str
    in_bits: int


REFERENCE_NETS: dict[str, ReferenceNet] = {
    "cnv-w1a1": ReferenceNet(
        "cnv-w1a1", (3, 32, 32), "CIFAR-10",
        "BNN-PYNQ CNV-W1A1; trained here on the local digits resized to 32x32x3 (no download)", 8),
    "tfc-w1a1": ReferenceNet(
        "tfc-w1a1", (1, 28, 28), "MNIST",
        "BNN-PYNQ TFC-W1A1; trained here on the local digits resized to 28x28x1 (no download)", 1),
}


def _spec(name: str) -> ReferenceNet:
    try:
        return REFERENCE_NETS[name.lower()]
    except KeyError:
        raise BnhwError(f"unknown reference network {name!r} (known: {', '.join(REFERENCE_NETS)})") from None


def load_reference_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a local state dict (e.g. a pretrained BNN-PYNQ ``.pth``) into ``model``, in place.

    Accepts a plain state dict or a dictionary holding one under
    ``state_dict`` (Brevitas' BNN-PYNQ trainer format).  Every weight and
    batch-norm entry of ``model`` must be present with the right shape;
    quantiser buffers the file lacks keep their (constant) defaults.
    """
    p = Path(path)
    if not p.is_file():
        raise BnhwError(f"{p}: no such file")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BnhwError(f"{p}: not a readable PyTorch state dict ({type(e).__name__})") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise BnhwError(f"{p}: holds no state dict")
    own = model.state_dict()
    required = [k for k in own if k.endswith(("weight", "bias", "running_mean", "running_var"))]
    missing = [k for k in required if k not in data]
    if missing:
        raise BnhwError(f"{p}: does not fit the model (missing {missing[0]!r} and {len(missing) - 1} more)")
    for k in own:
        if k in data and tuple(data[k].shape) != tuple(own[k].shape):
            raise BnhwError(f"{p}: {k!r} has shape {tuple(data[k].shape)}, the model needs {tuple(own[k].shape)}")
    model.load_state_dict({k: v for k, v in data.items() if k in own}, strict=False)
    return model


def build_reference(name: str, num_classes: int = 10, *, state_dict: str | os.PathLike | None = None,
                    seed: int = 0) -> nn.Module:
    """The Brevitas model of ``"cnv-w1a1"`` or ``"tfc-w1a1"`` (eval mode).

    Weights are drawn uniformly from [-1, 1] with ``torch.manual_seed(seed)``
    (restoring the global RNG state afterwards); with ``state_dict`` they are
    loaded from that local file instead (see :func:`load_reference_weights`).
    """
    spec = _spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CNV(num_classes) if spec.name == "cnv-w1a1" else TFC(num_classes)
    if state_dict is not None:
        load_reference_weights(model, state_dict)
    return model.eval()


# ----------------------------------------------------------------------------- data
def reference_data(name: str, split: str = "train", seed: int = 0) -> tuple[Tensor, Tensor]:
    """Local digits at the network's input size: ``(x, y)``, ``x`` float32 N x C x H x W in [0, 1].

    Pixels lie on the 1/255 grid (``uint8 / 255``), so :func:`reference_input`
    recovers them exactly.  ``split`` is ``"train"`` or ``"test"`` (the
    deterministic stratified split of :func:`bnhw.data.datasets.load_digits_data`).
    """
    from ..data.datasets import ImageSet, load_digits_data

    c, h, _ = _spec(name).input_shape
    bundle = load_digits_data(h, channels=c, seed=seed)
    # the digits are in memory: ImageSets throughout
    assert isinstance(bundle.train, ImageSet) and isinstance(bundle.val, ImageSet) \
        and isinstance(bundle.test, ImageSet)
    if split == "train":
        u8 = torch.cat([bundle.train.images, bundle.val.images])
        y = torch.cat([bundle.train.labels, bundle.val.labels])
    elif split == "test":
        u8, y = bundle.test.images, bundle.test.labels
    else:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return u8.float() / 255.0, y


def reference_input(name: str, images: np.ndarray | Tensor) -> np.ndarray:
    """The hardware graph's input for float images ``N x C x H x W`` in [0, 1]: uint8 pixels.

    ``round(x * 255)`` clipped to 0..255, in HWC order: ``N x H x W x C`` for
    CNV, ``N x 1 x 1 x H*W`` (the flattened image) for TFC, dtype int64.  The
    QONNX graph sees these pixels as :func:`qonnx_input` (``pixel / 255`` in
    float32); the graph's ``Thresholding_rtl_0`` then produces exactly what
    the QONNX input quantiser produces on them.
    """
    spec = _spec(name)
    x = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if tuple(x.shape[1:]) != spec.input_shape:
        raise ValueError(f"{spec.name} expects N x {' x '.join(map(str, spec.input_shape))} images, got {x.shape}")
    u8 = np.clip(np.rint(x.astype(np.float64) * 255.0), 0, 255).astype(np.int64)
    nhwc = u8.transpose(0, 2, 3, 1)
    if spec.name == "tfc-w1a1":
        return nhwc.reshape(len(x), 1, 1, -1)
    return nhwc


def qonnx_input(name: str, pixels: np.ndarray) -> np.ndarray:
    """The float32 QONNX input (``N x C x H x W``) for uint8 pixels as :func:`reference_input` gives them."""
    c, h, w = _spec(name).input_shape
    p = np.asarray(pixels)
    if p.ndim == 3:
        p = p[None]
    nchw = p.reshape(len(p), h, w, c).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(nchw.astype(np.float32) / np.float32(255.0))


# ----------------------------------------------------------------------------- training
def _clip_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (QuantConv2d, QuantLinear)):
            m.weight.data.clamp_(-1.0, 1.0)


def train_reference(name: str, data: tuple[Tensor, Tensor] | None = None, epochs: float = 1.0, *,
                    model: nn.Module | None = None, batch_size: int = 64, lr: float = 0.01,
                    seed: int = 0, max_steps: int | None = None, num_threads: int | None = None) -> nn.Module:
    """Train a reference network briefly and deterministically; returns it in eval mode.

    ``data`` is ``(x, y)`` with ``x`` in [0, 1] at the network's input shape
    (default: :func:`reference_data` ``(name, "train")``).  Adam on the
    cross-entropy loss, latent weights clipped to [-1, 1] after every step
    (as BNN-PYNQ does), batches (and dropout masks) drawn from generators
    seeded with ``seed``, so two runs give identical weights; ``epochs`` may
    be fractional and ``max_steps`` caps the steps.  Without ``model`` a
    fresh one comes from :func:`build_reference` ``(name, seed=seed)``;
    a given ``model`` is trained in place.  One epoch of CNV on the ~1,400
    training digits takes a few seconds on a laptop CPU.
    """
    spec = _spec(name)
    x, y = reference_data(spec.name) if data is None else data
    if model is None:
        model = build_reference(spec.name, seed=seed)
    steps_per_epoch = max(1, len(x) // batch_size)
    steps = max(1, int(round(epochs * steps_per_epoch)))
    if max_steps is not None:
        steps = min(steps, max_steps)
    gen = torch.Generator().manual_seed(seed)
    old_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # dropout masks
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            model.train()
            perm = torch.randperm(len(x), generator=gen)
            pos = 0
            for _ in range(steps):
                if pos + batch_size > len(x):
                    perm, pos = torch.randperm(len(x), generator=gen), 0
                idx = perm[pos:pos + batch_size]
                pos += batch_size
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                _clip_weights(model)
    finally:
        torch.set_num_threads(old_threads)
    return model.eval()


# ----------------------------------------------------------------------------- export
def export_reference(model: nn.Module, path: str | os.PathLike) -> Path:
    """Export a reference network to a cleaned-up QONNX file (batch size 1), written atomically.

    Brevitas' ``export_qonnx`` (input ``global_in`` of shape ``1 x C x H x W``
    in [0, 1]), qonnx ``cleanup_model``, and qonnx's ``BatchNormToAffine``:
    every batch norm becomes a ``Mul`` and an ``Add`` with float32
    constants.  The model is exported in eval mode and is not modified.
    """
    from brevitas.export import export_qonnx as brevitas_export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.batchnorm_to_affine import BatchNormToAffine
    from qonnx.util.cleanup import cleanup_model

    from .checkpoint import write_file

    shape = next((s.input_shape for s in REFERENCE_NETS.values() if isinstance(model, _CLASSES[s.name])), None)
    if shape is None:
        raise TypeError(f"expected a CNV or TFC reference model, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="bnhw-refexport-") as tmp:
            raw = Path(tmp) / "raw.onnx"
            with torch.no_grad():
                brevitas_export_qonnx(model, args=torch.zeros(1, *shape), export_path=str(raw), dynamo=False)
            clean = cleanup_model(ModelWrapper(str(raw)))
            clean = cleanup_model(clean.transform(BatchNormToAffine()))
    finally:
        model.train(was_training)
    return write_file(path, clean.model.SerializeToString())


_CLASSES: dict[str, type[nn.Module]] = {"cnv-w1a1": CNV, "tfc-w1a1": TFC}
