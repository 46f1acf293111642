"""One ONNX node on ONNX Runtime (what qonnx does for every standard node), for tests that pin how
PyTorch and ONNX Runtime round alike."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort


def run_onnxruntime(op: str, x: np.ndarray, weights: dict[str, np.ndarray] | None = None, **attrs) -> np.ndarray:
    """``op(x, *weights)`` with ``attrs``; ``weights`` become initializers, in order after ``x``."""
    weights = weights or {}
    node = onnx.helper.make_node(op, ["x", *weights], ["y"], **attrs)
    graph = onnx.helper.make_graph(
        [node], op, [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x.shape))],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(v, k) for k, v in weights.items()])
    m = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
