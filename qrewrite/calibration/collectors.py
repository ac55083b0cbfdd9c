"""Statistics collectors: immutable values with `update(batch)` and `merge(other)`.

Every calibration method computes its range from these collectors, so one pass over the
samples serves all methods, and workers that saw different samples merge their results.
`update` and `merge` return new collectors and never change their arguments.

Histograms use bins of width 2**k aligned to multiples of 2**k. Coarsening one by a
factor of two adds pairs of neighbouring bins without losing counts, and the exponent k is
a function of the data's finite min and max only (`canonical_exponent`). Together this
makes `merge` exact: merging the histograms of two halves of the data gives the same
counts as one histogram of all of it.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

from qrewrite.calibration.graph import HISTOGRAM_BINS, MIN_EXPONENT


def _finite_values(batch: Any) -> tuple[np.ndarray, int]:
    values = np.asarray(batch, dtype=np.float32).ravel()
    finite = np.isfinite(values)
    if finite.all():
        return values, 0
    return values[finite], int(values.size - np.count_nonzero(finite))


@attrs.frozen
class MinMax:
    """Count, minimum and maximum of the finite values seen, and the number of NaN and inf."""

    count: int = 0
    nonfinite: int = 0
    min: float = math.inf
    max: float = -math.inf

    def update(self, batch: Any) -> MinMax:
        values, nonfinite = _finite_values(batch)
        if values.size == 0:
            return attrs.evolve(self, nonfinite=self.nonfinite + nonfinite)
        return self.merge(
            MinMax(values.size, nonfinite, float(values.min()), float(values.max()))
        )

    def merge(self, other: MinMax) -> MinMax:
        return MinMax(
            self.count + other.count,
            self.nonfinite + other.nonfinite,
            min(self.min, other.min),
            max(self.max, other.max),
        )


@attrs.frozen
class MovingAverageMinMax:
    """Exponential moving averages of each batch's minimum and maximum.

    The first batch sets both averages; each later batch moves them by `constant` times
    the difference. Batches without finite values are skipped.
    """

    constant: float
    batches: int = 0
    min: float = math.inf
    max: float = -math.inf

    def update(self, batch: Any) -> MovingAverageMinMax:
        values, _ = _finite_values(batch)
        if values.size == 0:
            return self
        return self.update_extremes(float(values.min()), float(values.max()))

    def update_extremes(self, low: float, high: float) -> MovingAverageMinMax:
        if self.batches == 0:
            return attrs.evolve(self, batches=1, min=low, max=high)
        c = self.constant
        return attrs.evolve(
            self,
            batches=self.batches + 1,
            min=self.min + c * (low - self.min),
            max=self.max + c * (high - self.max),
        )

    def merge(self, other: MovingAverageMinMax) -> MovingAverageMinMax:
        """Average the two states weighted by their batch counts.

        NOTE: a moving average depends on the order of batches, so this merge only
        approximates one pass over both halves. It is exact when either side is empty.
        """
        if other.batches == 0:
            return self
        if self.batches == 0:
            return other
        total = self.batches + other.batches
        return attrs.evolve(
            self,
            batches=total,
            min=(self.min * self.batches + other.min * other.batches) / total,
            max=(self.max * self.batches + other.max * other.batches) / total,
        )


def _exponent_floor(low: float, high: float) -> int:
    """Return the smallest exponent allowed for data in [low, high]: 2**k >= max|x| / 2**24."""
    abs_max = max(abs(low), abs(high))
    if abs_max == 0.0:
        return MIN_EXPONENT
    _, exponent = math.frexp(abs_max)  # abs_max = m * 2**exponent with 0.5 <= m < 1
    return max(exponent - 24, MIN_EXPONENT)


def bin_indices(
    values: Any, inverse_width: Any, scratch: Any = None, out: Any = None
) -> Any:
    """Return floor(values * inverse_width) as int64 for float32 values and 2**-k widths.

    The float32 product is exact unless it underflows. A negative value whose product
    underflows to zero, such as -1e-38 with bins of width 2**24, still gets bin -1.
    Arrays shaped like the product, `scratch` (float32) and `out` (int64), receive the
    temporary product and the result instead of new arrays.
    """
    scaled = np.multiply(values, inverse_width, out=scratch)
    if np.ndim(scaled) == 0:
        return np.int64(np.floor(scaled)) - (scaled == 0 and values < 0)
    # After the floor, a zero is either a value in [0, 1) or a negative underflow.
    np.floor(scaled, out=scaled)
    if out is None:
        out = scaled.astype(np.int64)
    else:
        np.copyto(out, scaled, casting="unsafe")
    zeros = np.flatnonzero(scaled == 0)
    if zeros.size:
        source = values
        if np.shape(values) != scaled.shape:
            source = np.broadcast_to(values, scaled.shape)
        out.flat[zeros[source.flat[zeros] < 0]] = -1
    return out


def bin_index(value: float, exponent: int) -> int:
    """Return floor(value / 2**exponent) for a float32 `value`, exactly."""
    return int(bin_indices(np.float32(value), np.float32(2.0**-exponent)))


def _span(low: float, high: float, exponent: int) -> int:
    return bin_index(high, exponent) - bin_index(low, exponent) + 1


def canonical_exponent(low: float, high: float, at_least: int = MIN_EXPONENT) -> int:
    """Return the smallest exponent >= `at_least` whose bins cover [low, high] in HISTOGRAM_BINS.

    It grows with the range, so the exponent of merged data is never below either part's.
    """
    exponent = max(_exponent_floor(low, high), at_least)
    spread = high - low
    if spread > 0:
        # log2 is only a first guess: the loop below decides, so rounding cannot matter.
        exponent = max(exponent, math.floor(math.log2(spread / HISTOGRAM_BINS)) - 1)
    while _span(low, high, exponent) > HISTOGRAM_BINS:
        exponent += 1
    return exponent


@attrs.frozen(eq=False)
class Histogram:
    """Counts of finite values in bins of width w = 2**exponent.

    Bin i covers [(first_bin + i) * w, (first_bin + i + 1) * w). `min` and `max` are the
    exact extremes of the counted values. An empty histogram has no counts and min > max.
    """

    exponent: int = MIN_EXPONENT
    first_bin: int = 0
    counts: np.ndarray = attrs.field(factory=lambda: np.zeros(0, np.int64))
    min: float = math.inf
    max: float = -math.inf

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def width(self) -> float:
        return 2.0**self.exponent

    def edges(self) -> np.ndarray:
        """Return the len(counts) + 1 bin edges."""
        indices = np.arange(self.first_bin, self.first_bin + self.counts.size + 1)
        return indices.astype(np.float64) * self.width

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self.exponent == other.exponent
            and self.first_bin == other.first_bin
            and np.array_equal(self.counts, other.counts)
            and self.min == other.min
            and self.max == other.max
        )

    __hash__ = None  # type: ignore[assignment]

    def coarsen(self, exponent: int) -> Histogram:
        """Return the same counts in bins of width 2**exponent (not smaller than now)."""
        if exponent == self.exponent or self.counts.size == 0:
            return attrs.evolve(self, exponent=max(exponent, self.exponent))
        if exponent < self.exponent:
            raise ValueError(f"cannot refine bins from 2**{self.exponent} to 2**{exponent}")
        shift = exponent - self.exponent
        old = np.arange(self.first_bin, self.first_bin + self.counts.size, dtype=np.int64)
        new = old >> shift  # floor division by 2**shift, also for negative indices
        first = int(new[0])
        counts = np.bincount(new - first, weights=self.counts).astype(np.int64)
        return Histogram(exponent, first, counts, self.min, self.max)

    def update(self, batch: Any) -> Histogram:
        values, _ = _finite_values(batch)
        if values.size == 0:
            return self
        low, high = float(values.min()), float(values.max())
        exponent = canonical_exponent(low, high)
        inverse_width = np.float32(2.0**-exponent)
        bins = bin_indices(values, inverse_width)
        first = bin_index(low, exponent)
        counts = np.bincount(bins - first).astype(np.int64)
        return self.merge(Histogram(exponent, first, counts, low, high))

    def merge(self, other: Histogram) -> Histogram:
        if other.counts.size == 0:
            return self
        if self.counts.size == 0:
            return other
        low, high = min(self.min, other.min), max(self.max, other.max)
        exponent = canonical_exponent(low, high, max(self.exponent, other.exponent))
        left, right = self.coarsen(exponent), other.coarsen(exponent)
        first = min(left.first_bin, right.first_bin)
        last = max(left.first_bin + left.counts.size, right.first_bin + right.counts.size)
        counts = np.zeros(last - first, np.int64)
        for part in (left, right):
            start = part.first_bin - first
            counts[start : start + part.counts.size] += part.counts
        return Histogram(exponent, first, counts, low, high)

    @classmethod
    def from_graph(
        cls, exponent: float, first_bin: float, counts: np.ndarray, low: float, high: float
    ) -> Histogram:
        """Turn the calibration graph's histogram of one batch into a canonical one."""
        graph_exponent, graph_first = int(exponent), int(first_bin)
        used = bin_index(high, graph_exponent) - graph_first + 1
        raw = cls(graph_exponent, graph_first, counts[:used].astype(np.int64), low, high)
        return raw.coarsen(canonical_exponent(low, high, graph_exponent))

    def abs_histogram(self) -> Histogram:
        """Return the histogram of |x|: bin i of the result counts |x| in [i, i+1) * width.

        A value that lies exactly on a negative bin edge moves to the next bin up; this
        shifts counts by at most one bin width.
        """
        if self.counts.size == 0:
            return self
        indices = np.arange(self.first_bin, self.first_bin + self.counts.size, dtype=np.int64)
        # Negative bin -i-1 contains x in [-(i+1)w, -iw), so |x| lies in (iw, (i+1)w].
        folded = np.where(indices < 0, -indices - 1, indices)
        counts = np.bincount(folded, weights=self.counts).astype(np.int64)
        abs_min = 0.0 if self.min <= 0.0 <= self.max else min(abs(self.min), abs(self.max))
        abs_max = max(abs(self.min), abs(self.max))
        first = int(folded.min())
        return Histogram(self.exponent, first, counts[first:], abs_min, abs_max)


@attrs.frozen(eq=False)
class ChannelPeaks:
    """Running maximum |x| of each slice along a tensor's last axis.

    `peaks` is None before the first batch. A tensor whose last axis changes length
    between batches has no per-channel peak: `varying` becomes True and stays True.
    """

    peaks: np.ndarray | None = None
    varying: bool = False

    def update(self, batch_peaks: Any) -> ChannelPeaks:
        """Merge the peaks of one batch, a vector with one entry per slice of the last axis."""
        return self.merge(ChannelPeaks(np.asarray(batch_peaks, dtype=np.float32)))

    def merge(self, other: ChannelPeaks) -> ChannelPeaks:
        if self.varying or other.varying:
            return ChannelPeaks(None, True)
        if other.peaks is None:
            return self
        if self.peaks is None:
            return other
        if self.peaks.shape != other.peaks.shape:
            return ChannelPeaks(None, True)
        return ChannelPeaks(np.maximum(self.peaks, other.peaks))
