"""Opset requirements of a config, and conversion of a model to a newer opset."""

from __future__ import annotations

import logging

import onnx
import onnx.version_converter

from qrewrite.config import QConfig, QTensorConfig
from qrewrite.config.enums import QuantGranularity
from qrewrite.errors import ConfigError, ModelInputError

logger = logging.getLogger(__name__)

# QuantizeLinear/DequantizeLinear gained the per-channel `axis` in opset 13.
PER_CHANNEL_OPSET = 13
# ... and the `block_size` attribute of blocked quantization in opset 21.
BLOCKED_OPSET = 21
# HardSwish, the target of FuseHardSwish, exists from opset 14.
HARD_SWISH_OPSET = 14


def _specs(config: QConfig) -> list[QTensorConfig]:
    layers = [config.global_config]
    for data_type in config.specific_layer_config or {}:
        layers.append(config.global_config.with_data_type(data_type))
    for data_type in config.layer_type_config or {}:
        if data_type is not None:
            layers.append(config.global_config.with_data_type(data_type))
    specs: list[QTensorConfig] = []
    for layer in layers:
        specs.extend(spec for spec in (layer.activation, layer.weight) if spec is not None)
    return specs


def required_opset(config: QConfig) -> tuple[int, str]:
    """Lowest default-domain opset the config's Q/DQ nodes need, and the reason."""
    needed, reason = 10, "QuantizeLinear and DequantizeLinear"
    for spec in _specs(config):
        if spec.data_type.min_opset > needed:
            needed, reason = spec.data_type.min_opset, f"{spec.data_type.value} Q/DQ"
        if spec.quant_granularity is QuantGranularity.Channel and needed < PER_CHANNEL_OPSET:
            needed, reason = PER_CHANNEL_OPSET, "per-channel quantization"
        if spec.quant_granularity is QuantGranularity.Group and needed < BLOCKED_OPSET:
            needed, reason = BLOCKED_OPSET, "blocked quantization (QuantGranularity.Group)"
    weights_quantized = any(layer.weight is not None for layer in [config.global_config]) or bool(
        config.specific_layer_config or config.layer_type_config
    )
    if (
        config.options.PerChannelWeightsByDefault
        and weights_quantized
        and needed < PER_CHANNEL_OPSET
    ):
        needed, reason = PER_CHANNEL_OPSET, "per-channel weights (PerChannelWeightsByDefault)"
    if config.options.Int16Bias and needed < 21:
        needed, reason = 21, "Int16Bias"
    return needed, reason


def model_opset(proto: onnx.ModelProto) -> int:
    """Return the model's default-domain opset."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ModelInputError("the model imports no default-domain (ai.onnx) opset")


def target_opset(proto: onnx.ModelProto, config: QConfig) -> tuple[int, str | None]:
    """Return the opset to convert to and why, or (current opset, None) when it suffices.

    The opset is ConvertOpsetVersion if set, else the lowest one the config needs.
    """
    current = model_opset(proto)
    needed, reason = required_opset(config)
    explicit = config.options.ConvertOpsetVersion
    if explicit is not None:
        if explicit < needed:
            raise ConfigError(
                f"ConvertOpsetVersion={explicit} is too low: {reason} needs opset {needed}"
            )
        return explicit, "ConvertOpsetVersion"
    if current >= needed:
        return current, None
    return needed, f"{reason} needs it"


def convert_for_config(
    proto: onnx.ModelProto, config: QConfig, fusion_reason: str | None
) -> tuple[onnx.ModelProto, str | None]:
    """Return the model at the opset the config needs, or at 14 for a fusion, and a note.

    `fusion_reason` names a float-graph fusion that needs HardSwish (opset 14), or is
    None. When the config needs a lower opset and ConvertOpsetVersion is not set, the
    model is converted to 14 instead. If that conversion fails, the fusion is not
    worth an error: the model goes to the opset the config needs, as without it. The
    note states how the opset changed and why, and is None when it did not change.
    """
    current = model_opset(proto)
    target, reason = target_opset(proto, config)
    wants_fusion = (
        fusion_reason is not None
        and config.options.ConvertOpsetVersion is None
        and target < HARD_SWISH_OPSET
    )
    if wants_fusion:
        try:
            converted = convert_opset(proto, HARD_SWISH_OPSET)
        except ModelInputError as error:
            logger.info("not raising the opset for %s: %s", fusion_reason, error)
        else:
            note = f"opset {current} -> {HARD_SWISH_OPSET}: {fusion_reason}"
            if not config.options.prints_summary():
                logger.info("%s", note)
            return converted, note
    if target == current:
        return proto, None
    note = f"opset {current} -> {target}: {reason}"
    if not config.options.prints_summary():
        logger.info("%s", note)
    return convert_opset(proto, target), note


def convert_opset(proto: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """Return the model converted to `target`; the input is not changed."""
    if model_opset(proto) == target:
        return proto
    try:
        converted = onnx.version_converter.convert_version(proto, target)
    except Exception as error:
        raise ModelInputError(
            f"converting the model from opset {model_opset(proto)} to {target} failed: "
            f"{error}. Set ConvertOpsetVersion to an opset the model converts to, or "
            "convert it yourself"
        ) from error
    return converted
