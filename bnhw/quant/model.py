"""Brevitas networks built from an :class:`~bnhw.spec.ArchSpec`.

:func:`build_model` turns any valid spec into a :class:`BinaryNet`::

    stem (input quant, stem_bits conv, BN)  ->  one BinaryBlock per spec block
      ->  Classifier (global average pool, Linear)

See :mod:`bnhw.quant.layers` for the blocks and for where the fixed-point
quantisers sit in ``residual="fixed"`` mode.  :func:`recalibrate_bn`
re-estimates the batch-norm statistics on data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias, overload

import torch
from torch import Tensor, nn

from ..spec import ArchSpec
from .layers import BinaryBlock, Classifier, Freezable, Stem, baked_state_dict

if TYPE_CHECKING:
    from ..spec.cells import CellNetSpec
    from ..spec.protocol import NetworkSpec
    from .cellnet import CellNet

#: a Brevitas network of either spec kind (both have ``spec`` and ``weight_norm``)
Network: TypeAlias = "BinaryNet | CellNet"

__all__ = ["BinaryNet", "baked_copy", "build_model", "build_network", "recalibrate_bn", "to_fixed"]


class BinaryNet(nn.Module):
    """A binary CNN described by ``spec`` (inputs: N x C x R x R floats in [-1, 1]).

    ``weight_norm`` switches the channel-wise weight normalisation of every
    binary conv's latent weights (NAS-BNN Eq. 6) on or off.  ``blocks[i]``
    corresponds to the i-th entry of ``spec.blocks()``.
    """

    def __init__(self, spec: ArchSpec, *, weight_norm: bool = True):
        super().__init__()
        self.spec = spec
        self.weight_norm = weight_norm
        p = spec.precision
        self.stem = Stem(spec.in_channels, spec.stem.channels, spec.stem.kernel, spec.stem.stride, p)
        self.blocks = nn.Sequential(*(
            BinaryBlock(g.in_channels, g.out_channels, g.block.kernel, g.block.groups,
                        g.block.stride, p, weight_norm=weight_norm)
            for g in spec.blocks()))
        self.classifier = Classifier(spec.final_channels, spec.num_classes, p)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.blocks(self.stem(x)))

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        """The input shape ``(batch, in_channels, resolution, resolution)``."""
        return (batch, self.spec.in_channels, self.spec.resolution, self.spec.resolution)


@overload
def build_model(spec: ArchSpec, *, weight_norm: bool = True) -> BinaryNet: ...
@overload
def build_model(spec: CellNetSpec, *, weight_norm: bool = True) -> CellNet: ...
@overload
def build_model(spec: NetworkSpec, *, weight_norm: bool = True) -> Network: ...
def build_model(spec: NetworkSpec, *, weight_norm: bool = True) -> Network:
    """A freshly initialised :class:`BinaryNet` for ``spec``, in eval mode (a
    :class:`~bnhw.quant.cellnet.CellNet` for a cell-network spec)."""
    return build_network(spec, weight_norm=weight_norm).eval()


@overload
def build_network(spec: ArchSpec, *, weight_norm: bool = True) -> BinaryNet: ...
@overload
def build_network(spec: CellNetSpec, *, weight_norm: bool = True) -> CellNet: ...
@overload
def build_network(spec: NetworkSpec, *, weight_norm: bool = True) -> Network: ...
def build_network(spec: NetworkSpec, *, weight_norm: bool = True) -> Network:
    """:class:`BinaryNet` for an :class:`ArchSpec`; for a :class:`~bnhw.spec.cells.CellNetSpec` a
    :class:`~bnhw.quant.cellnet.CellNet` (``weight_norm`` does not apply: cell nets use XNOR scaling)."""
    return MODEL_BUILDERS[spec.kind](spec, weight_norm)


def _cell_network(spec: Any, weight_norm: bool) -> CellNet:
    from .cellnet import CellNet

    return CellNet(spec)


#: spec kind -> its Brevitas network (see bnhw.spec.protocol)
MODEL_BUILDERS: dict[str, Callable[[Any, bool], Network]] = {"blocks": lambda spec, weight_norm: BinaryNet(spec, weight_norm=weight_norm),
                  "cells": _cell_network}


def baked_copy(model: BinaryNet) -> BinaryNet:
    """An independent eval-mode copy of ``model`` with its weight transforms baked in.

    The copy is built with ``weight_norm=False`` and holds the transformed
    latent weights as plain parameters (see :func:`~bnhw.quant.layers.baked_state_dict`),
    so it computes exactly what ``model`` computes while its graph has no
    weight-normalisation ops (what export needs).  Its batch-norm and RPReLU
    constants are evaluated once (``freeze``; the same tensors the forward
    pass computes), until it is switched to training mode.
    """
    copy = BinaryNet(model.spec, weight_norm=False)
    copy.load_state_dict(baked_state_dict(model))
    copy.eval()
    for m in copy.modules():      # constants evaluated once: the traced graph holds them directly
        if isinstance(m, Freezable):
            m.freeze()
    return copy


@overload
def to_fixed(model: BinaryNet) -> BinaryNet: ...
@overload
def to_fixed(model: CellNet) -> CellNet: ...
def to_fixed(model: Network) -> Network:
    """The same network in ``residual="fixed"`` mode with ``model``'s weights (eval mode); a
    :class:`BinaryNet` or a :class:`~bnhw.quant.cellnet.CellNet`.

    Post-training quantisation of a float-trained network: the spec's
    precision switches to fixed point (the other precision fields are kept),
    the weights and BN statistics are copied unchanged, and the fixed-mode
    quantisers and dyadic constants apply in the forward pass (see
    :mod:`bnhw.quant.layers`).  A fixed-mode model gives an equal copy.
    ``model`` itself is not modified.
    """
    spec = model.spec
    fixed = spec.replace(precision=dataclasses.replace(spec.precision, residual="fixed"))
    out = build_network(fixed, weight_norm=model.weight_norm)
    out.load_state_dict(model.state_dict())
    return out.eval()


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor | tuple | list],
                   max_batches: int | None = None) -> nn.Module:
    """Reset every batch norm's running statistics and re-estimate them on ``batches``.

    Each batch is an input tensor or a tuple/list whose first item is one.
    The statistics are a cumulative (equal-weight) average over the batches
    (``momentum=None`` while recalibrating).  The model's train/eval mode and
    the BN momenta are restored afterwards.  Returns ``model``; raises
    ``ValueError`` when ``batches`` is empty.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    was_training = model.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    seen = 0
    try:
        for batch in batches:
            if max_batches is not None and seen >= max_batches:
                break
            model(batch[0] if isinstance(batch, (tuple, list)) else batch)
            seen += 1
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        model.train(was_training)
    if not seen:
        raise ValueError("recalibrate_bn: no batches to estimate the statistics on")
    return model
