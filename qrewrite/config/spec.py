"""Tensor-level quantization specs (`Int8Spec`, `UInt16Spec`, ...) and `QLayerConfig`.

A spec says how one tensor is quantized: its data type, whether the range is symmetric
around zero, how the scale is represented, which calibration method picks the range and
how many scales the tensor gets. Specs are frozen values, validated when constructed.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

import attrs

from qrewrite.config import support
from qrewrite.config.data_types import DataType
from qrewrite.config.enums import CalibMethod, QuantGranularity, ScaleType
from qrewrite.errors import ConfigError, NotBuiltError


def _default_symmetric(spec: QTensorConfig) -> bool:
    return spec.data_type.signed


def _check_enum(kind: type[enum.Enum], built: frozenset[Any]) -> Any:
    def check(instance: QTensorConfig, attribute: attrs.Attribute[Any], value: Any) -> None:
        spec_name = type(instance).__name__
        if not isinstance(value, kind):
            choices = ", ".join(f"{kind.__name__}.{m.name}" for m in kind)
            raise ConfigError(
                f"{spec_name}.{attribute.name} must be one of {choices}, got {value!r}"
            )
        if value not in built:
            raise NotBuiltError(
                f"{spec_name}.{attribute.name}={kind.__name__}.{value.name} is not built yet; "
                f"built values: {', '.join(sorted(m.name for m in built))}"
            )

    return check


def _member(kind: type[enum.Enum], value: Any) -> Any:
    """Return the member of `kind` named `value`, as config files write it, or `value`."""
    if isinstance(value, str) and value in kind.__members__:
        return kind[value]
    return value


def _scale_type(value: Any) -> Any:
    return _member(ScaleType, value)


def _calibration_method(value: Any) -> Any:
    return _member(CalibMethod, value)


def _granularity(value: Any) -> Any:
    return _member(QuantGranularity, value)


def _check_group_size(
    instance: QTensorConfig, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{type(instance).__name__}.group_size must be a positive integer or None, "
            f"got {value!r}"
        )


def _check_bool(instance: QTensorConfig, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(
            f"{type(instance).__name__}.{attribute.name} must be True or False, got {value!r}"
        )


@attrs.frozen
class QTensorConfig:
    """Base of the specs; use a concrete subclass such as `Int8Spec`."""

    data_type: ClassVar[DataType]

    symmetric: bool = attrs.field(
        default=attrs.Factory(_default_symmetric, takes_self=True), validator=_check_bool
    )
    scale_type: ScaleType = attrs.field(
        default=ScaleType.Float32,
        converter=_scale_type,
        validator=_check_enum(ScaleType, support.BUILT_SCALE_TYPES),
    )
    calibration_method: CalibMethod = attrs.field(
        default=CalibMethod.MinMax,
        converter=_calibration_method,
        validator=_check_enum(CalibMethod, support.BUILT_CALIB_METHODS),
    )
    quant_granularity: QuantGranularity = attrs.field(
        default=QuantGranularity.Tensor,
        converter=_granularity,
        validator=_check_enum(QuantGranularity, support.BUILT_GRANULARITIES),
    )
    # Elements per block along the weight's reduction axis; only with QuantGranularity.Group.
    group_size: int | None = attrs.field(default=None, validator=_check_group_size)

    def __attrs_post_init__(self) -> None:
        if type(self) is QTensorConfig:
            raise ConfigError("QTensorConfig is abstract; use a spec such as Int8Spec()")
        name = type(self).__name__
        grouped = self.quant_granularity is QuantGranularity.Group
        if grouped and self.group_size is None:
            raise ConfigError(
                f"{name} with quant_granularity=QuantGranularity.Group needs group_size, "
                "the number of elements per block, such as group_size=32"
            )
        if not grouped and self.group_size is not None:
            raise ConfigError(
                f"{name}.group_size={self.group_size} needs "
                "quant_granularity=QuantGranularity.Group; remove group_size or set the "
                "granularity"
            )
        if self.data_type not in support.BUILT_DATA_TYPES:
            raise NotBuiltError(
                f"{type(self).__name__} ({self.data_type.value}) is not built yet; built specs: "
                + ", ".join(sorted(f"{t.value}Spec" for t in support.BUILT_DATA_TYPES))
            )

    def with_data_type(self, data_type: DataType) -> QTensorConfig:
        """Return a spec of another data type with this spec's settings.

        `symmetric` follows the new type's default when this spec used its own default.
        """
        target = SPEC_BY_DATA_TYPE[data_type]
        symmetric = self.symmetric
        if symmetric == self.data_type.signed:
            symmetric = data_type.signed
        return target(
            symmetric=symmetric,
            scale_type=self.scale_type,
            calibration_method=self.calibration_method,
            quant_granularity=self.quant_granularity,
            group_size=self.group_size,
        )


@attrs.frozen
class Int4Spec(QTensorConfig):
    """Signed 4-bit integers, -8 to 7."""

    data_type: ClassVar[DataType] = DataType.Int4


@attrs.frozen
class UInt4Spec(QTensorConfig):
    """Unsigned 4-bit integers, 0 to 15."""

    data_type: ClassVar[DataType] = DataType.UInt4


@attrs.frozen
class Int8Spec(QTensorConfig):
    """Signed 8-bit integers, -128 to 127."""

    data_type: ClassVar[DataType] = DataType.Int8


@attrs.frozen
class UInt8Spec(QTensorConfig):
    """Unsigned 8-bit integers, 0 to 255."""

    data_type: ClassVar[DataType] = DataType.UInt8


@attrs.frozen
class XInt8Spec(QTensorConfig):
    """Signed 8-bit integers with symmetric power-of-two scales, the form NPUs expect."""

    data_type: ClassVar[DataType] = DataType.Int8

    scale_type: ScaleType = attrs.field(
        default=ScaleType.PowerOf2,
        converter=_scale_type,
        validator=_check_enum(ScaleType, support.BUILT_SCALE_TYPES),
    )

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if not self.symmetric or self.scale_type is not ScaleType.PowerOf2:
            raise ConfigError(
                "XInt8Spec is symmetric with power-of-two scales; for other settings use Int8Spec"
            )


@attrs.frozen
class Int16Spec(QTensorConfig):
    """Signed 16-bit integers."""

    data_type: ClassVar[DataType] = DataType.Int16


@attrs.frozen
class UInt16Spec(QTensorConfig):
    """Unsigned 16-bit integers."""

    data_type: ClassVar[DataType] = DataType.UInt16


@attrs.frozen
class Int32Spec(QTensorConfig):
    """Signed 32-bit integers."""

    data_type: ClassVar[DataType] = DataType.Int32


@attrs.frozen
class UInt32Spec(QTensorConfig):
    """Unsigned 32-bit integers."""

    data_type: ClassVar[DataType] = DataType.UInt32


@attrs.frozen
class BFloat16Spec(QTensorConfig):
    """Brain floating point, 16 bits."""

    data_type: ClassVar[DataType] = DataType.BFloat16


@attrs.frozen
class BFP16Spec(QTensorConfig):
    """Block floating point with 8-bit mantissas and a shared exponent per block."""

    data_type: ClassVar[DataType] = DataType.BFP16


SPEC_BY_DATA_TYPE: dict[DataType, type[QTensorConfig]] = {
    DataType.Int4: Int4Spec,
    DataType.UInt4: UInt4Spec,
    DataType.Int8: Int8Spec,
    DataType.UInt8: UInt8Spec,
    DataType.Int16: Int16Spec,
    DataType.UInt16: UInt16Spec,
    DataType.Int32: Int32Spec,
    DataType.UInt32: UInt32Spec,
    DataType.BFloat16: BFloat16Spec,
    DataType.BFP16: BFP16Spec,
}


def _check_spec(instance: QLayerConfig, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, QTensorConfig):
        raise ConfigError(
            f"QLayerConfig.{attribute.name} must be a spec such as Int8Spec() or None, "
            f"got {value!r}"
        )


@attrs.frozen
class QLayerConfig:
    """The specs of one layer's activations and weights; None leaves them in float."""

    activation: QTensorConfig | None = attrs.field(factory=Int8Spec, validator=_check_spec)
    weight: QTensorConfig | None = attrs.field(factory=Int8Spec, validator=_check_spec)

    def __attrs_post_init__(self) -> None:
        if (
            self.activation is not None
            and self.activation.quant_granularity is QuantGranularity.Group
        ):
            raise ConfigError(
                "QuantGranularity.Group applies to weights only, but the activation spec "
                f"{type(self.activation).__name__} has it; use QuantGranularity.Tensor for "
                "activations"
            )

    def with_data_type(self, data_type: DataType) -> QLayerConfig:
        """Return this layer config with both specs moved to `data_type`."""
        activation = self.activation or Int8Spec()
        weight = self.weight or Int8Spec()
        return QLayerConfig(
            activation=activation.with_data_type(data_type),
            weight=weight.with_data_type(data_type),
        )


def npu_cnn_layer_config() -> QLayerConfig:
    """Return the specs used with enable_npu_cnn when no global_config is given.

    XInt8 for activations and weights, with activation ranges from the power-of-two
    MinMSE search: on PP-OCRv4 det (128x160) it gave output cosines 0.85 and 0.90
    against 0.70 and 0.70 with MinMax.
    """
    return QLayerConfig(
        activation=XInt8Spec(calibration_method=CalibMethod.MinMSE), weight=XInt8Spec()
    )
