"""Find the nodes that compute between roundings to a float type narrower than float32.

Some graphs emulate bfloat16 or float16 arithmetic in float32: each step reads values
back from the narrow type (`Cast(Cast(x, to=BFLOAT16), to=FLOAT)`) and rounds its result
to it again. The DPU softmax of rules/dpu_softmax.py is one. A Q/DQ pair inside such a
chain would put an integer grid on values the target keeps in the narrow float type,
so the selection leaves these nodes alone.

A node is in the chain when two things hold. Every non-constant input is read back from
the narrow type, directly or through other nodes in the chain. Every output is rounded
to the narrow type, directly or through other nodes in the chain.
"""

from __future__ import annotations

import onnx_ir as ir

from qrewrite.model.graph_utils import constant_array

_NARROW_FLOATS = frozenset({ir.DataType.BFLOAT16, ir.DataType.FLOAT16})


def _cast_to(node: ir.Node) -> ir.DataType | None:
    if node.op_type != "Cast":
        return None
    to = node.attributes.get("to")
    return None if to is None else ir.DataType(to.as_int())


def _reads_back(node: ir.Node) -> bool:
    """Return whether `node` casts a narrow float tensor back to a wider type."""
    source = node.inputs[0] if node.op_type == "Cast" and node.inputs else None
    return source is not None and source.dtype in _NARROW_FLOATS


def _variable_inputs(node: ir.Node) -> list[ir.Value]:
    return [value for value in node.inputs if value is not None and constant_array(value) is None]


def narrow_float_nodes(graph: ir.Graph) -> frozenset[ir.Node]:
    """Return the main-graph nodes that compute between narrow float roundings."""
    nodes = list(graph)

    # Forward: values computed only from narrow float values.
    upstream: set[ir.Value] = set()
    for node in nodes:
        if _reads_back(node):
            upstream.update(node.outputs)
            continue
        variables = _variable_inputs(node)
        if node.op_type != "Cast" and variables and all(v in upstream for v in variables):
            upstream.update(node.outputs)

    # Backward: readers come later in graph order, so each is decided before its producer.
    chain: set[ir.Node] = set()

    def rounded(value: ir.Value) -> bool:
        uses = value.uses()
        return bool(uses) and all(
            _cast_to(use.node) in _NARROW_FLOATS or use.node in chain for use in uses
        )

    for node in reversed(nodes):
        if node.op_type == "Cast" or not node.outputs:
            continue
        variables = _variable_inputs(node)
        if variables and all(v in upstream for v in variables) and all(
            rounded(v) for v in node.outputs
        ):
            chain.add(node)
    return frozenset(chain)
