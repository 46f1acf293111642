"""Brevitas networks from :class:`~bnhw.spec.ArchSpec`, checkpoints and QONNX export.

* :func:`build_model` / :class:`BinaryNet` -- the network for a spec
  (:mod:`bnhw.quant.layers` documents the blocks and the quantiser placement);
* :func:`recalibrate_bn` -- re-estimate batch-norm statistics on data;
* :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`load_model`;
* :func:`export_qonnx`, :func:`execute_qonnx`, :func:`binary_tensors`.
"""

from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .export import binary_tensors, execute_qonnx, export_qonnx
from .model import BinaryNet, baked_copy, build_model, recalibrate_bn

__all__ = [
    "BinaryNet",
    "baked_copy",
    "binary_tensors",
    "build_model",
    "execute_qonnx",
    "export_qonnx",
    "load_checkpoint",
    "load_model",
    "recalibrate_bn",
    "save_checkpoint",
]
