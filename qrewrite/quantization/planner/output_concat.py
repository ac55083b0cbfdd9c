"""SplitOutputConcat: a Concat that writes a graph output keeps its output float.

Detectors often concatenate box coordinates (hundreds of pixels) and class scores (0 to
1) into one output. One scale for both rounds the scores away. Each Concat input already
has a quantization of its own, so dropping the output's Q/DQ leaves every part with the
precision of its own range, at the cost of one float Concat at the end of the graph.
"""

from __future__ import annotations

from qrewrite.quantization.edits import drop_tensors
from qrewrite.quantization.planner import PlannerContext
from qrewrite.quantization.selection import Selection


def split_output_concat(context: PlannerContext) -> Selection:
    """Drop the quantization of Concat outputs that are graph outputs."""
    reasons = {}
    for node in context.graph:
        if node.op_type != "Concat":
            continue
        for output in node.outputs:
            if output.is_graph_output() and output.name in context.selection.output_targets:
                reasons[output.name] = (
                    "SplitOutputConcat: graph output written by a Concat; each input keeps "
                    "its own scale"
                )
    return drop_tensors(context.selection, reasons)
