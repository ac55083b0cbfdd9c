"""`TensorRange`: the calibrated value range of one tensor."""

from __future__ import annotations

import math

import attrs


def _check_finite(instance: TensorRange, attribute: attrs.Attribute[float], value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"TensorRange.{attribute.name} must be finite, got {value!r}")


@attrs.frozen
class TensorRange:
    """A closed range [min, max] of finite floats with min <= max."""

    min: float = attrs.field(converter=float, validator=_check_finite)
    max: float = attrs.field(converter=float, validator=_check_finite)

    def __attrs_post_init__(self) -> None:
        if self.min > self.max:
            raise ValueError(f"TensorRange min {self.min} is greater than max {self.max}")

    def symmetric(self) -> TensorRange:
        """Return the smallest range symmetric around zero that contains this one."""
        bound = max(abs(self.min), abs(self.max))
        return TensorRange(-bound, bound)
