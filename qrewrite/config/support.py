"""The values the quantizer implements today, in one place.

The config package rejects every other value with `NotBuiltError` at construction, so an
option is never accepted and then ignored. Each entry moves here when its feature lands.
"""

from __future__ import annotations

from qrewrite.config.data_types import DataType
from qrewrite.config.enums import CalibMethod, QuantGranularity, ScaleType

BUILT_DATA_TYPES = frozenset(
    {
        DataType.Int4,
        DataType.UInt4,
        DataType.Int8,
        DataType.UInt8,
        DataType.Int16,
        DataType.UInt16,
    }
)
BUILT_SCALE_TYPES = frozenset({ScaleType.Float32, ScaleType.PowerOf2, ScaleType.Int16})
BUILT_CALIB_METHODS = frozenset(
    {
        CalibMethod.MinMax,
        CalibMethod.MinMSE,
        CalibMethod.Percentile,
        CalibMethod.Entropy,
        CalibMethod.LayerwisePercentile,
        CalibMethod.Distribution,
    }
)
BUILT_GRANULARITIES = frozenset(
    {QuantGranularity.Tensor, QuantGranularity.Channel, QuantGranularity.Group}
)
