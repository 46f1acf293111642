"""What every consumer may ask of a network spec, whatever its kind.

Two kinds exist: NAS-BNN block networks (:class:`~bnhw.spec.arch.ArchSpec`, ``kind = "blocks"``) and
BNAS v2 / BARS cell networks (:class:`~bnhw.spec.cells.CellNetSpec`, ``kind = "cells"``).  Code that
works for any network takes a :class:`NetworkSpec` and branches, where it must, on ``spec.kind`` through
a table keyed by kind (e.g. :data:`bnhw.quant.model.MODEL_BUILDERS`), never on the class.  A third kind
is a new class with these members, a ``kind`` and a row in :data:`SPEC_KINDS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import SpecError

__all__ = ["NetworkSpec", "SPEC_KINDS", "spec_kind", "spec_from_dict"]


@runtime_checkable
class NetworkSpec(Protocol):
    """A validated, JSON-serialisable description of one network."""

    # read-only members: the specs are frozen dataclasses (and ``kind`` a class attribute)
    @property
    def kind(self) -> str:
        """``"blocks"`` | ``"cells"`` (a class attribute; written into the JSON of non-block kinds)."""
        ...

    @property
    def name(self) -> str: ...

    @property
    def resolution(self) -> int:
        """The nominal input size OPs are counted at."""
        ...

    @property
    def in_channels(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    def short(self) -> str:
        """A one-line human summary."""
        ...

    def to_dict(self) -> dict[str, Any]: ...

    def to_json(self, indent: int | None = 2) -> str: ...

    def save(self, path: str | os.PathLike[str]) -> Path: ...

    def replace(self, **changes: Any) -> NetworkSpec: ...

    def hardware_gaps(self) -> tuple[str, ...]:
        """The operations of this network that have no lowering to the hardware IR (empty: it builds)."""
        ...


def _blocks(d: Mapping[str, Any], check_space: bool) -> NetworkSpec:
    from .arch import ArchSpec

    return ArchSpec.from_dict(d, check_space=check_space)


def _cells(d: Mapping[str, Any], check_space: bool) -> NetworkSpec:
    from .cells import CellNetSpec

    return CellNetSpec.from_dict(d)


#: kind -> parser of its JSON object
SPEC_KINDS: dict[str, Callable[[Mapping[str, Any], bool], NetworkSpec]] = {"blocks": _blocks, "cells": _cells}


def spec_kind(d: Any) -> str:
    """The kind of a spec object or of its JSON dictionary (``"blocks"`` when it names none)."""
    if isinstance(d, Mapping):
        k = d.get("kind", "blocks")
        return k if isinstance(k, str) else repr(k)
    return str(getattr(d, "kind", "blocks"))


def spec_from_dict(d: Any, *, check_space: bool = True) -> NetworkSpec:
    """The spec of a JSON object, parsed by its ``kind``; an unknown kind names the field."""
    kind = spec_kind(d)
    parse = SPEC_KINDS.get(kind)
    if parse is None:
        raise SpecError("kind", f"unknown network kind {kind}; expected one of {', '.join(SPEC_KINDS)}")
    return parse(d, check_space)
