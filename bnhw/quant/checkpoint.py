"""Checkpoints: a spec, the weights of its :class:`~bnhw.quant.model.BinaryNet`, and extras.

A checkpoint is a ``torch.save`` file holding a plain dictionary::

    {"format": "bnhw-checkpoint", "version": 1,
     "spec": <ArchSpec.to_dict()>, "weight_norm": bool,
     "state_dict": {...}, "extra": {...}}

It is written atomically (temp file in the same folder, then ``os.replace``)
and read with ``torch.load(weights_only=True)`` (:func:`safe_torch_load`), so
``extra`` must hold plain data only (numbers, strings, lists, dicts, tensors):
a file that pickles anything else -- a crafted one that would run code on
loading included -- is refused, never executed.  Every failure a user can
cause (missing file, corrupted file, unsafe pickle, weights that do not fit
the spec) raises :class:`~bnhw.errors.BnhwError` with a one-line message.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from ..errors import BnhwError, SpecError
from ..spec import atomic_write_bytes, load_spec
from ..spec.protocol import NetworkSpec
from .model import Network, build_network

#: a network type (load_weights returns the model it is given)
NetT = TypeVar("NetT", bound=torch.nn.Module)

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "load_checkpoint", "load_model",
           "load_weights", "safe_torch_load", "save_checkpoint", "write_file"]

CHECKPOINT_FORMAT = "bnhw-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(model: Network, path: str | os.PathLike, **extra: Any) -> Path:
    """Write ``model`` (spec, weight-norm setting, state dict) and ``extra`` to ``path`` atomically."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "spec": model.spec.to_dict(),
        "weight_norm": model.weight_norm,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return write_file(path, buf.getvalue())


def write_file(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; an OS failure raises a one-line :class:`BnhwError`."""
    try:
        return atomic_write_bytes(path, data)
    except OSError as e:
        raise BnhwError(f"{path}: cannot write ({e.strerror or type(e).__name__})") from None


def _load_failure(e: BaseException) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed (torch's own messages span paragraphs)."""
    msg = str(e)
    if isinstance(e, pickle.UnpicklingError):
        # "... WeightsUnpickler error: Unsupported global: GLOBAL posix.system was not an allowed global ..."
        m = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global|\.\s|\n|$)", msg, re.S)
        detail = m.group(1) if m else (msg.strip().splitlines() or [type(e).__name__])[0]
        return f"unsafe or corrupted pickle refused: {' '.join(detail.split())[:160]}"
    if isinstance(e, EOFError):
        return "corrupted or truncated file: unexpected end of file"
    first = msg.strip().splitlines()[0].split(". ")[0] if msg.strip() else type(e).__name__
    return f"corrupted or truncated file: {' '.join(first.split())[:160]}"


def safe_torch_load(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers only, so a crafted
    pickle is refused, never executed.  Any failure raises a one-line :class:`BnhwError`
    ``"<path>: <what> (<reason>)"``, e.g. ``"run/train_state.pt: not a bnhw training state (unsafe or
    corrupted pickle refused: Unsupported global: GLOBAL posix.system)"``."""
    try:
        with warnings.catch_warnings():       # torch warns about pickle protocols on foreign files
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... on bad bytes
        raise BnhwError(f"{path}: {what} ({_load_failure(e)})") from None


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BnhwError(f"{path}: no such file")
    payload = safe_torch_load(path, "not a readable bnhw checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise BnhwError(f"{path}: not a bnhw checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise BnhwError(f"{path}: unsupported checkpoint version {payload.get('version')!r} "
                        f"(this bnhw reads {CHECKPOINT_VERSION})")
    for key, kind in (("spec", dict), ("weight_norm", bool), ("state_dict", dict), ("extra", dict)):
        if not isinstance(payload.get(key), kind):
            raise BnhwError(f"{path}: malformed bnhw checkpoint (bad or missing {key!r})")
    if not all(isinstance(v, Tensor) for v in payload["state_dict"].values()):
        raise BnhwError(f"{path}: malformed bnhw checkpoint (non-tensor weights)")
    return payload


def _open(path: Path) -> tuple[NetworkSpec, dict[str, Tensor], dict[str, Any], bool]:
    payload = _read(path)
    from ..spec.protocol import spec_from_dict

    try:
        # structural validation only: a saved network stays loadable if its space changes
        spec = spec_from_dict(payload["spec"], check_space=False)
    except SpecError as e:
        raise SpecError(e.field, f"{e.reason} (in {path})") from None
    return spec, payload["state_dict"], payload["extra"], payload["weight_norm"]


def load_checkpoint(path: str | os.PathLike) -> tuple[NetworkSpec, dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint: ``(spec, state_dict, extra)``."""
    spec, state, extra, _ = _open(Path(path))
    return spec, state, extra


def load_weights(model: NetT, state_dict: dict[str, Tensor], *, source: str = "checkpoint") -> NetT:
    """Load ``state_dict`` into ``model`` strictly; a mismatch raises a one-line :class:`BnhwError`."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with the wrong shape (e.g. {k}: spec needs "
                         f"{tuple(own[k].shape)}, {source} has {tuple(state_dict[k].shape)})")
        raise BnhwError(f"{source}: weights do not fit the spec: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)
    return model


def load_model(path_or_spec: NetworkSpec | str | os.PathLike,
               checkpoint: str | os.PathLike | None = None, *,
               weight_norm: bool | None = None) -> Network:
    """Build a :class:`BinaryNet` (eval mode) and optionally load weights into it (a
    :class:`~bnhw.quant.cellnet.CellNet` for a cell-network spec or checkpoint).

    ``path_or_spec`` is an :class:`ArchSpec`; a spec file (``*.json``); a
    checkpoint file (any other existing file, or a path with another suffix:
    its spec and weights are used); or else a bundled spec name (see
    :func:`bnhw.spec.load_spec`).  ``checkpoint``, if given, is a checkpoint
    whose weights are loaded into the network built from ``path_or_spec``
    (whose precision may differ from the one the weights were trained with;
    the weights must fit).  ``weight_norm`` defaults to the checkpoint's
    setting, or on without a checkpoint.
    """
    weights: tuple[Path, dict[str, Tensor], bool] | None = None
    if isinstance(path_or_spec, NetworkSpec):
        spec = path_or_spec
    else:
        p = Path(path_or_spec)
        if p.suffix.lower() == ".json" or not (p.suffix or p.exists()):
            spec = load_spec(p)
        else:
            spec, state, _, saved_norm = _open(p)
            weights = (p, state, saved_norm)
    if checkpoint is not None:
        p = Path(checkpoint)
        _, state, _, saved_norm = _open(p)
        weights = (p, state, saved_norm)
    if weight_norm is None:
        weight_norm = True if weights is None else weights[2]
    model = build_network(spec, weight_norm=weight_norm)
    if weights is not None:
        load_weights(model, weights[1], source=str(weights[0]))
    return model.eval()
