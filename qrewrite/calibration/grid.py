"""Integer grids as the quantizer builds them, to measure quantization error during calibration.

The formulas follow qrewrite.quantization.qparams: the range is widened to contain zero;
symmetric signed grids use scale = max|x| / qmax with zero point 0; symmetric unsigned
grids put the zero point at (qmax + 1) / 2; asymmetric grids use
scale = (max - min) / (qmax - qmin) and a rounded zero point. Each function takes arrays of
candidate ranges, so a search evaluates all candidates in one numpy expression.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from qrewrite.calibration.requests import RangeRequest


@attrs.frozen
class IntegerGrid:
    """The integers of a quantized type: `bits` wide, signed or not, symmetric or not."""

    bits: int
    signed: bool
    symmetric: bool

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    def params(self, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (scale, zero_point) for each candidate range [low, high]."""
        low = np.minimum(np.asarray(low, np.float64), 0.0)
        high = np.maximum(np.asarray(high, np.float64), 0.0)
        if self.symmetric:
            abs_max = np.maximum(-low, high)
            if self.signed:
                zero_point = np.zeros_like(abs_max)
                scale = abs_max / self.qmax
            else:
                zero_point = np.full_like(abs_max, (self.qmax + 1) // 2)
                scale = abs_max / (self.qmax - (self.qmax + 1) // 2)
            return np.where(scale > 0, scale, 1.0), zero_point
        scale = (high - low) / (self.qmax - self.qmin)
        scale = np.where(scale > 0, scale, 1.0)
        zero_point = np.clip(np.rint(self.qmin - low / scale), self.qmin, self.qmax)
        return scale, zero_point

    def asymmetric_zero_point(self, low: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Return the zero point the quantizer computes for range start `low` and `scale`."""
        low = np.minimum(np.asarray(low, np.float64), 0.0)
        return np.clip(np.rint(self.qmin - low / scale), self.qmin, self.qmax)

    def fake_quantize(
        self, values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray
    ) -> np.ndarray:
        """Quantize and dequantize `values` (n,) on each of the k grids: returns (k, n)."""
        scale = np.asarray(scale, np.float64)[:, None]
        zero_point = np.asarray(zero_point, np.float64)[:, None]
        q = np.clip(np.rint(values[None, :] / scale) + zero_point, self.qmin, self.qmax)
        return (q - zero_point) * scale

    def errors(
        self,
        values: np.ndarray,
        weights: np.ndarray,
        scale: np.ndarray,
        zero_point: np.ndarray,
        metric: str = "mse",
    ) -> np.ndarray:
        """Return the weighted mean error of each grid: squared ("mse") or absolute ("mae")."""
        difference = self.fake_quantize(values, scale, zero_point) - values[None, :]
        per_value = difference**2 if metric == "mse" else np.abs(difference)
        return per_value @ weights / max(float(weights.sum()), 1.0)


def grid_for(request: RangeRequest, options: Any, bits: int | None = None) -> IntegerGrid:
    """Return the grid of a request; CalibTensorRangeSymmetric makes every grid symmetric."""
    symmetric = bool(options.CalibTensorRangeSymmetric or request.symmetric)
    return IntegerGrid(bits or request.bits, request.signed, symmetric)
