"""WarnSlowTypes: a summary note when the chosen activation type is slow on the target.

With CPUExecutionProvider alone, int8 activations make onnxruntime 1.32 slower than
the float model: its graph optimizer converts int8 activations to uint8 around the nodes
it fuses, and with a Q/DQ pair shared by several consumers many Convs stay float.
`python -m benchmarks.bench_kernels` measured the one-thread latency over float with
onnxruntime 1.32.0 on x86_64 (AMD EPYC, AVX-512 VNNI), both with int8 per-channel
weights and without FoldRelu and KeepSlowOpsFloat:

| model | int8 activations | uint8 activations |
|---|---|---|
| PP-OCRv4 det, 640x640 | 1.25 | 0.65 |
| PP-OCRv4 rec, 4 lines | 1.14 | 0.68 |
| PP-OCR cls, 4 lines | 2.53 | 1.53 |
| Silero VAD 16k sequence | 0.59 | 0.24 |

The note changes nothing in the model: a user who asks for int8 activations gets them.
"""

from __future__ import annotations

import logging

import attrs

from qrewrite.config import DataType
from qrewrite.quantization.planner import PlannerContext
from qrewrite.quantization.planner.slow_kernels import cpu_only
from qrewrite.quantization.selection import Role, Selection

logger = logging.getLogger(__name__)


def warn_slow_types(context: PlannerContext) -> Selection:
    """Add a note when activations are quantized to int8 for onnxruntime on CPU."""
    selection = context.selection
    if not cpu_only(context.config.options.ExecutionProviders):
        return selection
    int8_activations = sum(
        1
        for target in selection.targets.values()
        if target.role is Role.ACTIVATION
        and target.spec is not None
        and target.spec.data_type is DataType.Int8
    )
    if not int8_activations:
        return selection
    note = (
        f"WarnSlowTypes: {int8_activations} activation tensor(s) are int8, which onnxruntime "
        "runs slower on CPU than uint8 and often slower than float; UInt8Spec activations "
        "(qrewrite.recommended_config(), or --activation-type UInt8) run faster"
    )
    if not context.config.options.prints_summary():
        logger.warning("%s", note)
    return attrs.evolve(selection, notes=(*selection.notes, note))
