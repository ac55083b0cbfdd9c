"""QuantGranularity.Group: blocked weights of MatMul, Gemm and Conv in opset 21 Q/DQ."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from qrewrite import (
    Int4Spec,
    Int8Spec,
    ModelQuantizer,
    QConfig,
    QLayerConfig,
    QuantGranularity,
    UInt4Spec,
    UInt8Spec,
)
from qrewrite.errors import ConfigError
from qrewrite.model.opset import required_opset
from tests.qmodels import cosine, initializer, make_model, nodes_of, samples, tensor

GROUP = QuantGranularity.Group
# K = 40 is not a multiple of the block size 16, so every weight has a partial last block.
K = 40
BLOCK = 16


def _weights_model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Flatten", ["c"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "gw", "gb"], ["g"], name="gemm"),
        helper.make_node("Gemm", ["g", "tw"], ["t"], transB=1, name="gemm_t"),
        helper.make_node("MatMul", ["t", "mw"], ["y"], name="matmul"),
    ]
    inits = [
        tensor("cw", rng.normal(size=(4, K, 3, 3)).astype(np.float32) * 0.1),
        tensor("cb", rng.normal(size=4).astype(np.float32)),
        tensor("gw", rng.normal(size=(64, K)).astype(np.float32) * 0.1),
        tensor("gb", rng.normal(size=K).astype(np.float32)),
        tensor("tw", rng.normal(size=(48, K)).astype(np.float32) * 0.1),
        tensor("mw", rng.normal(size=(48, 16)).astype(np.float32) * 0.1),
    ]
    return make_model(nodes, [("x", ["N", K, 4, 4])], ["y"], inits)


FEEDS = samples({"x": [2, K, 4, 4]}, 4)


def _quantize(model, weight, activation=None, **options) -> onnx.ModelProto:
    config = QConfig(
        global_config=QLayerConfig(activation=activation or UInt8Spec(), weight=weight),
        PrintSummary=False,
        **options,
    )
    return ModelQuantizer(config).quantize_model(model, None, FEEDS)


def _run_optimized(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    """Run with onnxruntime's default graph optimizations, as a user would."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feed)[0]


def _blocked_dqs(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    blocked = {}
    for node in nodes_of(model, "DequantizeLinear"):
        if any(attribute.name == "block_size" for attribute in node.attribute):
            blocked[node.input[0]] = node
    return blocked


def _attribute(node: onnx.NodeProto, name: str) -> int:
    return next(attribute.i for attribute in node.attribute if attribute.name == name)


def test_group_spec_requires_group_size() -> None:
    with pytest.raises(ConfigError, match="needs group_size"):
        Int4Spec(quant_granularity=GROUP)


def test_group_size_needs_group_granularity() -> None:
    with pytest.raises(ConfigError, match=r"needs quant_granularity=QuantGranularity\.Group"):
        Int4Spec(group_size=32)


@pytest.mark.parametrize("group_size", [0, -16, 1.5, True, "32"])
def test_group_size_must_be_positive_integer(group_size) -> None:
    with pytest.raises(ConfigError, match="group_size must be a positive integer"):
        Int4Spec(quant_granularity=GROUP, group_size=group_size)


def test_group_activation_is_config_error() -> None:
    with pytest.raises(ConfigError, match="weights only"):
        QLayerConfig(activation=UInt8Spec(quant_granularity=GROUP, group_size=32))


def test_group_spec_keeps_group_size_across_types() -> None:
    spec = Int4Spec(quant_granularity=GROUP, group_size=32).with_data_type(Int8Spec.data_type)

    assert spec.group_size == 32
    assert spec.quant_granularity is GROUP


def test_group_needs_opset_21() -> None:
    config = QConfig(
        global_config=QLayerConfig(weight=Int8Spec(quant_granularity=GROUP, group_size=32)),
        PrintSummary=False,
    )

    assert required_opset(config)[0] == 21


def test_blocked_weights_have_one_scale_per_block() -> None:
    model = _weights_model()
    quantized = _quantize(model, Int4Spec(quant_granularity=GROUP, group_size=BLOCK))
    blocked = _blocked_dqs(quantized)
    # Weight -> (block axis, shape of its scale). The Gemm weight gw reduces over 64
    # inputs (4 blocks); the others over K = 40 (3 blocks, the last one partial).
    expected = {
        "cw": (1, (4, 3, 3, 3)),
        "gw": (0, (4, K)),
        "tw": (1, (48, 3)),
        "mw": (0, (3, 16)),
    }

    assert quantized.opset_import[0].version == 21
    for weight, (axis, shape) in expected.items():
        dq = blocked[f"{weight}_quantized"]
        assert _attribute(dq, "axis") == axis, weight
        assert _attribute(dq, "block_size") == BLOCK, weight
        assert initializer(quantized, dq.input[1]).shape == shape, weight
        assert initializer(quantized, dq.input[2]).shape == shape, weight
        assert initializer(quantized, dq.input[0]).shape == initializer(model, weight).shape


def test_blocked_weight_bias_stays_float() -> None:
    quantized = _quantize(_weights_model(), Int4Spec(quant_granularity=GROUP, group_size=BLOCK))
    dequantized_inputs = {node.input[0] for node in nodes_of(quantized, "DequantizeLinear")}

    assert "cb_quantized" not in dequantized_inputs
    assert "gb_quantized" not in dequantized_inputs
    assert nodes_of(quantized, "Conv")[0].input[2] == "cb"


@pytest.mark.parametrize(
    ("weight", "options", "min_cos"),
    [
        (Int4Spec(quant_granularity=GROUP, group_size=BLOCK), {}, 0.98),
        (UInt4Spec(quant_granularity=GROUP, group_size=BLOCK), {}, 0.98),
        (Int8Spec(quant_granularity=GROUP, group_size=BLOCK), {"WeightsOnly": True}, 0.999),
        (UInt8Spec(quant_granularity=GROUP, group_size=BLOCK), {"WeightsOnly": True}, 0.999),
    ],
)
def test_blocked_model_runs_close_to_float(weight, options, min_cos) -> None:
    model = _weights_model()
    quantized = _quantize(model, weight, **options)

    for feed in FEEDS:
        assert cosine(_run_optimized(model, feed), _run_optimized(quantized, feed)) >= min_cos


def test_int8_blocks_with_quantized_gemm_input_run() -> None:
    model = _weights_model()
    spec = Int8Spec(quant_granularity=GROUP, group_size=BLOCK)
    quantized = _quantize(model, spec, exclude=["matmul"])

    for feed in FEEDS:
        assert cosine(_run_optimized(model, feed), _run_optimized(quantized, feed)) >= 0.995


def test_int8_blocks_on_quantized_matmul_raise() -> None:
    spec = Int8Spec(quant_granularity=GROUP, group_size=BLOCK)

    with pytest.raises(ConfigError, match=r"MatMul 'matmul'.*8-bit blocked weights"):
        _quantize(_weights_model(), spec)


def _matmul_model(weight: np.ndarray) -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")]
    return make_model(nodes, [("x", ["N", weight.shape[0]])], ["y"], [tensor("w", weight)])


def test_group_beats_per_tensor_on_uneven_blocks() -> None:
    rng = np.random.default_rng(5)
    weight = rng.normal(size=(128, 32)).astype(np.float32)
    # Each block of 32 rows along K has its own magnitude, from 1 down to 0.001.
    magnitudes = np.array([1.0, 0.1, 0.01, 0.001], np.float32)
    weight *= np.repeat(magnitudes, 32)[:, None]
    model = _matmul_model(weight)
    # The identity as input makes the output the dequantized weight.
    identity = {"x": np.eye(128, dtype=np.float32)}

    def block_errors(spec) -> np.ndarray:
        config = QConfig(
            global_config=QLayerConfig(weight=spec), WeightsOnly=True, PrintSummary=False
        )
        quantized = ModelQuantizer(config).quantize_model(model, None, [identity])
        restored = _run_optimized(quantized, identity)
        blocks = range(0, 128, 32)
        return np.array(
            [
                np.linalg.norm(restored[i : i + 32] - weight[i : i + 32])
                / np.linalg.norm(weight[i : i + 32])
                for i in blocks
            ]
        )

    per_tensor = block_errors(Int4Spec())
    grouped = block_errors(Int4Spec(quant_granularity=GROUP, group_size=32))

    # Per tensor, the small blocks round to zero (relative error about 1).
    assert per_tensor[2:].min() > 0.9
    assert grouped.max() < 0.2
    assert grouped.mean() < 0.3 * per_tensor.mean()


def test_blocked_weights_match_numpy_reference() -> None:
    rng = np.random.default_rng(7)
    weight = rng.normal(size=(K, 8)).astype(np.float32)
    config = QConfig(
        global_config=QLayerConfig(weight=Int4Spec(quant_granularity=GROUP, group_size=BLOCK)),
        WeightsOnly=True,
        PrintSummary=False,
    )
    feeds = samples({"x": [2, K]}, 1)
    quantized = ModelQuantizer(config).quantize_model(_matmul_model(weight), None, feeds)
    dq = _blocked_dqs(quantized)["w_quantized"]
    codes = initializer(quantized, dq.input[0]).astype(np.float64)
    scale = initializer(quantized, dq.input[1])

    for block in range(3):
        rows = slice(block * BLOCK, min((block + 1) * BLOCK, K))
        expected_scale = np.abs(weight[rows]).max(axis=0) / 7
        np.testing.assert_allclose(scale[block], expected_scale, rtol=1e-6)
        expected_codes = np.clip(np.rint(weight[rows] / scale[block].astype(np.float64)), -8, 7)
        np.testing.assert_array_equal(codes[rows], expected_codes)


def test_group_output_is_byte_identical() -> None:
    spec = Int4Spec(quant_granularity=GROUP, group_size=BLOCK)
    first = _quantize(_weights_model(), spec)
    second = _quantize(_weights_model(), spec)

    assert first.SerializeToString() == second.SerializeToString()
