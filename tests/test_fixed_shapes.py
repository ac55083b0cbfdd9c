"""FixShapes: parsing, errors, and the quantized model's fixed input and output shapes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from qrewrite import ModelQuantizer, QConfig
from qrewrite.errors import ConfigError, ModelInputError
from qrewrite.model.fixed_shapes import parse_fixed_shapes
from tests.qmodels import make_model, run, tensor


def _dynamic_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    inits = [tensor("w", rng.normal(size=(4, 3, 3, 3)).astype(np.float32))]
    return make_model(nodes, [("x", ["N", 3, "H", "W"])], ["y"], inits)


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def test_parse_entries() -> None:
    assert parse_fixed_shapes("x:[1,3,8,8]; y:[1,4,8,8]") == {
        "x": (1, 3, 8, 8),
        "y": (1, 4, 8, 8),
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x[1,3]", "must look like"),
        ("x:[1,a]", "integers"),
        ("x:[0,3]", "at least 1"),
        ("x:[1];x:[2]", "twice"),
        (";", "no entries"),
    ],
)
def test_bad_text_is_a_config_error(text, message) -> None:
    with pytest.raises(ConfigError, match=message):
        QConfig(FixShapes=text)


def test_quantized_model_has_fixed_shapes() -> None:
    feeds = [{"x": np.ones((1, 3, 8, 8), np.float32)}]
    config = QConfig(FixShapes="x:[1,3,8,8];y:[1,4,8,8]", PrintSummary=False)

    quantized = ModelQuantizer(config).quantize_model(_dynamic_model(), None, feeds)

    assert _dims(quantized.graph.input[0]) == [1, 3, 8, 8]
    assert _dims(quantized.graph.output[0]) == [1, 4, 8, 8]
    assert run(quantized, feeds[0])[0].shape == (1, 4, 8, 8)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("z:[1,3,8,8]", r"not graph inputs or outputs; the model has \['x', 'y'\]"),
        ("x:[1,3,8]", "rank 3"),
        ("x:[1,5,8,8]", "fixes it to 3"),
    ],
)
def test_shape_that_contradicts_the_model(text, message) -> None:
    feeds = [{"x": np.ones((1, 3, 8, 8), np.float32)}]
    config = QConfig(FixShapes=text, PrintSummary=False)
    with pytest.raises(ModelInputError, match=message):
        ModelQuantizer(config).quantize_model(_dynamic_model(), None, feeds)


def test_minus_one_counts_as_dynamic() -> None:
    model = _dynamic_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    feeds = [{"x": np.ones((1, 3, 8, 8), np.float32)}]
    config = QConfig(FixShapes="x:[1,3,8,8]", PrintSummary=False)

    quantized = ModelQuantizer(config).quantize_model(model, None, feeds)

    assert _dims(quantized.graph.input[0]) == [1, 3, 8, 8]
