"""The hardware IR: one integer dataflow graph shared by every hardware part of bnhw.

A :class:`HwGraph` is what the FPGA build folds and estimates, what the HLS
code generator emits, what the cycle simulator (later) steps through and what
the CPU kernels (later) execute.  It is produced once from a network (the
lowering passes in :mod:`bnhw.hw.lower`) and never re-derived from ONNX by a
consumer.

Conventions
-----------
* Every tensor is a stream of integers in **HWC order** (a feature map
  ``(H, W, C)``; a vector is ``(1, 1, C)``).  Batch size is 1.
* :class:`DType` is the element type of a stream: ``bipolar`` elements are
  ``-1`` / ``+1`` (one bit in hardware: bit 1 = +1, FINN's convention),
  (a window stream of a zero-padded convolution is ``bipolar`` with
  ``padded=True`` and holds 0 at the padding taps), ``int`` elements are
  two's-complement (``signed``) or unsigned integers
  of ``bits`` bits.  A ``scale`` records the real value of one integer step
  (``2**-frac`` for fixed point), for reports and checks only: the graph is
  integer arithmetic throughout.
* Nodes are kept in topological order; every node names its input and
  output streams.  ``HwGraph.execute`` (numpy, int64) is the **reference
  semantics** of every node: the HLS C simulation, the cycle simulator and
  the CPU kernels are all checked against it, and it is checked against
  QONNX execution of the exported network.
* Folding (``pe``, ``simd``) is an attribute of the compute nodes; the
  folding passes return new graphs (``HwGraph.with_folding``), in the
  qonnx "model in, model out" style.

Node kinds (``Node.op``)
------------------------
Each op is one module of :mod:`bnhw.hw.ops` that registers it and states its semantics (the
reference execution used here), value ranges, legal foldings and cost models: ``SWG``, ``MVAU``,
``Thresholding``, ``MaxPool``, ``AvgPoolSum``, ``GlobalAvgPool``, ``Gather``, ``Duplicate``,
``AddRequant``, ``RPReLU``, ``LabelSelect``.  The helpers every op shares (round half to even,
the multi-threshold activation, per-channel parameters) are defined here.

Every node also carries ``name`` (unique; FINN-style, e.g. ``MVAU_3``) and
``layer`` (the network layer it came from, for reports).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DType", "HwGraph", "Node", "Stream", "IRError", "json_default", "round_half_even_shift",
    "round_half_even_div", "threshold_out", "per_channel",
]


class IRError(ValueError):
    """A malformed hardware graph (a lowering bug, never user input)."""


def _op(name: str):
    """The registered op ``name`` (the registry, :mod:`bnhw.hw.ops`, is built on these types, so it is
    imported when first needed)."""
    from .ops import get_op

    return get_op(name)


@dataclass(frozen=True)
class DType:
    """Element type of a stream: ``bipolar`` or a ``bits``-bit (un)signed integer."""

    kind: str = "int"          # "int" | "bipolar"
    bits: int = 32
    signed: bool = True
    scale: float = 1.0         # real value of one integer step (reports only)
    padded: bool = False       # bipolar only: may also hold 0 (zero padding of an SWG)

    @staticmethod
    def bipolar(padded: bool = False) -> DType:
        """+-1 elements; ``padded``: a window stream whose zero-padding taps hold 0."""
        return DType("bipolar", 1, True, 1.0, padded)

    @staticmethod
    def int_(bits: int, signed: bool = True, scale: float = 1.0) -> DType:
        return DType("int", int(bits), bool(signed), float(scale))

    @property
    def is_bipolar(self) -> bool:
        return self.kind == "bipolar"

    @property
    def min(self) -> int:
        if self.is_bipolar:
            return -1
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        if self.is_bipolar:
            return 1
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def finn_name(self) -> str:
        """The FINN / qonnx DataType name (``BIPOLAR``, ``INT8``, ``UINT4``)."""
        if self.is_bipolar:
            return "BIPOLAR"
        return f"{'INT' if self.signed else 'UINT'}{self.bits}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> DType:
        return DType(**d)

    @staticmethod
    def for_range(lo: int, hi: int, scale: float = 1.0) -> DType:
        """The narrowest integer type holding every value in ``[lo, hi]``."""
        signed = lo < 0
        bits = 1
        while True:
            t = DType.int_(bits, signed, scale)
            if t.min <= lo and hi <= t.max:
                return t
            bits += 1


@dataclass(frozen=True)
class Stream:
    """A named stream: a tensor of ``shape`` (H, W, C) with element type ``dtype``."""

    name: str
    shape: tuple[int, int, int]
    dtype: DType

    @property
    def elems(self) -> int:
        return int(np.prod(self.shape))

    @property
    def channels(self) -> int:
        return self.shape[-1]

    @property
    def pixels(self) -> int:
        return self.shape[0] * self.shape[1]

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype.to_dict()}


@dataclass
class Node:
    """One hardware unit.  ``attrs`` are plain numbers; ``params`` numpy arrays."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    layer: str = ""

    @property
    def pe(self) -> int:
        return int(self.attrs.get("pe", 1))

    @property
    def simd(self) -> int:
        return int(self.attrs.get("simd", 1))

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)


def hwc(shape: Any) -> tuple[int, int, int]:
    """A stream shape ``(H, W, C)`` as three Python ints (a shape of another length is an error)."""
    h, w, c = (int(v) for v in shape)
    return (h, w, c)


def round_half_even_div(num: np.ndarray, den: int | np.ndarray) -> np.ndarray:
    """``round_half_even(num / den)`` for integer arrays and a positive integer ``den`` (or an array of them,
    broadcast), exactly."""
    num = np.asarray(num, dtype=np.int64)
    q = np.floor_divide(num, den)
    r = num - q * den                      # 0 <= r < den
    twice = 2 * r
    up = (twice > den) | ((twice == den) & (q % 2 == 1))
    return q + up.astype(np.int64)


def round_half_even_shift(num: np.ndarray, shift: int) -> np.ndarray:
    """``round_half_even(num / 2**shift)`` (``shift <= 0`` multiplies)."""
    num = np.asarray(num, dtype=np.int64)
    if shift <= 0:
        return num << (-shift)
    return round_half_even_div(num, 1 << shift)


def per_channel(n: Node, key: str, c: int) -> np.ndarray:
    """Parameter ``key`` of ``n`` as one int64 value per channel (a scalar is broadcast)."""
    v = np.asarray(n.params[key], dtype=np.int64).reshape(-1)
    if v.size == 1:
        v = np.repeat(v, c)
    if v.size != c:
        raise IRError(f"{n.name}: parameter {key!r} has {v.size} entries for {c} channels")
    return v


def threshold_out(acc: np.ndarray, thresholds: np.ndarray, out_bias: int, out_scale: int = 1) -> np.ndarray:
    """Multi-threshold activation: ``out_scale * sum_i (acc >= T[c, i]) + out_bias`` (channel last)."""
    t = np.asarray(thresholds, dtype=np.int64)
    cnt = (np.asarray(acc, dtype=np.int64)[..., None] >= t).sum(axis=-1)
    return out_scale * cnt + out_bias


class HwGraph:
    """Integer dataflow graph: streams, nodes in topological order, one input, one output."""

    def __init__(self, name: str, streams: Mapping[str, Stream], nodes: list[Node],
                 input: str, output: str, meta: Mapping[str, Any] | None = None):
        self.name = name
        self.streams = dict(streams)
        self.nodes = list(nodes)
        self.input = input
        self.output = output
        self.meta = dict(meta or {})
        self.check()

    # ------------------------------------------------------------- structure
    def check(self) -> None:
        """Raise :class:`IRError` unless every stream is produced once, before it is used."""
        if self.input not in self.streams:
            raise IRError(f"input stream {self.input!r} is not declared")
        produced = {self.input, *self.meta.get("extra_inputs", ())}
        names = set()
        for n in self.nodes:
            _op(n.op)                                    # IRError naming an unknown op
            if n.name in names:
                raise IRError(f"duplicate node name {n.name!r}")
            names.add(n.name)
            for s in n.inputs:
                if s not in produced:
                    raise IRError(f"{n.name}: input {s!r} used before it is produced")
            for s in n.outputs:
                if s not in self.streams:
                    raise IRError(f"{n.name}: output {s!r} is not declared")
                if s in produced:
                    raise IRError(f"{n.name}: stream {s!r} produced twice")
                produced.add(s)
        if self.output not in produced:
            raise IRError(f"output stream {self.output!r} is never produced")

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def producer(self, stream: str) -> Node | None:
        for n in self.nodes:
            if stream in n.outputs:
                return n
        return None

    def consumers(self, stream: str) -> list[Node]:
        return [n for n in self.nodes if stream in n.inputs]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def in_stream(self, node: Node, i: int = 0) -> Stream:
        return self.streams[node.inputs[i]]

    def out_stream(self, node: Node, i: int = 0) -> Stream:
        return self.streams[node.outputs[i]]

    # ------------------------------------------------------------- folding
    def folding(self) -> dict[str, dict[str, int]]:
        """``{node name: {"PE": .., "SIMD": ..}}`` for the foldable nodes (FINN's folding-config keys)."""
        out: dict[str, dict[str, int]] = {}
        for n in self.nodes:
            op = _op(n.op)
            if op.foldable:
                d = {"PE": n.pe}
                if op.folds_simd:
                    d["SIMD"] = n.simd
                for extra in ("pad_simd", "parallel_window", "mul_dsp"):   # SWG: its padding unit, window mode;
                    # elementwise units: their multiplier in DSP slices
                    if extra in n.attrs:
                        d[extra] = int(n.attrs[extra])
                out[n.name] = d
        return out

    def with_folding(self, folding: Mapping[str, Mapping[str, int]]) -> HwGraph:
        """A copy with ``pe`` / ``simd`` set from ``folding`` (unknown names are an error)."""
        g = self.copy()
        for name, cfg in folding.items():
            if name == "Defaults":
                continue
            try:
                n = g.node(name)
            except KeyError:
                raise IRError(f"folding names node {name!r}, which this graph does not have") from None
            for key, val in cfg.items():
                k = key.lower()
                if k in ("pe", "simd", "pad_simd", "parallel_window", "mul_dsp"):
                    n.attrs[k] = int(val)
        return g

    def truncated(self, output: str) -> HwGraph:
        """The subgraph that computes stream ``output`` (nodes not needed for it dropped)."""
        need = {output}
        keep: list[Node] = []
        for n in reversed(self.nodes):
            if any(o in need for o in n.outputs):
                keep.append(n)
                need.update(n.inputs)
        keep.reverse()
        # a Duplicate whose other outputs are no longer consumed still declares them
        used = {s for n in keep for s in n.inputs + n.outputs} | {self.input}
        streams = {k: v for k, v in self.streams.items() if k in used}
        return HwGraph(self.name, streams, [copy.deepcopy(n) for n in keep], self.input, output,
                       copy.deepcopy(self.meta))

    def is_output(self, stream: str) -> bool:
        """Whether ``stream`` is the network's output (a unit graph's output is not, unless it says so)."""
        return stream == self.output and not self.meta.get("output_is_internal", False)

    @staticmethod
    def unit(node: Node, streams: Mapping[str, Stream], last: bool = True) -> HwGraph:
        """The graph of one node on its own (a unit a back end builds separately): its first input is the graph
        input, any further inputs are extra inputs (``meta["extra_inputs"]``), its first output the output;
        ``last``: that output is the network's output too (:meth:`is_output`)."""
        need = {*node.inputs, *node.outputs}
        return HwGraph(node.name, {k: v for k, v in streams.items() if k in need}, [node], node.inputs[0],
                       node.outputs[0], {"extra_inputs": list(node.inputs[1:]), "output_is_internal": not last})

    def copy(self) -> HwGraph:
        return HwGraph(self.name, self.streams, [copy.deepcopy(n) for n in self.nodes],
                       self.input, self.output, copy.deepcopy(self.meta))

    # ------------------------------------------------------------- serialisation
    def to_dict(self, with_params: bool = False) -> dict:
        nodes = []
        for n in self.nodes:
            d = {"name": n.name, "op": n.op, "inputs": n.inputs, "outputs": n.outputs,
                 "attrs": n.attrs, "layer": n.layer,
                 "params": {k: (v.tolist() if with_params else list(v.shape)) for k, v in n.params.items()}}
            nodes.append(d)
        return {"name": self.name, "input": self.input, "output": self.output, "meta": self.meta,
                "streams": [s.to_dict() for s in self.streams.values()], "nodes": nodes}

    def save(self, path) -> None:
        """JSON (attributes) + ``.npz`` next to it (parameters)."""
        import io

        from ..spec import atomic_write_bytes, atomic_write_text
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, default=json_default))
        buf = io.BytesIO()
        arrays = {f"{n.name}/{k}": v for n in self.nodes for k, v in n.params.items()}
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds might name allow_pickle
        atomic_write_bytes(str(path) + ".npz", buf.getvalue())

    @staticmethod
    def load(path) -> HwGraph:
        d = json.loads(open(path).read())
        arrays = np.load(str(path) + ".npz")
        streams = {s["name"]: Stream(s["name"], tuple(s["shape"]), DType.from_dict(s["dtype"]))
                   for s in d["streams"]}
        nodes = []
        for nd in d["nodes"]:
            params = {k: arrays[f"{nd['name']}/{k}"] for k in nd["params"]}
            nodes.append(Node(nd["name"], nd["op"], nd["inputs"], nd["outputs"], nd["attrs"], params,
                              nd.get("layer", "")))
        return HwGraph(d["name"], streams, nodes, d["input"], d["output"], d.get("meta"))

    # ------------------------------------------------------------- the host's side of the input and output
    def input_integers(self, x: np.ndarray) -> np.ndarray:
        """The accelerator's input for float values ``x`` (``(..., H, W, C)`` in the input stream's layout):
        ``clip(round_half_even(x / scale))`` to the input type's range, ``scale`` being the input stream's (the
        network's input quantiser: 1/255 for 8-bit pixels, 2^-(b-1) for a b-bit fixed-point stem)."""
        t = self.streams[self.input].dtype
        inv = 1.0 / t.scale
        k = np.rint(np.asarray(x, dtype=np.float64) * (round(inv) if abs(inv - round(inv)) < 1e-9 else inv))
        return np.clip(k, t.min, t.max).astype(np.int64)

    def input_floats(self, ints: np.ndarray) -> np.ndarray:
        """The float values (float32) whose quantisation is ``ints``: ``ints * scale`` (the inverse of
        :meth:`input_integers` on its range)."""
        inv = 1.0 / self.streams[self.input].dtype.scale
        if abs(inv - round(inv)) < 1e-9:           # e.g. pixel / 255 in float32, as the exported models take it
            return np.asarray(ints, dtype=np.float32) / np.float32(round(inv))
        return (np.asarray(ints, dtype=np.float64) / inv).astype(np.float32)

    def logits(self, outputs: np.ndarray) -> np.ndarray | None:
        """Per image, the host's logits from the graph outputs ``(N, ...)``: ``acc * scale + bias`` where the
        graph ends in the classifier's accumulator (``meta["head"]``); None where it ends in a label."""
        head = self.meta.get("head")
        flat = np.asarray(outputs).reshape(len(outputs), -1)
        if head is not None:
            return flat.astype(np.float64) * np.asarray(head["scale"]) + np.asarray(head["bias"])
        return None if flat.shape[1] == 1 else flat.astype(np.float64)

    def labels(self, outputs: np.ndarray) -> np.ndarray:
        """Per image, the predicted class from the graph outputs ``(N, ...)`` (a LabelSelect's label, or the
        argmax of :meth:`logits`)."""
        lg = self.logits(outputs)
        return np.asarray(outputs).reshape(len(outputs), -1)[:, 0].astype(np.int64) if lg is None \
            else lg.argmax(1)

    # ------------------------------------------------------------- reference execution
    def execute(self, x: np.ndarray, *, return_all: bool = False):
        """Run the graph on one input ``(H, W, C)`` integer array (the reference semantics).

        Returns the output array, or with ``return_all`` a dict of every stream.
        Checks that every produced value fits its stream's declared type.
        """
        env: dict[str, np.ndarray] = {self.input: _check_range(np.asarray(x, dtype=np.int64),
                                                             self.streams[self.input])}
        for n in self.nodes:
            ins = [env[s] for s in n.inputs]
            outs = _op(n.op).execute(self, n, ins)
            for s, v in zip(n.outputs, outs):
                env[s] = _check_range(v, self.streams[s], n)
        return env if return_all else env[self.output]


def json_default(o: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars and arrays."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def _check_range(v: np.ndarray, s: Stream, node: Node | None = None) -> np.ndarray:
    v = np.asarray(v, dtype=np.int64)
    where = f"{node.name}: " if node else ""
    if v.shape != tuple(s.shape):
        raise IRError(f"{where}stream {s.name!r} has shape {v.shape}, declared {tuple(s.shape)}")
    if s.dtype.is_bipolar:
        ok = (np.abs(v) <= 1) if s.dtype.padded else (np.abs(v) == 1)
        if not np.all(ok):
            raise IRError(f"{where}stream {s.name!r} is bipolar but holds values other than +-1")
    elif v.size and (v.min() < s.dtype.min or v.max() > s.dtype.max):
        raise IRError(f"{where}stream {s.name!r} overflows {s.dtype.finn_name()}: "
                      f"range [{v.min()}, {v.max()}]")
    return v
