"""Range methods: each turns a tensor's collected statistics into a `TensorRange`."""

from __future__ import annotations

from typing import Any

from qrewrite.calibration.engine import TensorCollector
from qrewrite.calibration.ranges import TensorRange
from qrewrite.calibration.requests import RangeRequest
from qrewrite.config.enums import CalibMethod


def compute_range(collector: TensorCollector, request: RangeRequest, options: Any) -> TensorRange:
    """Return the range `request.method` picks from `collector`."""
    stats = collector.min_max
    if stats.count == 0:
        return TensorRange(0.0, 0.0)
    if request.method is CalibMethod.MinMax:
        source = collector.moving_average or stats
        result = TensorRange(source.min, source.max)
    else:
        raise NotImplementedError(f"calibration method {request.method} is not built yet")
    if options.CalibTensorRangeSymmetric or request.symmetric:
        result = result.symmetric()
    return result
