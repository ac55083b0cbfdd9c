"""ConvertFP16ToFP32: turn a float16 model into a float32 model before quantizing.

Every float16 tensor becomes float32: initializers, Constant and ConstantOfShape values,
graph inputs, outputs and value_info, and the `to` or `dtype` attribute of Cast and of
ops that create tensors. Subgraphs of If, Loop and Scan are converted too. Values stored
as float16 are exact in float32, so the converted model computes the same function with
float32 rounding.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

logger = logging.getLogger(__name__)

_FLOAT16 = onnx.TensorProto.FLOAT16
_FLOAT = onnx.TensorProto.FLOAT
# Attributes that name an element type.
_TYPE_ATTRIBUTES = ("to", "dtype")


def _convert_tensor(tensor: onnx.TensorProto) -> bool:
    if tensor.data_type != _FLOAT16:
        return False
    array = numpy_helper.to_array(tensor).astype(np.float32)
    converted = numpy_helper.from_array(array, tensor.name)
    tensor.CopyFrom(converted)
    return True


def _convert_value(value: onnx.ValueInfoProto) -> None:
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type == _FLOAT16:
        tensor_type.elem_type = _FLOAT


def _convert_graph(graph: onnx.GraphProto) -> int:
    count = sum(_convert_tensor(tensor) for tensor in graph.initializer)
    for value in (*graph.input, *graph.output, *graph.value_info):
        _convert_value(value)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                count += _convert_tensor(attribute.t)
            elif attribute.type == onnx.AttributeProto.GRAPH:
                count += _convert_graph(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                count += sum(_convert_graph(body) for body in attribute.graphs)
            elif attribute.name in _TYPE_ATTRIBUTES and attribute.i == _FLOAT16:
                attribute.i = _FLOAT
    return count


def has_float16(model: onnx.ModelProto) -> bool:
    """Whether any graph input, output or initializer of the main graph is float16."""
    graph = model.graph
    values = (*graph.input, *graph.output)
    return any(v.type.tensor_type.elem_type == _FLOAT16 for v in values) or any(
        t.data_type == _FLOAT16 for t in graph.initializer
    )


def convert_float16_to_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a float32 copy of `model`; the input is not changed."""
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    count = _convert_graph(converted.graph)
    logger.info("converted %d float16 tensors to float32", count)
    return converted
