"""Helpers for rule authors: true constants, attributes, opsets and fresh names.

Every helper takes onnx_ir objects as the onnxscript rewriter passes them to a rule's
`check` and `rewrite` methods.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Iterable

import numpy as np
import onnx_ir as ir

from qrewrite.rewrite._onnxscript import OpPatternBuilder, StringPattern

# Relative tolerance when a rule compares a constant with the value a formula needs
# (1/sqrt(2), 0.5, 0.044715, ...). Exporters round these constants to float32, whose
# relative error is about 6e-8, so 1e-5 accepts every float32 spelling.
CONSTANT_RTOL = 1e-5


def constant_value(value: ir.Value | None) -> np.ndarray | None:
    """Return the value of a true constant as a numpy array, or None.

    A true constant is an initializer that is not also a graph input, or the output of
    a `Constant` node with a `value` attribute. An initializer that is also a graph
    input is a default that the caller may override at run time, so it returns None.
    """
    if value is None or value.is_graph_input():
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and producer.domain == "":
        attribute = producer.attributes.get("value")
        if attribute is not None and attribute.type == ir.AttributeType.TENSOR:
            return attribute.as_tensor().numpy()
    return None


def scalar_value(value: ir.Value | None) -> float | None:
    """Return the element of a true constant with exactly one element, or None.

    Scalars and tensors of shape [1], [1, 1] and so on count as one element.
    """
    array = constant_value(value)
    if array is None or array.size != 1:
        return None
    return float(array.reshape(()))


def is_scalar(value: ir.Value | None, expected: float, rtol: float = CONSTANT_RTOL) -> bool:
    """Return whether `value` is a one-element true constant close to `expected`."""
    actual = scalar_value(value)
    if actual is None:
        return False
    return bool(np.isclose(actual, expected, rtol=rtol, atol=0.0))


def int_list(value: ir.Value | None) -> list[int] | None:
    """Return a true constant of integers as a flat list, or None."""
    array = constant_value(value)
    if array is None or array.dtype.kind not in "iu":
        return None
    return [int(item) for item in array.reshape(-1)]


def int_attribute(node: ir.Node, name: str, default: int) -> int:
    """Return an INT attribute of `node`, or `default` when the node does not set it."""
    attribute = node.attributes.get(name)
    return default if attribute is None else attribute.as_int()


def float_attribute(node: ir.Node, name: str, default: float) -> float:
    """Return a FLOAT attribute of `node`, or `default` when the node does not set it."""
    attribute = node.attributes.get(name)
    return default if attribute is None else attribute.as_float()


def ints_attribute(node: ir.Node, name: str) -> list[int] | None:
    """Return an INTS attribute of `node` as a list, or None when the node does not set it."""
    attribute = node.attributes.get(name)
    return None if attribute is None else list(attribute.as_ints())


def opset_version(model: ir.Model, domain: str = "") -> int:
    """Return the version of `domain` (default: the ONNX domain) that the model imports.

    Raises ValueError when the model does not import the domain.
    """
    try:
        return model.opset_imports[domain]
    except KeyError:
        raise ValueError(f"the model does not import the opset domain {domain!r}") from None


def reduce_axes(node: ir.Node, axes_input_opset: int, opset: int) -> list[int] | None:
    """Return the axes of a Reduce* node, or None when they are not constant.

    Before opset `axes_input_opset` the axes are an attribute, from it on they are the
    optional second input (ReduceSum moved them in opset 13, the other Reduce ops in 18).
    An empty list means "all axes", which is also what absent axes mean unless
    `noop_with_empty_axes` is set. The caller handles that distinction.
    """
    if opset < axes_input_opset:
        axes = ints_attribute(node, "axes")
        return [] if axes is None else axes
    if len(node.inputs) < 2 or node.inputs[1] is None:
        return []
    return int_list(node.inputs[1])


def normalize_axes(axes: Iterable[int], rank: int) -> list[int] | None:
    """Return `axes` as sorted non-negative axes, or None when one is out of range."""
    result = []
    for axis in axes:
        if not -rank <= axis < rank:
            return None
        result.append(axis % rank)
    return sorted(set(result))


def static_rank(value: ir.Value) -> int | None:
    """Return the rank of a value from its shape information, or None when unknown."""
    return None if value.shape is None else value.shape.rank()


def static_dim(value: ir.Value, axis: int) -> int | None:
    """Return one dimension of a value when shape information gives it as an int."""
    if value.shape is None or not -value.shape.rank() <= axis < value.shape.rank():
        return None
    dim = value.shape[axis]
    return dim if isinstance(dim, int) else None


def has_subgraph(node: ir.Node) -> bool:
    """Return whether a node carries a GRAPH or GRAPHS attribute (If, Loop, Scan)."""
    return any(
        attribute.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
        for attribute in node.attributes.values()
    )


class _OpTypeSet(StringPattern):
    """Op type pattern that matches every op type in a set, or any op type."""

    def __init__(self, op_types: Collection[str] | None) -> None:
        self._op_types = None if op_types is None else frozenset(op_types)

    def matches(self, item: str) -> bool:
        return self._op_types is None or item in self._op_types

    def __str__(self) -> str:
        return "*" if self._op_types is None else "|".join(sorted(self._op_types))


def any_op(op, op_types: Collection[str] | None = None) -> OpPatternBuilder:
    """Return a pattern builder that matches a node of any of `op_types` in `op`'s domain.

    `op` is the pattern builder that onnxscript passes to `pattern`. None matches a node
    of any op type. Use it like `any_op(op, {"Conv", "Gemm"})(_allow_other_inputs=True)`.
    """
    return OpPatternBuilder(op, _OpTypeSet(op_types))


class _NameAllocator:
    """Names that are in use anywhere in one model, and the rule that extends them."""

    def __init__(self, model: ir.Model) -> None:
        self.used: set[str] = set()
        self.next_suffix: dict[str, int] = {}
        for graph in _all_graphs(model):
            if isinstance(graph, ir.Graph):
                self.used.update(graph.initializers)
            self.used.update(value.name for value in graph.inputs if value.name)
            for node in graph:
                if node.name:
                    self.used.add(node.name)
                self.used.update(value.name for value in node.outputs if value.name)

    def allocate(self, base: str) -> str:
        # Resume from the last suffix handed out for this base, so that allocating the
        # same base n times costs O(n) in total, not O(n^2).
        suffix = self.next_suffix.get(base, 0)
        name = base if suffix == 0 else f"{base}_{suffix}"
        while name in self.used:
            suffix += 1
            name = f"{base}_{suffix}"
        self.next_suffix[base] = suffix + 1
        self.used.add(name)
        return name


def _all_graphs(model: ir.Model) -> Iterable[ir.Graph | ir.Function]:
    yield model.graph
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for attribute in node.attributes.values():
            if attribute.type == ir.AttributeType.GRAPH:
                yield attribute.as_graph()
            elif attribute.type == ir.AttributeType.GRAPHS:
                yield from attribute.as_graphs()
    yield from model.functions.values()


_allocators: weakref.WeakKeyDictionary[ir.Model, _NameAllocator] = weakref.WeakKeyDictionary()


def unique_name(model: ir.Model, base: str) -> str:
    """Return a name, based on `base`, that no value, initializer or node of the model uses.

    The name is unique across the main graph, every subgraph and every function, and
    also differs from every earlier result for the same model. Use it for initializers
    that a replacement creates: the rewriter silently replaces an existing initializer
    of the same name, which leaves that initializer's other users reading wrong data.
    """
    allocator = _allocators.get(model)
    if allocator is None:
        allocator = _allocators[model] = _NameAllocator(model)
    return allocator.allocate(base)


def forget_names(model: ir.Model) -> None:
    """Drop the name cache of `model`, so the next `unique_name` call rescans the model."""
    _allocators.pop(model, None)
