"""Small read-only helpers over onnx_ir graphs."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

FLOAT_TYPES = frozenset({ir.DataType.FLOAT})


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """Return the value's data if it is a true constant, else None.

    An initializer that is also a graph input is an overridable default, not a constant.
    Outputs of Constant nodes count as constants.
    """
    if value is None or value.is_graph_input():
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is None or producer.op_type != "Constant" or producer.domain not in ("", "ai.onnx"):
        return None
    attribute = producer.attributes.get("value")
    if attribute is not None and attribute.type == ir.AttributeType.TENSOR:
        return attribute.as_tensor().numpy()
    scalar = producer.attributes.get("value_float")
    if scalar is not None:
        return np.asarray(scalar.as_float(), dtype=np.float32)
    floats = producer.attributes.get("value_floats")
    if floats is not None:
        return np.asarray(floats.as_floats(), dtype=np.float32)
    return None


def is_float(value: ir.Value | None) -> bool:
    """Return True if the value is known to contain float32 data."""
    return value is not None and value.dtype in FLOAT_TYPES


def values_by_name(graph: ir.Graph) -> dict[str, ir.Value]:
    """Map every named value of the graph itself (not its subgraphs) to its object."""
    found: dict[str, ir.Value] = {}
    for value in graph.inputs:
        if value.name:
            found[value.name] = value
    for name, value in graph.initializers.items():
        found[name] = value
    for node in graph:
        for output in node.outputs:
            if output.name:
                found[output.name] = output
    return found


def node_order(graph: ir.Graph) -> dict[int, int]:
    """Map the id of every node of `graph` itself to its position."""
    return {id(node): i for i, node in enumerate(graph)}


def main_graph_uses(
    value: ir.Value, graph: ir.Graph, order: Mapping[int, int] | None = None
) -> list[tuple[ir.Node, int]]:
    """Uses of `value` by nodes of `graph` itself, in graph order, excluding subgraphs.

    `order` is `node_order(graph)`, which callers with many lookups compute once.
    """
    uses = [(use.node, use.idx) for use in value.uses() if use.node.graph is graph]
    if order is None:
        order = node_order(graph)
    return sorted(uses, key=lambda use: (order.get(id(use[0]), -1), use[1]))
