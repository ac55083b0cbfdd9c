"""Enumerations used by the quantization specs and QConfig."""

from __future__ import annotations

import enum


class ScaleType(enum.Enum):
    """The representation of a quantization scale."""

    Float32 = "Float32"
    PowerOf2 = "PowerOf2"
    Int16 = "Int16"


class CalibMethod(enum.Enum):
    """The method that chooses a tensor's quantization range from calibration statistics."""

    MinMax = "MinMax"
    MinMSE = "MinMSE"
    Percentile = "Percentile"
    Entropy = "Entropy"
    LayerwisePercentile = "LayerwisePercentile"
    Distribution = "Distribution"


class QuantGranularity(enum.Enum):
    """How many scales a tensor gets: one, one per channel, or one per block of a channel."""

    Tensor = "Tensor"
    Channel = "Channel"
    Group = "Group"
