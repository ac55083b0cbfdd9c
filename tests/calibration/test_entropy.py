import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qrewrite.calibration.collectors import Histogram
from qrewrite.calibration.entropy import (
    _kl_divergence,
    _search,
    entropy_range,
    entropy_ranges,
    kl_divergences,
    tie_tolerance,
)
from qrewrite.calibration.grid import IntegerGrid
from qrewrite.calibration.ranges import TensorRange

count_arrays = hnp.arrays(np.int64, st.integers(130, 600), elements=st.integers(0, 1000))
sparse_count_arrays = hnp.arrays(np.int64, st.integers(130, 600), elements=st.sampled_from([0, 1]))
grids = st.sampled_from(
    [IntegerGrid(8, True, True), IntegerGrid(8, False, False), IntegerGrid(4, True, False)]
)
float_batches = hnp.arrays(
    np.float32,
    st.integers(1, 400),
    elements=st.floats(-1000, 1000, width=32),
)


@settings(max_examples=100, deadline=None)
@given(st.one_of(count_arrays, sparse_count_arrays), st.sampled_from([8, 16, 128]))
def test_kl_divergences_equal_bin_by_bin_loop(counts, levels):
    counts[0] += 1  # at least one value
    ends = np.arange(levels, counts.size + 1, 7)
    expected = [_kl_divergence(counts, int(end), levels) for end in ends]
    # The prefix sums cancel, so a divergence that is exactly zero comes out as rounding
    # noise. The search treats differences below tie_tolerance as ties, so the noise must
    # stay far below it.
    atol = tie_tolerance(int(counts.sum())) / 1024
    np.testing.assert_allclose(kl_divergences(counts, ends, levels), expected, rtol=1e-9, atol=atol)


def reference_entropy_range(histogram: Histogram, grid: IntegerGrid) -> TensorRange:
    """The search with one bin-by-bin divergence per candidate end."""
    counts, ends, levels, width = _search(histogram, grid)
    if ends.size == 0:
        return TensorRange(histogram.min, histogram.max)
    divergences = np.array([_kl_divergence(counts, int(end), levels) for end in ends])
    tolerance = tie_tolerance(int(counts.sum()))
    best = int(np.flatnonzero(divergences <= divergences.min() + tolerance)[0])
    threshold = int(ends[best]) * width
    return TensorRange(max(histogram.min, -threshold), min(histogram.max, threshold))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(float_batches, grids), min_size=1, max_size=5))
def test_batched_search_equals_reference(cases):
    items = [(Histogram().update(values), grid) for values, grid in cases]
    expected = [reference_entropy_range(histogram, grid) for histogram, grid in items]
    assert entropy_ranges(items) == expected
    assert [entropy_range(histogram, grid) for histogram, grid in items] == expected


def test_search_over_many_tensors_of_different_sizes():
    rng = np.random.default_rng(0)
    items = []
    for index in range(40):
        values = rng.standard_t(2 + index % 5, size=1000 * (1 + index % 7)) * (index + 1)
        items.append((Histogram().update(values.astype(np.float32)), IntegerGrid(8, True, True)))
    expected = [reference_entropy_range(histogram, grid) for histogram, grid in items]
    assert entropy_ranges(items) == expected


def test_tie_tolerance_is_far_below_a_divergence_step():
    # One value moved by one bin among a million changes the divergence by about
    # 1e-6 * log(2); ties must not swallow such a change.
    assert tie_tolerance(10**6) < 1e-6 * math.log(2) / 1000


def test_entropy_keeps_uniform_range():
    # Clipping uniform data moves mass into P's last bin that Q lacks, so no threshold
    # below the maximum can win.
    values = np.random.default_rng(1).uniform(0.0, 1.0, 100_000).astype(np.float32)
    for grid in (IntegerGrid(8, True, True), IntegerGrid(8, False, False)):
        result = entropy_range(Histogram().update(values), grid)
        assert result.max > 0.95


def test_entropy_clips_gaussian_tail():
    values = np.random.default_rng(2).standard_normal(100_000).astype(np.float32)
    result = entropy_range(Histogram().update(values), IntegerGrid(8, True, True))
    assert 3.0 < result.max < float(np.abs(values).max())
    assert result.min == -result.max


def test_entropy_keeps_spike_at_maximum():
    # An image input whose white background sits at the maximum, as on a text page.
    rng = np.random.default_rng(3)
    values = np.concatenate([np.ones(80_000), rng.uniform(-1.0, 1.0, 20_000)])
    result = entropy_range(
        Histogram().update(values.astype(np.float32)), IntegerGrid(8, False, False)
    )
    assert result.max == 1.0
    assert result.min < -0.99
