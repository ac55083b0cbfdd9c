"""End-to-end behaviour of ModelQuantizer on small synthetic models."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import helper
from qmodels import (
    consumers,
    dq_params,
    initializer,
    make_model,
    min_cosine,
    nodes_of,
    producers,
    samples,
    tensor,
)

from qrewrite import (
    CalibrationDataError,
    ConfigError,
    Int4Spec,
    Int8Spec,
    Int16Spec,
    ModelInputError,
    ModelQuantizer,
    QConfig,
    QLayerConfig,
    QuantGranularity,
    ScaleType,
    UInt4Spec,
    UInt8Spec,
    UInt16Spec,
)

RNG = np.random.default_rng(7)
CHANNEL = QuantGranularity.Channel


def _w(*shape: int, scale: float = 0.5) -> np.ndarray:
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def conv_gemm_model(opset: int = 17) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1, name="gemm"),
    ]
    inits = [
        tensor("cw", _w(8, 3, 3, 3)),
        tensor("cb", _w(8)),
        tensor("gw", _w(10, 128, scale=0.1)),
        tensor("gb", _w(10)),
    ]
    return make_model(nodes, [("x", ["N", 3, 8, 8])], ["y"], inits, opset=opset)


FEEDS = samples({"x": [2, 3, 8, 8]}, 8)


def quantize(model, feeds=FEEDS, activation=None, weight=None, **options):
    config = QConfig(
        global_config=QLayerConfig(
            activation=activation if activation is not None else UInt8Spec(),
            weight=weight if weight is not None else Int8Spec(quant_granularity=CHANNEL),
        ),
        PrintSummary=False,
        **options,
    )
    return ModelQuantizer(config).quantize_model(model, None, feeds)


def dq_feeding(model, node_name: str, index: int) -> onnx.NodeProto:
    node = next(n for n in model.graph.node if n.name == node_name)
    producer = producers(model)[node.input[index]]
    assert producer.op_type == "DequantizeLinear", f"{node_name} input {index} is not dequantized"
    return producer


SPECS = [
    (Int8Spec(), 0.98),
    (UInt8Spec(), 0.98),
    (Int8Spec(symmetric=False), 0.98),
    (UInt8Spec(symmetric=True), 0.98),
    (Int16Spec(), 0.999),
    (UInt16Spec(), 0.999),
    (Int4Spec(), 0.8),
    (UInt4Spec(), 0.8),
    (Int8Spec(scale_type=ScaleType.PowerOf2), 0.97),
]


@pytest.mark.parametrize(("spec", "threshold"), SPECS, ids=lambda v: repr(v)[:40])
def test_types_run_and_stay_close(spec, threshold) -> None:
    model = conv_gemm_model()
    quantized = quantize(model, activation=spec, weight=spec)

    onnx.checker.check_model(quantized, full_check=True)
    quantize_nodes = nodes_of(quantized, "QuantizeLinear")
    assert quantize_nodes
    for node in quantize_nodes:
        zero_point = initializer(quantized, node.input[2])
        assert zero_point.dtype.name.lower() == spec.data_type.value.lower()
        if spec.symmetric and spec.data_type.signed:
            assert np.all(zero_point.astype(np.int64) == 0)
        if spec.scale_type is ScaleType.PowerOf2:
            scale = initializer(quantized, node.input[1])
            assert np.all(np.log2(scale) == np.round(np.log2(scale)))
    assert min_cosine(model, quantized, FEEDS[:3]) > threshold


def test_low_and_high_bit_types_raise_opset() -> None:
    quantized = quantize(conv_gemm_model(opset=13), activation=Int16Spec(), weight=Int4Spec())
    assert {o.domain: o.version for o in quantized.opset_import}[""] == 21


def test_per_channel_raises_opset_to_13() -> None:
    quantized = quantize(conv_gemm_model(opset=11))
    assert {o.domain: o.version for o in quantized.opset_import}[""] == 13


def test_explicit_opset_too_low_is_an_error() -> None:
    with pytest.raises(ConfigError, match="ConvertOpsetVersion"):
        quantize(conv_gemm_model(), ConvertOpsetVersion=12)


@pytest.mark.parametrize(
    ("op", "attrs", "weight_shape", "axis"),
    [
        ("Conv", {}, (6, 4, 1, 1), 0),
        ("ConvTranspose", {}, (4, 6, 1, 1), 1),
        ("Gemm", {"transB": 1}, (6, 4), 0),
        ("Gemm", {"transB": 0}, (4, 6), 1),
        ("MatMul", {}, (4, 6), 1),
    ],
)
def test_per_channel_axis_per_op(op, attrs, weight_shape, axis) -> None:
    image = op in ("Conv", "ConvTranspose")
    shape = [1, 4, 5, 5] if image else [3, 4]
    node = helper.make_node(op, ["x", "w"], ["y"], name="op", **attrs)
    model = make_model([node], [("x", shape)], ["y"], [tensor("w", _w(*weight_shape))])
    feeds = samples({"x": shape}, 4)

    quantized = quantize(model, feeds)

    scale, _, dq_axis = dq_params(quantized, dq_feeding(quantized, "op", 1))
    assert dq_axis == axis
    assert scale.shape == (weight_shape[axis],)
    assert min_cosine(model, quantized, feeds) > 0.99


def test_bias_scale_is_input_times_weight_scale() -> None:
    model = conv_gemm_model()
    quantized = quantize(model)

    x_scale, _, _ = dq_params(quantized, dq_feeding(quantized, "conv", 0))
    w_scale, _, _ = dq_params(quantized, dq_feeding(quantized, "conv", 1))
    bias_dq = dq_feeding(quantized, "conv", 2)
    b_scale, b_zero, b_axis = dq_params(quantized, bias_dq)
    assert initializer(quantized, bias_dq.input[0]).dtype == np.int32
    np.testing.assert_allclose(b_scale, (x_scale * w_scale).astype(np.float32), rtol=1e-6)
    assert np.all(b_zero == 0)
    assert b_axis == 0


def test_bias_overflow_widens_weight_scale() -> None:
    weight = _w(4, 3, 1, 1, scale=1e-7)
    bias = np.array([1e4, -1e4, 5.0, 0.0], np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")
    model = make_model(
        [node], [("x", [1, 3, 4, 4])], ["y"], [tensor("w", weight), tensor("b", bias)]
    )
    feeds = samples({"x": [1, 3, 4, 4]}, 4)

    quantized = quantize(model, feeds)

    bias_dq = dq_feeding(quantized, "conv", 2)
    b_scale, _, _ = dq_params(quantized, bias_dq)
    stored = initializer(quantized, bias_dq.input[0]).astype(np.float64)
    np.testing.assert_allclose(stored * b_scale, bias, rtol=1e-6, atol=float(b_scale.max()))
    w_scale, _, _ = dq_params(quantized, dq_feeding(quantized, "conv", 1))
    natural = np.abs(weight).reshape(4, -1).max(axis=1) / 127
    assert w_scale[0] > natural[0] * 10
    assert w_scale[3] == pytest.approx(natural[3], rel=1e-6)


def test_gemm_two_dimensional_bias() -> None:
    for bias_shape in [(1, 5), (3, 5), (1,)]:
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, name="gemm")
        model = make_model(
            [node], [("x", [3, 4])], ["y"], [tensor("w", _w(5, 4)), tensor("b", _w(*bias_shape))]
        )
        feeds = samples({"x": [3, 4]}, 4)

        quantized = quantize(model, feeds)

        bias_dq = dq_feeding(quantized, "gemm", 2)
        assert initializer(quantized, bias_dq.input[0]).dtype == np.int32
        assert min_cosine(model, quantized, feeds) > 0.99


def test_constant_node_weights_are_stored_quantized() -> None:
    weight = _w(4, 3, 3, 3)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=tensor("w_value", weight)),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
    ]
    model = make_model(nodes, [("x", [1, 3, 6, 6])], ["y"])
    feeds = samples({"x": [1, 3, 6, 6]}, 4)

    quantized = quantize(model, feeds, SimplifyModel=False)

    weight_dq = dq_feeding(quantized, "conv", 1)
    assert initializer(quantized, weight_dq.input[0]).dtype == np.int8
    assert not nodes_of(quantized, "Constant")
    assert min_cosine(model, quantized, feeds) > 0.99


def test_shared_initializer_gets_axis_per_consumer() -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="matmul"),
        helper.make_node("Gemm", ["x", "w"], ["b"], transB=1, name="gemm"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    model = make_model(nodes, [("x", [2, 6])], ["y"], [tensor("w", _w(6, 6))])
    feeds = samples({"x": [2, 6]}, 4)

    quantized = quantize(model, feeds, SimplifyModel=False)

    matmul_dq = dq_feeding(quantized, "matmul", 1)
    gemm_dq = dq_feeding(quantized, "gemm", 1)
    assert dq_params(quantized, matmul_dq)[2] == 1
    assert dq_params(quantized, gemm_dq)[2] == 0
    assert min_cosine(model, quantized, feeds) > 0.99


def test_tensor_feeding_isnan_stays_float() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("IsNaN", ["c"], ["nan"], name="isnan"),
        helper.make_node("Cast", ["nan"], ["y"], to=onnx.TensorProto.FLOAT, name="cast"),
        helper.make_node("Relu", ["c"], ["z"], name="relu"),
    ]
    model = make_model(nodes, [("x", [1, 3, 4, 4])], ["y", "z"], [tensor("w", _w(2, 3, 1, 1))])

    quantized = quantize(model, samples({"x": [1, 3, 4, 4]}, 2), SimplifyModel=False)

    isnan = nodes_of(quantized, "IsNaN")[0]
    assert producers(quantized)[isnan.input[0]].op_type == "Conv"
    assert all(n.op_type != "QuantizeLinear" for n in consumers(quantized, isnan.input[0]))


def _all_names(graph: onnx.GraphProto, names: dict[str, list[str]]) -> None:
    for node in graph.node:
        names["node"].append(node.name)
        names["value"].extend(node.output)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _all_names(attribute.g, names)
    names["value"].extend(i.name for i in graph.initializer)
    names["value"].extend(i.name for i in graph.input)


def test_new_names_unique_across_subgraphs() -> None:
    def branch(name: str, node_name: str, output: str) -> onnx.GraphProto:
        node = helper.make_node("Identity", ["c"], [output], name=node_name)
        value = helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)
        return helper.make_graph([node], name, [], [value])

    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("ReduceSum", ["c"], ["s"], keepdims=0, name="sum"),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="greater"),
        helper.make_node(
            "If",
            ["cond"],
            ["y"],
            name="if",
            then_branch=branch("then", "c_QuantizeLinear", "c_scale"),
            else_branch=branch("else", "c_DequantizeLinear_1", "c_zero_point"),
        ),
        helper.make_node("Relu", ["c"], ["c_dequantized"], name="c_DequantizeLinear"),
    ]
    model = make_model(
        nodes,
        [("x", [1, 3, 4, 4])],
        ["y", "c_dequantized"],
        [tensor("w", _w(2, 3, 1, 1)), tensor("zero", np.array(0, np.float32))],
    )
    quantized = quantize(model, samples({"x": [1, 3, 4, 4]}, 2), SimplifyModel=False)

    names: dict[str, list[str]] = {"node": [], "value": []}
    _all_names(quantized.graph, names)
    for kind, found in names.items():
        duplicates = sorted({n for n in found if n and found.count(n) > 1})
        assert not duplicates, f"duplicate {kind} names: {duplicates}"
    onnx.checker.check_model(quantized, full_check=True)


def test_same_input_gives_identical_bytes(tmp_path) -> None:
    model = conv_gemm_model()
    digests = []
    for run in range(2):
        path = tmp_path / f"q{run}.onnx"
        config = QConfig(PrintSummary=False)
        ModelQuantizer(config).quantize_model(model, path, FEEDS)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_input_model_not_modified(tmp_path) -> None:
    model = conv_gemm_model()
    before = model.SerializeToString()
    source = tmp_path / "float.onnx"
    onnx.save(model, source)
    file_before = source.read_bytes()

    quantize(model)
    ModelQuantizer(QConfig(PrintSummary=False)).quantize_model(source, tmp_path / "q.onnx", FEEDS)

    assert model.SerializeToString() == before
    assert source.read_bytes() == file_before


def test_missing_reader_without_random_data() -> None:
    with pytest.raises(CalibrationDataError, match="UseRandomData"):
        quantize(conv_gemm_model(), feeds=None)


def test_random_data_calibrates() -> None:
    quantized = quantize(
        conv_gemm_model(),
        feeds=None,
        UseRandomData=True,
        RandomDataReaderInputShape={"x": [1, 3, 8, 8]},
    )
    assert nodes_of(quantized, "QuantizeLinear")


def test_moving_average_changes_activation_scale() -> None:
    model = conv_gemm_model()
    plain = quantize(model)
    averaged = quantize(model, CalibMovingAverage=True, CalibMovingAverageConstant=0.5)
    plain_scale = dq_params(plain, dq_feeding(plain, "conv", 0))[0]
    averaged_scale = dq_params(averaged, dq_feeding(averaged, "conv", 0))[0]
    assert averaged_scale < plain_scale


def test_already_quantized_model_rejected() -> None:
    quantized = quantize(conv_gemm_model())
    with pytest.raises(ModelInputError, match="already quantized"):
        quantize(quantized)


def test_gather_on_constant_table_stores_integers() -> None:
    table = _w(50, 8)
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"], axis=0, name="gather"),
        helper.make_node("MatMul", ["e", "w"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "embedding",
        [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [2, 5])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 5, 4])],
        [tensor("table", table), tensor("w", _w(8, 4))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"ids": np.random.default_rng(i).integers(0, 50, (2, 5))} for i in range(3)]

    quantized = quantize(model, feeds)

    table_dq = dq_feeding(quantized, "gather", 0)
    assert initializer(quantized, table_dq.input[0]).dtype == np.uint8
    assert not any(i.name == "table" for i in quantized.graph.initializer)
    assert min_cosine(model, quantized, feeds) > 0.99


def test_unrunnable_sample_is_data_error() -> None:
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Resize", ["p", "", "scales"], ["u"], mode="nearest", name="up"),
        helper.make_node("Add", ["u", "x"], ["y"], name="add"),
    ]
    scales = tensor("scales", np.array([1, 1, 2, 2], np.float32))
    model = make_model(nodes, [("x", [1, 1, "H", "W"])], ["y"], [scales])

    with pytest.raises(CalibrationDataError, match="could not run the model"):
        quantize(model, samples({"x": [1, 1, 5, 5]}, 2))


def test_bias_with_its_own_scale_when_not_adjusted() -> None:
    model = conv_gemm_model()
    quantized = quantize(model, AdjustBiasScale=False)

    conv = next(node for node in quantized.graph.node if node.op_type == "Conv")
    bias_dq = dq_feeding(quantized, conv.name, 2)
    x_scale, _, _ = dq_params(quantized, dq_feeding(quantized, conv.name, 0))
    w_scale, _, _ = dq_params(quantized, dq_feeding(quantized, conv.name, 1))
    b_scale, _, _ = dq_params(quantized, bias_dq)
    float_conv = next(node for node in model.graph.node if node.op_type == "Conv")
    bias = initializer(model, float_conv.input[2])
    assert initializer(quantized, bias_dq.input[0]).dtype == np.int32
    assert not np.allclose(b_scale, x_scale * w_scale)
    # Per channel, like the weight: each bias value sets its own channel's scale.
    np.testing.assert_allclose(b_scale, np.abs(bias) / (2**31 - 1), rtol=1e-6)
    assert min_cosine(model, quantized, FEEDS[:3]) > 0.99


def test_exclude_names_conv_folded_with_batchnorm():
    rng = np.random.default_rng(11)
    initializers = [
        tensor("w", rng.normal(size=(4, 3, 3, 3)).astype(np.float32)),
        tensor("scale", rng.uniform(0.5, 2.0, 4).astype(np.float32)),
        tensor("shift", rng.normal(size=4).astype(np.float32)),
        tensor("mean", rng.normal(size=4).astype(np.float32)),
        tensor("var", rng.uniform(0.5, 2.0, 4).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="stem_conv"),
        helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["y"]),
    ]
    model = make_model(nodes, [("x", [1, 3, 8, 8])], ["y"], initializers)
    config = QConfig(exclude=["stem_conv"], PrintSummary=False)

    quantized = ModelQuantizer(config).quantize_model(model, None, samples({"x": [1, 3, 8, 8]}, 2))

    conv = [node for node in quantized.graph.node if node.op_type == "Conv"]
    assert [node.name for node in conv] == ["stem_conv"]
    assert not [node for node in quantized.graph.node if node.op_type == "DequantizeLinear"]


def _large_weight_model():
    rng = np.random.default_rng(12)
    weight = tensor("w", rng.normal(size=(64, 64)).astype(np.float32))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")]
    return make_model(nodes, [("x", [2, 64])], ["y"], [weight])


def test_calibration_weights_file_removed(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen = []

    class Reader:
        def __init__(self):
            self.feeds = iter(samples({"x": [2, 64]}, 3))

        def get_next(self):
            seen.extend(path.name for path in scratch.glob("*/*"))
            return next(self.feeds, None)

    config = QConfig(TmpDir=str(scratch), PrintSummary=False)
    quantized = ModelQuantizer(config).quantize_model(_large_weight_model(), None, Reader())

    # The 16 KiB weight went to a data file next to a weight-free model during calibration.
    assert "model.onnx.data" in seen
    assert list(scratch.iterdir()) == []
    assert nodes_of(quantized, "DequantizeLinear")


def test_calibration_weights_file_removed_on_error(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    bad = [{"x": np.full((2, 64), np.nan, np.float32)}] * 2
    config = QConfig(TmpDir=str(scratch), PrintSummary=False)

    with pytest.raises(CalibrationDataError):
        ModelQuantizer(config).quantize_model(_large_weight_model(), None, bad)

    assert list(scratch.iterdir()) == []


def test_exclude_names_conv_that_onnxslim_folds():
    # onnxslim folds the bias Add into the Conv and names the result after its output.
    rng = np.random.default_rng(13)
    initializers = [
        tensor("w", rng.normal(size=(4, 3, 3, 3)).astype(np.float32)),
        tensor("b", rng.normal(size=(1, 4, 1, 1)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="stem_conv"),
        helper.make_node("Add", ["c", "b"], ["y"], name="bias_add"),
    ]
    model = make_model(nodes, [("x", [1, 3, 8, 8])], ["y"], initializers)
    config = QConfig(exclude=["stem_conv"], PrintSummary=False)

    quantized = ModelQuantizer(config).quantize_model(model, None, samples({"x": [1, 3, 8, 8]}, 2))

    conv = nodes_of(quantized, "Conv")
    assert [node.name for node in conv] == ["stem_conv"]
    assert not nodes_of(quantized, "DequantizeLinear")
