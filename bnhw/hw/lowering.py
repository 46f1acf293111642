"""The lowering of each spec kind's Brevitas model to the hardware IR (:func:`lower_model`): NAS-BNN block nets
by :mod:`.lower_binarynet`, BNAS v2 / BARS cell nets by :mod:`.lower_cellnet` (both need a fixed-point model)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .ir import HwGraph
from .lower_binarynet import lower_binarynet
from .lower_cellnet import lower_cellnet

__all__ = ["LOWERINGS", "lower_model"]

#: spec kind -> the lowering of its model (see bnhw.spec.protocol)
LOWERINGS: dict[str, Callable[[Any], HwGraph]] = {"blocks": lower_binarynet, "cells": lower_cellnet}


def lower_model(model: Any) -> HwGraph:
    """The hardware IR of a fixed-point model of any spec kind (``model.spec.kind``)."""
    return LOWERINGS[model.spec.kind](model)
