"""Property tests of FoldBatchNorm and ConvertBNToConv, and a wrong fold that they catch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from qrewrite.rules.batchnorm import CONVERT_BN_TO_CONV, FOLD_BATCH_NORM, _FoldIntoProducer
from rule_harness import assert_rewrite, build_model, constant, op_types

from qrewrite.rewrite import Contract, Rule, RuleSet, apply_rules

FOLD = RuleSet.of(FOLD_BATCH_NORM)


def _bn_constants(rng, prefix: str, channels: int) -> list:
    return [
        constant(f"{prefix}_gamma", rng.uniform(0.5, 1.5, channels)),
        constant(f"{prefix}_beta", rng.normal(size=channels)),
        constant(f"{prefix}_mean", rng.normal(size=channels)),
        constant(f"{prefix}_var", rng.uniform(0.5, 2.0, channels)),
    ]


def _bn(prefix: str, source: str, output: str, epsilon: float | None):
    """Return a BatchNormalization node. `epsilon=None` leaves the attribute at its default."""
    inputs = [source] + [f"{prefix}_{name}" for name in ("gamma", "beta", "mean", "var")]
    attributes = {} if epsilon is None else {"epsilon": epsilon}
    return helper.make_node("BatchNormalization", inputs, [output], **attributes)


@st.composite
def producer_bn_models(draw, epsilons=(None, 1e-5, 1e-3, 0.1), relu=True):
    """One to three blocks of Conv, ConvTranspose or Gemm followed by BatchNormalization."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    op_type = draw(st.sampled_from(["Conv", "ConvTranspose", "Gemm"]))
    opset = draw(st.sampled_from([13, 15, 17, 21]))
    channels = draw(st.sampled_from([2, 4]))
    blocks = draw(st.integers(1, 3))
    nodes, initializers = [], []
    shape = [1, channels] if op_type == "Gemm" else [1, channels, 5, 5]
    value = "x"

    for index in range(blocks):
        weight, bias = f"w{index}", f"b{index}"
        inputs = [value, weight]
        if draw(st.booleans()):
            inputs.append(bias)
            initializers.append(constant(bias, rng.normal(size=channels)))
        if op_type == "Gemm":
            trans_b = draw(st.integers(0, 1))
            initializers.append(constant(weight, rng.normal(size=(channels, channels))))
            attributes = {"transB": trans_b, "beta": draw(st.sampled_from([1.0, 0.5]))}
        else:
            group = draw(st.sampled_from([1, channels]))
            kernel = draw(st.sampled_from([1, 3]))
            # Conv weights are (out, in / group, k, k) and ConvTranspose weights
            # (in, out / group, k, k); with in == out both have this shape.
            weight_shape = (channels, channels // group, kernel, kernel)
            initializers.append(constant(weight, rng.normal(size=weight_shape)))
            attributes = {"group": group, "pads": [kernel // 2] * 4}
        nodes.append(helper.make_node(op_type, inputs, [f"p{index}"], **attributes))

        epsilon = draw(st.sampled_from(epsilons))
        nodes.append(_bn(f"bn{index}", f"p{index}", f"n{index}", epsilon))
        initializers += _bn_constants(rng, f"bn{index}", channels)
        value = f"n{index}"
        if relu and draw(st.booleans()):
            nodes.append(helper.make_node("Relu", [value], [f"r{index}"]))
            value = f"r{index}"
    nodes.append(helper.make_node("Identity", [value], ["y"]))
    return build_model(nodes, {"x": shape}, ["y"], initializers, opset=opset), blocks


@settings(max_examples=30, deadline=None)
@given(producer_bn_models())
def test_fold_batchnorm_property(case):
    model, blocks = case
    result = assert_rewrite(model, FOLD, {"FoldBatchNorm": blocks}, FOLD_BATCH_NORM.contract)
    assert "BatchNormalization" not in op_types(result.model)


@st.composite
def concat_bn_models(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    branches = draw(st.integers(2, 3))
    nodes, initializers, outputs = [], [], []
    total = 0
    for index in range(branches):
        channels = draw(st.sampled_from([1, 2, 3]))
        total += channels
        initializers.append(constant(f"w{index}", rng.normal(size=(channels, 2, 1, 1))))
        nodes.append(helper.make_node("Conv", ["x", f"w{index}"], [f"c{index}"]))
        outputs.append(f"c{index}")
    nodes.append(helper.make_node("Concat", outputs, ["cat"], axis=draw(st.sampled_from([1, -3]))))
    nodes.append(_bn("bn", "cat", "y", 1e-5))
    initializers += _bn_constants(rng, "bn", total)
    return build_model(nodes, {"x": [1, 2, 3, 3]}, ["y"], initializers, opset=17)


@settings(max_examples=15, deadline=None)
@given(concat_bn_models())
def test_fold_batchnorm_through_concat(model):
    result = assert_rewrite(model, FOLD, {"FoldBatchNorm": 1}, FOLD_BATCH_NORM.contract)
    assert "BatchNormalization" not in op_types(result.model)
    assert "Concat" in op_types(result.model)


@st.composite
def lone_bn_models(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    channels = draw(st.integers(1, 4))
    spatial = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    nodes = [_bn("bn", "x", "y", draw(st.sampled_from([1e-5, 0.01])))]
    initializers = _bn_constants(rng, "bn", channels)
    opset = draw(st.sampled_from([13, 15, 18]))
    return build_model(nodes, {"x": [2, channels, *spatial]}, ["y"], initializers, opset=opset)


@settings(max_examples=15, deadline=None)
@given(lone_bn_models())
def test_bn_to_conv_property(model):
    rules = RuleSet.of(FOLD_BATCH_NORM) >> RuleSet.of(CONVERT_BN_TO_CONV)
    result = assert_rewrite(
        model, rules, {"FoldBatchNorm": 0, "ConvertBNToConv": 1}, CONVERT_BN_TO_CONV.contract
    )
    assert op_types(result.model) == ["Conv"]


def _conv_bn_model(input_initializers=(), extra_nodes=(), extra_outputs=()):
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        _bn("bn", "c", "y", 1e-5),
        *extra_nodes,
    ]
    initializers = [constant("w", rng.normal(size=(2, 2, 1, 1))), *_bn_constants(rng, "bn", 2)]
    return build_model(
        nodes, {"x": [1, 2, 3, 3]}, ["y", *extra_outputs], initializers, opset=17,
        input_initializers=input_initializers,
    )


def test_fold_skips_parameter_graph_input():
    model = _conv_bn_model(input_initializers=["bn_var"])
    assert apply_rules(model, FOLD).matches("FoldBatchNorm") == 0


def test_fold_skips_weight_graph_input():
    model = _conv_bn_model(input_initializers=["w"])
    assert apply_rules(model, FOLD).matches("FoldBatchNorm") == 0


def test_fold_skips_conv_fan_out():
    relu = helper.make_node("Relu", ["c"], ["r"])
    model = _conv_bn_model(extra_nodes=[relu], extra_outputs=["r"])
    assert apply_rules(model, FOLD).matches("FoldBatchNorm") == 0


def test_fold_keeps_shared_weight_for_others():
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        _bn("bn", "c", "y", 1e-5),
        helper.make_node("Conv", ["x", "w"], ["z"]),
    ]
    initializers = [constant("w", rng.normal(size=(2, 2, 1, 1))), *_bn_constants(rng, "bn", 2)]
    model = build_model(nodes, {"x": [1, 2, 3, 3]}, ["y", "z"], initializers, opset=17)
    assert_rewrite(model, FOLD, {"FoldBatchNorm": 1}, FOLD_BATCH_NORM.contract)


class _FoldIgnoringEpsilon(_FoldIntoProducer):
    """A deliberately wrong fold: it computes gamma / sqrt(var) without epsilon."""

    def check(self, context, x, inbound, bn_out, **_):
        result = super().check(context, x, inbound, bn_out)
        if result:
            bn = bn_out.producer()
            gamma, beta, mean, var = (value.const_value.numpy() for value in bn.inputs[1:5])
            scale = gamma.astype(np.float64) / np.sqrt(var)
            self._params = (scale, beta - mean * scale)
        return result


@settings(max_examples=10, deadline=None)
@given(producer_bn_models(epsilons=(0.1,), relu=False))
def test_wrong_fold_is_caught(case):
    model, blocks = case
    wrong = Rule(
        name="FoldBatchNorm",
        patterns=[_FoldIgnoringEpsilon(op_type) for op_type in ("Conv", "ConvTranspose", "Gemm")],
        matches="test only",
        produces="test only",
        contract=Contract.exact(),
    )
    with pytest.raises(AssertionError):
        assert_rewrite(model, RuleSet.of(wrong), {"FoldBatchNorm": blocks}, wrong.contract)


def test_fold_keeps_conv_name():
    model = _conv_bn_model()
    model.graph.node[0].name = "stem_conv"

    result = apply_rules(model, FOLD)

    assert op_types(result.model) == ["Conv"]
    assert result.model.graph.node[0].name == "stem_conv"
