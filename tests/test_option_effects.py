"""Each built option changes the quantized model as its documentation states."""

from __future__ import annotations

import logging
import os

import numpy as np
import onnx
import pytest
from onnx import helper
from qmodels import consumers, initializer, make_model, nodes_of, producers, samples, tensor
from test_quantize_model import FEEDS, conv_gemm_model, dq_feeding, quantize

from qrewrite import ConfigError, Int8Spec, ModelQuantizer, QConfig, QLayerConfig, UInt8Spec

RNG = np.random.default_rng(3)


def _quantize_count(model, op_type="QuantizeLinear") -> int:
    return len(nodes_of(model, op_type))


def node_named(model, name):
    return next(n for n in model.graph.node if n.name == name)


def input_is_dequantized(model, node_name: str, index: int = 0) -> bool:
    node = node_named(model, node_name)
    producer = producers(model).get(node.input[index])
    return producer is not None and producer.op_type == "DequantizeLinear"


def test_op_types_to_quantize_limits_ops() -> None:
    quantized = quantize(conv_gemm_model(), OpTypesToQuantize=["Gemm"])
    assert input_is_dequantized(quantized, "gemm")
    assert not input_is_dequantized(quantized, "conv")


def test_extra_op_types_to_quantize_adds_ops() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Abs", ["c"], ["y"], name="abs"),
    ]
    model = make_model(
        nodes,
        [("x", [1, 3, 4, 4])],
        ["y"],
        [tensor("w", RNG.normal(size=(2, 3, 1, 1)).astype(np.float32))],
    )
    feeds = samples({"x": [1, 3, 4, 4]}, 3)
    plain = quantize(model, feeds)
    extra = quantize(model, feeds, ExtraOpTypesToQuantize=["Abs"])
    assert not any(n.op_type == "QuantizeLinear" for n in consumers(plain, "y"))
    assert producers(extra)["y"].op_type == "DequantizeLinear"
    everything = quantize(model, feeds, QuantizeAllOpTypes=True)
    assert producers(everything)["y"].op_type == "DequantizeLinear"


def test_exclude_by_name_regex_and_subgraph() -> None:
    model = conv_gemm_model()
    by_name = quantize(model, exclude=["gemm"])
    assert not input_is_dequantized(by_name, "gemm", 1)
    by_regex = quantize(model, exclude=["ge.*"])
    assert not input_is_dequantized(by_regex, "gemm", 1)
    by_path = quantize(model, exclude=[(["relu"], ["flatten"])])
    assert input_is_dequantized(by_path, "conv", 1)
    assert not any(n.op_type == "QuantizeLinear" for n in consumers(by_path, "p"))


def test_layer_and_type_overrides() -> None:
    model = conv_gemm_model()
    floats = quantize(model, layer_type_config={None: ["Conv"]})
    assert not input_is_dequantized(floats, "conv", 1)
    wide = quantize(model, specific_layer_config={"Int16": ["gemm"]})
    weight_dq = dq_feeding(wide, "gemm", 1)
    assert initializer(wide, weight_dq.input[0]).dtype == np.int16


def test_weights_only_leaves_activations_float() -> None:
    quantized = quantize(conv_gemm_model(), WeightsOnly=True)
    assert input_is_dequantized(quantized, "conv", 1)
    assert not input_is_dequantized(quantized, "conv", 0)
    assert _quantize_count(quantized) == 0


def test_quantize_bias_false_keeps_bias_float() -> None:
    quantized = quantize(conv_gemm_model(), QuantizeBias=False)
    assert not input_is_dequantized(quantized, "conv", 2)


def test_int32_bias_false_uses_weight_type() -> None:
    quantized = quantize(conv_gemm_model(), Int32Bias=False)
    bias_dq = dq_feeding(quantized, "conv", 2)
    assert initializer(quantized, bias_dq.input[0]).dtype == np.int8


def test_int16_bias() -> None:
    quantized = quantize(conv_gemm_model(), Int16Bias=True)
    bias_dq = dq_feeding(quantized, "conv", 2)
    assert initializer(quantized, bias_dq.input[0]).dtype == np.int16
    with pytest.raises(ConfigError, match="Int16Bias"):
        QConfig(Int16Bias=True, Int32Bias=True)


def test_add_qdq_pair_to_weight_keeps_float_weight() -> None:
    quantized = quantize(conv_gemm_model(), AddQDQPairToWeight=True)
    weight_dq = dq_feeding(quantized, "conv", 1)
    quantize_node = producers(quantized)[weight_dq.input[0]]
    assert quantize_node.op_type == "QuantizeLinear"
    assert initializer(quantized, quantize_node.input[0]).dtype == np.float32


def test_dedicated_qdq_pair_per_consumer() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["a"], name="relu"),
        helper.make_node("Sigmoid", ["c"], ["b"], name="sigmoid"),
    ]
    model = make_model(
        nodes,
        [("x", [1, 3, 4, 4])],
        ["a", "b"],
        [tensor("w", RNG.normal(size=(2, 3, 1, 1)).astype(np.float32))],
    )
    feeds = samples({"x": [1, 3, 4, 4]}, 3)
    shared = quantize(model, feeds)
    dedicated = quantize(model, feeds, DedicatedQDQPair=True)
    assert len([n for n in consumers(shared, "c") if n.op_type == "QuantizeLinear"]) == 1
    # One pair per consumer; the producer's own pair then has no reader and is removed.
    assert len([n for n in consumers(dedicated, "c") if n.op_type == "QuantizeLinear"]) == 2


def test_unsigned_relu_makes_relu_output_asymmetric() -> None:
    model = conv_gemm_model()
    symmetric = quantize(model, activation=Int8Spec())
    unsigned = quantize(model, activation=Int8Spec(), UseUnsignedReLU=True)

    def relu_zero_point(quantized):
        q = next(n for n in consumers(quantized, "r") if n.op_type == "QuantizeLinear")
        return int(initializer(quantized, q.input[2]))

    assert relu_zero_point(symmetric) == 0
    assert relu_zero_point(unsigned) == -128


def test_exclude_output_quantization() -> None:
    quantized = quantize(conv_gemm_model(), OpTypesToExcludeOutputQuantization=["Gemm"])
    assert producers(quantized)["y"].op_type == "Gemm"


def test_matmul_const_b_only() -> None:
    nodes = [helper.make_node("MatMul", ["x", "z"], ["y"], name="matmul")]
    model = make_model(nodes, [("x", [2, 3]), ("z", [3, 4])], ["y"])
    feeds = samples({"x": [2, 3], "z": [3, 4]}, 3)
    assert input_is_dequantized(quantize(model, feeds), "matmul", 1)
    assert not input_is_dequantized(quantize(model, feeds, MatMulConstBOnly=True), "matmul", 1)


def test_force_quantize_no_input_check() -> None:
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 1, 3, 2], name="transpose"),
        helper.make_node("Conv", ["t", "w"], ["y"], name="conv"),
    ]
    model = make_model(
        nodes,
        [("x", [1, 3, 4, 4])],
        ["y"],
        [tensor("w", RNG.normal(size=(2, 3, 1, 1)).astype(np.float32))],
    )
    feeds = samples({"x": [1, 3, 4, 4]}, 3)
    assert not input_is_dequantized(quantize(model, feeds), "transpose")
    assert input_is_dequantized(quantize(model, feeds, ForceQuantizeNoInputCheck=True), "transpose")


def test_per_channel_axis_override() -> None:
    quantized = quantize(conv_gemm_model(), QDQOpTypePerChannelSupportToAxis={"Gemm": 1})
    weight_dq = dq_feeding(quantized, "gemm", 1)
    assert next(a.i for a in weight_dq.attribute if a.name == "axis") == 1


def test_remove_input_init_and_simplify() -> None:
    model = conv_gemm_model()
    model.graph.input.append(
        helper.make_tensor_value_info("cw", onnx.TensorProto.FLOAT, [8, 3, 3, 3])
    )
    kept = quantize(model, RemoveInputInit=False, SimplifyModel=False)
    assert "cw" in [value.name for value in kept.graph.input]
    weight_dq = dq_feeding(kept, "conv", 1)
    assert producers(kept)[weight_dq.input[0]].op_type == "QuantizeLinear"

    removed = quantize(model)
    assert "cw" not in [value.name for value in removed.graph.input]
    weight_dq = dq_feeding(removed, "conv", 1)
    assert initializer(removed, weight_dq.input[0]).dtype == np.int8


def test_calib_data_size_limits_samples() -> None:
    model = conv_gemm_model()
    feeds = [dict(f) for f in FEEDS]
    feeds[-1] = {"x": feeds[-1]["x"] * 100}
    limited = quantize(model, feeds, CalibDataSize=3)
    full = quantize(model, feeds)
    scale = lambda q: float(initializer(q, dq_feeding(q, "conv", 0).input[1]))  # noqa: E731
    assert scale(limited) < scale(full) / 10


def test_print_summary_and_log_level(capsys, caplog) -> None:
    config = QConfig(LogSeverityLevel=1)
    with caplog.at_level(logging.DEBUG, logger="qrewrite"):
        ModelQuantizer(config).quantize_model(conv_gemm_model(), None, FEEDS)
    printed = capsys.readouterr().out
    assert "quantized nodes" in printed
    assert "model size" in printed
    assert any(r.levelno == logging.INFO for r in caplog.records)

    quiet = QConfig(PrintSummary=False, LogSeverityLevel=3)
    caplog.clear()
    ModelQuantizer(quiet).quantize_model(conv_gemm_model(), None, FEEDS)
    assert capsys.readouterr().out == ""
    assert not [
        r for r in caplog.records if r.levelno < logging.ERROR and r.name.startswith("qrewrite")
    ]


def test_crypto_mode_needs_proto_and_prints_nothing(tmp_path, capsys) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(conv_gemm_model(), path)
    config = QConfig(CryptoMode=True)
    with pytest.raises(ConfigError, match="CryptoMode"):
        ModelQuantizer(config).quantize_model(path, None, FEEDS)
    ModelQuantizer(config).quantize_model(conv_gemm_model(), None, FEEDS)
    assert capsys.readouterr().out == ""


def test_nothing_written_to_working_directory(tmp_path, monkeypatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(work)
    ModelQuantizer(QConfig(DebugMode=True)).quantize_model(conv_gemm_model(), out / "q.onnx", FEEDS)
    assert os.listdir(work) == []
    assert sorted(os.listdir(out)) == ["q.onnx"]


def test_external_data_format(tmp_path) -> None:
    out = tmp_path / "q.onnx"
    ModelQuantizer(QConfig(PrintSummary=False)).quantize_model(conv_gemm_model(), out, FEEDS)
    config = QConfig(PrintSummary=False, use_external_data_format=True)
    out_external = tmp_path / "qe.onnx"
    ModelQuantizer(config).quantize_model(conv_gemm_model(), out_external, FEEDS)
    assert (tmp_path / "qe.onnx.data").exists()
    loaded = onnx.load(out_external)
    onnx.checker.check_model(str(out_external), full_check=True)
    assert len(loaded.graph.initializer) == len(onnx.load(out).graph.initializer)


def test_specs_on_layers() -> None:
    quantized = quantize(
        conv_gemm_model(),
        activation=UInt8Spec(),
        weight=Int8Spec(),
        layer_type_config={"UInt16": ["Gemm"]},
    )
    x_dq = dq_feeding(quantized, "gemm", 0)
    assert initializer(quantized, x_dq.input[2]).dtype == np.uint16
    _ = QLayerConfig


def test_histogram_figures_next_to_output(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "q.onnx"
    config = QConfig(PrintSummary=False, SaveTensorHistFig=True)
    ModelQuantizer(config).quantize_model(conv_gemm_model(), out, FEEDS)
    figures = sorted((tmp_path / "q_tensor_hist").glob("*.png"))
    assert len(figures) >= 4
    with pytest.raises(ConfigError, match="SaveTensorHistFig"):
        ModelQuantizer(config).quantize_model(conv_gemm_model(), None, FEEDS)


def test_per_channel_weights_by_default() -> None:
    model = conv_gemm_model(opset=11)
    default = quantize(model, weight=Int8Spec())
    weight_dq = dq_feeding(default, "conv", 1)
    assert any(a.name == "axis" for a in weight_dq.attribute)
    assert {o.domain: o.version for o in default.opset_import}[""] == 13

    per_tensor = quantize(model, weight=Int8Spec(), PerChannelWeightsByDefault=False)
    weight_dq = dq_feeding(per_tensor, "conv", 1)
    assert not any(a.name == "axis" for a in weight_dq.attribute)
    assert {o.domain: o.version for o in per_tensor.opset_import}[""] == 11


def test_output_concat_stays_float_with_own_input_scales() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["boxes"], name="boxes_conv"),
        helper.make_node("Conv", ["x", "v"], ["logits"], name="score_conv"),
        helper.make_node("Sigmoid", ["logits"], ["scores"], name="sigmoid"),
        helper.make_node("Mul", ["boxes", "big"], ["pixels"], name="scale"),
        helper.make_node("Concat", ["pixels", "scores"], ["y"], axis=1, name="concat"),
    ]
    inits = [
        tensor("w", RNG.normal(size=(4, 3, 1, 1)).astype(np.float32)),
        tensor("v", RNG.normal(size=(2, 3, 1, 1)).astype(np.float32)),
        tensor("big", np.array(300.0, np.float32)),
    ]
    model = make_model(nodes, [("x", [1, 3, 4, 4])], ["y"], inits)
    feeds = samples({"x": [1, 3, 4, 4]}, 4)

    split = quantize(model, feeds)
    joined = quantize(model, feeds, SplitOutputConcat=False)

    assert producers(split)["y"].op_type == "Concat"
    assert producers(joined)["y"].op_type == "DequantizeLinear"
    from qmodels import run

    expected = run(model, feeds[0])[0][:, 4:]
    split_error = np.abs(run(split, feeds[0])[0][:, 4:] - expected).max()
    joined_error = np.abs(run(joined, feeds[0])[0][:, 4:] - expected).max()
    assert split_error < 0.01
    assert joined_error > 0.1
