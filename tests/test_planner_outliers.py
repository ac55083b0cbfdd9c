"""KeepOutlierTensorsFloat on a small MatMul chain with one outlier channel."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper
from qmodels import make_model, pipeline_state, producers, run, tensor

from qrewrite.calibration.channel_peaks import ChannelPeakCollector
from qrewrite.pipeline import State
from qrewrite.quantization.planner.outliers import outlier_ratio

TOKENS, CHANNELS = 16, 32
OUTLIER_CHANNEL = 5
RNG = np.random.default_rng(7)


def outlier_model() -> onnx.ModelProto:
    """x @ w1 has one channel 200 times larger than the others, then @ w2 mixes them."""
    w1 = RNG.normal(scale=0.2, size=(CHANNELS, CHANNELS)).astype(np.float32)
    w1[:, OUTLIER_CHANNEL] *= 200.0
    w2 = RNG.normal(scale=0.2, size=(CHANNELS, CHANNELS)).astype(np.float32)
    w2[OUTLIER_CHANNEL, :] /= 200.0
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["hidden"], name="first_matmul"),
        helper.make_node("MatMul", ["hidden", "w2"], ["y"], name="second_matmul"),
    ]
    return make_model(
        nodes, [("x", [1, TOKENS, CHANNELS])], ["y"], [tensor("w1", w1), tensor("w2", w2)]
    )


def feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    shape = (1, TOKENS, CHANNELS)
    return [{"x": rng.normal(size=shape).astype(np.float32)} for _ in range(count)]


def quantize_state(model: onnx.ModelProto, **options) -> State:
    """Run every pipeline stage and return the final state."""
    return pipeline_state(model, feeds(4, seed=1), **options)


def relative_error(model: onnx.ModelProto, state: State) -> float:
    """Return the worst ||quantized - float|| / ||float|| of y over held-out feeds."""
    quantized = ir.to_proto(state.model)
    errors = []
    for feed in feeds(3, seed=2):
        expected = run(model, feed)[0]
        difference = run(quantized, feed)[0] - expected
        errors.append(np.linalg.norm(difference) / np.linalg.norm(expected))
    return float(max(errors))


def input_producer(state: State, node_name: str, index: int) -> str:
    """Return the op type that writes an input of `node_name`, or "initializer"."""
    quantized = ir.to_proto(state.model)
    node = next(node for node in quantized.graph.node if node.name == node_name)
    producer = producers(quantized).get(node.input[index])
    return "initializer" if producer is None else producer.op_type


def test_outlier_tensor_stays_float() -> None:
    model = outlier_model()

    state = quantize_state(model)

    kept = state.plan.selection.kept_float
    assert "KeepOutlierTensorsFloat" in kept["hidden"]
    assert f"channel {OUTLIER_CHANNEL} of {CHANNELS}" in kept["hidden"]
    assert input_producer(state, "second_matmul", 0) == "MatMul"
    assert input_producer(state, "first_matmul", 0) == "DequantizeLinear"
    assert relative_error(model, state) < 0.05


def test_outlier_consumer_weights_stay_float() -> None:
    model = outlier_model()

    state = quantize_state(model)

    kept = state.plan.selection.kept_float
    assert "KeepOutlierTensorsFloat" in kept["w2"]
    assert input_producer(state, "second_matmul", 1) == "initializer"
    assert input_producer(state, "first_matmul", 1) == "DequantizeLinear"


def test_outlier_option_off_reverts() -> None:
    model = outlier_model()

    state = quantize_state(model, KeepOutlierTensorsFloat=False)

    assert "hidden" not in state.plan.selection.kept_float
    assert state.channel_peaks is None
    assert input_producer(state, "second_matmul", 0) == "DequantizeLinear"
    assert input_producer(state, "second_matmul", 1) == "DequantizeLinear"
    assert relative_error(model, state) > 0.3


def test_outlier_ratio_above_threshold_quantized() -> None:
    model = outlier_model()

    state = quantize_state(model, OutlierChannelRatio=1e6)

    assert "hidden" not in state.plan.selection.kept_float
    assert input_producer(state, "second_matmul", 0) == "DequantizeLinear"


def test_channel_peaks_match_numpy() -> None:
    model = onnx.shape_inference.infer_shapes(outlier_model())
    samples = feeds(3, seed=4)
    graph = ir.from_proto(model).graph
    collector = ChannelPeakCollector(model, graph, ["hidden", "y"])

    passed = list(collector.observe(samples))

    assert len(passed) == len(samples)
    peaks = collector.peaks()
    x = np.concatenate([sample["x"] for sample in samples], axis=1)
    w1 = onnx.numpy_helper.to_array(model.graph.initializer[0])
    y = np.concatenate([run(model, sample)[0] for sample in samples], axis=1)
    assert peaks["hidden"].shape == (CHANNELS,)
    np.testing.assert_allclose(peaks["hidden"], np.abs(x @ w1).max(axis=(0, 1)), rtol=1e-4)
    np.testing.assert_allclose(peaks["y"], np.abs(y).max(axis=(0, 1)), rtol=1e-4)


def test_channel_peaks_skip_varying_last_axis() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu")]
    model = make_model(nodes, [("x", [1, 4, "width"])], ["r"])
    graph = ir.from_proto(onnx.shape_inference.infer_shapes(model)).graph
    collector = ChannelPeakCollector(model, graph, ["r"])

    collector.update({"x": np.ones((1, 4, 8), np.float32)})
    collector.update({"x": np.ones((1, 4, 9), np.float32)})

    assert "r" not in collector.peaks()


def test_outlier_ratio_edge_cases() -> None:
    assert outlier_ratio(np.zeros(8, np.float32)) == 0.0
    assert outlier_ratio(np.array([0, 0, 0, 0, 0, 1, 1, 1], np.float32)) == float("inf")
    assert outlier_ratio(np.array([1, 1, 1, 1, 1, 1, 1, 10], np.float32)) == 10.0
