import logging

import numpy as np
import onnx
import pytest
from model_factory import identity_output_input, log_model, relu_chain

from qrewrite.calibration import TensorRange, calibrate
from qrewrite.config import CalibMethod, QConfig
from qrewrite.errors import ConfigError

pytestmark = pytest.mark.usefixtures("small_tensor_path")

MINMAX = CalibMethod.MinMax


def options(**kwargs):
    return QConfig(**kwargs).options


def test_min_max_over_samples_of_different_shapes():
    model = relu_chain()
    samples = [
        {"x": np.array([[1, -3, 2, 0]], np.float32)},
        {"x": np.array([[0.5, 0, 0, 0], [4, 0, 0, -1]], np.float32)},
    ]
    ranges = calibrate(model, {"x": MINMAX, "doubled": MINMAX, "y": MINMAX}, samples, options())
    assert ranges["x"] == TensorRange(-3, 4)
    assert ranges["doubled"] == TensorRange(-6, 8)
    assert ranges["y"] == TensorRange(0, 8)


def test_model_is_not_modified():
    model = relu_chain()
    before = model.SerializeToString()
    calibrate(model, {"y": MINMAX}, [{"x": np.ones((1, 4), np.float32)}], options())
    assert model.SerializeToString() == before


def test_moving_average():
    model = relu_chain()
    samples = [{"x": np.array([[v, -v, 0, 0]], np.float32)} for v in (1.0, 3.0, 5.0)]
    config = options(CalibMovingAverage=True, CalibMovingAverageConstant=0.5)
    ranges = calibrate(model, {"x": MINMAX}, samples, config)
    # max: 1 -> 1 + 0.5 * (3 - 1) = 2 -> 2 + 0.5 * (5 - 2) = 3.5
    assert ranges["x"] == TensorRange(-3.5, 3.5)


def test_scalar_tensors():
    model = relu_chain(shape=[])
    samples = [{"x": np.array(v, np.float32)} for v in (2.0, -1.0)]
    ranges = calibrate(model, {"x": MINMAX, "y": MINMAX}, samples, options())
    assert ranges["x"] == TensorRange(-1, 2)
    assert ranges["y"] == TensorRange(0, 4)


def test_zero_size_samples_are_skipped():
    model = relu_chain()
    samples = [{"x": np.zeros((0, 4), np.float32)}, {"x": np.full((1, 4), 3, np.float32)}]
    ranges = calibrate(model, {"y": MINMAX}, samples, options())
    assert ranges["y"] == TensorRange(6, 6)


def test_only_zero_size_samples_give_zero_range(caplog):
    samples = [{"x": np.zeros((0, 4), np.float32)}]
    with caplog.at_level(logging.WARNING, logger="qrewrite"):
        ranges = calibrate(relu_chain(), {"y": MINMAX}, samples, options())
    assert ranges["y"] == TensorRange(0, 0)
    assert "no finite values" in caplog.text


def test_constant_tensor():
    samples = [{"x": np.full((2, 4), 1.5, np.float32)} for _ in range(3)]
    ranges = calibrate(relu_chain(), {"y": MINMAX}, samples, options())
    assert ranges["y"] == TensorRange(3, 3)


def test_nan_and_inf_are_ignored_and_warned(caplog):
    samples = [{"x": np.array([-1.0, 0.0, 1.0, np.e], np.float32)}]
    with caplog.at_level(logging.WARNING, logger="qrewrite"):
        ranges = calibrate(log_model(), {"y": MINMAX, "x": MINMAX}, samples, options())
    assert ranges["y"].min == 0.0
    assert ranges["y"].max == pytest.approx(1.0)
    assert "'y' had 2 NaN or infinite values" in caplog.text
    assert "'x'" not in caplog.text


def test_nan_not_first_element():
    # ReduceMin of onnxruntime skips a NaN that is not the first element; the sum check
    # must still find it.
    samples = [{"x": np.array([1.0, -1.0, 4.0], np.float32)}]
    ranges = calibrate(log_model(), {"y": MINMAX}, samples, options())
    assert ranges["y"].min == 0.0
    assert ranges["y"].max == pytest.approx(np.log(4.0))


def test_graph_input_that_is_also_output():
    samples = [{"x": np.array([1, 2, 5], np.float32)}]
    ranges = calibrate(identity_output_input(), {"x": MINMAX, "y": MINMAX}, samples, options())
    assert ranges["x"] == TensorRange(1, 5)
    assert ranges["y"] == TensorRange(2, 6)


def test_symmetric_option():
    samples = [{"x": np.array([[1, -3, 2, 0]], np.float32)}]
    config = options(CalibTensorRangeSymmetric=True)
    ranges = calibrate(relu_chain(), {"x": MINMAX}, samples, config)
    assert ranges["x"] == TensorRange(-3, 3)


def test_unknown_tensor_is_an_error():
    with pytest.raises(ConfigError, match="'nope'"):
        calibrate(relu_chain(), {"nope": MINMAX}, [], options())


def test_initializer_is_not_calibrated():
    with pytest.raises(ConfigError, match="'two'"):
        calibrate(relu_chain(), {"two": MINMAX}, [], options())


def test_execution_providers_option():
    samples = [{"x": np.ones((1, 4), np.float32)}]
    config = options(ExecutionProviders=["CPUExecutionProvider"])
    assert calibrate(relu_chain(), {"y": MINMAX}, samples, config)["y"] == TensorRange(2, 2)


def test_old_opset_model():
    samples = [{"x": np.array([[1, -3, 2, 0]], np.float32)}]
    ranges = calibrate(relu_chain(opset=9), {"y": MINMAX}, samples, options())
    assert ranges["y"] == TensorRange(0, 4)


def test_float16_tensor():
    model = relu_chain()
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    model.graph.initializer[0].CopyFrom(
        onnx.numpy_helper.from_array(np.array(2.0, np.float16), "two")
    )
    samples = [{"x": np.array([[1, -3, 2, 0]], np.float16)}]
    ranges = calibrate(model, {"x": MINMAX, "y": MINMAX}, samples, options())
    assert ranges["y"] == TensorRange(0, 4)
