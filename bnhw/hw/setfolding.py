"""FINN's ``SetFolding`` transformation, reimplemented on a :class:`~bnhw.hw.ir.HwGraph`.

Mirrors ``finn/transformation/fpgadataflow/set_folding.py`` of finn-plus 1.6.1 (written
afresh; the cycle models are :mod:`bnhw.hw.finn_models`).  For every node, in
graph order, the folding attribute is raised through the divisors of its maximum until
the node's expected cycles meet ``target_cycles_per_frame``:

* MVAU (FINN ``MVAU_hls``): PE = SIMD = 1; SIMD through the divisors of MW until the
  target is met, reverting the last step and stopping once ``weight bits * SIMD`` exceeds
  ``mvau_wwidth_max``; then (``internal_decoupled``) PE through the divisors of MH until
  the target is met, reverting and stopping once the weight stream ``PE*SIMD*bits``
  exceeds ``MAX_ALLOWED_AP_INT_W`` (8191).
* depthwise MVAU (FINN ``VVAU_hls``) and MaxPool / AvgPoolSum (FINN ``Pool_hls``): SIMD
  = 1, PE through the divisors of the channels; a VVAU at full PE that still misses the
  target raises SIMD through the divisors of k*k; the depthwise sliding window feeding
  it gets SIMD = PE, and PE keeps rising while that window generator misses the target;
  the window generator's ``parallel_window`` is set when the VVAU's SIMD > 1.
* SWG (non-depthwise ``ConvolutionInputGenerator_rtl``): its FMPadding (``pad > 0``,
  attribute ``pad_simd``) and then its SIMD through the divisors of the input channels;
  ``parallel_window = 1`` when SIMD = C still misses the target.
* Thresholding, GlobalAvgPool, Duplicate (FINN's PE ops) and bnhw's AddRequant / RPReLU
  (folded as FINN's ElementwiseBinary PE ops): PE through the divisors of the channels;
  LabelSelect: PE through the divisors of the label count; the cell nets' WindowMax / WindowAvg (Pool_hls
  behind their SWG) and Concat (StreamingConcat): PE through their legal values.  Gather: nothing to fold.
* ``two_pass_relaxation``: when the slowest node still misses the target, run once more
  with the achieved maximum as target (balancing the pipeline to the bottleneck).
"""

from __future__ import annotations

from .finn_models import MAX_ALLOWED_AP_INT_W, FinnOp, finn_dt_bits, minimized_attrs, op_cycles
from .ir import HwGraph, Node
from .ops import divisors, finn_ops, get_op, is_depthwise, node_cycles

__all__ = ["finn_set_folding"]


def _op(g: HwGraph, n: Node, op_type: str, role: str | None = None) -> FinnOp:
    for o in finn_ops(g, n):
        if o.op_type == op_type and (role is None or o.role == role):
            return o
    raise KeyError(f"{n.name}: no {op_type}")


class _Folder:
    def __init__(self, g: HwGraph, target: int, wwidth_max: int):
        self.g = g
        self.target = target
        self.wwidth_max = wwidth_max
        self.missed = False
        self.touched: dict[str, set[str]] = {}

    def _set(self, n: Node, key: str, val: int) -> None:
        n.attrs[key] = int(val)
        self.touched.setdefault(n.name, set()).add(key)

    def _cyc(self, n: Node, op_type: str, role: str | None = None) -> int:
        return op_cycles(_op(self.g, n, op_type, role))

    def optimize(self, n: Node, max_val: int, key: str, op_type: str, role: str | None = None) -> None:
        """SetFolding.optimize_attribute_val."""
        self._set(n, key, 1)
        for val in divisors(max_val):
            self._set(n, key, val)
            if self._cyc(n, op_type, role) <= self.target:
                return
        self.missed = True

    # ------------------------------------------------------------------ per kind
    def mvau(self, n: Node) -> None:
        op = _op(self.g, n, "MVAU_hls")
        a = minimized_attrs(op)
        wbits = finn_dt_bits(a["weightDataType"])
        max_simd, max_pe = a["MW"], a["MH"]
        self._set(n, "pe", 1)
        self._set(n, "simd", 1)
        for simd_val in divisors(max_simd):
            prev = n.simd
            self._set(n, "simd", simd_val)
            if self._cyc(n, "MVAU_hls") <= self.target:
                break
            if wbits * n.simd > self.wwidth_max:
                self.missed = True
                self._set(n, "simd", prev)
                break
        if a.get("mem_mode", "internal_decoupled") == "internal_decoupled":
            self._set(n, "pe", 1)
            prev_pe = 1
            for val in divisors(max_pe):
                self._set(n, "pe", val)
                cyc = self._cyc(n, "MVAU_hls")
                if n.pe * n.simd * wbits > MAX_ALLOWED_AP_INT_W:
                    self._set(n, "pe", prev_pe)
                    self.missed = True
                    break
                if cyc <= self.target:
                    break
                prev_pe = val
        else:
            self.optimize(n, max_pe, "pe", "MVAU_hls")

    def depthwise(self, n: Node) -> None:
        """VVAU_hls / Pool_hls with their depthwise window generator."""
        g = self.g
        vvau = n.op == "MVAU"
        op_type = "VVAU_hls" if vvau else "Pool_hls"
        a = _op(g, n, op_type).attrs
        max_pe = a["Channels"]
        if vvau:
            self._set(n, "simd", 1)
        self.optimize(n, max_pe, "pe", op_type)
        pe = n.pe
        if vvau and pe == max_pe and self._cyc(n, op_type) > self.target:
            k_h, k_w = a["Kernel"]
            self.optimize(n, k_h * k_w, "simd", op_type)
        # the depthwise SWG: a separate IR node (VVAU) or part of the pooling node
        if vvau:
            swu = g.producer(n.inputs[0])
            if swu is None or swu.op != "SWG":
                if a["Kernel"][0] * a["Kernel"][1] != 1:
                    raise ValueError(f"{n.name}: expected an SWG in front of a depthwise MVAU")
                return
            role = "main"
        else:
            swu, role = n, "swg"

        def swg_cyc() -> int:
            return op_cycles(_op(g, swu, "ConvolutionInputGenerator_rtl", role))

        if vvau:
            self._set(swu, "simd", pe)
        if swg_cyc() > self.target:
            for val in divisors(max_pe):
                if val <= pe:
                    continue
                pe = val
                self._set(n, "pe", pe)
                if vvau:
                    self._set(swu, "simd", pe)
                if swg_cyc() <= self.target:
                    break
            else:
                self.missed = True
        if vvau:
            self._set(swu, "parallel_window", 1 if n.simd > 1 else 0)

    def swg(self, n: Node) -> None:
        c = self.g.in_stream(n).channels
        if int(n.attrs.get("pad", 0)) > 0:        # the FMPadding_rtl in front (a SIMD op)
            self.optimize(n, c, "pad_simd", "FMPadding_rtl")
        cons = self.g.consumers(n.outputs[0])
        if len(cons) == 1 and is_depthwise(self.g, cons[0]):
            return                                 # set by its depthwise consumer
        self._set(n, "parallel_window", 0)
        self.optimize(n, c, "simd", "ConvolutionInputGenerator_rtl", "main")
        if n.simd == c and self._cyc(n, "ConvolutionInputGenerator_rtl", "main") > self.target:
            self._set(n, "parallel_window", 1)

    def pe_op(self, n: Node, max_pe: int) -> None:
        self._set(n, "pe", 1)
        for val in divisors(max_pe):
            self._set(n, "pe", val)
            if node_cycles(self.g, n) <= self.target:
                return
        self.missed = True

    def run(self) -> None:
        g = self.g
        for n in g.nodes:
            if n.op == "MVAU":
                if is_depthwise(g, n):
                    self.depthwise(n)
                else:
                    self.mvau(n)
            elif n.op in ("MaxPool", "AvgPoolSum"):
                self.depthwise(n)
            elif n.op == "SWG":
                self.swg(n)
            elif n.op in ("Thresholding", "GlobalAvgPool", "Duplicate", "AddRequant", "RPReLU",
                          "LabelSelect"):
                self.pe_op(n, g.in_stream(n).channels)
            elif n.op in ("WindowMax", "WindowAvg", "Concat"):       # Pool_hls behind its SWG; StreamingConcat
                self.pe_op(n, max(get_op(n.op).legal_pe(g, n)))
            # Gather: pure wiring, nothing to fold


def _fold_pass(g: HwGraph, target: int, wwidth_max: int) -> tuple[HwGraph, dict[str, set[str]]]:
    work = g.copy()
    f = _Folder(work, int(target), int(wwidth_max))
    f.run()
    return work, f.touched


def finn_set_folding(g: HwGraph, target_cycles_per_frame: int, mvau_wwidth_max: int = 36,
                     two_pass_relaxation: bool = True) -> HwGraph:
    """FINN's SetFolding on ``g``: a new graph with ``pe`` / ``simd`` (and the SWG's
    ``parallel_window`` / ``pad_simd``) set to meet ``target_cycles_per_frame``."""
    work, touched = _fold_pass(g, target_cycles_per_frame, mvau_wwidth_max)
    if two_pass_relaxation:
        max_cycles = max((node_cycles(work, n) for n in work.nodes), default=0)
        if max_cycles > target_cycles_per_frame:
            work, touched2 = _fold_pass(work, max_cycles, mvau_wwidth_max)
            for k, v in touched2.items():
                touched.setdefault(k, set()).update(v)
    folding = {}
    extras = {}
    for name, keys in touched.items():
        node = work.node(name)
        folding[name] = {k.upper(): node.attrs[k] for k in keys if k in ("pe", "simd")}
        extras[name] = {k: node.attrs[k] for k in keys if k not in ("pe", "simd")}
    out = g.with_folding(folding)
    for name, ex in extras.items():
        out.node(name).attrs.update(ex)
    return out
