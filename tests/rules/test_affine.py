"""Property and negative tests of FoldConvAffine."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from qrewrite.rules.affine import FOLD_CONV_AFFINE
from qrewrite.rules.batchnorm import FOLD_BATCH_NORM
from rule_harness import assert_rewrite, build_model, constant, constant_node, op_types

from qrewrite.rewrite import RuleSet, apply_rules

FOLD = RuleSet.of(FOLD_CONV_AFFINE)
NAME = FOLD_CONV_AFFINE.name

# Constant shapes with one value per output channel, by producer. "C" stands for
# the channel count. The Conv output is [1, C, 5, 5], the Gemm output [3, C] and the
# MatMul output [2, 3, C].
_CHANNEL_SHAPES = {
    "Conv": [(), (1,), ("C", 1, 1), (1, "C", 1, 1), (1, 1, 1, 1)],
    "ConvTranspose": [(), (1,), ("C", 1, 1), (1, "C", 1, 1)],
    "Gemm": [(), (1,), ("C",), (1, "C")],
    "MatMul": [(), (1,), ("C",), (1, "C"), (1, 1, "C")],
}


def _shape(spec: tuple, channels: int) -> tuple[int, ...]:
    return tuple(channels if size == "C" else size for size in spec)


def _affine_constant(rng, op_type: str, shape: tuple[int, ...]) -> np.ndarray:
    if op_type == "Div":
        # Divisors away from 0, with both signs.
        magnitude = rng.uniform(0.5, 2.0, shape)
        return magnitude * rng.choice([-1.0, 1.0], shape)
    return rng.normal(size=shape)


def _producer(draw, rng, op_type: str, source: str, index: int, channels_in: int):
    """Return (node, initializers, output channels) of one producer with constant weight."""
    weight, bias = f"w{index}", f"b{index}"
    inputs = [source, weight]
    initializers = []
    attributes: dict = {}
    if op_type in ("Conv", "ConvTranspose"):
        group = draw(st.sampled_from([g for g in (1, 2) if channels_in % g == 0]))
        per_group = draw(st.sampled_from([1, 2, 3]))
        channels = group * per_group
        kernel = draw(st.sampled_from([1, 3]))
        if op_type == "Conv":
            weight_shape = (channels, channels_in // group, kernel, kernel)
        else:
            weight_shape = (channels_in, per_group, kernel, kernel)
        attributes = {"group": group, "pads": [kernel // 2] * 4}
    elif op_type == "Gemm":
        channels = draw(st.sampled_from([1, 3, 4]))
        trans_b = draw(st.integers(0, 1))
        weight_shape = (channels, channels_in) if trans_b else (channels_in, channels)
        attributes = {
            "transB": trans_b,
            "alpha": draw(st.sampled_from([1.0, 0.5])),
            "beta": draw(st.sampled_from([1.0, 2.0])),
        }
    else:
        channels = draw(st.sampled_from([1, 3, 4]))
        weight_shape = (channels_in, channels)
    initializers.append(constant(weight, rng.normal(size=weight_shape)))
    if op_type != "MatMul" and draw(st.booleans()):
        inputs.append(bias)
        initializers.append(constant(bias, rng.normal(size=channels)))
    node = helper.make_node(op_type, inputs, [f"p{index}"], **attributes)
    return node, initializers, channels


@st.composite
def affine_models(draw):
    """One or two blocks of a producer followed by one or two constant Mul, Add, Sub or Div."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    producer_type = draw(st.sampled_from(sorted(_CHANNEL_SHAPES)))
    opset = draw(st.sampled_from([11, 13, 17, 21]))
    channels = 4
    input_shape = {
        "Conv": [1, channels, 5, 5],
        "ConvTranspose": [1, channels, 5, 5],
        "Gemm": [3, channels],
        "MatMul": [2, 3, channels],
    }[producer_type]
    affine_ops = ["Mul", "Div"] if producer_type == "MatMul" else ["Mul", "Add", "Sub", "Div"]
    nodes, initializers = [], []
    value, folds = "x", 0

    for index in range(draw(st.integers(1, 2))):
        node, weights, channels = _producer(draw, rng, producer_type, value, index, channels)
        nodes.append(node)
        initializers += weights
        value = f"p{index}"
        for step in range(draw(st.integers(1, 2))):
            op_type = draw(st.sampled_from(affine_ops))
            shape = _shape(draw(st.sampled_from(_CHANNEL_SHAPES[producer_type])), channels)
            name = f"c{index}_{step}"
            array = _affine_constant(rng, op_type, shape)
            if draw(st.booleans()):
                nodes.append(constant_node(name, array))
            else:
                initializers.append(constant(name, array))
            operands = [value, name]
            if op_type in ("Mul", "Add") and draw(st.booleans()):
                operands.reverse()
            output = f"a{index}_{step}"
            nodes.append(helper.make_node(op_type, operands, [output]))
            value = output
            folds += 1
        if draw(st.booleans()):
            nodes.append(helper.make_node("Relu", [value], [f"r{index}"]))
            value = f"r{index}"
    nodes.append(helper.make_node("Identity", [value], ["y"]))
    model = build_model(nodes, {"x": input_shape}, ["y"], initializers, opset=opset)
    return model, folds, producer_type


@settings(max_examples=40, deadline=None)
@given(affine_models())
def test_fold_conv_affine_property(case):
    model, folds, producer_type = case
    result = assert_rewrite(model, FOLD, {NAME: folds}, FOLD_CONV_AFFINE.contract)
    remaining = op_types(result.model)
    for op_type in ("Mul", "Add", "Sub", "Div"):
        assert op_type not in remaining
    assert remaining.count(producer_type) == op_types(model).count(producer_type)


def _conv_model(
    affine: str = "Mul",
    value=None,
    input_initializers=(),
    extra_nodes=(),
    extra_outputs=(),
    operands=("c", "k"),
):
    """Conv(x, w, b) -> `affine` with the constant k, as the output y."""
    rng = np.random.default_rng(0)
    value = rng.uniform(0.5, 1.5, (1, 2, 1, 1)) if value is None else value
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"]),
        helper.make_node(affine, list(operands), ["y"]),
        *extra_nodes,
    ]
    initializers = [
        constant("w", rng.normal(size=(2, 2, 1, 1))),
        constant("b", rng.normal(size=2)),
        constant("k", value),
    ]
    return build_model(
        nodes,
        {"x": [1, 2, 3, 3]},
        ["y", *extra_outputs],
        initializers,
        opset=13,
        input_initializers=input_initializers,
    )


def _reasons(model) -> str:
    result = apply_rules(model, FOLD, explain=True)
    assert result.matches(NAME) == 0
    return " ".join(result.rules[NAME].reasons)


def test_conv_mul_add_folds_to_conv():
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Mul", ["s", "c"], ["scaled"]),
        helper.make_node("Add", ["scaled", "t"], ["y"]),
    ]
    initializers = [
        constant("w", rng.normal(size=(3, 2, 3, 3))),
        constant("s", [0.9]),
        constant("t", rng.normal(size=(1, 3, 1, 1))),
    ]
    model = build_model(nodes, {"x": [1, 2, 6, 6]}, ["y"], initializers, opset=12)
    result = assert_rewrite(model, FOLD, {NAME: 2}, FOLD_CONV_AFFINE.contract)
    assert op_types(result.model) == ["Conv"]
    assert len(result.model.graph.node[0].input) == 3


def test_fold_skips_second_reader():
    relu = helper.make_node("Relu", ["c"], ["r"])
    model = _conv_model(extra_nodes=[relu], extra_outputs=["r"])
    assert apply_rules(model, FOLD).matches(NAME) == 0


def test_fold_skips_conv_graph_output():
    model = _conv_model(extra_outputs=["c"])
    assert apply_rules(model, FOLD).matches(NAME) == 0


def test_fold_skips_spatially_varying_constant():
    rng = np.random.default_rng(1)
    for value in (rng.normal(size=(1, 1, 3, 3)), rng.normal(size=(1, 2, 3, 1))):
        model = _conv_model(value=value)
        assert "does not broadcast along the output-channel axis" in _reasons(model)


def test_fold_skips_channel_vector_on_width_axis():
    # A [C] constant aligns with the last axis of a Conv output, the width, here 2 as well.
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Mul", ["c", "k"], ["y"]),
    ]
    initializers = [constant("w", rng.normal(size=(2, 2, 1, 1))), constant("k", [0.5, 2.0])]
    model = build_model(nodes, {"x": [1, 2, 3, 2]}, ["y"], initializers, opset=13)
    assert "does not broadcast" in _reasons(model)


def test_fold_skips_batch_varying_constant():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Add", ["c", "k"], ["y"]),
    ]
    initializers = [
        constant("w", np.ones((2, 2, 1, 1))),
        constant("k", [[[[1.0]], [[2.0]]], [[[3.0]], [[4.0]]]]),
    ]
    model = build_model(nodes, {"x": [2, 2, 3, 3]}, ["y"], initializers, opset=13)
    assert "does not broadcast" in _reasons(model)


def test_fold_skips_constant_of_higher_rank():
    model = _conv_model(value=np.full((1, 1, 2, 1, 1), 0.5))
    assert "does not broadcast" in _reasons(model)


def test_fold_skips_constant_graph_input():
    model = _conv_model(input_initializers=["k"])
    assert "is not a constant" in _reasons(model)


def test_fold_skips_weight_graph_input():
    model = _conv_model(input_initializers=["w"])
    assert "weight of Conv" in _reasons(model)


def test_fold_skips_bias_graph_input():
    model = _conv_model(input_initializers=["b"])
    assert "bias of Conv" in _reasons(model)


def test_fold_skips_div_by_zero():
    model = _conv_model(affine="Div", value=np.array([[[[2.0]], [[0.0]]]]))
    assert "divisor contains 0" in _reasons(model)


def test_fold_skips_constant_minus_conv():
    model = _conv_model(affine="Sub", operands=("k", "c"))
    assert apply_rules(model, FOLD).matches(NAME) == 0


def test_fold_skips_add_after_matmul():
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "k"], ["y"]),
    ]
    initializers = [constant("w", rng.normal(size=(4, 3))), constant("k", rng.normal(size=3))]
    model = build_model(nodes, {"x": [2, 4]}, ["y"], initializers, opset=13)
    assert "MatMul has no bias input" in _reasons(model)


def test_fold_copies_shared_weight():
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Mul", ["c", "k"], ["y"]),
        helper.make_node("Conv", ["x", "w"], ["z"]),
    ]
    initializers = [
        constant("w", rng.normal(size=(2, 2, 1, 1))),
        constant("k", rng.normal(size=(2, 1, 1))),
    ]
    model = build_model(nodes, {"x": [1, 2, 3, 3]}, ["y", "z"], initializers, opset=13)
    result = assert_rewrite(model, FOLD, {NAME: 1}, FOLD_CONV_AFFINE.contract)
    weights = [node.input[1] for node in result.model.graph.node if node.op_type == "Conv"]
    assert "w" in weights
    assert len(set(weights)) == 2


def test_batchnorm_after_mul_folds_in_one_stage():
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Mul", ["c", "k"], ["scaled"]),
        helper.make_node("BatchNormalization", ["scaled", "gamma", "beta", "mean", "var"], ["y"]),
    ]
    initializers = [
        constant("w", rng.normal(size=(2, 2, 3, 3))),
        constant("k", [1.5]),
        constant("gamma", rng.uniform(0.5, 1.5, 2)),
        constant("beta", rng.normal(size=2)),
        constant("mean", rng.normal(size=2)),
        constant("var", rng.uniform(0.5, 2.0, 2)),
    ]
    model = build_model(nodes, {"x": [1, 2, 4, 4]}, ["y"], initializers, opset=13)
    rules = RuleSet.of(FOLD_BATCH_NORM, FOLD_CONV_AFFINE)
    expected = {"FoldBatchNorm": 1, NAME: 1}
    result = assert_rewrite(model, rules, expected, FOLD_CONV_AFFINE.contract)
    assert op_types(result.model) == ["Conv"]


def test_gemm_without_c_ignores_beta():
    # Gemm ignores beta when it has no C, so the C that the fold adds must not be
    # multiplied by it.
    rng = np.random.default_rng(6)
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["g"], beta=2.0, transB=1),
        helper.make_node("Add", ["k", "g"], ["y"]),
    ]
    initializers = [constant("w", rng.normal(size=(3, 4))), constant("k", rng.normal(size=3))]
    model = build_model(nodes, {"x": [2, 4]}, ["y"], initializers, opset=13)
    result = assert_rewrite(model, FOLD, {NAME: 1}, FOLD_CONV_AFFINE.contract)
    assert op_types(result.model) == ["Gemm"]
