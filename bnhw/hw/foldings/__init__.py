"""finn-examples' folding configs of the reference networks, shipped with bnhw (see README.md here)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["REFERENCE_FOLDINGS", "load_reference_folding", "reference_folding_path"]

_HERE = Path(__file__).parent
REFERENCE_FOLDINGS = ("cnv-w1a1", "tfc-w1a1")


def reference_folding_path(network: str) -> Path:
    """The bundled finn-examples folding JSON of ``network`` (``cnv-w1a1`` or ``tfc-w1a1``)."""
    if network not in REFERENCE_FOLDINGS:
        raise KeyError(network)
    return _HERE / f"{network}.json"


def load_reference_folding(network: str) -> dict:
    return json.loads(reference_folding_path(network).read_text())
