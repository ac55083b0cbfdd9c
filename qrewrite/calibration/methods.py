"""Range methods: each turns a tensor's collected statistics into a `TensorRange`.

All methods except MinMax work on the tensor's histogram (see `collectors.Histogram`),
whose bin width bounds their resolution: with 2048 bins over the data's range, a
percentile or a clipping threshold is found to within about 1/2048 of the range.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from qrewrite.calibration.collectors import Histogram
from qrewrite.calibration.entropy import entropy_range, entropy_ranges
from qrewrite.calibration.grid import IntegerGrid, grid_for
from qrewrite.calibration.power_of_two import (
    bin_values,
    min_mse_exponent,
    non_overflow_exponent,
    power_of_two_range,
)
from qrewrite.calibration.ranges import TensorRange
from qrewrite.calibration.requests import PowerOfTwoMethod, RangeRequest
from qrewrite.calibration.tensor_collector import TensorCollector
from qrewrite.config.enums import CalibMethod

# Clipping ranges MinMSE tries: the full range scaled by 1/100, 2/100, ..., 1.
MIN_MSE_STEPS = 100


def quantile(histogram: Histogram, fraction: float) -> float:
    """Return the value below which `fraction` of the counted values lie.

    The position inside a bin is interpolated linearly, and the result is clamped to the
    exact min and max of the data.
    """
    cumulative = np.cumsum(histogram.counts)
    target = fraction * cumulative[-1]
    index = int(np.searchsorted(cumulative, target, side="left"))
    index = min(index, histogram.counts.size - 1)
    before = cumulative[index - 1] if index > 0 else 0
    inside = (target - before) / histogram.counts[index] if histogram.counts[index] else 0.0
    value = (histogram.first_bin + index + inside) * histogram.width
    return float(min(max(value, histogram.min), histogram.max))


def percentile_range(histogram: Histogram, percent: float, symmetric: bool) -> TensorRange:
    """Return the range that keeps `percent` of the values.

    Symmetric: [-t, t] with t the percentile of |x|. Otherwise the cut-off share is split
    evenly between the two tails, as onnxruntime's percentile calibrator does.
    """
    if symmetric:
        threshold = quantile(histogram.abs_histogram(), percent / 100.0)
        return TensorRange(-threshold, threshold)
    cut_per_side = (100.0 - percent) / 200.0
    return TensorRange(quantile(histogram, cut_per_side), quantile(histogram, 1.0 - cut_per_side))


def min_mse_range(histogram: Histogram, grid: IntegerGrid) -> TensorRange:
    """Return the range [a * min, a * max], a in {1/100, ..., 1}, with the lowest MSE."""
    values, weights = bin_values(histogram)
    factors = np.arange(1, MIN_MSE_STEPS + 1) / MIN_MSE_STEPS
    low, high = factors * histogram.min, factors * histogram.max
    scale, zero_point = grid.params(low, high)
    errors = grid.errors(values, weights, scale, zero_point, "mse")
    best = int(np.argmin(errors))
    return TensorRange(min(low[best], high[best]), max(low[best], high[best]))


def layerwise_percentile_range(
    histogram: Histogram, grid: IntegerGrid, options: Any
) -> TensorRange:
    """Return the PercentileCandidates range with the lowest LWPMetric error."""
    values, weights = bin_values(histogram)
    candidates = [
        percentile_range(histogram, percent, grid.symmetric)
        for percent in options.PercentileCandidates
    ]
    low = np.array([c.min for c in candidates])
    high = np.array([c.max for c in candidates])
    scale, zero_point = grid.params(low, high)
    errors = grid.errors(values, weights, scale, zero_point, options.LWPMetric)
    return candidates[int(np.argmin(errors))]


def compute_range(collector: TensorCollector, request: RangeRequest, options: Any) -> TensorRange:
    """Return the range `request.method` picks from `collector`.

    For the power-of-two methods the range is built so that the quantizer's power-of-two
    scale for it is the scale the search chose (see `power_of_two_range`).
    """
    stats = collector.min_max
    if stats.count == 0:
        return TensorRange(0.0, 0.0)
    method = request.method
    grid = grid_for(request, options)
    histogram = collector.histogram

    if method is CalibMethod.MinMax:
        source = collector.moving_average or stats
        result = TensorRange(source.min, source.max)
    elif method is PowerOfTwoMethod.NonOverflow:
        exponent = non_overflow_exponent(stats.min, stats.max, grid)
        return power_of_two_range(exponent, stats.min, grid)
    elif method is PowerOfTwoMethod.MinMSE:
        assert histogram is not None
        if collector.votes is not None:
            exponent = collector.votes.most_common()
        else:
            exponent = min_mse_exponent(histogram, grid)
        return power_of_two_range(exponent, stats.min, grid)
    elif method is CalibMethod.Distribution:
        # onnxruntime's Distribution calibrator returns mean and standard deviation for
        # float8 types, and its lowest and highest histogram edges as the range. qrewrite
        # builds no float8 type, so the range, the min and max, is all that is used.
        result = TensorRange(stats.min, stats.max)
    else:
        assert histogram is not None
        if method is CalibMethod.Percentile:
            result = percentile_range(histogram, options.Percentile, grid.symmetric)
        elif method is CalibMethod.Entropy:
            result = entropy_range(histogram, grid)
        elif method is CalibMethod.MinMSE:
            result = min_mse_range(histogram, grid)
        elif method is CalibMethod.LayerwisePercentile:
            lwp_grid = grid_for(request, options, options.ActivationBitWidth)
            result = layerwise_percentile_range(histogram, lwp_grid, options)
        else:
            raise ValueError(f"unknown calibration method {method!r}")

    if grid.symmetric:
        result = result.symmetric()
    return result


def compute_ranges(
    collectors: Mapping[str, TensorCollector],
    requests: Mapping[str, RangeRequest],
    options: Any,
) -> dict[str, TensorRange]:
    """Return `compute_range` of every requested tensor, in the order of `requests`.

    The Entropy searches of all tensors run together (see `entropy.entropy_ranges`),
    which is faster than one search per tensor when the tensors are many and small.
    """
    entropy_tensors = [
        tensor
        for tensor, request in requests.items()
        if request.method is CalibMethod.Entropy
        and collectors[tensor].min_max.count > 0
        and collectors[tensor].histogram is not None
    ]
    items = []
    for tensor in entropy_tensors:
        histogram = collectors[tensor].histogram
        assert histogram is not None
        items.append((histogram, grid_for(requests[tensor], options)))
    searched = {}
    results = entropy_ranges(items)
    for tensor, (_, grid), result in zip(entropy_tensors, items, results, strict=True):
        searched[tensor] = result.symmetric() if grid.symmetric else result
    return {
        tensor: searched[tensor]
        if tensor in searched
        else compute_range(collectors[tensor], request, options)
        for tensor, request in requests.items()
    }
