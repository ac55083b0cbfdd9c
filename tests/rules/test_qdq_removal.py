"""Property and negative tests of the Q/DQ removal rules and of their option selection.

The models are QDQ models in the form qrewrite writes: a graph input with an int8
QuantizeLinear/DequantizeLinear pair, weights and biases stored as integers behind a
DequantizeLinear, and a pair after each producer and after each consumer. Producer
outputs stay inside the removed pair's range, so the only change is the pair's
rounding. Each consumer output may then move by L x scale / 2 (L: the consumer's
Lipschitz constant in that input), and each dequantized model output by one more step
of the consumer's own QuantizeLinear.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from qrewrite.rules.qdq_removal import (
    QDQ_REMOVAL_RULES,
    REMOVE_QDQ_CONV_CLIP,
    REMOVE_QDQ_CONV_GELU,
    REMOVE_QDQ_CONV_LEAKY_RELU,
    REMOVE_QDQ_CONV_PRELU,
    REMOVE_QDQ_CONV_RELU,
    REMOVE_QDQ_INSTANCE_NORM,
    REMOVE_QDQ_MUL_ADD,
    qdq_removal_rules,
    remove_qdq_between_ops_rule,
)
from rule_harness import assert_rewrite, build_model, constant, op_types, run_model

from qrewrite import ModelQuantizer, QConfig
from qrewrite.config.registry import OPTIONS
from qrewrite.demo.run import (
    CALIBRATION_BATCH,
    int8_per_channel_config,
    load_demo_data,
    load_demo_model,
    to_model_input,
    top1_accuracy,
)
from qrewrite.rewrite import Contract, Rule, RuleSet, apply_rules

# Maximum slope of Gelu, x * Phi(x), reached at x = sqrt(2). The tanh form peaks near it.
GELU_LIPSCHITZ = 1.13
# Float32 rounding of the Q/DQ arithmetic and of the ops, relative to the values.
FLOAT_SLACK = 1e-5

INPUT_SCALE = 1.0 / 127.0


class _QdqModel:
    """Nodes and initializers of a QDQ test model, with helpers in qrewrite's Q/DQ form."""

    def __init__(self, draw, rng: np.random.Generator) -> None:
        self.draw = draw
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: dict[str, list[int]] = {}
        self.count = 0

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def node(self, op_type: str, inputs: list[str], **attributes) -> str:
        output = self.fresh(op_type.lower())
        self.nodes.append(
            helper.make_node(op_type, inputs, [output], name=f"{output}_node", **attributes)
        )
        return output

    def qdq(self, source: str, scale: float, zero_point: int, dtype) -> str:
        """Append the QuantizeLinear/DequantizeLinear pair of one activation tensor."""
        scale_name, zero_name = f"{source}_scale", f"{source}_zero_point"
        self.initializers.append(constant(scale_name, scale))
        self.initializers.append(constant(zero_name, zero_point, dtype))
        quantized = self.node("QuantizeLinear", [source, scale_name, zero_name])
        return self.node("DequantizeLinear", [quantized, scale_name, zero_name])

    def random_qdq(self, source: str, bound: float) -> tuple[str, float]:
        """Append a pair whose range contains [-bound, bound] and return its output and scale."""
        # (qmax - zero_point) and (zero_point - qmin) are at least 122 for both types.
        if self.draw(st.booleans()):
            dtype, zero_point = np.int8, self.draw(st.integers(-5, 5))
        else:
            dtype, zero_point = np.uint8, 128 + self.draw(st.integers(-5, 5))
        steps = self.draw(st.integers(10, 120))
        scale = float(np.float32(bound / steps))
        return self.qdq(source, scale, zero_point, dtype), scale

    def graph_input(self, shape: list[int]) -> str:
        """Add a graph input with its int8 pair, whose dequantized values are within [-1, 1]."""
        name = self.fresh("x")
        self.inputs[name] = shape
        return self.qdq(name, INPUT_SCALE, 0, np.int8)

    def stored(self, base: str, values: np.ndarray, scale: np.ndarray, dtype, axis=None):
        """Store `values` as integers behind a DequantizeLinear and return output and values."""
        integers = np.round(values / np.reshape(scale, (-1,) + (1,) * (values.ndim - 1)))
        info = np.iinfo(dtype)
        integers = np.clip(integers, info.min, info.max).astype(dtype)
        name = self.fresh(base)
        self.initializers.append(constant(f"{name}_quantized", integers, dtype))
        self.initializers.append(constant(f"{name}_scale", scale))
        self.initializers.append(constant(f"{name}_zero_point", np.zeros_like(scale), dtype))
        attributes = {} if axis is None else {"axis": axis}
        output = self.node(
            "DequantizeLinear",
            [f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"],
            **attributes,
        )
        shaped = np.reshape(scale, (-1,) + (1,) * (values.ndim - 1))
        return output, integers.astype(np.float64) * shaped


def _weights(model: _QdqModel, shape: tuple[int, ...]):
    """Per-channel int8 weights and an int32 bias, as qrewrite stores them."""
    rng = model.rng
    values = rng.uniform(-1.0, 1.0, size=shape)
    per_channel = np.abs(values).reshape(shape[0], -1).max(axis=1) / 127.0
    weight_scale = np.maximum(per_channel, 1e-3).astype(np.float32)
    weight, weight_values = model.stored("w", values, weight_scale, np.int8, axis=0)
    bias_scale = (weight_scale * np.float32(INPUT_SCALE)).astype(np.float32)
    bias_values = rng.uniform(-0.5, 0.5, size=shape[0])
    bias, bias_dequantized = model.stored("b", bias_values, bias_scale, np.int32, axis=0)
    return weight, bias, weight_values, bias_dequantized


def _producer(model: _QdqModel, producer: str, shape: list[int]) -> tuple[str, float, int]:
    """Append a producer and return its output, a bound on |output| and its channel count."""
    if producer == "Conv":
        channels = model.draw(st.integers(1, 3))
        kernel = model.draw(st.sampled_from([1, 3]))
        x = model.graph_input([1, shape[1], *shape[2:]])
        weight, bias, weights, biases = _weights(model, (channels, shape[1], kernel, kernel))
        output = model.node(
            "Conv", [x, weight, bias], pads=[kernel // 2] * 4, kernel_shape=[kernel, kernel]
        )
        per_channel = np.abs(weights).reshape(channels, -1).sum(axis=1) + np.abs(biases)
        return output, float(per_channel.max()), channels
    if producer == "Gemm":
        channels = model.draw(st.integers(1, 4))
        x = model.graph_input([shape[0], shape[1]])
        weight, bias, weights, biases = _weights(model, (channels, shape[1]))
        output = model.node("Gemm", [x, weight, bias], transB=1)
        per_channel = np.abs(weights).sum(axis=1) + np.abs(biases)
        return output, float(per_channel.max()), channels
    if producer in ("Add", "Mul"):
        left, right = model.graph_input(shape), model.graph_input(shape)
        output = model.node(producer, [left, right])
        return output, 2.0 if producer == "Add" else 1.0, shape[1]
    if producer == "InstanceNormalization":
        channels = shape[1]
        gamma = model.rng.uniform(-1.5, 1.5, size=channels).astype(np.float32)
        beta = model.rng.uniform(-0.5, 0.5, size=channels).astype(np.float32)
        gamma_name, beta_name = model.fresh("gamma"), model.fresh("beta")
        model.initializers += [constant(gamma_name, gamma), constant(beta_name, beta)]
        x = model.graph_input(shape)
        output = model.node("InstanceNormalization", [x, gamma_name, beta_name])
        # A normalized value is at most sqrt(n - 1) in size for n elements per channel.
        spatial = int(np.prod(shape[2:]))
        bound = float(np.abs(gamma).max() * math.sqrt(spatial) + np.abs(beta).max())
        return output, bound, channels
    raise AssertionError(f"no builder for producer {producer}")


def _consumer(
    model: _QdqModel, consumer: str, source: str, channels: int, rank: int, opset: int
) -> tuple[str, float, float]:
    """Append a consumer of `source` and return its output, its Lipschitz constant in
    `source`, and a bound on what its other operands add to the output."""
    draw = model.draw
    if consumer in ("Relu", "Sigmoid", "Tanh"):
        return model.node(consumer, [source]), 1.0, 0.0
    if consumer == "Clip":
        low = draw(st.floats(-2.0, 0.0))
        high = draw(st.floats(0.1, 3.0))
        if opset < 11:
            return model.node("Clip", [source], min=low, max=high), 1.0, 0.0
        low_name, high_name = model.fresh("clip_min"), model.fresh("clip_max")
        model.initializers += [constant(low_name, low), constant(high_name, high)]
        inputs = [source, low_name if draw(st.booleans()) else "", high_name]
        return model.node("Clip", inputs), 1.0, 0.0
    if consumer == "LeakyRelu":
        if draw(st.booleans()):
            return model.node("LeakyRelu", [source]), 1.0, 0.0
        alpha = draw(st.floats(-1.5, 1.5))
        return model.node("LeakyRelu", [source], alpha=alpha), max(1.0, abs(alpha)), 0.0
    if consumer == "PRelu":
        slope_shape = [channels] + [1] * (rank - 2) if rank > 2 else [channels]
        if draw(st.booleans()):
            slope_shape = [1]
        slope = model.rng.uniform(-1.5, 1.5, size=slope_shape).astype(np.float32)
        slope_name = model.fresh("slope")
        model.initializers.append(constant(slope_name, slope))
        lipschitz = max(1.0, float(np.abs(slope).max()))
        return model.node("PRelu", [source, slope_name]), lipschitz, 0.0
    if consumer == "Gelu":
        approximate = draw(st.sampled_from(["none", "tanh"]))
        return model.node("Gelu", [source], approximate=approximate), GELU_LIPSCHITZ, 0.0
    if consumer == "Add":
        # The other operand is a dequantized graph input in [-1, 1].
        other = model.graph_input([1, channels] if rank == 2 else [1, channels, 1, 1][:rank])
        inputs = [source, other] if draw(st.booleans()) else [other, source]
        return model.node("Add", inputs), 1.0, 1.0
    raise AssertionError(f"no builder for consumer {consumer}")


@st.composite
def chain_models(draw, pairs, opsets):
    """1 to 3 branches of producer -> pair -> consumer -> pair, each a graph output.

    Returns the model, the consumer output names, and per branch the bound of the
    consumer output change and the bound of the model output change.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    model = _QdqModel(draw, rng)
    opset = draw(st.sampled_from(opsets))
    outputs, consumer_outputs, consumer_bounds, output_bounds = [], [], [], []
    for _ in range(draw(st.integers(1, 3))):
        producer, consumer = draw(st.sampled_from(pairs))
        if producer == "Gemm":
            shape = [draw(st.integers(1, 3)), draw(st.integers(1, 4))]
        else:
            shape = [1, draw(st.integers(1, 3)), draw(st.integers(2, 4)), draw(st.integers(2, 4))]
        produced, producer_bound, channels = _producer(model, producer, shape)
        rounded, scale = model.random_qdq(produced, producer_bound)
        activation, lipschitz, other_bound = _consumer(
            model, consumer, rounded, channels, len(shape), opset
        )
        output_bound = lipschitz * producer_bound + other_bound + 1.0
        dequantized, output_scale = model.random_qdq(activation, output_bound)
        outputs.append(dequantized)
        consumer_outputs.append(activation)
        change = lipschitz * scale / 2
        consumer_bounds.append(change + FLOAT_SLACK * output_bound)
        output_bounds.append(change + output_scale + FLOAT_SLACK * output_bound)
    built = build_model(model.nodes, model.inputs, outputs, model.initializers, opset=opset)
    return built, consumer_outputs, consumer_bounds, output_bounds


def _feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        shape = [dim.dim_value for dim in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    return feeds


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """Return a copy of `model` that also returns the float tensors `names`."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    for name in names:
        exposed.graph.output.append(
            helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    return exposed


def _check_property(case, rules: RuleSet, name: str) -> None:
    model, consumer_outputs, consumer_bounds, output_bounds = case
    branches = len(consumer_outputs)
    feeds = _feeds(model, seed=len(model.graph.node))
    contract = Contract.bounded(atol=max(output_bounds))
    result = assert_rewrite(model, rules, {name: branches}, contract, feeds)

    before, after = op_types(model), op_types(result.model)
    assert before.count("QuantizeLinear") - after.count("QuantizeLinear") == branches
    assert before.count("DequantizeLinear") - after.count("DequantizeLinear") == branches

    # The consumer outputs keep their names, so both models can return them.
    expected = run_model(_with_outputs(model, consumer_outputs), feeds)[branches:]
    actual = run_model(_with_outputs(result.model, consumer_outputs), feeds)[branches:]
    for reference, value, bound in zip(expected, actual, consumer_bounds, strict=True):
        assert np.abs(value - reference).max() <= bound


CONV_CASES = [
    (REMOVE_QDQ_CONV_CLIP, "Clip", [13, 19, 21]),
    (REMOVE_QDQ_CONV_RELU, "Relu", [13, 19, 21]),
    (REMOVE_QDQ_CONV_LEAKY_RELU, "LeakyRelu", [13, 19, 21]),
    (REMOVE_QDQ_CONV_PRELU, "PRelu", [13, 19, 21]),
    (REMOVE_QDQ_CONV_GELU, "Gelu", [20, 21]),
]


@pytest.mark.parametrize(
    ("rule", "consumer", "opsets"), CONV_CASES, ids=[case[0].name for case in CONV_CASES]
)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_conv_activation_property(rule: Rule, consumer: str, opsets: list[int], data):
    pairs = [(producer, consumer) for producer in ("Conv", "Add", "Gemm")]
    case = data.draw(chain_models(pairs, opsets))
    _check_property(case, RuleSet.of(rule), rule.name)


@settings(max_examples=30, deadline=None)
@given(chain_models([("Mul", "Add")], [13, 19, 21]))
def test_mul_add_property(case):
    _check_property(case, RuleSet.of(REMOVE_QDQ_MUL_ADD), REMOVE_QDQ_MUL_ADD.name)


@settings(max_examples=30, deadline=None)
@given(
    chain_models(
        [("InstanceNormalization", activation) for activation in ("Relu", "LeakyRelu", "PRelu")],
        [13, 19, 21],
    )
)
def test_instance_norm_property(case):
    rule = REMOVE_QDQ_INSTANCE_NORM
    _check_property(case, RuleSet.of(rule), rule.name)


BETWEEN_PAIRS = [("Conv", "Sigmoid"), ("Gemm", "Tanh"), ("Mul", "Add"), ("Add", "Relu")]


@settings(max_examples=30, deadline=None)
@given(chain_models(BETWEEN_PAIRS, [13, 21]))
def test_between_ops_property(case):
    rule = remove_qdq_between_ops_rule(BETWEEN_PAIRS)
    _check_property(case, RuleSet.of(rule), rule.name)


# A fixed Conv -> pair -> Relu -> pair model for the negative cases.
def _conv_relu_nodes(activation: str = "Relu") -> list[onnx.NodeProto]:
    return [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero_point"], ["xq"], name="xq"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero_point"], ["xd"], name="xd"),
        helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zero_point"], ["w"], name="w"),
        helper.make_node("Conv", ["xd", "w"], ["c"], name="conv"),
        helper.make_node("QuantizeLinear", ["c", "c_scale", "c_zero_point"], ["cq"], name="cq"),
        helper.make_node("DequantizeLinear", ["cq", "c_scale", "c_zero_point"], ["cd"], name="cd"),
        helper.make_node(activation, ["cd"], ["a"], name="act"),
        helper.make_node("QuantizeLinear", ["a", "a_scale", "a_zero_point"], ["aq"], name="aq"),
        helper.make_node("DequantizeLinear", ["aq", "a_scale", "a_zero_point"], ["y"], name="ad"),
    ]


def _conv_relu_initializers(c_scale: float = 0.05) -> list[onnx.TensorProto]:
    weights = np.arange(-9, 9, dtype=np.int8).reshape(2, 1, 3, 3)
    return [
        constant("x_scale", INPUT_SCALE),
        constant("x_zero_point", 0, np.int8),
        constant("wq", weights, np.int8),
        constant("w_scale", 0.01),
        constant("w_zero_point", 0, np.int8),
        constant("c_scale", c_scale),
        constant("c_zero_point", 0, np.int8),
        constant("a_scale", 0.05),
        constant("a_zero_point", 0, np.int8),
    ]


def _conv_relu_model(
    extra_nodes=(), outputs=("y",), initializers=None, activation: str = "Relu"
) -> onnx.ModelProto:
    nodes = _conv_relu_nodes(activation) + list(extra_nodes)
    initializers = _conv_relu_initializers() if initializers is None else initializers
    return build_model(nodes, {"x": [1, 1, 4, 4]}, list(outputs), initializers, opset=13)


def _reasons(model: onnx.ModelProto, rule: Rule) -> str:
    result = apply_rules(model, RuleSet.of(rule), explain=True)
    assert result.matches(rule.name) == 0
    return " ".join(result.rules[rule.name].reasons)


def test_conv_relu_fixed_model_matches():
    result = apply_rules(_conv_relu_model(), RuleSet.of(REMOVE_QDQ_CONV_RELU))
    assert result.matches(REMOVE_QDQ_CONV_RELU.name) == 1
    relu = next(node for node in result.model.graph.node if node.op_type == "Relu")
    assert list(relu.input) == ["c"]
    assert relu.name == "act"


def test_producer_second_consumer_rejected():
    extra = [helper.make_node("Sigmoid", ["c"], ["s"], name="side")]
    model = _conv_relu_model(extra, outputs=("y", "s"))
    assert "consumers besides the QuantizeLinear" in _reasons(model, REMOVE_QDQ_CONV_RELU)


def test_producer_graph_output_rejected():
    model = _conv_relu_model(outputs=("y", "c"))
    assert "is a graph output" in _reasons(model, REMOVE_QDQ_CONV_RELU)


def test_dequantize_two_consumers_rejected():
    extra = [helper.make_node("Sigmoid", ["cd"], ["s"], name="side")]
    model = _conv_relu_model(extra, outputs=("y", "s"))
    assert "feeds nodes other than" in _reasons(model, REMOVE_QDQ_CONV_RELU)


def test_quantize_two_consumers_rejected():
    extra = [
        helper.make_node("DequantizeLinear", ["cq", "c_scale", "c_zero_point"], ["cd2"]),
        helper.make_node("Sigmoid", ["cd2"], ["s"], name="side"),
    ]
    model = _conv_relu_model(extra, outputs=("y", "s"))
    reasons = _reasons(model, REMOVE_QDQ_CONV_RELU)
    assert "QuantizeLinear 'cq'" in reasons


def test_unquantized_activation_rejected():
    nodes = _conv_relu_nodes()[:-2]
    model = build_model(nodes, {"x": [1, 1, 4, 4]}, ["a"], _conv_relu_initializers(), opset=13)
    assert "is a graph output, not quantized" in _reasons(model, REMOVE_QDQ_CONV_RELU)


def test_activation_float_reader_rejected():
    extra = [helper.make_node("Sigmoid", ["a"], ["s"], name="side")]
    model = _conv_relu_model(extra, outputs=("y", "s"))
    assert "also feeds Sigmoid" in _reasons(model, REMOVE_QDQ_CONV_RELU)


def test_different_pair_scales_rejected():
    nodes = _conv_relu_nodes()
    nodes[5] = helper.make_node(
        "DequantizeLinear", ["cq", "a_scale", "c_zero_point"], ["cd"], name="cd"
    )
    model = build_model(
        nodes, {"x": [1, 1, 4, 4]}, ["y"], _conv_relu_initializers(c_scale=0.04), opset=13
    )
    assert "scales are not the same constant" in _reasons(model, REMOVE_QDQ_CONV_RELU)


def test_equal_scale_constants_accepted():
    nodes = _conv_relu_nodes()
    nodes[5] = helper.make_node(
        "DequantizeLinear", ["cq", "a_scale", "c_zero_point"], ["cd"], name="cd"
    )
    model = build_model(nodes, {"x": [1, 1, 4, 4]}, ["y"], _conv_relu_initializers(), opset=13)
    result = apply_rules(model, RuleSet.of(REMOVE_QDQ_CONV_RELU))
    assert result.matches(REMOVE_QDQ_CONV_RELU.name) == 1


def test_unlisted_producer_rejected():
    nodes = _conv_relu_nodes()
    nodes[3] = helper.make_node("ConvTranspose", ["xd", "w"], ["c"], name="conv")
    initializers = _conv_relu_initializers()
    initializers[2] = constant("wq", np.ones((1, 2, 3, 3)), np.int8)
    model = build_model(nodes, {"x": [1, 1, 4, 4]}, ["y"], initializers, opset=13)
    assert "of an output of Add, Conv or Gemm" in _reasons(model, REMOVE_QDQ_CONV_RELU)


def test_between_ops_unlisted_pair_rejected():
    model = _conv_relu_model()
    rule = remove_qdq_between_ops_rule([("Mul", "Add"), ("Conv", "Sigmoid")])
    assert apply_rules(model, RuleSet.of(rule)).matches(rule.name) == 0
    sigmoid = _conv_relu_model(activation="Sigmoid")
    assert apply_rules(sigmoid, RuleSet.of(rule)).matches(rule.name) == 1


def test_between_ops_empty_matches_nothing():
    rule = remove_qdq_between_ops_rule([])
    assert apply_rules(_conv_relu_model(), RuleSet.of(rule)).matches(rule.name) == 0


@pytest.mark.parametrize("pair", [("Conv",), ("Conv", ""), "ConvRelu", ("Conv", 3)])
def test_between_ops_invalid_pair(pair):
    with pytest.raises(ValueError, match="invalid op type pair"):
        remove_qdq_between_ops_rule([pair])


def test_clipping_exceeds_half_step():
    # The pair's range is [-128, 127] x 0.001, far below the Conv outputs, so the pair
    # clipped them: the contract's condition fails and the change exceeds scale / 2.
    model = _conv_relu_model(initializers=_conv_relu_initializers(c_scale=0.001))
    result = apply_rules(model, RuleSet.of(REMOVE_QDQ_CONV_RELU))
    feeds = _feeds(model, seed=3)
    exposed = run_model(_with_outputs(model, ["a"]), feeds)[1]
    rewritten = run_model(_with_outputs(result.model, ["a"]), feeds)[1]
    assert np.abs(exposed - rewritten).max() > 0.001 / 2


def _options(**values) -> SimpleNamespace:
    defaults = {name: OPTIONS[name].default for name in _OPTION_NAMES}
    return SimpleNamespace(**{**defaults, **values})


_OPTION_NAMES = [
    "enable_npu_cnn",
    "RemoveQDQConvClip",
    "RemoveQDQConvRelu",
    "RemoveQDQConvLeakyRelu",
    "RemoveQDQConvPRelu",
    "RemoveQDQConvGelu",
    "RemoveQDQMulAdd",
    "RemoveQDQBetweenOps",
    "RemoveQDQInstanceNorm",
]


def test_rules_name_registry_options():
    for rule in QDQ_REMOVAL_RULES:
        assert rule.option in OPTIONS, rule.name
        assert rule.option == rule.name


def test_selection_defaults_without_npu():
    assert qdq_removal_rules(_options()).names == ()


def test_selection_defaults_with_npu():
    names = qdq_removal_rules(_options(enable_npu_cnn=True)).names
    assert names == (
        "RemoveQDQConvClip",
        "RemoveQDQConvRelu",
        "RemoveQDQConvLeakyRelu",
        "RemoveQDQConvPRelu",
    )


def test_selection_default_conv_rules_need_npu():
    options = _options(RemoveQDQConvRelu=True, RemoveQDQConvGelu=True, RemoveQDQMulAdd=True)
    assert qdq_removal_rules(options).names == ("RemoveQDQConvGelu", "RemoveQDQMulAdd")


def test_selection_every_rule():
    options = _options(
        enable_npu_cnn=True,
        RemoveQDQConvGelu=True,
        RemoveQDQMulAdd=True,
        RemoveQDQBetweenOps=(("Conv", "Sigmoid"),),
        RemoveQDQInstanceNorm=True,
    )
    selected = qdq_removal_rules(options)
    assert selected.names == tuple(rule.name for rule in QDQ_REMOVAL_RULES)
    sigmoid = _conv_relu_model(activation="Sigmoid")
    assert apply_rules(sigmoid, selected).matches("RemoveQDQBetweenOps") == 1


def test_selection_switches_off_one_rule():
    options = _options(enable_npu_cnn=True, RemoveQDQConvRelu=False)
    names = qdq_removal_rules(options).names
    assert "RemoveQDQConvRelu" not in names
    assert "RemoveQDQConvClip" in names


def test_selection_empty_pairs_skipped():
    assert qdq_removal_rules(_options(RemoveQDQBetweenOps=())).names == ()


def test_digits_demo_quantized_without_fold_relu():
    # With FoldRelu off, qrewrite writes a pair between each Conv or Add and its Relu.
    data = load_demo_data()
    inputs = to_model_input(data["calib_images"])
    batches = [
        {"image": inputs[start : start + CALIBRATION_BATCH]}
        for start in range(0, len(inputs), CALIBRATION_BATCH)
    ]
    config = QConfig(global_config=int8_per_channel_config().global_config, FoldRelu=False)
    float_model = onnx.load_from_string(load_demo_model())
    quantized = ModelQuantizer(config).quantize_model(float_model, None, batches)

    result = apply_rules(quantized, RuleSet.of(*QDQ_REMOVAL_RULES))
    assert result.matches(REMOVE_QDQ_CONV_RELU.name) == 3
    assert result.total_matches == 3
    onnx.checker.check_model(result.model, full_check=True)

    images, labels = data["eval_images"], data["eval_labels"]
    before = top1_accuracy(quantized.SerializeToString(), images, labels)
    after = top1_accuracy(result.model.SerializeToString(), images, labels)
    assert abs(after - before) <= 0.01
