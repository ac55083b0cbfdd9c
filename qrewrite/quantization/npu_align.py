"""NPU alignments: ops whose input and output positions must be equal.

The NPU runs Concat, pooling, Pad, Slice, Transpose and Reshape on the integers as they
are, without a shift, so their quantized inputs and output need one position. Each
alignment moves all of them to the lowest one (the largest scale), which clips nothing
that was representable before; AMD Quark's power-of-two refinement does the same for
Concat, pooling, Pad and Slice (amd/Quark, quark/onnx/postprocess/refinement/refine.py at
commit 1d27b55). Pooling, Pad, Slice, Transpose and Reshape already share their first
input's parameters in qrewrite's selection, so these alignments only matter when a
planner rule or DedicatedQDQPair has split them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import onnx_ir as ir

from qrewrite.quantization.npu_shifts import Violation, range_violations

if TYPE_CHECKING:
    from qrewrite.quantization.npu import PositionTable

POOL_TYPES = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool"})


def _align(
    table: PositionTable, node: ir.Node, keys: list[str], check: str, fix: bool
) -> list[Violation]:
    known: list[tuple[str, int]] = []
    for key in keys:
        position = table.scalar(key)
        if position is not None:
            known.append((key, position))
    if len(known) < 2:
        return []
    lowest = min(position for _, position in known)
    spread = max(position for _, position in known) - lowest
    found = range_violations(check, node, "max - min position", spread, 0, 0)
    floors = [floor for floor in (table.floor(key) for key, _ in known) if floor is not None]
    if fix and floors:
        # A lower limit on one member applies to all of them once they are aligned.
        for key, _ in known:
            table.require_at_least(key, max(floors))
    if found and fix:
        common = max([lowest, *floors])
        for key, _ in known:
            table.move(key, common, check, node)
    return found


def _input_and_output(table: PositionTable, node: ir.Node) -> list[str] | None:
    input_key = table.input_key(node, 0)
    output_key = table.output_key(node)
    if input_key is None or output_key is None:
        return None
    return [input_key, output_key]


def _single_input_alignment(
    op_types: frozenset[str], check: str
) -> Callable[[PositionTable, ir.Node, bool], list[Violation]]:
    def align(table: PositionTable, node: ir.Node, fix: bool) -> list[Violation]:
        if node.op_type not in op_types:
            return []
        keys = _input_and_output(table, node)
        return [] if keys is None else _align(table, node, keys, check, fix)

    return align


def align_concat(table: PositionTable, node: ir.Node, fix: bool) -> list[Violation]:
    """Align every quantized input of a Concat with its output; unquantized inputs are left out."""
    if node.op_type != "Concat":
        return []
    output_key = table.output_key(node)
    if output_key is None:
        return []
    keys = [table.input_key(node, index) for index in range(len(node.inputs))]
    return _align(
        table, node, [output_key, *(key for key in keys if key is not None)], "align_concat", fix
    )


# In the order the refinement runs them within a round.
ALIGN_CHECKS = (
    ("align_concat", align_concat),
    ("align_pool", _single_input_alignment(POOL_TYPES, "align_pool")),
    ("align_pad", _single_input_alignment(frozenset({"Pad"}), "align_pad")),
    ("align_slice", _single_input_alignment(frozenset({"Slice"}), "align_slice")),
    ("align_transpose", _single_input_alignment(frozenset({"Transpose"}), "align_transpose")),
    ("align_reshape", _single_input_alignment(frozenset({"Reshape"}), "align_reshape")),
)
