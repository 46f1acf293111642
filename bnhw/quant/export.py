"""QONNX export of bnhw networks, QONNX execution, and binary-tensor probes.

:func:`export_qonnx` writes a cleaned-up QONNX graph (opset of Brevitas'
TorchScript exporter, batch size 1): the network input goes through a
``Quant`` node (``stem_bits`` fixed point), the stem weights through another;
binary weights and activations are ``BipolarQuant`` nodes (an activation
binariser is ``Sub`` (threshold) + ``BipolarQuant``); batch norms are ``Mul``
+ ``Add`` with folded constants; RPReLU is ``Sub`` + ``PRelu`` + ``Add``; the
stride-2 shortcut is an ``AveragePool`` and a width-changing shortcut a
``Gather`` on the channel axis; the head is ``GlobalAveragePool``,
``Flatten``, ``Gemm``.  In ``residual="fixed"`` mode the real-valued path
carries ``Quant`` nodes with scale ``2**-residual_frac_bits`` and the
classifier weights a ``Quant`` node (see :mod:`bnhw.quant.layers` for where).
Cell networks (:class:`~bnhw.quant.cellnet.CellNet`) export the same way:
each XNOR binary conv is a ``BipolarQuant`` activation, a ``Conv`` with
``BipolarQuant`` (scale 1) weights and a per-channel ``Mul`` by its scale
``beta``, then the BN's ``Mul`` + ``Add``; the cell pools are ``MaxPool`` /
``AveragePool``, zeroise a ``Mul`` by 0, the factorised reduce a ``Slice``,
a cell output a ``Concat`` (see :mod:`bnhw.quant.cellnet`).

:func:`execute_qonnx` runs such a graph with qonnx (node by node) and can
return every ``BipolarQuant`` output; :func:`binary_tensors` collects the
same tensors from the PyTorch model, in the same order, so that the two can
be compared one by one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from brevitas.export import export_qonnx as brevitas_export_qonnx
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from onnx import NodeProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.change_batchsize import ChangeBatchSize
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.cleanup import cleanup_model
from torch import Tensor, nn

from ..errors import BnhwError
from ..spec import ArchSpec
from .cellops import BinConvOp
from .checkpoint import load_model, write_file
from .layers import BinaryConv2d, LearnableSign
from .model import BinaryNet, baked_copy

if TYPE_CHECKING:
    from ..spec.cells import CellNetSpec
    from .cellnet import CellNet

__all__ = ["binary_tensors", "execute_qonnx", "execution_order", "export_qonnx", "load_qonnx"]


def export_qonnx(model_or_spec: BinaryNet | ArchSpec | CellNet | CellNetSpec, path: str | os.PathLike, *,
                 checkpoint: str | os.PathLike | None = None) -> Path:
    """Export a network to a cleaned-up QONNX file at ``path`` (written atomically).

    ``model_or_spec`` is a :class:`~bnhw.quant.model.BinaryNet` or a
    :class:`~bnhw.quant.cellnet.CellNet` (exported with its weights), or an
    :class:`~bnhw.spec.ArchSpec` or a :class:`~bnhw.spec.cells.CellNetSpec`
    (built with fresh weights).  With ``checkpoint`` the network of that spec (the model's
    spec, for a model) gets the checkpoint's weights instead (see
    :func:`~bnhw.quant.checkpoint.load_model`).  A model passed in is not
    modified: the export runs on an eval-mode copy whose weight transforms
    are baked into plain weights.  The graph has a fixed batch size of 1
    (input ``global_in``, output ``global_out``).
    """
    from ..spec.protocol import NetworkSpec
    from .cellnet import CellNet, cell_baked_copy

    model: BinaryNet | CellNet
    if isinstance(model_or_spec, BinaryNet | CellNet):
        model = model_or_spec if checkpoint is None else load_model(model_or_spec.spec, checkpoint)
    elif isinstance(model_or_spec, NetworkSpec):
        model = load_model(model_or_spec, checkpoint)
    else:
        raise TypeError(f"expected a BinaryNet, a CellNet or their spec, got {type(model_or_spec).__name__}")
    plain = cell_baked_copy(model) if isinstance(model, CellNet) else baked_copy(model)
    with tempfile.TemporaryDirectory(prefix="bnhw-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad():
            brevitas_export_qonnx(plain, args=torch.zeros(plain.input_shape(1)),
                                  export_path=str(raw), dynamo=False)
        clean = _cleanup(ModelWrapper(str(raw)), torch_order=isinstance(model, CellNet))
    return write_file(path, clean.model.SerializeToString())


_ORDER_TAG = "bnhw-order:"
_SPLIT_TAG = "bnhw-split"


def _cleanup(raw: ModelWrapper, *, torch_order: bool) -> ModelWrapper:
    """qonnx's ``cleanup_model``, safe for nodes that read one tensor twice; with ``torch_order`` the
    nodes are then put back in the exporter's order (PyTorch's execution order).

    qonnx's tensor renaming replaces only the first occurrence of a name in
    a node's inputs, so repeated inputs are split before the cleanup and
    joined after it (:func:`_split_repeated_inputs`).  qonnx's cleanup also
    sorts the graph; in a branching cell network the sorted order interleaves
    the binarisers of different branches, while :func:`binary_tensors`
    records them in PyTorch's order.  The exporter's order (a topological
    one) is kept in each node's ``doc_string`` across the cleanup, and the
    nodes are put back in it.  Their names keep the numbering of the sorted
    graph (qonnx's renaming transforms would sort the graph again).
    """
    if torch_order:
        for i, n in enumerate(raw.graph.node):
            n.doc_string = f"{_ORDER_TAG}{i}"
    split = _split_repeated_inputs(raw)
    clean = cleanup_model(raw)
    if not (torch_order or split):
        return clean
    nodes = []
    for n in clean.graph.node:                    # copies: the originals go with the field's clearing
        c = NodeProto()
        c.CopyFrom(n)
        nodes.append(c)
    nodes = _join_repeated_inputs(clean, nodes)
    if torch_order:
        if not all(n.doc_string.startswith(_ORDER_TAG) for n in nodes):
            raise BnhwError("QONNX export: the cleanup introduced nodes of unknown order")  # pragma: no cover
        nodes.sort(key=lambda n: int(n.doc_string[len(_ORDER_TAG):]))
        for n in nodes:
            n.doc_string = ""
    del clean.graph.node[:]
    clean.graph.node.extend(nodes)
    return clean


def _split_repeated_inputs(raw: ModelWrapper) -> int:
    """Give a node's repeated input (``Concat(a, a)``) an ``Identity`` (tagged) per extra use; returns
    how many.

    The TorchScript exporter merges identical computations, so a cell whose
    node states coincide (say two nodes that both add the same two pools)
    concatenates one tensor several times.  After the split every input name
    of a node is distinct; :func:`_join_repeated_inputs` removes the
    ``Identity`` nodes again.
    """
    new_nodes = []
    for n in raw.graph.node:
        seen: set[str] = set()
        for k, name in enumerate(n.input):
            if name == "" or name not in seen:
                seen.add(name)
                continue
            dup = f"{name}__{_SPLIT_TAG}_{n.name}_{k}"
            new_nodes.append(helper.make_node("Identity", [name], [dup], name=f"{n.name}_split{k}",
                                              doc_string=_SPLIT_TAG))
            n.input[k] = dup
    raw.graph.node.extend(new_nodes)
    return len(new_nodes)


def _join_repeated_inputs(model: ModelWrapper, nodes: list[NodeProto]) -> list[NodeProto]:
    """Drop the ``Identity`` nodes of :func:`_split_repeated_inputs`, rewiring their consumers."""
    source = {n.output[0]: n.input[0] for n in nodes if n.doc_string == _SPLIT_TAG}
    if not source:
        return nodes
    for n in nodes:
        for k, name in enumerate(n.input):
            if name in source:
                n.input[k] = source[name]
    keep = [vi for vi in model.graph.value_info if vi.name not in source]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    return [n for n in nodes if n.doc_string != _SPLIT_TAG]


def load_qonnx(path: str | os.PathLike) -> ModelWrapper:
    """Open a QONNX file as a qonnx ``ModelWrapper``; unreadable files raise :class:`BnhwError`."""
    p = Path(path)
    if not p.is_file():
        raise BnhwError(f"{p}: no such file")
    try:
        return ModelWrapper(str(p))
    except Exception as e:  # onnx raises DecodeError, ValueError, ... on garbage
        raise BnhwError(f"{p}: not a readable ONNX model ({type(e).__name__})") from None


def _with_batch(model: ModelWrapper, batch: int) -> ModelWrapper:
    """``model`` itself if its batch size is ``batch``, else a re-shaped copy."""
    if model.get_tensor_shape(model.graph.input[0].name)[0] == batch:
        return model
    # the graph is already clean: skip qonnx's (quadratic) post-transform cleanup
    return model.transform(ChangeBatchSize(batch), cleanup=False).transform(InferShapes(), cleanup=False)


def execution_order(model: ModelWrapper) -> list[NodeProto]:
    """The graph's nodes in a canonical execution order.

    A topological order in which every node that depends on initializers
    only (weight quantisers) comes right before its first consumer, and all
    other nodes keep the graph's order.  For a bnhw network each binary conv
    is thus preceded by its activation ``BipolarQuant`` and then its weight
    ``BipolarQuant`` -- the order in which PyTorch evaluates them.
    """
    nodes = list(model.graph.node)
    produced_by = {out: n for n in nodes for out in n.output}
    runtime: set[str] = {i.name for i in model.graph.input}
    for n in nodes:  # graph order is topological: propagate "depends on the input"
        if any(i in runtime for i in n.input):
            runtime.update(n.output)
    order: list[NodeProto] = []
    placed: set[int] = set()

    def place(n: NodeProto) -> None:
        if id(n) in placed:
            return
        for i in n.input:
            if i in produced_by:
                place(produced_by[i])
        placed.add(id(n))
        order.append(n)

    for n in nodes:
        if any(o in runtime for o in n.output):
            place(n)
    for n in nodes:  # nodes that feed nothing on the runtime path
        place(n)
    return order


def execute_qonnx(model: str | os.PathLike | ModelWrapper, x: np.ndarray | Tensor, *,
                  return_binary: bool = False) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
    """Run a QONNX graph on a batch ``x`` (N x C x R x R) with qonnx's ``execute_onnx``.

    Returns the logits (N x num_classes); with ``return_binary`` also the
    outputs of all ``BipolarQuant`` nodes (binary activations, N x C x H x W,
    and binary weights) in :func:`execution_order`.
    """
    mw = model if isinstance(model, ModelWrapper) else load_qonnx(model)
    x = np.ascontiguousarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x,
                             dtype=np.float32)
    expected = mw.get_tensor_shape(mw.graph.input[0].name)
    if x.ndim != len(expected) or list(x.shape[1:]) != list(expected[1:]):
        raise ValueError(f"input of shape {tuple(x.shape)} does not fit the graph input "
                         f"(N, {', '.join(map(str, expected[1:]))})")
    mw = _with_batch(mw, x.shape[0])
    iname, oname = mw.graph.input[0].name, mw.graph.output[0].name
    ctx = execute_onnx(mw, {iname: x}, return_full_exec_context=return_binary)
    logits = ctx[oname]
    if not return_binary:
        return logits
    binary = [ctx[n.output[0]] for n in execution_order(mw) if n.op_type == "BipolarQuant"]
    return logits, binary


def _is_one_bit(m: nn.Module, quant: str) -> bool:
    """A Brevitas ``QuantIdentity`` (``act_quant``) or ``QuantConv2d`` / ``QuantLinear`` (``weight_quant``) at 1 bit."""
    kinds = (QuantIdentity,) if quant == "act_quant" else (QuantConv2d, QuantLinear)
    if not isinstance(m, kinds):
        return False
    q = getattr(m, quant, None)
    bits = getattr(q, "bit_width", None)
    try:
        return q is not None and bits is not None and float(bits()) == 1.0
    except TypeError:
        return False


@torch.no_grad()
def binary_tensors(model: nn.Module, x: Tensor, *, weights: bool = True) -> list[np.ndarray]:
    """Every binary tensor of one forward pass of ``model`` on ``x``, in execution order.

    Collected with forward hooks on the binarisers: each
    :class:`~bnhw.quant.layers.LearnableSign` output (binary activations) and,
    with ``weights``, each :class:`~bnhw.quant.layers.BinaryConv2d` weight
    quantiser output (binary weights); in a cell network each
    :class:`~bnhw.quant.cellops.BinConvOp`'s ``sign`` output and conv weight
    quantiser output; in BNN-PYNQ's reference networks each 1-bit
    ``QuantIdentity`` output and 1-bit ``QuantConv2d`` / ``QuantLinear``
    weight (a Linear weight transposed to the ``(in, out)`` layout of its
    ONNX ``MatMul``).  With ``weights`` the list matches
    :func:`execute_qonnx`'s binary list one to one.  The model runs in its
    current mode (use eval mode to compare with an export).
    """
    out: list[np.ndarray] = []

    def hook(_module: nn.Module, _inputs: object, output: Any) -> None:   # a Tensor or a Brevitas QuantTensor
        value = getattr(output, "value", output)  # weight quantisers return a QuantTensor
        out.append(value.detach().cpu().numpy().copy())

    def hook_transposed(_module: nn.Module, _inputs: object, output: Any) -> None:
        out.append(getattr(output, "value", output).detach().cpu().numpy().T.copy())

    handles = []
    # plain Brevitas layers (the reference nets) only where bnhw's binarisers are absent: those hold
    # 1-bit Brevitas quantisers inside them
    plain = not any(isinstance(m, (LearnableSign, BinaryConv2d, BinConvOp)) for m in model.modules())
    for m in model.modules():
        if isinstance(m, LearnableSign):
            handles.append(m.register_forward_hook(hook))
        elif weights and isinstance(m, BinaryConv2d):
            handles.append(m.weight_quant.register_forward_hook(hook))
        elif isinstance(m, BinConvOp):
            handles.append(m.sign.register_forward_hook(hook))
            if weights:
                handles.append(m.conv.weight_quant.register_forward_hook(hook))
        elif plain and _is_one_bit(m, "act_quant"):           # BNN-PYNQ's reference nets: 1-bit QuantIdentity
            handles.append(m.register_forward_hook(hook))
        elif plain and weights and _is_one_bit(m, "weight_quant"):       # ... and their 1-bit QuantConv2d / QuantLinear
            linear = isinstance(m, QuantLinear)               # (out, in) here, ONNX's MatMul holds (in, out)
            wq = m.weight_quant
            assert isinstance(wq, nn.Module)                  # _is_one_bit: a Brevitas weight quantiser
            handles.append(wq.register_forward_hook(hook_transposed if linear else hook))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return out
