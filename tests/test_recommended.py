"""qrewrite.recommended_config: the fast and accurate types for onnxruntime on CPU."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from qrewrite import (
    ConfigError,
    Int8Spec,
    ModelQuantizer,
    QLayerConfig,
    QuantGranularity,
    UInt8Spec,
    recommended_config,
)
from tests.qmodels import dq_params, make_model, min_cosine, nodes_of, producers, samples, tensor
from tests.test_planner_speed import op_counts, optimized

SHAPE = [1, 4, 12, 12]
FEEDS = samples({"x": SHAPE}, 4)


def conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    weight = rng.normal(0.0, 0.3, size=(6, 4, 3, 3)).astype(np.float32)
    # One output channel much smaller than the others, which per-tensor scales round away.
    weight[5] *= 1e-3
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    return make_model(nodes, [("x", SHAPE)], ["y"], [tensor("w", weight)])


def test_recommended_cpu_types() -> None:
    config = recommended_config()

    assert config.global_config == QLayerConfig(
        activation=UInt8Spec(), weight=Int8Spec(quant_granularity=QuantGranularity.Channel)
    )
    assert config.global_config.activation is not None
    assert config.global_config.activation.symmetric is False
    assert config.global_config.weight is not None
    assert config.global_config.weight.symmetric is True
    assert config.options.ExecutionProviders == ("CPUExecutionProvider",)


def test_recommended_overrides() -> None:
    config = recommended_config(CalibDataSize=3, exclude=["head"], PrintSummary=False)

    assert config.options.CalibDataSize == 3
    assert config.options.PrintSummary is False
    assert config.exclude == ("head",)
    assert isinstance(config.global_config.activation, UInt8Spec)


def test_recommended_global_config_override() -> None:
    layer = QLayerConfig(activation=Int8Spec(), weight=Int8Spec())

    assert recommended_config(global_config=layer).global_config == layer


def test_unknown_target_raises() -> None:
    with pytest.raises(ConfigError, match="unknown target 'gpu'"):
        recommended_config("gpu")


def test_recommended_output_model() -> None:
    model = conv_model()

    quantized = ModelQuantizer(recommended_config(PrintSummary=False)).quantize_model(
        model, None, FEEDS
    )

    conv = nodes_of(quantized, "Conv")[0]
    activation_dq = producers(quantized)[conv.input[0]]
    weight_dq = producers(quantized)[conv.input[1]]
    activation_scale, activation_zero_point, _ = dq_params(quantized, activation_dq)
    weight_scale, weight_zero_point, weight_axis = dq_params(quantized, weight_dq)
    assert activation_zero_point.dtype == np.uint8
    assert activation_scale.shape == ()
    assert weight_zero_point.dtype == np.int8
    assert weight_axis == 0
    assert weight_scale.shape == (6,)
    assert np.all(weight_zero_point == 0)
    assert min_cosine(model, quantized, FEEDS) > 0.99
    assert op_counts(optimized(quantized))["QLinearConv"] == 1
