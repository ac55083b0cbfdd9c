"""Half-quadratic quantization (HQQ) of weight blocks, with no calibration data.

HQQ (H. Badri and A. Shaji, "Half-Quadratic Quantization of Large Machine Learning
Models", Mobius Labs, 2023) minimizes the lp error ||W - dequantize(quantize(W))||_p^p
with p < 1, which tolerates a few large outliers, by splitting it with an auxiliary
error tensor W_e. Each iteration, with dequantize(q) = (q - z) * s:

1. q = clip(round(W / s + z)) and W_r = (q - z) * s;
2. W_e = shrink(W - W_r), the lp proximal step
   shrink(x) = sign(x) * max(|x| - |x|^(p - 1) / beta, 0);
3. a closed-form least-squares update of one parameter so that (q - z) * s fits W - W_e:
   the zero point z = mean(q - (W - W_e) / s) with the scale fixed (the published
   method), or, for symmetric blocks whose zero point is fixed, the scale
   s = <W - W_e, q - z> / <q - z, q - z>;
4. beta *= BETA_GROWTH.

Every block keeps the parameters with the lowest mean absolute error seen, its
round-to-nearest start included, so no block ends worse than round to nearest by that
measure. The constants are the defaults of the authors' reference code
(github.com/mobiusml/hqq).
"""

from __future__ import annotations

import attrs
import numpy as np

# Exponent p of the lp error that HQQ minimizes.
P_NORM = 0.7
# Starting weight beta of the quadratic coupling term and its growth per iteration.
BETA_START = 10.0
BETA_GROWTH = 1.01
ITERATIONS = 20


@attrs.frozen(eq=False)
class BlockParams:
    """Per-block scale and zero point, each shaped like the blocks without their last axis."""

    scale: np.ndarray
    zero_point: np.ndarray


def shrink_lp(error: np.ndarray, beta: float, p: float = P_NORM) -> np.ndarray:
    """Apply the lp proximal step (generalized soft threshold) to `error`, element-wise."""
    magnitude = np.abs(error)
    with np.errstate(divide="ignore"):
        threshold = np.power(magnitude, p - 1.0) / beta
    return np.sign(error) * np.maximum(magnitude - threshold, 0.0)


def quantize_codes(blocks: np.ndarray, params: BlockParams, qmax: int) -> np.ndarray:
    """Round `blocks` [..., block_size] to integer codes in [0, qmax] as float64."""
    scale = params.scale[..., None]
    zero_point = params.zero_point[..., None]
    return np.clip(np.rint(blocks / scale + zero_point), 0, qmax)


def _dequantize(codes: np.ndarray, params: BlockParams) -> np.ndarray:
    return (codes - params.zero_point[..., None]) * params.scale[..., None]


def _block_error(
    blocks: np.ndarray, params: BlockParams, qmax: int, valid: np.ndarray
) -> np.ndarray:
    restored = _dequantize(quantize_codes(blocks, params, qmax), params)
    return np.sum(np.abs(blocks - restored) * valid, axis=-1) / np.sum(valid, axis=-1)


def optimize_blocks(
    blocks: np.ndarray,
    start: BlockParams,
    qmax: int,
    *,
    fit_scale: bool,
    valid: np.ndarray | None = None,
    iterations: int = ITERATIONS,
) -> BlockParams:
    """Run HQQ on `blocks` [..., block_size] from `start`; return the best parameters.

    `fit_scale` moves the scale and keeps the zero point (symmetric blocks); otherwise
    the zero point moves as a float and the scale stays. `valid` (broadcast to
    `blocks`) marks the real elements, so the padding of a partial last block is
    left out of every fit and error. Every block needs at least one real element.
    """
    data = np.asarray(blocks, dtype=np.float64)
    mask = np.broadcast_to(
        np.ones(1, dtype=np.float64) if valid is None else np.asarray(valid, np.float64),
        data.shape,
    )
    count = np.sum(mask, axis=-1)
    scale = start.scale.astype(np.float64)
    zero_point = start.zero_point.astype(np.float64)
    best = BlockParams(scale.copy(), zero_point.copy())
    best_error = _block_error(data, best, qmax, mask)
    beta = BETA_START
    for _ in range(iterations):
        current = BlockParams(scale, zero_point)
        codes = quantize_codes(data, current, qmax)
        error = shrink_lp(data - _dequantize(codes, current), beta)
        target = data - error
        if fit_scale:
            centered = (codes - zero_point[..., None]) * mask
            energy = np.sum(centered * centered, axis=-1)
            fitted = np.sum(target * centered, axis=-1) / np.where(energy > 0, energy, 1.0)
            scale = np.where((energy > 0) & (fitted > 0), fitted, scale)
        else:
            offsets = (codes - target / scale[..., None]) * mask
            zero_point = np.sum(offsets, axis=-1) / count
        beta *= BETA_GROWTH

        candidate = BlockParams(scale, zero_point)
        candidate_error = _block_error(data, candidate, qmax, mask)
        better = candidate_error < best_error
        best = BlockParams(
            np.where(better, scale, best.scale), np.where(better, zero_point, best.zero_point)
        )
        best_error = np.minimum(candidate_error, best_error)
    return best
