"""Statistics of many small tensors at once, computed with a few numpy calls.

The calibration graph returns small tensors whole instead of reducing each in the graph,
because a dozen reduction nodes per tensor cost more session start-up and per-run time
than copying a few thousand values. This module computes their min, max and canonical
histogram together: the results equal `MinMax().update(x)` and `Histogram().update(x)`
for each tensor, bin for bin.
"""

from __future__ import annotations

import numpy as np

from qrewrite.calibration.collectors import Histogram, MinMax
from qrewrite.calibration.graph import HISTOGRAM_BINS, MIN_EXPONENT


def _canonical_exponents(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Return `collectors.canonical_exponent` of each [low, high], vectorized."""
    abs_max = np.maximum(np.abs(low), np.abs(high)).astype(np.float64)
    _, abs_exponent = np.frexp(abs_max)
    floor = np.where(abs_max > 0, abs_exponent - 24, MIN_EXPONENT)
    exponent = np.maximum(floor, MIN_EXPONENT).astype(np.int64)
    spread = high.astype(np.float64) - low.astype(np.float64)
    with np.errstate(divide="ignore"):
        guess = np.floor(np.log2(spread / HISTOGRAM_BINS)) - 1
    guess = np.where(spread > 0, guess, MIN_EXPONENT).astype(np.int64)
    exponent = np.maximum(exponent, guess)
    while True:
        inverse = np.ldexp(np.float32(1.0), -exponent).astype(np.float32)
        span = np.floor(high * inverse) - np.floor(low * inverse) + 1
        too_wide = span > HISTOGRAM_BINS
        if not too_wide.any():
            return exponent
        exponent = exponent + too_wide


def batch_stats(
    arrays: list[np.ndarray], histogram: list[bool]
) -> list[tuple[MinMax, Histogram | None]]:
    """Return each array's MinMax, and its canonical Histogram where `histogram[i]` is True."""
    results: list[tuple[MinMax, Histogram | None]] = [
        (MinMax(), Histogram() if wanted else None) for wanted in histogram
    ]
    flats = [np.asarray(a, np.float32).ravel() for a in arrays]
    present = [i for i, flat in enumerate(flats) if flat.size]
    if not present:
        return results
    values = np.concatenate([flats[i] for i in present])
    sizes = np.array([flats[i].size for i in present])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    finite = np.isfinite(values)
    finite_counts = np.add.reduceat(finite, starts)
    low = np.minimum.reduceat(np.where(finite, values, np.float32(np.inf)), starts)
    high = np.maximum.reduceat(np.where(finite, values, np.float32(-np.inf)), starts)
    for slot, i in enumerate(present):
        count = int(finite_counts[slot])
        nonfinite = int(sizes[slot]) - count
        if count:
            stats = MinMax(count, nonfinite, float(low[slot]), float(high[slot]))
        else:
            stats = MinMax(0, nonfinite)
        results[i] = (stats, results[i][1])

    binned = [slot for slot, i in enumerate(present) if histogram[i] and finite_counts[slot]]
    if not binned:
        return results
    binned_low, binned_high = low[binned], high[binned]
    exponents = _canonical_exponents(binned_low, binned_high)
    inverse = np.ldexp(np.float32(1.0), -exponents).astype(np.float32)
    first_bins = np.floor(binned_low * inverse).astype(np.int64)
    spans = np.floor(binned_high * inverse).astype(np.int64) - first_bins + 1
    offsets = np.concatenate([[0], np.cumsum(spans)[:-1]])

    # Per element: the index of its tensor among `binned`, or -1.
    owner = np.full(len(present), -1, np.int32)
    owner[binned] = np.arange(len(binned), dtype=np.int32)
    element_owner = np.repeat(owner, sizes)
    keep = finite & (element_owner >= 0)
    kept_owner = element_owner[keep]
    del element_owner
    positions = np.floor(values[keep] * inverse[kept_owner]).astype(np.int64)
    positions -= first_bins[kept_owner] - offsets[kept_owner]
    del keep, kept_owner
    counts = np.bincount(positions, minlength=int(spans.sum()))

    for index, slot in enumerate(binned):
        i = present[slot]
        start = offsets[index]
        result = Histogram(
            int(exponents[index]),
            int(first_bins[index]),
            counts[start : start + spans[index]].astype(np.int64),
            float(binned_low[index]),
            float(binned_high[index]),
        )
        results[i] = (results[i][0], result)
    return results
