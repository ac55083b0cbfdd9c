"""KeepSlowOpsFloat: ops whose onnxruntime CPU integer kernel is slower run in float.

Measured with `python -m benchmarks.bench_kernels` (onnxruntime 1.32.0, one thread, x86_64
AMD EPYC with AVX-512 VNNI, 2 cores shared with other jobs). The ratio is the time of
the integer kernel over the time of the same op left float between a DequantizeLinear
and a QuantizeLinear. Both models pay the same graph-input quantization:

| op | uint8 | int8 |
|---|---|---|
| MaxPool 3x3 stride 1, 64 ch, 56x56 | 17.4 | 18.6 |
| MaxPool 2x2 stride 2, 64 ch, 56x56 | 6.44 | 6.67 |
| AveragePool 3x3 stride 1, 64 ch, 56x56 | 8.76 | 8.21 |
| depthwise Conv 5x5, 64 ch, 56x56 | 1.09 | 1.09 |
| depthwise Conv 5x5, batch 4, 88 ch, 12x48 | 1.55 | 1.52 |
| depthwise Conv 3x3, batch 4, 16 ch, 24x96 | 1.29 | 1.28 |
| depthwise Conv 3x3, 64 ch, 56x56 | 0.91 | 0.89 |
| depthwise Conv 3x3, 256 ch, 14x14 | 0.79 | 0.79 |
| Conv 3x3 and 1x1, MatMul, Add, Mul, Sigmoid, GlobalAveragePool | 0.12 to 0.80 | same |

Earlier runs of the script on the same machine gave 17 to 38 for the first MaxPool, 5 to
28 for AveragePool and 1.03 to 1.13 for the first 5x5 depthwise Conv. So only the side of
1.0 is stable, not the size of each ratio.

The one-op models never reach onnxruntime's NHWC layout. Between two QLinearConvs it
runs a uint8 MaxPool as NhwcMaxPool, which beat the float MaxPool with its Q/DQ (integer
/ float pool 0.57 to 0.90, 1x1 Conv -> MaxPool 3x3 stride 2 -> 1x1 Conv, 16 to 200
channels; same script).

So when CPUExecutionProvider is the only execution provider, the rule leaves float each
MaxPool that neither reads a Conv output (directly or through a Relu or Clip) nor feeds
a Conv: its input and output get separate quantizations instead of one shared one.
onnxruntime runs the integer MaxPool only when both sides have the same scale and zero
point, so the pool runs in float between them.

A depthwise Conv (group equal to its channels) with a kernel larger than 3x3 or fewer
than `DEPTHWISE_MIN_CHANNELS` channels runs float too, but only where that costs no
extra conversion: when its input is the only use of the output of an op that onnxruntime
runs in float anyway (`FLOAT_RUN_PRODUCERS`, such as HardSwish or the Div of its
decomposed form).
Then that output, the Conv's weights and its bias stay float and only the Conv's output
is quantized. Elsewhere the Conv stays quantized, because when a Conv reads a per-tensor
DequantizeLinear, onnxruntime's WeightBiasQuantization pass quantizes float weights
itself (per tensor) and fuses a QLinearConv anyway.

AveragePool stays quantized: onnxruntime fuses DequantizeLinear -> AveragePool ->
QuantizeLinear into QLinearAveragePool whatever the parameters, and a float output would
block the fusion of the next op.
"""

from __future__ import annotations

import attrs
import onnx_ir as ir

from qrewrite.model.graph_utils import constant_array
from qrewrite.quantization.edits import drop_tensors
from qrewrite.quantization.planner import PlannerContext
from qrewrite.quantization.selection import Selection

# NOTE: 16 channels measured slower and 64 faster; the threshold between is not measured.
DEPTHWISE_MIN_CHANNELS = 64
DEPTHWISE_MAX_KERNEL_AREA = 9
# Ops with no integer kernel in onnxruntime 1.32 on CPU: they run in float between a
# DequantizeLinear and a QuantizeLinear (seen in its optimized PP-OCR graphs).
FLOAT_RUN_PRODUCERS = frozenset({"Div", "HardSigmoid", "HardSwish"})


def cpu_only(providers: tuple[str, ...]) -> bool:
    """Return whether `providers` is CPUExecutionProvider alone."""
    return tuple(providers) == ("CPUExecutionProvider",)


def _separate_max_pools(selection: Selection, graph: ir.Graph, names: set[str]) -> Selection:
    """Give each MaxPool in `names` separate input and output quantizations."""
    input_uses = dict(selection.input_uses)
    output_targets = dict(selection.output_targets)
    separated = set()
    for node in graph:
        if node.name not in names:
            continue
        input_uses.pop((node.name, 0), None)
        for output in node.outputs:
            key = output_targets.pop(output.name or "", None)
            if key is not None:
                separated.add(key)

    # The output target stays for the consumers that read it, and a target without readers
    # is removed.
    used = set(input_uses.values()) | set(output_targets.values())
    for link in selection.bias_links:
        used |= {link.bias_key, link.activation_key, link.weight_key}
    groups = []
    for group in selection.share_groups:
        kept = tuple(key for key in group if key not in separated and key in used)
        if len(kept) > 1:
            groups.append(kept)
    return attrs.evolve(
        selection,
        targets={key: target for key, target in selection.targets.items() if key in used},
        input_uses=input_uses,
        output_targets=output_targets,
        share_groups=tuple(groups),
        quantized_nodes=tuple(name for name in selection.quantized_nodes if name not in names),
    )


def next_to_conv(node: ir.Node) -> bool:
    """Return whether the node reads a Conv output (also through Relu or Clip) or feeds a Conv.

    onnxruntime runs such a uint8 MaxPool in NHWC layout, which is fast.
    """
    if any(use.node.op_type == "Conv" for output in node.outputs for use in output.uses()):
        return True
    value = node.inputs[0] if node.inputs else None
    producer = value.producer() if value is not None else None
    while producer is not None and producer.op_type in ("Relu", "Clip"):
        value = producer.inputs[0] if producer.inputs else None
        producer = value.producer() if value is not None else None
    return producer is not None and producer.op_type == "Conv"


def is_slow_depthwise_conv(node: ir.Node) -> bool:
    """Return whether `node` is a depthwise Conv whose integer kernel measured slower."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return False
    weight = constant_array(node.inputs[1])
    group = node.attributes.get("group")
    if weight is None or weight.ndim != 4 or group is None:
        return False
    channels = group.as_int()
    if channels <= 1 or weight.shape[0] != channels or weight.shape[1] != 1:
        return False
    kernel_area = int(weight.shape[2]) * int(weight.shape[3])
    return kernel_area > DEPTHWISE_MAX_KERNEL_AREA or channels < DEPTHWISE_MIN_CHANNELS


def _float_input_tensor(node: ir.Node) -> str | None:
    """Return the Conv's input tensor when only this Conv reads it from a float-run op."""
    value = node.inputs[0] if node.inputs else None
    if value is None or value.is_graph_output() or len(list(value.uses())) != 1:
        return None
    producer = value.producer()
    if producer is None or producer.op_type not in FLOAT_RUN_PRODUCERS:
        return None
    return value.name or None


def _float_depthwise_convs(context: PlannerContext, selection: Selection) -> tuple[Selection, int]:
    """Run the slow depthwise Convs in float where their input is computed in float."""
    quantized = set(selection.quantized_nodes)
    inputs: dict[str, str] = {}
    weights: dict[str, str] = {}
    convs: set[str] = set()
    for node in context.graph:
        name = node.name or ""
        if name not in quantized or not is_slow_depthwise_conv(node):
            continue
        tensor = _float_input_tensor(node)
        if tensor is None or tensor not in selection.output_targets:
            continue
        inputs[tensor] = f"KeepSlowOpsFloat: input of the depthwise Conv {name!r}, run in float"
        weight = node.inputs[1]
        if weight is not None and weight.name:
            weights[weight.name] = (
                f"KeepSlowOpsFloat: weights of the depthwise Conv {name!r}, run in float"
            )
        convs.add(name)
    if not convs:
        return selection, 0

    selection = drop_tensors(selection, inputs)
    input_uses = {use: key for use, key in selection.input_uses.items() if use[0] not in convs}
    bias_links = tuple(link for link in selection.bias_links if link.node not in convs)
    used = set(input_uses.values()) | set(selection.output_targets.values())
    for link in bias_links:
        used |= {link.bias_key, link.activation_key, link.weight_key}
    kept_float = dict(selection.kept_float)
    for tensor, reason in weights.items():
        kept_float.setdefault(tensor, reason)
    selection = attrs.evolve(
        selection,
        targets={key: target for key, target in selection.targets.items() if key in used},
        input_uses=input_uses,
        bias_links=bias_links,
        quantized_nodes=tuple(name for name in selection.quantized_nodes if name not in convs),
        kept_float=kept_float,
    )
    return selection, len(convs)


def keep_slow_ops_float(context: PlannerContext) -> Selection:
    """Leave float the MaxPools and depthwise Convs whose integer kernel would be slower."""
    if not cpu_only(context.config.options.ExecutionProviders):
        return context.selection
    quantized = set(context.selection.quantized_nodes)
    pools = {
        node.name or ""
        for node in context.graph
        if node.op_type == "MaxPool"
        and node.domain in ("", "ai.onnx")
        and (node.name or "") in quantized
        and not next_to_conv(node)
    }
    selection = context.selection
    if pools:
        selection = _separate_max_pools(selection, context.graph, pools)
    # NOTE: a MaxPool over non-negative values (after a Relu or Sigmoid) usually gets the
    # same parameters on both sides, because the range always includes 0 and max pooling
    # keeps the maximum. onnxruntime then still runs the integer MaxPool.
    selection, conv_count = _float_depthwise_convs(context, selection)
    if not pools and not conv_count:
        return context.selection

    kinds = []
    if pools:
        kinds.append(f"{len(pools)} MaxPool")
    if conv_count:
        kinds.append(f"{conv_count} depthwise Conv")
    note = (
        f"KeepSlowOpsFloat: {' and '.join(kinds)} node(s) run in float, because onnxruntime's "
        "CPU integer kernel for them is slower than float (measured with onnxruntime 1.32 on "
        "x86_64; docs/benchmarks.md in the source repository)"
    )
    return attrs.evolve(selection, notes=(*selection.notes, note))
