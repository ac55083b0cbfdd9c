"""KeepOutlierTensorsFloat: tensors whose range a few channels dominate stay float.

Transformers carry a few outlier channels in the residual stream: in all-MiniLM-L6-v2
the output of a feed-forward MatMul peaks at 194 in one channel while the median channel
peaks near 1. One per-tensor 8-bit scale then rounds every other channel to a handful of
levels. The rule compares each tensor's per-channel peaks (max |x| of each slice along the
last axis, collected during calibration by `ChannelPeakCollector`): when the largest peak
is at least OutlierChannelRatio times the median peak, the tensor stays float. The weights
of a Conv, Gemm or MatMul that reads such a tensor stay float too (see `float_weights`).

NOTE: when TensorsRangeFile loads saved ranges, calibration reads no samples, so no
peaks are collected and this rule changes nothing.

Float, not 16-bit: on MiniLM with uint8 activations both gave an embedding cosine of
0.9914, but 16-bit ran at 1.47 times the float latency against 1.16 for float (before
the weights were kept float too, one thread, onnxruntime 1.32). onnxruntime's CPU
provider has no 16-bit integer MatMul, and 16-bit Q/DQ needs opset 21.
"""

from __future__ import annotations

import numpy as np

from qrewrite.quantization.edits import drop_tensors
from qrewrite.quantization.planner import PlannerContext
from qrewrite.quantization.planner.float_weights import drop_weights_of_float_inputs
from qrewrite.quantization.selection import Role, Selection

# A tensor needs this many channels on its last axis for a median peak to mean anything.
MIN_CHANNELS = 8


def outlier_ratio(peaks: np.ndarray) -> float:
    """Return the largest channel peak divided by the median channel peak.

    Returns 0 for an all-zero tensor, and infinity when more than half of the channels
    are zero but some are not.
    """
    largest = float(np.max(peaks))
    median = float(np.median(peaks))
    if largest <= 0.0:
        return 0.0
    if median <= 0.0:
        return float("inf")
    return largest / median


def keep_outlier_tensors_float(context: PlannerContext) -> Selection:
    """Drop the quantization of activations with outlier channels (see the module doc)."""
    peaks_by_tensor = context.channel_peaks or {}
    threshold = float(context.config.options.OutlierChannelRatio)
    reasons = {}
    for target in context.selection.targets.values():
        if target.role is not Role.ACTIVATION or target.tensor in reasons:
            continue
        peaks = peaks_by_tensor.get(target.tensor)
        if peaks is None or peaks.size < MIN_CHANNELS or not np.all(np.isfinite(peaks)):
            continue
        ratio = outlier_ratio(peaks)
        if ratio >= threshold:
            reasons[target.tensor] = (
                f"KeepOutlierTensorsFloat: channel {int(np.argmax(peaks))} of "
                f"{peaks.size} peaks at {float(np.max(peaks)):.3g}, {ratio:.3g} times the "
                f"median channel peak (OutlierChannelRatio={threshold:g})"
            )
    selection = drop_tensors(context.selection, reasons)
    return drop_weights_of_float_inputs(
        selection, context.graph, reasons, "KeepOutlierTensorsFloat"
    )
