"""NPU shift limits between the positions of a node's inputs, weights, bias and output.

Positions are p = -log2(scale). All limits are inclusive and come from AMD Quark's
position refinement (amd/Quark, quark/onnx/postprocess/refinement/refine.py at commit
1d27b55), which states them as NPU and DPU compiler constraints. Which position moves
follows the same source, except where noted:

* shift_cut (Conv, Gemm) = w + i - o in [0, 16]; the weight position moves.
* shift_bias (Conv, Gemm) = w + i - b in [min(0, shift_cut - 16), 15], with the lower
  limit 0 when a LeakyRelu reads the output; the bias position moves.
* shift_read (Add, Sub) = max(inputs) - min(inputs) in [0, 7]; the highest input moves
  down, unless a lower limit from the last round keeps it up, and then the lowest rises.
* shift_write: Add min(inputs) - o in [-7, 25], Mul sum(inputs) - o in [0, 32]; the
  output moves.
* HardSigmoid with alpha 1/6 (or the DPU's 2731/16384) and beta 0.5: input in [0, 15],
  output >= 7 and 14 + i - o in [0, 31]; input and output move.
* shift_swish (Mul(x, HardSigmoid(x))) = i0 + i1 - o in [0, 15]; the output moves.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs
import numpy as np
import onnx_ir as ir

from qrewrite.model.graph_utils import constant_array

if TYPE_CHECKING:
    from qrewrite.quantization.npu import PositionTable

SHIFT_CUT_RANGE = (0, 16)
SHIFT_BIAS_MAX = 15
# The accumulator has 24 bits and the output 8, so the bias may sit below the product by
# at most 24 - (8 + shift_cut) positions.
ACCUMULATOR_BITS = 24
OUTPUT_BITS = 8
SHIFT_READ_MAX = 7
ADD_SHIFT_WRITE_RANGE = (-7, 25)
MUL_SHIFT_WRITE_RANGE = (0, 32)
HARD_SIGMOID_INPUT_RANGE = (0, 15)
HARD_SIGMOID_OUTPUT_MIN = 7
HARD_SIGMOID_SHIFT_OFFSET = 14
HARD_SIGMOID_SHIFT_RANGE = (0, 31)
SWISH_SHIFT_RANGE = (0, 15)

# HardSigmoid as models write it (alpha 1/6, beta 0.5) and in the DPU's fixed-point form.
HARD_SIGMOID_ALPHAS = (1.0 / 6.0, 2731.0 / 16384.0)
HARD_SIGMOID_BETAS = (0.5, 3.0 * 2731.0 / 16384.0)
_ATTRIBUTE_TOLERANCE = 1e-6


@attrs.frozen
class Violation:
    """A limit that a node's positions break. For per-channel targets `value` is one channel's."""

    check: str
    node: str
    quantity: str
    value: int
    low: int | None
    high: int | None

    def describe(self) -> str:
        low = "-inf" if self.low is None else str(self.low)
        high = "inf" if self.high is None else str(self.high)
        return f"{self.check} at {self.node}: {self.quantity} = {self.value}, limit [{low}, {high}]"


def range_violations(
    check: str,
    node: ir.Node,
    quantity: str,
    values: np.ndarray | int,
    low: np.ndarray | int | None,
    high: np.ndarray | int | None,
) -> list[Violation]:
    """Return one Violation for the first channel of `values` outside [low, high], if any."""
    array = np.asarray(values)
    lows = np.broadcast_to(-np.inf if low is None else np.asarray(low), array.shape)
    highs = np.broadcast_to(np.inf if high is None else np.asarray(high), array.shape)
    outside = np.flatnonzero((array < lows) | (array > highs))
    if outside.size == 0:
        return []
    index = int(outside[0])
    low_value = None if low is None else int(lows.reshape(-1)[index])
    high_value = None if high is None else int(highs.reshape(-1)[index])
    value = int(array.reshape(-1)[index])
    return [Violation(check, node.name or "", quantity, value, low_value, high_value)]


def _close_to_any(value: float, choices: tuple[float, ...]) -> bool:
    return any(math.isclose(value, choice, abs_tol=_ATTRIBUTE_TOLERANCE) for choice in choices)


def is_npu_hard_sigmoid(node: ir.Node) -> bool:
    """Check for a HardSigmoid the NPU runs: alpha 1/6 or 2731/16384, beta 0.5 or 3 * 2731/16384."""
    if node.op_type != "HardSigmoid":
        return False
    alpha = node.attributes.get("alpha")
    beta = node.attributes.get("beta")
    # ONNX's default alpha is 0.2, which the NPU does not run. The default beta is 0.5.
    if alpha is None or not _close_to_any(alpha.as_float(), HARD_SIGMOID_ALPHAS):
        return False
    return beta is None or _close_to_any(beta.as_float(), HARD_SIGMOID_BETAS)


def _hard_sigmoid_of(value: ir.Value | None) -> ir.Node | None:
    """Return the HardSigmoid that computes `value`, directly or through a constant Mul."""
    producer = value.producer() if value is not None else None
    if producer is not None and producer.op_type == "Mul" and len(producer.inputs) == 2:
        first, second = producer.inputs
        if constant_array(second) is not None and first is not None:
            producer = first.producer()
        elif constant_array(first) is not None and second is not None:
            producer = second.producer()
        else:
            return None
    if producer is None or not is_npu_hard_sigmoid(producer) or not producer.inputs:
        return None
    return producer


def is_swish(node: ir.Node) -> bool:
    """Check for Mul(x, HardSigmoid(x)), also with the DPU's Mul after the HardSigmoid."""
    if node.op_type != "Mul" or len(node.inputs) != 2:
        return False
    first, second = node.inputs
    for gate, data in ((first, second), (second, first)):
        hard_sigmoid = _hard_sigmoid_of(gate)
        if hard_sigmoid is not None and data is not None and hard_sigmoid.inputs[0] is data:
            return True
    return False


def check_shift_cut(table: PositionTable, node: ir.Node, fix: bool) -> list[Violation]:
    if node.op_type not in ("Conv", "Gemm"):
        return []
    weight_key = table.input_key(node, 1)
    weight = table.position(weight_key)
    source = table.scalar(table.input_key(node, 0))
    output = table.scalar(table.output_key(node))
    if weight is None or source is None or output is None:
        return []
    assert weight_key is not None
    cut = weight + source - output
    low, high = SHIFT_CUT_RANGE
    found = range_violations("shift_cut", node, "w + i - o", cut, low, high)
    if found and fix:
        table.move(weight_key, np.clip(cut, low, high) + output - source, "shift_cut", node)
    return found


def check_shift_bias(table: PositionTable, node: ir.Node, fix: bool) -> list[Violation]:
    if node.op_type not in ("Conv", "Gemm"):
        return []
    bias_key = table.input_key(node, 2)
    bias = table.position(bias_key)
    weight = table.position(table.input_key(node, 1))
    source = table.scalar(table.input_key(node, 0))
    output = table.scalar(table.output_key(node))
    if bias is None or weight is None or source is None or output is None:
        return []
    assert bias_key is not None
    product = weight + source
    if np.broadcast_shapes(product.shape, bias.shape) != bias.shape:
        return []
    cut = product - output
    low = np.minimum(0, cut - (ACCUMULATOR_BITS - OUTPUT_BITS))
    if any(use.node.op_type == "LeakyRelu" for use in node.outputs[0].uses()):
        low = np.zeros_like(low)
    shift = product - bias
    found = range_violations("shift_bias", node, "w + i - b", shift, low, SHIFT_BIAS_MAX)
    # NOTE: each step up halves the bias's range, so a bias at its calibrated position
    # clips, as in Quark. A Conv whose output is mostly bias can lose half of it.
    if found and fix:
        table.move(bias_key, product - np.clip(shift, low, SHIFT_BIAS_MAX), "shift_bias", node)
    return found


def _input_positions(table: PositionTable, node: ir.Node) -> list[tuple[str, int]] | None:
    """Return (key, position) of every input, or None when one has no position."""
    found = []
    for index in range(len(node.inputs)):
        key = table.input_key(node, index)
        position = table.scalar(key)
        if key is None or position is None:
            return None
        found.append((key, position))
    return found


def check_shift_read(table: PositionTable, node: ir.Node, fix: bool) -> list[Violation]:
    if node.op_type not in ("Add", "Sub"):
        return []
    inputs = _input_positions(table, node)
    if not inputs:
        return []
    highest_key, highest = max(inputs, key=lambda item: item[1])
    lowest = min(position for _, position in inputs)
    found = range_violations(
        "shift_read", node, "max(i) - min(i)", highest - lowest, 0, SHIFT_READ_MAX
    )
    if found and fix:
        floor = table.floor(highest_key)
        if floor is not None and floor > lowest + SHIFT_READ_MAX:
            # An alignment keeps the highest input up, so the lowest one rises instead.
            lowest_key = min(inputs, key=lambda item: item[1])[0]
            table.move(lowest_key, highest - SHIFT_READ_MAX, "shift_read", node)
        else:
            table.move(highest_key, lowest + SHIFT_READ_MAX, "shift_read", node)
    return found


def check_shift_write(table: PositionTable, node: ir.Node, fix: bool) -> list[Violation]:
    if node.op_type not in ("Add", "Mul"):
        return []
    inputs = _input_positions(table, node)
    output_key = table.output_key(node)
    output = table.scalar(output_key)
    if not inputs or output is None:
        return []
    assert output_key is not None
    if node.op_type == "Add":
        reference, quantity = min(position for _, position in inputs), "min(i) - o"
        low, high = ADD_SHIFT_WRITE_RANGE
    else:
        reference, quantity = sum(position for _, position in inputs), "sum(i) - o"
        low, high = MUL_SHIFT_WRITE_RANGE
    shift = reference - output
    found = range_violations("shift_write", node, quantity, shift, low, high)
    if fix:
        table.require_at_least(output_key, reference - high)
    if found and fix:
        table.move(output_key, reference - int(np.clip(shift, low, high)), "shift_write", node)
    return found


def check_hard_sigmoid(table: PositionTable, node: ir.Node, fix: bool) -> list[Violation]:
    if not is_npu_hard_sigmoid(node):
        return []
    input_key = table.input_key(node, 0)
    output_key = table.output_key(node)
    source = table.scalar(input_key)
    output = table.scalar(output_key)
    if source is None or output is None:
        return []
    assert input_key is not None and output_key is not None
    shift = HARD_SIGMOID_SHIFT_OFFSET + source - output
    found = [
        *range_violations("hard_sigmoid", node, "i", source, *HARD_SIGMOID_INPUT_RANGE),
        *range_violations("hard_sigmoid", node, "o", output, HARD_SIGMOID_OUTPUT_MIN, None),
        *range_violations("hard_sigmoid", node, "14 + i - o", shift, *HARD_SIGMOID_SHIFT_RANGE),
    ]
    if fix:
        table.require_at_least(input_key, HARD_SIGMOID_INPUT_RANGE[0])
        table.require_at_least(output_key, HARD_SIGMOID_OUTPUT_MIN)
    if found and fix:
        # With i in [0, 15] and o >= 7 the shift is at most 22, so only its lower limit
        # can still fail, and o = 14 + i fixes that.
        new_source = int(np.clip(source, *HARD_SIGMOID_INPUT_RANGE))
        new_output = max(output, HARD_SIGMOID_OUTPUT_MIN)
        if HARD_SIGMOID_SHIFT_OFFSET + new_source - new_output < HARD_SIGMOID_SHIFT_RANGE[0]:
            new_output = HARD_SIGMOID_SHIFT_OFFSET + new_source - HARD_SIGMOID_SHIFT_RANGE[0]
        table.move(input_key, new_source, "hard_sigmoid", node)
        table.move(output_key, new_output, "hard_sigmoid", node)
    return found


def check_shift_swish(table: PositionTable, node: ir.Node, fix: bool) -> list[Violation]:
    if not is_swish(node):
        return []
    inputs = _input_positions(table, node)
    output_key = table.output_key(node)
    output = table.scalar(output_key)
    if not inputs or output is None:
        return []
    assert output_key is not None
    total = sum(position for _, position in inputs)
    shift = total - output
    low, high = SWISH_SHIFT_RANGE
    found = range_violations("shift_swish", node, "i0 + i1 - o", shift, low, high)
    if fix:
        table.require_at_least(output_key, total - high)
    if found and fix:
        table.move(output_key, total - int(np.clip(shift, low, high)), "shift_swish", node)
    return found


# In the order the refinement runs them within a round.
SHIFT_CHECKS = (
    ("shift_read", check_shift_read),
    ("shift_write", check_shift_write),
    ("shift_cut", check_shift_cut),
    ("shift_bias", check_shift_bias),
    ("hard_sigmoid", check_hard_sigmoid),
    ("shift_swish", check_shift_swish),
)
