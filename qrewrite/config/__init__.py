"""Configuration values: specs, layer configs, QConfig and the extra-option registry."""

from qrewrite.config.algorithms import (
    AdaQuantConfig,
    AdaRoundConfig,
    AlgoConfig,
    CLEConfig,
    GPTQConfig,
    HQQConfig,
)
from qrewrite.config.data_types import DataType
from qrewrite.config.enums import CalibMethod, QuantGranularity, ScaleType
from qrewrite.config.extra_options import ExtraOptions
from qrewrite.config.qconfig import QConfig
from qrewrite.config.registry import OPTIONS, Option
from qrewrite.config.spec import (
    BFloat16Spec,
    BFP16Spec,
    Int4Spec,
    Int8Spec,
    Int16Spec,
    Int32Spec,
    QLayerConfig,
    QTensorConfig,
    UInt4Spec,
    UInt8Spec,
    UInt16Spec,
    UInt32Spec,
    XInt8Spec,
)

__all__ = [
    "OPTIONS",
    "AdaQuantConfig",
    "AdaRoundConfig",
    "AlgoConfig",
    "BFP16Spec",
    "BFloat16Spec",
    "CLEConfig",
    "CalibMethod",
    "DataType",
    "ExtraOptions",
    "GPTQConfig",
    "HQQConfig",
    "Int4Spec",
    "Int8Spec",
    "Int16Spec",
    "Int32Spec",
    "Option",
    "QConfig",
    "QLayerConfig",
    "QTensorConfig",
    "QuantGranularity",
    "ScaleType",
    "UInt4Spec",
    "UInt8Spec",
    "UInt16Spec",
    "UInt32Spec",
    "XInt8Spec",
]
