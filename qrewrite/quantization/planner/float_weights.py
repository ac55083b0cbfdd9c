"""Keep the weights of a Conv, Gemm or MatMul float when a rule leaves its input float.

onnxruntime fuses DequantizeLinear -> MatMul -> QuantizeLinear into an integer kernel
only when the activation input is quantized too. With a float activation input, the
weight's DequantizeLinear runs at every inference in front of a float MatMul. On
all-MiniLM-L6-v2 with KeepOutlierTensorsFloat, that made the model run at 1.16 times the
float latency, against 0.59 times with float weights (one thread, onnxruntime 1.32,
measured with `benchmarks/check_minilm.py`).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import onnx_ir as ir

from qrewrite.quantization.selection import Role, Selection

# Op types whose input 0 is the activation that a weight is multiplied with.
WEIGHTED_OP_TYPES = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def drop_weights_of_float_inputs(
    selection: Selection, graph: ir.Graph, tensors: Iterable[str], rule: str
) -> Selection:
    """Drop the weight and bias targets of the weighted ops that read `tensors` as input 0.

    Call this after the activation targets of `tensors` were dropped. A node whose input 0
    still has a quantization is left as it is. A weight shared with another node keeps
    its target for that node.
    """
    names = set(tensors)
    nodes = set()
    for node in graph:
        if node.op_type not in WEIGHTED_OP_TYPES or node.domain not in ("", "ai.onnx"):
            continue
        data = node.inputs[0] if node.inputs else None
        node_name = node.name or ""
        if data is not None and data.name in names and (node_name, 0) not in selection.input_uses:
            nodes.add(node_name)
    if not nodes:
        return selection

    dropped_uses = {
        use: key
        for use, key in selection.input_uses.items()
        if use[0] in nodes and selection.targets[key].role in (Role.WEIGHT, Role.BIAS)
    }
    input_uses = {use: key for use, key in selection.input_uses.items() if use not in dropped_uses}
    still_used = set(input_uses.values()) | set(selection.output_targets.values())
    removed = {key for key in dropped_uses.values() if key not in still_used}

    kept_float = dict(selection.kept_float)
    for (node_name, _), key in sorted(dropped_uses.items()):
        kept_float.setdefault(
            selection.targets[key].tensor,
            f"{rule}: the activation input of {node_name!r} stays float, so its weights do "
            "too (onnxruntime would dequantize them at every inference)",
        )

    # A node stays in quantized_nodes while any of its inputs or outputs is quantized.
    touched = {use[0] for use in input_uses}
    for node in graph:
        if any(output.name in selection.output_targets for output in node.outputs):
            touched.add(node.name or "")
    return attrs.evolve(
        selection,
        targets={key: target for key, target in selection.targets.items() if key not in removed},
        input_uses=input_uses,
        share_groups=tuple(
            kept
            for group in selection.share_groups
            if len(kept := tuple(key for key in group if key not in removed)) > 1
        ),
        bias_links=tuple(link for link in selection.bias_links if link.node not in nodes),
        quantized_nodes=tuple(
            name for name in selection.quantized_nodes if name not in nodes or name in touched
        ),
        kept_float=kept_float,
    )
