"""Power-of-two scales: the non-overflow and the MinMSE searches over scale exponents.

A power-of-two scale is 2**e. Calibration picks e and returns a range from which the
quantizer's rule (compute the float scale, then round it up to a power of two) gives back
exactly 2**e. `power_of_two_range` builds that range.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import attrs
import numpy as np

from qrewrite.calibration.collectors import Histogram
from qrewrite.calibration.grid import IntegerGrid
from qrewrite.calibration.ranges import TensorRange

# Power-of-two MinMSE tries the non-overflow scale and this many smaller ones.
POWER_OF_TWO_SEARCH_STEPS = 8
# A power-of-two range is this much narrower than scale * levels, so that the quantizer's
# rounding of the float scale up to a power of two lands exactly on the chosen scale.
POWER_OF_TWO_MARGIN = 1.0 - 2.0**-20


def bin_values(histogram: Histogram) -> tuple[np.ndarray, np.ndarray]:
    """Return the bin centers clamped to [min, max], and the counts, of the non-empty bins."""
    used = histogram.counts > 0
    centers = (np.arange(histogram.counts.size) + histogram.first_bin + 0.5) * histogram.width
    centers = np.clip(centers, histogram.min, histogram.max)
    return centers[used], histogram.counts[used].astype(np.float64)


def _power_of_two_grid(
    grid: IntegerGrid, exponents: np.ndarray, low: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return (scale, zero_point) for scales 2**exponents, with the quantizer's zero points."""
    scale = np.exp2(exponents.astype(np.float64))
    if grid.symmetric:
        zero_point = np.full_like(scale, 0.0 if grid.signed else (grid.qmax + 1) // 2)
        return scale, zero_point
    levels = grid.qmax - grid.qmin
    start = np.clip(min(low, 0.0), -scale * levels, 0.0)
    return scale, grid.asymmetric_zero_point(start, scale)


def non_overflow_exponent(low: float, high: float, grid: IntegerGrid) -> int:
    """Return the smallest exponent e whose grid with scale 2**e covers [low, high].

    A value counts as covered when it lies within half a step of the grid's ends, so its
    error is no larger than a rounding error. Without that tolerance the rounded zero point
    of an asymmetric grid could push the search to a much larger scale.
    """
    abs_max = max(abs(low), abs(high))
    if abs_max == 0.0:
        return 0
    exponent = math.floor(math.log2(abs_max)) - grid.bits - 1
    while True:
        scale, zero_point = _power_of_two_grid(grid, np.array([exponent]), low)
        bottom = (grid.qmin - zero_point[0] - 0.5) * scale[0]
        top = (grid.qmax - zero_point[0] + 0.5) * scale[0]
        if bottom <= min(low, 0.0) and top >= max(high, 0.0):
            return exponent
        exponent += 1


def min_mse_exponent(histogram: Histogram, grid: IntegerGrid) -> int:
    """Return the power-of-two exponent with the lowest MSE, searching down from non-overflow."""
    top = non_overflow_exponent(histogram.min, histogram.max, grid)
    exponents = np.arange(top - POWER_OF_TWO_SEARCH_STEPS, top + 1)
    scale, zero_point = _power_of_two_grid(grid, exponents, histogram.min)
    values, weights = bin_values(histogram)
    errors = grid.errors(values, weights, scale, zero_point, "mse")
    # Ties go to the larger scale, which clips less.
    best = len(exponents) - 1 - int(np.argmin(errors[::-1]))
    return int(exponents[best])


def power_of_two_range(exponent: int, low: float, grid: IntegerGrid) -> TensorRange:
    """Return a range whose quantizer scale, rounded up to a power of two, is 2**exponent.

    The float scale of the range is 2**exponent times POWER_OF_TWO_MARGIN, just below the
    power of two, so rounding it up gives exactly 2**exponent.
    """
    scale = 2.0**exponent * POWER_OF_TWO_MARGIN
    if grid.symmetric:
        half = grid.qmax if grid.signed else grid.qmax - (grid.qmax + 1) // 2
        return TensorRange(-scale * half, scale * half)
    width = scale * (grid.qmax - grid.qmin)
    start = min(max(min(low, 0.0), -width), 0.0)
    return TensorRange(start, start + width)



@attrs.frozen
class PositionVotes:
    """How often each exponent won the power-of-two MinMSE search of a single batch.

    This is the collector of MinMSEModePof2Scale="MostCommon": each batch votes for its own
    best exponent, and the most frequent one wins.
    """

    grid: IntegerGrid
    votes: tuple[tuple[int, int], ...] = ()

    def update(self, batch: Any) -> PositionVotes:
        histogram = Histogram().update(batch)
        if histogram.counts.size == 0:
            return self
        return self.vote(min_mse_exponent(histogram, self.grid))

    def vote(self, exponent: int) -> PositionVotes:
        return self.merge(PositionVotes(self.grid, ((exponent, 1),)))

    def merge(self, other: PositionVotes) -> PositionVotes:
        counter = Counter(dict(self.votes))
        counter.update(dict(other.votes))
        return PositionVotes(self.grid, tuple(sorted(counter.items())))

    def most_common(self) -> int:
        """Return the exponent with the most votes; a tie goes to the larger exponent."""
        if not self.votes:
            raise ValueError("no batch has voted yet")
        return max(self.votes, key=lambda item: (item[1], item[0]))[0]
