"""Scale and zero-point math: round trips, zero, symmetric ranges, per-channel shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qrewrite.config.data_types import DataType
from qrewrite.config.enums import ScaleType
from qrewrite.quantization.qparams import dequantize, params_from_range, quantize

INTEGER_TYPES = [
    DataType.Int4,
    DataType.UInt4,
    DataType.Int8,
    DataType.UInt8,
    DataType.Int16,
    DataType.UInt16,
]

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)


@st.composite
def ranges(draw):
    low = draw(finite)
    high = draw(finite)
    return min(low, high), max(low, high)


@settings(max_examples=200, deadline=None)
@given(
    bounds=ranges(),
    data_type=st.sampled_from(INTEGER_TYPES),
    symmetric=st.booleans(),
    fractions=st.lists(st.floats(0, 1), min_size=1, max_size=16),
)
def test_round_trip_within_half_step(bounds, data_type, symmetric, fractions) -> None:
    low, high = bounds
    params = params_from_range(low, high, data_type, symmetric=symmetric)
    values = np.array([low + f * (high - low) for f in fractions], dtype=np.float32)

    restored = dequantize(quantize(values, params), params)

    step = float(params.scale)
    assert np.all(np.abs(restored - values) <= step / 2 * (1 + 1e-3) + 1e-6 * np.abs(values))


@settings(max_examples=200, deadline=None)
@given(
    bounds=ranges(),
    data_type=st.sampled_from(INTEGER_TYPES),
    symmetric=st.booleans(),
    scale_type=st.sampled_from([ScaleType.Float32, ScaleType.PowerOf2]),
)
def test_zero_exactly_representable(bounds, data_type, symmetric, scale_type) -> None:
    params = params_from_range(*bounds, data_type, symmetric=symmetric, scale_type=scale_type)

    zero = dequantize(quantize(np.zeros(1, np.float32), params), params)

    assert zero[0] == 0.0
    assert data_type.qmin <= int(params.zero_point) <= data_type.qmax
    assert float(params.scale) > 0
    assert np.isfinite(params.scale)


@settings(max_examples=100, deadline=None)
@given(bounds=ranges(), data_type=st.sampled_from(INTEGER_TYPES))
def test_symmetric_range_centred(bounds, data_type) -> None:
    params = params_from_range(*bounds, data_type, symmetric=True)

    expected = 0 if data_type.signed else (data_type.qmax + 1) // 2
    assert int(params.zero_point) == expected
    absmax = max(abs(bounds[0]), abs(bounds[1]))
    top = dequantize(quantize(np.array([absmax, -absmax], np.float32), params), params)
    assert top[0] == pytest.approx(-top[1], rel=1e-6, abs=1e-30)


@settings(max_examples=100, deadline=None)
@given(bounds=ranges(), data_type=st.sampled_from(INTEGER_TYPES), symmetric=st.booleans())
def test_power_of_two_covers_range(bounds, data_type, symmetric) -> None:
    params = params_from_range(
        *bounds, data_type, symmetric=symmetric, scale_type=ScaleType.PowerOf2
    )
    exponent = np.log2(float(params.scale))
    assert exponent == np.round(exponent)

    ends = np.array(bounds, np.float32)
    restored = dequantize(quantize(ends, params), params)
    assert np.all(np.abs(restored - ends) <= float(params.scale))


def test_zero_width_range_gets_unit_scale() -> None:
    params = params_from_range(0.0, 0.0, DataType.Int8, symmetric=True)
    assert float(params.scale) == 1.0


def test_per_channel_shapes() -> None:
    params = params_from_range(
        np.array([-1.0, -2.0, 0.0]),
        np.array([1.0, 3.0, 0.5]),
        DataType.Int8,
        symmetric=True,
        axis=0,
    )
    assert params.scale.shape == (3,)
    weights = np.array([[1.0, -1.0], [3.0, -2.0], [0.5, 0.0]], np.float32)
    restored = dequantize(quantize(weights, params), params)
    assert np.all(np.abs(restored - weights) <= params.scale[:, None] / 2 + 1e-7)


def test_non_finite_range_rejected() -> None:
    with pytest.raises(ValueError, match="finite"):
        params_from_range(-np.inf, 1.0, DataType.Int8, symmetric=True)
