"""Cross-layer equalization (CLEConfig): pair search, float equivalence, range balance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from qmodels import make_model, run, samples, tensor

from qrewrite import (
    AdaRoundConfig,
    CLEConfig,
    Int8Spec,
    ModelQuantizer,
    QConfig,
    QLayerConfig,
    UInt8Spec,
)
from qrewrite.algorithms.cle import equalize
from qrewrite.errors import NotBuiltError
from qrewrite.pipeline import build_stages

SPATIAL = 6


def conv_chain(
    in_channels: int,
    channels: int,
    out_channels: int,
    channel_scales: Sequence[float],
    *,
    activation: str | None = "Relu",
    depthwise: bool = False,
    kernel: int = 3,
    bias: bool = True,
    compensate: bool = False,
    seed: int = 0,
) -> onnx.ModelProto:
    """Conv -> activation [-> depthwise Conv -> activation] -> Conv.

    Output channel i of the first Conv is multiplied by channel_scales[i]. With
    `compensate`, input channel i of the last Conv is divided by it, so every channel
    contributes to the output as much as without the scales, as after BatchNorm folding.
    """
    rng = np.random.default_rng(seed)
    scales = np.asarray(channel_scales, dtype=np.float32)
    w1 = rng.normal(size=(channels, in_channels, kernel, kernel)).astype(np.float32)
    w1 *= scales.reshape(-1, 1, 1, 1)
    b1 = (rng.normal(size=channels) * scales).astype(np.float32)
    w2 = rng.normal(size=(out_channels, channels, 1, 1)).astype(np.float32)
    if compensate:
        w2 /= scales.reshape(1, -1, 1, 1)
    initializers = [tensor("w1", w1), tensor("w2", w2)]
    pads = [kernel // 2] * 4
    conv1_inputs = ["x", "w1"]
    if bias:
        initializers.append(tensor("b1", b1))
        conv1_inputs.append("b1")
    nodes = [helper.make_node("Conv", conv1_inputs, ["h1"], name="conv1", pads=pads)]
    current = "h1"
    nodes += activation_nodes(activation, current, "a1", initializers, channels)
    current = "a1" if activation else current
    if depthwise:
        wd = rng.normal(size=(channels, 1, 3, 3)).astype(np.float32)
        initializers += [tensor("wd", wd), tensor("bd", rng.normal(size=channels).astype("f"))]
        nodes.append(
            helper.make_node(
                "Conv", [current, "wd", "bd"], ["hd"], name="dw", group=channels, pads=[1] * 4
            )
        )
        nodes += activation_nodes(activation, "hd", "ad", initializers, channels)
        current = "ad" if activation else "hd"
    nodes.append(helper.make_node("Conv", [current, "w2"], ["y"], name="conv2"))
    return make_model(nodes, [("x", [1, in_channels, SPATIAL, SPATIAL])], ["y"], initializers)


def activation_nodes(
    activation: str | None,
    source: str,
    output: str,
    initializers: list[onnx.TensorProto],
    channels: int,
) -> list[onnx.NodeProto]:
    """The activation between two layers, with the initializers it needs."""
    if activation is None:
        return []
    if activation == "PRelu":
        slope_name = f"slope_{output}"
        slopes = np.linspace(0.05, 0.4, channels, dtype=np.float32).reshape(channels, 1, 1)
        initializers.append(tensor(slope_name, slopes))
        return [helper.make_node("PRelu", [source, slope_name], [output])]
    if activation == "LeakyRelu":
        return [helper.make_node("LeakyRelu", [source], [output], alpha=0.1)]
    if activation in ("Clip6", "Clip0"):
        initializers.append(tensor(f"low_{output}", np.array(0.0, np.float32)))
        inputs = [source, f"low_{output}"]
        if activation == "Clip6":
            initializers.append(tensor(f"high_{output}", np.array(6.0, np.float32)))
            inputs.append(f"high_{output}")
        return [helper.make_node("Clip", inputs, [output])]
    return [helper.make_node(activation, [source], [output])]


def replace_initializer(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    for init in model.graph.initializer:
        if init.name == name:
            init.CopyFrom(tensor(name, array))
            return
    raise KeyError(name)


def equalized(model: onnx.ModelProto, config: CLEConfig | None = None):
    return equalize(ir.from_proto(model), config or CLEConfig())


def float_outputs(model: onnx.ModelProto | ir.Model, feeds: list[dict]) -> list[np.ndarray]:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    return [run(proto, feed)[0] for feed in feeds]


def weights(model: onnx.ModelProto | ir.Model) -> dict[str, np.ndarray]:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    return {init.name: onnx.numpy_helper.to_array(init) for init in proto.graph.initializer}


def assert_same_function(before: onnx.ModelProto, after: ir.Model, in_channels: int) -> None:
    feeds = samples({"x": [1, in_channels, SPATIAL, SPATIAL]}, 2)
    outputs = zip(float_outputs(before, feeds), float_outputs(after, feeds), strict=True)
    for expected, actual in outputs:
        tolerance = 1e-4 * max(float(np.abs(expected).max()), 1e-6)
        assert np.abs(actual - expected).max() <= tolerance


def per_tensor_config(*algorithms: CLEConfig, **options: object) -> QConfig:
    settings = {"PerChannelWeightsByDefault": False, "PrintSummary": False, **options}
    return QConfig(
        global_config=QLayerConfig(activation=UInt8Spec(), weight=Int8Spec()),
        algo_config=list(algorithms),
        **settings,
    )


# Channel scales of the first layer, as powers of ten.
channel_exponents = st.lists(
    st.floats(min_value=-2.0, max_value=2.0, allow_nan=False), min_size=2, max_size=8
)


@settings(max_examples=30, deadline=None)
@given(
    exponents=channel_exponents,
    in_channels=st.integers(1, 4),
    out_channels=st.integers(1, 4),
    kernel=st.sampled_from([1, 3]),
    depthwise=st.booleans(),
    bias=st.booleans(),
    compensate=st.booleans(),
    activation=st.sampled_from([None, "Relu", "LeakyRelu", "PRelu", "Clip0"]),
    seed=st.integers(0, 1000),
)
def test_cle_keeps_float_outputs(
    exponents, in_channels, out_channels, kernel, depthwise, bias, compensate, activation, seed
) -> None:
    scales = [10.0**e for e in exponents]
    model = conv_chain(
        in_channels,
        len(scales),
        out_channels,
        scales,
        activation=activation,
        depthwise=depthwise,
        kernel=kernel,
        bias=bias,
        compensate=compensate,
        seed=seed,
    )

    result = equalized(model)

    assert len(result.pairs) == (2 if depthwise else 1)
    assert_same_function(model, result.model, in_channels)


def test_cle_leaves_input_unchanged() -> None:
    model = conv_chain(3, 6, 4, [0.01, 0.1, 1, 10, 100, 1], depthwise=True)
    serialized = model.SerializeToString()
    model_ir = ir.from_proto(model)
    before = weights(model_ir)

    result = equalized(model)
    equalize(model_ir, CLEConfig())
    ModelQuantizer(per_tensor_config(CLEConfig())).quantize_model(
        model, None, samples({"x": [1, 3, SPATIAL, SPATIAL]}, 2)
    )

    assert len(result.pairs) == 2
    assert model.SerializeToString() == serialized
    for name, array in weights(model_ir).items():
        np.testing.assert_array_equal(array, before[name])


@pytest.mark.parametrize("append_bias", [False, True])
def test_cle_balances_channel_ranges(append_bias: bool) -> None:
    model = conv_chain(3, 8, 5, np.logspace(-2, 2, 8), seed=3)
    original = weights(model)

    result = equalized(model, CLEConfig(cle_scale_append_bias=append_bias))
    w1 = weights(result.model)["w1"]
    b1 = weights(result.model)["b1"]
    w2 = weights(result.model)["w2"]

    head_range = np.abs(w1).reshape(8, -1).max(axis=1)
    if append_bias:
        head_range = np.maximum(head_range, np.abs(b1))
    tail_range = np.abs(w2).transpose(1, 0, 2, 3).reshape(8, -1).max(axis=1)
    np.testing.assert_allclose(head_range, tail_range, rtol=1e-5)
    original_ratio = np.abs(original["w1"]).reshape(8, -1).max(axis=1)
    assert original_ratio.max() / original_ratio.min() > 1000
    assert head_range.max() / head_range.min() < 100


def test_cle_append_bias_changes_scales() -> None:
    model = conv_chain(3, 8, 5, np.logspace(-2, 2, 8), seed=3)
    # A bias far above its channel's weights sets that channel's head range.
    large_bias = np.full(8, 500.0, dtype=np.float32)
    replace_initializer(model, "b1", large_bias)

    with_bias = weights(equalized(model, CLEConfig(cle_scale_append_bias=True)).model)
    without_bias = weights(equalized(model, CLEConfig(cle_scale_append_bias=False)).model)

    assert not np.allclose(with_bias["w1"], without_bias["w1"])


def test_cle_balances_depthwise_middle() -> None:
    model = conv_chain(3, 6, 4, [1] * 6, depthwise=True, seed=1)
    depthwise_scales = np.logspace(-2, 2, 6, dtype=np.float32).reshape(-1, 1, 1, 1)
    wd = weights(model)["wd"] * depthwise_scales
    replace_initializer(model, "wd", wd)

    result = equalized(model, CLEConfig(cle_steps=4, cle_scale_append_bias=False))
    dw_range = np.abs(weights(result.model)["wd"]).reshape(6, -1).max(axis=1)

    original_range = np.abs(wd).reshape(6, -1).max(axis=1)
    assert original_range.max() / original_range.min() > 1000
    assert dw_range.max() / dw_range.min() < 100
    assert_same_function(model, result.model, 3)
    assert [pair.describe() for pair in result.pairs] == ["conv1 -> dw", "dw -> conv2"]


@pytest.mark.parametrize("activation", ["Sigmoid", "HardSwish", "Clip6"])
def test_cle_skips_non_homogeneous_activation(activation: str) -> None:
    model = conv_chain(3, 4, 2, [0.01, 1, 10, 100], activation=activation)

    result = equalized(model)

    assert result.pairs == ()
    for name, array in weights(result.model).items():
        np.testing.assert_array_equal(array, weights(model)[name])


def test_cle_skips_tensor_with_second_reader() -> None:
    model = conv_chain(3, 4, 2, [0.01, 1, 10, 100])
    model.graph.node.append(helper.make_node("Sigmoid", ["a1"], ["side"]))
    model.graph.output.append(helper.make_tensor_value_info("side", onnx.TensorProto.FLOAT, None))

    result = equalized(model)

    assert result.pairs == ()
    np.testing.assert_array_equal(weights(result.model)["w1"], weights(model)["w1"])


def test_cle_skips_shared_weight() -> None:
    model = conv_chain(3, 4, 4, [0.01, 1, 10, 100], kernel=1, bias=False)
    model.graph.node.append(helper.make_node("Conv", ["x", "w1"], ["other"], name="other"))
    model.graph.output.append(helper.make_tensor_value_info("other", onnx.TensorProto.FLOAT, None))

    assert equalized(model).pairs == ()


def test_cle_skips_non_constant_weight() -> None:
    model = conv_chain(3, 4, 2, [0.01, 1, 10, 100])
    model.graph.input.append(
        helper.make_tensor_value_info("w2", onnx.TensorProto.FLOAT, [2, 4, 1, 1])
    )

    assert equalized(model).pairs == ()


def test_cle_grouped_tail() -> None:
    rng = np.random.default_rng(5)
    scales = np.logspace(-2, 2, 8, dtype=np.float32).reshape(-1, 1, 1, 1)
    w1 = (rng.normal(size=(8, 2, 1, 1)) * scales).astype(np.float32)
    w2 = rng.normal(size=(6, 4, 1, 1)).astype(np.float32)
    model = make_model(
        [
            helper.make_node("Conv", ["x", "w1"], ["h"], name="conv1"),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("Conv", ["a", "w2"], ["y"], name="conv2", group=2),
        ],
        [("x", [1, 2, SPATIAL, SPATIAL])],
        ["y"],
        [tensor("w1", w1), tensor("w2", w2)],
    )

    result = equalized(model, CLEConfig(cle_scale_append_bias=False))
    w1_after = weights(result.model)["w1"]
    w2_after = weights(result.model)["w2"]

    assert len(result.pairs) == 1
    assert_same_function(model, result.model, 2)
    # Input channel 4 + j of conv2 is column j of output filters 3 to 5.
    tail_range = np.concatenate(
        [np.abs(w2_after[:3]).max(axis=(0, 2, 3)), np.abs(w2_after[3:]).max(axis=(0, 2, 3))]
    )
    np.testing.assert_allclose(np.abs(w1_after).reshape(8, -1).max(axis=1), tail_range, rtol=1e-5)


def test_cle_matmul_add_and_gemm() -> None:
    rng = np.random.default_rng(7)
    scales = np.logspace(-2, 2, 6, dtype=np.float32)
    w1 = (rng.normal(size=(5, 6)) * scales).astype(np.float32)
    b1 = (rng.normal(size=6) * scales).astype(np.float32)
    # Gemm with transB=1 stores its weight as [out, in].
    w2 = rng.normal(size=(4, 6)).astype(np.float32)
    w3 = rng.normal(size=(4, 3)).astype(np.float32)
    model = make_model(
        [
            helper.make_node("MatMul", ["x", "w1"], ["m"], name="matmul1"),
            helper.make_node("Add", ["m", "b1"], ["h"], name="add1"),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("Gemm", ["a", "w2"], ["g"], name="gemm2", transB=1),
            helper.make_node("LeakyRelu", ["g"], ["l"], alpha=0.2),
            helper.make_node("MatMul", ["l", "w3"], ["y"], name="matmul3"),
        ],
        [("x", [2, 5])],
        ["y"],
        [tensor("w1", w1), tensor("b1", b1), tensor("w2", w2), tensor("w3", w3)],
    )
    feeds = samples({"x": [2, 5]}, 3)

    result = equalized(model, CLEConfig(cle_scale_append_bias=False))
    after = weights(result.model)

    assert [pair.describe() for pair in result.pairs] == [
        "matmul1 -> gemm2",
        "gemm2 -> matmul3",
    ]
    outputs = zip(float_outputs(model, feeds), float_outputs(result.model, feeds), strict=True)
    for expected, actual in outputs:
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # After the second pair, gemm2's rows are balanced against matmul3's rows.
    np.testing.assert_allclose(
        np.abs(after["w2"]).max(axis=1), np.abs(after["w3"]).max(axis=1), rtol=1e-5
    )


def test_cle_steps_repeat_sweep() -> None:
    model = conv_chain(3, 6, 4, [0.01, 0.1, 1, 10, 100, 3], depthwise=True, seed=2)

    single = equalized(model, CLEConfig(cle_steps=1, cle_scale_append_bias=False))
    three = equalized(model, CLEConfig(cle_steps=3, cle_scale_append_bias=False))

    assert three.steps == 3
    assert "3 step(s)" in three.summary_line()
    assert not np.allclose(weights(single.model)["wd"], weights(three.model)["wd"])
    assert_same_function(model, three.model, 3)


def relative_error(reference: list[np.ndarray], actual: list[np.ndarray]) -> float:
    difference = sum(float(np.sum((a - r) ** 2)) for a, r in zip(actual, reference, strict=True))
    return float(np.sqrt(difference / sum(float(np.sum(r**2)) for r in reference)))


def test_cle_lowers_per_tensor_error() -> None:
    model = conv_chain(3, 8, 4, np.logspace(-2, 1, 8), compensate=True, seed=4)
    calibration = samples({"x": [1, 3, SPATIAL, SPATIAL]}, 8)
    evaluation = samples({"x": [1, 3, SPATIAL, SPATIAL]}, 8, seed=1)
    reference = float_outputs(model, evaluation)

    plain = ModelQuantizer(per_tensor_config()).quantize_model(model, None, calibration)
    with_cle = ModelQuantizer(per_tensor_config(CLEConfig())).quantize_model(
        model, None, calibration
    )
    error_plain = relative_error(reference, float_outputs(plain, evaluation))
    error_cle = relative_error(reference, float_outputs(with_cle, evaluation))

    assert error_cle < 0.5 * error_plain


def test_cle_stage_and_summary_note(capsys) -> None:
    model = conv_chain(3, 4, 2, [0.01, 1, 10, 100])
    config = per_tensor_config(CLEConfig(cle_steps=2), PrintSummary=True)

    names = [stage.name for stage in build_stages(config)]
    ModelQuantizer(config).quantize_model(model, None, samples({"x": [1, 3, 6, 6]}, 2))

    assert names.index("float-graph rules") < names.index("cross-layer equalization")
    assert names.index("cross-layer equalization") < names.index("prepare")
    note = "cross-layer equalization: 1 layer pair(s) equalized, 2 step(s)"
    assert note in capsys.readouterr().out
    assert "cross-layer equalization" not in [s.name for s in build_stages(per_tensor_config())]


def test_cle_config_accepted_others_not_built() -> None:
    assert QConfig(algo_config=[CLEConfig()]).algo_config == (CLEConfig(),)
    with pytest.raises(NotBuiltError, match="AdaRoundConfig"):
        QConfig(algo_config=[CLEConfig(), AdaRoundConfig()])


def ppocr_cls_min_cosines(**options: object) -> tuple[float, float, bool]:
    """Quantize PP-OCR cls with per-tensor weights without and with CLE.

    Returns the minimum cosines without and with CLE, and whether the CLE model keeps
    every float label.
    """
    from test_real_models import MODELS_DIR, cosines, stored_inputs
    from test_real_models import run as run_images

    path = str(Path(MODELS_DIR) / "ch_ppocr_mobile_v2.0_cls_infer.onnx")
    calibration = stored_inputs()["cls_calibration"]
    evaluation = stored_inputs()["cls_evaluation"]
    feeds = [{"x": calibration[i : i + 1]} for i in range(len(calibration))]
    expected = run_images(path, evaluation)
    results = []
    # The measured table in docs/design.md keeps the decomposed hard swish and opset 11.
    options = {"FuseHardSwish": False, **options}
    for algorithms in ((), (CLEConfig(),)):
        config = per_tensor_config(*algorithms, **options)
        quantized = ModelQuantizer(config).quantize_model(path, None, feeds)
        results.append(run_images(quantized.SerializeToString(), evaluation))
    plain, with_cle = results
    labels_kept = bool((with_cle.argmax(axis=1) == expected.argmax(axis=1)).all())
    return cosines(expected, plain).min(), cosines(expected, with_cle).min(), labels_kept


def test_cle_ppocr_cls_keeps_labels() -> None:
    pytest.importorskip("rapidocr_onnxruntime")

    # x86_64, onnxruntime 1.32: 0.9996 without CLE, 0.9977 with it. The depthwise Convs
    # stay float (KeepSlowOpsFloat), so CLE has little to gain here.
    plain, with_cle, labels_kept = ppocr_cls_min_cosines()

    assert labels_kept
    assert with_cle > 0.99
    assert plain > 0.99


def test_cle_ppocr_cls_quantized_depthwise() -> None:
    pytest.importorskip("rapidocr_onnxruntime")

    # x86_64, onnxruntime 1.32: 0.958 without CLE, 0.997 with it.
    plain, with_cle, labels_kept = ppocr_cls_min_cosines(KeepSlowOpsFloat=False)

    assert labels_kept
    assert with_cle > plain + 0.02
