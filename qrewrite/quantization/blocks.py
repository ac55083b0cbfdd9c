"""Block math of QuantGranularity.Group: per-block ranges and per-block parameter expansion.

A tensor of length D along `axis`, split into blocks of `block_size` elements, has
ceil(D / block_size) blocks. When block_size does not divide D the last block is
partial, which ONNX opset 21 QuantizeLinear and DequantizeLinear allow: their scale
and zero point have the tensor's shape with ceil(D / block_size) along `axis`.
"""

from __future__ import annotations

import numpy as np


def block_count(length: int, block_size: int) -> int:
    """Number of blocks of `block_size` that cover `length` elements, the last maybe partial."""
    if block_size < 1:
        raise ValueError(f"block size must be positive, got {block_size}")
    return -(-length // block_size)


def block_range(values: np.ndarray, axis: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of every block along `axis`; other axes keep their length."""
    array = np.asarray(values, dtype=np.float64)
    length = array.shape[axis]
    if array.size == 0:
        shape = list(array.shape)
        shape[axis] = block_count(length, block_size)
        zeros = np.zeros(shape)
        return zeros, zeros
    starts = np.arange(0, length, block_size)
    low = np.minimum.reduceat(array, starts, axis=axis)
    high = np.maximum.reduceat(array, starts, axis=axis)
    return low, high


def expand_blocks(per_block: np.ndarray, axis: int, block_size: int, length: int) -> np.ndarray:
    """Repeat per-block values `block_size` times along `axis` and cut them to `length`."""
    repeated = np.repeat(per_block, block_size, axis=axis)
    return np.take(repeated, np.arange(length), axis=axis)
