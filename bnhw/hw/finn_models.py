"""FINN's analytical cycle and resource models, per FINN custom op (:class:`FinnOp`).

Pure numpy: nothing here imports finn-plus.  Every formula mirrors **finn-plus 1.6.1**
(``finn/custom_op/fpgadataflow/...``), written afresh from reading these files:

* ``matrixvectoractivation.py`` + ``hls/matrixvectoractivation_hls.py`` (MVAU_hls:
  ``get_exp_cycles``, ``bram_estimation``, ``uram_estimation``, ``lut_estimation``,
  ``dsp_estimation``, ``minimize_weight_bit_width``, ``minimize_accumulator_width``)
* ``vectorvectoractivation.py`` + ``hls/vectorvectoractivation_hls.py`` (VVAU_hls)
* ``convolutioninputgenerator.py`` + ``rtl/convolutioninputgenerator_rtl.py``
  (``select_impl_style``, ``get_buffer_depth``, ``get_exp_cycles``, the BRAM/LUT/URAM models)
* ``fmpadding.py`` (FMPadding_rtl, the zero padding in front of a padded SWG)
* ``thresholding.py`` + ``rtl/thresholding_rtl.py`` and ``finn/util/memutil.py``
  (Thresholding_rtl memory model)
* ``pool.py`` (Pool_hls), ``globalaccpool.py``, ``duplicatestreams.py``, ``labelselect.py``
  (cycles only: finn-plus gives these ops no resource model, i.e. 0)
* ``elementwise_binary.py`` (the BRAM18 table bnhw reuses for its elementwise units)
* ``finn/transformation/streamline/round_thresholds.py`` and the bit-width minimisation
  steps of ``finn/builder/build_dataflow_steps.py`` (``_minimize_bit_width``): FINN's
  estimate-only flow narrows the weight, accumulator and threshold types before it
  estimates, and so do these models (from the node's parameters).

Each IR node is first translated into one or more :class:`FinnOp` (FINN op type and FINN
attributes, plus weights / thresholds in FINN's layout) by its op (:mod:`bnhw.hw.ops`).  The same
translation feeds :mod:`bnhw.hw.finn_compat`, which instantiates FINN's real custom ops,
so the tests compare both sides op by op.  A node made of several FINN ops (a padded SWG:
FMPadding_rtl + ConvolutionInputGenerator_rtl; a pooling node: depthwise
ConvolutionInputGenerator_rtl + Pool_hls) has the cycles of its slowest part (they run
as a pipeline, as in FINN's ``dataflow_performance``) and the sum of their resources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Resources", "FinnOp", "op_cycles", "op_resources", "minimized_attrs", "finn_dt", "finn_dt_bits", "popcount_dt",
           "threshold_dt", "minimize_weight_dt", "stream_dt", "vecs", "swg_attrs", "elementwise_resources",
           "bits_of", "mult_luts", "swg_buffer_depth", "dwc_luts", "MAX_ALLOWED_AP_INT_W", "FINN_PLUS_VERSION"]

FINN_PLUS_VERSION = "1.6.1"
#: finn.util.basic.MAX_ALLOWED_AP_INT_W (widest HLS ap_int), used by SetFolding
MAX_ALLOWED_AP_INT_W = 8191


# ----------------------------------------------------------------------------- resources
@dataclass(frozen=True)
class Resources:
    """FPGA resources: ``lut`` (all LUTs, LUTRAM included), ``bram18``, ``uram``, ``dsp``;
    ``lutram`` is the part of ``lut`` used as distributed memory (informational)."""

    lut: float
    bram18: int
    uram: int
    dsp: int
    lutram: float = 0.0

    def __add__(self, other: Resources) -> Resources:
        if not isinstance(other, Resources):
            return NotImplemented
        return Resources(self.lut + other.lut, self.bram18 + other.bram18, self.uram + other.uram,
                         self.dsp + other.dsp, self.lutram + other.lutram)

    def __radd__(self, other):          # lets sum() start from 0
        if other == 0:
            return self
        return NotImplemented

    def scaled(self, k: float) -> Resources:
        """``k`` times these resources (block counts rounded up)."""
        return Resources(self.lut * k, int(math.ceil(self.bram18 * k)), int(math.ceil(self.uram * k)),
                         int(math.ceil(self.dsp * k)), self.lutram * k)

    @staticmethod
    def zero() -> Resources:
        return Resources(0.0, 0, 0, 0, 0.0)

    def as_dict(self) -> dict[str, float]:
        return {"LUT": self.lut, "BRAM_18K": self.bram18, "URAM": self.uram, "DSP": self.dsp,
                "LUTRAM": self.lutram}


# ----------------------------------------------------------------------------- FINN datatypes
@dataclass(frozen=True)
class _DT:
    """The few properties of a qonnx DataType the models need."""

    name: str
    bits: int
    signed: bool
    min: int
    max: int


def finn_dt(name: str) -> _DT:
    if name == "BINARY":
        return _DT(name, 1, False, 0, 1)
    if name == "BIPOLAR":
        return _DT(name, 1, True, -1, 1)
    if name == "TERNARY":
        return _DT(name, 2, True, -1, 1)
    if name.startswith("UINT"):
        b = int(name[4:])
        return _DT(name, b, False, 0, (1 << b) - 1)
    if name.startswith("INT"):
        b = int(name[3:])
        return _DT(name, b, True, -(1 << (b - 1)), (1 << (b - 1)) - 1)
    raise ValueError(f"unsupported FINN datatype {name!r}")


def finn_dt_bits(name: str) -> int:
    """Bit width of a FINN datatype name (``BINARY``, ``BIPOLAR``, ``INT8``, ...)."""
    return finn_dt(name).bits


def _smallest_dt(value) -> _DT:
    """qonnx ``DataType.get_smallest_possible`` for integer values (BINARY, UINTn, BIPOLAR,
    TERNARY, INTn, in that order of preference)."""
    cands = ["BINARY"] + [f"UINT{b}" for b in range(1, 65)] + ["BIPOLAR", "TERNARY"] + \
        [f"INT{b}" for b in range(1, 65)]
    for c in cands:
        d = finn_dt(c)
        if d.min <= value <= d.max:
            return d
    raise ValueError(f"no integer datatype holds {value}")


def minimize_weight_dt(w: np.ndarray) -> _DT:
    """MVAU / VVAU ``minimize_weight_bit_width`` (value based)."""
    w_min, w_max = w.min(), w.max()
    if w_min < 0:
        if abs(w_min) > w_max:
            return _smallest_dt(w_min)
        return _smallest_dt(-w_max - 1)
    return _smallest_dt(w_max)


def _accumulator_dt(w: np.ndarray, idt: _DT, no_activation: bool, last: bool) -> _DT:
    """MVAU / VVAU ``minimize_accumulator_width``: ``w`` is the (MW, MH) matrix of values."""
    max_vec = np.where(w > 0, idt.max, idt.min)
    min_vec = np.where(w > 0, idt.min, idt.max)
    acc_max = (w * max_vec).sum(axis=0).max()
    acc_min = (w * min_vec).sum(axis=0).min()
    if acc_min >= 0:
        adt = finn_dt(f"UINT{math.ceil(np.log2(acc_max + 1))}")
    else:
        m = max(-acc_min, 1 + acc_max)
        adt = finn_dt(f"INT{math.ceil(np.log2(m) + 1)}")
    if no_activation and last:
        bw = -(-adt.bits // 8) * 8
        adt = finn_dt(adt.name.replace(str(adt.bits), str(bw)))
    return adt


def popcount_dt(mw: int, minimized: str) -> str:
    """FINN's type of an XNOR MVAU's popcount over ``mw`` inputs (no activation; a bnhw unit decodes it) after
    bnhw's ``step_bnhw_units`` (:func:`bnhw.hw.finn_steps.widen_xnor_popcounts`): FINN's minimised accumulator
    type ``minimized`` where it holds ``[0, mw]``, else the narrowest type that does."""
    t = finn_dt(minimized)
    return minimized if t.min <= 0 and t.max >= mw else f"UINT{mw.bit_length()}"


def threshold_dt(t: np.ndarray, idt: _DT) -> _DT:
    """Threshold type after FINN's ``RoundAndClipThresholds`` + ``MinimizeWeightBitWidth``
    (Thresholding ``minimize_weight_bit_width``) for an integer input type ``idt``."""
    t = np.clip(np.ceil(t), idt.min, idt.max + 1)
    t_min, t_max = float(t.min()), float(t.max())
    if t_min == t_max == 0:
        return finn_dt("INT2") if idt.signed else finn_dt("UINT1")
    if t_min < 0:
        if abs(t_min) > t_max:
            return _smallest_dt(t_min)
        return _smallest_dt(-t_max - 1)
    if idt.signed:
        return _smallest_dt(-t_max - 1)
    return _smallest_dt(t_max)


# ----------------------------------------------------------------------------- IR -> FINN ops
@dataclass
class FinnOp:
    """One FINN custom op equivalent to (part of) an IR node.

    ``attrs`` use FINN's attribute names; ``weights`` are in FINN's layout (MVAU: ``(MW,
    MH)``; VVAU: ``(C, 1, k_h, k_w)``; for binaryXnorMode in {0, 1}), ``thresholds``
    ``(channels, steps)`` in FINN's accumulator domain; ``last``: the op's output is the
    graph output (FINN then rounds a no-activation accumulator type up to bytes).
    """

    op_type: str
    attrs: dict[str, Any]
    weights: np.ndarray | None = None
    thresholds: np.ndarray | None = None
    last: bool = False
    role: str = "main"                   # "main" | "pad" | "swg" (part of a composite node)
    notes: dict[str, Any] = field(default_factory=dict)


def stream_dt(s) -> str:
    """FINN datatype of an IR stream: a bipolar stream travels as BINARY (bit 1 = +1), as
    between FINN's xnor layers."""
    return "BINARY" if s.dtype.is_bipolar else s.dtype.finn_name()


def vecs(h: int, w: int) -> list[int]:
    """FINN's ``numInputVectors`` of an ``h x w`` feature map."""
    return [1] if (h, w) == (1, 1) else [1, h, w]


def swg_attrs(c: int, idim: tuple[int, int], odim: tuple[int, int], k: int, stride: int,
              dilation: int, simd: int, dt: str, depthwise: int, ram_style: str,
              parallel_window: int) -> dict[str, Any]:
    """The attributes of a ``ConvolutionInputGenerator_rtl``."""
    return {"ConvKernelDim": [k, k], "IFMChannels": c, "IFMDim": list(idim), "OFMDim": list(odim),
            "SIMD": simd, "Stride": [stride, stride], "Dilation": [dilation, dilation],
            "inputDataType": dt, "outputDataType": dt, "depthwise": depthwise,
            "ram_style": ram_style, "parallel_window": parallel_window, "M": 1}


# ----------------------------------------------------------------------------- minimisation
#: weight / accumulator types depend only on the weights, not on the folding: the folding
#: optimiser asks for hundreds of foldings of one node, so they are cached per IR weight array
#: (keyed by its identity; the array itself is kept in the entry so the key stays valid)
_MINIMIZED: dict[tuple, tuple[np.ndarray, _DT, _DT]] = {}


def minimized_attrs(op: FinnOp) -> dict[str, Any]:
    """The op's attributes after FINN's bit-width minimisation (weight, accumulator and
    output type of MVAU / VVAU; threshold type of Thresholding)."""
    a = dict(op.attrs)
    src = op.notes.get("src")
    key = (id(src), op.op_type, a.get("inputDataType"), a.get("noActivation"), a.get("binaryXnorMode"),
           op.last)
    if src is not None and key in _MINIMIZED and _MINIMIZED[key][0] is src:
        _, wdt, adt = _MINIMIZED[key]
        a["weightDataType"] = wdt.name
        a["accDataType"] = adt.name
        if a["noActivation"]:
            a["outputDataType"] = adt.name
        return a
    if op.op_type in ("MVAU_hls", "VVAU_hls"):
        w = op.weights
        assert w is not None  # MVAU / VVAU carry their weights
        wdt = minimize_weight_dt(w)
        a["weightDataType"] = wdt.name
        if op.op_type == "MVAU_hls":
            wmat = w
        else:
            c = a["Channels"]
            wmat = w.reshape(c, -1).T
        if a["binaryXnorMode"]:
            wmat = 2 * wmat - 1
        adt = _accumulator_dt(wmat, finn_dt(a["inputDataType"]), bool(a["noActivation"]), op.last)
        a["accDataType"] = adt.name
        if src is not None:
            if len(_MINIMIZED) > 1024:
                _MINIMIZED.clear()
            _MINIMIZED[key] = (src, wdt, adt)
        if a["noActivation"]:
            a["outputDataType"] = adt.name
    return a


# ----------------------------------------------------------------------------- per-op models
def _swg_impl_style(a: dict) -> str:
    k_h, k_w = a["ConvKernelDim"]
    mmv_out = a.get("M", 1) * k_h * k_w if a.get("parallel_window", 0) else 1
    if mmv_out > 1 or (k_h == 1 and k_w == 1):
        return "parallel"
    return "default"


def swg_buffer_depth(a: dict) -> int:
    k_h, k_w = a["ConvKernelDim"]
    h, w = a["IFMDim"]
    stride_h, stride_w = a["Stride"]
    dil_h, dil_w = a["Dilation"]
    cf = int(a["IFMChannels"] / a["SIMD"])
    if _swg_impl_style(a) == "default":
        base = ((k_h - 1) * dil_h * w + (k_w - 1) * dil_w + 1) * cf
        return (base + max(0, ((stride_w - 1) - int(k_h * k_w)) * cf)
                + max(0, ((stride_h - 1) * w - int(k_h * k_w)) * cf))
    return ((k_h - 1) * dil_h * w + (k_w - 1) * dil_w) * cf + 1 + 1


def _swg_cycles(a: dict) -> int:
    simd, ifm_ch = a["SIMD"], a["IFMChannels"]
    ifm_h, ifm_w = a["IFMDim"]
    ofm_h, ofm_w = a["OFMDim"]
    k_h, k_w = a["ConvKernelDim"]
    stride_h, stride_w = a["Stride"]
    dil_h, dil_w = a["Dilation"]
    dw = a.get("depthwise", 0)
    if _swg_impl_style(a) == "parallel":
        return int(ifm_h * ifm_w * (ifm_ch // simd) + 2)
    cf = int(ifm_ch / simd)
    if ifm_h == 1 or ifm_w == 1:
        if ifm_w == 1:                  # normalise (D, 1) to (1, D)
            ifm_h, ifm_w, ofm_h, ofm_w = ifm_w, ifm_h, ofm_w, ofm_h
            k_h, k_w, stride_h, stride_w = k_w, k_h, stride_w, stride_h
        if dw:
            cyc_out = ofm_w * k_w * cf + (cf - 1) * k_w
            cyc_in = ifm_w * cf + cf * (k_w - 1) * (stride_w - 1)
            return int(max(cyc_out, cyc_in) + 2)
        return int(ofm_w * k_w * cf + 2)
    buffer_min = ((k_h - 1) * dil_h * ifm_w + (k_w - 1) * dil_w + 1) * cf
    cyc = max(ofm_w * k_w * k_h * cf, stride_w * ifm_w * cf)
    if dw:
        cyc += ofm_w * (stride_w - 1) * (cf - 1)
    exp = buffer_min + ofm_h * cyc
    if dw:
        exp += (stride_h - 1) * ifm_w * cf
    return int(exp)


def _bram_width_for_depth(depth: int) -> int:
    for lim, width in ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2)):
        if depth <= lim:
            return width
    return 1


def _swg_resources(a: dict) -> Resources:
    simd, ram_style = a["SIMD"], a["ram_style"]
    bits = finn_dt(a["inputDataType"]).bits
    width = simd * bits
    impl = _swg_impl_style(a)
    k_h, k_w = a["ConvKernelDim"]
    ifm_h, ifm_w = a["IFMDim"]
    dil_h, dil_w = a["Dilation"]
    depth = swg_buffer_depth(a)
    # line buffer geometry (BRAM / URAM models)
    one_d = ifm_h == 1 or ifm_w == 1
    if impl == "default":
        buf_depth, buf_count = depth, 1
    else:
        buf_depth = (ifm_w - ((k_w - 1) * dil_w + 1)) + ifm_w * (dil_h - 1)
        buf_count = k_h - 1
    bram = 0
    if ram_style in ("block", "auto") and not (impl == "parallel" and one_d):
        casc_depth = math.ceil(buf_depth / 16384)
        casc_width = math.ceil(width / _bram_width_for_depth(buf_depth))
        savings = 0
        if buf_depth > 16384:
            savings = casc_width - math.ceil(width / _bram_width_for_depth(buf_depth % 16384))
        bram = int((casc_depth * casc_width - savings) * buf_count)
    uram = 0
    if ram_style == "ultra" and not (impl == "parallel" and one_d):
        uram = int(math.ceil(buf_depth / 4096) * math.ceil(width / 72) * buf_count)
    ram_luts = int(width * math.ceil(depth / 38)) if ram_style == "distributed" else 0
    return Resources(float(300 + ram_luts), bram, uram, 0, float(ram_luts))


def _mvau_cycles(a: dict) -> int:
    return int((a["MH"] / a["PE"]) * (a["MW"] / a["SIMD"]) * np.prod(a["numInputVectors"])
               * a.get("TH", 1) / 1)


def _vvau_cycles(a: dict) -> int:
    k_h, k_w = a["Kernel"]
    dim_h, dim_w = a["Dim"]
    return int(((a["Channels"] * k_h * k_w) / a["PE"] / a["SIMD"]) * 1 * (dim_h * dim_w) / 1)


def _mvau_bram_table(omega: float, mem_width: int, vvau: bool) -> int:
    """BRAM18 count of a (mem_width x omega) weight memory; VVAU's table divides widths by
    8/16/32, MVAU's by 9/18/36 (as in finn-plus)."""
    d9, d18, d36 = (8, 16, 32) if vvau else (9, 18, 36)
    if mem_width == 1:
        return math.ceil(omega / 16384)
    if mem_width == 2:
        return math.ceil(omega / 8192)
    if mem_width <= 4:
        return math.ceil(omega / 4096) * math.ceil(mem_width / 4)
    if mem_width <= 9:
        return math.ceil(omega / 2048) * math.ceil(mem_width / d9)
    if mem_width <= 18 or omega > 512:
        return math.ceil(omega / 1024) * math.ceil(mem_width / d18)
    return math.ceil(omega / 512) * math.ceil(mem_width / d36)


def _mac_resources(a: dict, vvau: bool) -> Resources:
    """MVAU_hls / VVAU_hls: LUT (FINN-R model), BRAM, URAM, DSP estimates."""
    P, Q = a["PE"], a["SIMD"]
    wdt, idt = finn_dt(a["weightDataType"]), finn_dt(a["inputDataType"])
    W, A = wdt.bits, idt.bits
    mmode, mstyle = a.get("mem_mode", "internal_decoupled"), a.get("ram_style", "auto")
    if vvau:
        k_h, k_w = a["Kernel"]
        C = a["Channels"]
        wmem = (k_h * k_w * C // P) // Q
        omega = wmem
        dot_len = k_h * k_w
        tmem = 0 if a["noActivation"] else C // P
    else:
        MW, MH = a["MW"], a["MH"]
        wmem = MW * MH // (P * Q)
        omega = (MW * MH) / (Q * P)
        dot_len = MW
        tmem = 0 if a["noActivation"] else MH // P
    mem_width = Q * W * P
    # --- LUTs
    c0, c1, c2 = 300, 1.1, 0
    if (mmode == "internal_decoupled" and mstyle == "distributed") or (
            mmode == "internal_embedded" and wmem <= 128):
        c2 = (P * Q * W) * math.ceil(wmem / 64)
    res_type = a.get("resType", "lut")
    mult_luts = 0 if res_type == "dsp" else Q * (2 * math.ceil((W + A) / 6) - 1) * (W + A)
    addertree_luts = (W + A) * (2 * Q - 1)
    acc_bw = finn_dt(a.get("accDataType", "INT32")).bits
    alpha = math.log(dot_len, 2) + W + A - 1 - int(idt.signed)
    acc_bits = min(acc_bw, np.ceil(alpha + math.log(1 + pow(2, -alpha), 2) + 1))
    acc_luts = acc_bits
    thr_luts = 0
    comp_luts = 0
    if vvau:
        if a["noActivation"] == 0:
            B = finn_dt(a["outputDataType"]).bits
            thr_luts = (2 ** B - 1) * acc_bits * tmem / 64
            comp_luts = (2 ** B - 1) * acc_bits
    elif a["noActivation"] == 0 and a.get("ram_style_thresholds", "auto") == "distributed":
        B = finn_dt(a["outputDataType"]).bits
        thr_luts = (2 ** B - 1) * acc_bits * math.ceil(tmem / 64)
        comp_luts = (2 ** B - 1) * acc_bits
    lut = int(c0 + c1 * (P * (mult_luts + addertree_luts + acc_luts + thr_luts + comp_luts)) + c2)
    # --- BRAM
    if vvau:
        no_bram = ((mmode == "internal_decoupled" and mstyle in ("distributed", "ultra"))
                   or (mstyle == "auto" and wmem <= 128)
                   or (mmode == "internal_embedded" and wmem <= 128) or mmode == "external")
    else:
        no_bram = ((mmode == "internal_decoupled" and mstyle in ("distributed", "ultra"))
                   or (mmode == "internal_embedded" and wmem <= 128)
                   or mmode in ("external", "external_mem"))
    bram = 0 if no_bram else _mvau_bram_table(omega, mem_width, vvau)
    # --- URAM
    if vvau:
        no_uram = ((mmode == "internal_decoupled" and mstyle != "ultra")
                   or mmode in ("internal_embedded", "external"))
    else:
        no_uram = ((mmode == "internal_decoupled" and mstyle != "ultra")
                   or (mmode == "internal_embedded" and wmem <= 128)
                   or mmode in ("external", "external_mem"))
    uram = 0 if no_uram else math.ceil(mem_width / 72) * math.ceil(omega / 4096)
    # --- DSP
    if res_type == "dsp":
        dsp = int(P * Q * np.ceil((W + A) / 48)) if not vvau else int(P * np.ceil((W + A) / 48))
    else:
        dsp = 0
    return Resources(float(lut), int(bram), int(uram), dsp, float(c2))


# finn/util/memutil.py mem_primitives_versal, in its (tie-breaking) order
_MEM_PRIMITIVES = (("URAM_72x4096", 72, 4096), ("URAM_36x8192", 36, 8192),
                   ("URAM_18x16384", 18, 16384), ("URAM_9x32768", 9, 32768),
                   ("BRAM18_36x512", 36, 512), ("BRAM18_18x1024", 18, 1024),
                   ("BRAM18_9x2048", 9, 2048), ("LUTRAM", 1, 64))


def _roundup(x, factor):
    if x < factor:
        return factor
    return x if x % factor == 0 else x + (factor - (x % factor))


def _memutil(width, depth, pw, pd):
    count = (_roundup(depth, pd) // pd) * (_roundup(width, pw) // pw)
    waste = count * pw * pd - width * depth
    return count, waste


def _thresholding_resources(a: dict) -> Resources:
    """Thresholding_rtl: per PE, one memory per output bit level (width = threshold bits,
    depth = C/PE * 2**level), each mapped to the least-waste primitive (memutil)."""
    pe = a["PE"]
    wbits = finn_dt(a["weightDataType"]).bits
    obits = finn_dt(a["outputDataType"]).bits
    cf = a["NumChannels"] / pe
    sets = max(1, a.get("mlo_max_iter", 0), a.get("bodies", 0))
    if a.get("uniform_thres", 0):
        geoms = [(obits - x, cf * (2 ** x) * sets) for x in range(1, obits)]
    else:
        geoms = [(wbits, cf * (2 ** x) * sets) for x in range(obits)]
    trig_b, trig_u = a.get("depth_trigger_bram", 0), a.get("depth_trigger_uram", 0)
    res: dict[str, float] = {}
    for width, depth in geoms:
        prims: tuple[tuple[str, int, int], ...] = _MEM_PRIMITIVES
        if trig_b != 0 or trig_u != 0:
            if trig_b <= depth < trig_u:
                prims = tuple(p for p in _MEM_PRIMITIVES if "BRAM" in p[0])
            elif depth >= trig_u:
                prims = tuple(p for p in _MEM_PRIMITIVES if "URAM" in p[0])
        alts = sorted(((name, _memutil(width, depth, pw, pd)) for name, pw, pd in prims),
                      key=lambda x: x[1][1])
        name, (count, _) = alts[0]
        kind = "BRAM" if name.startswith("BRAM") else name.split("_")[0]
        res[kind] = res.get(kind, 0) + pe * count
    lutram = res.get("LUTRAM", 0)
    return Resources(float(lutram), int(res.get("BRAM", 0)), int(res.get("URAM", 0)), 0, float(lutram))


def op_cycles(op: FinnOp, attrs: dict | None = None) -> int:
    """FINN ``get_exp_cycles`` of one op (``attrs``: minimised attributes, if already known)."""
    a = attrs if attrs is not None else op.attrs
    t = op.op_type
    if t == "MVAU_hls":
        return _mvau_cycles(a)
    if t == "VVAU_hls":
        return _vvau_cycles(a)
    if t == "ConvolutionInputGenerator_rtl":
        return _swg_cycles(a)
    if t == "FMPadding_rtl":
        ih, iw = a["ImgDim"]
        p = a["Padding"]
        return int((a["NumChannels"] / a["SIMD"]) * a.get("numInputVectors", 1)
                   * (ih + p[0] + p[2]) * (iw + p[1] + p[3]))
    if t in ("Thresholding_rtl", "DuplicateStreams_hls"):
        ch = a["NumChannels"]
        return int(np.prod(list(a["numInputVectors"]) + [ch // a["PE"]]))
    if t == "Pool_hls":
        return int(((a["Channels"] * int(np.prod(a["KernelSize"]))) / a["PE"])
                   * np.prod(a["OutImgDims"]) * a.get("BatchSize", 1))
    if t == "GlobalAccPool_hls":
        folds = int(a["NumChannels"] / a["PE"])
        return int(np.prod(list(a["numInputVectors"]) + [folds]) + folds)
    if t == "LabelSelect_hls":
        return int(a["Labels"] / a["PE"])
    if t == "StreamingConcat_hls":             # prod(folded output shape[:-1])
        return int(np.prod(a["numInputVectors"]) * sum(a["ChannelsPerStream"]) // a["SIMD"])
    raise ValueError(f"no cycle model for {t}")


def op_resources(op: FinnOp, attrs: dict | None = None) -> Resources:
    """FINN's lut/bram/uram/dsp estimates of one op."""
    a = attrs if attrs is not None else minimized_attrs(op)
    t = op.op_type
    if t == "MVAU_hls":
        return _mac_resources(a, vvau=False)
    if t == "VVAU_hls":
        return _mac_resources(a, vvau=True)
    if t == "ConvolutionInputGenerator_rtl":
        return _swg_resources(a)
    if t == "Thresholding_rtl":
        return _thresholding_resources(a)
    # FMPadding_rtl, Pool_hls, GlobalAccPool_hls, DuplicateStreams_hls, LabelSelect_hls, StreamingConcat_hls:
    # finn-plus 1.6.1 has no resource model for them (HWCustomOp defaults: 0)
    return Resources.zero()


# ----------------------------------------------------------------------------- bnhw elementwise units
def dwc_luts(in_bits: int, out_bits: int) -> int:
    """LUTs of a ``StreamingDataWidthConverter`` from ``in_bits`` to ``out_bits`` wide words (FINN's
    ``lut_estimation``: a shift register up to the least common multiple of the widths and down again, plus the
    counters; no BRAM, no DSP).  FINN gives the converter no cycles of its own (``get_exp_cycles`` is 0)."""
    if in_bits < 1 or out_bits < 1:
        raise ValueError(f"width converter widths must be >= 1 bit, got {in_bits} -> {out_bits}")
    lcm = in_bits * out_bits // math.gcd(in_bits, out_bits)
    luts = 0
    if in_bits != lcm:
        luts += abs(math.ceil(math.log(in_bits / lcm, 2))) + lcm     # math.log(x, 2) as FINN: same rounding
    if lcm != out_bits:
        luts += abs(math.ceil(math.log(lcm / out_bits, 2))) + out_bits
    return int(luts)


def bits_of(arr: np.ndarray | None) -> int:
    if arr is None or np.size(arr) == 0:
        return 0
    lo, hi = int(np.min(arr)), int(np.max(arr))
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def _bram18(width: int, depth: int) -> int:
    """ElementwiseBinaryOperation._bram18_estimation (finn-plus): the MVAU table."""
    return _mvau_bram_table(depth, width, vvau=False)


def mult_luts(a: int, b: int) -> int:
    """LUTs of an a x b bit LUT multiplier (the FINN-R term MVAU uses per SIMD lane)."""
    return (2 * math.ceil((a + b) / 6) - 1) * (a + b)


def dsp48_mults(a: int, b: int) -> int:
    """DSP48 slices of one ``a`` x ``b`` bit signed multiplier (a 7-series / UltraScale+ DSP48 multiplies 25 x 18
    bits; wider operands take a cascade of ceil(a / 25) x ceil(b / 18) slices, the larger operand on the wider
    port)."""
    hi, lo = max(a, b, 1), max(min(a, b), 1)
    return math.ceil(hi / 25) * math.ceil(lo / 18)


def elementwise_resources(channels: int, pe: int, datapath_luts: int, param_bits: int,
                          ram_style: str = "auto", dsp: int = 0) -> Resources:
    """bnhw's elementwise units (AddRequant, RPReLU): per PE a datapath of ``datapath_luts`` (the FINN-R
    LUT multiplier term + 1 LUT per adder / rounding / clipping bit), 100 LUTs of control; the per-channel
    parameters (PE x ``param_bits`` wide, C/PE deep) in LUTRAM when at most 128 deep (as FINN's VVAU
    'auto' rule), else BRAM18 (ElementwiseBinary's table), or as ``ram_style`` says; ``dsp`` DSP slices per PE
    (a multiplier bound to DSPs, whose LUTs the caller left out of ``datapath_luts``)."""
    width, depth = pe * param_bits, channels // pe
    if ram_style == "distributed" or (ram_style == "auto" and depth <= 128):
        mem_lut, bram = width * math.ceil(depth / 64), 0
    else:
        mem_lut, bram = 0, _bram18(width, depth)
    lut = 100 + pe * datapath_luts + mem_lut
    return Resources(float(lut), int(bram), 0, int(pe * dsp), float(mem_lut))
