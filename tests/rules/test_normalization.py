"""Property tests of FuseLayerNorm, FuseInstanceNorm and FuseL2Norm."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from qrewrite.rules.normalization import FUSE_INSTANCE_NORM, FUSE_L2_NORM, FUSE_LAYER_NORM
from rule_harness import add_scalar, assert_rewrite, build_model, constant, op_types

from qrewrite.rewrite import RuleSet, apply_rules


def _maybe_swap(draw, a: str, b: str) -> list[str]:
    return [b, a] if draw(st.booleans()) else [a, b]


def _reduce(op_type: str, source: str, output: str, axes, opset: int, axes_input_opset: int):
    if opset >= axes_input_opset:
        name = f"{output}_axes"
        node = helper.make_node(op_type, [source, name], [output])
        return [node], [constant(name, axes, np.int64)]
    return [helper.make_node(op_type, [source], [output], axes=list(axes))], []


@st.composite
def decomposed_norm_models(draw, kind: str, opset=None):
    """x -> (x - mean) / sqrt(var + eps) [* scale] [+ bias], in random spellings."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "layer":
        rank = draw(st.integers(2, 4))
        count = draw(st.integers(1, rank - 1))
        axes = list(range(rank - count, rank))
        if draw(st.booleans()):
            axes = [axis - rank for axis in axes]
        opset = draw(st.sampled_from([17, 18, 21])) if opset is None else opset
    else:
        rank = draw(st.integers(3, 4))
        axes = list(range(2, rank))
        opset = draw(st.sampled_from([13, 17, 18])) if opset is None else opset
    shape = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    shape[-1] = max(shape[-1], 2)
    nodes, initializers = [], []

    def reduce_mean(source, output):
        new_nodes, new_constants = _reduce("ReduceMean", source, output, axes, opset, 18)
        nodes.extend(new_nodes)
        initializers.extend(new_constants)

    reduce_mean("x", "mean")
    nodes.append(helper.make_node("Sub", ["x", "mean"], ["d"]))
    if draw(st.booleans()):
        add_scalar(draw, nodes, initializers, "two", 2.0)
        nodes.append(helper.make_node("Pow", ["d", "two"], ["sq"]))
    else:
        nodes.append(helper.make_node("Mul", ["d", "d"], ["sq"]))
    reduce_mean("sq", "var")
    add_scalar(draw, nodes, initializers, "eps", draw(st.sampled_from([1e-5, 1e-6, 1e-3])))
    nodes.append(helper.make_node("Add", _maybe_swap(draw, "var", "eps"), ["var_eps"]))
    nodes.append(helper.make_node("Sqrt", ["var_eps"], ["std"]))
    if draw(st.booleans()):
        nodes.append(helper.make_node("Div", ["d", "std"], ["n"]))
    else:
        nodes.append(helper.make_node("Reciprocal", ["std"], ["inv"]))
        nodes.append(helper.make_node("Mul", _maybe_swap(draw, "d", "inv"), ["n"]))
    if kind == "layer":
        param_shape = shape[len(shape) - len(axes):]
    else:
        param_shape = [shape[1]] + [1] * (rank - 2)
    value = "n"
    tail = draw(st.sampled_from(["none", "scale", "scale_bias"]))
    if tail != "none":
        initializers.append(constant("scale", rng.uniform(0.5, 1.5, param_shape)))
        nodes.append(helper.make_node("Mul", _maybe_swap(draw, value, "scale"), ["scaled"]))
        value = "scaled"
    if tail == "scale_bias":
        initializers.append(constant("bias", rng.normal(size=param_shape)))
        nodes.append(helper.make_node("Add", _maybe_swap(draw, value, "bias"), ["biased"]))
        value = "biased"
    nodes.append(helper.make_node("Identity", [value], ["y"]))
    return build_model(nodes, {"x": shape}, ["y"], initializers, opset=opset)


@settings(max_examples=30, deadline=None)
@given(decomposed_norm_models("layer"))
def test_layer_norm_property(model):
    rules = RuleSet.of(FUSE_LAYER_NORM)
    result = assert_rewrite(model, rules, {"FuseLayerNorm": 1}, FUSE_LAYER_NORM.contract)
    assert op_types(result.model) == ["LayerNormalization", "Identity"]


@settings(max_examples=5, deadline=None)
@given(decomposed_norm_models("layer", opset=13))
def test_layer_norm_skips_opset_13(model):
    result = apply_rules(model, RuleSet.of(FUSE_LAYER_NORM))
    assert result.matches("FuseLayerNorm") == 0


@settings(max_examples=25, deadline=None)
@given(decomposed_norm_models("instance"))
def test_instance_norm_property(model):
    rules = RuleSet.of(FUSE_INSTANCE_NORM)
    result = assert_rewrite(model, rules, {"FuseInstanceNorm": 1}, FUSE_INSTANCE_NORM.contract)
    assert op_types(result.model) == ["InstanceNormalization", "Identity"]


def test_layer_norm_skips_fan_out():
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1]),
        helper.make_node("Sub", ["x", "mean"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Div", ["d", "std"], ["y"]),
    ]
    model = build_model(nodes, {"x": [2, 5]}, ["y", "var"], [constant("eps", 1e-5)], opset=17)
    assert apply_rules(model, RuleSet.of(FUSE_LAYER_NORM)).matches("FuseLayerNorm") == 0


@st.composite
def l2_norm_models(draw):
    rank = draw(st.integers(2, 4))
    shape = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    axis = draw(st.integers(-rank, rank - 1))
    shape[axis] = max(shape[axis], 2)
    opset = draw(st.sampled_from([13, 17, 18]))
    nodes, initializers = [], []

    form = draw(st.sampled_from(["sqrt_max", "max_norm", "clip_norm", "norm"]))
    use_l2 = form != "sqrt_max" and draw(st.booleans())
    if use_l2:
        new_nodes, new_constants = _reduce("ReduceL2", "x", "norm", [axis], opset, 18)
        nodes += new_nodes
        initializers += new_constants
    else:
        if draw(st.booleans()):
            nodes.append(helper.make_node("Mul", ["x", "x"], ["sq"]))
        else:
            add_scalar(draw, nodes, initializers, "two", 2.0)
            nodes.append(helper.make_node("Pow", ["x", "two"], ["sq"]))
        new_nodes, new_constants = _reduce("ReduceSum", "sq", "sum", [axis], opset, 13)
        nodes += new_nodes
        initializers += new_constants
    add_scalar(draw, nodes, initializers, "eps", 1e-12)

    denominator = "den"
    if form == "sqrt_max":
        nodes.append(helper.make_node("Max", _maybe_swap(draw, "sum", "eps"), ["clamped"]))
        nodes.append(helper.make_node("Sqrt", ["clamped"], ["den"]))
    else:
        if not use_l2:
            nodes.append(helper.make_node("Sqrt", ["sum"], ["norm"]))
        if form == "max_norm":
            nodes.append(helper.make_node("Max", _maybe_swap(draw, "norm", "eps"), ["den"]))
        elif form == "clip_norm":
            nodes.append(helper.make_node("Clip", ["norm", "eps"], ["den"]))
        else:
            denominator = "norm"

    if draw(st.booleans()):
        nodes.append(helper.make_node("Div", ["x", denominator], ["y"]))
    else:
        nodes.append(helper.make_node("Reciprocal", [denominator], ["inv"]))
        nodes.append(helper.make_node("Mul", _maybe_swap(draw, "x", "inv"), ["y"]))
    return build_model(nodes, {"x": shape}, ["y"], initializers, opset=opset)


@settings(max_examples=30, deadline=None)
@given(l2_norm_models())
def test_l2_norm_property(model):
    # Inputs in [-3, 3] over at least 2 elements keep every norm far above epsilon.
    rules = RuleSet.of(FUSE_L2_NORM)
    result = assert_rewrite(model, rules, {"FuseL2Norm": 1}, FUSE_L2_NORM.contract)
    assert op_types(result.model) == ["LpNormalization"]


def test_l2_norm_skips_two_axes():
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axes"], ["sum"]),
        helper.make_node("Sqrt", ["sum"], ["norm"]),
        helper.make_node("Div", ["x", "norm"], ["y"]),
    ]
    initializers = [constant("axes", [1, 2], np.int64)]
    model = build_model(nodes, {"x": [2, 3, 4]}, ["y"], initializers, opset=13)
    assert apply_rules(model, RuleSet.of(FUSE_L2_NORM)).matches("FuseL2Norm") == 0
