"""Quantizing large constants in slices: same values as one call, less float64 memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from qrewrite.config.data_types import DataType
from qrewrite.quantization.materialize import _QUANTIZE_SLICE_ELEMENTS, _quantize_in_slices
from qrewrite.quantization.qparams import QuantParams, quantize

ROWS, COLUMNS = 3001, 700  # 2.1 M elements, above the slice threshold


def _params(axis: int | None, block_size: int | None = None, length: int = 1) -> QuantParams:
    rng = np.random.default_rng(1)
    scale = rng.uniform(0.001, 0.02, size=length).astype(np.float32)
    zero_point = rng.integers(-3, 4, size=length)
    if axis is None:
        scale, zero_point = scale[0], zero_point[0]
    return QuantParams(DataType.Int8, scale, zero_point, axis=axis, block_size=block_size)


CASES = {
    "per-tensor": _params(None),
    "per-channel axis 0": _params(0, length=ROWS),
    "per-channel axis 1": _params(1, length=COLUMNS),
    "per-channel axis -1": _params(-1, length=COLUMNS),
    "blocked axis 1": _params(1, block_size=32, length=ROWS * -(-COLUMNS // 32)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_slices_match_one_call(name: str) -> None:
    params = CASES[name]
    if params.block_size is not None:
        blocks = -(-COLUMNS // params.block_size)
        params = QuantParams(
            params.data_type,
            params.scale.reshape(ROWS, blocks),
            params.zero_point.reshape(ROWS, blocks),
            axis=params.axis,
            block_size=params.block_size,
        )
    data = np.random.default_rng(2).normal(0.0, 1.0, (ROWS, COLUMNS)).astype(np.float32)
    assert data.size > _QUANTIZE_SLICE_ELEMENTS

    sliced = _quantize_in_slices(data, params)
    whole = quantize(data, params)

    assert sliced.dtype == whole.dtype
    assert sliced.shape == whole.shape
    np.testing.assert_array_equal(sliced, whole)


def test_small_constant_matches_one_call() -> None:
    data = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
    params = _params(0, length=3)

    np.testing.assert_array_equal(_quantize_in_slices(data, params), quantize(data, params))


def _peak_bytes(function, *args) -> int:
    tracemalloc.start()
    try:
        function(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_slices_cap_float64_memory() -> None:
    data = np.random.default_rng(3).normal(0.0, 1.0, (4 * ROWS, COLUMNS)).astype(np.float32)
    params = _params(None)

    sliced_peak = _peak_bytes(_quantize_in_slices, data, params)
    whole_peak = _peak_bytes(quantize, data, params)

    # One call allocates two float64 arrays of the whole tensor, 16 bytes an element.
    assert whole_peak >= 16 * data.size
    assert sliced_peak < whole_peak / 2
