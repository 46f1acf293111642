"""ctypes binding of the simulator core (``engine.c``): pack a :class:`Netlist`, run, unpack.

The C file's field indices come from the tables here (prepended as ``#define``s
when the library is built), so Python and C can never disagree on a layout.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..cbuild import load_library, shared_library
from .netlist import LOOP_OPS, Netlist, SimError

__all__ = ["RawRun", "run_engine", "U_FIELDS", "P_FIELDS", "S_FIELDS", "UNBOUNDED"]

U_FIELDS = ("kind", "op", "nin", "nout", "in0", "in1", "in2", "out0", "out1", "out2", "out3", "positions",
            "latency", "in_words", "out_words", "cap", "pad", "PE", "SIMD", "MWg", "pixels", "G", "NFG", "SFG",
            "OG", "CF", "TC", "KK", "C", "nthr", "out_bias", "out_scale", "shift", "sc_shift", "ninputs", "frac",
            "lo", "hi", "in_width", "out_width", "period")
P_FIELDS = ("flags", "need", "oldest", "route", "W", "T", "A", "B", "S_in", "slope", "S_out", "counts")
S_FIELDS = ("busy", "starved", "stalled", "reads", "writes", "first_read", "first_write", "last_write",
            "frame0_last_write")
KINDS = {"loop": 0, "router": 1, "source": 2, "sink": 3}
#: depth used for an "unbounded" FIFO: at least a whole run's words
UNBOUNDED = -1


def _defines() -> str:
    lines = [f"#define U_{k} {i}" for i, k in enumerate(U_FIELDS)]
    lines += [f"#define P_{k} {i}" for i, k in enumerate(P_FIELDS)]
    lines += [f"#define S_{k} {i}" for i, k in enumerate(S_FIELDS)]
    lines += [f"#define U_FIELDS {len(U_FIELDS)}", f"#define P_FIELDS {len(P_FIELDS)}",
              f"#define S_FIELDS {len(S_FIELDS)}"]
    return "\n".join(lines) + "\n"


_LIB = None


def _lib():
    global _LIB
    if _LIB is None:
        src = resources.files("bnhw.hw.sim").joinpath("engine.c").read_text()
        path = shared_library("bnhw_sim", {"engine.c": _defines() + src}, ("-O2", "-std=c99"))
        lib = load_library(path)
        f = lib.sim_run
        f.restype = ctypes.c_int64
        f.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                      ctypes.c_int64, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                      ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        _LIB = lib
    return _LIB


@dataclass
class RawRun:
    cycles: int                  # cycles until the last output word left (-1: deadlock, -2: out of cycles)
    deadlock_cycle: int
    unit_stats: np.ndarray       # (units, S_FIELDS)
    fifo_max: np.ndarray         # (fifos,)
    frame_done: np.ndarray       # (frames,) cycle the last word of each frame left
    output: np.ndarray | None    # (frames, out elems) in the output FIFO's order


class _Packed:
    """The netlist as C arrays (built once per netlist, reused across runs)."""

    def __init__(self, net: Netlist):
        self.net = net
        nu = len(net.units)
        self.hdr = np.zeros((nu, len(U_FIELDS)), dtype=np.int64)
        self.keep: list[np.ndarray] = []
        self.ptrs = (ctypes.c_void_p * (nu * len(P_FIELDS)))()
        uix = {k: i for i, k in enumerate(U_FIELDS)}
        pix = {k: i for i, k in enumerate(P_FIELDS)}
        for k, u in enumerate(net.units):
            h = self.hdr[k]
            h[uix["kind"]] = KINDS[u.kind]
            if len(u.ins) > 3 or len(u.outs) > 4:
                raise SimError(f"{u.name}: the simulator supports 3 inputs and 4 outputs per unit")
            h[uix["nin"]], h[uix["nout"]] = len(u.ins), len(u.outs)
            for i, f in enumerate(u.ins):
                h[uix[f"in{i}"]] = f
            for i, f in enumerate(u.outs):
                h[uix[f"out{i}"]] = f
            if u.ins:
                h[uix["in_width"]] = net.fifos[u.ins[0]].width
                h[uix["in_words"]] = net.fifos[u.ins[0]].words
            if u.outs:
                h[uix["out_width"]] = net.fifos[u.outs[0]].width
                h[uix["out_words"]] = net.fifos[u.outs[0]].words
            if u.kind == "sink":
                h[uix["op"]] = 1 if u.name == "output_dma" else 0
            if u.kind == "loop":
                h[uix["op"]] = LOOP_OPS[u.op]
                h[uix["positions"]], h[uix["latency"]] = u.positions, u.latency
                self._ptr(k, pix["flags"], np.ascontiguousarray(u.flags, dtype=np.uint8))
            if u.kind == "router":
                h[uix["in_words"]], h[uix["out_words"]], h[uix["cap"]] = u.in_words, u.out_words, u.cap
                h[uix["pad"]] = u.pad
                self._ptr(k, pix["need"], np.ascontiguousarray(u.need, dtype=np.int32))
                self._ptr(k, pix["oldest"], np.ascontiguousarray(u.oldest, dtype=np.int32))
                self._ptr(k, pix["route"], np.ascontiguousarray(u.route, dtype=np.int64))
            for key, val in u.iparams.items():
                h[uix[key]] = int(val)
            for key, arr in u.arrays.items():
                self._ptr(k, pix[key], np.ascontiguousarray(arr, dtype=np.int64))

    def _ptr(self, unit: int, field: int, arr: np.ndarray) -> None:
        self.keep.append(arr)
        self.ptrs[unit * len(P_FIELDS) + field] = arr.ctypes.data


_PACKED: dict[int, _Packed] = {}


def _packed(net: Netlist) -> _Packed:
    p = _PACKED.get(id(net))
    if p is None or p.net is not net:
        p = _Packed(net)
        _PACKED.clear()                     # keep one: runs of the same netlist reuse it
        _PACKED[id(net)] = p
    return p


def run_engine(net: Netlist, depths: list[int] | np.ndarray, frames: int, *, inputs: np.ndarray | None = None,
               max_cycles: int | None = None, period: int = 0) -> RawRun:
    """Simulate ``frames`` frames with FIFO ``depths`` (``UNBOUNDED`` entries: never full).

    ``inputs`` ``(frames, in elems)`` (int, in input-FIFO order) switches the functional mode on;
    ``period > 0`` throttles the input DMA to one frame start every ``period`` cycles.
    """
    lib = _lib()
    pk = _packed(net)
    src = [i for i, u in enumerate(net.units) if u.kind == "source"][0]
    pk.hdr[src, U_FIELDS.index("period")] = int(period)
    nf = len(net.fifos)
    fh = np.zeros((nf, 2), dtype=np.int64)
    for i, (fo, d) in enumerate(zip(net.fifos, depths)):
        d = int(d)
        if d == UNBOUNDED:
            d = fo.words * frames + 2
        if d < 1:
            raise SimError(f"FIFO {fo.name}: depth {d} < 1")
        fh[i] = (d, fo.width)
    if max_cycles is None:
        per_frame = max([u.positions + u.latency for u in net.units if u.kind == "loop"]
                        + [u.in_words + u.out_words for u in net.units if u.kind == "router"] + [1])
        max_cycles = 64 * per_frame * (frames + 2) + 10_000
    stats = np.zeros((len(net.units), len(S_FIELDS)), dtype=np.int64)
    fstats = np.zeros(nf, dtype=np.int64)
    done = np.full(frames, -1, dtype=np.int64)
    dl = np.zeros(1, dtype=np.int64)
    functional = inputs is not None
    inp = out = None
    if functional:
        inp = np.ascontiguousarray(np.asarray(inputs).reshape(frames, -1), dtype=np.int32)
        out_fifo = net.fifos[net.unit("output_dma").ins[0]]
        out = np.zeros((frames, out_fifo.words * out_fifo.width), dtype=np.int32)
    cyc = lib.sim_run(len(net.units), pk.hdr.ctypes.data, pk.ptrs, nf, fh.ctypes.data, frames, int(functional),
                      int(max_cycles), stats.ctypes.data, fstats.ctypes.data, done.ctypes.data,
                      inp.ctypes.data if inp is not None else None, out.ctypes.data if out is not None else None,
                      dl.ctypes.data)
    return RawRun(int(cyc), int(dl[0]), stats, fstats, done, out)
