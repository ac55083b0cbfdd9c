"""Planner rules for onnxruntime CPU speed: FoldRelu, KeepSlowOpsFloat and WarnSlowTypes.

Each test quantizes a small model, checks the Q/DQ placement in the output model, and
then checks which kernels onnxruntime's CPU graph optimizer makes of it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from qrewrite import Int8Spec, ModelQuantizer, QConfig, QLayerConfig, recommended_config
from qrewrite.quantization.planner.slow_kernels import cpu_only
from tests.qmodels import consumers, make_model, min_cosine, nodes_of, producers, samples, tensor

SHAPE = [1, 8, 16, 16]


def conv_weight(name: str, seed: int) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return tensor(name, rng.normal(0.0, 0.3, size=(8, 8, 3, 3)).astype(np.float32))


def conv(input_name: str, output: str, weight: str) -> onnx.NodeProto:
    return helper.make_node(
        "Conv", [input_name, weight], [output], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
        name=f"{output}_conv",
    )


def conv_relu_conv() -> onnx.ModelProto:
    nodes = [
        conv("x", "c1", "w1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        conv("r1", "y", "w2"),
    ]
    return make_model(nodes, [("x", SHAPE)], ["y"], [conv_weight("w1", 1), conv_weight("w2", 2)])


def add_clip_conv() -> onnx.ModelProto:
    """x + 3 clipped to [0, 6], the first half of a decomposed HardSwish, then a Conv."""
    nodes = [
        conv("x", "c1", "w1"),
        helper.make_node("Add", ["c1", "three"], ["a1"], name="add"),
        helper.make_node("Clip", ["a1", "zero", "six"], ["k1"], name="clip"),
        conv("k1", "y", "w2"),
    ]
    initializers = [
        conv_weight("w1", 1),
        conv_weight("w2", 2),
        tensor("three", np.array(3.0, np.float32)),
        tensor("zero", np.array(0.0, np.float32)),
        tensor("six", np.array(6.0, np.float32)),
    ]
    return make_model(nodes, [("x", SHAPE)], ["y"], initializers)


def max_pool_model(*, between_convs: bool) -> onnx.ModelProto:
    """Conv -> MaxPool -> Conv, or Conv -> Div -> MaxPool -> GlobalAveragePool.

    The second is the tail of PP-OCR cls: onnxruntime runs Div in float, and there the
    integer MaxPool is the slow NCHW kernel.
    """
    initializers = [
        conv_weight("w1", 1),
        conv_weight("w2", 2),
        tensor("two", np.array(2.0, np.float32)),
    ]
    pool = helper.make_node(
        "MaxPool", ["d1" if not between_convs else "c1"], ["p1"], kernel_shape=[2, 2],
        strides=[2, 2], name="pool",
    )
    if between_convs:
        nodes = [conv("x", "c1", "w1"), pool, conv("p1", "y", "w2")]
    else:
        nodes = [
            conv("x", "c1", "w1"),
            helper.make_node("Div", ["c1", "two"], ["d1"], name="div"),
            pool,
            helper.make_node("GlobalAveragePool", ["p1"], ["y"], name="gap"),
        ]
    return make_model(nodes, [("x", SHAPE)], ["y"], initializers)


def depthwise_after_div() -> onnx.ModelProto:
    """Conv -> Div -> depthwise Conv 3x3 over 8 channels -> Conv, as in PP-OCR cls."""
    rng = np.random.default_rng(5)
    depthwise = rng.normal(0.0, 0.3, size=(8, 1, 3, 3)).astype(np.float32)
    nodes = [
        conv("x", "c1", "w1"),
        helper.make_node("Div", ["c1", "two"], ["d1"], name="div"),
        helper.make_node(
            "Conv", ["d1", "dw"], ["c2"], group=8, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
            name="depthwise",
        ),
        conv("c2", "y", "w2"),
    ]
    initializers = [
        conv_weight("w1", 1),
        conv_weight("w2", 2),
        tensor("dw", depthwise),
        tensor("two", np.array(2.0, np.float32)),
    ]
    return make_model(nodes, [("x", SHAPE)], ["y"], initializers)


FEEDS = samples({"x": SHAPE}, 4)


def quantize(model: onnx.ModelProto, config: QConfig) -> onnx.ModelProto:
    return ModelQuantizer(config).quantize_model(model, None, FEEDS)


def optimized(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph onnxruntime runs on CPU after all its graph optimizations."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as folder:
        options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def op_counts(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node)


def stray_requantizations(model: onnx.ModelProto) -> int:
    """Count DequantizeLinear nodes whose output feeds a QuantizeLinear directly."""
    count = 0
    for node in nodes_of(model, "DequantizeLinear"):
        readers = consumers(model, node.output[0])
        count += any(reader.op_type == "QuantizeLinear" for reader in readers)
    return count


def config(**options: object) -> QConfig:
    return recommended_config(PrintSummary=False, **options)


# FoldRelu


def test_fold_relu_quantizes_only_relu_output() -> None:
    quantized = quantize(conv_relu_conv(), config())

    conv_output_consumers = consumers(quantized, "c1")
    assert [node.op_type for node in conv_output_consumers] == ["Relu"]
    relu_consumers = consumers(quantized, "r1")
    assert [node.op_type for node in relu_consumers] == ["QuantizeLinear"]


def test_fold_relu_note_in_summary(capsys: pytest.CaptureFixture[str]) -> None:
    quantize(conv_relu_conv(), recommended_config(LogSeverityLevel=3))

    out = capsys.readouterr().out
    assert "FoldRelu: 1 Relu or Clip node(s)" in out
    assert "kept in float" not in out


def test_fold_relu_fuses_conv_and_relu() -> None:
    folded = optimized(quantize(conv_relu_conv(), config()))
    unfolded = optimized(quantize(conv_relu_conv(), config(FoldRelu=False)))

    assert op_counts(folded)["QLinearConv"] == 2
    assert op_counts(folded)["Relu"] == 0
    assert stray_requantizations(folded) == 0
    # Without the rule, onnxruntime drops the Relu but keeps a DQ -> Q pair in its place.
    assert op_counts(unfolded)["QLinearConv"] == 2
    assert stray_requantizations(unfolded) == 1


def test_fold_clip_into_add() -> None:
    # FoldConvAffine would fold the Add of 3 into the Conv bias and leave no Add.
    quantized = quantize(add_clip_conv(), config(FoldConvAffine=False))
    graph = optimized(quantized)

    assert [node.op_type for node in consumers(quantized, "a1")] == ["Clip"]
    assert op_counts(graph)["QLinearAdd"] == 1
    assert op_counts(graph)["QLinearConv"] == 2
    assert op_counts(graph)["Clip"] == 0
    assert stray_requantizations(graph) == 0


def test_fold_relu_keeps_accuracy() -> None:
    model = conv_relu_conv()

    folded = quantize(model, config())
    unfolded = quantize(model, config(FoldRelu=False))

    assert min_cosine(model, folded, FEEDS) > 0.99
    assert min_cosine(model, folded, FEEDS) >= min_cosine(model, unfolded, FEEDS) - 1e-3


def test_fold_relu_skips_symmetric_int8() -> None:
    int8 = QConfig(
        QLayerConfig(activation=Int8Spec(), weight=Int8Spec()), PrintSummary=False
    )
    quantized = quantize(conv_relu_conv(), int8)

    # A symmetric Relu output has zero point 0, so onnxruntime would keep the Relu and
    # could not fuse the Conv. The Conv output therefore keeps its own Q/DQ.
    assert [node.op_type for node in consumers(quantized, "c1")] == ["QuantizeLinear"]


def test_fold_relu_skips_shared_producer_output() -> None:
    nodes = [
        conv("x", "c1", "w1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Add", ["r1", "c1"], ["y"], name="add"),
    ]
    model = make_model(nodes, [("x", SHAPE)], ["y"], [conv_weight("w1", 1)])

    quantized = quantize(model, config())

    assert "QuantizeLinear" in [node.op_type for node in consumers(quantized, "c1")]


# KeepSlowOpsFloat
# These models divide a Conv output by a constant, which FoldConvAffine folds into the
# Conv. The tests that need the Div turn the rule off.


def test_max_pool_away_from_convs_runs_float() -> None:
    model = max_pool_model(between_convs=False)
    quantized = quantize(model, config(FoldConvAffine=False))
    graph = optimized(quantized)

    pool = nodes_of(quantized, "MaxPool")[0]
    input_scale = producers(quantized)[pool.input[0]].input[1]
    output_scale = consumers(quantized, pool.output[0])[0].input[1]
    assert input_scale != output_scale
    pools = [node for node in graph.graph.node if node.op_type.endswith("MaxPool")]
    assert [node.op_type for node in pools] == ["MaxPool"]
    assert producers(graph)[pools[0].input[0]].op_type == "DequantizeLinear"
    assert min_cosine(model, quantized, FEEDS) > 0.99


def test_max_pool_integer_without_rule() -> None:
    model = max_pool_model(between_convs=False)
    graph = optimized(quantize(model, config(KeepSlowOpsFloat=False)))

    pools = [node for node in graph.graph.node if node.op_type.endswith("MaxPool")]
    assert len(pools) == 1
    assert producers(graph)[pools[0].input[0]].op_type != "DequantizeLinear"


def test_max_pool_between_convs_stays_integer() -> None:
    graph = optimized(quantize(max_pool_model(between_convs=True), config()))

    # Between two QLinearConvs onnxruntime runs the fast NHWC integer MaxPool.
    assert op_counts(graph)["NhwcMaxPool"] == 1
    assert op_counts(graph)["MaxPool"] == 0


def test_max_pool_note_in_summary(capsys: pytest.CaptureFixture[str]) -> None:
    summary_config = recommended_config(LogSeverityLevel=3, FoldConvAffine=False)
    quantize(max_pool_model(between_convs=False), summary_config)

    out = capsys.readouterr().out
    assert "KeepSlowOpsFloat: 1 MaxPool node(s) run in float" in out


def test_depthwise_after_div_runs_float() -> None:
    model = depthwise_after_div()
    quantized = quantize(model, config(FoldConvAffine=False))
    graph = optimized(quantized)

    depthwise = next(node for node in quantized.graph.node if node.name == "depthwise")
    assert producers(quantized)[depthwise.input[0]].op_type == "Div"
    assert depthwise.input[1] == "dw"
    assert [node.op_type for node in consumers(quantized, "c2")] == ["QuantizeLinear"]
    assert op_counts(graph)["QLinearConv"] == 2
    float_convs = [node for node in graph.graph.node if node.op_type in ("Conv", "FusedConv")]
    assert len(float_convs) == 1
    assert min_cosine(model, quantized, FEEDS) > 0.99


def test_depthwise_weights_listed_float(capsys: pytest.CaptureFixture[str]) -> None:
    quantize(depthwise_after_div(), recommended_config(LogSeverityLevel=3, FoldConvAffine=False))

    out = capsys.readouterr().out
    assert "dw: KeepSlowOpsFloat: weights of the depthwise Conv 'depthwise'" in out
    assert "KeepSlowOpsFloat: 1 depthwise Conv node(s) run in float" in out


def test_depthwise_integer_without_rule() -> None:
    graph = optimized(quantize(depthwise_after_div(), config(KeepSlowOpsFloat=False)))

    assert op_counts(graph)["QLinearConv"] == 3


def test_cpu_only_providers() -> None:
    assert cpu_only(("CPUExecutionProvider",))
    assert not cpu_only(("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert not cpu_only(())


# WarnSlowTypes


def test_int8_activations_warn_and_stay_int8(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    int8 = QConfig(QLayerConfig(activation=Int8Spec(), weight=Int8Spec()), LogSeverityLevel=2)

    with caplog.at_level(logging.WARNING, logger="qrewrite"):
        quantized = quantize(conv_relu_conv(), int8)

    out = capsys.readouterr().out
    # The printed summary carries the note, so it is not logged a second time.
    assert "WarnSlowTypes:" in out
    assert not any("WarnSlowTypes" in record.getMessage() for record in caplog.records)
    quiet = QConfig(
        QLayerConfig(activation=Int8Spec(), weight=Int8Spec()),
        LogSeverityLevel=2,
        PrintSummary=False,
    )
    with caplog.at_level(logging.WARNING, logger="qrewrite"):
        quantize(conv_relu_conv(), quiet)
    assert "WarnSlowTypes:" not in capsys.readouterr().out
    assert any("WarnSlowTypes" in record.getMessage() for record in caplog.records)
    quantize_types = {
        node.output[0]: node for node in nodes_of(quantized, "QuantizeLinear")
    }
    assert quantize_types
    zero_points = [
        initializer_type(quantized, node.input[2]) for node in quantize_types.values()
    ]
    assert set(zero_points) == {onnx.TensorProto.INT8}


def test_uint8_activations_no_warning(capsys: pytest.CaptureFixture[str]) -> None:
    quantize(conv_relu_conv(), recommended_config(LogSeverityLevel=3))

    assert "WarnSlowTypes" not in capsys.readouterr().out


def test_warning_can_be_turned_off(capsys: pytest.CaptureFixture[str]) -> None:
    int8 = QConfig(
        QLayerConfig(activation=Int8Spec(), weight=Int8Spec()),
        LogSeverityLevel=3,
        WarnSlowTypes=False,
    )

    quantize(conv_relu_conv(), int8)

    assert "WarnSlowTypes" not in capsys.readouterr().out


def initializer_type(model: onnx.ModelProto, name: str) -> int:
    for init in model.graph.initializer:
        if init.name == name:
            return init.data_type
    raise KeyError(name)
