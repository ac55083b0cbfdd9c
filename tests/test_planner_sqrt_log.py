"""KeepSqrtLogInputsFloat on a small magnitude spectrum, as in Silero VAD's front end."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper
from qmodels import make_model, producers, run, tensor

from qrewrite import Int8Spec, QConfig, QLayerConfig, QuantGranularity, UInt8Spec
from qrewrite.model.io import load_model
from qrewrite.pipeline import State, build_stages, run_stages

FRAMES = 64
LOUD, QUIET = 1.0, 0.1
SQUARES_AND_SUM = ("re_squared", "im_squared", "power")


def magnitude_model() -> onnx.ModelProto:
    """A Conv writes re and im, then Sqrt(re^2 + im^2) feeds a second Conv."""
    mix = np.array([[[1.0], [0.2]], [[-0.2], [1.0]]], dtype=np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "mix"], ["spectrum"], name="transform_conv"),
        helper.make_node("Split", ["spectrum"], ["re", "im"], axis=1, name="spectrum_split"),
        helper.make_node("Pow", ["re", "two"], ["re_squared"], name="re_pow"),
        helper.make_node("Pow", ["im", "two"], ["im_squared"], name="im_pow"),
        helper.make_node("Add", ["re_squared", "im_squared"], ["power"], name="power_add"),
        helper.make_node("Sqrt", ["power"], ["magnitude"], name="magnitude_sqrt"),
        helper.make_node("Conv", ["magnitude", "gain"], ["y"], name="encoder_conv"),
    ]
    initializers = [
        tensor("mix", mix),
        tensor("two", np.array(2.0, dtype=np.float32)),
        tensor("gain", np.ones((1, 1, 1), dtype=np.float32)),
    ]
    return make_model(nodes, [("x", [1, 2, FRAMES])], ["y"], initializers)


def feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Frames alternate in blocks of 8 between loud (about 1) and quiet (about 0.1)."""
    rng = np.random.default_rng(seed)
    loudness = np.where(np.arange(FRAMES) // 8 % 2 == 0, LOUD, QUIET).astype(np.float32)
    return [
        {"x": (rng.normal(size=(1, 2, FRAMES)) * loudness).astype(np.float32)} for _ in range(count)
    ]


def quantize_state(
    model: onnx.ModelProto, activation=None, reader: list | None = None, **options
) -> State:
    config = QConfig(
        global_config=QLayerConfig(
            activation=activation or UInt8Spec(),
            weight=Int8Spec(quant_granularity=QuantGranularity.Channel),
        ),
        PrintSummary=False,
        # The last axis is time here, where loud and quiet frames would look like
        # outlier channels to KeepOutlierTensorsFloat.
        KeepOutlierTensorsFloat=False,
        **options,
    )
    state = State(config=config, proto=load_model(model).proto, reader=reader or feeds(4, seed=1))
    return run_stages(build_stages(config), state)


def quiet_frame_error(model: onnx.ModelProto, state: State) -> float:
    """Return the median relative error of y over the quiet frames of held-out feeds."""
    quantized = ir.to_proto(state.model)
    quiet = np.arange(FRAMES) // 8 % 2 == 1
    errors = []
    for feed in feeds(3, seed=2):
        expected = run(model, feed)[0][0, 0, quiet]
        actual = run(quantized, feed)[0][0, 0, quiet]
        errors.append(np.abs(actual - expected) / np.abs(expected))
    return float(np.median(np.concatenate(errors)))


def input_producer(state: State, node_name: str, index: int) -> str:
    quantized = ir.to_proto(state.model)
    node = next(node for node in quantized.graph.node if node.name == node_name)
    return producers(quantized)[node.input[index]].op_type


def test_squares_and_sum_stay_float() -> None:
    model = magnitude_model()

    state = quantize_state(model)

    kept_float = state.plan.selection.kept_float
    for name in SQUARES_AND_SUM:
        assert "KeepSqrtLogInputsFloat" in kept_float.get(name, ""), name
    assert input_producer(state, "power_add", 0) == "Pow"
    assert input_producer(state, "power_add", 1) == "Pow"
    assert input_producer(state, "magnitude_sqrt", 0) == "Add"


def test_linear_tensors_stay_quantized() -> None:
    model = magnitude_model()

    state = quantize_state(model)

    kept_float = state.plan.selection.kept_float
    for name in ("spectrum", "re", "im", "magnitude"):
        assert name not in kept_float, name
    assert input_producer(state, "re_pow", 0) == "DequantizeLinear"
    assert input_producer(state, "encoder_conv", 0) == "DequantizeLinear"


@pytest.mark.parametrize("activation", [UInt8Spec(), Int8Spec()], ids=["uint8", "int8"])
def test_quiet_frames_more_accurate(activation) -> None:
    model = magnitude_model()

    with_rule = quiet_frame_error(model, quantize_state(model, activation))
    without_rule = quiet_frame_error(
        model, quantize_state(model, activation, KeepSqrtLogInputsFloat=False)
    )

    assert with_rule < 0.15
    assert without_rule > 0.5


def test_option_off_quantizes_squares() -> None:
    model = magnitude_model()

    state = quantize_state(model, KeepSqrtLogInputsFloat=False)

    kept_float = state.plan.selection.kept_float
    for name in SQUARES_AND_SUM:
        assert name not in kept_float, name
    assert input_producer(state, "power_add", 0) == "DequantizeLinear"
    assert input_producer(state, "magnitude_sqrt", 0) == "DequantizeLinear"


@pytest.mark.parametrize(
    ("op_type", "exponent", "stays_float"),
    [
        ("Log", None, True),
        ("Reciprocal", None, True),
        ("Pow", 0.5, True),
        ("Pow", -0.5, True),
        ("Pow", 2.0, False),
    ],
)
def test_steep_op_types(op_type: str, exponent: float | None, stays_float: bool) -> None:
    """Only ops with an unbounded slope near zero keep their input float."""
    inputs = ["sum"] if exponent is None else ["sum", "exponent"]
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"], name="sum_add"),
        helper.make_node(op_type, inputs, ["steep"], name="steep_op"),
        helper.make_node("Relu", ["steep"], ["y"], name="relu"),
    ]
    initializers = [] if exponent is None else [tensor("exponent", np.float32(exponent))]
    model = make_model(nodes, [("a", [1, 8]), ("b", [1, 8])], ["y"], initializers)

    rng = np.random.default_rng(3)
    positive = [
        {name: rng.uniform(0.1, 1.0, size=(1, 8)).astype(np.float32) for name in "ab"}
        for _ in range(2)
    ]

    state = quantize_state(model, reader=positive)

    selection = state.plan.selection
    assert ("sum" in selection.kept_float) is stays_float
    assert ("a" in selection.kept_float) is stays_float
    assert "y" not in selection.kept_float
