"""Property and negative tests of FuseHardSwish, and of the opset scan that goes with it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from qrewrite.rules.hardswish import FUSE_HARD_SWISH, has_hard_swish_gate
from rule_harness import assert_rewrite, build_model, constant, op_types, random_feeds, run_model

from qrewrite.rewrite import RuleSet, apply_rules

HARD_SWISH = RuleSet.of(FUSE_HARD_SWISH)
FORMS = ("div", "mul", "sigmoid")


@st.composite
def hard_swish_models(draw, opset=None):
    """Draw a model computing hard swish in one spelling, operand order and constant form."""
    nodes: list = []
    initializers: list = []
    count = iter(range(100))

    def const(value: float) -> str:
        name = f"c{next(count)}"
        array = [value] if draw(st.booleans()) else value
        if draw(st.booleans()):
            nodes.append(helper.make_node("Constant", [], [name], value=constant(name, array)))
        else:
            initializers.append(constant(name, array))
        return name

    def node(op_type: str, a: str, b: str, commutative: bool = True, **attributes) -> str:
        name = f"v{next(count)}"
        operands = [a, b] if not (commutative and draw(st.booleans())) else [b, a]
        nodes.append(helper.make_node(op_type, operands, [name], **attributes))
        return name

    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    x = "x"
    if draw(st.booleans()):
        x = node("Mul", "x", const(1.5))
    form = draw(st.sampled_from(FORMS))
    if form == "sigmoid":
        gate = f"v{next(count)}"
        nodes.append(helper.make_node("HardSigmoid", [x], [gate], alpha=1 / 6, beta=0.5))
        out = node("Mul", x, gate)
    else:
        shifted = node("Add", x, const(3.0))
        clipped = f"v{next(count)}"
        nodes.append(helper.make_node("Clip", [shifted, const(0.0), const(6.0)], [clipped]))
        product = node("Mul", x, clipped)
        if form == "div":
            out = node("Div", product, const(6.0), commutative=False)
        else:
            out = node("Mul", product, const(1 / 6))
    nodes.append(helper.make_node("Identity", [out], ["y"]))

    opset = draw(st.sampled_from([14, 18])) if opset is None else opset
    return build_model(nodes, {"x": shape}, ["y"], initializers, opset=opset), form


@settings(max_examples=40, deadline=None)
@given(hard_swish_models())
def test_hard_swish_fuses_every_spelling(case):
    model, _ = case
    feeds = random_feeds(model, low=-6.0, high=6.0)

    result = assert_rewrite(
        model, HARD_SWISH, {"FuseHardSwish": 1}, FUSE_HARD_SWISH.contract, feeds
    )

    types = op_types(result.model)
    assert types.count("HardSwish") == 1
    assert "Clip" not in types
    assert "HardSigmoid" not in types
    assert "Div" not in types


@settings(max_examples=10, deadline=None)
@given(hard_swish_models(opset=13))
def test_hard_swish_skips_opset_13(case):
    model, _ = case

    result = apply_rules(model, HARD_SWISH)

    assert result.matches("FuseHardSwish") == 0
    assert "HardSwish" not in op_types(result.model)


def _clip_form(three: float = 3.0, low: float = 0.0, high: float = 6.0, six: float = 6.0):
    nodes = [
        helper.make_node("Add", ["x", "three"], ["shifted"]),
        helper.make_node("Clip", ["shifted", "low", "high"], ["clipped"]),
        helper.make_node("Mul", ["x", "clipped"], ["product"]),
        helper.make_node("Div", ["product", "six"], ["y"]),
    ]
    initializers = [
        constant("three", three),
        constant("low", low),
        constant("high", high),
        constant("six", six),
    ]
    return nodes, initializers


@pytest.mark.parametrize(
    "constants",
    [{"three": 2.5}, {"low": -1.0}, {"high": 5.0}, {"six": 5.0}],
    ids=["shift", "lower-bound", "upper-bound", "divisor"],
)
def test_hard_swish_skips_changed_constant(constants):
    nodes, initializers = _clip_form(**constants)
    model = build_model(nodes, {"x": [2, 3]}, ["y"], initializers, opset=14)

    assert apply_rules(model, HARD_SWISH).matches("FuseHardSwish") == 0


def test_hard_swish_skips_other_slope():
    nodes = [
        helper.make_node("HardSigmoid", ["x"], ["gate"], alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["x", "gate"], ["y"]),
    ]
    model = build_model(nodes, {"x": [2, 3]}, ["y"], opset=14)

    assert apply_rules(model, HARD_SWISH).matches("FuseHardSwish") == 0


def test_hard_swish_skips_gate_of_other_tensor():
    nodes = [
        helper.make_node("HardSigmoid", ["z"], ["gate"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["x", "gate"], ["y"]),
    ]
    model = build_model(nodes, {"x": [2, 3], "z": [2, 3]}, ["y"], opset=14)

    assert apply_rules(model, HARD_SWISH).matches("FuseHardSwish") == 0


def test_hard_swish_skips_clip_read_twice():
    nodes, initializers = _clip_form()
    nodes.append(helper.make_node("Neg", ["clipped"], ["other"]))
    model = build_model(nodes, {"x": [2, 3]}, ["y", "other"], initializers, opset=14)

    assert apply_rules(model, HARD_SWISH).matches("FuseHardSwish") == 0


def test_gate_scan_finds_clip_form():
    nodes, initializers = _clip_form()
    model = build_model(nodes, {"x": [2, 3]}, ["y"], initializers, opset=12)

    assert has_hard_swish_gate(model)


def test_gate_scan_reads_clip_attributes():
    nodes = [
        helper.make_node("Add", ["x", "three"], ["shifted"]),
        helper.make_node("Clip", ["shifted"], ["clipped"], min=0.0, max=6.0),
        helper.make_node("Mul", ["x", "clipped"], ["y"]),
    ]
    model = build_model(nodes, {"x": [2, 3]}, ["y"], [constant("three", 3.0)], opset=10)

    assert has_hard_swish_gate(model)


def test_gate_scan_ignores_relu6_and_sigmoid_slope():
    nodes = [
        helper.make_node("Clip", ["x", "low", "high"], ["clipped"]),
        helper.make_node("HardSigmoid", ["clipped"], ["y"], alpha=0.2, beta=0.5),
    ]
    initializers = [constant("low", 0.0), constant("high", 6.0)]
    model = build_model(nodes, {"x": [2, 3]}, ["y"], initializers, opset=12)

    assert not has_hard_swish_gate(model)


def test_fused_model_matches_formula():
    nodes, initializers = _clip_form()
    model = build_model(nodes, {"x": [7]}, ["y"], initializers, opset=14)
    x = np.array([-4.0, -3.0, -1.5, 0.0, 1.5, 3.0, 4.0], dtype=np.float32)
    expected = x * np.clip(x / 6 + 0.5, 0.0, 1.0)

    result = assert_rewrite(
        model, HARD_SWISH, {"FuseHardSwish": 1}, FUSE_HARD_SWISH.contract, {"x": x}
    )

    assert op_types(result.model) == ["HardSwish"]
    np.testing.assert_allclose(run_model(result.model, {"x": x})[0], expected, atol=1e-6)
