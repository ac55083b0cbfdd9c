"""Property tests of the pooling, Split and initializer-copy rules."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from qrewrite.rules.initializers import copy_bias_init_rule, copy_shared_init_rule
from qrewrite.rules.pooling import (
    CONVERT_REDUCE_MEAN_TO_GLOBAL_AVG_POOL,
    split_large_kernel_pool_rule,
)
from qrewrite.rules.split import CONVERT_SPLIT_TO_SLICE
from rule_harness import assert_rewrite, build_model, constant, op_types

from qrewrite.rewrite import RuleSet, apply_rules


@st.composite
def spatial_reduce_mean_models(draw):
    rank = draw(st.integers(3, 5))
    shape = draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank))
    axes = list(range(2, rank))
    if draw(st.booleans()):
        axes = [axis - rank for axis in axes]
    axes = draw(st.permutations(axes))
    opset = draw(st.sampled_from([13, 17, 18, 21]))
    if opset >= 18:
        node = helper.make_node("ReduceMean", ["x", "axes"], ["y"])
        initializers = [constant("axes", axes, np.int64)]
    else:
        node = helper.make_node("ReduceMean", ["x"], ["y"], axes=list(axes))
        initializers = []
    return build_model([node], {"x": shape}, ["y"], initializers, opset=opset)


@settings(max_examples=20, deadline=None)
@given(spatial_reduce_mean_models())
def test_reduce_mean_to_global_pool(model):
    rule = CONVERT_REDUCE_MEAN_TO_GLOBAL_AVG_POOL
    result = assert_rewrite(model, RuleSet.of(rule), {rule.name: 1}, rule.contract)
    assert op_types(result.model) == ["GlobalAveragePool"]


def test_reduce_mean_skips_channel_axis():
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[1, 2, 3])
    model = build_model([node], {"x": [1, 2, 3, 3]}, ["y"], opset=13)
    rules = RuleSet.of(CONVERT_REDUCE_MEAN_TO_GLOBAL_AVG_POOL)
    assert apply_rules(model, rules).matches("ConvertReduceMeanToGlobalAvgPool") == 0


@st.composite
def large_pool_models(draw):
    limit = draw(st.sampled_from([2, 3, 4]))
    # Every size is a product of factors up to the limit, so an exact split exists.
    factor_lists = st.lists(st.integers(1, limit), min_size=1, max_size=3)
    factors_per_axis = draw(st.lists(factor_lists, min_size=1, max_size=2))
    spatial = [int(np.prod(factors)) for factors in factors_per_axis]
    if all(size <= limit for size in spatial):
        spatial[0] *= limit * 2
    shape = [1, 2, *spatial]
    if draw(st.booleans()):
        node = helper.make_node("GlobalAveragePool", ["x"], ["y"])
        factor = 1
    else:
        factor = draw(st.integers(1, 2))
        shape = [1, 2, *(size * factor for size in spatial)]
        node = helper.make_node(
            "AveragePool", ["x"], ["y"], kernel_shape=spatial, strides=spatial
        )
    opset = draw(st.sampled_from([11, 13, 19]))
    return build_model([node], {"x": shape}, ["y"], opset=opset), limit


@settings(max_examples=20, deadline=None)
@given(large_pool_models())
def test_split_large_pool_property(case):
    model, limit = case
    rule = split_large_kernel_pool_rule(limit)
    result = assert_rewrite(model, RuleSet.of(rule), {rule.name: 1}, rule.contract)
    assert set(op_types(result.model)) == {"AveragePool"}
    for node in result.model.graph.node:
        kernel = next(a.ints for a in node.attribute if a.name == "kernel_shape")
        assert max(kernel) <= limit


def test_split_large_pool_skips_prime():
    model = build_model([helper.make_node("GlobalAveragePool", ["x"], ["y"])],
                        {"x": [1, 1, 11, 11]}, ["y"], opset=13)
    rule = split_large_kernel_pool_rule(4)
    assert apply_rules(model, RuleSet.of(rule)).matches(rule.name) == 0


@st.composite
def split_models(draw):
    rank = draw(st.integers(1, 3))
    shape = draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank))
    axis = draw(st.integers(-rank, rank - 1))
    count = draw(st.integers(2, 4))
    opset = draw(st.sampled_from([11, 13, 18, 21]))
    sizes = draw(st.lists(st.integers(0, 3), min_size=count, max_size=count))
    if opset >= 18:
        sizes = [max(size, 1) for size in sizes]
    shape[axis] = sum(sizes)
    outputs = [f"y{i}" for i in range(count)]
    initializers = []
    form = draw(st.sampled_from(["sizes", "equal"]))
    attributes = {"axis": axis}
    if form == "equal":
        shape[axis] = count * draw(st.integers(1, 3))
        if opset >= 18:
            attributes["num_outputs"] = count
        node = helper.make_node("Split", ["x"], outputs, **attributes)
    elif opset < 13:
        node = helper.make_node("Split", ["x"], outputs, split=sizes, **attributes)
    else:
        initializers.append(constant("sizes", sizes, np.int64))
        node = helper.make_node("Split", ["x", "sizes"], outputs, **attributes)
    return build_model([node], {"x": shape}, outputs, initializers, opset=opset)


@settings(max_examples=25, deadline=None)
@given(split_models())
def test_split_to_slice_property(model):
    rule = CONVERT_SPLIT_TO_SLICE
    result = assert_rewrite(model, RuleSet.of(rule), {rule.name: 1}, rule.contract)
    assert set(op_types(result.model)) == {"Slice"}


def test_split_skips_sizes_graph_input():
    node = helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=0)
    model = build_model([node], {"x": [4]}, ["a", "b"], [constant("sizes", [1, 3], np.int64)],
                        opset=13, input_initializers=["sizes"])
    rule = CONVERT_SPLIT_TO_SLICE
    assert apply_rules(model, RuleSet.of(rule)).matches(rule.name) == 0


@st.composite
def shared_weight_models(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    users = draw(st.integers(2, 4))
    share_bias = draw(st.booleans())
    nodes, initializers, outputs = [], [constant("w", rng.normal(size=(3, 3)))], []
    initializers.append(constant("b", rng.normal(size=3)))
    for index in range(users):
        bias = "b" if share_bias else f"b{index}"
        if not share_bias:
            initializers.append(constant(bias, rng.normal(size=3)))
        nodes.append(helper.make_node("Gemm", ["x", "w", bias], [f"y{index}"]))
        outputs.append(f"y{index}")
    nodes.append(helper.make_node("MatMul", ["x", "w"], ["m"]))
    outputs.append("m")
    return build_model(nodes, {"x": [2, 3]}, outputs, initializers, opset=13), users, share_bias


@settings(max_examples=15, deadline=None)
@given(shared_weight_models(), st.sampled_from([[], ["Gemm"], ["Gemm", "Conv"]]))
def test_copy_shared_init_property(case, op_types_selected):
    model, users, _ = case
    rule = copy_shared_init_rule(op_types_selected)
    # Every Gemm precedes the MatMul, so each Gemm still shares w when visited and copies
    # it. The MatMul, visited last, is then the only reader of the original w.
    expected = users
    result = assert_rewrite(model, RuleSet.of(rule), {rule.name: expected}, rule.contract)
    readers = [node.input[1] for node in result.model.graph.node]
    assert len(set(readers)) == len(readers)
    biases = [node.input[2] for node in result.model.graph.node if node.op_type == "Gemm"]
    assert len(set(biases)) == len(biases)


@settings(max_examples=10, deadline=None)
@given(shared_weight_models())
def test_copy_bias_init_property(case):
    model, users, share_bias = case
    rule = copy_bias_init_rule([])
    expected = users - 1 if share_bias else 0
    result = assert_rewrite(model, RuleSet.of(rule), {rule.name: expected}, rule.contract)
    weights = {node.input[1] for node in result.model.graph.node}
    assert weights == {"w"}
