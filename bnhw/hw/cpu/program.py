"""Lower a hardware IR graph to a CPU program and write it as one model file.

The CPU runtime (``src/runtime.c``) executes exactly the integer semantics of
:class:`~bnhw.hw.ir.HwGraph` (``HwGraph.execute`` is its reference), but on a
processor a streaming window generator is not a unit of its own: this pass is a
"model in, model out" transformation of the IR into the ops the C kernels run.

* ``SWG -> MVAU`` pairs become one convolution op (``BCONV`` when the MVAU is
  XNOR-popcount, ``ICONV`` otherwise); an ``MVAU`` that reads pixels directly is
  a 1 x 1 convolution; ``SWG -> Gather -> MVAU`` where the gather picks one tap
  ``(t, t)`` of unpadded windows (a factorised reduce's shifted half) is a 1 x 1
  convolution with padding ``-t`` (a crop).  ``SWG -> WindowMax / WindowAvg``
  become one window pool (``WPOOL``).  The window stream is never materialised.
* A ``Concat`` of n streams is n - 1 two-input ``CONCAT`` ops.
* Bipolar streams are bit-packed (:mod:`bnhw.hw.cpu` convention: bit 1 = -1,
  64-bit words, one run of words per convolution group).  A packed stream's
  group layout is the one its consuming convolution needs, so a ``Thresholding``
  or a thresholded ``MVAU`` writes its packed output directly in that layout
  (the fused "BN / threshold -> packed" epilogue).
* ``Duplicate`` costs nothing: its outputs alias its input.
* Every other node is one op of the same name and semantics.

Every op records the IR node names it implements, so per-op timings and the
tensors the runtime exposes map back to the IR.  Integer ranges are checked
here, once: an op is only emitted when the C arithmetic (int32 tensors, int64
intermediates, the int16 GEMM's contract) cannot overflow for any input of the
declared stream types, otherwise :class:`CpuLoweringError` names the node.

Model file (little endian, every array 8-byte aligned from the start of the file)::

    "BNHWCPU\\0"  u32 version  u32 n_tensors  u32 n_ops  u32 input  u32 output  u32[3] reserved
    tensor:  u32 H W C kind(0 int32, 1 packed) groups  u32 name_len  name (padded to 4)
    op:      u32 opcode n_in in0 in1 out  i32 attrs[ATTRS]  u32 name_len name (padded to 4)
             u32 n_params, then per param: u32 dtype count, pad to 8, data, pad to 8
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ...errors import BnhwError
from ..ir import DType, HwGraph, Node, Stream, per_channel
from ..ops import acc_bounds, backend_unit

__all__ = ["CpuLoweringError", "CpuOp", "CpuProgram", "CpuTensor", "lower_cpu", "write_model", "read_header",
           "OPCODES", "ATTRS", "MAGIC", "VERSION", "pack_bits", "bipolar_weights_packed", "read_program", "to_bytes"]

MAGIC = b"BNHWCPU\0"
VERSION = 1
#: number of int32 attributes per op (the meaning of each slot is per opcode, see ``_A``)
ATTRS = 20
OPCODES = {"BCONV": 1, "ICONV": 2, "THRESH": 3, "MAXPOOL": 4, "AVGPOOLSUM": 5, "GAP": 6, "GATHER": 7,
           "ADDREQUANT": 8, "RPRELU": 9, "LABELSELECT": 10, "UNPACK": 11, "CONCAT": 12, "WPOOL": 13}
#: attribute slots (shared names across opcodes; unused slots are 0)
_A = {"H": 0, "W": 1, "C": 2, "Ho": 3, "Wo": 4, "Cout": 5, "k": 6, "stride": 7, "pad": 8, "dil": 9,
      "groups": 10, "out_mode": 11, "out_groups": 12, "n_thr": 13, "out_bias": 14, "out_scale": 15,
      "pad_value": 16, "use_s16": 17, "lo": 18, "hi": 19,
      # ADDREQUANT / RPRELU reuse slots
      "shift": 3, "shortcut_shift": 4, "frac": 3}
DTYPES: dict[np.dtype, int] = {np.dtype(np.int16): 1, np.dtype(np.int32): 2, np.dtype(np.int64): 3, np.dtype(np.uint64): 4}
#: output modes of BCONV / ICONV / THRESH
OUT_ACC, OUT_PACKED, OUT_MULTI = 0, 1, 2
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
WORD = 64


class CpuLoweringError(BnhwError):
    """The graph uses something the CPU runtime cannot run exactly (names the node)."""


@dataclass
class CpuTensor:
    name: str
    shape: tuple[int, ...]          # (H, W, C)
    packed: bool
    groups: int = 1
    dtype: DType | None = None

    @property
    def words_per_pixel(self) -> int:
        cg = self.shape[2] // self.groups
        return self.groups * -(-cg // WORD)


@dataclass
class CpuOp:
    op: str
    inputs: list[int]
    output: int
    attrs: dict[str, int]
    params: list[np.ndarray] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)       # the IR nodes it implements
    layer: str = ""

    @property
    def name(self) -> str:
        return "+".join(self.nodes)

    @property
    def conv_macs(self) -> int:
        """Multiply-accumulates of a convolution op per image (0 for other ops)."""
        if self.op not in ("BCONV", "ICONV"):
            return 0
        a = self.attrs
        return a["Ho"] * a["Wo"] * a["Cout"] * a["k"] * a["k"] * (a["C"] // a["groups"])

    @property
    def bmacs(self) -> int:
        """Binary (XNOR-popcount) multiply-accumulates per image."""
        return self.conv_macs if self.op == "BCONV" else 0

    @property
    def macs(self) -> int:
        """Integer multiply-accumulates per image."""
        return self.conv_macs if self.op == "ICONV" else 0


@dataclass
class CpuProgram:
    name: str
    tensors: list[CpuTensor]
    ops: list[CpuOp]
    input: int
    output: int
    stream_tensor: dict[str, int]         # IR stream -> tensor id (aliases included)

    def tensor_id(self, stream: str) -> int:
        return self.stream_tensor[stream]

    @property
    def bmacs(self) -> int:
        return sum(o.bmacs for o in self.ops)

    @property
    def macs(self) -> int:
        return sum(o.macs for o in self.ops)


# ----------------------------------------------------------------------------- packing helpers
def pack_bits(neg: np.ndarray, groups: int) -> np.ndarray:
    """``neg`` bool ``(n, C)`` (True = -1) -> uint64 ``(n, groups * wpg)`` in the runtime's layout."""
    neg = np.asarray(neg, dtype=bool)
    n, C = neg.shape
    cg = C // groups
    wpg = -(-cg // WORD)
    bits = np.zeros((n, groups, wpg * WORD), dtype=bool)
    bits[:, :, :cg] = neg.reshape(n, groups, cg)
    weights = (np.uint64(1) << np.arange(WORD, dtype=np.uint64))
    words = (bits.reshape(n, groups, wpg, WORD).astype(np.uint64) * weights).sum(axis=-1, dtype=np.uint64)
    return words.reshape(n, groups * wpg)


def bipolar_weights_packed(w: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """Bipolar weights ``(Cout, kk * cg)`` ordered (tap, channel) -> packed ``(Cout, kk, wpg)`` words and
    the popcount of each tap's words ``(Cout, kk)`` (the zero-padding correction)."""
    w = np.asarray(w, dtype=np.int64)
    cout, mwg = w.shape
    cg = mwg // kk
    neg = (w < 0).reshape(cout * kk, cg)
    words = pack_bits(neg, 1).reshape(cout, kk, -1)
    pops = neg.reshape(cout, kk, cg).sum(axis=-1).astype(np.int32)
    return words, pops


# ----------------------------------------------------------------------------- lowering
class _Lowering:
    def __init__(self, g: HwGraph):
        self.g = g
        self.tensors: list[CpuTensor] = []
        self.ops: list[CpuOp] = []
        self.of: dict[str, int] = {}
        self.fused: set[str] = set()

    def err(self, n: Node, msg: str) -> CpuLoweringError:
        return CpuLoweringError(f"CPU runtime: {n.name} ({n.op}): {msg}")

    # a packed stream's group layout: what its consumers read it as
    def packed_groups(self, stream: str, seen: frozenset = frozenset()) -> int:
        wants: set[int] = set()
        for c in self.g.consumers(stream):
            if c.op == "MVAU":
                wants.add(int(c.attrs.get("groups", 1)))
            elif c.op == "SWG":
                nxt = self.g.consumers(c.outputs[0])
                nxt += [m for gt in nxt if gt.op == "Gather" for m in self.g.consumers(gt.outputs[0])]
                wants.update(int(m.attrs.get("groups", 1)) for m in nxt if m.op == "MVAU")
            elif c.op in ("MaxPool", "Duplicate"):
                for o in c.outputs:
                    if o not in seen:
                        wants.add(self.packed_groups(o, seen | {stream}))
        wants.discard(0)
        if len(wants) > 1:
            raise CpuLoweringError(f"CPU runtime: bipolar stream {stream!r} is read with different group "
                                   f"layouts {sorted(wants)}")
        return wants.pop() if wants else 1

    def tensor(self, stream: str, packed: bool | None = None) -> int:
        s = self.g.streams[stream]
        if packed is None:
            packed = s.dtype.is_bipolar
        groups = self.packed_groups(stream) if packed else 1
        if packed and s.channels % groups:
            raise CpuLoweringError(f"CPU runtime: stream {stream!r}: {s.channels} channels, {groups} groups")
        self.tensors.append(CpuTensor(stream, tuple(s.shape), packed, groups, s.dtype))
        self.of[stream] = len(self.tensors) - 1
        return self.of[stream]

    def int_input(self, n: Node, stream: str) -> int:
        t = self.tensors[self.of[stream]]
        if not t.packed:
            return self.of[stream]
        # a packed stream read by an integer op: unpack it (+-1 as int32) once
        key = stream + "#int"
        if key not in self.of:
            self.tensors.append(CpuTensor(key, t.shape, False, 1, DType.int_(2)))
            self.of[key] = len(self.tensors) - 1
            H, W, C = t.shape
            self.ops.append(CpuOp("UNPACK", [self.of[stream]], self.of[key], {"H": H, "W": W, "C": C},
                                  nodes=[f"unpack({stream})"], layer=n.layer))
        return self.of[key]

    def check_int(self, n: Node, s: Stream) -> None:
        if s.dtype.is_bipolar:
            return
        if s.dtype.min < INT32_MIN or s.dtype.max > INT32_MAX:
            raise self.err(n, f"stream {s.name!r} is {s.dtype.finn_name()}, wider than the runtime's int32")

    def run(self) -> CpuProgram:
        g = self.g
        s_in = g.streams[g.input]
        if s_in.dtype.is_bipolar:
            # the runtime's input is int32 (+-1): pack it once, with the layout its consumers read
            key = g.input + "#int"
            self.tensors.append(CpuTensor(key, tuple(s_in.shape), False, 1, DType.int_(2)))
            self.of[key] = 0
            y = self.tensor(g.input)
            H, W, C = s_in.shape
            self.ops.append(CpuOp("THRESH", [0], y, {"H": H, "W": W, "C": C, "out_mode": OUT_PACKED, "n_thr": 1,
                                                      "out_groups": self.tensors[y].groups},
                                  [np.zeros(C, dtype=np.int32)], [f"pack({g.input})"], "input"))
            input_id = 0
        else:
            input_id = self.tensor(g.input)
            self.check_int(Node("input", "Duplicate", [], []), s_in)
        for n in g.nodes:
            if n.name in self.fused:
                continue
            for s in n.outputs:
                self.check_int(n, g.streams[s])
            backend_unit(self.EMITTERS, n, "the CPU runtime", CpuLoweringError)(self, n)
        out = self.of[g.output]
        if self.tensors[out].packed:
            out = self.int_input(g.nodes[-1], g.output)
        return CpuProgram(g.name, self.tensors, self.ops, input_id, out, dict(self.of))

    # ------------------------------------------------------------------ ops
    def op_Duplicate(self, n: Node) -> None:
        for o in n.outputs:
            self.of[o] = self.of[n.inputs[0]]

    def op_SWG(self, n: Node) -> None:
        cons = self.g.consumers(n.outputs[0])
        if len(cons) == 1 and cons[0].op in ("WindowMax", "WindowAvg"):
            self.fused.add(cons[0].name)
            self.window_pool(n, cons[0])
            return
        if len(cons) == 1 and cons[0].op == "Gather":
            tap, after = self.gather_tap(n, cons[0]), self.g.consumers(cons[0].outputs[0])
            if tap is not None and len(after) == 1 and after[0].op == "MVAU":
                self.fused.update((cons[0].name, after[0].name))
                self.conv(after[0], swg=n, tap=tap)
                return
        if len(cons) != 1 or cons[0].op != "MVAU":
            raise self.err(n, "a window generator must feed exactly one MVAU, window pool or single-tap gather "
                              "(then an MVAU) on the CPU")
        self.fused.add(cons[0].name)
        self.conv(cons[0], swg=n)

    def gather_tap(self, swg: Node, gather: Node) -> int | None:
        """``t`` where ``gather`` takes exactly tap ``(t, t)`` of ``swg``'s unpadded, undilated windows."""
        C = self.g.in_stream(swg).channels
        k = int(swg.attrs["k"])
        idx = np.asarray(gather.params["index"], dtype=np.int64).reshape(-1)
        if int(swg.attrs.get("pad", 0)) or int(swg.attrs.get("dilation", 1)) != 1 or idx.size != C:
            return None
        tap = int(idx[0]) // C
        if not np.array_equal(idx, tap * C + np.arange(C)) or tap // k != tap % k:
            return None
        return tap // k

    def window_pool(self, swg: Node, pool: Node) -> None:
        g = self.g
        H, W, C = g.in_stream(swg).shape
        Ho, Wo, _ = g.out_stream(pool).shape
        if int(swg.attrs.get("dilation", 1)) != 1:
            raise self.err(swg, "dilated window pools are not implemented")
        avg = pool.op == "WindowAvg"
        counts = (np.asarray(pool.params["counts"], dtype=np.int64).reshape(-1) if avg
                  else np.zeros(0, dtype=np.int64))
        if counts.size and (counts.min() < 1 or counts.max() > INT32_MAX):
            raise self.err(pool, "window pool divisors out of range")
        attrs = {"H": H, "W": W, "C": C, "Ho": Ho, "Wo": Wo, "k": int(swg.attrs["k"]),
                 "stride": int(swg.attrs.get("stride", 1)), "pad": int(swg.attrs.get("pad", 0)),
                 "pad_value": int(swg.attrs.get("pad_value", 0)), "out_mode": int(avg)}
        x = self.int_input(pool, swg.inputs[0])
        y = self.tensor(pool.outputs[0])
        self.ops.append(CpuOp("WPOOL", [x], y, attrs, [counts.astype(np.int32)], [swg.name, pool.name],
                              pool.layer))

    def op_WindowMax(self, n: Node) -> None:
        raise self.err(n, "a window pool must read a window generator's output")

    op_WindowAvg = op_WindowMax

    def op_Concat(self, n: Node) -> None:
        g = self.g
        ins = [self.int_input(n, s) for s in n.inputs]
        H, W, _ = g.out_stream(n).shape
        cur, cur_c = ins[0], g.streams[n.inputs[0]].channels
        for i in range(1, len(ins)):
            c2 = g.streams[n.inputs[i]].channels
            if i == len(ins) - 1:
                y = self.tensor(n.outputs[0], packed=False)
            else:
                key = f"{n.outputs[0]}#part{i}"
                self.tensors.append(CpuTensor(key, (H, W, cur_c + c2), False, 1, g.out_stream(n).dtype))
                self.of[key] = y = len(self.tensors) - 1
            self.ops.append(CpuOp("CONCAT", [cur, ins[i]], y, {"H": H, "W": W, "C": cur_c, "Cout": cur_c + c2},
                                  [], [n.name], n.layer))
            cur, cur_c = y, cur_c + c2

    def op_MVAU(self, n: Node) -> None:
        self.conv(n, swg=None)

    def conv(self, m: Node, swg: Node | None, tap: int | None = None) -> None:
        g = self.g
        src = swg.inputs[0] if swg else m.inputs[0]
        xs = g.streams[src]
        H, W, C = xs.shape
        outs = g.out_stream(m)
        Ho, Wo, Cout = outs.shape
        if swg is not None and tap is not None:        # one tap of unpadded windows: a 1 x 1 conv on a crop
            k, stride, pad, dil, pad_value = 1, int(swg.attrs.get("stride", 1)), -tap, 1, 0
        elif swg is not None:
            k, stride = int(swg.attrs["k"]), int(swg.attrs.get("stride", 1))
            pad, dil = int(swg.attrs.get("pad", 0)), int(swg.attrs.get("dilation", 1))
            pad_value = int(swg.attrs.get("pad_value", 0))
        else:
            k, stride, pad, dil, pad_value = 1, 1, 0, 1, 0
            if (Ho, Wo) != (H, W):
                raise self.err(m, f"reads a {H}x{W} stream directly but writes {Ho}x{Wo}")
        groups = int(m.attrs.get("groups", 1))
        w = np.asarray(m.params["weights"], dtype=np.int64)
        kk = k * k
        if C % groups or Cout % groups or w.shape != (Cout, kk * C // groups):
            raise self.err(m, f"weights {w.shape} do not match {k}x{k} x {C} channels / {groups} groups -> {Cout}")
        binary = bool(m.attrs.get("binary_xnor", False))
        if binary and not xs.dtype.is_bipolar:
            raise self.err(m, "XNOR-popcount unit on a non-bipolar input")
        if binary and pad and pad_value not in (-1, 0, 1):
            raise self.err(m, f"bipolar windows padded with {pad_value}")
        attrs = {"H": H, "W": W, "C": C, "Ho": Ho, "Wo": Wo, "Cout": Cout, "k": k, "stride": stride, "pad": pad,
                 "dil": dil, "groups": groups, "pad_value": pad_value}
        # accumulator range: the MVAU's declared accumulator (or its output when it has none)
        acc_lo, acc_hi = self.acc_range(m, w, xs.dtype, kk * C // groups)
        if acc_lo < INT32_MIN or acc_hi > INT32_MAX:
            raise self.err(m, f"accumulator range [{acc_lo}, {acc_hi}] exceeds int32")
        params: list[np.ndarray] = []
        if binary:
            words, pops = bipolar_weights_packed(w, kk)
            params = [words.reshape(-1), pops.reshape(-1)]
            op = "BCONV"
            x_id = self.of[src]
            if self.tensors[x_id].groups != groups:
                raise self.err(m, f"input packed with {self.tensors[x_id].groups} groups, conv has {groups}")
        else:
            op = "ICONV"
            x_id = self.int_input(m, src)
            xlo, xhi = (-1, 1) if xs.dtype.is_bipolar else (xs.dtype.min, xs.dtype.max)
            xlo, xhi = min(xlo, pad_value if pad else xlo), max(xhi, pad_value if pad else xhi)
            wmax = int(np.abs(w).max()) if w.size else 0
            xmax = max(abs(xlo), abs(xhi))
            s16 = (max(xmax, wmax) <= 32767 and 2 * xmax * wmax < (1 << 31)
                   and -32768 <= xlo and xhi <= 32767)
            attrs["use_s16"] = int(s16)
            if not s16 and (wmax > INT32_MAX):
                raise self.err(m, "weights wider than int32")
            params = [w.reshape(-1).astype(np.int16 if s16 else np.int32)]
        mode, thr_params = self.activation(m, Cout, acc_lo, acc_hi, attrs)
        params += thr_params
        if not thr_params:                                  # a fixed parameter count per opcode
            params.append(np.zeros(0, dtype=np.int32))
        y = self.tensor(m.outputs[0], packed=(mode == OUT_PACKED))
        attrs["out_groups"] = self.tensors[y].groups
        gather = self.g.producer(m.inputs[0]) if tap is not None else None
        nodes = ([swg.name] if swg else []) + ([gather.name] if gather is not None else []) + [m.name]
        self.ops.append(CpuOp(op, [x_id], y, attrs, params, nodes, m.layer))

    def acc_range(self, m: Node, w: np.ndarray, xt: DType, mw: int) -> tuple[int, int]:
        xlo, xhi = (-1, 1) if xt.is_bipolar else (xt.min, xt.max)
        lo, hi = acc_bounds(w, xlo, xhi)
        return min(lo, 0), max(hi, 0)

    def activation(self, n: Node, C: int, lo: int, hi: int, attrs: dict) -> tuple[int, list[np.ndarray]]:
        """Output mode and the threshold parameter of a thresholded node (thresholds clamped to the
        input's range [lo, hi], so they fit int32 whatever the IR stored)."""
        if "thresholds" not in n.params:
            attrs["out_mode"] = OUT_ACC
            return OUT_ACC, []
        t = np.asarray(n.params["thresholds"], dtype=np.int64)
        if t.ndim == 1:
            t = t[:, None]
        if t.shape[0] == 1 and C > 1:
            t = np.repeat(t, C, axis=0)
        if t.shape[0] != C:
            raise self.err(n, f"{t.shape[0]} threshold rows for {C} channels")
        if hi >= INT32_MAX:
            raise self.err(n, "thresholded input reaches the int32 maximum")
        t = np.clip(t, lo, hi + 1).astype(np.int32)      # acc >= t is unchanged on [lo, hi]
        out_bias, out_scale = int(n.attrs.get("out_bias", 0)), int(n.attrs.get("out_scale", 1))
        ot = self.g.out_stream(n).dtype
        if ot.is_bipolar:
            if t.shape[1] != 1 or out_bias != -1 or out_scale != 2:
                raise self.err(n, "bipolar output needs one threshold, out_bias -1 and out_scale 2")
            attrs.update(out_mode=OUT_PACKED, n_thr=1)
            return OUT_PACKED, [t.reshape(-1)]
        attrs.update(out_mode=OUT_MULTI, n_thr=int(t.shape[1]), out_bias=out_bias, out_scale=out_scale)
        if not np.all(np.diff(t, axis=1) >= 0):
            raise self.err(n, "thresholds are not sorted per channel")
        return OUT_MULTI, [t.reshape(-1)]

    def op_Thresholding(self, n: Node) -> None:
        xs = self.g.in_stream(n)
        H, W, C = xs.shape
        x = self.int_input(n, n.inputs[0])
        attrs = {"H": H, "W": W, "C": C}
        lo, hi = (-1, 1) if xs.dtype.is_bipolar else (xs.dtype.min, xs.dtype.max)
        mode, params = self.activation(n, C, lo, hi, attrs)
        if mode == OUT_ACC:
            raise self.err(n, "Thresholding without thresholds")
        y = self.tensor(n.outputs[0], packed=(mode == OUT_PACKED))
        attrs["out_groups"] = self.tensors[y].groups
        self.ops.append(CpuOp("THRESH", [x], y, attrs, params, [n.name], n.layer))

    def simple(self, n: Node, op: str, attrs: dict, params=(), inputs=None, packed_ok=False,
               same_groups=True) -> None:
        ins = inputs if inputs is not None else [
            self.of[s] if (packed_ok and self.tensors[self.of[s]].packed) else self.int_input(n, s) for s in n.inputs]
        packed = packed_ok and self.tensors[ins[0]].packed
        y = self.tensor(n.outputs[0], packed=packed)
        if packed and same_groups and self.tensors[y].groups != self.tensors[ins[0]].groups:
            raise self.err(n, "max pooling between packed layouts with different groups")
        self.ops.append(CpuOp(op, ins, y, attrs, [np.ascontiguousarray(p) for p in params], [n.name], n.layer))

    def op_MaxPool(self, n: Node) -> None:
        H, W, C = self.g.in_stream(n).shape
        self.simple(n, "MAXPOOL", {"H": H, "W": W, "C": C, "k": int(n.attrs["k"])}, packed_ok=True)

    def op_AvgPoolSum(self, n: Node) -> None:
        H, W, C = self.g.in_stream(n).shape
        self.simple(n, "AVGPOOLSUM", {"H": H, "W": W, "C": C, "k": int(n.attrs["k"])})

    def op_GlobalAvgPool(self, n: Node) -> None:
        H, W, C = self.g.in_stream(n).shape
        self.simple(n, "GAP", {"H": H, "W": W, "C": C})

    def op_Gather(self, n: Node) -> None:
        H, W, C = self.g.in_stream(n).shape
        idx = np.asarray(n.params["index"], dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= C):
            raise self.err(n, "gather index out of range")
        self.simple(n, "GATHER", {"H": H, "W": W, "C": C, "Cout": int(idx.size)}, [idx.astype(np.int32)],
                    packed_ok=True, same_groups=False)

    def op_AddRequant(self, n: Node) -> None:
        g = self.g
        xs = g.in_stream(n)
        H, W, C = xs.shape
        A, B = per_channel(n, "A", C), per_channel(n, "B", C)
        shift, ss = int(n.attrs["shift"]), int(n.attrs.get("shortcut_shift", 0))
        bound = max(abs(xs.dtype.min), abs(xs.dtype.max)) * int(np.abs(A).max()) + int(np.abs(B).max())
        if len(n.inputs) > 1:
            s2 = g.in_stream(n, 1).dtype
            if ss < 0:
                raise self.err(n, "negative shortcut shift")
            bound += max(abs(s2.min), abs(s2.max)) << ss
        if shift < 0:
            bound <<= -shift
        if bound >= (1 << 62):
            raise self.err(n, "intermediate exceeds int64")
        t = g.out_stream(n).dtype
        self.simple(n, "ADDREQUANT", {"H": H, "W": W, "C": C, "shift": shift, "shortcut_shift": ss,
                                      "lo": t.min, "hi": t.max}, [A, B])

    def op_RPReLU(self, n: Node) -> None:
        xs = self.g.in_stream(n)
        H, W, C = xs.shape
        frac = int(n.attrs["frac"])
        S_in, slope, S_out = (per_channel(n, k, C) for k in ("S_in", "slope", "S_out"))
        xmax = max(abs(xs.dtype.min), abs(xs.dtype.max)) + int(np.abs(S_in).max())
        bound = xmax * max(1 << frac, int(np.abs(slope).max())) + (int(np.abs(S_out).max()) << frac)
        if frac < 0 or bound >= (1 << 62):
            raise self.err(n, "intermediate exceeds int64")
        t = self.g.out_stream(n).dtype
        self.simple(n, "RPRELU", {"H": H, "W": W, "C": C, "frac": frac, "lo": t.min, "hi": t.max},
                    [S_in, slope, S_out])

    def op_LabelSelect(self, n: Node) -> None:
        H, W, C = self.g.in_stream(n).shape
        if int(n.attrs.get("k", 1)) != 1:
            raise self.err(n, "only k = 1")
        self.simple(n, "LABELSELECT", {"H": H, "W": W, "C": C})

    #: the kernel call of each op (tests/test_hw_ops.py checks it against the op registry)
    EMITTERS: ClassVar[dict[str, Callable]] = {
        "SWG": op_SWG, "MVAU": op_MVAU, "Thresholding": op_Thresholding, "MaxPool": op_MaxPool,
        "AvgPoolSum": op_AvgPoolSum, "GlobalAvgPool": op_GlobalAvgPool, "Gather": op_Gather,
        "Duplicate": op_Duplicate, "AddRequant": op_AddRequant, "RPReLU": op_RPReLU,
        "LabelSelect": op_LabelSelect, "WindowMax": op_WindowMax, "WindowAvg": op_WindowAvg, "Concat": op_Concat,
    }


#: the ops the CPU runtime has a kernel for (``tests/test_hw_ops.py`` checks it against the op registry)
CPU_OPS = frozenset(_Lowering.EMITTERS)


def lower_cpu(g: HwGraph) -> CpuProgram:
    """The CPU program of ``g`` (see the module docstring)."""
    return _Lowering(g).run()


# ----------------------------------------------------------------------------- serialisation
def _pad(buf: bytearray, align: int) -> None:
    buf.extend(b"\0" * (-len(buf) % align))


def _name(buf: bytearray, s: str) -> None:
    b = s.encode()
    buf.extend(struct.pack("<I", len(b)))
    buf.extend(b)
    _pad(buf, 4)


def to_bytes(p: CpuProgram) -> bytes:
    buf = bytearray(MAGIC)
    buf.extend(struct.pack("<8I", VERSION, len(p.tensors), len(p.ops), p.input, p.output, 0, 0, 0))
    for t in p.tensors:
        buf.extend(struct.pack("<5I", *t.shape, int(t.packed), t.groups))
        _name(buf, t.name)
    for o in p.ops:
        ins = list(o.inputs) + [0xFFFFFFFF] * (2 - len(o.inputs))
        buf.extend(struct.pack("<5I", OPCODES[o.op], len(o.inputs), ins[0], ins[1], o.output))
        slots = [0] * ATTRS
        for k, v in o.attrs.items():
            if not INT32_MIN <= int(v) <= INT32_MAX:
                raise CpuLoweringError(f"CPU runtime: {o.name}: attribute {k}={v} exceeds int32")
            slots[_A[k]] = int(v)
        buf.extend(struct.pack(f"<{ATTRS}i", *slots))
        _name(buf, o.name)
        buf.extend(struct.pack("<I", len(o.params)))
        for a in o.params:
            a = np.ascontiguousarray(a)
            if a.dtype not in DTYPES:
                raise CpuLoweringError(f"CPU runtime: {o.name}: parameter dtype {a.dtype}")
            buf.extend(struct.pack("<2I", DTYPES[a.dtype], a.size))
            _pad(buf, 8)
            buf.extend(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
            _pad(buf, 8)
    return bytes(buf)


def write_model(p: CpuProgram | HwGraph, path: str | Path) -> Path:
    """Write the model file (atomically); a :class:`HwGraph` is lowered first."""
    from ...spec import atomic_write_bytes

    if isinstance(p, HwGraph):
        p = lower_cpu(p)
    return atomic_write_bytes(path, to_bytes(p))


_NP: dict[int, np.dtype] = {v: k for k, v in DTYPES.items()}
_SLOT_NAMES = {op: names for op, names in {
    "BCONV": ("H", "W", "C", "Ho", "Wo", "Cout", "k", "stride", "pad", "dil", "groups", "out_mode", "out_groups",
              "n_thr", "out_bias", "out_scale", "pad_value"),
    "ICONV": ("H", "W", "C", "Ho", "Wo", "Cout", "k", "stride", "pad", "dil", "groups", "out_mode", "out_groups",
              "n_thr", "out_bias", "out_scale", "pad_value", "use_s16"),
    "THRESH": ("H", "W", "C", "out_mode", "out_groups", "n_thr", "out_bias", "out_scale"),
    "MAXPOOL": ("H", "W", "C", "k"), "AVGPOOLSUM": ("H", "W", "C", "k"), "GAP": ("H", "W", "C"),
    "GATHER": ("H", "W", "C", "Cout"), "ADDREQUANT": ("H", "W", "C", "shift", "shortcut_shift", "lo", "hi"),
    "RPRELU": ("H", "W", "C", "frac", "lo", "hi"), "LABELSELECT": ("H", "W", "C"), "UNPACK": ("H", "W", "C"),
    "CONCAT": ("H", "W", "C", "Cout"),
    "WPOOL": ("H", "W", "C", "Ho", "Wo", "k", "stride", "pad", "pad_value", "out_mode"),
}.items()}


def read_program(path: str | Path) -> CpuProgram:
    """Read a model file back into a :class:`CpuProgram` (the inverse of :func:`write_model`)."""
    data = Path(path).read_bytes()
    head = read_header(path)
    off = 40
    names = {v: k for k, v in OPCODES.items()}

    def u32(n: int = 1):
        nonlocal off
        v = struct.unpack_from(f"<{n}I", data, off)
        off += 4 * n
        return v

    def name() -> str:
        nonlocal off
        (n,) = u32()
        s = data[off:off + n].decode()
        off += n + (-n % 4)
        return s

    try:
        tensors = []
        for _ in range(head["tensors"]):
            H, W, C, packed, groups = u32(5)
            tensors.append(CpuTensor(name(), (H, W, C), bool(packed), groups))
        ops = []
        for _ in range(head["ops"]):
            code, n_in, i0, i1, out = u32(5)
            slots = struct.unpack_from(f"<{ATTRS}i", data, off)
            off += 4 * ATTRS
            op = names[code]
            attrs = {k: slots[_A[k]] for k in _SLOT_NAMES[op]}
            opname = name()
            (n_params,) = u32()
            params = []
            for _ in range(n_params):
                dt, count = u32(2)
                off += -off % 8
                dtype = _NP[dt].newbyteorder("<")
                params.append(np.frombuffer(data, dtype=dtype, count=count, offset=off).astype(_NP[dt]))
                off += count * dtype.itemsize
                off += -off % 8
            ops.append(CpuOp(op, [i0, i1][:n_in], out, attrs, params, opname.split("+")))
    except (struct.error, KeyError, ValueError, UnicodeDecodeError):
        raise BnhwError(f"{path}: corrupt bnhw CPU model file") from None
    streams = {t.name: i for i, t in enumerate(tensors)}
    return CpuProgram(Path(path).stem, tensors, ops, head["input"], head["output"], streams)


def read_header(path: str | Path) -> dict:
    """Magic, version and counts of a model file (for clear errors before the C loader runs)."""
    data = Path(path).read_bytes()[:40]
    if len(data) < 40 or data[:8] != MAGIC:
        raise BnhwError(f"{path}: not a bnhw CPU model file")
    version, nt, no, i, o = struct.unpack("<5I", data[8:28])
    if version != VERSION:
        raise BnhwError(f"{path}: model file version {version}, this bnhw reads version {VERSION}")
    return {"version": version, "tensors": nt, "ops": no, "input": i, "output": o}
