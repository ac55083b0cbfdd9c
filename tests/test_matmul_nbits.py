"""UseMatMulNBits: 4-bit blocked MatMul weights in com.microsoft.MatMulNBits."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from qrewrite import HQQConfig, ModelQuantizer, QConfig
from qrewrite.errors import ConfigError, NotBuiltError
from qrewrite.pipeline import build_stages
from qrewrite.quantization.matmul_nbits import NBitsSettings, dequantize_weight, quantize_weight
from tests.qmodels import cosine, initializer, make_model, nodes_of, samples, tensor

K, N = 100, 24
GROUP_SIZE = 32
N_BLOCKS = 4  # ceil(100 / 32), the last block partial


def _weight(k: int = K, n: int = N, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(k, n)) * 0.05).astype(np.float32)


def _model(weight: np.ndarray) -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "x2"], ["y"], name="dynamic_matmul"),
    ]
    return make_model(
        nodes,
        [("x", ["M", weight.shape[0]]), ("x2", [weight.shape[1], 3])],
        ["y"],
        [tensor("w", weight)],
    )


def _feeds(k: int = K, n: int = N) -> list[dict]:
    return samples({"x": [5, k], "x2": [n, 3]}, 2)


def _quantize(model: onnx.ModelProto, **params) -> onnx.ModelProto:
    config = QConfig(UseMatMulNBits=True, MatMulNBitsParams=params, PrintSummary=False)
    return ModelQuantizer(config).quantize_model(model, None, _feeds())


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _attributes(node: onnx.NodeProto) -> dict[str, int]:
    return {attribute.name: attribute.i for attribute in node.attribute}


def _unpack(packed: np.ndarray) -> np.ndarray:
    """Split each byte into its low and high nibble, low first."""
    codes = np.empty((*packed.shape[:-1], packed.shape[-1] * 2), np.uint8)
    codes[..., 0::2] = packed & 0x0F
    codes[..., 1::2] = packed >> 4
    return codes


def _reference(weight: np.ndarray, block: int, symmetric: bool):
    """Round-to-nearest 4-bit blocks along K, written out per block.

    Return the codes, scales and zero points."""
    k, n = weight.shape
    n_blocks = -(-k // block)
    codes = np.zeros((n, n_blocks, block), np.uint8)
    scales = np.zeros((n, n_blocks), np.float32)
    zero_points = np.zeros((n, n_blocks), np.int64)
    for column in range(n):
        for b in range(n_blocks):
            values = weight[b * block : (b + 1) * block, column].astype(np.float64)
            low, high = min(values.min(), 0.0), max(values.max(), 0.0)
            if symmetric:
                # The largest-magnitude value lands on code 0, -8 steps from the zero point.
                extreme = values[np.abs(values).argmax()]
                scale, zero_point = extreme / -8, 8
            else:
                scale = (high - low) / 15
                zero_point = int(np.clip(np.rint(-low / scale), 0, 15)) if scale > 0 else 0
            scale = np.float32(scale if scale != 0 else 1.0)
            q = np.clip(np.rint(values / np.float64(scale)) + zero_point, 0, 15)
            codes[column, b, : len(values)] = q
            codes[column, b, len(values) :] = zero_point
            scales[column, b] = scale
            zero_points[column, b] = zero_point
    return codes, scales, zero_points


def test_matmul_nbits_node_shapes_and_attributes() -> None:
    quantized = _quantize(_model(_weight()), GroupSize=GROUP_SIZE, AccuracyLevel=4)
    (node,) = nodes_of(quantized, "MatMulNBits")

    assert node.domain == "com.microsoft"
    assert {o.domain: o.version for o in quantized.opset_import}["com.microsoft"] == 1
    assert _attributes(node) == {
        "K": K,
        "N": N,
        "bits": 4,
        "block_size": GROUP_SIZE,
        "accuracy_level": 4,
    }
    assert len(node.input) == 3  # symmetric: the op's default zero point 8
    assert initializer(quantized, node.input[1]).shape == (N, N_BLOCKS, GROUP_SIZE // 2)
    assert initializer(quantized, node.input[1]).dtype == np.uint8
    assert initializer(quantized, node.input[2]).shape == (N * N_BLOCKS,)
    assert initializer(quantized, node.input[2]).dtype == np.float32
    # The MatMul with a computed B stays a MatMul.
    assert [n.name for n in nodes_of(quantized, "MatMul")] == ["dynamic_matmul"]
    assert "w" not in {init.name for init in quantized.graph.initializer}


def test_asymmetric_zero_points_are_packed() -> None:
    quantized = _quantize(_model(_weight()), GroupSize=GROUP_SIZE, Symmetric=False)
    (node,) = nodes_of(quantized, "MatMulNBits")
    zero_points = initializer(quantized, node.input[3])

    assert zero_points.dtype == np.uint8
    assert zero_points.shape == (N * -(-N_BLOCKS // 2),)


def test_hqq_asymmetric_zero_points_are_float() -> None:
    params = {"GroupSize": GROUP_SIZE, "Symmetric": False, "Algorithm": "HQQ"}
    quantized = _quantize(_model(_weight()), **params)
    (node,) = nodes_of(quantized, "MatMulNBits")
    zero_points = initializer(quantized, node.input[3])

    assert zero_points.dtype == np.float32
    assert zero_points.shape == (N * N_BLOCKS,)


@pytest.mark.parametrize("symmetric", [True, False])
def test_stored_blocks_equal_numpy_reference(symmetric) -> None:
    weight = _weight()
    quantized = _quantize(_model(weight), GroupSize=GROUP_SIZE, Symmetric=symmetric)
    (node,) = nodes_of(quantized, "MatMulNBits")
    codes = _unpack(initializer(quantized, node.input[1]))
    scales = initializer(quantized, node.input[2]).reshape(N, N_BLOCKS)
    if symmetric:
        zero_points = np.full((N, N_BLOCKS), 8)
    else:
        packed = initializer(quantized, node.input[3]).reshape(N, -1)
        zero_points = _unpack(packed)[:, :N_BLOCKS].astype(np.int64)
    expected_codes, expected_scales, expected_zero_points = _reference(
        weight, GROUP_SIZE, symmetric
    )

    np.testing.assert_array_equal(codes, expected_codes)
    np.testing.assert_array_equal(scales, expected_scales)
    np.testing.assert_array_equal(zero_points, expected_zero_points)
    restored = (codes.astype(np.float32) - zero_points[..., None]) * scales[..., None]
    expected = (expected_codes.astype(np.float32) - expected_zero_points[..., None]) * (
        expected_scales[..., None]
    )
    np.testing.assert_array_equal(restored, expected)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"Symmetric": False},
        {"Algorithm": "HQQ"},
        {"Algorithm": "HQQ", "Symmetric": False},
        {"GroupSize": 16, "AccuracyLevel": 1},
    ],
)
def test_onnxruntime_computes_with_stored_weights(params) -> None:
    weight = _weight()
    settings_ = NBitsSettings.from_options({"GroupSize": GROUP_SIZE, **params})
    restored = dequantize_weight(quantize_weight(weight, settings_), K)
    model = _model(weight)
    quantized = _quantize(model, **{"GroupSize": GROUP_SIZE, **params})

    for feed in _feeds():
        (actual,) = _session(quantized).run(None, feed)
        expected = np.maximum(feed["x"] @ restored, 0) @ feed["x2"]
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
        (reference,) = _session(model).run(None, feed)
        assert cosine(reference, actual) >= 0.99


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 160),
    n=st.integers(1, 6),
    group_size=st.sampled_from([16, 32, 64]),
    symmetric=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_hqq_error_never_exceeds_round_to_nearest(k, n, group_size, symmetric, seed) -> None:
    weight = _weight(k, n, seed)

    def error(algorithm: str) -> float:
        nbits = NBitsSettings(algorithm=algorithm, group_size=group_size, symmetric=symmetric)
        return float(np.abs(dequantize_weight(quantize_weight(weight, nbits), k) - weight).sum())

    assert error("HQQ") <= error("DEFAULT") * (1 + 1e-5) + 1e-9


@pytest.mark.parametrize("symmetric", [True, False])
def test_hqq_lowers_error_on_random_weight(symmetric) -> None:
    weight = _weight(256, 64, seed=11)
    errors = {}
    for algorithm in ("DEFAULT", "HQQ"):
        nbits = NBitsSettings(algorithm=algorithm, group_size=64, symmetric=symmetric)
        restored = dequantize_weight(quantize_weight(weight, nbits), 256)
        errors[algorithm] = float(np.mean(np.abs(restored - weight)))

    # Symmetric blocks start from all 16 codes, which leaves HQQ less to gain there.
    margin = 0.99 if symmetric else 0.97
    assert errors["HQQ"] < margin * errors["DEFAULT"]


@pytest.mark.parametrize("params", [{}, {"Symmetric": False}, {"Algorithm": "HQQ"}])
def test_weight_bytes_shrink_at_least_4x(params) -> None:
    weight = _weight(768, 768)
    quantized = _quantize(_model(weight), **params)
    (node,) = nodes_of(quantized, "MatMulNBits")
    stored = sum(initializer(quantized, name).nbytes for name in node.input[1:])

    assert weight.nbytes / stored >= 4 * 1.5


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"GroupSize": 24}, "GroupSize 24 is not a power of two of at least 16"),
        ({"GroupSize": 8}, "GroupSize 8 is not a power of two of at least 16"),
        ({"GroupSize": 0}, "GroupSize 0 is not a power of two"),
        ({"Bits": 8}, "Bits 8 is not supported"),
        ({"Bits": 2}, "Bits 2 is not supported"),
        ({"Algorithm": "AWQ"}, "Algorithm 'AWQ' is not one of"),
        ({"Groupsize": 32}, "unknown key 'Groupsize'"),
        ({"AccuracyLevel": 5}, "AccuracyLevel 5 is not"),
        ({"Symmetric": 1}, "Symmetric 1 is not True or False"),
    ],
)
def test_invalid_params_raise(params, message) -> None:
    with pytest.raises(ConfigError, match=message):
        QConfig(UseMatMulNBits=True, MatMulNBitsParams=params)


def test_gptq_is_not_built() -> None:
    with pytest.raises(NotBuiltError, match="GPTQ"):
        QConfig(UseMatMulNBits=True, MatMulNBitsParams={"Algorithm": "GPTQ"})


def test_params_without_use_matmul_nbits_raise() -> None:
    with pytest.raises(ConfigError, match="UseMatMulNBits is False"):
        QConfig(MatMulNBitsParams={"GroupSize": 32}, PrintSummary=False)


def test_matmul_nbits_stages_skip_calibration() -> None:
    names = [stage.name for stage in build_stages(QConfig(UseMatMulNBits=True))]

    assert names[-1] == "MatMulNBits"
    assert "calibrate" not in names
    assert "materialize" not in names


def test_excluded_matmul_stays_float() -> None:
    config = QConfig(UseMatMulNBits=True, exclude=["matmul"], PrintSummary=False)
    quantized = ModelQuantizer(config).quantize_model(_model(_weight()), None, _feeds())

    assert nodes_of(quantized, "MatMulNBits") == []


@pytest.mark.parametrize("params", [{}, {"Algorithm": "HQQ", "Symmetric": False}])
def test_matmul_nbits_output_is_byte_identical(params) -> None:
    first = _quantize(_model(_weight()), **params)
    second = _quantize(_model(_weight()), **params)

    assert first.SerializeToString() == second.SerializeToString()


def test_hqq_algo_config_is_matmul_nbits_with_hqq() -> None:
    model = _model(_weight())
    from_algorithm = QConfig(algo_config=[HQQConfig(group_size=32)], PrintSummary=False)
    from_options = QConfig(
        UseMatMulNBits=True,
        MatMulNBitsParams={"Algorithm": "HQQ", "GroupSize": 32},
        PrintSummary=False,
    )

    first = ModelQuantizer(from_algorithm).quantize_model(model, None, _feeds())
    second = ModelQuantizer(from_options).quantize_model(model, None, _feeds())

    assert nodes_of(first, "MatMulNBits")
    assert first.SerializeToString() == second.SerializeToString()


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"algo_config": [HQQConfig(bits=3)]}, NotBuiltError, "bits=3"),
        (
            {
                "algo_config": [HQQConfig()],
                "UseMatMulNBits": True,
                "MatMulNBitsParams": {"Algorithm": "DEFAULT"},
            },
            ConfigError,
            "keep one of them",
        ),
        ({"algo_config": [HQQConfig()], "UseMatMulNBits": False}, ConfigError, "UseMatMulNBits"),
    ],
)
def test_hqq_algo_config_conflicts(arguments, error, message) -> None:
    with pytest.raises(error, match=message):
        QConfig(**arguments)


def test_summary_has_no_empty_type_table(capsys) -> None:
    config = QConfig(UseMatMulNBits=True)
    ModelQuantizer(config).quantize_model(_model(_weight()), None, None)

    printed = capsys.readouterr().out
    assert "MatMulNBits" in printed
    assert "data type" not in printed
