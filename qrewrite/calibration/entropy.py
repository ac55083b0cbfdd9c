"""The Entropy method: the clipping threshold of |x| whose clipped histogram loses least.

For a candidate end e (in bins of the |x| histogram), P is counts[:e] with the counts
past e added to bin e - 1, as clipping does to the values. Q is what quantization to
`levels` steps keeps of the values inside the threshold: counts[:e] (without the counts
past e) merged into `levels` chunks, each chunk's sum spread evenly over the bins of
the chunk where P is non-empty. Both are normalized to sum 1, and the divergence is
KL(P || Q). A threshold that clips many values moves mass into P's last bin that Q does
not have, and one that keeps a long tail makes Q's chunks coarse.

With T the total count, t the counts past e, T' = T - t, S_j the sum of chunk j in P,
S'_j its sum in Q and N_j its non-empty bins in P, Q is S'_j / (N_j T') on those bins,
so

    KL = (sum(p log p) - sum_j S_j log(S'_j / N_j)) / T + log(T' / T)

where the first sum runs over the raw counts p of P. A chunk with S_j > 0 and S'_j = 0
(all its values lie past the end) would make the divergence infinite, so it gets
S'_j = EMPTY_BIN_COUNT * N_j and T' grows by the same amount. Prefix sums of the
counts, of the non-empty bins and of c log c give every term in constant time, so a
candidate costs O(levels) instead of O(bins), and the candidates of many tensors are
evaluated together.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qrewrite.calibration.collectors import Histogram
from qrewrite.calibration.grid import IntegerGrid
from qrewrite.calibration.ranges import TensorRange

# Entropy searches thresholds over at most this many bins of |x|, so finer histograms are
# coarsened first. It tries at most ENTROPY_CANDIDATES thresholds, evenly spaced.
ENTROPY_BINS = 512
ENTROPY_CANDIDATES = 128
# The divergences of several tensors are computed together, in blocks of at most this
# many chunk values. For 1000 tensors of 97 candidates and 128 levels, blocks of 2**14,
# 2**16 and 2**18 values took 119, 100 and 351 ms of CPU time on x86_64 with glibc 2.36.
# The largest blocks were slow because their temporaries came from fresh pages.
BLOCK_ELEMENTS = 2**16
# Bits of a packed prefix sum that hold the number of non-empty bins. ENTROPY_BINS must
# fit in them.
NONZERO_BITS = 16
NONZERO_MASK = 2**NONZERO_BITS - 1
# A divergence is a difference of sums of c log c and of S log S over at most
# ENTROPY_BINS + levels terms. Its rounding error is below about 2**-42 times log(total),
# and measured errors were near 2**-50 times it. Divergences within
# `tie_tolerance` of the lowest count as equal, and the search picks the smallest end
# among them, as an exact computation would among exact ties.
TIE_TOLERANCE = 2.0**-36
# The count a bin of Q gets where P has values and Q none, the smoothing that
# onnxruntime.quantization's smooth_distribution gives an empty bin. Without it, a
# single outlier past the threshold would make the divergence infinite and could
# never be clipped.
EMPTY_BIN_COUNT = 1e-4


def _x_log_x(values: np.ndarray) -> np.ndarray:
    as_float = values.astype(np.float64)
    return as_float * np.log(np.maximum(as_float, 1.0))


def kl_divergences_of_tensors(
    tensors: Sequence[tuple[np.ndarray, np.ndarray]], levels: int
) -> list[np.ndarray]:
    """Return the divergence of each end, for each (counts, ends) pair of `tensors`.

    Every end must lie in [levels, counts.size], and every counts array must hold a
    positive count. See the module docstring for the divergence.
    """
    if not tensors:
        return []
    # Row t contains tensor t's counts from column 1 on, so the prefix sums along a row
    # start at 0 and row t's prefix sum of its first k bins is at column k.
    width = max(counts.size for counts, _ in tensors) + 1
    matrix = np.zeros((len(tensors), width), np.int64)
    for row, (counts, _) in enumerate(tensors):
        matrix[row, 1 : counts.size + 1] = counts
    cumulative = np.cumsum(matrix, axis=1)
    # The prefix sums of the counts and of the non-empty bins, packed into one integer so
    # one gather fetches both: the count sum times 2**NONZERO_BITS plus the bin count.
    packed = cumulative << NONZERO_BITS
    packed += np.cumsum(matrix > 0, axis=1)
    packed = packed.ravel()
    entropy_cumulative = np.cumsum(_x_log_x(matrix), axis=1).ravel()
    shifted_counts = matrix.ravel()
    cumulative = cumulative.ravel()
    totals = cumulative[np.arange(1, len(tensors) + 1) * width - 1]

    # Tensors with the same candidate ends share the chunk edges.
    groups: dict[bytes, list[int]] = {}
    ends_per_tensor = [np.asarray(ends, np.int64) for _, ends in tensors]
    for index, ends in enumerate(ends_per_tensor):
        groups.setdefault(ends.tobytes(), []).append(index)
    results: list[np.ndarray] = [np.empty(0)] * len(tensors)
    for indices in groups.values():
        ends = ends_per_tensor[indices[0]]
        # Chunk j of end e contains the bins i < e with i * levels // e == j, which are
        # [ceil(j * e / levels), ceil((j + 1) * e / levels)).
        edges = np.arange(levels + 1, dtype=np.int64)[None, :] * ends[:, None]
        edges += levels - 1
        edges //= levels
        step = max(1, BLOCK_ELEMENTS // edges.size)
        for start in range(0, len(indices), step):
            block = np.array(indices[start : start + step])
            divergences = _divergences(
                packed,
                entropy_cumulative,
                shifted_counts,
                cumulative,
                totals[block],
                block * width,
                ends,
                edges,
            )
            for index, row in zip(block, divergences, strict=True):
                results[index] = row
    return results


def _divergences(
    packed: np.ndarray,
    entropy_cumulative: np.ndarray,
    shifted_counts: np.ndarray,
    cumulative: np.ndarray,
    totals: np.ndarray,
    offsets: np.ndarray,
    ends: np.ndarray,
    edges: np.ndarray,
) -> np.ndarray:
    """Return the divergences of tensors at `offsets` in the flat prefix sums for `ends`."""
    positions = offsets[:, None] + ends[None, :]
    # The sum of p log p over the bins of P: the prefix sum up to bin e - 1, then bin
    # e - 1 with the counts past the end added.
    last = shifted_counts[positions]
    tail = totals[:, None] - cumulative[positions]
    result = entropy_cumulative[positions]
    result += _x_log_x(last + tail) - _x_log_x(last)

    prefix = np.take(packed, offsets[:, None, None] + edges[None, :, :])
    chunks = prefix[:, :, 1:] - prefix[:, :, :-1]
    # Q's chunk sums leave out the counts past the end. P adds them to bin e - 1, in the
    # last chunk, which also makes that bin non-empty.
    kept_sum = (chunks >> NONZERO_BITS).astype(np.float64)
    chunk_sum = kept_sum.copy()
    chunk_sum[:, :, -1] += tail
    chunk_nonzero = (chunks & NONZERO_MASK).astype(np.float64)
    chunk_nonzero[:, :, -1] += (last == 0) & (tail > 0)
    starved = (chunk_sum > 0) & (kept_sum == 0)
    smoothing = EMPTY_BIN_COUNT * np.where(starved, chunk_nonzero, 0.0)
    kept_sum += smoothing
    # Chunk j subtracts S_j log(S'_j / N_j). An empty chunk has S_j = N_j = 0, and the
    # maxima make its term 0 * log(1 / 1).
    ratio = np.where(starved, kept_sum, np.maximum(kept_sum, 1.0))
    ratio /= np.maximum(chunk_nonzero, 1.0)
    np.log(ratio, out=ratio)
    ratio *= chunk_sum
    result -= ratio.sum(axis=2)
    result /= totals[:, None]
    kept_total = totals[:, None] - tail + smoothing.sum(axis=2)
    result += np.log(kept_total / totals[:, None])
    # A divergence is never negative, but rounding can make it slightly so.
    np.maximum(result, 0.0, out=result)
    return result


def tie_tolerance(total: int) -> float:
    """Return the difference below which two divergences of a histogram count as equal."""
    return TIE_TOLERANCE * max(float(np.log(max(total, 1))), 1.0)


def _search(histogram: Histogram, grid: IntegerGrid) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Return the counts of |x| from zero, the candidate ends, the levels and the bin width.

    No candidate (an empty ends array) means the range is the min and max.
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
        return counts, np.zeros(0, np.int64), levels, absolute.width
    step = -(-(counts.size + 1 - first_end) // ENTROPY_CANDIDATES)
    ends = np.arange(first_end, counts.size + 1, step)
    if ends[-1] != counts.size:
        ends = np.append(ends, counts.size)
    return counts, ends, levels, absolute.width


def entropy_ranges(items: Sequence[tuple[Histogram, IntegerGrid]]) -> list[TensorRange]:
    """Return the Entropy range of each (histogram, grid) pair; see `entropy_range`.

    The candidates of all pairs with the same number of levels are evaluated together.
    """
    searches = [_search(histogram, grid) for histogram, grid in items]
    results: list[TensorRange | None] = [None] * len(items)
    by_levels: dict[int, list[int]] = {}
    for index, ((histogram, _), (_, ends, levels, _)) in enumerate(
        zip(items, searches, strict=True)
    ):
        if ends.size == 0:
            results[index] = TensorRange(histogram.min, histogram.max)
        else:
            by_levels.setdefault(levels, []).append(index)
    for levels, indices in by_levels.items():
        pairs = [(searches[i][0], searches[i][1]) for i in indices]
        for index, divergences in zip(
            indices, kl_divergences_of_tensors(pairs, levels), strict=True
        ):
            histogram = items[index][0]
            counts, ends, _, width = searches[index]
            tolerance = tie_tolerance(int(counts.sum()))
            best = int(np.flatnonzero(divergences <= divergences.min() + tolerance)[0])
            threshold = int(ends[best]) * width
            results[index] = TensorRange(
                max(histogram.min, -threshold), min(histogram.max, threshold)
            )
    return [result for result in results if result is not None]


def entropy_range(histogram: Histogram, grid: IntegerGrid) -> TensorRange:
    """Return the clipping threshold t of |x| with the lowest KL divergence.

    Candidate thresholds are bin edges of the |x| histogram, at most ENTROPY_CANDIDATES
    of them, evenly spaced. Each is scored by the KL divergence of two distributions. P is
    the clipped distribution, with the outliers added to its last bin. Q holds the values
    inside the threshold, merged into as many levels as the grid has on one side of zero
    and spread back over P's non-empty bins. The range is [max(min, -t), min(max, t)].

    Q leaves out the values past the threshold, which P keeps in its last bin, so a
    threshold that clips much of the data diverges, as in onnxruntime's and TensorRT's
    entropy calibration.
    """
    return entropy_ranges([(histogram, grid)])[0]


def kl_divergences(counts: np.ndarray, ends: np.ndarray, levels: int) -> np.ndarray:
    """Return the divergence of each end of one histogram's `counts`."""
    result: np.ndarray = kl_divergences_of_tensors([(counts, ends)], levels)[0]
    return result


def _kl_divergence(counts: np.ndarray, end: int, levels: int) -> float:
    """Return the divergence of one end bin by bin: the reference for the tests."""
    inside = counts[:end].astype(np.float64)
    reference = inside.copy()
    reference[-1] += counts[end:].sum()
    nonzero = reference > 0
    chunk = (np.arange(end) * levels) // end
    chunk_sum = np.bincount(chunk, weights=inside, minlength=levels)
    chunk_nonzero = np.bincount(chunk, weights=nonzero, minlength=levels)
    expanded = np.where(nonzero, chunk_sum[chunk] / np.maximum(chunk_nonzero[chunk], 1), 0.0)
    starved = nonzero & (expanded == 0)
    expanded[starved] = EMPTY_BIN_COUNT
    p = reference[nonzero] / reference.sum()
    q = expanded[nonzero] / expanded.sum()
    return float(np.sum(p * np.log(p / q)))
