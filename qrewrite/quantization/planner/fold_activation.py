"""FoldRelu: a Relu or Clip(0, max) after a fusable op shares one quantization with it.

With a Q/DQ pair on both sides of the activation, onnxruntime's CPU graph optimizer
(checked with onnxruntime 1.32) removes the Relu or Clip in front of the second
QuantizeLinear, because that QuantizeLinear already saturates at zero, and is left with
a DequantizeLinear -> QuantizeLinear pair that rescales every element between the
producer's integer kernel and the next one. With the pair on the activation's output
only, the same optimizer removes the activation and fuses the producer with that pair
into one integer kernel (QLinearConv, QLinearMatMul, QLinearAdd) whose output range is
the activation's range. The result is also more precise: one rounding instead of two,
and all integer levels spent on [0, max] instead of the producer's signed range.

The rule folds an activation when

- the activation is Relu, or Clip with a lower bound of 0,
- its input comes from a quantized Conv, ConvTranspose, Gemm, MatMul or Add and has no
  other consumer (in any graph) and is not a graph output,
- and its output is quantized asymmetrically. onnxruntime removes the Relu or Clip only
  when the zero point is the lowest integer, which an asymmetric range that starts at 0
  gives. A symmetric int8 spec has zero point 0, so the activation would stay and block
  the producer's fusion.
"""

from __future__ import annotations

import attrs
import onnx_ir as ir

from qrewrite.model.graph_utils import constant_array
from qrewrite.quantization.edits import drop_tensors
from qrewrite.quantization.planner import PlannerContext
from qrewrite.quantization.selection import Selection

# Producers that onnxruntime fuses with their input and output Q/DQ into an integer kernel.
FUSABLE_PRODUCERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add"})


def _clip_lower_bound(node: ir.Node) -> float | None:
    """Return Clip's lower bound, or None when it has none or it is not a constant."""
    low = node.attributes.get("min")
    if low is not None:
        return low.as_float()
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        array = constant_array(node.inputs[1])
        if array is not None and array.size == 1:
            return float(array.reshape(()))
    return None


def is_zero_floored_activation(node: ir.Node) -> bool:
    """Return whether `node` is Relu or a Clip whose lower bound is exactly 0."""
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "Relu":
        return True
    return node.op_type == "Clip" and _clip_lower_bound(node) == 0.0


def _foldable_input(node: ir.Node, selection: Selection) -> str | None:
    """Return the name of the activation's input tensor when the fold applies, else None."""
    source = node.inputs[0] if node.inputs else None
    output = node.outputs[0]
    if source is None or source.is_graph_output():
        return None
    producer = source.producer()
    if producer is None or producer.op_type not in FUSABLE_PRODUCERS:
        return None
    if producer.domain not in ("", "ai.onnx") or len(list(source.uses())) != 1:
        return None
    if (source.name or "") not in selection.output_targets:
        return None
    output_key = selection.output_targets.get(output.name or "")
    if output_key is None:
        return None
    spec = selection.targets[output_key].spec
    if spec is None or spec.symmetric or not spec.data_type.is_integer:
        return None
    return source.name or ""


def fold_relu(context: PlannerContext) -> Selection:
    """Drop the Q/DQ between a fusable producer and its Relu or Clip(0, max)."""
    reasons = {}
    for node in context.graph:
        if not is_zero_floored_activation(node):
            continue
        tensor = _foldable_input(node, context.selection)
        if tensor is not None:
            reasons[tensor] = f"folded into {node.op_type} {node.name!r}"
    if not reasons:
        return context.selection

    # The folded tensors live inside one integer kernel, so they are not listed as float
    # tensors in the summary; one note counts them instead.
    selection = drop_tensors(context.selection, reasons)
    note = (
        f"FoldRelu: {len(reasons)} Relu or Clip node(s) share the quantization of the Conv, "
        "Gemm, MatMul or Add before them"
    )
    return attrs.evolve(
        selection, kept_float=dict(context.selection.kept_float), notes=(*selection.notes, note)
    )
