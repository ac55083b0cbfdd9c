"""KeepSentinelTensorsFloat: tensors that carry sentinel values stay float.

Attention masks add a huge negative number to the scores of padded positions: the
float32 minimum (-3.4e38, as Hugging Face transformers does), -1e9, or -inf. Quantizing
such a tensor with one scale spends all integer levels on the sentinel, so the scores
it is added to collapse to zero, and the mask itself may round to zero too, so Softmax
attends to padding. Leaving the mask and the masked scores float keeps both exact.
Softmax output lies in [0, 1] and stays quantized.

A tensor is a sentinel source when

- its calibrated range reaches `SENTINEL_MAGNITUDE` (the float32 extremes and values
  like -1e30 or -1e38),
- it is a float constant that contains an infinity, NaN or a value of that magnitude (the
  calibrated range leaves out infinities, so a -inf mask is found from its constant),
- or it is one operand of an Add or Sub whose calibrated peak |x| is more than
  SentinelRatio times the peak of the other operand. The other operand's range serves
  as the robust range of the sum, because calibration reports only min and max.

Each tensor computed from a sentinel source by the ops in `PROPAGATING_OPS` carries the
sentinel too (the masked scores, a broadcast copy of the mask), up to and excluding the
consumers outside that set, such as Softmax.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from qrewrite.model.graph_utils import constant_array, is_float
from qrewrite.quantization.edits import drop_tensors
from qrewrite.quantization.planner import PlannerContext
from qrewrite.quantization.selection import Role, Selection

# A calibrated bound or constant of at least this magnitude is a sentinel. Real
# activations stay far below it, and masks built from -1e30 or the float32 minimum
# (-3.4e38) reach it.
SENTINEL_MAGNITUDE = 1e30

# Ops whose output carries the sentinel of any float input: they move values or combine
# them elementwise without bounding them.
PROPAGATING_OPS = frozenset(
    {
        "Add",
        "Sub",
        "Mul",
        "Neg",
        "Min",
        "Max",
        "Where",
        "Cast",
        "Expand",
        "Tile",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Slice",
        "Gather",
        "Concat",
        "Identity",
    }
)


def _peak(bounds: Any) -> float:
    return max(abs(float(bounds.min)), abs(float(bounds.max)))


def _constant_reason(value: ir.Value) -> str | None:
    if not is_float(value):
        return None
    data = constant_array(value)
    if data is None or data.size == 0:
        return None
    if not np.all(np.isfinite(data)):
        return "constant contains an infinity or NaN"
    peak = float(np.max(np.abs(data)))
    if peak >= SENTINEL_MAGNITUDE:
        return f"constant contains {peak:.3g}"
    return None


def _range_reason(value: ir.Value, ranges: Mapping[str, Any]) -> str | None:
    bounds = ranges.get(value.name or "")
    if bounds is None or _peak(bounds) < SENTINEL_MAGNITUDE:
        return None
    return f"calibrated range [{bounds.min:.3g}, {bounds.max:.3g}] reaches a sentinel"


def _ratio_reasons(graph: ir.Graph, ranges: Mapping[str, Any], ratio: float) -> dict[str, str]:
    """Return the Add and Sub operands whose peak is `ratio` times the other operand's."""
    reasons: dict[str, str] = {}
    for node in graph:
        if node.op_type not in ("Add", "Sub") or len(node.inputs) != 2:
            continue
        operands = [
            ranges.get(value.name or "") if value is not None else None for value in node.inputs
        ]
        if operands[0] is None or operands[1] is None:
            continue
        peaks = [_peak(operands[0]), _peak(operands[1])]
        for index in (0, 1):
            value = node.inputs[index]
            other_peak = peaks[1 - index]
            if value is not None and peaks[index] > ratio * other_peak > 0:
                reasons.setdefault(
                    value.name or "",
                    f"peak {peaks[index]:.3g} is more than SentinelRatio={ratio:g} times the "
                    f"peak {other_peak:.3g} of the other operand of {node.op_type} "
                    f"{node.name!r}",
                )
    return reasons


def find_sentinel_tensors(
    graph: ir.Graph, ranges: Mapping[str, Any], ratio: float
) -> dict[str, str]:
    """Return every tensor that carries a sentinel value, with the reason.

    `ranges` maps tensor names to calibrated ranges (objects with `min` and `max`).
    """
    reasons: dict[str, str] = {}
    for value in graph.initializers.values():
        reason = _constant_reason(value)
        if reason is not None:
            reasons[value.name or ""] = reason
    for node in graph:
        for value in node.outputs:
            reason = _constant_reason(value) if node.op_type == "Constant" else None
            reason = reason or _range_reason(value, ranges)
            if reason is not None:
                reasons.setdefault(value.name or "", reason)
    for name, reason in _ratio_reasons(graph, ranges, ratio).items():
        reasons.setdefault(name, reason)

    # Nodes come in topological order, so one pass propagates along every path.
    # NOTE: an output is marked even when its own calibrated range is ordinary (Max(x,
    # -inf), or Mul by a zero mask), which leaves such a tensor float without need.
    for node in graph:
        if node.op_type not in PROPAGATING_OPS or node.domain not in ("", "ai.onnx"):
            continue
        source = next(
            (value for value in node.inputs if value is not None and value.name in reasons),
            None,
        )
        if source is None:
            continue
        for output in node.outputs:
            if is_float(output) and output.name not in reasons:
                reasons[output.name or ""] = (
                    f"computed by {node.op_type} {node.name!r} from sentinel tensor {source.name!r}"
                )
    return reasons


def keep_sentinel_tensors_float(context: PlannerContext) -> Selection:
    """Drop the quantization of tensors that carry sentinel values (see the module doc)."""
    if context.ranges is None:
        return context.selection
    ratio = float(context.config.options.SentinelRatio)
    found = find_sentinel_tensors(context.graph, context.ranges, ratio)
    quantized = {
        target.tensor
        for target in context.selection.targets.values()
        if target.role is Role.ACTIVATION
    }
    reasons = {
        tensor: f"KeepSentinelTensorsFloat: {reason}"
        for tensor, reason in found.items()
        if tensor in quantized
    }
    return drop_tensors(context.selection, reasons)
