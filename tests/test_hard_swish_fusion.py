"""FuseHardSwish inside quantize_model: the opset it raises to, its option and its limits."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from onnx import helper

from qrewrite import Int8Spec, ModelQuantizer, QConfig, QLayerConfig, QuantGranularity, UInt8Spec
from tests.qmodels import make_model, nodes_of, run, samples, tensor

SHAPE = [1, 4, 6, 6]


def conv_hard_swish_model(opset: int = 12, depthwise_after: bool = False):
    """Conv -> x * Clip(x + 3, 0, 6) / 6 -> Conv, as PaddlePaddle exports it.

    With `depthwise_after`, the second Conv is a 3x3 depthwise Conv of 4 channels.
    """
    rng = np.random.default_rng(3)
    if depthwise_after:
        second = tensor("w2", rng.normal(size=(4, 1, 3, 3)).astype(np.float32))
        second_conv = {"group": 4, "pads": [1, 1, 1, 1]}
    else:
        second = tensor("w2", rng.normal(size=(4, 4, 1, 1)).astype(np.float32))
        second_conv = {}
    initializers = [
        tensor("w1", rng.normal(size=(4, 4, 3, 3)).astype(np.float32)),
        second,
        tensor("three", np.array(3.0, np.float32)),
        tensor("zero", np.array(0.0, np.float32)),
        tensor("six", np.array(6.0, np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Add", ["c1", "three"], ["shifted"], name="add"),
        helper.make_node("Clip", ["shifted", "zero", "six"], ["clipped"], name="clip"),
        helper.make_node("Mul", ["c1", "clipped"], ["product"], name="mul"),
        helper.make_node("Div", ["product", "six"], ["swished"], name="div"),
        helper.make_node("Conv", ["swished", "w2"], ["y"], name="conv2", **second_conv),
    ]
    return make_model(nodes, [("x", SHAPE)], ["y"], initializers, opset=opset)


def cpu_config(**options) -> QConfig:
    return QConfig(
        global_config=QLayerConfig(
            activation=UInt8Spec(), weight=Int8Spec(quant_granularity=QuantGranularity.Channel)
        ),
        **options,
    )


def default_opset(model) -> int:
    return {entry.domain: entry.version for entry in model.opset_import}[""]


def quantize(config: QConfig, model=None):
    model = conv_hard_swish_model() if model is None else model
    return ModelQuantizer(config).quantize_model(model, None, samples({"x": SHAPE}, 4))


def test_fusion_raises_opset_to_14(caplog):
    model = conv_hard_swish_model()
    feed = samples({"x": SHAPE}, 1, seed=9)[0]

    with caplog.at_level(logging.INFO, logger="qrewrite"):
        quantized = quantize(cpu_config(PrintSummary=False), model)

    assert default_opset(quantized) == 14
    assert len(nodes_of(quantized, "HardSwish")) == 1
    assert not nodes_of(quantized, "Clip")
    assert "opset 12 -> 14: FuseHardSwish" in caplog.text
    reference = run(model, feed)[0]
    error = np.abs(run(quantized, feed)[0] - reference).max()
    assert error < 0.05 * np.abs(reference).max()


def test_summary_states_opset_change(capsys):
    quantize(cpu_config(PrintSummary=True))

    assert "opset 12 -> 14: FuseHardSwish" in capsys.readouterr().out


def test_fusion_off_keeps_decomposed_form():
    quantized = quantize(cpu_config(FuseHardSwish=False))

    assert default_opset(quantized) == 13
    assert not nodes_of(quantized, "HardSwish")
    assert len(nodes_of(quantized, "Clip")) + len(nodes_of(quantized, "Div")) >= 1


def test_explicit_opset_blocks_fusion():
    quantized = quantize(cpu_config(ConvertOpsetVersion=13))

    assert default_opset(quantized) == 13
    assert not nodes_of(quantized, "HardSwish")


def test_model_without_pattern_keeps_opset():
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    weight = tensor("w", rng.normal(size=(4, 4, 1, 1)).astype(np.float32))
    model = make_model(nodes, [("x", SHAPE)], ["y"], [weight], opset=12)

    quantized = quantize(cpu_config(), model)

    assert default_opset(quantized) == 13


def test_npu_cnn_leaves_hard_swish_decomposed():
    config = QConfig(enable_npu_cnn=True)

    assert config.options.FuseHardSwish is False
    assert QConfig(enable_npu_cnn=True, FuseHardSwish=True).options.FuseHardSwish is True


@pytest.mark.parametrize("opset", [11, 13])
def test_fusion_from_other_opsets(opset):
    quantized = quantize(cpu_config(), conv_hard_swish_model(opset=opset))

    assert default_opset(quantized) == 14
    assert len(nodes_of(quantized, "HardSwish")) == 1


def test_depthwise_conv_after_hard_swish_runs_float():
    model = conv_hard_swish_model(depthwise_after=True)

    quantized = quantize(cpu_config(), model)

    hard_swish = nodes_of(quantized, "HardSwish")[0]
    depthwise = [node for node in nodes_of(quantized, "Conv") if node.input[1] == "w2"]
    assert len(depthwise) == 1
    assert depthwise[0].input[0] == hard_swish.output[0]
