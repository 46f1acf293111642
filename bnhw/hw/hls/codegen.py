"""Vitis-HLS C++ for a folded :class:`~bnhw.hw.ir.HwGraph`.

:func:`render_project` turns a graph into the text of every file of an HLS
project (``{relative path: text}``); :func:`generate_project` writes them.

Layout of a generated project::

    firmware/bnhw_dataflow.h      templated streaming units (copied from bnhw/hw/hls/include)
    firmware/<top>.h              top-level signature, stream word types, frame sizes
    firmware/<top>.cpp            one streaming function per node + the DATAFLOW top
    firmware/params/<node>.h      weights / thresholds / per-channel constants, laid out per PE/SIMD
    tb/<top>_tb.cpp               testbench: int64 frames in, int64 frames out (optionally compared)
    build_csim.sh                 C simulation build with plain g++ and hls4ml's ap_types headers
    build_prj.tcl                 Vitis HLS: csynth + IP export
    README.md                     how to finish synthesis with vendor tools
    graph.json                    the graph's attributes (no parameters), for reference

Hardware conventions (see ``bnhw_dataflow.h`` for the C++ side):

* a stream word carries ``P`` elements, lane 0 in the least significant
  bits; ``P`` is the producer's PE (MVAU, elementwise units) or SIMD (SWG)
  and the consumer's SIMD / PE; where they differ a data width converter is
  inserted (FINN's ``StreamingDataWidthConverter``);
* bipolar elements are one bit (1 = +1);
* a zero-padded bipolar window stream (``DType.padded``) carries a *valid*
  plane: a word of ``P`` elements is ``2P`` bits, values in bits ``[0, P)``,
  valid flags in ``[P, 2P)``; the SWG clears the valid flag of padding taps
  and the XNOR-popcount MVAU masks them out
  (``acc = 2 * popcount(xnor & valid) - popcount(valid)``), which is exactly
  the reference's "padding taps contribute 0";
* accumulators and intermediate values are ``ap_int`` sized from the exact
  value bounds of the node (weights, parameters and the input type);
* words (streams and per-PE weight words, :func:`node_words`) may be wider than
  ap_int's default limit of 1024 bits: every generated source and header
  defines ``AP_INT_MAX_W`` (the widest word rounded up to a multiple of 1024)
  before its first ``#include <ap_int.h>``, ``build_csim.sh`` and
  ``build_prj.tcl`` pass the same ``-DAP_INT_MAX_W``, and ``bnhw_dataflow.h``
  stops a translation unit compiled with a smaller limit.  A word above
  :data:`HLS_MAX_WORD_BITS` (4096, the most Vitis HLS accepts) is an
  :class:`HLSError` naming the node; the folder (:mod:`bnhw.hw.folding`) never
  picks such a folding.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from ...errors import BnhwError
from ..ir import DType, HwGraph, Node, json_default, per_channel
from ..ops import backend_unit, folding_error, get_op

__all__ = ["Generator", "HLS_OPS", "ap_types_dir", "header_path", "DEFAULT_PART",
           "DEFAULT_CLOCK_NS", "HLSError", "node_words", "ap_int_max_w", "AP_INT_DEFAULT_W",
           "HLS_MAX_WORD_BITS", "word_bits"]

DEFAULT_PART = "xc7z020clg400-1"      # PYNQ-Z1 / Z2
DEFAULT_CLOCK_NS = 10.0
MAX_BITS = 62                         # widest accumulator / element the generator emits
AP_INT_DEFAULT_W = 1024               # ap_int's default AP_INT_MAX_W (ap_common.h)
#: the widest ap_uint word the generator emits: Vitis HLS lets AP_INT_MAX_W be raised to 4096 (UG1399)
HLS_MAX_WORD_BITS = 4096


class HLSError(BnhwError):
    """The graph cannot be turned into HLS code (e.g. a folding that does not divide a dimension)."""


def header_path() -> Path:
    """The templated unit library ``bnhw_dataflow.h`` shipped with bnhw."""
    return Path(__file__).with_name("include") / "bnhw_dataflow.h"


def ap_types_dir() -> Path:
    """Xilinx's open-source ``ap_int.h`` / ``hls_stream.h`` headers (shipped with hls4ml)."""
    try:
        import hls4ml
    except ImportError:  # pragma: no cover - hls4ml is a dependency of the venv
        raise HLSError("the ap_types headers come with hls4ml, which is not installed "
                       "(pip install hls4ml)") from None
    d = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
    if not (d / "ap_int.h").is_file():
        raise HLSError(f"hls4ml is installed but {d}/ap_int.h is missing")
    return d


# ----------------------------------------------------------------------------- small helpers
def c_ident(name: str) -> str:
    s = re.sub(r"\W", "_", str(name))
    if not s or s[0].isdigit():
        s = "n_" + s
    return s


def _sbits(lo: int, hi: int) -> int:
    """Bits of the narrowest two's-complement type holding ``[lo, hi]``."""
    lo, hi = int(min(lo, 0)), int(max(hi, 0))
    n = 1
    while not (-(1 << (n - 1)) <= lo and hi <= (1 << (n - 1)) - 1):
        n += 1
    return n


def _ap_int(lo: int, hi: int, margin: int = 0, at_least: int = 2, what: str = "") -> str:
    n = max(_sbits(lo, hi) + margin, at_least)
    if n > MAX_BITS:
        raise HLSError(f"{what}: needs a {n}-bit intermediate (range [{lo}, {hi}]), "
                       f"more than the {MAX_BITS} bits the HLS generator supports")
    return f"ap_int<{n}>"


def _etype(t: DType) -> str:
    """The C++ element type of a stream dtype."""
    if t.is_bipolar:
        return "bnhw::PaddedBipolar" if t.padded else "bnhw::Bipolar"
    if t.bits > MAX_BITS:
        raise HLSError(f"{t.finn_name()} streams are wider than the {MAX_BITS} bits the HLS generator supports")
    return f"bnhw::Int<{t.bits}, {'true' if t.signed else 'false'}>"


def _ebits(t: DType) -> int:
    if t.is_bipolar:
        return 2 if t.padded else 1
    return t.bits


def _word(t: DType, p: int) -> str:
    return f"ap_uint<{p * _ebits(t)}>"


#: the C++ element type and stream word type of a stream dtype (for harnesses around the generated code)
element_type = _etype
word_type = _word


def word_bits(t: DType, p: int) -> int:
    """The width of a stream word of ``p`` elements of type ``t`` (:data:`word_type`)."""
    return p * _ebits(t)


def ap_int_max_w(bits: int) -> int:
    """The ``AP_INT_MAX_W`` a design whose widest ``ap_uint`` is ``bits`` wide is compiled with:
    ap_int's default (1024) or ``bits`` rounded up to a multiple of 1024 (ap_int's own granularity)."""
    return max(AP_INT_DEFAULT_W, -(-int(bits) // 1024) * 1024)


def _weight_bits(n: Node) -> int:
    """Bits of one MVAU weight lane: 1 (XNOR) or the narrowest two's complement holding the weights (>= 2)."""
    if n.attrs.get("binary_xnor", False):
        return 1
    w = np.asarray(n.params["weights"], dtype=np.int64)
    return max(_sbits(int(w.min(initial=0)), int(w.max(initial=0))), 2)


def node_words(g: HwGraph, n: Node) -> list[tuple[str, int, str]]:
    """Every ``ap_uint`` word node ``n`` reads, writes or stores at its folding: ``(what, bits, knob)``
    with ``knob`` the attribute (``SIMD`` / ``PE``) that sets its width.

    Stream words are ``P`` elements of ``_ebits`` bits (a zero-padded bipolar window element is 2 bits);
    an MVAU's weight memory holds one ``SIMD x weight bits`` word per PE.  A Duplicate / Gather without a
    PE of its own passes its producer's words on (they are that producer's).
    """
    op = n.op
    ti, to = g.in_stream(n).dtype, g.out_stream(n).dtype

    def elems(p: int, t: DType) -> str:
        kind = "BIPOLAR+valid" if t.is_bipolar and t.padded else t.finn_name()     # zero-padded window taps
        return f"{p} x {_ebits(t)}-bit {kind}"

    if op in ("MVAU", "SWG"):
        s = n.simd
        words = [("input word", s * _ebits(ti), "SIMD", elems(s, ti))]
        if op == "SWG":
            words.append(("output word", s * _ebits(to), "SIMD", elems(s, to)))
        else:
            words.append(("output word", n.pe * _ebits(to), "PE", elems(n.pe, to)))
            wb = _weight_bits(n)
            words.append(("weight word", s * wb, "SIMD", f"{s} x {wb}-bit weights"))
    elif op == "LabelSelect":
        words = [("input word", n.pe * _ebits(ti), "PE", elems(n.pe, ti))]
    elif op in ("Duplicate", "Gather") and "pe" not in n.attrs:
        words = []
    else:
        p = n.pe
        words = [(f"input {i} word" if len(n.inputs) > 1 else "input word", p * _ebits(g.in_stream(n, i).dtype),
                  "PE", elems(p, g.in_stream(n, i).dtype)) for i in range(len(n.inputs))]
        words.append(("output word", (math.gcd(p, g.out_stream(n).channels) if op == "Gather" else p)
                      * _ebits(to), "PE", elems(p, to)))
    return [(f"{what} ({desc})", bits, knob) for what, bits, knob, desc in words]


def _lit(v: int) -> str:
    v = int(v)
    return f"{v}LL" if abs(v) >= (1 << 31) else str(v)


def _pod(bits: int, signed: bool) -> str:
    """The narrowest plain C integer type of at least ``bits`` bits (constants are stored in these)."""
    for n, t in ((8, "char"), (16, "short"), (32, "int"), (64, "long long")):
        if bits <= n:
            return f"{'signed' if signed else 'unsigned'} {t}" if t == "char" else (t if signed else f"unsigned {t}")
    raise HLSError(f"a {bits}-bit constant is wider than 64 bits")


def _sint_pod(lo: int, hi: int, what: str) -> str:
    n = _sbits(lo, hi)
    if n > MAX_BITS:
        raise HLSError(f"{what}: constant range [{lo}, {hi}] needs {n} bits")
    return _pod(n, True)


def _hex_word(value: int, width: int) -> str:
    if width <= 64:
        return f"0x{value:x}ULL"
    return f'ap_uint<{width}>("0x{value:x}", 16)'


def _pack_words(lanes: np.ndarray, lane_bits: int) -> list[int]:
    """``lanes[..., SIMD]`` of non-negative lane codes -> one Python int per word (lane 0 lowest)."""
    lanes = np.asarray(lanes, dtype=np.uint64)
    simd = lanes.shape[-1]
    flat = lanes.reshape(-1, simd)
    bits = ((flat[:, :, None] >> np.arange(lane_bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    bits = bits.reshape(flat.shape[0], simd * lane_bits)
    packed = np.packbits(bits, axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def _c_array(name: str, ctype: str, values: list[str], dims: tuple[int, ...], per_line: int = 8,
             scalar: bool = False) -> str:
    """``static const ctype name[d0][d1]... = {...};`` from a flat row-major value list.

    ``scalar``: ``name`` is one ``ctype`` aggregate whose only member is the array.
    """
    assert len(values) == int(np.prod(dims)), (name, len(values), dims)

    def nest(vals: list[str], ds: tuple[int, ...], indent: str) -> str:
        if len(ds) == 1:
            lines = [", ".join(vals[i:i + per_line]) for i in range(0, len(vals), per_line)]
            return "{" + (",\n" + indent + " ").join(lines) + "}"
        step = len(vals) // ds[0]
        inner = [nest(vals[i * step:(i + 1) * step], ds[1:], indent + " ") for i in range(ds[0])]
        if len(ds) == 2 and ds[1] <= 2:                 # short innermost rows: several per line
            lines = [", ".join(inner[i:i + per_line]) for i in range(0, len(inner), per_line)]
            return "{" + (",\n" + indent + " ").join(lines) + "}"
        return "{" + (",\n" + indent + " ").join(inner) + "}"

    if scalar:
        return f"static const {ctype} {name} = {{\n    {nest(values, dims, '    ')}}};\n"
    dim_s = "".join(f"[{d}]" for d in dims)
    return f"static const {ctype} {name}{dim_s} =\n    {nest(values, dims, '    ')};\n"


def _value_range(g: HwGraph, n: Node) -> tuple[int, int]:
    """The range of ``n``'s internal arithmetic, as its op states it."""
    r = get_op(n.op).value_range(g, n)
    if r is None:
        raise HLSError(f"{n.name}: op {n.op} states no internal value range")
    return r


def _pe_layout(v: np.ndarray, pe: int) -> np.ndarray:
    """Per-channel vector (C,) -> (PE, C/PE) with channel c = cf*PE + pe at [pe, cf]."""
    return np.asarray(v).reshape(-1, pe).T


# ----------------------------------------------------------------------------- the generator
class Generator:
    def __init__(self, g: HwGraph, top: str, interface: bool = True):
        self.g = g
        self.top = top
        #: the top function declares its ports' interfaces (AXI streams, ``ap_ctrl_hs``); ``False`` for a function
        #: another top calls (a FINN node's, :class:`bnhw.hw.finn_ops.IrUnit`), where Vitis HLS ignores them
        self.interface = interface
        self.funcs: list[str] = []          # node function definitions
        self.calls: list[str] = []          # statements of the top function body
        self.decls: list[str] = []          # internal stream declarations
        self.params: dict[str, str] = {}    # params/<file>.h -> text
        self.par: dict[str, int] = {}       # stream -> elements per word (at its producer)
        self.var: dict[str, str] = {}       # stream -> C++ variable at its producer
        self.names: set[str] = set()
        self.notes: list[str] = []
        self.extra: list[str] = []          # a unit's further input streams (ports in1, in2, ...)
        self.word_bits = 1                  # the widest ap_uint word of the design (streams, weights)

    # ------------------------------------------------------------ folding and stream widths
    def _in_par(self, n: Node, i: int) -> int:
        op = n.op
        if op in ("SWG", "MVAU"):
            return n.simd
        if op in ("Duplicate", "Gather"):
            if "pe" in n.attrs:
                return n.pe
            return self.par.get(n.inputs[i], 1)
        return n.pe

    def _out_par(self, n: Node, i: int) -> int:
        op = n.op
        if op == "SWG":
            return n.simd
        if op == "LabelSelect":
            return 1
        if op == "Duplicate":
            return self._in_par(n, 0)
        if op == "Gather":
            return math.gcd(self._in_par(n, 0), self.g.out_stream(n).channels)
        return n.pe

    def _unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def _stream_var(self, stream: str, p: int, suffix: str = "") -> str:
        t = self.g.streams[stream].dtype
        v = self._unique(f"s_{c_ident(stream)}{suffix}")
        self.decls.append(f"    BNHW_TIMING_STATIC hls::stream<{_word(t, p)}> {v}(\"{v}\");\n"
                          f"#pragma HLS STREAM variable={v} depth=2")
        return v

    def _input(self, n: Node, i: int) -> str:
        """The variable node ``n`` reads its ``i``-th input from (inserting a width converter)."""
        s = n.inputs[i]
        want = self._in_par(n, i)
        have = self.par[s]
        src = self.var[s]
        if have == want:
            return src
        st = self.g.streams[s]
        c = st.channels
        if c % have or c % want:
            raise HLSError(f"{n.name}: stream {s!r} has {c} channels, which {have} (producer) and "
                           f"{want} (consumer) elements per word must both divide")
        lcm = have * want // math.gcd(have, want)
        dst = self._stream_var(s, want, f"_w{want}")
        fn = self._unique(f"dwc_{c_ident(s)}_{have}_{want}")
        t = st.dtype
        self.funcs.append(
            f"// width converter for stream {s}: {have} -> {want} elements per word\n"
            f"static void {fn}(hls::stream<{_word(t, have)}> &in, hls::stream<{_word(t, want)}> &out) {{\n"
            f"#pragma HLS INLINE off\n"
            f"    bnhw::dwc<{st.elems}, {have}, {want}, {lcm}, {_etype(t)}>(in, out);\n}}\n")
        self.calls.append(f"    {fn}({src}, {dst});")
        return dst

    # ------------------------------------------------------------ driver
    def run(self) -> dict[str, str]:
        g = self.g
        consumers: dict[str, list[Node]] = {s: [] for s in g.streams}
        for n in g.nodes:
            for s in n.inputs:
                consumers[s].append(n)
        for s, cs in consumers.items():
            if len(cs) > 1:
                raise HLSError(f"stream {s!r} is read by {len(cs)} nodes ({', '.join(c.name for c in cs)}); "
                               "hardware streams have one reader: insert a Duplicate")
            if s == g.output and cs:
                raise HLSError(f"the output stream {s!r} is also read by {cs[0].name}")
        cin = consumers[g.input]
        self.in_par = self._in_par(cin[0], cin[0].inputs.index(g.input)) if cin else 1
        if cin and cin[0].op in ("Duplicate", "Gather") and "pe" not in cin[0].attrs:
            self.in_par = 1
        self.par[g.input] = self.in_par
        self.var[g.input] = "in"
        self.names.update({"in", "out"})
        # a unit on its own (HwGraph.unit) reads its further inputs from ports in1, in2, ...
        self.extra = list(g.meta.get("extra_inputs", ()))
        for i, s in enumerate(self.extra, 1):
            c = consumers[s][0]
            self.par[s] = self._in_par(c, c.inputs.index(s))
            self.var[s] = f"in{i}"
            self.names.add(f"in{i}")
        for n in g.nodes:
            self._node(n)
        for s, cs in consumers.items():
            if not cs and s != g.output and s in self.var:
                self._drain(s)
        self.out_par = self.par[g.output]
        files = self._files()
        # every literal ap_uint the sources spell out is a word of some node (or a <= 64-bit helper), so
        # within word_bits, which, unlike this scan, also counts the weight words the templates build
        lit = max((int(m) for t in files.values() for m in re.findall(r"ap_u?int<(\d+)>", t)), default=1)
        if lit > max(self.word_bits, 64):   # pragma: no cover - a generator bug, not a user error
            raise HLSError(f"{g.name}: the generated code uses an ap_uint<{lit}> wider than the widest word "
                           f"({self.word_bits} bits) the generator accounted for")
        return files

    def _drain(self, s: str) -> None:
        st = self.g.streams[s]
        p = self.par[s]
        fn = self._unique(f"drain_{c_ident(s)}")
        self.funcs.append(f"// stream {s} is not used: discard it\n"
                          f"static void {fn}(hls::stream<{_word(st.dtype, p)}> &in) {{\n#pragma HLS INLINE off\n"
                          f"    BNHW_UNIT(in);\n    for (int i = 0; i < {st.elems // p}; i++) {{\n#pragma HLS PIPELINE II=1\n"
                          f"        BNHW_TICK();\n        BNHW_RD(in);\n    }}\n}}\n")
        self.calls.append(f"    {fn}({self.var[s]});")

    def _check_words(self, n: Node) -> None:
        """Every word of ``n`` within :data:`HLS_MAX_WORD_BITS`; records the widest."""
        for what, bits, knob in node_words(self.g, n):
            if bits > HLS_MAX_WORD_BITS:
                raise HLSError(f"{n.name}: its {bits}-bit {what} is wider than the {HLS_MAX_WORD_BITS} bits "
                               f"an ap_uint may have in Vitis HLS (AP_INT_MAX_W <= {HLS_MAX_WORD_BITS}); "
                               f"lower its {knob}")
            self.word_bits = max(self.word_bits, bits)

    def _node(self, n: Node) -> None:
        g = self.g
        why = folding_error(g, n)                 # the op's folding rules (bnhw's units included)
        if why:
            raise HLSError(why)
        self._check_words(n)
        for i, s in enumerate(n.outputs):
            p = self._out_par(n, i)
            st = g.streams[s]
            if st.channels % p:
                raise HLSError(f"{n.name}: {p} elements per word do not divide the {st.channels} channels "
                               f"of output {s!r} (check its PE/SIMD)")
            self.par[s] = p
        ins = [self._input(n, i) for i in range(len(n.inputs))]
        for i, s in enumerate(n.inputs):
            c = g.streams[s].channels
            if c % self._in_par(n, i):
                raise HLSError(f"{n.name}: {self._in_par(n, i)} elements per word do not divide the {c} "
                               f"channels of input {s!r} (check its PE/SIMD)")
        outs = []
        for s in n.outputs:
            v = "out" if s == g.output else self._stream_var(s, self.par[s])
            self.var[s] = v
            outs.append(v)
        fn = self._unique(f"node_{c_ident(n.name)}")
        body, pragmas = backend_unit(self.EMITTERS, n, "the HLS generator", HLSError)(self, n)
        sig = [f"hls::stream<{_word(g.streams[s].dtype, self._in_par(n, i))}> &in{i}"
               for i, s in enumerate(n.inputs)]
        sig += [f"hls::stream<{_word(g.streams[s].dtype, self.par[s])}> &out{i}"
                for i, s in enumerate(n.outputs)]
        self.funcs.append(f"// {n.op} {n.name}" + (f" (layer {n.layer})" if n.layer else "") + "\n"
                          f"static void {fn}({', '.join(sig)}) {{\n#pragma HLS INLINE off\n"
                          + "".join(p + "\n" for p in pragmas) + body + "}\n")
        self.calls.append(f"    {fn}({', '.join(ins + outs)});")

    def _param_file(self, n: Node, text: str) -> None:
        self.params[f"params/{c_ident(n.name)}.h"] = (
            f"// {n.op} {n.name}: constants laid out per PE / SIMD (generated by bnhw)\n"
            f"#ifndef BNHW_PARAMS_{c_ident(n.name).upper()}_H\n#define BNHW_PARAMS_{c_ident(n.name).upper()}_H\n"
            # relative to this header (firmware/params/): found without -I firmware (FINN's HLS script has none)
            f"@PROLOGUE@#include <ap_int.h>\n#include \"../bnhw_dataflow.h\"\n\n{text}\n#endif\n")

    # ------------------------------------------------------------ node kinds
    def _types(self, n: Node, i: int = 0):
        return self.g.in_stream(n, i), self.g.out_stream(n)

    def _op_SWG(self, n: Node):
        si, so = self._types(n)
        H, W, C = si.shape
        Ho, Wo, KC = so.shape
        k, stride = int(n.attrs["k"]), int(n.attrs.get("stride", 1))
        pad, dil = int(n.attrs.get("pad", 0)), int(n.attrs.get("dilation", 1))
        pv = int(n.attrs.get("pad_value", 0))
        simd = n.simd
        if KC != k * k * C:
            raise HLSError(f"{n.name}: output has {KC} channels, expected k*k*C = {k * k * C}")
        to = so.dtype
        if pad > 0:
            if to.is_bipolar and to.padded and pv != 0:
                raise HLSError(f"{n.name}: a padded bipolar window stream pads with 0, not {pv}")
            if to.is_bipolar and not to.padded and pv not in (-1, 1):
                raise HLSError(f"{n.name}: pad value {pv} on a bipolar stream needs a padded (DType.padded) output")
            if not to.is_bipolar and not (to.min <= pv <= to.max):
                raise HLSError(f"{n.name}: pad value {pv} does not fit {to.finn_name()}")
        if to.is_bipolar and to.padded:
            padword = "0"                                       # valid plane cleared
        elif to.is_bipolar:
            padword = f"bnhw::ones<{simd}>()" if pv > 0 else "0"
        else:
            code = pv & ((1 << to.bits) - 1)
            word = sum(code << (i * to.bits) for i in range(simd))
            padword = f"{_word(to, simd)}({_hex_word(word, simd * to.bits)})"
        body = (f"    const {_word(to, simd)} padword = {padword};\n"
                f"    bnhw::swg<{H}, {W}, {C}, {k}, {stride}, {pad}, {dil}, {Ho}, {Wo}, {simd}, "
                f"{_etype(si.dtype)}, {_etype(to)}>(in0, out0, padword);\n")
        return body, []

    def _thresholds(self, n: Node, rows: int, pe: int, lo: int, hi: int, what: str):
        """(C++ activation type, constant text) of ``thresholds`` clipped to the reachable range."""
        t = np.asarray(n.params["thresholds"], dtype=np.int64)
        if t.ndim == 1:
            t = t.reshape(1, -1)
        if t.shape[0] == 1 and rows > 1:
            t = np.repeat(t, rows, axis=0)
        if t.shape[0] != rows:
            raise HLSError(f"{n.name}: thresholds have {t.shape[0]} rows for {rows} {what}")
        if t.shape[1] == 0:                         # no threshold: a constant output
            t = np.full((rows, 1), hi + 1, dtype=np.int64)
        t = np.clip(t, lo, hi + 1)                  # same comparisons, bounded width
        nt = t.shape[1]
        tt = _sint_pod(int(t.min()), int(t.max()), n.name)
        nf = rows // pe
        lay = t.reshape(nf, pe, nt).transpose(1, 0, 2)          # [pe][nf][i] = T[nf*PE+pe, i]
        name = f"{c_ident(n.name)}_thr"
        scale, bias = int(n.attrs.get("out_scale", 1)), int(n.attrs.get("out_bias", 0))
        act = f"bnhw::Thresholds<{pe}, {nf}, {nt}, {tt}, {scale}, {bias}>"
        text = _c_array(name, act, [_lit(int(v)) for v in lay.reshape(-1)], (pe, nf, nt), scalar=True)
        return act, name, text

    def _op_MVAU(self, n: Node):
        si, so = self._types(n)
        w = np.asarray(n.params["weights"], dtype=np.int64)
        MH, MWg = w.shape
        groups = int(n.attrs.get("groups", 1))
        MW = si.channels
        pe, simd = n.pe, n.simd
        pixels = si.pixels
        if so.channels != MH or so.pixels != pixels:
            raise HLSError(f"{n.name}: output shape {so.shape} does not match {MH} neurons x {pixels} pixels")
        if MWg * groups != MW:
            raise HLSError(f"{n.name}: weights have {MWg} columns, input has {MW} channels and groups={groups}")
        ti = si.dtype
        if groups > 1:
            C = int(n.attrs["channels"])
            kk = MW // C
            if kk * C != MW or C % groups or MH % groups:
                raise HLSError(f"{n.name}: {groups} groups do not divide channels={C} / MH={MH}")
            og, cg = MH // groups, C // groups
            if og % pe or cg % simd:
                raise HLSError(f"{n.name}: grouped MVAU needs PE | MH/groups ({og}) and SIMD | C/groups ({cg}); "
                               f"got PE={pe}, SIMD={simd}")
        elif MH % pe or MW % simd:
            raise HLSError(f"{n.name}: PE={pe} must divide MH={MH} and SIMD={simd} must divide MW={MW}")
        lo, hi = _value_range(self.g, n)
        acc = _ap_int(lo, hi, margin=1, what=n.name)
        binary = bool(n.attrs.get("binary_xnor", False))
        sfg = MWg // simd
        nf = MH // pe
        lay = w.reshape(nf, pe, sfg, simd).transpose(1, 0, 2, 3)   # [pe][nf][sf][simd]
        if binary:
            if not ti.is_bipolar:
                raise HLSError(f"{n.name}: binary_xnor needs a bipolar input, got {ti.finn_name()}")
            if not np.all(np.abs(w) == 1):
                raise HLSError(f"{n.name}: binary_xnor weights must be +-1")
            dot = f"bnhw::XnorDotPadded<{simd}>" if ti.padded else f"bnhw::XnorDot<{simd}>"
            wb = 1
            codes = (lay > 0).astype(np.uint64)
        else:
            wb = _weight_bits(n)
            dot = f"bnhw::MulDot<{simd}, {_etype(ti)}, bnhw::Int<{wb}, true> >"
            codes = (lay & ((1 << wb) - 1)).astype(np.uint64)
        words = _pack_words(codes.reshape(pe, nf * sfg, simd), wb)
        wname = f"{c_ident(n.name)}_w"
        width = simd * wb
        nch = (width + 63) // 64
        ws = _pod(min(width, 64), False)
        suffix = "ULL" if width > 32 else "U"
        mask = (1 << 64) - 1
        vals = [f"0x{(v >> (64 * c)) & mask:x}{suffix}" for v in words for c in range(nch)]
        text = (f"// {MH} x {MWg} weights: [PE={pe}][tiles={nf * sfg}][{nch} chunk(s)] of {width}-bit words "
                f"({simd} lanes x {wb} bit(s), lane 0 lowest)\n"
                + _c_array(wname, ws, vals, (pe, nf * sfg, nch), per_line=8))
        wtmpl = f"{ws}, {nch}"
        pragmas = [f"#pragma HLS ARRAY_PARTITION variable={wname} complete dim=1"]
        if nch > 1:
            pragmas.append(f"#pragma HLS ARRAY_PARTITION variable={wname} complete dim=3")
        if "thresholds" in n.params:
            act, tname, ttext = self._thresholds(n, MH, pe, lo, hi, "neurons")
            text += "\n" + ttext
            pragmas.append(f"#pragma HLS ARRAY_PARTITION variable={tname}.m complete dim=1")
            pragmas.append(f"#pragma HLS ARRAY_PARTITION variable={tname}.m complete dim=3")
            actdecl = f"    const {act} &act = {tname};\n"
        else:
            actdecl = "    const bnhw::PassThrough act;\n"
        self._param_file(n, text)
        if groups > 1:
            call = (f"    bnhw::mvau_grouped<{pixels}, {kk}, {C}, {MH}, {groups}, {simd}, {pe}, {dot}, "
                    f"{_etype(so.dtype)}, {acc}, {wtmpl}>(in0, out0, {wname}, act);\n")
        else:
            call = (f"    bnhw::mvau<{pixels}, {MW}, {MH}, {simd}, {pe}, {dot}, {_etype(so.dtype)}, {acc}, {wtmpl}>"
                    f"(in0, out0, {wname}, act);\n")
        return actdecl + call, pragmas

    def _op_Thresholding(self, n: Node):
        si, so = self._types(n)
        C, pe = si.channels, n.pe
        if C % pe:
            raise HLSError(f"{n.name}: PE={pe} must divide {C} channels")
        ti = si.dtype
        act, tname, text = self._thresholds(n, C, pe, ti.min, ti.max, "channels")
        self._param_file(n, text)
        pragmas = [f"#pragma HLS ARRAY_PARTITION variable={tname}.m complete dim=1",
                   f"#pragma HLS ARRAY_PARTITION variable={tname}.m complete dim=3"]
        body = (f"    const {act} &act = {tname};\n"
                f"    bnhw::thresholding<{si.pixels}, {C}, {pe}, {_etype(ti)}, {_etype(so.dtype)}>"
                f"(in0, out0, act);\n")
        return body, pragmas

    def _pool(self, n: Node, op: str):
        si, so = self._types(n)
        H, W, C = si.shape
        k = int(n.attrs["k"])
        if so.shape != (H // k, W // k, C):
            raise HLSError(f"{n.name}: output shape {so.shape}, expected {(H // k, W // k, C)}")
        lo, hi = si.dtype.min, si.dtype.max
        if op == "PoolSum":
            lo, hi = lo * k * k, hi * k * k
        bt = _ap_int(lo, hi, margin=1, what=n.name)
        body = (f"    bnhw::pool<{H}, {W}, {C}, {k}, {n.pe}, {_etype(si.dtype)}, {_etype(so.dtype)}, "
                f"bnhw::{op}, {bt}>(in0, out0);\n")
        return body, []

    def _op_MaxPool(self, n: Node):
        return self._pool(n, "PoolMax")

    def _op_AvgPoolSum(self, n: Node):
        return self._pool(n, "PoolSum")

    def _op_GlobalAvgPool(self, n: Node):
        si, so = self._types(n)
        P = si.pixels
        st = _ap_int(si.dtype.min * P, si.dtype.max * P, margin=1, what=n.name)
        body = (f"    bnhw::global_avg_pool<{P}, {si.channels}, {n.pe}, {_etype(si.dtype)}, "
                f"{_etype(so.dtype)}, {st}>(in0, out0);\n")
        return body, []

    def _op_Gather(self, n: Node):
        si, so = self._types(n)
        idx = np.asarray(n.params["index"], dtype=np.int64).reshape(-1)
        if idx.size != so.channels or idx.min(initial=0) < 0 or idx.max(initial=0) >= si.channels:
            raise HLSError(f"{n.name}: index does not map {si.channels} to {so.channels} channels")
        name = f"{c_ident(n.name)}_index"
        self._param_file(n, _c_array(name, "int", [str(int(v)) for v in idx], (idx.size,), per_line=16))
        body = (f"    bnhw::gather<{si.pixels}, {si.channels}, {so.channels}, {self._in_par(n, 0)}, "
                f"{self._out_par(n, 0)}, {_etype(si.dtype)}>(in0, out0, {name});\n")
        return body, []

    def _window_pool(self, n: Node, op: str, counts: np.ndarray | None):
        si, so = self._types(n)
        Ho, Wo, C = so.shape
        kk = int(n.attrs["k"]) ** 2
        if si.shape != (Ho, Wo, kk * C):
            raise HLSError(f"{n.name}: input shape {si.shape}, expected the {kk}-tap windows {(Ho, Wo, kk * C)}")
        lo, hi = si.dtype.min, si.dtype.max
        if op == "PoolSum":
            lo, hi = lo * kk, hi * kk
        bt = _ap_int(lo, hi, margin=1, what=n.name)
        cname = "0"
        if counts is not None:
            cname = f"{c_ident(n.name)}_counts"
            self._param_file(n, _c_array(cname, "int", [str(int(v)) for v in counts.reshape(-1)], (counts.size,),
                                         per_line=16))
        body = (f"    bnhw::window_pool<{Ho * Wo}, {kk}, {C}, {n.pe}, {_etype(si.dtype)}, {_etype(so.dtype)}, "
                f"bnhw::{op}, {bt}>(in0, out0, {cname});\n")
        return body, []

    def _op_WindowMax(self, n: Node):
        return self._window_pool(n, "PoolMax", None)

    def _op_WindowAvg(self, n: Node):
        counts = np.asarray(n.params["counts"], dtype=np.int64)
        if counts.size != self.g.out_stream(n).pixels or counts.min(initial=1) < 1:
            raise HLSError(f"{n.name}: counts must be one positive divisor per output pixel")
        return self._window_pool(n, "PoolSum", counts)

    def _op_Concat(self, n: Node):
        so = self.g.out_stream(n)
        p = n.pe
        loops = ""
        for i, s in enumerate(n.inputs):
            ti = self.g.streams[s]
            loops += (f"        for (int i = 0; i < {ti.channels // p}; i++) {{\n#pragma HLS PIPELINE II=1\n"
                      f"            BNHW_TICK();\n"
                      f"            BNHW_WR(out0, bnhw::Widen<{_etype(ti.dtype)}, {_etype(so.dtype)}, {p}>::run(BNHW_RD(in{i})));\n"
                      f"        }}\n")
        return f"    BNHW_UNIT(out0);\n    for (int px = 0; px < {so.pixels}; px++) {{\n{loops}    }}\n", []

    def _op_Duplicate(self, n: Node):
        si = self.g.in_stream(n)
        p = self._in_par(n, 0)
        writes = "".join(f"        BNHW_WR(out{i}, x);\n" for i in range(len(n.outputs)))
        body = (f"    BNHW_UNIT(out0);\n    for (int i = 0; i < {si.elems // p}; i++) {{\n#pragma HLS PIPELINE II=1\n"
                f"        BNHW_TICK();\n        const {_word(si.dtype, p)} x = BNHW_RD(in0);\n{writes}    }}\n")
        return body, []

    def _pc_params(self, n: Node, keys: list[str], C: int, pe: int):
        vals = {k: per_channel(n, k, C) for k in keys}
        allv = np.concatenate(list(vals.values()))
        pt = _sint_pod(int(allv.min()), int(allv.max()), n.name)
        text, pragmas = "", []
        for k, v in vals.items():
            name = f"{c_ident(n.name)}_{k}"
            text += _c_array(name, pt, [_lit(x) for x in _pe_layout(v, pe).reshape(-1)], (pe, C // pe)) + "\n"
            pragmas.append(f"#pragma HLS ARRAY_PARTITION variable={name} complete dim=1")
        self._param_file(n, text)
        return vals, pt, pragmas

    def _pos_bias_params(self, n: Node, C: int, pe: int):
        """A (per channel) and B (per position class and channel: ``border_rows`` / ``border_cols``) of an
        AddRequant whose bias depends on the output position."""
        A = per_channel(n, "A", C)
        B = np.asarray(n.params["B"], dtype=np.int64)
        nr, nc = B.shape[0], B.shape[1]
        allv = np.concatenate([A, B.reshape(-1)])
        pt = _sint_pod(int(allv.min()), int(allv.max()), n.name)
        pfx = c_ident(n.name)
        blay = np.stack([_pe_layout(B[r, c], pe) for r in range(nr) for c in range(nc)])
        text = (_c_array(f"{pfx}_A", pt, [_lit(x) for x in _pe_layout(A, pe).reshape(-1)], (pe, C // pe)) + "\n"
                + _c_array(f"{pfx}_B", pt, [_lit(x) for x in blay.reshape(-1)], (nr, nc, pe, C // pe)) + "\n"
                + _c_array(f"{pfx}_rc", "unsigned char", [str(int(v)) for v in n.attrs["border_rows"]],
                           (len(n.attrs["border_rows"]),)) + "\n"
                + _c_array(f"{pfx}_cc", "unsigned char", [str(int(v)) for v in n.attrs["border_cols"]],
                           (len(n.attrs["border_cols"]),)) + "\n")
        self._param_file(n, text)
        pragmas = [f"#pragma HLS ARRAY_PARTITION variable={pfx}_A complete dim=1",
                   f"#pragma HLS ARRAY_PARTITION variable={pfx}_B complete dim=3"]
        return pt, pragmas, nr, nc

    def _op_AddRequant(self, n: Node):
        """``add_requant`` (one input) / ``add_requant2`` (with the shortcut), or their ``_pos`` variants where ``B``
        is a table per output position class (:meth:`_pos_bias_params`)."""
        si, so = self._types(n)
        C, pe = si.channels, n.pe
        if C % pe:
            raise HLSError(f"{n.name}: PE={pe} must divide {C} channels")
        p = c_ident(n.name)
        if np.ndim(n.params["B"]) == 3:
            pt, pragmas, nr, nc = self._pos_bias_params(n, C, pe)
            name, dims, arrays = "_pos", f"{si.shape[0]}, {si.shape[1]}, {C}, {pe}, {nr}, {nc}", \
                f"{p}_A, {p}_B, {p}_rc, {p}_cc"
        else:
            _, pt, pragmas = self._pc_params(n, ["A", "B"], C, pe)
            name, dims, arrays = "", f"{si.pixels}, {C}, {pe}", f"{p}_A, {p}_B"
        shift, ss = int(n.attrs["shift"]), int(n.attrs.get("shortcut_shift", 0))
        lo_, hi_ = _value_range(self.g, n)
        acc = _ap_int(lo_, hi_, margin=1, at_least=max(shift, 0) + 2, what=n.name)
        dsp = int(n.attrs.get("mul_dsp", 0))          # the folding's choice: the multiplier in DSPs or LUTs
        if len(n.inputs) > 1:
            ts = self.g.in_stream(n, 1).dtype
            body = (f"    bnhw::add_requant2{name}<{dims}, {_etype(si.dtype)}, {_etype(ts)}, {_etype(so.dtype)}, "
                    f"{pt}, {acc}, {ss}, {shift}, {dsp}>(in0, in1, out0, {arrays});\n")
        else:
            body = (f"    bnhw::add_requant{name}<{dims}, {_etype(si.dtype)}, {_etype(so.dtype)}, {pt}, {acc}, "
                    f"{shift}, {dsp}>(in0, out0, {arrays});\n")
        return body, pragmas

    def _op_RPReLU(self, n: Node):
        si, so = self._types(n)
        C, pe = si.channels, n.pe
        if C % pe:
            raise HLSError(f"{n.name}: PE={pe} must divide {C} channels")
        vals, pt, pragmas = self._pc_params(n, ["S_in", "slope", "S_out"], C, pe)
        frac = int(n.attrs["frac"])
        if frac < 0:
            raise HLSError(f"{n.name}: frac must be >= 0, got {frac}")
        lo, hi = _value_range(self.g, n)
        acc = _ap_int(lo, hi, margin=1, at_least=frac + 2, what=n.name)
        pfx = f"{c_ident(n.name)}_"
        body = (f"    bnhw::rprelu<{si.pixels}, {C}, {pe}, {_etype(si.dtype)}, {_etype(so.dtype)}, {pt}, {acc}, "
                f"{frac}>(in0, out0, {pfx}S_in, {pfx}slope, {pfx}S_out);\n")
        return body, pragmas

    def _op_LabelSelect(self, n: Node):
        si, so = self._types(n)
        if so.elems != 1:
            raise HLSError(f"{n.name}: LabelSelect emits one index (k=1), output shape is {so.shape}")
        N = si.elems
        if N % n.pe:
            raise HLSError(f"{n.name}: PE={n.pe} must divide {N} inputs")
        if so.dtype.is_bipolar or so.dtype.max < N - 1:
            raise HLSError(f"{n.name}: output type {so.dtype.finn_name()} cannot hold index {N - 1}")
        body = f"    bnhw::label_select<{N}, {n.pe}, {_etype(si.dtype)}, {_etype(so.dtype)}>(in0, out0);\n"
        return body, []

    #: the unit of each op (tests/test_hw_ops.py checks it against the op registry)
    EMITTERS: ClassVar[dict[str, Callable]] = {
        "SWG": _op_SWG, "MVAU": _op_MVAU, "Thresholding": _op_Thresholding, "MaxPool": _op_MaxPool,
        "AvgPoolSum": _op_AvgPoolSum, "GlobalAvgPool": _op_GlobalAvgPool, "Gather": _op_Gather,
        "Duplicate": _op_Duplicate,
        "AddRequant": _op_AddRequant, "RPReLU": _op_RPReLU, "LabelSelect": _op_LabelSelect,
        "WindowMax": _op_WindowMax, "WindowAvg": _op_WindowAvg, "Concat": _op_Concat,
    }

    # ------------------------------------------------------------ files
    @property
    def ap_int_max_w(self) -> int:
        return ap_int_max_w(self.word_bits)

    def prologue(self) -> str:
        """What every generated source and header starts with: ``AP_INT_MAX_W`` before any ``ap_int.h``."""
        return (f"// The widest ap_uint word of this design is {self.word_bits} bits: ap_int's limit AP_INT_MAX_W\n"
                f"// (default {AP_INT_DEFAULT_W}) is set before the first #include <ap_int.h>, the same in every\n"
                f"// translation unit (build_csim.sh and build_prj.tcl also pass -DAP_INT_MAX_W={self.ap_int_max_w}).\n"
                f"#ifndef AP_INT_MAX_W\n#define AP_INT_MAX_W {self.ap_int_max_w}\n#endif\n"
                f"#ifndef BNHW_WORD_BITS\n#define BNHW_WORD_BITS {self.word_bits}\n#endif\n")

    def _files(self) -> dict[str, str]:
        g, top = self.g, self.top
        si, so = g.streams[g.input], g.streams[g.output]
        guard = f"BNHW_{c_ident(top).upper()}_H"
        pro = self.prologue()
        head = (
            f"// {top}: streaming dataflow accelerator for graph {g.name!r} (generated by bnhw)\n"
            f"#ifndef {guard}\n#define {guard}\n\n{pro}\n#include <ap_int.h>\n#include <hls_stream.h>\n"
            f"#include \"bnhw_dataflow.h\"\n\n"
            f"// input: {si.name} {tuple(si.shape)} {si.dtype.finn_name()}"
            f"{' (padded)' if si.dtype.padded else ''}, {self.in_par} elements per word\n"
            f"typedef {_etype(si.dtype)} {top}_in_elem;\n"
            f"typedef {_word(si.dtype, self.in_par)} {top}_in_word;\n"
            f"#define BNHW_IN_P {self.in_par}\n#define BNHW_IN_ELEMS {si.elems}\n\n"
            f"// output: {so.name} {tuple(so.shape)} {so.dtype.finn_name()}, {self.out_par} elements per word\n"
            f"typedef {_etype(so.dtype)} {top}_out_elem;\n"
            f"typedef {_word(so.dtype, self.out_par)} {top}_out_word;\n"
            f"#define BNHW_OUT_P {self.out_par}\n#define BNHW_OUT_ELEMS {so.elems}\n\n"
            f"#define BNHW_TOP {top}\n#define BNHW_IN_ELEM {top}_in_elem\n#define BNHW_IN_WORD {top}_in_word\n"
            f"#define BNHW_OUT_ELEM {top}_out_elem\n#define BNHW_OUT_WORD {top}_out_word\n\n"
            f"// one call processes one frame\n"
            f"void {top}(hls::stream<{top}_in_word> &in, hls::stream<{top}_out_word> &out@EXTRA@);\n\n#endif\n")
        includes = "".join(f"#include \"{p}\"\n" for p in self.params)
        extra = "".join(f", hls::stream<{_word(g.streams[s].dtype, self.par[s])}> &in{i}"
                        for i, s in enumerate(self.extra, 1))
        extra_ports = "".join(f"#pragma HLS INTERFACE axis port=in{i}\n" for i in range(1, len(self.extra) + 1))
        ports = (f"#pragma HLS INTERFACE axis port=in\n#pragma HLS INTERFACE axis port=out\n{extra_ports}"
                 f"#pragma HLS INTERFACE ap_ctrl_hs port=return\n") if self.interface else ""
        head = head.replace("@EXTRA@", extra)
        cpp = (
            f"// {top}: one streaming function per node of graph {g.name!r}, chained in a DATAFLOW region\n"
            f"// (generated by bnhw; see bnhw_dataflow.h for the units and stream word layouts)\n"
            f"{pro}#include \"{top}.h\"\n{includes}\n" + "\n".join(self.funcs) + "\n"
            f"void {top}(hls::stream<{top}_in_word> &in, hls::stream<{top}_out_word> &out{extra}) {{\n"
            f"{ports}#pragma HLS DATAFLOW\n"
            + "\n".join(self.decls) + ("\n\n" if self.decls else "")
            + "\n".join(self.calls) + "\n}\n")
        files = {f"firmware/{top}.h": head, f"firmware/{top}.cpp": cpp,
                 "firmware/bnhw_dataflow.h": header_path().read_text()}
        for p, text in self.params.items():
            files[f"firmware/{p}"] = text.replace("@PROLOGUE@", pro)
        files["graph.json"] = json.dumps(g.to_dict(), indent=1, default=json_default) + "\n"
        return files


#: the ops the HLS generator has a unit for (``tests/test_hw_ops.py`` checks it against the op registry)
HLS_OPS = frozenset(Generator.EMITTERS)
