"""Property tests of FuseGelu, ConvertClipToRelu and ReplaceClip6Relu."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from qrewrite.rules.activations import CONVERT_CLIP_TO_RELU, FUSE_GELU, REPLACE_CLIP6_RELU
from rule_harness import (
    assert_rewrite,
    build_model,
    constant,
    constant_node,
    op_types,
    run_model,
)

from qrewrite.rewrite import RuleSet, apply_rules

GELU = RuleSet.of(FUSE_GELU)


class _Builder:
    """Emits nodes and constants for one random spelling of a formula."""

    def __init__(self, draw) -> None:
        self.draw = draw
        self.nodes: list = []
        self.initializers: list = []
        self.count = 0

    def const(self, value: float):
        self.count += 1
        name = f"c{self.count}"
        shape_one = self.draw(st.booleans())
        array = [value] if shape_one else value
        if self.draw(st.booleans()):
            self.nodes.append(constant_node(name, array))
        else:
            self.initializers.append(constant(name, array))
        return name

    def node(self, op_type: str, *inputs: str, commutative: bool = False) -> str:
        self.count += 1
        name = f"v{self.count}"
        ordered = list(inputs)
        if commutative and self.draw(st.booleans()):
            ordered.reverse()
        self.nodes.append(helper.make_node(op_type, ordered, [name], name=f"n{self.count}"))
        return name


@st.composite
def gelu_models(draw, opset=None):
    build = _Builder(draw)
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    x = "x"
    if draw(st.booleans()):
        x = build.node("Relu", "x")

    form = draw(st.sampled_from(["erf", "tanh"]))
    if form == "erf":
        if draw(st.booleans()):
            argument = build.node("Div", x, build.const(math.sqrt(2.0)))
        else:
            argument = build.node("Mul", x, build.const(1 / math.sqrt(2.0)), commutative=True)
        inner = build.node("Erf", argument)
    else:
        if draw(st.booleans()):
            cube = build.node("Pow", x, build.const(3.0))
        else:
            square = build.node("Mul", x, x)
            cube = build.node("Mul", square, x, commutative=True)
        scaled_cube = build.node("Mul", cube, build.const(0.044715), commutative=True)
        polynomial = build.node("Add", x, scaled_cube, commutative=True)
        scale = build.const(math.sqrt(2 / math.pi))
        argument = build.node("Mul", polynomial, scale, commutative=True)
        inner = build.node("Tanh", argument)
    shifted = build.node("Add", inner, build.const(1.0), commutative=True)

    spelling = draw(st.integers(0, 2))
    if spelling == 0:
        half_x = build.node("Mul", x, build.const(0.5), commutative=True)
        out = build.node("Mul", half_x, shifted, commutative=True)
    elif spelling == 1:
        product = build.node("Mul", x, shifted, commutative=True)
        out = build.node("Mul", product, build.const(0.5), commutative=True)
    else:
        half_shifted = build.node("Mul", shifted, build.const(0.5), commutative=True)
        out = build.node("Mul", x, half_shifted, commutative=True)
    build.nodes.append(helper.make_node("Identity", [out], ["y"]))

    opset = draw(st.sampled_from([20, 21])) if opset is None else opset
    model = build_model(build.nodes, {"x": shape}, ["y"], build.initializers, opset=opset)
    return model, form


@settings(max_examples=40, deadline=None)
@given(gelu_models())
def test_gelu_fuses_every_spelling(case):
    model, form = case
    result = assert_rewrite(model, GELU, {"FuseGelu": 1}, FUSE_GELU.contract)
    gelus = [node for node in result.model.graph.node if node.op_type == "Gelu"]
    assert len(gelus) == 1
    approximate = {a.name: a.s.decode() for a in gelus[0].attribute}.get("approximate", "none")
    assert approximate == ("tanh" if form == "tanh" else "none")
    assert "Erf" not in op_types(result.model)
    assert "Tanh" not in op_types(result.model)


@settings(max_examples=10, deadline=None)
@given(gelu_models(opset=18))
def test_gelu_skips_opset_below_20(case):
    model, _ = case
    result = apply_rules(model, GELU)
    assert result.matches("FuseGelu") == 0
    assert "Gelu" not in op_types(result.model)


def _erf_gelu_nodes(half: str = "half"):
    return [
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["s"]),
        helper.make_node("Mul", ["x", "s"], ["p"]),
        helper.make_node("Mul", ["p", half], ["y"]),
    ]


def _erf_gelu_constants():
    return [constant("sqrt2", math.sqrt(2)), constant("one", 1.0), constant("half", 0.5)]


def test_gelu_skips_constant_graph_input():
    model = build_model(
        _erf_gelu_nodes(), {"x": [2, 3]}, ["y"], _erf_gelu_constants(), opset=20,
        input_initializers=["half"],
    )
    assert apply_rules(model, GELU).matches("FuseGelu") == 0


def test_gelu_skips_fan_out():
    nodes = [*_erf_gelu_nodes(), helper.make_node("Neg", ["e"], ["other"])]
    model = build_model(nodes, {"x": [2, 3]}, ["y", "other"], _erf_gelu_constants(), opset=20)
    assert apply_rules(model, GELU).matches("FuseGelu") == 0


def test_gelu_skips_wrong_constant():
    constants = [constant("sqrt2", math.sqrt(2)), constant("one", 1.0), constant("half", 0.4)]
    model = build_model(_erf_gelu_nodes(), {"x": [2, 3]}, ["y"], constants, opset=20)
    result = apply_rules(model, GELU, explain=True)
    assert result.matches("FuseGelu") == 0
    assert result.rules["FuseGelu"].reasons


@st.composite
def clip_models(draw, upper):
    opset = draw(st.sampled_from([6, 11, 13, 18, 21]))
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    nodes, initializers = [], []
    if opset < 11:
        attributes = {"min": 0.0} if upper is None else {"min": 0.0, "max": upper}
        nodes.append(helper.make_node("Clip", ["x"], ["y"], **attributes))
    else:
        inputs = ["x", "low"]
        initializers.append(constant("low", 0.0))
        if upper is not None:
            inputs.append("high")
            initializers.append(constant("high", upper))
        elif draw(st.booleans()):
            inputs.append("")
        nodes.append(helper.make_node("Clip", inputs, ["y"]))
    return build_model(nodes, {"x": shape}, ["y"], initializers, opset=opset)


@settings(max_examples=15, deadline=None)
@given(clip_models(upper=None))
def test_clip_to_relu_property(model):
    rules = RuleSet.of(CONVERT_CLIP_TO_RELU, REPLACE_CLIP6_RELU)
    result = assert_rewrite(
        model, rules, {"ConvertClipToRelu": 1, "ReplaceClip6Relu": 0}, CONVERT_CLIP_TO_RELU.contract
    )
    assert op_types(result.model) == ["Relu"]


@settings(max_examples=15, deadline=None)
@given(clip_models(upper=6.0))
def test_clip6_to_relu_below_six(model):
    rules = RuleSet.of(CONVERT_CLIP_TO_RELU, REPLACE_CLIP6_RELU)
    # The contract holds only for inputs up to 6, so the inputs stay in [-3, 3].
    result = assert_rewrite(
        model, rules, {"ConvertClipToRelu": 0, "ReplaceClip6Relu": 1}, REPLACE_CLIP6_RELU.contract
    )
    assert op_types(result.model) == ["Relu"]


def test_clip6_to_relu_changes_large_inputs():
    model = build_model(
        [helper.make_node("Clip", ["x", "low", "high"], ["y"])], {"x": [3]}, ["y"],
        [constant("low", 0.0), constant("high", 6.0)], opset=13,
    )
    result = apply_rules(model, RuleSet.of(REPLACE_CLIP6_RELU))
    (relu_output,) = run_model(result.model, {"x": np.array([1.0, 7.0, 9.0], np.float32)})
    assert relu_output.tolist() == [1.0, 7.0, 9.0]


def test_clip_with_input_bounds_skips_graph_input():
    model = build_model(
        [helper.make_node("Clip", ["x", "low"], ["y"])], {"x": [3]}, ["y"],
        [constant("low", 0.0)], opset=13, input_initializers=["low"],
    )
    assert apply_rules(model, RuleSet.of(CONVERT_CLIP_TO_RELU)).matches("ConvertClipToRelu") == 0
