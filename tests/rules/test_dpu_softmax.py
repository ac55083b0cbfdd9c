"""Tests of ConvertSoftmaxToDPUVersion, the DPU's bfloat16 softmax.

The rewritten model must compute the DPU arithmetic, which the numpy reference below
spells out with ml_dtypes' bfloat16, and must stay within the contract's error against
exact softmax for logits in [-SOFTMAX_INPUT_BOUND, SOFTMAX_INPUT_BOUND].
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper
from qrewrite.rules.dpu_softmax import (
    CONVERT_SOFTMAX_TO_DPU_VERSION,
    SOFTMAX_INPUT_BOUND,
    SOFTMAX_MAX_ERROR,
)
from rule_harness import assert_rewrite, build_model, run_model

from qrewrite import ModelQuantizer, QConfig
from qrewrite.rewrite import RuleSet, apply_rules
from tests.qmodels import make_model, nodes_of, run, samples, tensor

RULE = CONVERT_SOFTMAX_TO_DPU_VERSION
RULES = RuleSet.of(RULE)


def bfloat16(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (half to even) and return them as float32."""
    return np.asarray(values, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def dpu_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Return the DPU's softmax of float32 `x`, each step rounded to bfloat16."""
    logits = bfloat16(x)
    exponent = np.floor(bfloat16(logits * np.float32(1.4453125)))
    remainder = bfloat16(logits - bfloat16(exponent * np.float32(0.69140625)))
    poly = bfloat16(remainder * np.float32(0.21875) + np.float32(0.486328125))
    poly = bfloat16(remainder * poly + np.float32(1.0))
    poly = bfloat16(remainder * poly + np.float32(1.0))
    power = bfloat16(np.ldexp(np.float32(1.0), exponent.astype(np.int32)))
    exp = bfloat16(power * poly)
    total = bfloat16(exp.sum(axis=axis, keepdims=True, dtype=np.float32))
    return bfloat16(exp / total)


def exact_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def softmax_model(shape: list[int], opset: int, axis: int | None) -> onnx.ModelProto:
    attributes = {} if axis is None else {"axis": axis}
    node = helper.make_node("Softmax", ["x"], ["y"], **attributes)
    return build_model([node], {"x": shape}, ["y"], opset=opset)


@st.composite
def softmax_cases(draw):
    """A shape, an axis (None for the default -1) and logits within the contract's range."""
    shape = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    rank = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-rank, rank - 1)))
    # The reduced axis gets at least two elements, so the output is not all ones.
    reduced = -1 if axis is None else axis
    shape[reduced] = max(shape[reduced], 2)
    bound = SOFTMAX_INPUT_BOUND
    elements = st.floats(-bound, bound, width=32, allow_subnormal=False)
    x = draw(hnp.arrays(np.float32, shape, elements=elements))
    return shape, axis, x


@settings(max_examples=40, deadline=None)
@given(softmax_cases(), st.sampled_from([13, 17, 18, 21]))
def test_softmax_dpu_property(case, opset):
    shape, axis, x = case
    model = softmax_model(shape, opset, axis)
    # assert_rewrite also checks the contract: the error against onnxruntime's Softmax.
    result = assert_rewrite(model, RULES, {RULE.name: 1}, RULE.contract, {"x": x})
    assert "Softmax" not in {node.op_type for node in result.model.graph.node}

    (actual,) = run_model(result.model, {"x": x})
    reduced = -1 if axis is None else axis
    # float32 sums may add in a different order in numpy and onnxruntime, so the rounded
    # total can differ by one bfloat16 step (relative 2^-7) and the quotient by two.
    np.testing.assert_allclose(actual, dpu_softmax(x, reduced), rtol=2**-6, atol=0)
    assert np.abs(actual - exact_softmax(x, reduced)).max() <= SOFTMAX_MAX_ERROR


def test_softmax_dpu_differs_from_exact():
    x = np.linspace(-SOFTMAX_INPUT_BOUND, SOFTMAX_INPUT_BOUND, 64, dtype=np.float32)
    x = x.reshape(8, 8)
    result = apply_rules(softmax_model([8, 8], 18, None), RULES)
    (actual,) = run_model(result.model, {"x": x})
    np.testing.assert_array_equal(actual, dpu_softmax(x, -1))
    assert np.abs(actual - exact_softmax(x, -1)).max() > 1e-3


def test_softmax_dpu_worst_pair_within_contract():
    # The bfloat16 logits 22.75 and 22.0, taken at the far ends of their rounding
    # intervals, give the largest error of the exhaustive search over [-32, 32].
    x = np.array([[22.8124, 21.9376]], np.float32)
    result = apply_rules(softmax_model([1, 2], 18, None), RULES)
    (actual,) = run_model(result.model, {"x": x})
    error = np.abs(actual - exact_softmax(x, -1)).max()
    assert 0.05 < error <= SOFTMAX_MAX_ERROR


def test_softmax_dpu_large_logit_gives_nan():
    # 2^n overflows bfloat16 for logits above 88.25, because no maximum is subtracted.
    x = np.array([[88.26, 0.0], [88.25, 0.0]], np.float32)
    result = apply_rules(softmax_model([2, 2], 18, None), RULES)
    (actual,) = run_model(result.model, {"x": x})
    assert np.isnan(actual[0, 0])
    assert actual[0, 1] == 0.0
    assert np.isfinite(actual[1]).all()


def test_softmax_dpu_tiny_logits_give_nan():
    # Every exp underflows to 0 below about -92.25, so the row is 0 / 0.
    x = np.full([1, 3], -95.0, np.float32)
    result = apply_rules(softmax_model([1, 3], 18, None), RULES)
    (actual,) = run_model(result.model, {"x": x})
    assert np.isnan(actual).all()


def test_softmax_dpu_before_opset_13_rejected():
    for opset in (11, 12):
        model = softmax_model([2, 3, 4], opset, 1)
        result = apply_rules(model, RULES, explain=True)
        assert result.matches(RULE.name) == 0
        assert "opset in [13" in " ".join(result.rules[RULE.name].reasons)


def test_softmax_dpu_float16_rejected():
    node = helper.make_node("Softmax", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "softmax_float16",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, [2, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    result = apply_rules(model, RULES, explain=True)
    assert result.matches(RULE.name) == 0
    assert "float32 only" in " ".join(result.rules[RULE.name].reasons)


def _conv_gemm_softmax_model() -> onnx.ModelProto:
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c1"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"]),
    ]
    inits = [
        tensor("w1", (rng.normal(size=(4, 3, 3, 3)) * 0.3).astype(np.float32)),
        tensor("b1", (rng.normal(size=4) * 0.1).astype(np.float32)),
        tensor("w2", (rng.normal(size=(10, 256)) * 0.1).astype(np.float32)),
        tensor("b2", (rng.normal(size=10) * 0.1).astype(np.float32)),
    ]
    return make_model(nodes, [("x", [1, 3, 8, 8])], ["y"], inits, opset=18)


def test_quantize_model_replaces_softmax():
    feeds = samples({"x": [1, 3, 8, 8]}, 8)
    config = QConfig(enable_npu_cnn=True, ConvertSoftmaxToDPUVersion=True, PrintSummary=False)
    quantized = ModelQuantizer(config).quantize_model(_conv_gemm_softmax_model(), None, feeds)

    onnx.checker.check_model(quantized, full_check=True)
    assert not nodes_of(quantized, "Softmax")
    assert nodes_of(quantized, "Cast")
    assert nodes_of(quantized, "ReduceSum")
    (output,) = run(quantized, feeds[0])
    assert output.shape == (1, 10)
    assert np.isfinite(output).all()


def test_quantize_model_keeps_the_bfloat16_steps_float():
    feeds = samples({"x": [1, 3, 8, 8]}, 8)
    config = QConfig(enable_npu_cnn=True, ConvertSoftmaxToDPUVersion=True, PrintSummary=False)
    quantized = ModelQuantizer(config).quantize_model(_conv_gemm_softmax_model(), None, feeds)

    arithmetic = {"Mul", "Add", "Sub", "Div", "ReduceSum"}
    made_by = {output: node for node in quantized.graph.node for output in node.output}
    after_softmax_input = [
        node
        for node in quantized.graph.node
        if node.op_type in arithmetic
        and any(made_by.get(name, node).op_type == "Cast" for name in node.input)
    ]
    assert after_softmax_input
    for node in after_softmax_input:
        readers = [n.op_type for n in quantized.graph.node if node.output[0] in n.input]
        assert "QuantizeLinear" not in readers, node.name
    (gemm,) = nodes_of(quantized, "Gemm")
    assert [n.op_type for n in quantized.graph.node if gemm.output[0] in n.input] == [
        "QuantizeLinear"
    ]
    for feed in feeds:
        (output,) = run(quantized, feed)
        assert abs(float(output.sum()) - 1.0) < 0.05
