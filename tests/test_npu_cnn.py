"""enable_npu_cnn end to end: defaults it switches on, DPU simulation, positions, QDQ removal."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from qrewrite import (
    Int8Spec,
    ModelQuantizer,
    QConfig,
    QLayerConfig,
    QuantGranularity,
    XInt8Spec,
)
from qrewrite.cli import main as cli_main
from qrewrite.config.spec import npu_cnn_layer_config
from qrewrite.errors import ConfigError
from tests.qmodels import (
    consumers,
    initializer,
    make_model,
    min_cosine,
    nodes_of,
    producers,
    run,
    samples,
    tensor,
)


def _weights(seed: int = 7):
    rng = np.random.default_rng(seed)

    def draw(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.normal(size=shape) * scale).astype(np.float32)

    return draw


def npu_cnn_model() -> onnx.ModelProto:
    """A small CNN with one of each op the NPU defaults and DPU simulation rewrite."""
    _w = _weights()
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["n1"]),
        helper.make_node("LeakyRelu", ["n1"], ["a1"], alpha=0.1),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["s2"]),
        helper.make_node("Mul", ["c2", "s2"], ["a2"]),
        helper.make_node("Conv", ["a2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c3", "zero"], ["a3"]),
        helper.make_node("AveragePool", ["a3"], ["p3"], kernel_shape=[3, 3]),
        helper.make_node("Split", ["p3", "halves"], ["h1", "h2"], axis=1),
        helper.make_node("Concat", ["h2", "h1"], ["cat"], axis=1),
        helper.make_node("ReduceMean", ["cat", "spatial"], ["gap"], keepdims=1),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w4", "b4"], ["y"], transB=1),
    ]
    inits = [
        tensor("w1", _w(8, 3, 3, 3)),
        tensor("b1", _w(8, scale=0.1)),
        tensor("g", (1 + _w(8, scale=0.1)).astype(np.float32)),
        tensor("beta", _w(8, scale=0.1)),
        tensor("mean", _w(8, scale=0.1)),
        tensor("var", (0.5 + np.abs(_w(8))).astype(np.float32)),
        tensor("w2", _w(8, 8, 3, 3, scale=0.2)),
        tensor("b2", _w(8, scale=0.1)),
        tensor("w3", _w(8, 8, 3, 3, scale=0.2)),
        tensor("b3", _w(8, scale=0.1)),
        tensor("zero", np.array(0.0, dtype=np.float32)),
        tensor("halves", np.array([4, 4], dtype=np.int64)),
        tensor("spatial", np.array([2, 3], dtype=np.int64)),
        tensor("w4", _w(5, 8)),
        tensor("b4", _w(5, scale=0.1)),
    ]
    return make_model(nodes, [("x", [1, 3, 16, 16])], ["y"], inits, opset=18)


FEEDS = samples({"x": [1, 3, 16, 16]}, 16)


def quantize_npu(model: onnx.ModelProto, **options: object) -> onnx.ModelProto:
    config = QConfig(**{"enable_npu_cnn": True, "PrintSummary": False, **options})
    return ModelQuantizer(config).quantize_model(model, None, FEEDS)


@pytest.fixture(scope="module")
def npu_model() -> onnx.ModelProto:
    return quantize_npu(npu_cnn_model())


def _is_power_of_two(values: np.ndarray) -> bool:
    exponents = np.log2(values.astype(np.float64))
    return bool(np.all(exponents == np.round(exponents)))


def test_config_defaults_follow_enable_npu_cnn() -> None:
    config = QConfig(enable_npu_cnn=True)
    assert config.global_config == npu_cnn_layer_config()
    assert config.global_config.weight == XInt8Spec()
    assert config.options.ConvertBNToConv
    assert config.options.ConvertSplitToSlice
    assert not config.options.Int32Bias
    assert not config.options.PerChannelWeightsByDefault

    explicit = QConfig(enable_npu_cnn=True, ConvertSplitToSlice=False, Int32Bias=True)
    assert not explicit.options.ConvertSplitToSlice
    assert explicit.options.Int32Bias
    assert not QConfig().options.ConvertSplitToSlice


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (Int8Spec(), "power-of-two scales"),
        (XInt8Spec(quant_granularity=QuantGranularity.Channel), "per-tensor"),
    ],
)
def test_npu_needs_power_of_two_per_tensor_specs(spec, message) -> None:
    with pytest.raises(ConfigError, match=message):
        QConfig(QLayerConfig(activation=XInt8Spec(), weight=spec), enable_npu_cnn=True)


def test_quantized_model_runs_close_to_float(npu_model) -> None:
    assert min_cosine(npu_cnn_model(), npu_model, FEEDS[:4]) > 0.95


def test_scales_power_of_two_per_tensor(npu_model) -> None:
    dequantize = nodes_of(npu_model, "DequantizeLinear")
    assert dequantize
    for node in dequantize:
        scale = initializer(npu_model, node.input[1])
        assert scale.size == 1, node.name
        assert _is_power_of_two(scale), (node.name, scale)


def test_bias_is_stored_in_the_weight_type(npu_model) -> None:
    bias_types = set()
    for conv in nodes_of(npu_model, "Conv") + nodes_of(npu_model, "Gemm"):
        dq = producers(npu_model)[conv.input[2]]
        assert dq.op_type == "DequantizeLinear"
        bias_types.add(initializer(npu_model, dq.input[0]).dtype)
    assert bias_types == {np.dtype(np.int8)}


def test_npu_rule_defaults_rewrote_the_graph(npu_model) -> None:
    op_types = {node.op_type for node in npu_model.graph.node}
    assert not op_types & {"BatchNormalization", "Split", "ReduceMean", "Sigmoid", "Clip"}
    assert "Relu" in op_types
    assert "Slice" in op_types


def test_dpu_simulation_replaced_activations(npu_model) -> None:
    (leaky,) = nodes_of(npu_model, "LeakyRelu")
    alpha = next(a.f for a in leaky.attribute if a.name == "alpha")
    assert alpha == pytest.approx(26 / 256)
    assert nodes_of(npu_model, "HardSigmoid")


def test_simulate_dpu_off_keeps_float_activations() -> None:
    model = quantize_npu(npu_cnn_model(), SimulateDPU=False)
    (leaky,) = nodes_of(model, "LeakyRelu")
    alpha = next(a.f for a in leaky.attribute if a.name == "alpha")
    assert alpha == pytest.approx(0.1)
    assert nodes_of(model, "Sigmoid")


def test_no_qdq_between_conv_and_its_activation(npu_model) -> None:
    made_by = producers(npu_model)
    for activation in nodes_of(npu_model, "LeakyRelu") + nodes_of(npu_model, "Relu"):
        producer = made_by[activation.input[0]]
        assert producer.op_type == "Conv", (activation.name, producer.op_type)
        assert [node.op_type for node in consumers(npu_model, activation.output[0])] == [
            "QuantizeLinear"
        ]


def test_cli_target_npu_cnn(tmp_path) -> None:
    source = tmp_path / "model.onnx"
    onnx.save(npu_cnn_model(), source)
    output = tmp_path / "model.q.onnx"
    code = cli_main(["quantize", str(source), str(output), "--target", "npu_cnn", "--random-data"])
    assert code == 0
    quantized = onnx.load(output)
    assert run(quantized, FEEDS[0])[0].shape == (1, 5)
    scales = [initializer(quantized, n.input[1]) for n in nodes_of(quantized, "DequantizeLinear")]
    assert all(_is_power_of_two(scale) for scale in scales)


def _mul_add_sigmoid_model() -> onnx.ModelProto:
    _w = _weights(3)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["s"]),
        helper.make_node("Mul", ["s", "x"], ["m"]),
        helper.make_node("Add", ["m", "x"], ["y"]),
    ]
    inits = [tensor("w", _w(3, 3, 3, 3)), tensor("b", _w(3, scale=0.1))]
    return make_model(nodes, [("x", [1, 3, 16, 16])], ["y"], inits, opset=18)


def _feeds_straight_into(model: onnx.ModelProto, producer_type: str, consumer_type: str) -> bool:
    made_by = producers(model)
    (consumer,) = nodes_of(model, consumer_type)
    return any(made_by.get(name, consumer).op_type == producer_type for name in consumer.input)


@pytest.mark.parametrize(
    ("options", "pair"),
    [
        ({"RemoveQDQMulAdd": True}, ("Mul", "Add")),
        ({"RemoveQDQBetweenOps": [["Conv", "Sigmoid"]]}, ("Conv", "Sigmoid")),
    ],
)
def test_qdq_removal_options_without_npu(options, pair) -> None:
    model = _mul_add_sigmoid_model()
    config = QConfig(PrintSummary=False)
    plain = ModelQuantizer(config).quantize_model(model, None, FEEDS)
    assert not _feeds_straight_into(plain, *pair)

    removed = ModelQuantizer(QConfig(PrintSummary=False, **options)).quantize_model(
        model, None, FEEDS
    )
    assert _feeds_straight_into(removed, *pair)
    assert min_cosine(model, removed, FEEDS[:2]) > 0.99


def _position(model: onnx.ModelProto, scale_name: str) -> int:
    return round(-np.log2(float(initializer(model, scale_name))))


def _conv_shift_cuts(model: onnx.ModelProto) -> list[int]:
    """weight + input - output position of every Conv, read from the written Q/DQ nodes."""
    made_by = producers(model)
    cuts = []
    for conv in nodes_of(model, "Conv"):
        source, weight = made_by[conv.input[0]], made_by[conv.input[1]]
        reader = consumers(model, conv.output[0])[0]
        if reader.op_type != "QuantizeLinear":
            reader = consumers(model, reader.output[0])[0]
        assert reader.op_type == "QuantizeLinear", conv.name
        cuts.append(
            _position(model, weight.input[1])
            + _position(model, source.input[1])
            - _position(model, reader.input[1])
        )
    return cuts


def test_tiny_weights_get_their_shift_cut_fixed(capsys) -> None:
    model = npu_cnn_model()
    for init in model.graph.initializer:
        # Tiny weights and a bias of order 1 push weight + input - output above 16.
        if init.name == "w2":
            init.CopyFrom(tensor("w2", _weights(5)(8, 8, 3, 3, scale=1e-4)))
        if init.name == "b2":
            init.CopyFrom(tensor("b2", _weights(6)(8, scale=1.0)))
    unchecked = quantize_npu(model, NPULimitationCheck=False, PrintSummary=True)
    assert max(_conv_shift_cuts(unchecked)) > 16
    printed = capsys.readouterr().out
    assert "NPU position checks are off (NPULimitationCheck=False)" in printed
    assert "0 limit(s) broken" not in printed

    checked = quantize_npu(model)
    assert all(0 <= cut <= 16 for cut in _conv_shift_cuts(checked))
    assert run(checked, FEEDS[0])[0].shape == (1, 5)


def test_summary_reports_the_npu_steps(capsys) -> None:
    config = QConfig(enable_npu_cnn=True)
    ModelQuantizer(config).quantize_model(npu_cnn_model(), None, FEEDS)
    printed = capsys.readouterr().out
    assert "NPU position checks:" in printed
    assert "RemoveQDQConvLeakyRelu: removed 1" in printed
    assert "ConvertSigmoidToHardSigmoid 1" in printed
    assert "ConvertLeakyReluToDPUVersion 1" in printed


def test_summary_unapplied_dpu_rule_reason(capsys) -> None:
    model = npu_cnn_model()
    sigmoid = next(node for node in model.graph.node if node.op_type == "Sigmoid")
    sigmoid.op_type = "HardSigmoid"
    sigmoid.attribute.extend([helper.make_attribute("alpha", 0.2)])

    ModelQuantizer(QConfig(enable_npu_cnn=True)).quantize_model(model, None, FEEDS)

    printed = capsys.readouterr().out
    assert "ConvertHardSigmoidToDPUVersion did not apply: " in printed
    assert "not 1/6" in printed


def test_summary_lists_int8_bias(capsys) -> None:
    ModelQuantizer(QConfig(enable_npu_cnn=True)).quantize_model(npu_cnn_model(), None, FEEDS)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["bias", "Int8", "4"] in rows


@pytest.mark.parametrize(
    "options",
    [{"ConvertSoftmaxToDPUVersion": True}, {"AlignTranspose": True}, {"MaxLoopNum": 9}],
)
def test_npu_only_option_without_npu_is_an_error(options) -> None:
    (name,) = options
    with pytest.raises(ConfigError, match=f"{name}=.* only acts with enable_npu_cnn=True"):
        QConfig(**options)


def test_options_that_act_without_npu_are_accepted() -> None:
    config = QConfig(RemoveQDQMulAdd=True, SimulateDPU=False, RemoveQDQConvGelu=True)
    assert config.options.RemoveQDQMulAdd


def test_cli_npu_type_flag_power_of_two(tmp_path) -> None:
    source = tmp_path / "model.onnx"
    onnx.save(npu_cnn_model(), source)
    output = tmp_path / "model.q.onnx"
    arguments = ["quantize", str(source), str(output), "--target", "npu_cnn", "--random-data"]

    assert cli_main([*arguments, "--activation-type", "Int16"]) == 0

    quantized = onnx.load(output)
    dequantize = nodes_of(quantized, "DequantizeLinear")
    assert all(_is_power_of_two(initializer(quantized, n.input[1])) for n in dequantize)
    zero_points = [initializer(quantized, n.input[2]) for n in dequantize]
    assert np.dtype(np.int16) in {zero_point.dtype for zero_point in zero_points}


def test_cli_per_channel_with_npu_names_the_flag(tmp_path, capsys) -> None:
    source = tmp_path / "model.onnx"
    onnx.save(npu_cnn_model(), source)
    arguments = ["quantize", str(source), str(tmp_path / "out.onnx"), "--target", "npu_cnn"]
    assert cli_main([*arguments, "--random-data", "--per-channel"]) == 2
    assert "--per-tensor" in capsys.readouterr().err
