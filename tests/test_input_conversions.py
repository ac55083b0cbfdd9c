"""ConvertFP16ToFP32 and ConvertNCHWToNHWC: the quantized model's inputs and its outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from qrewrite import ModelQuantizer, QConfig
from qrewrite.errors import ModelInputError
from tests.qmodels import make_model, min_cosine, run, samples, tensor


def _conv_nodes(dtype) -> tuple[list, list]:
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    inits = [
        tensor("w", (rng.normal(size=(4, 3, 3, 3)) * 0.3).astype(dtype)),
        tensor("b", (rng.normal(size=4) * 0.1).astype(dtype)),
    ]
    return nodes, inits


def _conv_model() -> onnx.ModelProto:
    nodes, inits = _conv_nodes(np.float32)
    return make_model(nodes, [("x", [1, 3, 8, 8])], ["y"], inits)


def _float16_model() -> onnx.ModelProto:
    """The Conv model in float16, with a Cast to float16 that must become a Cast to float."""
    nodes, inits = _conv_nodes(np.float16)
    nodes.append(helper.make_node("Cast", ["y"], ["out"], to=onnx.TensorProto.FLOAT16))
    half = onnx.TensorProto.FLOAT16
    graph = helper.make_graph(
        nodes,
        "half",
        [helper.make_tensor_value_info("x", half, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", half, [1, 4, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


FEEDS = samples({"x": [1, 3, 8, 8]}, 6)


def test_float16_model_becomes_float32() -> None:
    model = _float16_model()
    config = QConfig(ConvertFP16ToFP32=True, PrintSummary=False)

    quantized = ModelQuantizer(config).quantize_model(model, None, FEEDS)

    assert quantized.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert quantized.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    stored = {init.data_type for init in quantized.graph.initializer}
    assert onnx.TensorProto.FLOAT16 not in stored
    for feed in FEEDS[:2]:
        expected = run(model, {"x": feed["x"].astype(np.float16)})[0].astype(np.float32)
        actual = run(quantized, feed)[0]
        cosine = float(expected.ravel() @ actual.ravel())
        cosine /= float(np.linalg.norm(expected) * np.linalg.norm(actual))
        assert cosine > 0.99


def test_float16_model_without_the_option_is_an_error() -> None:
    with pytest.raises(ModelInputError, match="ConvertFP16ToFP32=True"):
        ModelQuantizer(QConfig(PrintSummary=False)).quantize_model(_float16_model(), None, FEEDS)


def test_nhwc_input_gives_the_nchw_result() -> None:
    model = _conv_model()
    nhwc_feeds = [{"x": feed["x"].transpose(0, 2, 3, 1).copy()} for feed in FEEDS]
    config = QConfig(ConvertNCHWToNHWC=True, PrintSummary=False)

    quantized = ModelQuantizer(config).quantize_model(model, None, nhwc_feeds)

    dims = [d.dim_value for d in quantized.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 8, 8, 3]
    plain = ModelQuantizer(QConfig(PrintSummary=False)).quantize_model(model, None, FEEDS)
    for feed, nhwc in zip(FEEDS, nhwc_feeds, strict=True):
        np.testing.assert_allclose(run(quantized, nhwc)[0], run(plain, feed)[0], atol=1e-5)
    assert min_cosine(model, plain, FEEDS[:2]) > 0.99


def test_nhwc_conversion_leaves_other_inputs() -> None:
    nodes = [helper.make_node("Add", ["x", "bias"], ["y"])]
    model = make_model(nodes, [("x", [2, 5]), ("bias", [2, 5])], ["y"])
    feeds = samples({"x": [2, 5], "bias": [2, 5]}, 3)
    config = QConfig(ConvertNCHWToNHWC=True, PrintSummary=False)
    quantized = ModelQuantizer(config).quantize_model(model, None, feeds)
    assert not [n for n in quantized.graph.node if n.op_type == "Transpose"]
