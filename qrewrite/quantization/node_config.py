"""Resolve each node's QLayerConfig from the global config and its overrides.

Precedence, strongest first: `exclude`, `specific_layer_config` by node name,
`layer_type_config` by op type, then `global_config`. A node that resolves to None
stays float.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import onnx_ir as ir

from qrewrite.config import QConfig, QLayerConfig
from qrewrite.errors import ConfigError

logger = logging.getLogger(__name__)


def matches_pattern(pattern: str, name: str) -> bool:
    """Return whether an exclude entry names `name` exactly or as a regular expression."""
    if pattern == name:
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def _subgraph_nodes(graph: ir.Graph, starts: Iterable[str], ends: Iterable[str]) -> set[str]:
    """Names of nodes on some path from a start node to an end node, both included."""
    by_name = {node.name: node for node in graph if node.name}
    missing = [name for name in (*starts, *ends) if name not in by_name]
    if missing:
        raise ConfigError(
            f"exclude subgraph names nodes that are not in the model: {', '.join(missing)}"
        )

    forward: set[str] = set()
    stack = [by_name[name] for name in starts]
    while stack:
        node = stack.pop()
        if node.name in forward:
            continue
        forward.add(node.name or "")
        stack.extend(node.successors())

    backward: set[str] = set()
    stack = [by_name[name] for name in ends]
    while stack:
        node = stack.pop()
        if node.name in backward:
            continue
        backward.add(node.name or "")
        stack.extend(node.predecessors())
    return forward & backward


def excluded_node_names(graph: ir.Graph, config: QConfig) -> set[str]:
    """Names of the main-graph nodes that `config.exclude` leaves in float."""
    names = [node.name or "" for node in graph]
    excluded: set[str] = set()
    for entry in config.exclude:
        if isinstance(entry, str):
            hits = {name for name in names if matches_pattern(entry, name)}
            if not hits:
                logger.warning(
                    "exclude entry %r matches no node; a node that simplification or a "
                    "float-graph rule folded into another (such as a BatchNormalization "
                    "into its Conv) is gone, so exclude the node it went into",
                    entry,
                )
            excluded |= hits
        else:
            starts, ends = entry
            excluded |= _subgraph_nodes(graph, starts, ends)
    return excluded


def layer_overrides(
    config: QConfig,
) -> tuple[dict[str, QLayerConfig | None], dict[str, QLayerConfig]]:
    """Return the layer configs that layer_type_config and specific_layer_config set.

    The first dict maps op types to configs (None keeps the type float), the second
    maps node names to configs.
    """
    by_type: dict[str, QLayerConfig | None] = {}
    for data_type, op_types in (config.layer_type_config or {}).items():
        for op_type in op_types:
            by_type[op_type] = (
                None if data_type is None else config.global_config.with_data_type(data_type)
            )

    by_name: dict[str, QLayerConfig] = {}
    for data_type, node_names in (config.specific_layer_config or {}).items():
        for name in node_names:
            by_name[name] = config.global_config.with_data_type(data_type)
    return by_type, by_name


def node_layer_configs(graph: ir.Graph, config: QConfig) -> dict[str, QLayerConfig | None]:
    """Return the layer config of every main-graph node, by node name."""
    excluded = excluded_node_names(graph, config)
    by_type, by_name = layer_overrides(config)
    known = {node.name for node in graph}
    unknown = sorted(set(by_name) - known)
    if unknown:
        logger.warning("specific_layer_config names nodes not in the model: %s", unknown)

    resolved: dict[str, QLayerConfig | None] = {}
    for node in graph:
        name = node.name or ""
        if name in excluded:
            resolved[name] = None
        elif name in by_name:
            resolved[name] = by_name[name]
        elif node.op_type in by_type:
            resolved[name] = by_type[node.op_type]
        else:
            resolved[name] = config.global_config
    return resolved
