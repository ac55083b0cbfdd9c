import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qrewrite.calibration.collectors import (
    Histogram,
    MinMax,
    MovingAverageMinMax,
    canonical_exponent,
)
from qrewrite.calibration.graph import HISTOGRAM_BINS

finite_floats = st.floats(
    min_value=-(2.0**100), max_value=2.0**100, allow_nan=False, allow_infinity=False, width=32
)
any_floats = st.floats(width=32)
batches = hnp.arrays(np.float32, st.integers(0, 60), elements=any_floats)
batch_lists = st.lists(batches, min_size=0, max_size=6)
scaled_batches = st.builds(
    lambda values, power: (values * np.float32(10.0**power)).astype(np.float32),
    hnp.arrays(np.float32, st.integers(1, 200), elements=st.floats(-1, 1, width=32)),
    st.integers(-20, 20),
)


def fold(collector, batch_list):
    for batch in batch_list:
        collector = collector.update(batch)
    return collector


@settings(max_examples=150, deadline=None)
@given(batch_lists, batch_lists)
def test_histogram_merge_equals_one_pass(first, second):
    one_pass = fold(Histogram(), first + second)
    merged = fold(Histogram(), first).merge(fold(Histogram(), second))
    assert merged == one_pass


@settings(max_examples=100, deadline=None)
@given(st.lists(scaled_batches, min_size=1, max_size=5), st.lists(scaled_batches, max_size=5))
def test_histogram_merge_scaled_data(first, second):
    one_pass = fold(Histogram(), first + second)
    merged = fold(Histogram(), second).merge(fold(Histogram(), first))
    assert merged == one_pass


@settings(max_examples=150, deadline=None)
@given(batch_lists, batch_lists)
def test_min_max_merge_equals_one_pass(first, second):
    one_pass = fold(MinMax(), first + second)
    merged = fold(MinMax(), first).merge(fold(MinMax(), second))
    assert merged == one_pass


@settings(max_examples=100, deadline=None)
@given(batch_lists)
def test_histogram_counts_every_finite_value(batch_list):
    histogram = fold(Histogram(), batch_list)
    values = np.concatenate([np.ravel(b) for b in batch_list] or [np.zeros(0, np.float32)])
    finite = values[np.isfinite(values)]
    assert histogram.total == finite.size
    if finite.size:
        assert histogram.min == float(finite.min())
        assert histogram.max == float(finite.max())
        assert 1 <= histogram.counts.size <= HISTOGRAM_BINS
        assert histogram.counts[0] > 0
        assert histogram.counts[-1] > 0
        edges = histogram.edges()
        # A value whose quotient by the bin width underflows counts in bin 0.
        underflows = abs(histogram.min) * 2.0**-histogram.exponent < np.finfo(np.float32).tiny
        assert edges[0] <= histogram.min or underflows
        assert histogram.max < edges[-1]


@given(finite_floats, finite_floats)
def test_canonical_exponent_grows_with_range(a, b):
    low, high = min(a, b), max(a, b)
    exponent = canonical_exponent(low, high)
    wider = canonical_exponent(min(low, -abs(high)), max(high, 2 * abs(high)))
    assert wider >= exponent


def test_histogram_bins_are_aligned():
    histogram = Histogram().update(np.array([0.0, 0.25, 0.5, 0.75, 1.0], np.float32))
    width = histogram.width
    assert math.log2(width) == histogram.exponent
    edges = histogram.edges()
    assert np.all(np.mod(edges, width) == 0)
    assert histogram.total == 5


def test_coarsen_keeps_counts():
    histogram = Histogram().update(np.linspace(-3, 7, 1001, dtype=np.float32))
    coarse = histogram.coarsen(histogram.exponent + 3)
    assert coarse.total == histogram.total
    assert coarse.counts.size <= histogram.counts.size // 8 + 2


def test_abs_histogram_folds_negative_bins():
    histogram = Histogram().update(np.array([-2.5, -1.0, 0.5, 2.5], np.float32))
    absolute = histogram.abs_histogram()
    assert absolute.total == 4
    assert absolute.min == 0.0
    assert absolute.max == 2.5


def test_histogram_ignores_nan_and_inf():
    histogram = Histogram().update(np.array([np.nan, 1.0, np.inf, -np.inf, 2.0], np.float32))
    assert histogram.total == 2
    assert (histogram.min, histogram.max) == (1.0, 2.0)


def test_min_max_counts_nonfinite():
    stats = MinMax().update(np.array([np.nan, 1.0, np.inf], np.float32))
    assert stats.count == 1
    assert stats.nonfinite == 2


def test_moving_average_update_and_merge():
    average = MovingAverageMinMax(0.5)
    average = average.update(np.array([0.0, 2.0], np.float32))
    average = average.update(np.array([0.0, 4.0], np.float32))
    assert average.max == 3.0
    assert average.merge(MovingAverageMinMax(0.5)) == average
    other = MovingAverageMinMax(0.5).update(np.array([-1.0, 1.0], np.float32))
    merged = average.merge(other)
    assert merged.batches == 3
    assert merged.max == (3.0 * 2 + 1.0) / 3


@settings(max_examples=100, deadline=None)
@given(st.lists(batches, min_size=1, max_size=6), st.data())
def test_batch_stats_equal_single_updates(arrays, data):
    from qrewrite.calibration.batch import batch_stats

    wanted = data.draw(st.lists(st.booleans(), min_size=len(arrays), max_size=len(arrays)))
    for array, want, (min_max, histogram) in zip(
        arrays, wanted, batch_stats(arrays, wanted), strict=True
    ):
        assert min_max == MinMax().update(array)
        if want:
            assert histogram == Histogram().update(array)
        else:
            assert histogram is None


@settings(max_examples=50, deadline=None)
@given(st.lists(scaled_batches, min_size=1, max_size=6))
def test_batch_stats_scaled_data(arrays):
    from qrewrite.calibration.batch import batch_stats

    results = batch_stats(arrays, [True] * len(arrays))
    for array, (_, histogram) in zip(arrays, results, strict=True):
        assert histogram == Histogram().update(array)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(batches, min_size=2, max_size=2), min_size=1, max_size=5))
def test_small_tensor_stats_over_updates(updates):
    from qrewrite.calibration.batch import SmallTensorStats

    stats = SmallTensorStats(["a", "b"], ["a"])
    for first, second in updates:
        stats.update({"a": [first, second], "b": [second]})
    (a_min_max, a_histogram), (b_min_max, b_histogram) = stats.results()
    a_batches = [batch for pair in updates for batch in pair]
    b_batches = [pair[1] for pair in updates]
    assert a_min_max == fold(MinMax(), a_batches)
    assert a_histogram == fold(Histogram(), a_batches)
    assert b_min_max == fold(MinMax(), b_batches)
    assert b_histogram is None


@settings(max_examples=50, deadline=None)
@given(st.lists(scaled_batches, min_size=1, max_size=8))
def test_small_tensor_stats_growing_range(batch_list):
    from qrewrite.calibration.batch import SmallTensorStats

    stats = SmallTensorStats(["a"], ["a"])
    for batch in batch_list:
        stats.update({"a": [batch]})
    [(_, histogram)] = stats.results()
    assert histogram == Histogram().update(np.concatenate(batch_list))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(batches, min_size=3, max_size=3), min_size=1, max_size=4),
    st.sampled_from([8, 64, 2**18]),
    st.sampled_from([1, 2, 256]),
)
def test_small_tensor_stats_blocks_equal_one_pass(samples, chunk_elements, chunk_histograms):
    from qrewrite.calibration import batch
    from qrewrite.calibration.batch import SmallTensorStats

    tensors = ["a", "b", "c"]
    stats = SmallTensorStats(tensors, ["a", "c"])
    blocks = [np.concatenate(sample) for sample in samples]
    sizes = [np.array([array.size for array in sample]) for sample in samples]
    chunk_limits = (batch.CHUNK_ELEMENTS, batch.CHUNK_HISTOGRAMS)
    batch.CHUNK_ELEMENTS, batch.CHUNK_HISTOGRAMS = chunk_elements, chunk_histograms
    try:
        stats.update_blocks(blocks, sizes, tensors)
    finally:
        batch.CHUNK_ELEMENTS, batch.CHUNK_HISTOGRAMS = chunk_limits
    results = stats.results()
    for position, (min_max, histogram) in enumerate(results):
        arrays = [sample[position] for sample in samples]
        assert min_max == fold(MinMax(), arrays)
        if tensors[position] == "b":
            assert histogram is None
        else:
            assert histogram == fold(Histogram(), arrays)


def test_small_tensor_stats_widen_counts_near_int32_limit():
    from qrewrite.calibration.batch import SmallTensorStats

    stats = SmallTensorStats(["a"], ["a"])
    stats.update({"a": [np.array([1.0, 2.0], np.float32)]})
    assert stats.counts.dtype == np.int32
    # Pretend that 2**31 values were counted already, as after many samples.
    stats.count[0] = 2**31
    stats.update({"a": [np.array([1.5], np.float32)]})
    assert stats.counts.dtype == np.int64
    assert stats.counts.sum() == 3
