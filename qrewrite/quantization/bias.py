"""Bias refinement: bias scale = input scale x weight scale, widening weights on overflow.

A bias b of a Conv, ConvTranspose or Gemm is stored as integers q = round(b / s_b) with
s_b = s_x * s_w and zero point 0, which is the form integer kernels add to their
accumulator. When |b| / s_b exceeds the bias type's range, the weight scale of that
channel is raised to |b| / (s_x * qmax) instead of clipping the bias; the weight loses a
little resolution in that channel but the layer's output stays right.
"""

from __future__ import annotations

import logging

import attrs
import numpy as np

from qrewrite.config.data_types import DataType
from qrewrite.config.enums import ScaleType
from qrewrite.quantization.plan import Plan
from qrewrite.quantization.qparams import QuantParams, channel_range, params_from_range

logger = logging.getLogger(__name__)


def _fit_bias(data: np.ndarray, weight: QuantParams) -> tuple[np.ndarray, int | None] | None:
    """Return the bias data and the axis its per-channel scales run along.

    A 1-D bias may be a multiple of the channel count (ConvTranspose with groups). Other
    biases, such as a [1] or [M, 1] Gemm bias, are broadcast so their last axis has one
    entry per channel. Returns None when the weight's channels are not the bias's (a
    per-channel axis moved by QDQOpTypePerChannelSupportToAxis).
    """
    if weight.axis is None:
        return data, None
    channels = weight.scale.size
    if data.ndim == 1 and data.shape[0] % channels == 0:
        return data, 0
    if data.ndim >= 1 and data.shape[-1] == channels:
        return data, data.ndim - 1
    try:
        shape = np.broadcast_shapes(data.shape, (channels,))
    except ValueError:
        return None
    return np.broadcast_to(data, shape).copy(), len(shape) - 1


def _channel_scales(weight: QuantParams, length: int) -> np.ndarray:
    """Weight scales per bias element; ConvTranspose with groups repeats them."""
    scale = weight.scale.astype(np.float64).reshape(-1)
    if scale.size in (1, length):
        return scale
    return np.tile(scale, length // scale.size)


def bias_from_own_range(plan: Plan, bias_type: DataType) -> Plan:
    """Give every linked bias a symmetric scale of its own range (AdjustBiasScale off).

    The scale then differs from input scale x weight scale, so onnxruntime cannot fuse
    the node into an integer kernel and dequantizes the bias instead.
    """
    params = dict(plan.params)
    constants = dict(plan.constants)
    for link in plan.selection.bias_links:
        weight = params[link.weight_key]
        fitted = _fit_bias(constants[link.bias_key], weight)
        data, axis = fitted if fitted is not None else (constants[link.bias_key], None)
        constants[link.bias_key] = data
        low, high = channel_range(data, axis)
        params[link.bias_key] = params_from_range(
            low, high, bias_type, symmetric=True, scale_type=ScaleType.Float32, axis=axis
        )
    return attrs.evolve(plan, params=params, constants=constants)


def refine_bias(plan: Plan, bias_type: DataType) -> Plan:
    """Compute bias parameters for every bias link, widening weight scales where needed."""
    params = dict(plan.params)
    constants = dict(plan.constants)
    qmax = float(bias_type.qmax)

    for link in plan.selection.bias_links:
        activation = params[link.activation_key]
        weight = params[link.weight_key]
        fitted = _fit_bias(constants[link.bias_key], weight)
        if fitted is None:
            params[link.bias_key] = _per_tensor_bias(
                constants[link.bias_key], activation, weight, bias_type
            )
            continue
        data, axis = fitted
        constants[link.bias_key] = data

        length = data.shape[axis] if axis is not None else 1
        weight_scale = _channel_scales(weight, length)
        activation_scale = float(activation.scale.reshape(-1)[0])
        _, peak = channel_range(np.abs(data), axis)
        needed = np.asarray(peak, dtype=np.float64) / (activation_scale * qmax)

        if np.any(needed > weight_scale):
            if weight.scale.size != weight_scale.size:
                needed_per_weight = needed.reshape(-1, weight.scale.size).max(axis=0)
            else:
                needed_per_weight = needed.reshape(-1) if weight.axis is not None else needed.max()
            widened = np.maximum(weight.scale.astype(np.float64), needed_per_weight)
            logger.info(
                "bias of %s overflows %s: widened %d weight scale(s)",
                link.node,
                bias_type.value,
                int(np.sum(widened > weight.scale)),
            )
            weight = _rescaled(weight, widened)
            params[link.weight_key] = weight
            weight_scale = _channel_scales(weight, length)

        scale = (activation_scale * weight_scale).astype(np.float32)
        if axis is None:
            scale = scale.reshape(())
        params[link.bias_key] = QuantParams(
            data_type=bias_type,
            scale=scale,
            zero_point=np.zeros(scale.shape, dtype=np.int64),
            axis=axis,
        )

    # A widened weight scale changes the bias scale of every node sharing that weight.
    changed = {key for key in params if params[key] is not plan.params.get(key)}
    if any(link.weight_key in changed for link in plan.selection.bias_links):
        for link in plan.selection.bias_links:
            weight = params[link.weight_key]
            activation = params[link.activation_key]
            bias = params[link.bias_key]
            if bias.axis is None and weight.axis is not None:
                continue
            length = bias.scale.size
            scale = (
                float(activation.scale.reshape(-1)[0]) * _channel_scales(weight, length)
            ).astype(np.float32)
            params[link.bias_key] = QuantParams(
                bias_type, scale.reshape(bias.scale.shape), bias.zero_point, bias.axis
            )
    return plan.with_params(params).with_constants(constants)


def _per_tensor_bias(
    data: np.ndarray, activation: QuantParams, weight: QuantParams, bias_type: DataType
) -> QuantParams:
    """Compute one bias scale for a weight whose channels do not line up with the bias.

    Integer kernels cannot use such a bias directly, but the dequantized value stays
    accurate: the scale is input scale x largest weight scale, raised if the bias would
    overflow.
    """
    scale = float(activation.scale.reshape(-1)[0]) * float(weight.scale.max())
    peak = float(np.max(np.abs(data))) if data.size else 0.0
    scale = max(scale, peak / float(bias_type.qmax))
    return QuantParams(bias_type, np.asarray(scale, np.float32), np.zeros((), np.int64), None)


def _rescaled(weight: QuantParams, scale: np.ndarray) -> QuantParams:
    """Weight parameters with a larger scale and the same symmetric zero point."""
    return QuantParams(
        data_type=weight.data_type,
        scale=np.asarray(scale, dtype=np.float32).reshape(weight.scale.shape),
        zero_point=weight.zero_point,
        axis=weight.axis,
    )


__all__ = ["channel_range", "params_from_range", "refine_bias"]
