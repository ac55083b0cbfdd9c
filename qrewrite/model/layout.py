"""ConvertNCHWToNHWC: let a model that reads NCHW images take NHWC images instead.

Each 4-D float graph input of the main graph is declared as [N, H, W, C]. A Transpose
with perm [0, 3, 1, 2] right after it gives the rest of the model the NCHW tensor it
was built for. Calibration and evaluation samples must then be NHWC.
"""

from __future__ import annotations

import logging

import onnx
from onnx import helper

logger = logging.getLogger(__name__)

_TO_NCHW = [0, 3, 1, 2]


def _is_image_input(value: onnx.ValueInfoProto, initializers: set[str]) -> bool:
    tensor_type = value.type.tensor_type
    is_float = tensor_type.elem_type in (
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.DOUBLE,
    )
    rank = len(tensor_type.shape.dim) if tensor_type.HasField("shape") else None
    return is_float and rank == 4 and value.name not in initializers


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Point every reader of `old` in `graph` and in its subgraphs at `new`."""
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rename_uses(attribute.g, old, new)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for body in attribute.graphs:
                    _rename_uses(body, old, new)
    for output in graph.output:
        if output.name == old:
            output.name = new


def convert_nchw_to_nhwc(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of `model` whose 4-D float inputs are NHWC; the input is not changed."""
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    graph = converted.graph
    initializers = {tensor.name for tensor in graph.initializer}
    used_names = {name for node in graph.node for name in (*node.input, *node.output)}
    used_names |= {value.name for value in (*graph.input, *graph.output)}

    transposes = []
    for value in graph.input:
        if not _is_image_input(value, initializers):
            continue
        nchw = f"{value.name}_nchw"
        while nchw in used_names:
            nchw += "_"
        used_names.add(nchw)
        _rename_uses(graph, value.name, nchw)
        transposes.append(
            helper.make_node(
                "Transpose", [value.name], [nchw], name=f"{nchw}_transpose", perm=_TO_NCHW
            )
        )
        dims = value.type.tensor_type.shape.dim
        copies = [onnx.TensorShapeProto.Dimension() for _ in range(4)]
        for target, source in zip(copies, (dims[0], dims[2], dims[3], dims[1]), strict=True):
            target.CopyFrom(source)
        del dims[:]
        dims.extend(copies)
        logger.info("graph input %r now takes NHWC data", value.name)

    if transposes:
        nodes = [*transposes, *graph.node]
        del graph.node[:]
        graph.node.extend(nodes)
        del graph.value_info[:]
    return converted
