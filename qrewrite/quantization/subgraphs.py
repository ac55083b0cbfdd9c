"""Model-wide keys for the nodes and values of If, Loop and Scan bodies, and their configs.

Selection, plan and materialize refer to nodes and tensors by name. Names inside bodies
need not be unique across the model: both branches of an If may define the same value
name, and body nodes are often unnamed. `ScopedNames` therefore keys each body node and
value by the path of control-flow nodes above it, such as `if_0/then_branch/conv` for
node `conv` in the then branch of node `if_0`. Main-graph nodes and values keep their
own names as keys. A value that a body reads from an enclosing graph keeps the key of
the graph that defines it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import attrs
import onnx_ir as ir

from qrewrite.config import QConfig, QLayerConfig
from qrewrite.quantization.node_config import layer_overrides, matches_pattern


@attrs.frozen
class Body:
    """One subgraph attribute of a node, with the key of that node."""

    graph: ir.Graph
    owner_key: str
    attribute: str


def node_bodies(node: ir.Node, owner_key: str) -> Iterator[Body]:
    """Yield the GRAPH and GRAPHS attributes of `node` in attribute order."""
    for name, attribute in node.attributes.items():
        if attribute.type == ir.AttributeType.GRAPH:
            yield Body(attribute.as_graph(), owner_key, name)
        elif attribute.type == ir.AttributeType.GRAPHS:
            for index, graph in enumerate(attribute.as_graphs()):
                yield Body(graph, owner_key, f"{name}[{index}]")


class ScopedNames:
    """Keys of every node and value of a model, unique across the main graph and bodies.

    The keys depend only on the graph's structure and names, so a clone of the graph
    gets the same keys.
    """

    def __init__(self, graph: ir.Graph) -> None:
        self.main_graph = graph
        self.node_keys: dict[int, str] = {}
        self.value_keys: dict[int, str] = {}
        self.nodes: dict[str, ir.Node] = {}
        self.values: dict[str, ir.Value] = {}
        # Bodies in depth-first order, each before the bodies nested in it.
        self.bodies: list[Body] = []
        self._add_graph(graph, prefix="")

    def node_key(self, node: ir.Node) -> str:
        return self.node_keys.get(id(node), node.name or "")

    def value_key(self, value: ir.Value) -> str:
        return self.value_keys.get(id(value), value.name or "")

    def _unique(self, key: str, used_keys: Mapping[str, object]) -> str:
        unique, counter = key, 0
        while unique in used_keys:
            counter += 1
            unique = f"{key}#{counter}"
        return unique

    def _add_value(self, value: ir.Value, prefix: str) -> None:
        if id(value) in self.value_keys or not value.name:
            return
        key = f"{prefix}{value.name}"
        if prefix:
            key = self._unique(key, self.values)
        self.value_keys[id(value)] = key
        self.values[key] = value

    def _add_graph(self, graph: ir.Graph, prefix: str) -> None:
        # The same order as values_by_name, so main-graph keys are the names it maps.
        for value in graph.inputs:
            self._add_value(value, prefix)
        for value in graph.initializers.values():
            self._add_value(value, prefix)
        for index, node in enumerate(graph):
            for output in node.outputs:
                self._add_value(output, prefix)
            if prefix:
                key = self._unique(f"{prefix}{node.name or f'{node.op_type}#{index}'}", self.nodes)
            else:
                key = node.name or ""
            self.node_keys[id(node)] = key
            self.nodes[key] = node
        for node in graph:
            for body in node_bodies(node, self.node_key(node)):
                self.bodies.append(body)
                self._add_graph(body.graph, f"{body.owner_key}/{body.attribute}/")


def body_layer_configs(
    names: ScopedNames, main_configs: dict[str, QLayerConfig | None], config: QConfig
) -> dict[str, QLayerConfig | None]:
    """Return the layer config of every body node, by its scoped key.

    The precedence is that of the main graph (`node_config.node_layer_configs`): a
    name or pattern in `exclude`, then `specific_layer_config`, then `layer_type_config`,
    then `global_config`. Names and patterns match the node's own name or its key. An
    `exclude` entry given as start and end nodes covers main-graph nodes only, but
    excluding an If, Loop or Scan node, in any way, excludes everything in its bodies.
    """
    by_type, by_name = layer_overrides(config)
    patterns = [entry for entry in config.exclude if isinstance(entry, str)]

    excluded_owners = {key for key, layer in main_configs.items() if layer is None}
    resolved: dict[str, QLayerConfig | None] = {}
    for body in names.bodies:
        owner_excluded = body.owner_key in excluded_owners
        for node in body.graph:
            key = names.node_key(node)
            own = node.name or ""
            named = any(
                matches_pattern(pattern, own) or matches_pattern(pattern, key)
                for pattern in patterns
            )
            if owner_excluded or named:
                resolved[key] = None
            elif key in by_name or own in by_name:
                resolved[key] = by_name.get(key, by_name.get(own))
            elif node.op_type in by_type:
                resolved[key] = by_type[node.op_type]
            else:
                resolved[key] = config.global_config
            if resolved[key] is None:
                excluded_owners.add(key)
    return resolved
