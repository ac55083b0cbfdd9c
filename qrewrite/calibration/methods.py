"""Range methods: each turns a tensor's collected statistics into a `TensorRange`.

All methods except MinMax work on the tensor's histogram (see `collectors.Histogram`),
whose bin width bounds their resolution: with 2048 bins over the data's range, a
percentile or a clipping threshold is found to within about 1/2048 of the range.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qrewrite.calibration.collectors import Histogram
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


# kl_divergences works on blocks of rows of at most this many float64 values (128 KiB).
# With glibc 2.36 on x86_64, larger temporaries came from fresh pages on every call, and
# the page faults made whole 129 x 512 matrices 2.4 times slower (1.7 ms against 0.7 ms).
KL_BLOCK_ELEMENTS = 2**14


def kl_divergences(counts: np.ndarray, ends: np.ndarray, levels: int) -> np.ndarray:
    """Return `_kl_divergence(counts, end, levels)` for every end, vectorized over the ends.

    Row r of the matrices below is the clipped distribution for ends[r]. Chunk sums come
    from prefix sums of the integer counts, so they are exact. The results differ from
    `_kl_divergence` only in the rounding of the final sums.
    """
    ends = np.asarray(ends, np.int64)
    size = counts.size
    rows = np.arange(ends.size)
    cumulative = np.concatenate([[0], np.cumsum(counts)])
    nonzero_cumulative = np.concatenate([[0], np.cumsum(counts > 0)])
    total = cumulative[-1]
    tails = total - cumulative[ends]

    # Chunk j of row r contains the bins i < e = ends[r] with i * levels // e == j, which are
    # [ceil(j * e / levels), ceil((j + 1) * e / levels)).
    edges = (np.arange(levels + 1)[None, :] * ends[:, None] + levels - 1) // levels
    chunk_sum = cumulative[edges[:, 1:]] - cumulative[edges[:, :-1]]
    chunk_nonzero = nonzero_cumulative[edges[:, 1:]] - nonzero_cumulative[edges[:, :-1]]
    last_chunk = ((ends - 1) * levels) // ends
    chunk_sum[rows, last_chunk] += tails
    chunk_nonzero[rows, last_chunk] += (counts[ends - 1] == 0) & (tails > 0)
    mean = chunk_sum.astype(np.float64) / np.maximum(chunk_nonzero, 1).astype(np.float64)
    # Each chunk's mean is spread over its bins, and the bins past the end get 1.0. A
    # chunk of empty bins also gets 1.0, so that every divisor below is positive.
    means = np.concatenate([np.where(mean > 0, mean, 1.0), np.ones((ends.size, 1))], axis=1)
    lengths = np.concatenate([np.diff(edges, axis=1), (size - ends)[:, None]], axis=1)

    counts_float = counts.astype(np.float64)[None, :]
    bins = np.arange(size)[None, :]
    result = np.empty(ends.size)
    step = max(1, KL_BLOCK_ELEMENTS // size)
    for start in range(0, ends.size, step):
        block = slice(start, start + step)
        block_ends = ends[block]
        reference = np.where(bins < block_ends[:, None], counts_float, 0.0)
        reference[rows[: block_ends.size], block_ends - 1] += tails[block]
        nonzero = reference > 0
        spread = np.repeat(means[block].ravel(), lengths[block].ravel())
        expanded = spread.reshape(reference.shape)
        # Empty bins get the ratio 1, so their term is 0 * log(1) = 0.
        terms = np.where(nonzero, reference, expanded)
        terms /= expanded
        np.log(terms, out=terms)
        terms *= reference
        result[block] = terms.sum(axis=1)
    result /= np.float64(total)
    return result


def _kl_divergence(counts: np.ndarray, end: int, levels: int) -> float:
    reference = counts[:end].astype(np.float64)
    reference[-1] += counts[end:].sum()
    nonzero = reference > 0
    chunk = (np.arange(end) * levels) // end
    chunk_sum = np.bincount(chunk, weights=reference, minlength=levels)
    chunk_nonzero = np.bincount(chunk, weights=nonzero, minlength=levels)
    expanded = np.where(nonzero, chunk_sum[chunk] / np.maximum(chunk_nonzero[chunk], 1), 0.0)
    p = reference[nonzero]
    q = expanded[nonzero]
    return float(np.sum(p * np.log(p / q)) / reference.sum())


# Entropy searches thresholds over at most this many bins of |x|; finer histograms are
# coarsened first. It tries at most ENTROPY_CANDIDATES thresholds, evenly spaced.
ENTROPY_BINS = 512
ENTROPY_CANDIDATES = 128


def entropy_range(histogram: Histogram, grid: IntegerGrid) -> TensorRange:
    """Return the clipping threshold t of |x| with the lowest KL divergence.

    Candidate thresholds are bin edges of the |x| histogram. For each, the clipped
    distribution P (outliers added to the last bin) is compared with Q, P merged into as
    many levels as the grid has on one side of zero and spread back over P's non-empty bins.
    The range is [max(min, -t), min(max, t)].
    """
    absolute = histogram.abs_histogram()
    exponent = absolute.exponent
    last_bin = absolute.first_bin + absolute.counts.size - 1
    while (last_bin >> (exponent - absolute.exponent)) + 1 > ENTROPY_BINS:
        exponent += 1
    absolute = absolute.coarsen(exponent)
    # Bins counted from zero, so bin i covers [i, i + 1) * width.
    counts = np.zeros(absolute.first_bin + absolute.counts.size, np.int64)
    counts[absolute.first_bin :] = absolute.counts

    negative = histogram.min < 0
    levels = 2 ** (grid.bits - 1) if (grid.signed or negative) else 2**grid.bits
    # A threshold below the smallest |x| would clip every value, so candidates start above it.
    first_end = max(levels, absolute.first_bin + 1)
    if counts.size <= first_end:
        return TensorRange(histogram.min, histogram.max)
    step = -(-(counts.size + 1 - first_end) // ENTROPY_CANDIDATES)
    ends = list(range(first_end, counts.size + 1, step))
    if ends[-1] != counts.size:
        ends.append(counts.size)
    divergences = kl_divergences(counts, np.array(ends), levels)
    best_end = ends[int(np.argmin(divergences))]
    threshold = best_end * absolute.width
    return TensorRange(max(histogram.min, -threshold), min(histogram.max, threshold))


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

