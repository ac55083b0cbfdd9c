"""Shape and type inference on an onnx_ir model, linear in the number of initializers."""

from __future__ import annotations

import logging

import onnx
import onnx_ir as ir

logger = logging.getLogger(__name__)


# Initializers above this size are hidden from onnx shape inference as typed inputs,
# so it does not copy their data. Smaller ones stay, for data propagation.
_SHAPE_INFERENCE_MAX_TENSOR_BYTES = 1024


def _serialize_for_shape_inference(model: ir.Model) -> onnx.ModelProto:
    """Serialize the model with large initializers turned into typed graph inputs.

    onnx_ir's ShapeInferencePass (1.1.0) does the same, but its membership test on the
    input list makes it quadratic in the number of initializers.
    """
    graph = model.graph
    inputs_before = list(graph.inputs)
    known_inputs = set(inputs_before)
    hidden = []
    for value in list(graph.initializers.values()):
        tensor = value.const_value
        if tensor is None or tensor.nbytes <= _SHAPE_INFERENCE_MAX_TENSOR_BYTES:
            continue
        if value.shape is None:
            value.shape = ir.Shape(tensor.shape.numpy())
        if value.dtype is None:
            value.dtype = tensor.dtype
        hidden.append(value)
        if value not in known_inputs:
            graph.inputs.append(value)
        assert value.name is not None  # Every initializer has a name.
        graph.initializers.pop(value.name)
    try:
        return ir.serde.serialize_model(model)
    finally:
        graph.inputs.clear()
        graph.inputs.extend(inputs_before)
        for value in hidden:
            graph.register_initializer(value)


def infer_shapes(model: ir.Model) -> None:
    """Set the dtype and shape of every value that onnx shape inference can infer.

    Rule checks need ranks and static dimensions, and quantization needs element types.
    When inference fails, a warning is logged and the values keep what they had.
    """
    proto = _serialize_for_shape_inference(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as error:
        logger.warning(
            "shape inference failed; rules and quantization of values without a known type "
            "will skip them: %s",
            error,
        )
        return
    inferred_model = ir.serde.deserialize_model(inferred)
    for graph, inferred_graph in zip(model.graphs(), inferred_model.graphs(), strict=True):
        inferred_values = ir.convenience.create_value_mapping(inferred_graph)
        for name, value in ir.convenience.create_value_mapping(graph).items():
            found = inferred_values.get(name)
            if found is None:
                continue
            if found.shape is not None:
                value.shape = found.shape
            if found.dtype is not None:
                value.dtype = found.dtype


def without_large_initializers(
    model: onnx.ModelProto, max_bytes: int = _SHAPE_INFERENCE_MAX_TENSOR_BYTES
) -> onnx.ModelProto:
    """Return a copy of `model` whose main-graph initializers above `max_bytes` are inputs.

    Each such input has the type and shape of the initializer it replaces, so onnx shape
    inference on the copy infers the same types and shapes, and the weight data is never
    copied. Small initializers stay, for data propagation. `model` is not changed.
    """
    graph = model.graph
    stripped = onnx.ModelProto(ir_version=model.ir_version)
    stripped.opset_import.extend(model.opset_import)
    stripped.functions.extend(model.functions)
    copy = stripped.graph
    copy.name = graph.name
    copy.node.extend(graph.node)
    copy.input.extend(graph.input)
    copy.output.extend(graph.output)
    copy.value_info.extend(graph.value_info)
    copy.sparse_initializer.extend(graph.sparse_initializer)
    input_names = {value.name for value in graph.input}
    for tensor in graph.initializer:
        if tensor.ByteSize() <= max_bytes:
            copy.initializer.append(tensor)
        elif tensor.name not in input_names:
            copy.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
            )
    return stripped
