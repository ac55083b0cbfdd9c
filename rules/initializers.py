"""Copies of shared initializers, so each consumer can be quantized on its own.

When several nodes read one initializer, a quantizer has to give them one scale. These
rules give each consumer node of the selected op types its own copy: the node is
re-emitted unchanged except that a shared initializer input reads a new initializer
with the same data and a fresh name. The last remaining consumer keeps the original.

- CopySharedInit copies every shared initializer input of the selected op types.
- CopyBiasInit copies only the bias input (input 2) of Conv, ConvTranspose and Gemm.

An empty op type list selects every op type (every bias-carrying op type for
CopyBiasInit). Nodes with several outputs or with subgraphs are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir

from qrewrite.rewrite import Contract, MatchResult, RewritePattern, Rule
from qrewrite.rewrite.helpers import any_op, has_subgraph, unique_name

_BIAS_OP_TYPES = ("Conv", "ConvTranspose", "Gemm")
_BIAS_INPUT = 2


def _is_shared_initializer(value: ir.Value | None) -> bool:
    if value is None or not value.is_initializer() or value.is_graph_input():
        return False
    return len(value.uses()) > 1


class _CopySharedInputs(RewritePattern):
    def __init__(self, name: str, op_types: Sequence[str] | None, inputs: Sequence[int] | None):
        super().__init__(name=name)
        self._op_types, self._inputs = op_types, inputs

    def pattern(self, op):
        return any_op(op, self._op_types)(_allow_other_inputs=True, _outputs=["out"])

    def check(self, context, out, **_):  # type: ignore[override]
        node = out.producer()
        if len(node.outputs) != 1 or has_subgraph(node):
            return MatchResult().fail("the node has several outputs or a subgraph", node)
        indices = range(len(node.inputs)) if self._inputs is None else self._inputs
        shared = [
            index
            for index in indices
            if index < len(node.inputs) and _is_shared_initializer(node.inputs[index])
        ]
        if not shared:
            return MatchResult().fail("the node reads no shared initializer", node)
        self._model, self._shared = context.model, shared
        return MatchResult()

    def rewrite(self, op, out, **_):
        node = out.producer()
        inputs = list(node.inputs)
        for index in self._shared:
            original = inputs[index]
            name = unique_name(self._model, f"{original.name}_copy")
            # A new tensor object: the original may wrap the caller's TensorProto, and
            # serializing it under another name would rename the caller's initializer.
            copy = ir.tensor(original.const_value.numpy(), name=name)
            inputs[index] = op.initializer(copy, name=name)
        return op.op(node.op_type, *inputs, _domain=node.domain, **node.attributes)


def copy_shared_init_rule(op_types: Sequence[str]) -> Rule:
    """Return the CopySharedInit rule for `op_types` (empty: every op type)."""
    selected = tuple(op_types) or None
    return Rule(
        name="CopySharedInit",
        patterns=[_CopySharedInputs("CopySharedInit", selected, None)],
        matches=(
            "a node of the selected op types (all when the list is empty) reading an "
            "initializer that other nodes also read"
        ),
        produces="the same node reading its own copy of that initializer",
        contract=Contract.exact(),
        option="CopySharedInit",
    )


def copy_bias_init_rule(op_types: Sequence[str]) -> Rule:
    """Return the CopyBiasInit rule for `op_types` (empty: Conv, ConvTranspose and Gemm)."""
    selected = tuple(op_type for op_type in op_types if op_type in _BIAS_OP_TYPES)
    if op_types and not selected:
        selected = ("",)  # Matches no op type: none of the listed types has a bias input.
    return Rule(
        name="CopyBiasInit",
        patterns=[_CopySharedInputs("CopyBiasInit", selected or _BIAS_OP_TYPES, [_BIAS_INPUT])],
        matches=(
            "a Conv, ConvTranspose or Gemm of the selected op types whose bias initializer "
            "other nodes also read"
        ),
        produces="the same node reading its own copy of the bias",
        contract=Contract.exact(),
        option="CopyBiasInit",
    )
