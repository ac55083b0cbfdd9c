"""Property tests of the DPU simulation rules.

These rules change results on purpose, so each test compares the rewritten model with a
numpy reference of the DPU arithmetic, and checks that the output differs from the
original op, so that agreement with the reference is not vacuous. The change from the
original must also stay within the rule's contract.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from fractions import Fraction

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from qrewrite.rules import builtin_rules, float_graph_rules
from qrewrite.rules.dpu import (
    AVG_POOL_MAX_RELATIVE_ERROR,
    CONVERT_AVG_POOL_TO_DPU_VERSION,
    CONVERT_CLIP_TO_DPU_VERSION,
    CONVERT_HARD_SIGMOID_TO_DPU_VERSION,
    CONVERT_LEAKY_RELU_TO_DPU_VERSION,
    CONVERT_REDUCE_MEAN_TO_DPU_VERSION,
    CONVERT_SIGMOID_TO_HARD_SIGMOID,
    DPU_RULES,
    SIGMOID_MAX_ERROR,
    avg_pool_multiplier,
    dpu_leaky_relu_alpha,
    dpu_reciprocal,
)
from rule_harness import build_model, constant, op_types, random_feeds, run_model

from qrewrite.config import ExtraOptions
from qrewrite.rewrite import Contract, Rule, RuleSet, apply_rules

Reference = Callable[[np.ndarray], np.ndarray]

HARD_SIGMOID_DPU_SLOPE = 2731 / 16384


def assert_dpu_rewrite(
    model: onnx.ModelProto,
    rule: Rule,
    expected_matches: int,
    reference: Reference,
    feeds: Mapping[str, np.ndarray] | None = None,
    rtol: float = 1e-5,
) -> onnx.ModelProto:
    """Apply `rule` and check it against the numpy `reference` of the DPU arithmetic.

    The model has one input `x` and one output. Returns the rewritten model.
    """
    before = model.SerializeToString()
    result = apply_rules(model, RuleSet.of(rule))

    assert model.SerializeToString() == before, "apply_rules changed its input model"
    assert result.matches(rule.name) == expected_matches, result.rules[rule.name]
    onnx.checker.check_model(result.model, full_check=True)

    feeds = random_feeds(model) if feeds is None else feeds
    (original,) = run_model(model, feeds)
    (actual,) = run_model(result.model, feeds)
    expected = reference(feeds["x"].astype(np.float64))
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-6 * scale)
    assert_within_contract(actual, original, rule.contract)
    if expected_matches:
        assert not np.array_equal(actual, original), "the rewrite did not change the output"
        again = apply_rules(result.model, RuleSet.of(rule))
        assert again.matches(rule.name) == 0, "the rule matched its own output"
    return result.model


def assert_within_contract(actual: np.ndarray, original: np.ndarray, contract: Contract) -> None:
    """Assert that the change from the original op stays within a bounded contract."""
    if contract.kind != "bounded":
        return
    # 1e-6 is float32 rounding of values up to a few units.
    allowed = contract.atol + contract.rtol * np.abs(original) + 1e-6
    assert np.all(np.abs(actual - original) <= allowed)


def unary_model(op_type: str, shape: list[int], opset: int, **attributes) -> onnx.ModelProto:
    node = helper.make_node(op_type, ["x"], ["y"], **attributes)
    return build_model([node], {"x": shape}, ["y"], opset=opset)


shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4)


# LeakyRelu


def off_grid_alphas():
    """Slopes that are not multiples of 1/256, so the DPU rounds them."""
    return st.floats(0.0625, 0.875, width=32).filter(lambda a: a * 256 != round(a * 256))


@settings(max_examples=25, deadline=None)
@given(shapes, st.one_of(st.none(), off_grid_alphas()), st.sampled_from([11, 13, 16, 18, 21]))
def test_leaky_relu_dpu_property(shape, alpha, opset):
    attributes = {} if alpha is None else {"alpha": alpha}
    model = unary_model("LeakyRelu", shape, opset, **attributes)
    slope = dpu_leaky_relu_alpha(0.01 if alpha is None else float(np.float32(alpha)))
    # Half the inputs negative, so the slope is visible.
    feeds = {"x": np.linspace(-3, 3, math.prod(shape), dtype=np.float32).reshape(shape)}
    if math.prod(shape) == 1:
        feeds = {"x": np.full(shape, -2.0, np.float32)}
    rule = CONVERT_LEAKY_RELU_TO_DPU_VERSION
    assert_dpu_rewrite(model, rule, 1, lambda x: np.where(x < 0, slope * x, x), feeds)


def test_leaky_relu_tenth_slope_grid():
    assert dpu_leaky_relu_alpha(float(np.float32(0.1))) == 26 / 256
    model = unary_model("LeakyRelu", [4], 13, alpha=0.1)
    result = apply_rules(model, RuleSet.of(CONVERT_LEAKY_RELU_TO_DPU_VERSION))
    (node,) = result.model.graph.node
    assert helper.get_attribute_value(node.attribute[0]) == 26 / 256


def test_leaky_relu_on_grid_unchanged():
    model = unary_model("LeakyRelu", [4], 13, alpha=0.25)
    result = apply_rules(model, RuleSet.of(CONVERT_LEAKY_RELU_TO_DPU_VERSION))
    assert result.matches("ConvertLeakyReluToDPUVersion") == 0


# Sigmoid and HardSigmoid


def hard_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip(x / 6 + 0.5, 0, 1)


def dpu_hard_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 3, 0, 6) * HARD_SIGMOID_DPU_SLOPE


def wide_feeds(shape: list[int], seed: int) -> dict[str, np.ndarray]:
    """Inputs in [-8, 8], beyond both clipping points of HardSigmoid."""
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(-8, 8, size=shape).astype(np.float32)}


@settings(max_examples=15, deadline=None)
@given(shapes, st.sampled_from([11, 13, 18, 21]), st.integers(0, 2**16))
def test_sigmoid_to_hard_sigmoid_property(shape, opset, seed):
    model = unary_model("Sigmoid", shape, opset)
    rule = CONVERT_SIGMOID_TO_HARD_SIGMOID
    result = assert_dpu_rewrite(model, rule, 1, hard_sigmoid, wide_feeds(shape, seed))
    assert op_types(result) == ["HardSigmoid"]


def test_sigmoid_error_bound_is_tight():
    # The error peaks where the slope of Sigmoid is 1/6: x = log(s / (1 - s)) with
    # s = (1 + 1/sqrt(3)) / 2.
    peak = (1 + 1 / math.sqrt(3)) / 2
    x = np.array([-20.0, -math.log(peak / (1 - peak)), 0.0, math.log(peak / (1 - peak)), 20.0])
    error = np.abs(1 / (1 + np.exp(-x)) - hard_sigmoid(x))
    assert error.max() <= SIGMOID_MAX_ERROR
    assert error.max() > SIGMOID_MAX_ERROR - 1e-4


@settings(max_examples=20, deadline=None)
@given(shapes, st.booleans(), st.sampled_from([11, 13, 18, 21]), st.integers(0, 2**16))
def test_hard_sigmoid_dpu_property(shape, explicit_beta, opset, seed):
    attributes = {"alpha": 1 / 6, **({"beta": 0.5} if explicit_beta else {})}
    model = unary_model("HardSigmoid", shape, opset, **attributes)
    feeds = wide_feeds(shape, seed)
    feeds["x"].flat[0] = 5.0  # above 3, where the DPU output exceeds 1
    rule = CONVERT_HARD_SIGMOID_TO_DPU_VERSION
    result = assert_dpu_rewrite(model, rule, 1, dpu_hard_sigmoid, feeds)
    assert op_types(result) == ["HardSigmoid", "Mul"]
    hard = result.graph.node[0]
    values = {a.name: helper.get_attribute_value(a) for a in hard.attribute}
    assert np.float32(values["alpha"]) == np.float32(1 / 6)
    assert values["beta"] == 0.5


def test_sigmoid_chain_reaches_dpu_form():
    model = unary_model("Sigmoid", [2, 8], 13)
    rules = RuleSet.of(CONVERT_SIGMOID_TO_HARD_SIGMOID, CONVERT_HARD_SIGMOID_TO_DPU_VERSION)
    result = apply_rules(model, rules)
    assert op_types(result.model) == ["HardSigmoid", "Mul"]
    feeds = wide_feeds([2, 8], 1)
    (actual,) = run_model(result.model, feeds)
    np.testing.assert_allclose(actual, dpu_hard_sigmoid(feeds["x"]), rtol=1e-6, atol=1e-7)


def test_hard_sigmoid_other_constants_unchanged():
    cases = [{}, {"alpha": 0.2, "beta": 0.5}, {"alpha": 1 / 6, "beta": 0.4}]
    for attributes in cases:
        model = unary_model("HardSigmoid", [4], 13, **attributes)
        result = apply_rules(model, RuleSet.of(CONVERT_HARD_SIGMOID_TO_DPU_VERSION))
        assert result.matches("ConvertHardSigmoidToDPUVersion") == 0, attributes


# AveragePool and GlobalAveragePool


def pool_reference(x, kernel, strides, pads, multiplier: Fraction) -> np.ndarray:
    """Window sums of a zero-padded 2-D pool, times the DPU multiplier."""
    padded = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel, axis=(2, 3))
    sums = windows[:, :, :: strides[0], :: strides[1]].sum(axis=(-2, -1))
    return sums * float(multiplier)


def expected_pool_matches(kernel: list[int]) -> int:
    return 0 if math.prod(kernel) * avg_pool_multiplier(kernel) == 1 else 1


@st.composite
def average_pool_models(draw):
    if draw(st.booleans()):
        size = draw(st.sampled_from([2, 3, 5, 6, 7]))
        kernel = [size, size]
    else:
        kernel = draw(st.lists(st.integers(1, 6), min_size=2, max_size=2))
    strides = draw(st.lists(st.integers(1, 3), min_size=2, max_size=2))
    spatial = [k + draw(st.integers(0, 4)) for k in kernel]
    attributes = {"kernel_shape": kernel, "strides": strides}
    pads = [0, 0, 0, 0]
    if draw(st.booleans()):
        pads = [draw(st.integers(0, k - 1)) for k in kernel * 2]
        attributes.update(pads=pads, count_include_pad=1)
    opset = draw(st.sampled_from([11, 13, 19, 21]))
    model = unary_model("AveragePool", [1, 2, *spatial], opset, **attributes)
    return model, kernel, strides, pads


@settings(max_examples=30, deadline=None)
@given(average_pool_models())
def test_average_pool_dpu_property(case):
    model, kernel, strides, pads = case
    multiplier = avg_pool_multiplier(kernel)
    expected = expected_pool_matches(kernel)

    def reference(x):
        return pool_reference(x, kernel, strides, pads, multiplier)

    rule = CONVERT_AVG_POOL_TO_DPU_VERSION
    result = assert_dpu_rewrite(model, rule, expected, reference)
    assert op_types(result) == (["AveragePool", "Mul"] if expected else ["AveragePool"])


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.integers(1, 15), min_size=1, max_size=3).filter(lambda dims: math.prod(dims) > 1),
    st.sampled_from([11, 13, 21]),
)
def test_global_average_pool_dpu_property(spatial, opset):
    model = unary_model("GlobalAveragePool", [1, 3, *spatial], opset)
    multiplier = avg_pool_multiplier(spatial)
    expected = expected_pool_matches(spatial)
    axes = tuple(range(2, 2 + len(spatial)))

    def reference(x):
        return x.sum(axis=axes, keepdims=True) * float(multiplier)

    rule = CONVERT_AVG_POOL_TO_DPU_VERSION
    assert_dpu_rewrite(model, rule, expected, reference)


def test_pool_multiplier_hardware_constants():
    assert avg_pool_multiplier([3, 3]) == Fraction(7, 64)
    assert avg_pool_multiplier([5, 5]) == Fraction(10, 256)
    assert avg_pool_multiplier([6, 6]) == Fraction(7, 256)
    assert avg_pool_multiplier([7, 7]) == Fraction(21, 1024)
    assert avg_pool_multiplier([14, 14]) == Fraction(21, 4096)
    # Not square, so the general search applies: 1/9 becomes 57/512.
    assert avg_pool_multiplier([1, 9]) == Fraction(57, 512)


def test_reciprocal_search_matches_definition():
    for count in range(1, 3000):
        limit = math.ceil(math.log2(count * 128))
        candidates = [(abs(round(2**s / count) / 2**s - 1 / count), s) for s in range(limit)]
        _, shift = min(candidates)
        assert dpu_reciprocal(count) == Fraction(round(2**shift / count), 2**shift), count
        assert abs(count * dpu_reciprocal(count) - 1) <= Fraction(1, 128)


def test_pool_error_bound_is_5x5():
    worst = max(
        abs(size * size * avg_pool_multiplier([size, size]) - 1) for size in range(1, 256)
    )
    assert float(worst) == AVG_POOL_MAX_RELATIVE_ERROR


def test_global_pool_dynamic_shape_rejected():
    node = helper.make_node("GlobalAveragePool", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "dynamic",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, "h", "w"])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    result = apply_rules(model, RuleSet.of(CONVERT_AVG_POOL_TO_DPU_VERSION), explain=True)
    report = result.rules["ConvertAvgPoolToDPUVersion"]
    assert report.matches == 0
    assert any("not static" in reason for reason in report.reasons)


def test_padded_pool_excluding_pads_rejected():
    model = unary_model("AveragePool", [1, 1, 6, 6], 13, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    result = apply_rules(model, RuleSet.of(CONVERT_AVG_POOL_TO_DPU_VERSION), explain=True)
    report = result.rules["ConvertAvgPoolToDPUVersion"]
    assert report.matches == 0
    assert any("count_include_pad=0" in reason for reason in report.reasons)


def test_ceil_mode_pool_needs_whole_windows():
    # Windows of 3 with stride 2 cover 7 elements exactly, and leave a partial one at 8.
    whole = unary_model(
        "AveragePool", [1, 1, 7, 7], 13, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1
    )
    partial = unary_model(
        "AveragePool", [1, 1, 8, 8], 13, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1
    )
    rules = RuleSet.of(CONVERT_AVG_POOL_TO_DPU_VERSION)
    assert apply_rules(whole, rules).matches("ConvertAvgPoolToDPUVersion") == 1
    assert apply_rules(partial, rules).matches("ConvertAvgPoolToDPUVersion") == 0


def test_pool_kernel_above_255_unchanged():
    model = unary_model("GlobalAveragePool", [1, 1, 1, 257], 13)
    result = apply_rules(model, RuleSet.of(CONVERT_AVG_POOL_TO_DPU_VERSION))
    assert result.matches("ConvertAvgPoolToDPUVersion") == 0


def test_dpu_pool_after_split():
    # A 14x14 global pool splits into 7x7 and 2x2 pools. The DPU scales the 7x7 sums by
    # 21/1024 and averages the 2x2 exactly, not 21/4096 on the 14x14 sum.
    model = unary_model("GlobalAveragePool", [1, 2, 14, 14], 13)
    rules = builtin_rules().only(["SplitLargeKernelPool", "ConvertAvgPoolToDPUVersion"])
    result = apply_rules(model, rules)
    assert result.matches("SplitLargeKernelPool") == 1
    assert result.matches("ConvertAvgPoolToDPUVersion") == 1
    feeds = random_feeds(model)
    (actual,) = run_model(result.model, feeds)
    blocks = feeds["x"].astype(np.float64).reshape(1, 2, 2, 7, 2, 7).sum(axis=(3, 5))
    expected = (blocks * 21 / 1024).mean(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(actual, expected, rtol=1e-5)


# ReduceMean


@st.composite
def reduce_mean_models(draw):
    rank = draw(st.integers(1, 4))
    shape = draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank))
    axes = draw(st.lists(st.integers(-rank, rank - 1), max_size=rank, unique_by=lambda a: a % rank))
    keepdims = draw(st.integers(0, 1))
    opset = draw(st.sampled_from([13, 17, 18, 21]))
    if opset >= 18:
        inputs, initializers = ["x"], []
        if axes:
            inputs.append("axes")
            initializers.append(constant("axes", axes, np.int64))
        node = helper.make_node("ReduceMean", inputs, ["y"], keepdims=keepdims)
    else:
        attributes = {"axes": axes} if axes else {}
        node = helper.make_node("ReduceMean", ["x"], ["y"], keepdims=keepdims, **attributes)
        initializers = []
    model = build_model([node], {"x": shape}, ["y"], initializers, opset=opset)
    reduced = tuple(sorted({a % rank for a in axes})) if axes else tuple(range(rank))
    return model, reduced, bool(keepdims), math.prod(shape[a] for a in reduced)


@settings(max_examples=30, deadline=None)
@given(reduce_mean_models())
def test_reduce_mean_dpu_property(case):
    model, axes, keepdims, count = case
    multiplier = dpu_reciprocal(count)
    expected = 0 if count * multiplier == 1 else 1

    def reference(x):
        return x.sum(axis=axes, keepdims=keepdims) * float(multiplier)

    rule = CONVERT_REDUCE_MEAN_TO_DPU_VERSION
    result = assert_dpu_rewrite(model, rule, expected, reference)
    assert op_types(result) == (["ReduceMean", "Mul"] if expected else ["ReduceMean"])


def test_reduce_mean_noop_empty_axes_unchanged():
    node = helper.make_node("ReduceMean", ["x"], ["y"], noop_with_empty_axes=1)
    model = build_model([node], {"x": [3, 3]}, ["y"], opset=18)
    result = apply_rules(model, RuleSet.of(CONVERT_REDUCE_MEAN_TO_DPU_VERSION))
    assert result.matches("ConvertReduceMeanToDPUVersion") == 0


def test_reduce_mean_axes_graph_input_rejected():
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"])
    model = build_model(
        [node], {"x": [3, 3]}, ["y"], [constant("axes", [1], np.int64)], opset=18,
        input_initializers=["axes"], output_shapes={"y": [3, 1]},
    )
    result = apply_rules(model, RuleSet.of(CONVERT_REDUCE_MEAN_TO_DPU_VERSION), explain=True)
    report = result.rules["ConvertReduceMeanToDPUVersion"]
    assert report.matches == 0
    assert any("not a constant" in reason for reason in report.reasons)


def test_reduce_mean_dynamic_axis_rejected():
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[1])
    graph = helper.make_graph(
        [node],
        "dynamic",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, "n"])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    result = apply_rules(model, RuleSet.of(CONVERT_REDUCE_MEAN_TO_DPU_VERSION))
    assert result.matches("ConvertReduceMeanToDPUVersion") == 0


# Clip


def dpu_bound(bound: float | None, missing: int) -> int:
    return missing if bound is None else min(max(round(bound), -128), 127)


@st.composite
def clip_models(draw):
    bound = st.one_of(st.none(), st.floats(-300, 300, width=32))
    lowest, highest = draw(bound), draw(bound)
    if lowest is not None and highest is not None and lowest > highest:
        lowest, highest = highest, lowest
    opset = draw(st.sampled_from([10, 11, 13, 18, 21]))
    attributes, inputs, initializers = {}, ["x"], []
    if opset < 11:
        attributes = {
            name: value for name, value in (("min", lowest), ("max", highest)) if value is not None
        }
    else:
        for name, value in (("lo", lowest), ("hi", highest)):
            inputs.append("" if value is None else name)
            if value is not None:
                initializers.append(constant(name, value))
        while inputs[-1] == "":
            inputs.pop()
    node = helper.make_node("Clip", inputs, ["y"], **attributes)
    model = build_model([node], {"x": [4, 50]}, ["y"], initializers, opset=opset)
    return model, lowest, highest


@settings(max_examples=30, deadline=None)
@given(clip_models())
def test_clip_dpu_property(case):
    model, lowest, highest = case
    low, high = dpu_bound(lowest, -128), dpu_bound(highest, 127)
    expected = 0 if (low, high) == (lowest, highest) else 1
    rng = np.random.default_rng(0)
    feeds = {"x": rng.uniform(-400, 400, size=(4, 50)).astype(np.float32)}
    # Inputs between each original bound and its DPU bound, where the two Clips differ.
    original_low = -np.inf if lowest is None else lowest
    original_high = np.inf if highest is None else highest
    feeds["x"][0, 0] = np.clip((original_low + low) / 2, -400, 400)
    feeds["x"][0, 1] = np.clip((original_high + high) / 2, -400, 400)
    rule = CONVERT_CLIP_TO_DPU_VERSION
    assert_dpu_rewrite(model, rule, expected, lambda x: np.clip(x, low, high), feeds)


def test_clip_integer_bounds_unchanged():
    model = build_model(
        [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], {"x": [4]}, ["y"],
        [constant("lo", 0.0), constant("hi", 6.0)], opset=13,
    )
    assert apply_rules(model, RuleSet.of(CONVERT_CLIP_TO_DPU_VERSION)).total_matches == 0


# Selection by options


class StandInOptions:
    """Default extra options with some values replaced, for options not built yet."""

    def __init__(self, **overrides) -> None:
        self._defaults = ExtraOptions.from_kwargs({})
        self._overrides = overrides

    def __getattr__(self, name: str):
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._defaults, name)


def test_float_graph_rules_gates_dpu_rules():
    dpu_names = {rule.name for rule in DPU_RULES}
    default_off = {"ConvertClipToDPUVersion", "ConvertSoftmaxToDPUVersion"}
    default_on = dpu_names - default_off
    cases = [
        ({"enable_npu_cnn": False, "SimulateDPU": True}, set()),
        ({"enable_npu_cnn": True, "SimulateDPU": False}, set()),
        ({"enable_npu_cnn": True, "SimulateDPU": True}, default_on),
        (
            {"enable_npu_cnn": True, "SimulateDPU": True, "ConvertClipToDPUVersion": True,
             "ConvertSigmoidToHardSigmoid": False},
            dpu_names - {"ConvertSigmoidToHardSigmoid", "ConvertSoftmaxToDPUVersion"},
        ),
        (
            {"enable_npu_cnn": True, "SimulateDPU": True, "ConvertSoftmaxToDPUVersion": True},
            default_on | {"ConvertSoftmaxToDPUVersion"},
        ),
    ]
    for overrides, expected in cases:
        chosen = float_graph_rules(StandInOptions(**overrides))
        assert dpu_names & set(chosen.names) == expected, overrides


def test_dpu_stage_runs_after_split_pool():
    rules = builtin_rules()
    stage_of = {rule.name: index for index, stage in enumerate(rules.stages) for rule in stage}
    for rule in DPU_RULES:
        assert stage_of[rule.name] > stage_of["SplitLargeKernelPool"]
        assert stage_of[rule.name] > stage_of["ConvertReduceMeanToGlobalAvgPool"]
