"""Range requests: the method and integer grid the quantizer needs for each tensor."""

from __future__ import annotations

import enum

import attrs

from qrewrite.config.enums import CalibMethod


class PowerOfTwoMethod(enum.Enum):
    """Range methods for power-of-two scales (ScaleType.PowerOf2)."""

    # The smallest power-of-two scale whose integer range covers the data's extremes.
    NonOverflow = "NonOverflow"
    # The power-of-two scale with the lowest quantization mean squared error.
    MinMSE = "MinMSE"


@attrs.frozen
class RangeRequest:
    """A range method for one tensor and the integer grid the quantizer will use.

    `bits` and `signed` describe that grid. The methods that measure quantization error
    (MinMSE, LayerwisePercentile, Entropy and the power-of-two methods) need them.
    """

    method: CalibMethod | PowerOfTwoMethod
    bits: int = 8
    signed: bool = True
    symmetric: bool = False

    @property
    def needs_histogram(self) -> bool:
        # Distribution's range is the min and max (see methods.compute_range).
        exact = (CalibMethod.MinMax, CalibMethod.Distribution, PowerOfTwoMethod.NonOverflow)
        return self.method not in exact


Request = CalibMethod | PowerOfTwoMethod | RangeRequest


def as_range_request(request: Request, tensor: str) -> RangeRequest:
    """Accept a bare method as an 8-bit signed request."""
    if isinstance(request, RangeRequest):
        return request
    if isinstance(request, (CalibMethod, PowerOfTwoMethod)):
        return RangeRequest(request)
    raise TypeError(
        f"calibration request for {tensor!r} is {request!r}; expected a CalibMethod, a "
        "PowerOfTwoMethod or a RangeRequest"
    )
