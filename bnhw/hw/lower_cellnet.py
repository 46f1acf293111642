"""Lower a fixed-point cell network (BNAS v2 / BARS, :class:`~bnhw.quant.cellnet.CellNet`) to the hardware IR,
bit-exactly.

A ``residual="fixed"`` cell net is integer arithmetic throughout (see :mod:`bnhw.quant.cellnet`), so, like
:mod:`bnhw.hw.lower_binarynet`, its lowering reads the integer constants off the model::

    stem:      as a NAS-BNN net's (lower_binarynet.lower_stem)
    cell k (layer "cell{k}"; states s0 = pre0(c_{k-2}), s1 = pre1(c_{k-1}), then the nodes):
      binary conv (pre0, pre1, every conv edge, each half of a separable conv):
                 Thresholding (sign: X >= 0, one per state, shared by its convs)
                 -> SWG (k x k, dilation, stride, zero padding; none for a 1 x 1 stride-1 conv)
                 -> MVAU (XNOR-popcount, groups) -> AddRequant (beta folded into the dyadic BN, requantiser)
      factorised reduce: sign -> SWG 1 x 1 stride 2 -> MVAU (first half) and
                 sign -> SWG 2 x 2 stride 2 -> Gather (the window's tap (1, 1): the input shifted by one
                 pixel) -> MVAU (second half); each -> AddRequant; Concat
      max pool:  SWG (3 x 3, stride, padding with the type's minimum) -> WindowMax
      avg pool:  SWG (3 x 3, stride, zero padding) -> WindowAvg (round_half_even(sum / in-image taps))
      zeroise:   no node (a node with one zeroise edge is its other edge)
      node:      AddRequant (A = 1, shift 0: the saturating sum of its two edges)
      skip:      AddRequant(node, s1) per node; in a reduction cell AvgPoolSum 2 x 2 of s1 and
                 AddRequant(node, sum, A = 4, shift 2)
      output:    Concat of the nodes (a one-node cell: the node itself)
    head:      as a NAS-BNN net's (lower_binarynet.lower_head)

Every stream read by several units gets a ``Duplicate`` (hardware streams have one reader).  The streams
are the fixed-point model's tensors divided by ``2**-residual_frac_bits`` (HWC); every ``Thresholding``
output is the QONNX ``BipolarQuant`` activation of the model's binary convs reading that state.
:meth:`~bnhw.spec.cells.CellNetSpec.hardware_gaps` names what does not lower.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import BnhwError
from ..quant.cellnet import (
    CellNet,
    FactorizedReduce,
    FixedAvgPool,
    FixedBinConvOp,
    avg_pool_counts,
    cell_baked_copy,
)
from ..quant.cellops import BinSepConvOp, op_geometry
from .ir import DType, HwGraph, Node
from .lower_binarynet import GraphBuilder, binary_mvau, lower_head, lower_stem, residual_dtype, window_weights
from .ops import get_op

__all__ = ["lower_cellnet"]


class _Lowering:
    def __init__(self, model: CellNet):
        self.m = model
        self.p = model.spec.precision
        self.res = residual_dtype(self.p)
        self.b = GraphBuilder()
        self.signs: dict[str, str] = {}            # state stream -> its sign (Thresholding output)

    def shape(self, s: str) -> tuple[int, int, int]:
        return self.b.streams[s].shape

    # ------------------------------------------------------------------ binary convolutions
    def sign(self, x: str, layer: str) -> str:
        if x not in self.signs:
            H, W, C = self.shape(x)
            (s,) = self.b.node("Thresholding", [x], [(f"{x}.sign", (H, W, C), DType.bipolar())], layer,
                               {"out_bias": -1, "out_scale": 2, "channels": C},
                               {"thresholds": np.zeros((C, 1), dtype=np.int64)})
            self.signs[x] = s
        return self.signs[x]

    def conv(self, op: FixedBinConvOp, x: str, name: str, layer: str, shifted: bool = False) -> str:
        """``op`` on state ``x`` (``shifted``: on ``x[1:, 1:]``, the second half of a factorised reduce)."""
        b = self.b
        H, _, C = self.shape(x)
        c = op.conv
        k, stride, dil, groups = c.kernel_size[0], c.stride[0], c.dilation[0], c.groups
        pad = c.padding[0]
        s = self.sign(x, layer)
        if shifted:                       # a 1 x 1 stride-2 conv on x[1:, 1:]: tap (1, 1) of the 2 x 2 windows
            if (k, stride, pad) != (1, 2, 0) or H % 2:
                raise AssertionError(f"{name}: a factorised reduce is a 1 x 1 stride-2 conv on an even size")
            Ho = H // 2
            (w,) = b.node("SWG", [s], [(f"{name}.window", (Ho, Ho, 4 * C), DType.bipolar())], layer,
                          {"k": 2, "stride": 2, "pad": 0, "pad_value": 0, "dilation": 1, "channels": C,
                           "ifm_dim": H})
            (s,) = b.node("Gather", [w], [(f"{name}.shifted", (Ho, Ho, C), DType.bipolar())], layer,
                          {"channels": 4 * C}, {"index": 3 * C + np.arange(C)})
        else:
            Ho = (H + 2 * pad - dil * (k - 1) - 1) // stride + 1
            if k > 1 or stride > 1:
                (s,) = b.node("SWG", [s], [(f"{name}.window", (Ho, Ho, k * k * C), DType.bipolar(padded=pad > 0))],
                              layer, {"k": k, "stride": stride, "pad": pad, "pad_value": 0, "dilation": dil,
                                      "channels": C, "ifm_dim": H})
        w = c.quant_weight().value.detach().numpy()
        wmat = np.rint(window_weights(w)).astype(np.int64)
        if not np.all(np.abs(wmat) == 1):
            raise AssertionError(f"{name}: binary weights are not +-1")
        cout = wmat.shape[0]
        if op.fan_in != (C // groups) * k * k:
            raise AssertionError(f"{name}: fan-in {op.fan_in} is not {C // groups} x {k} x {k}")
        acc = binary_mvau(b, s, f"{name}.acc", wmat, Ho, layer, k=k, channels=C, groups=groups)
        A, B = op.constants()
        fmt = op.fmt
        (out,) = b.node("AddRequant", [acc], [(f"{name}.out", (Ho, Ho, cout), self.res)], layer,
                        {"shift": fmt.a.frac - self.p.residual_frac_bits, "shortcut_shift": 0},
                        {"A": fmt.a.integers(A).reshape(-1), "B": fmt.b.integers(B).reshape(-1)})
        return out

    def factorized_reduce(self, fr: FactorizedReduce, x: str, name: str, layer: str) -> str:
        assert isinstance(fr.conv_a, FixedBinConvOp)
        a = self.conv(fr.conv_a, x, f"{name}.a", layer)
        if fr.conv_b is None:
            return a
        assert isinstance(fr.conv_b, FixedBinConvOp)
        bb = self.conv(fr.conv_b, x, f"{name}.b", layer, shifted=True)
        return self.concat([a, bb], name, layer)

    def concat(self, parts: list[str], name: str, layer: str) -> str:
        if len(parts) == 1:
            return parts[0]
        H, W, _ = self.shape(parts[0])
        C = sum(self.shape(p)[2] for p in parts)
        (out,) = self.b.node("Concat", parts, [(f"{name}.concat", (H, W, C), self.res)], layer,
                             {"channels": [self.shape(p)[2] for p in parts]})
        return out

    # ------------------------------------------------------------------ pools
    def pool(self, module, kind: str, x: str, name: str, layer: str) -> str:
        b = self.b
        H, _, C = self.shape(x)
        k, pad = 3, 1
        stride = module.stride if isinstance(module.stride, int) else module.stride[0]
        Ho = (H + 2 * pad - k) // stride + 1
        pad_value = self.res.min if kind == "max_pool" else 0
        (w,) = b.node("SWG", [x], [(f"{name}.window", (Ho, Ho, k * k * C), self.res)], layer,
                      {"k": k, "stride": stride, "pad": pad, "pad_value": pad_value, "dilation": 1,
                       "channels": C, "ifm_dim": H})
        if kind == "max_pool":
            (out,) = b.node("WindowMax", [w], [(f"{name}.out", (Ho, Ho, C), self.res)], layer,
                            {"k": k, "channels": C})
        else:
            assert isinstance(module, FixedAvgPool)
            (out,) = b.node("WindowAvg", [w], [(f"{name}.out", (Ho, Ho, C), self.res)], layer,
                            {"k": k, "channels": C}, {"counts": avg_pool_counts(H, k, stride, pad)})
        return out

    def edge(self, op_name: str, module, x: str, name: str, layer: str) -> str | None:
        kind = op_geometry(op_name).kind
        if kind == "zero":
            return None
        if kind in ("max_pool", "avg_pool"):
            return self.pool(module, kind, x, name, layer)
        if kind == "sep_conv":
            assert isinstance(module, BinSepConvOp)
            assert isinstance(module.depthwise, FixedBinConvOp) and isinstance(module.pointwise, FixedBinConvOp)
            y = self.conv(module.depthwise, x, f"{name}.dw", layer)
            return self.conv(module.pointwise, y, f"{name}.pw", layer)
        assert isinstance(module, FixedBinConvOp)
        return self.conv(module, x, name, layer)

    def add(self, x: str, y: str, name: str, layer: str, a: int = 1, shift: int = 0) -> str:
        H, W, C = self.shape(x)
        (out,) = self.b.node("AddRequant", [x, y], [(name, (H, W, C), self.res)], layer,
                             {"shift": shift, "shortcut_shift": 0},
                             {"A": np.full(C, a, dtype=np.int64), "B": np.zeros(C, dtype=np.int64)})
        return out

    # ------------------------------------------------------------------ cells
    def cell(self, k: int, cell, c_pp: str, c_p: str) -> str:
        plan = cell.plan
        layer = f"cell{k}"
        s0 = s1 = None
        if cell.pre0 is not None:
            s0 = (self.factorized_reduce(cell.pre0, c_pp, f"{layer}.pre0", layer)
                  if isinstance(cell.pre0, FactorizedReduce) else self.conv(cell.pre0, c_pp, f"{layer}.pre0", layer))
        if cell.pre1 is not None:
            s1 = self.conv(cell.pre1, c_p, f"{layer}.pre1", layer)
        states: list[str | None] = [s0, s1]
        for i in range(plan.nodes):
            outs = []
            for e in (2 * i, 2 * i + 1):
                op_name, src, _ = plan.edges[e]
                x = states[src]
                assert x is not None                   # a read state is built
                outs.append(self.edge(op_name, cell.edges[e], x, f"{layer}.node{i}.e{e - 2 * i}", layer))
            live = [o for o in outs if o is not None]
            if not live:
                raise AssertionError(f"{layer} node {i}: no edge to lower (CellNetSpec.hardware_gaps names it)")
            states.append(live[0] if len(live) == 1 else self.add(live[0], live[1], f"{layer}.node{i}", layer))
        nodes = [s for s in states[2:] if s is not None]
        if plan.skip:
            assert s1 is not None
            if plan.reduction:
                H, _, C = self.shape(s1)
                (pooled,) = self.b.node("AvgPoolSum", [s1], [(f"{layer}.skip", (H // 2, H // 2, C),
                                                              DType.int_(self.res.bits + 2, True,
                                                                         self.res.scale / 4))],
                                        layer, {"k": 2, "channels": C})
                nodes = [self.add(n, pooled, f"{n}+skip", layer, a=4, shift=2) for n in nodes]
            else:
                nodes = [self.add(n, s1, f"{n}+skip", layer) for n in nodes]
        return self.concat(nodes, f"{layer}.out", layer)


#: the most outputs of one Duplicate (the cycle simulator's units have at most four)
MAX_FANOUT = 4


def _with_duplicates(b: GraphBuilder, output: str) -> list[Node]:
    """``b``'s nodes with a ``Duplicate`` after every stream that several inputs read (in reading order), and
    every node renamed ``{finn_name}_{i}`` in graph order."""
    readers: dict[str, list[tuple[int, int]]] = {}
    for j, n in enumerate(b.nodes):
        for i, s in enumerate(n.inputs):
            readers.setdefault(s, []).append((j, i))
    nodes = [Node(n.name, n.op, list(n.inputs), list(n.outputs), n.attrs, n.params, n.layer) for n in b.nodes]
    after: dict[int, list[Node]] = {}
    producer = {s: j for j, n in enumerate(nodes) for s in n.outputs}
    for s, rs in readers.items():
        if len(rs) < 2:
            continue
        t = b.streams[s]
        layer = nodes[producer[s]].layer if s in producer else nodes[rs[0][0]].layer
        src, todo, r = s, list(rs), 0
        while todo:                  # at most MAX_FANOUT outputs per Duplicate: a chain of them
            here = todo if len(todo) <= MAX_FANOUT else todo[:MAX_FANOUT - 1]
            todo = todo[len(here):]
            outs = []
            for j, i in here:
                name = f"{s}#{r}"
                r += 1
                b.stream(name, t.shape, t.dtype)
                nodes[j].inputs[i] = name
                outs.append(name)
            if todo:
                outs.append(b.stream(f"{s}#more{r}", t.shape, t.dtype))
            after.setdefault(producer.get(s, -1), []).append(Node("", "Duplicate", [src], outs, {"n": len(outs)},
                                                                  {}, layer))
            src = outs[-1]
    ordered = list(after.get(-1, []))
    for j, n in enumerate(nodes):
        ordered.append(n)
        ordered.extend(after.get(j, []))
    count: dict[str, int] = {}
    out = []
    for n in ordered:
        prefix = get_op(n.op).finn_name
        i = count.get(prefix, 0)
        count[prefix] = i + 1
        out.append(Node(f"{prefix}_{i}", n.op, n.inputs, n.outputs, n.attrs, n.params, n.layer))
    return out


@torch.no_grad()
def lower_cellnet(model: CellNet, progress: Callable[[str], None] | None = None) -> HwGraph:
    """The hardware IR of a ``residual="fixed"`` :class:`~bnhw.quant.cellnet.CellNet`.

    ``HwGraph.execute(integer_input(model, x)[i])`` reproduces the fixed-point model's state tensors
    (divided by the residual scale; ``graph.meta["cell_outputs"]`` names each cell's output stream) and
    binary activations bit for bit and returns the classifier
    accumulator (logits via ``graph.meta["head"]``).  A float-mode model is refused (convert it with
    :func:`bnhw.quant.model.to_fixed`), and so is a construct ``spec.hardware_gaps()`` names.
    ``model`` is not modified.
    """
    spec = model.spec
    p = spec.precision
    if not p.fixed:
        raise BnhwError(f"lower_cellnet: {spec.name or 'the network'} has a float residual path "
                        "(precision.residual='float'); convert it with bnhw.quant.model.to_fixed first")
    gaps = spec.hardware_gaps()
    if gaps:
        raise BnhwError(f"lower_cellnet: {spec.name or 'the network'}: {gaps[0]}")
    m = cell_baked_copy(model)
    low = _Lowering(m)
    b = low.b
    x, stem = lower_stem(b, m.stem, p, spec.in_channels, spec.resolution, 3, 1, spec.stem_channels)
    c_pp = c_p = stem
    cell_outputs = []
    for k, cell in enumerate(m.cells):
        if progress is not None:
            progress(f"cell {k + 1}/{len(m.cells)}")
        c_pp, c_p = c_p, low.cell(k, cell, c_pp, c_p)
        cell_outputs.append(c_p)
    fs, _, C = low.shape(c_p)
    logits, head = lower_head(b, m.classifier, p, c_p, fs, C, spec.num_classes)
    nodes = _with_duplicates(b, logits)
    sb = p.stem_bits
    meta = {"source": "bnhw.CellNet", "spec": spec.to_dict(), "head": head,
            "input": {"bits": sb, "frac_bits": sb - 1},
            "residual": {"bits": p.residual_bits, "frac_bits": p.residual_frac_bits},
            "cell_outputs": cell_outputs}
    return HwGraph(spec.name or "cellnet", b.streams, nodes, x, logits, meta)
