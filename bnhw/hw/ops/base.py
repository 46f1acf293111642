"""The op protocol and its registry (one :class:`HwOp` subclass per module of :mod:`bnhw.hw.ops`).

An op states once what every part of bnhw needs to know about it: its reference integer execution,
the value range of its internal arithmetic, its legal foldings, and its cycle / resource models
(FINN's, through the FINN custom ops it maps to).  Lowering, estimation, folding, the cycle simulator,
the HLS generator and the CPU program ask the registry (:func:`get_op`) and derive none of it again;
a back end that implements an op keeps its own emitter in a table keyed by the op's name, and
``tests/test_hw_ops.py`` checks every table against the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar, TypeVar

import numpy as np

from ..finn_models import FinnOp, Resources, op_cycles, op_resources
from ..ir import HwGraph, IRError, Node

__all__ = ["HwOp", "ChannelwiseOp", "register", "unregister", "backend_unit", "get_op", "op_names", "divisors",
           "finn_stream_dt", "finn_activation", "is_xnor",
           "border_corrected", "padding_correction"]

_REGISTRY: dict[str, HwOp] = {}
T = TypeVar("T")


def divisors(num: int) -> list[int]:
    """Divisors of ``num``, ascending (FINN's legal PE / SIMD values of a dimension)."""
    return [x for x in range(1, num + 1) if num % x == 0]


def is_xnor(g: HwGraph, n: Node) -> bool:
    """Whether MVAU ``n`` is an XNOR-popcount layer: bipolar weights on a bipolar input."""
    if "binary_xnor" in n.attrs:
        return bool(n.attrs["binary_xnor"])
    w = n.params.get("weights")
    return bool(g.in_stream(n).dtype.is_bipolar and w is not None and np.all(np.abs(w) == 1))


def border_corrected(g: HwGraph, n: Node) -> bool:
    """Whether XNOR MVAU ``n`` reads a zero-padded window and the border's error is corrected downstream, so
    FINN keeps it an XNOR unit: FINN pads a bipolar stream with bit 0 (= -1), which adds ``-sum(w)`` over the
    padding taps to the accumulator; when the MVAU has no activation and its one consumer is an AddRequant
    (its first input), that unit adds the sum back per output position (:func:`padding_correction`)."""
    if n.op != "MVAU" or "thresholds" in n.params or not is_xnor(g, n):
        return False
    swg = g.producer(n.inputs[0])
    if swg is None or swg.op != "SWG" or int(swg.attrs.get("pad", 0)) <= 0 or int(swg.attrs.get("pad_value", 0)):
        return False
    if int(n.attrs.get("groups", 1)) > 1 and int(n.attrs.get("groups", 1)) == int(n.attrs.get("channels", 0)) \
            and g.out_stream(n).channels == int(n.attrs["groups"]):
        return False                             # depthwise: FINN's VVAU, no AddRequant correction modelled
    cons = g.consumers(n.outputs[0])
    return len(cons) == 1 and cons[0].op == "AddRequant" and cons[0].inputs[0] == n.outputs[0]


def _pad_sets(n_out: int, n_in: int, k: int, stride: int, pad: int, dil: int) -> list[tuple[int, ...]]:
    """Per output row (column): the kernel rows (columns) that fall on the zero padding."""
    return [tuple(kk for kk in range(k) if not 0 <= o * stride - pad + kk * dil < n_in) for o in range(n_out)]


def padding_correction(g: HwGraph, n: Node) -> tuple[list[int], list[int], np.ndarray] | None:
    """For AddRequant ``n`` behind a border-corrected MVAU (:func:`border_corrected`): ``(row class per output row,
    column class per output column, table[row class, column class, channel])``, the sum of the MVAU's weights
    over the taps that fall on the padding at that position (what FINN's -1 padding took away).  A unit graph
    carries it as parameter ``border`` and attributes ``border_rows`` / ``border_cols``.  ``None``: no
    correction."""
    if "border" in n.params:
        return list(n.attrs["border_rows"]), list(n.attrs["border_cols"]), np.asarray(n.params["border"], np.int64)
    m = g.producer(n.inputs[0])
    if m is None or not border_corrected(g, m):
        return None
    swg = g.producer(m.inputs[0])
    assert swg is not None
    H, W, C = g.in_stream(swg).shape
    Ho, Wo, MH = g.out_stream(m).shape
    k, stride = int(swg.attrs["k"]), int(swg.attrs.get("stride", 1))
    pad, dil = int(swg.attrs.get("pad", 0)), int(swg.attrs.get("dilation", 1))
    w = np.asarray(m.params["weights"], dtype=np.int64)             # (MH, k*k*C // groups)
    per_tap = w.reshape(MH, k * k, -1).sum(axis=2)                    # (MH, taps)
    rsets, csets = _pad_sets(Ho, H, k, stride, pad, dil), _pad_sets(Wo, W, k, stride, pad, dil)
    rkeys, ckeys = sorted(set(rsets)), sorted(set(csets))
    table = np.zeros((len(rkeys), len(ckeys), MH), dtype=np.int64)
    for i, rs in enumerate(rkeys):
        for j, cs in enumerate(ckeys):
            taps = [ky * k + kx for ky in range(k) for kx in range(k) if ky in rs or kx in cs]
            table[i, j] = per_tap[:, taps].sum(axis=1) if taps else 0
    return [rkeys.index(r) for r in rsets], [ckeys.index(c) for c in csets], table


def finn_stream_dt(g: HwGraph, stream: str) -> str:
    """The FINN datatype stream ``stream`` has in the graph bnhw hands to FINN.  Integer streams keep their
    type.  A bipolar stream that XNOR units read travels as ``BINARY`` (bit 1 = +1), as in FINN's own flow,
    zero-padded windows included where the border is corrected downstream (:func:`border_corrected`); one that
    other units read as ``BIPOLAR``; and a zero-padded window without that correction (and the stream it is
    made from) as ``TERNARY`` (2 bits: -1 / 0 / +1): a padding tap holds 0, which one bit cannot hold (FINN's
    1-bit encoding pads with -1 and would silently change every border pixel), so the MVAU it feeds multiplies
    a 2-bit input by its bipolar weights instead of XNOR-ing."""
    fixed = g.meta.get("finn_dtypes", {}).get(stream)       # a unit graph knows its neighbours' choice
    if fixed:
        return str(fixed)
    t = g.streams[stream].dtype
    if not t.is_bipolar:
        return t.finn_name()
    p = g.producer(stream)
    if p is not None and p.op == "Duplicate":       # every copy travels as its input does (FINN's
        return finn_stream_dt(g, p.inputs[0])       # DuplicateStreams has one type)
    return _bipolar_dt(g, stream)


#: FINN types of a bipolar stream, the one its readers need most last
_BIPOLAR_DTS = ("BINARY", "BIPOLAR", "TERNARY")


def _bipolar_dt(g: HwGraph, stream: str) -> str:
    """The FINN type bipolar ``stream``'s readers need: a ``Duplicate`` or a ``Gather`` (wiring) passes its input
    on, so the readers of its outputs decide; several readers take the widest of their types."""
    t = g.streams[stream].dtype
    cons = g.consumers(stream)
    if t.padded:
        return "BINARY" if cons and all(border_corrected(g, c) for c in cons) else "TERNARY"
    need = {"BINARY"}
    for c in cons:
        if c.op in ("Duplicate", "Gather"):
            need.update(_bipolar_dt(g, o) for o in c.outputs)
        elif c.op == "SWG":
            if finn_stream_dt(g, c.outputs[0]) != "BINARY":
                need.add("TERNARY" if int(c.attrs.get("pad", 0)) > 0 else "BIPOLAR")
        elif c.op != "MVAU" or not is_xnor(g, c):
            need.add("BIPOLAR")
    return max(need, key=_BIPOLAR_DTS.index)


def finn_activation(g: HwGraph, n: Node, thresholds: np.ndarray) -> tuple[np.ndarray, int, str]:
    """``(thresholds, ActVal, outputDataType)`` of FINN's multi-threshold activation equal to ``n``'s
    (:func:`~bnhw.hw.ir.threshold_out` with ``out_bias`` / ``out_scale``): a bipolar output (scale 2, bias -1)
    becomes a BINARY count (ActVal 0) or, for a TERNARY stream, the count of every threshold taken twice minus
    one; an integer output is the count plus ``out_bias`` (FINN's units have no output scale: the
    exporter refuses ``out_scale != 1`` on an integer output)."""
    odt = finn_stream_dt(g, n.outputs[0])
    t = np.asarray(thresholds, dtype=np.int64)
    bias = int(n.attrs.get("out_bias", 0))
    if odt == "BINARY":
        return t, 0, odt
    if odt == "BIPOLAR":                     # FINN maps the count to -1 / +1 itself
        return t, 0, odt
    if odt == "TERNARY":
        return np.repeat(t, 2, axis=1), -1, odt
    return t, bias, odt          # an output scale != 1 has no FINN attribute (see finn_export)


class HwOp:
    """One IR op.  Subclasses set the class attributes and override what applies; every method takes
    the graph and the node (an op instance holds no state: one instance serves every node)."""

    #: the IR op name (``Node.op``)
    name: ClassVar[str] = ""
    #: node-name prefix (finn-plus 1.6.1's op type after ``specialize_layers`` where FINN has the unit,
    #: so FINN folding configs apply as they are; nodes are named ``{finn_name}_{i}``)
    finn_name: ClassVar[str] = ""
    #: carries a PE folding attribute (listed in the folding config)
    foldable: ClassVar[bool] = True
    #: carries a SIMD folding attribute too
    folds_simd: ClassVar[bool] = False
    #: one line per model: which finn-plus formula is used and what bnhw assumes (key: op or variant)
    notes: ClassVar[dict[str, str]] = {}
    #: its output stream's words hold PE elements (an MVAU's PE neurons, a channel-wise unit's PE channels)
    pe_words_out: ClassVar[bool] = False
    #: a channel-wise unit whose input words hold PE elements and whose PE may follow its producer's (no
    #: folding config sets it apart from bnhw's)
    follows_producer: ClassVar[bool] = False

    # ------------------------------------------------------------- semantics
    def execute(self, g: HwGraph, n: Node, ins: list[np.ndarray]) -> list[np.ndarray]:
        """The reference semantics: int64 arrays in, one array per output stream out."""
        raise NotImplementedError(self.name)

    def value_range(self, g: HwGraph, n: Node) -> tuple[int, int] | None:
        """The range of the op's internal arithmetic before any activation / rounding / clipping
        (an MVAU's accumulator, AddRequant's and RPReLU's pre-shift sum); ``None``: no such value."""
        return None

    # ------------------------------------------------------------- folding
    def legal_pe(self, g: HwGraph, n: Node) -> list[int]:
        """PE values FINN accepts for the op."""
        return [1]

    def legal_simd(self, g: HwGraph, n: Node) -> list[int]:
        """SIMD values FINN accepts for the op."""
        return [1]

    def buildable(self, g: HwGraph, n: Node, pe: int, simd: int) -> bool:
        """Whether bnhw's units implement the op at (``pe``, ``simd``) beyond FINN's divisibility rules."""
        return True

    def multiplier(self, g: HwGraph, n: Node) -> tuple[int, int] | None:
        """The operand widths of the one multiplier per PE that the folding may put in LUTs or in DSP slices
        (attribute ``mul_dsp``, which the op's resources and HLS code honour); ``None``: no such choice."""
        return None

    def foldings(self, g: HwGraph, n: Node) -> list[tuple[int, int]]:
        """Every (PE, SIMD) the op may be folded to."""
        simds = self.legal_simd(g, n) if self.folds_simd else [1]
        return [(p, s) for p in self.legal_pe(g, n) for s in simds if self.buildable(g, n, p, s)]

    def folding_error(self, g: HwGraph, n: Node, check_units: bool = True) -> str | None:
        """Why ``n``'s current folding is not allowed (``None``: it is); FINN's rules only unless
        ``check_units`` (then also :meth:`buildable`)."""
        pes = self.legal_pe(g, n)
        if n.pe not in pes:
            return f"{n.name}: PE={n.pe} is not allowed (choose from {pes})"
        if self.folds_simd:
            simds = self.legal_simd(g, n)
            if n.simd not in simds:
                return f"{n.name}: SIMD={n.simd} is not allowed (choose from {simds})"
        if check_units and not self.buildable(g, n, n.pe, n.simd):
            return f"{n.name}: {self.name} at PE={n.pe}, SIMD={n.simd}: {self.unbuildable_why(g, n)}"
        return None

    def finn_folding(self, n: Node) -> dict[str, int]:
        """The node's folding as FINN's node attributes (a folding-config entry FINN's
        ``ApplyConfig`` accepts)."""
        d = {"PE": n.pe}
        if self.folds_simd:
            d["SIMD"] = n.simd
        return d

    def unbuildable_why(self, g: HwGraph, n: Node) -> str:
        return "not implemented at this folding"

    # ------------------------------------------------------------- models
    def finn_ops(self, g: HwGraph, n: Node) -> list[FinnOp]:
        """The FINN custom op(s) equivalent to ``n`` at its folding (``[]``: FINN has none)."""
        return []

    def finn_op_type(self, g: HwGraph, n: Node) -> str:
        """The FINN op type the node maps to (the main one of a composite)."""
        ops = self.finn_ops(g, n)
        main = [o for o in ops if o.role == "main"] or ops
        return main[-1].op_type if main else f"bnhw_{self.name}"

    def cycles(self, g: HwGraph, n: Node) -> int:
        """FINN ``get_exp_cycles`` (the slowest part of a composite: its parts run as a pipeline)."""
        ops = self.finn_ops(g, n)
        return max((op_cycles(o) for o in ops), default=0)

    def resources(self, g: HwGraph, n: Node) -> Resources:
        """FINN's resource estimates (summed over a composite's parts)."""
        return sum((op_resources(o) for o in self.finn_ops(g, n)), Resources.zero())


class ChannelwiseOp(HwOp):
    """An op that processes PE channels of one pixel per cycle (PE: divisors of the input channels)."""

    def legal_pe(self, g: HwGraph, n: Node) -> list[int]:
        return divisors(g.in_stream(n).channels)


def register(cls: type[HwOp]) -> type[HwOp]:
    """Class decorator: add one instance of ``cls`` to the registry under ``cls.name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"op {cls.name!r}: empty or registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    """Remove op ``name`` (for tests that register a temporary op)."""
    _REGISTRY.pop(name, None)


def backend_unit(table: Mapping[str, T], n: Node, backend: str, error: Callable[[str], Exception] = IRError) -> T:
    """The unit a back end's ``table`` (keyed by op name) has for node ``n``; ``error`` with one line naming
    the node, the back end and the op when it has none."""
    unit = table.get(n.op)
    if unit is None:
        raise error(f"{n.name}: {backend} has no unit for op {n.op!r}")
    return unit


def get_op(name: str) -> HwOp:
    """The registered op ``name`` (:class:`~bnhw.hw.ir.IRError` naming it when there is none)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise IRError(f"unknown op {name!r} (registered: {', '.join(_REGISTRY)})") from None


def op_names() -> tuple[str, ...]:
    """Every registered op name, in registration order."""
    return tuple(_REGISTRY)
