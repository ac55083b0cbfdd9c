"""KeepSlowOpsFloat: ops whose onnxruntime CPU integer kernel is slower run in float.

Measured with `python -m benchmarks.bench_kernels` (onnxruntime 1.32.0, one thread, x86_64
AMD EPYC with AVX-512 VNNI, 2 cores shared with other jobs). The ratio is the time of
the integer kernel over the time of the same op left float between a DequantizeLinear
and a QuantizeLinear; both models pay the same graph-input quantization:

| op | uint8 | int8 |
|---|---|---|
| MaxPool 3x3 stride 1, 64 ch, 56x56 | 18.6 | 17.1 |
| MaxPool 2x2 stride 2, 64 ch, 56x56 | 5.10 | 5.40 |
| AveragePool 3x3 stride 1, 64 ch, 56x56 | 5.34 | 5.23 |
| depthwise Conv 5x5, 64 ch, 56x56 | 1.04 | 1.03 |
| depthwise Conv 5x5, batch 4, 88 ch, 12x48 | 1.56 | 1.45 |
| depthwise Conv 3x3, batch 4, 16 ch, 24x96 | 1.53 | 1.29 |
| depthwise Conv 3x3, 64 ch, 56x56 | 0.90 | 0.89 |
| depthwise Conv 3x3, 256 ch, 14x14 | 0.79 | 0.78 |
| Conv 3x3 and 1x1, MatMul, Add, Mul, Sigmoid, GlobalAveragePool | 0.32 to 0.79 | same |

Another run of the script on the same machine gave 38 for the first MaxPool and 25 for
AveragePool, so only the side of 1.0 is stable, not the size of each ratio.

The one-op models never reach onnxruntime's NHWC layout. Between two QLinearConvs it
runs a uint8 MaxPool as NhwcMaxPool, which beat the float MaxPool with its Q/DQ (integer
/ float pool 0.58 to 0.82, 1x1 Conv -> MaxPool 3x3 stride 2 -> 1x1 Conv, 16 to 200
channels; same script).

So when CPUExecutionProvider is the only execution provider, the rule leaves float each
MaxPool that neither reads a Conv output (directly or through a Relu or Clip) nor feeds
a Conv: its input and output get separate quantizations instead of one shared one.
onnxruntime runs the integer MaxPool only when both sides have the same scale and zero
point, so the pool runs in float between them.

Two slow kernels stay quantized, because a QDQ model cannot keep them float in
onnxruntime 1.32:

- depthwise Conv: when a Conv reads a per-tensor DequantizeLinear, onnxruntime's
  WeightBiasQuantization pass quantizes float weights itself (per tensor) and then fuses
  a QLinearConv, so leaving the weights float would only cost accuracy.
- AveragePool: onnxruntime fuses DequantizeLinear -> AveragePool -> QuantizeLinear into
  QLinearAveragePool whatever the parameters, and a float output would block the fusion
  of the next op.
"""

from __future__ import annotations

import attrs
import onnx_ir as ir

from qrewrite.quantization.planner import PlannerContext
from qrewrite.quantization.selection import Selection


def cpu_only(providers: tuple[str, ...]) -> bool:
    """Whether onnxruntime runs the model on CPUExecutionProvider alone."""
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

    # The output target stays for the consumers that read it; one that nobody reads goes.
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
    """Whether the node reads a Conv output (directly or through Relu or Clip) or feeds a Conv.

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


def keep_slow_ops_float(context: PlannerContext) -> Selection:
    """Leave float the MaxPools that onnxruntime would run as a slow NCHW integer kernel."""
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
    if not pools:
        return context.selection

    selection = _separate_max_pools(context.selection, context.graph, pools)
    # NOTE: for a MaxPool over non-negative values (after a Relu or Sigmoid) both sides
    # usually get the same parameters, because the range always includes 0 and max
    # pooling keeps the maximum; onnxruntime then still runs the integer MaxPool.
    note = (
        f"KeepSlowOpsFloat: {len(pools)} MaxPool node(s) run in float, because "
        "onnxruntime's CPU integer MaxPool is slower than float (benchmarks/bench_kernels.py)"
    )
    return attrs.evolve(selection, notes=(*selection.notes, note))
