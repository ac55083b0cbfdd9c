"""Fresh names that are unique across a whole model, subgraphs and value_info included."""

from __future__ import annotations

import onnx
import onnx_ir as ir


def _graph_names(graph: ir.Graph, names: set[str]) -> None:
    if graph.name:
        names.add(graph.name)
    for graph_value in (*graph.inputs, *graph.outputs, *graph.initializers.values()):
        if graph_value.name:
            names.add(graph_value.name)
    for node in graph:
        if node.name:
            names.add(node.name)
        for value in (*node.inputs, *node.outputs):
            if value is not None and value.name:
                names.add(value.name)
        for attribute in node.attributes.values():
            if attribute.type == ir.AttributeType.GRAPH:
                _graph_names(attribute.as_graph(), names)
            elif attribute.type == ir.AttributeType.GRAPHS:
                for subgraph in attribute.as_graphs():
                    _graph_names(subgraph, names)


class NameAllocator:
    """Hands out names not used anywhere in the model, and remembers them."""

    def __init__(self, model: ir.Model) -> None:
        self._taken: set[str] = set()
        _graph_names(model.graph, self._taken)
        for function in model.functions.values():
            self._taken.add(function.name)
            _graph_names(function.graph, self._taken)

    def fresh(self, base: str) -> str:
        """Return `base`, or `base_1`, `base_2`, ... whichever is still free."""
        base = base or "unnamed"
        name, counter = base, 0
        while name in self._taken:
            counter += 1
            name = f"{base}_{counter}"
        self._taken.add(name)
        return name


def name_unnamed_nodes(model: ir.Model) -> None:
    """Give every main-graph node a name unique in the model, in place.

    Nodes without a name, or sharing one with an earlier node, get `<op_type>_<n>`.
    """
    allocator = NameAllocator(model)
    seen: set[str] = set()
    for node in model.graph:
        if not node.name or node.name in seen:
            node.name = allocator.fresh(f"{node.op_type}_node")
        seen.add(node.name)


def restore_node_names(original: onnx.ModelProto, simplified: onnx.ModelProto) -> int:
    """Give renamed main-graph nodes of `simplified` their names from `original`, in place.

    A simplifier that folds a node into another (onnxslim's Conv + Add bias fold, say)
    names the result after its output tensor. A node of `simplified` whose name is not in
    `original` takes the name of the one original node with the same op type, domain
    and first input, if that name is free. Exclude lists and layer configs then keep
    matching the names of the user's model. Returns the number of nodes renamed.
    """
    original_names = {node.name for node in original.graph.node if node.name}
    by_key: dict[tuple[str, str, str], list[str]] = {}
    for node in original.graph.node:
        if node.name and node.input:
            by_key.setdefault(_node_key(node), []).append(node.name)
    used = {node.name for node in simplified.graph.node if node.name}
    renamed = 0
    for node in simplified.graph.node:
        if node.name in original_names or not node.input:
            continue
        candidates = by_key.get(_node_key(node), [])
        if len(candidates) == 1 and candidates[0] not in used:
            used.discard(node.name)
            node.name = candidates[0]
            used.add(node.name)
            renamed += 1
    return renamed


def _node_key(node: onnx.NodeProto) -> tuple[str, str, str]:
    return node.domain, node.op_type, node.input[0]
