"""KeepSentinelTensorsFloat on small attention graphs run in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper
from qmodels import make_model, pipeline_state, producers, run, tensor

from qrewrite.calibration import TensorRange
from qrewrite.pipeline import State
from qrewrite.quantization.planner.sentinel import find_sentinel_tensors

BATCH, SEQUENCE, WIDTH = 2, 6, 8
FLOAT32_MIN = float(np.finfo(np.float32).min)


def attention_model(mask_nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]):
    """Scores = q k^T, plus the tensor "mask" that `mask_nodes` compute from "keep".

    "keep" is 1 for real tokens and 0 for padding, shape [batch, 1, sequence].
    """
    nodes = [
        helper.make_node("Transpose", ["k"], ["k_t"], perm=[0, 2, 1], name="transpose_k"),
        helper.make_node("MatMul", ["q", "k_t"], ["scores"], name="scores_matmul"),
        *mask_nodes,
        helper.make_node("Add", ["scores", "mask"], ["masked"], name="mask_add"),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["probs", "v"], ["y"], name="context_matmul"),
    ]
    inputs = [
        ("q", [BATCH, SEQUENCE, WIDTH]),
        ("k", [BATCH, SEQUENCE, WIDTH]),
        ("v", [BATCH, SEQUENCE, WIDTH]),
        ("keep", [BATCH, 1, SEQUENCE]),
    ]
    return make_model(nodes, inputs, ["y"], inits)


def float_min_mask_model():
    """The Hugging Face mask: (1 - keep) * float32 min."""
    nodes = [
        helper.make_node("Sub", ["one", "keep"], ["padding"], name="padding_sub"),
        helper.make_node("Mul", ["padding", "float_min"], ["mask"], name="mask_mul"),
    ]
    inits = [
        tensor("one", np.array(1.0, np.float32)),
        tensor("float_min", np.array(FLOAT32_MIN, np.float32)),
    ]
    return attention_model(nodes, inits)


def infinity_mask_model():
    """Where(keep < 0.5, -inf, 0): calibration leaves the infinities out of the range."""
    nodes = [
        helper.make_node("Less", ["keep", "half"], ["is_padding"], name="padding_less"),
        helper.make_node(
            "Where", ["is_padding", "minus_infinity", "zero"], ["mask"], name="mask_where"
        ),
    ]
    inits = [
        tensor("half", np.array(0.5, np.float32)),
        tensor("minus_infinity", np.array(-np.inf, np.float32)),
        tensor("zero", np.array(0.0, np.float32)),
    ]
    return attention_model(nodes, inits)


def large_mask_model(value: float):
    """(1 - keep) * value, for a value below the sentinel magnitude such as -1e9."""
    nodes = [
        helper.make_node("Sub", ["one", "keep"], ["padding"], name="padding_sub"),
        helper.make_node("Mul", ["padding", "mask_value"], ["mask"], name="mask_mul"),
    ]
    inits = [
        tensor("one", np.array(1.0, np.float32)),
        tensor("mask_value", np.array(value, np.float32)),
    ]
    return attention_model(nodes, inits)


def feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Random q, k, v, with the last two positions of the second sequence padded."""
    rng = np.random.default_rng(seed)
    keep = np.ones((BATCH, 1, SEQUENCE), np.float32)
    keep[1, 0, -2:] = 0.0
    shape = (BATCH, SEQUENCE, WIDTH)
    return [
        {
            "q": rng.normal(size=shape).astype(np.float32),
            "k": rng.normal(size=shape).astype(np.float32),
            "v": rng.normal(size=shape).astype(np.float32),
            "keep": keep,
        }
        for _ in range(count)
    ]


def quantize_state(model: onnx.ModelProto, **options) -> State:
    """Run every pipeline stage and return the final state."""
    return pipeline_state(model, feeds(4, seed=1), **options)


def max_error(model: onnx.ModelProto, state: State) -> float:
    quantized = ir.to_proto(state.model)
    errors = [
        np.abs(run(quantized, feed)[0] - run(model, feed)[0]).max() for feed in feeds(3, seed=2)
    ]
    return float(max(errors))


def input_producer(state: State, node_name: str) -> str:
    """Return the op type that writes input 0 of `node_name` in the quantized model."""
    quantized = ir.to_proto(state.model)
    node = next(node for node in quantized.graph.node if node.name == node_name)
    return producers(quantized)[node.input[0]].op_type


def test_float_min_mask_stays_float() -> None:
    model = float_min_mask_model()

    state = quantize_state(model)

    kept = state.plan.selection.kept_float
    assert "KeepSentinelTensorsFloat" in kept["mask"]
    assert "KeepSentinelTensorsFloat" in kept["masked"]
    assert input_producer(state, "softmax") == "Add"
    assert input_producer(state, "context_matmul") == "DequantizeLinear"
    assert max_error(model, state) < 0.1


def test_float_min_mask_option_off_reverts() -> None:
    model = float_min_mask_model()

    state = quantize_state(model, KeepSentinelTensorsFloat=False)

    assert "mask" not in state.plan.selection.kept_float
    assert input_producer(state, "softmax") == "DequantizeLinear"
    assert max_error(model, state) > 0.5


def test_infinity_mask_found_from_constant() -> None:
    model = infinity_mask_model()

    state = quantize_state(model)

    kept = state.plan.selection.kept_float
    assert "from sentinel tensor 'minus_infinity'" in kept["mask"]
    assert "KeepSentinelTensorsFloat" in kept["masked"]
    assert input_producer(state, "softmax") == "Add"
    assert max_error(model, state) < 0.1


def test_infinity_mask_option_off_reverts() -> None:
    model = infinity_mask_model()

    state = quantize_state(model, KeepSentinelTensorsFloat=False)

    assert "mask" not in state.plan.selection.kept_float
    assert max_error(model, state) > 0.5


def test_large_mask_found_by_ratio() -> None:
    model = large_mask_model(-1e9)

    state = quantize_state(model)

    kept = state.plan.selection.kept_float
    assert "SentinelRatio" in kept["mask"]
    assert "KeepSentinelTensorsFloat" in kept["masked"]
    assert max_error(model, state) < 0.1


def test_large_mask_below_sentinel_ratio_quantized() -> None:
    model = large_mask_model(-1e9)

    state = quantize_state(model, SentinelRatio=1e12)

    assert "mask" not in state.plan.selection.kept_float
    assert input_producer(state, "softmax") == "DequantizeLinear"


@pytest.mark.parametrize("mask_value", [-1e9, FLOAT32_MIN])
def test_find_sentinel_stops_at_softmax(mask_value: float) -> None:
    model = large_mask_model(mask_value)
    ranges = {
        "scores": TensorRange(-20.0, 20.0),
        "mask": TensorRange(mask_value, 0.0),
        "masked": TensorRange(mask_value, 20.0),
        "probs": TensorRange(0.0, 1.0),
    }

    graph = ir.from_proto(onnx.shape_inference.infer_shapes(model)).graph

    found = find_sentinel_tensors(graph, ranges, ratio=1e4)

    assert "mask" in found
    assert "masked" in found
    assert "scores" not in found
    assert "probs" not in found
    assert "y" not in found
