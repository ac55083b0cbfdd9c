"""KeepSqrtLogInputsFloat: the inputs of Sqrt, Log and similar ops stay float.

Sqrt, Log, Reciprocal and Pow with an exponent below 1 have a slope that grows without
bound near zero. A rounding step that is small at the top of a tensor's range is
therefore a large error after such an op. With 8 bits, Sqrt of the first nonzero level
is 1/16 of Sqrt of the peak, so small values keep about 4 bits. A magnitude computed as
Sqrt(re^2 + im^2) is worse again, because its squared operands span twice the dynamic
range in decibels. In Silero VAD the squared short-time Fourier coefficients of quiet
frames round to zero: with uint8 activations 93.7 % of the speech decisions agreed with
float, and 98.9 % with the squares and their sum float (benchmarks/bench_targets.py).

The input of each such op stays float, and so do the operands of the summing ops that
compute it (`SUMMING_OPS`, and Mul or Div by a constant), back to the first tensor that
another op writes. For Sqrt(Pow(re, 2) + Pow(im, 2)) that keeps the sum and both squares
float, while re and im stay quantized. onnxruntime runs these ops in float anyway except
for QLinearAdd and QLinearMul, so only those fusions are lost.
"""

from __future__ import annotations

import onnx_ir as ir

from qrewrite.model.graph_utils import constant_array
from qrewrite.quantization.edits import drop_tensors
from qrewrite.quantization.planner import PlannerContext
from qrewrite.quantization.selection import Selection

STEEP_OPS = frozenset({"Sqrt", "Log", "Reciprocal"})

# Ops whose output is small where their operands are small, so the operands need the
# same fine steps near zero as the result.
SUMMING_OPS = frozenset({"Add", "Sub", "ReduceSum", "ReduceMean"})

# Ops that only rescale one operand when the other is a constant.
SCALING_OPS = frozenset({"Mul", "Div"})


def _is_steep(node: ir.Node) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in STEEP_OPS:
        return True
    if node.op_type != "Pow" or len(node.inputs) < 2:
        return False
    exponent = constant_array(node.inputs[1])
    if exponent is None or exponent.size != 1:
        return False
    value = float(exponent.reshape(()))
    return value < 1.0 and value != 0.0


def _summing_operands(node: ir.Node) -> list[ir.Value]:
    """Return the operands of `node` that carry small values into its output, if any."""
    if node.domain not in ("", "ai.onnx"):
        return []
    if node.op_type in SUMMING_OPS:
        # ReduceSum (opset 13) and ReduceMean (opset 18) take their axes as input 1.
        operands = node.inputs if node.op_type in ("Add", "Sub") else node.inputs[:1]
        return [value for value in operands if value is not None]
    if node.op_type in SCALING_OPS and len(node.inputs) == 2:
        first, second = node.inputs
        if first is not None and second is not None:
            if constant_array(second) is not None:
                return [first]
            if node.op_type == "Mul" and constant_array(first) is not None:
                return [second]
    return []


def keep_sqrt_log_inputs_float(context: PlannerContext) -> Selection:
    """Drop the quantization of the tensors that feed steep ops (see the module doc)."""
    reasons: dict[str, str] = {}
    for node in context.graph:
        if not _is_steep(node) or node.inputs[0] is None:
            continue
        reason = (
            f"KeepSqrtLogInputsFloat: computes the input of {node.op_type} {node.name!r}, "
            "whose slope near zero turns the rounding of small values into large errors"
        )
        pending = [node.inputs[0]]
        while pending:
            value = pending.pop()
            name = value.name or ""
            if name in reasons or constant_array(value) is not None:
                continue
            reasons[name] = reason
            producer = value.producer()
            if producer is not None:
                pending.extend(_summing_operands(producer))
    selected = {target.tensor for target in context.selection.targets.values()}
    return drop_tensors(
        context.selection, {name: text for name, text in reasons.items() if name in selected}
    )
