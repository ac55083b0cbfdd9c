"""Small float models built with onnx.helper for the calibration tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def make_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto] | None = None,
    opset: int = OPSET,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def relu_chain(shape: list[int | str | None] | None = None, opset: int = OPSET) -> onnx.ModelProto:
    """x -> Mul(2) -> 'doubled' -> Relu -> 'y'; `shape` defaults to [None, 4]."""
    shape = [None, 4] if shape is None else shape
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    return make_model(
        [
            helper.make_node("Mul", ["x", "two"], ["doubled"]),
            helper.make_node("Relu", ["doubled"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [two],
        opset,
    )


def identity_output_input() -> onnx.ModelProto:
    """A model whose graph input 'x' is also a graph output, next to 'y' = x + 1."""
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    return make_model(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [None]),
        ],
        [one],
    )


def log_model() -> onnx.ModelProto:
    """y = Log(x): negative inputs give NaN, zeros give -inf."""
    return make_model(
        [helper.make_node("Log", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
    )


def two_input_model() -> onnx.ModelProto:
    """'s' = a + b with a float [2, 3] and b float [2, 3]; 'w' is an initializer input."""
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    return make_model(
        [
            helper.make_node("Add", ["a", "b"], ["s"]),
            helper.make_node("Mul", ["s", "w"], ["y"]),
        ],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [w],
    )


class ListReader:
    """A CalibrationDataReader over a list of samples, as onnxruntime users write them."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self.samples = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.samples, None)
