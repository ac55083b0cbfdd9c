"""without_large_initializers: a weight-free copy for onnx shape inference."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qrewrite.model.shapes import without_large_initializers


def _conv_reshape_model() -> onnx.ModelProto:
    """Conv with a 147 KB weight, then a Reshape whose small shape input needs data propagation."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(64, 64, 3, 3)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Reshape", ["relu", "shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[weight, shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _value_types(model: onnx.ModelProto) -> dict[str, str]:
    graph = model.graph
    return {value.name: str(value.type) for value in (*graph.value_info, *graph.output)}


def test_copy_infers_same_shapes() -> None:
    model = _conv_reshape_model()

    full = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    stripped = onnx.shape_inference.infer_shapes(
        without_large_initializers(model), strict_mode=True, data_prop=True
    )

    assert _value_types(stripped) == _value_types(full)
    output_dims = [dim.dim_value for dim in stripped.graph.output[0].type.tensor_type.shape.dim]
    assert output_dims == [1, 64 * 8 * 8]


def test_copy_drops_only_large_weights() -> None:
    model = _conv_reshape_model()

    stripped = without_large_initializers(model)

    assert [tensor.name for tensor in stripped.graph.initializer] == ["shape"]
    weight_input = next(value for value in stripped.graph.input if value.name == "w")
    assert weight_input.type.tensor_type.elem_type == TensorProto.FLOAT
    assert [dim.dim_value for dim in weight_input.type.tensor_type.shape.dim] == [64, 64, 3, 3]
    assert stripped.ByteSize() < model.ByteSize() // 50


def test_copy_leaves_input_unchanged() -> None:
    model = _conv_reshape_model()
    before = model.SerializeToString(deterministic=True)

    without_large_initializers(model)

    assert model.SerializeToString(deterministic=True) == before
