"""What a NETWORK argument is, recognised by content, and which commands take which kind.

Every command that takes a network (``ops``, ``export``, ``train``,
``eval``, ``report``, ``build``, ``bench-cpu``, ``sim``) resolves its
argument here, once, before any work:

* :func:`identify` looks at the argument: a bundled name (``bnhw zoo``, or a
  reference network ``cnv-w1a1`` / ``tfc-w1a1``), a folder written by
  ``bnhw build``, or a file whose *content* decides its kind -- a JSON
  architecture spec, a JSON cell-network spec, a hardware graph
  (``hw_graph.json`` + ``.npz``), a QONNX or FINN-ONNX model (an ONNX
  protobuf; FINN's own operator domains make it FINN-ONNX), a ``.bnhwcpu``
  model file, or something bnhw recognises but cannot use as a network (a
  PyTorch checkpoint, a NumPy archive).  The extension is never trusted: an
  ONNX file named ``.json`` is still ONNX.
* :func:`resolve` checks the kind against what the command accepts and, if
  it does not, says so in one line naming the kind and what the command
  takes instead.

Nothing here builds models; :mod:`bnhw.flows.build` and friends consume the
:class:`NetworkInput`.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import BnhwError

__all__ = ["Kind", "NetworkInput", "identify", "resolve", "ACCEPTS", "load_onnx", "load_hw_graph"]


class Kind(StrEnum):
    """The kinds of network argument, with the words a message uses for them."""

    REFERENCE = "reference network"
    ZOO = "bundled architecture"
    SPEC = "architecture spec (JSON)"
    CELL_SPEC = "cell-network spec (JSON)"
    QONNX = "QONNX model"
    FINN_ONNX = "FINN-ONNX model"
    ONNX = "ONNX model without quantisers"
    HW_GRAPH = "hardware graph (hw_graph.json)"
    BUILD_DIR = "build folder"
    CPU_MODEL = "bnhw CPU model file (.bnhwcpu)"
    CHECKPOINT = "PyTorch checkpoint"
    NPZ = "NumPy archive"

#: which kinds each command takes (the order is the order of the "takes ..." hint)
ACCEPTS: dict[str, tuple[Kind, ...]] = {
    "ops": (Kind.ZOO, Kind.SPEC, Kind.CELL_SPEC),
    "export": (Kind.REFERENCE, Kind.ZOO, Kind.SPEC, Kind.CELL_SPEC),
    "train": (Kind.ZOO, Kind.SPEC, Kind.CELL_SPEC),
    "eval": (Kind.ZOO, Kind.SPEC, Kind.CELL_SPEC),
    "report": (Kind.ZOO, Kind.SPEC, Kind.CELL_SPEC),
    "build": (Kind.REFERENCE, Kind.ZOO, Kind.SPEC, Kind.CELL_SPEC, Kind.QONNX),
    "bench-cpu": (Kind.REFERENCE, Kind.ZOO, Kind.SPEC, Kind.CELL_SPEC, Kind.QONNX, Kind.HW_GRAPH,
                  Kind.BUILD_DIR, Kind.CPU_MODEL),
    "sim": (Kind.BUILD_DIR, Kind.HW_GRAPH),
    "run": (Kind.BUILD_DIR,),
}

#: why a kind a command does not take is refused, where there is more to say than the list
_ADVICE: dict[tuple[str, Kind], str] = {
    ("export", Kind.QONNX): "it is QONNX already",
    ("export", Kind.FINN_ONNX): "it is an ONNX model already",
    ("build", Kind.FINN_ONNX): "give the QONNX or FINN-ONNX (MultiThreshold) model before FINN made it dataflow nodes",
    ("bench-cpu", Kind.FINN_ONNX): "give the QONNX model FINN started from",
    ("sim", Kind.SPEC): "run `bnhw build` on it first",
    ("sim", Kind.ZOO): "run `bnhw build` on it first",
    ("sim", Kind.REFERENCE): "run `bnhw build` on it first",
    ("sim", Kind.QONNX): "run `bnhw build` on it first",
    ("run", Kind.SPEC): "run `bnhw build` on it first",
    ("run", Kind.ZOO): "run `bnhw build` on it first",
    ("run", Kind.REFERENCE): "run `bnhw build` on it first",
    ("run", Kind.QONNX): "run `bnhw build` on it first",
    ("run", Kind.HW_GRAPH): "give the build folder that holds it",
}


@dataclass
class NetworkInput:
    """A resolved NETWORK argument."""

    arg: str
    kind: Kind
    path: Path | None = None          # the file or folder (None for bundled names)
    spec: Any = None                  # ArchSpec / CellNetSpec for SPEC, CELL_SPEC and ZOO
    onnx_domains: tuple[str, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        """A name for messages and reports."""
        if self.spec is not None and getattr(self.spec, "name", None):
            return str(self.spec.name)
        if self.path is not None:
            return self.path.stem if self.path.is_file() else self.path.name
        return self.arg

    @property
    def graph_file(self) -> Path:
        """The hw_graph.json of a HW_GRAPH or BUILD_DIR input."""
        assert self.path is not None and self.kind in (Kind.HW_GRAPH, Kind.BUILD_DIR)
        return self.path / "hw_graph.json" if self.kind is Kind.BUILD_DIR else self.path


# ----------------------------------------------------------------------------- identification
_ONNX_HINT = ("(bnhw reads QONNX / FINN-ONNX protobufs, JSON specs, hw_graph.json, .bnhwcpu files and build "
              "folders)")


def identify(arg: str | Path, *, check_space: bool = True) -> NetworkInput:
    """The kind of ``arg``, by content; a spec (file or bundled) is loaded and validated."""
    from ..quant.reference_nets import REFERENCE_NETS
    from ..spec.zoo import ARCHS

    s = str(arg)
    p = Path(s)
    if p.is_dir():
        if (p / "hw_graph.json").is_file():
            return NetworkInput(s, Kind.BUILD_DIR, p)
        raise BnhwError(f"{s}: a folder without hw_graph.json (not a `bnhw build` folder)")
    if p.exists() and not p.is_file():
        raise BnhwError(f"{s}: not a regular file")
    if not p.exists():
        if s.lower() in REFERENCE_NETS:
            return NetworkInput(s.lower(), Kind.REFERENCE)
        if s in ARCHS:
            from ..spec.zoo import get_arch

            return NetworkInput(s, Kind.ZOO, spec=get_arch(s))
        known = ", ".join([*REFERENCE_NETS, *ARCHS])
        if p.suffix or "/" in s:
            raise BnhwError(f"{s}: no such file")
        raise BnhwError(f"{s!r} is neither a file nor a bundled network (known: {known})")
    try:
        head = p.read_bytes()
    except OSError as e:
        raise BnhwError(f"{s}: cannot read ({e.strerror})") from None
    return _identify_bytes(s, p, head, check_space)


def _identify_bytes(s: str, p: Path, data: bytes, check_space: bool) -> NetworkInput:
    if not data.strip():
        raise BnhwError(f"{s}: empty file")
    from ..hw.cpu.program import MAGIC

    if data.startswith(MAGIC):
        return NetworkInput(s, Kind.CPU_MODEL, p)
    if data.startswith(b"PK\x03\x04"):              # a zip: torch.save's format or numpy's .npz
        try:
            names = zipfile.ZipFile(p).namelist()
        except (zipfile.BadZipFile, OSError):
            raise BnhwError(f"{s}: a damaged zip archive, not a network {_ONNX_HINT}") from None
        kind = Kind.NPZ if names and all(n.endswith(".npy") for n in names) else Kind.CHECKPOINT
        return NetworkInput(s, kind, p)
    if data.lstrip()[:1] in (b"{", b"["):
        return _identify_json(s, p, data, check_space)
    return _identify_onnx(s, p, data)


def _identify_json(s: str, p: Path, data: bytes, check_space: bool) -> NetworkInput:
    from ..errors import SpecError

    try:
        d = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BnhwError(f"{s}: not UTF-8 text (a JSON spec is expected)") from None
    except json.JSONDecodeError as e:
        raise BnhwError(f"{s}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(d, dict):
        raise BnhwError(f"{s}: a JSON {type(d).__name__}, expected an object (an architecture spec)")
    if "nodes" in d or "streams" in d:             # keys no spec has
        return NetworkInput(s, Kind.HW_GRAPH, p)
    from ..spec.protocol import spec_from_dict

    try:
        spec = spec_from_dict(d, check_space=check_space)
        return NetworkInput(s, Kind.CELL_SPEC if spec.kind == "cells" else Kind.SPEC, p, spec=spec)
    except SpecError as e:
        raise SpecError(e.field, f"{e.reason} (in {s})") from None


def _identify_onnx(s: str, p: Path, data: bytes) -> NetworkInput:
    model = _parse_onnx(s, data)
    domains = tuple(sorted({n.domain for n in model.graph.node if n.domain}))
    if any(d.startswith("finn.") for d in domains):
        kind = Kind.FINN_ONNX
    elif any(n.op_type in ("Quant", "BipolarQuant", "Trunc", "MultiThreshold") for n in model.graph.node):
        kind = Kind.QONNX
    else:
        kind = Kind.ONNX
    return NetworkInput(s, kind, p, onnx_domains=domains)


def _parse_onnx(s: str, data: bytes):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError):
        raise BnhwError(f"{s}: not a network file {_ONNX_HINT}") from None
    if not model.graph.node or not model.graph.input or not model.graph.output:
        raise BnhwError(f"{s}: not a network file {_ONNX_HINT}")
    return model


def load_onnx(inp: NetworkInput):
    """The checked ``ModelWrapper`` of a QONNX / FINN-ONNX input (shapes inferred, one input and output)."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper

    assert inp.path is not None
    try:
        model = onnx.load_model_from_string(inp.path.read_bytes())   # by content: never by the file's extension
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 -- onnx raises many kinds; all mean a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BnhwError(f"{inp.arg}: invalid ONNX model ({first})") from None
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise BnhwError(f"{inp.arg}: {len(model.graph.input)} graph inputs and {len(model.graph.output)} outputs; "
                        "bnhw builds single-input, single-output networks")
    return ModelWrapper(model)


def load_hw_graph(inp: NetworkInput):
    """The :class:`~bnhw.hw.ir.HwGraph` of a HW_GRAPH / BUILD_DIR input; a damaged file is a one-line error."""
    from ..hw.ir import HwGraph

    path = inp.graph_file
    params = Path(str(path) + ".npz")
    if not params.is_file():
        raise BnhwError(f"{params}: missing (the graph's parameters, written next to {path.name} by `bnhw build`)")
    try:
        return HwGraph.load(path)
    except KeyError as e:
        raise BnhwError(f"{path}: not a complete bnhw hardware graph (no {e} in it or in {params.name})") from None
    except (OSError, ValueError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BnhwError(f"{path}: not a valid bnhw hardware graph ({first})") from None


def require_hardware(spec: Any, label: str, command: str, what: str) -> None:
    """One line refusing ``bnhw <command>`` for a network with operations the hardware IR cannot lower."""
    gaps = spec.hardware_gaps()
    if gaps:
        raise BnhwError(f"bnhw {command}: {label} is a {spec.kind.rstrip('s')} network whose {', '.join(gaps)} have no lowering "
                        f"to the hardware IR yet ({what})")


# ----------------------------------------------------------------------------- per command
def _takes(command: str) -> str:
    kinds = ACCEPTS[command]
    names = []
    for k in kinds:
        if k is Kind.ZOO:
            names.append("a `bnhw zoo` name")
        elif k is Kind.REFERENCE:
            names.append("cnv-w1a1 / tfc-w1a1")
        else:
            names.append(f"{'an' if str(k)[0].lower() in 'aeiou' else 'a'} {k}")
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def resolve(arg: str | Path, command: str, *, check_space: bool = True) -> NetworkInput:
    """Identify ``arg`` and check that ``command`` takes its kind (one-line error otherwise)."""
    inp = identify(arg, check_space=check_space)
    if inp.kind not in ACCEPTS[command]:
        advice = _ADVICE.get((command, inp.kind))
        article = "an" if str(inp.kind)[0].lower() in "aeiou" else "a"
        raise BnhwError(f"{inp.arg} is {article} {inp.kind}; `bnhw {command}` takes {_takes(command)}"
                        + (f" ({advice})" if advice else ""))
    return inp
