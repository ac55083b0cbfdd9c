"""NPU position checks on plans that qrewrite's own stages compute for tiny models."""

from __future__ import annotations

from types import SimpleNamespace

import attrs
import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper
from qmodels import cosine, make_model, run, samples, tensor

from qrewrite import QConfig, QLayerConfig
from qrewrite.config.data_types import DataType
from qrewrite.config.enums import ScaleType
from qrewrite.config.spec import Int8Spec, UInt8Spec, XInt8Spec
from qrewrite.model.io import load_model
from qrewrite.pipeline import State, build_stages, run_stages
from qrewrite.quantization.bias import refine_bias
from qrewrite.quantization.materialize import materialize
from qrewrite.quantization.npu import adjust_npu_positions, npu_violations, refine_npu_positions
from qrewrite.quantization.plan import Plan, make_plan
from qrewrite.quantization.qparams import QuantParams
from qrewrite.quantization.selection import share_groups

ONE_SIXTH = 1.0 / 6.0
DPU_ALPHA = 2731.0 / 16384.0
RNG = np.random.default_rng(3)


# ---------------------------------------------------------------- builders and helpers


def plan_state(model: onnx.ModelProto, activation=None, weight=None, **options) -> State:
    """Run the stages up to and including "plan" with the NPU's int8 power-of-two defaults."""
    options = {
        "Int32Bias": False,
        "PerChannelWeightsByDefault": False,
        "KeepSlowOpsFloat": False,
        "WarnSlowTypes": False,
        "FuseHardSwish": False,
        **options,
    }
    config = QConfig(
        global_config=QLayerConfig(
            activation=activation or XInt8Spec(), weight=weight or XInt8Spec()
        ),
        PrintSummary=False,
        **options,
    )
    stages = build_stages(config)
    names = [stage.name for stage in stages]
    shapes = {
        value.name: [d.dim_value for d in value.type.tensor_type.shape.dim]
        for value in model.graph.input
    }
    state = State(config=config, proto=load_model(model).proto, reader=samples(shapes, 4))
    return run_stages(stages[: names.index("plan") + 1], state)


def graph_of(state: State) -> ir.Graph:
    assert state.model is not None
    return state.model.graph


def position(plan: Plan, key: str) -> np.ndarray:
    scale = plan.params[key].scale.astype(np.float64)
    exponent = np.log2(scale)
    assert np.all(exponent == np.rint(exponent)), f"{key} scale {scale} is not a power of two"
    return (-np.rint(exponent)).astype(np.int64)


def scalar(plan: Plan, key: str) -> int:
    return int(position(plan, key).reshape(-1)[0])


def group_members(plan: Plan, key: str) -> list[str]:
    return next(group for group in share_groups(plan.selection) if key in group)


def with_positions(plan: Plan, positions: dict[str, int]) -> Plan:
    """Return a plan whose targets (and their share groups) have the given positions."""
    updates = {}
    for key, value in positions.items():
        for member in group_members(plan, key):
            params = plan.params[member]
            scale = np.full(params.scale.shape, 2.0**-value, dtype=np.float32)
            updates[member] = QuantParams(params.data_type, scale, params.zero_point, params.axis)
    return plan.with_params(updates)


def key_of(plan: Plan, node: str, index: int) -> str:
    return plan.selection.input_uses[(node, index)]


def out_key(plan: Plan, tensor_name: str) -> str:
    return plan.selection.output_targets[tensor_name]


def snapshot(plan: Plan) -> dict[str, tuple[bytes, bytes]]:
    return {
        key: (params.scale.tobytes(), params.zero_point.tobytes())
        for key, params in plan.params.items()
    }


def unsplit_selection_plan(state: State) -> Plan:
    """Plan again with no share groups, as a planner rule could leave a data-movement op."""
    assert state.plan is not None and state.ranges is not None
    selection = attrs.evolve(state.plan.selection, share_groups=())
    return make_plan(selection, graph_of(state), state.ranges)


def conv_model(weight_scale: float, bias_value: float, activation: str = "Relu"):
    weight = (RNG.normal(size=(4, 3, 3, 3)) * weight_scale).astype(np.float32)
    bias = np.full(4, bias_value, np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node(activation, ["c"], ["y"], name="act"),
    ]
    return make_model(nodes, [("x", [1, 3, 8, 8])], ["y"], [tensor("w", weight), tensor("b", bias)])


def gemm_model():
    weight = RNG.normal(size=(8, 4)).astype(np.float32)
    bias = RNG.normal(size=(4,)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["g"], name="gemm"),
        helper.make_node("Relu", ["g"], ["y"], name="act"),
    ]
    return make_model(nodes, [("x", [2, 8])], ["y"], [tensor("w", weight), tensor("b", bias)])


def binary_model(op_type: str):
    nodes = [
        helper.make_node(op_type, ["a", "b"], ["s"], name="binary"),
        helper.make_node("MaxPool", ["s"], ["p"], name="pool", kernel_shape=[2, 2]),
        helper.make_node("Relu", ["p"], ["y"], name="act"),
    ]
    return make_model(nodes, [("a", [1, 2, 4, 4]), ("b", [1, 2, 4, 4])], ["y"])


def hard_sigmoid_model(alpha: float, beta: float, dpu_mul: bool = False):
    """Relu(HardSigmoid(x)); with dpu_mul the HardSigmoid output goes through Mul by a constant."""
    nodes = [helper.make_node("HardSigmoid", ["x"], ["h"], name="hsig", alpha=alpha, beta=beta)]
    inits = []
    gate = "h"
    if dpu_mul:
        nodes.append(helper.make_node("Mul", ["h", "k"], ["hk"], name="dpu_mul"))
        inits.append(tensor("k", np.array(ONE_SIXTH / DPU_ALPHA, np.float32)))
        gate = "hk"
    nodes.append(helper.make_node("Relu", [gate], ["y"], name="act"))
    return make_model(nodes, [("x", [1, 2, 4, 4])], ["y"], inits)


def swish_model(dpu_mul: bool = False):
    nodes = [helper.make_node("HardSigmoid", ["x"], ["h"], name="hsig", alpha=ONE_SIXTH, beta=0.5)]
    inits = []
    gate = "h"
    if dpu_mul:
        nodes.append(helper.make_node("Mul", ["h", "k"], ["hk"], name="dpu_mul"))
        inits.append(tensor("k", np.array(ONE_SIXTH / DPU_ALPHA, np.float32)))
        gate = "hk"
    nodes += [
        helper.make_node("Mul", ["x", gate], ["s"], name="swish"),
        helper.make_node("Relu", ["s"], ["y"], name="act"),
    ]
    return make_model(nodes, [("x", [1, 2, 4, 4])], ["y"], inits)


def concat_model():
    """Concat of a graph input (both signs) and a Relu output, read by a Relu."""
    nodes = [
        helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
        helper.make_node("Concat", ["a", "rb"], ["c"], name="cat", axis=1),
        helper.make_node("Relu", ["c"], ["y"], name="act"),
    ]
    return make_model(nodes, [("a", [1, 2, 4, 4]), ("b", [1, 3, 4, 4])], ["y"])


def single_input_model(op_type: str, inputs: list[str], inits: list, **attributes):
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node(op_type, ["r", *inputs], ["m"], name="move", **attributes),
        helper.make_node("Relu", ["m"], ["y"], name="act"),
    ]
    return make_model(nodes, [("x", [1, 2, 4, 4])], ["y"], inits)


def options(**overrides: object) -> SimpleNamespace:
    return SimpleNamespace(**overrides)


# ---------------------------------------------------------------- shift_cut and shift_bias


def cut_and_bias(plan: Plan, node: str, output: str) -> tuple[np.ndarray, np.ndarray]:
    weight = position(plan, key_of(plan, node, 1))
    source = scalar(plan, key_of(plan, node, 0))
    target = scalar(plan, out_key(plan, output))
    bias = position(plan, key_of(plan, node, 2))
    return weight + source - target, weight + source - bias


def test_shift_cut_tiny_weights_fixed() -> None:
    """Weights near 1e-4 and a bias of 100 give w + i - o far above 16."""
    state = plan_state(conv_model(1e-4, 100.0))
    before, _ = cut_and_bias(state.plan, "conv", "c")
    assert np.all(before > 16)

    result = adjust_npu_positions(state.plan, graph_of(state), options())

    cut, shift_bias = cut_and_bias(result.plan, "conv", "c")
    assert np.all(cut >= 0)
    assert np.all(cut <= 16)
    assert np.all(shift_bias >= np.minimum(0, cut - 16))
    assert np.all(shift_bias <= 15)
    assert result.report.moves_per_check()["shift_cut"] == 1
    assert result.report.unresolved == ()


def test_shift_cut_negative_moves_weight_up() -> None:
    state = plan_state(conv_model(0.3, 0.1))
    plan = state.plan
    weight_key = key_of(plan, "conv", 1)
    output = scalar(plan, out_key(plan, "c"))
    source = scalar(plan, key_of(plan, "conv", 0))
    plan = with_positions(plan, {weight_key: output - source - 3})

    result = adjust_npu_positions(plan, graph_of(state), options())

    assert scalar(result.plan, weight_key) == output - source
    assert result.report.unresolved == ()


def test_shift_cut_per_channel_weights() -> None:
    state = plan_state(conv_model(1e-4, 100.0), PerChannelWeightsByDefault=True)
    assert state.plan.params[key_of(state.plan, "conv", 1)].axis == 0

    result = adjust_npu_positions(state.plan, graph_of(state), options())

    cut, shift_bias = cut_and_bias(result.plan, "conv", "c")
    assert cut.shape == (4,)
    assert np.all((cut >= 0) & (cut <= 16))
    assert np.all((shift_bias >= np.minimum(0, cut - 16)) & (shift_bias <= 15))


def test_shift_cut_gemm_fixed() -> None:
    state = plan_state(gemm_model())
    plan = with_positions(state.plan, {key_of(state.plan, "gemm", 1): 40})

    result = adjust_npu_positions(plan, graph_of(state), options())

    cut, _ = cut_and_bias(result.plan, "gemm", "g")
    assert 0 <= int(cut) <= 16


def test_conv_in_limits_unchanged() -> None:
    state = plan_state(conv_model(0.3, 0.1))
    cut, shift_bias = cut_and_bias(state.plan, "conv", "c")
    assert 0 <= int(cut) <= 16
    assert int(cut) - 16 <= int(shift_bias) <= 15

    result = adjust_npu_positions(state.plan, graph_of(state), options())

    assert result.plan is state.plan
    assert result.report.changes == ()
    assert result.report.rounds == 1


def test_shift_bias_too_high_moves_bias() -> None:
    state = plan_state(conv_model(0.3, 0.1))
    plan = state.plan
    bias_key = key_of(plan, "conv", 2)
    product = scalar(plan, key_of(plan, "conv", 1)) + scalar(plan, key_of(plan, "conv", 0))
    plan = with_positions(plan, {bias_key: product - 20})

    result = adjust_npu_positions(plan, graph_of(state), options())

    cut, shift_bias = cut_and_bias(result.plan, "conv", "c")
    assert int(shift_bias) == 15
    assert int(cut) == int(cut_and_bias(plan, "conv", "c")[0])
    assert result.report.moves_per_check() == {"shift_bias": 1}


def test_shift_bias_too_low_moves_bias() -> None:
    state = plan_state(conv_model(0.3, 0.1))
    plan = state.plan
    bias_key = key_of(plan, "conv", 2)
    product = scalar(plan, key_of(plan, "conv", 1)) + scalar(plan, key_of(plan, "conv", 0))
    plan = with_positions(plan, {bias_key: product + 30})

    result = adjust_npu_positions(plan, graph_of(state), options())

    cut, shift_bias = cut_and_bias(result.plan, "conv", "c")
    assert int(shift_bias) == min(0, int(cut) - 16)


def test_shift_bias_leaky_relu_lower_limit_zero() -> None:
    state = plan_state(conv_model(0.3, 0.1, activation="LeakyRelu"))
    plan = state.plan
    bias_key = key_of(plan, "conv", 2)
    product = scalar(plan, key_of(plan, "conv", 1)) + scalar(plan, key_of(plan, "conv", 0))
    plan = with_positions(plan, {bias_key: product + 2})

    result = adjust_npu_positions(plan, graph_of(state), options())

    _, shift_bias = cut_and_bias(result.plan, "conv", "c")
    assert int(shift_bias) == 0


def test_int32_bias_left_to_refine_bias() -> None:
    """With Int32Bias the bias has no position yet, and refine_bias then sets it to i x w."""
    state = plan_state(conv_model(1e-4, 100.0), Int32Bias=True)
    bias_key = key_of(state.plan, "conv", 2)
    assert bias_key not in state.plan.params

    refined = refine_npu_positions(state.plan, graph_of(state), options())
    with_bias = refine_bias(refined, DataType.Int32)

    source = with_bias.params[key_of(with_bias, "conv", 0)].scale
    weight = with_bias.params[key_of(with_bias, "conv", 1)].scale
    assert np.array_equal(with_bias.params[bias_key].scale, (source * weight).astype(np.float32))
    weight_position = scalar(with_bias, key_of(with_bias, "conv", 1))
    source_position = scalar(with_bias, key_of(with_bias, "conv", 0))
    output_position = scalar(with_bias, out_key(with_bias, "c"))
    assert 0 <= weight_position + source_position - output_position <= 16


def test_adjust_shift_cut_off_keeps_violation() -> None:
    state = plan_state(conv_model(1e-4, 100.0))

    result = adjust_npu_positions(state.plan, graph_of(state), options(AdjustShiftCut=False))

    assert "shift_cut" not in result.report.moves_per_check()
    cut, _ = cut_and_bias(result.plan, "conv", "c")
    assert np.all(cut > 16)


# ---------------------------------------------------------------- shift_read and shift_write


def test_shift_read_add_fixed() -> None:
    state = plan_state(binary_model("Add"))
    plan = with_positions(
        state.plan, {key_of(state.plan, "binary", 0): 3, key_of(state.plan, "binary", 1): 15}
    )

    result = adjust_npu_positions(plan, graph_of(state), options())

    first = scalar(result.plan, key_of(plan, "binary", 0))
    second = scalar(result.plan, key_of(plan, "binary", 1))
    assert (first, second) == (3, 10)
    assert result.report.moves_per_check()["shift_read"] == 1


def test_shift_read_sub_fixed() -> None:
    state = plan_state(binary_model("Sub"))
    plan = with_positions(
        state.plan, {key_of(state.plan, "binary", 0): 12, key_of(state.plan, "binary", 1): 2}
    )

    result = adjust_npu_positions(plan, graph_of(state), options())

    first = scalar(result.plan, key_of(plan, "binary", 0))
    second = scalar(result.plan, key_of(plan, "binary", 1))
    assert 0 <= first - second <= 7


def test_shift_write_moves_shared_group() -> None:
    """The Add output shares its parameters with MaxPool's output, so both must move."""
    state = plan_state(binary_model("Add"))
    plan = state.plan
    output = out_key(plan, "s")
    pool_output = out_key(plan, "p")
    assert pool_output in group_members(plan, output)
    plan = with_positions(
        plan, {key_of(plan, "binary", 0): 4, key_of(plan, "binary", 1): 5, output: 20}
    )

    result = adjust_npu_positions(plan, graph_of(state), options())

    inputs = [scalar(result.plan, key_of(plan, "binary", index)) for index in (0, 1)]
    shift = min(inputs) - scalar(result.plan, output)
    assert -7 <= shift <= 25
    assert np.array_equal(result.plan.params[output].scale, result.plan.params[pool_output].scale)


def test_shift_write_mul_fixed() -> None:
    state = plan_state(binary_model("Mul"))
    plan = state.plan
    output = out_key(plan, "s")
    plan = with_positions(
        plan, {key_of(plan, "binary", 0): 20, key_of(plan, "binary", 1): 20, output: 2}
    )

    result = adjust_npu_positions(plan, graph_of(state), options())

    total = sum(scalar(result.plan, key_of(plan, "binary", index)) for index in (0, 1))
    assert 0 <= total - scalar(result.plan, output) <= 32


def test_binary_in_limits_unchanged() -> None:
    for op_type in ("Add", "Mul", "Sub"):
        state = plan_state(binary_model(op_type))

        result = adjust_npu_positions(state.plan, graph_of(state), options())

        assert result.report.changes == (), op_type
        assert result.plan is state.plan, op_type


# ---------------------------------------------------------------- HardSigmoid and Swish


def hard_sigmoid_positions(plan: Plan, output: str) -> tuple[int, int]:
    return scalar(plan, key_of(plan, "hsig", 0)), scalar(plan, out_key(plan, output))


@pytest.mark.parametrize(
    ("alpha", "beta", "dpu_mul"),
    [(ONE_SIXTH, 0.5, False), (DPU_ALPHA, 3 * DPU_ALPHA, False), (ONE_SIXTH, 0.5, True)],
)
def test_hard_sigmoid_fixed(alpha: float, beta: float, dpu_mul: bool) -> None:
    state = plan_state(hard_sigmoid_model(alpha, beta, dpu_mul))
    plan = with_positions(
        state.plan, {key_of(state.plan, "hsig", 0): -3, out_key(state.plan, "h"): 2}
    )

    result = adjust_npu_positions(plan, graph_of(state), options())

    source, output = hard_sigmoid_positions(result.plan, "h")
    assert 0 <= source <= 15
    assert output >= 7
    assert 0 <= 14 + source - output <= 31
    assert result.report.unresolved == ()


def test_hard_sigmoid_output_too_high_fixed() -> None:
    state = plan_state(hard_sigmoid_model(ONE_SIXTH, 0.5))
    plan = with_positions(
        state.plan, {key_of(state.plan, "hsig", 0): 20, out_key(state.plan, "h"): 40}
    )

    result = adjust_npu_positions(plan, graph_of(state), options())

    source, output = hard_sigmoid_positions(result.plan, "h")
    assert (source, output) == (15, 29)


def test_hard_sigmoid_other_alpha_ignored() -> None:
    state = plan_state(hard_sigmoid_model(0.2, 0.5))
    plan = with_positions(
        state.plan, {key_of(state.plan, "hsig", 0): -3, out_key(state.plan, "h"): 2}
    )

    result = adjust_npu_positions(plan, graph_of(state), options())

    assert result.report.changes == ()


def test_hard_sigmoid_in_limits_unchanged() -> None:
    state = plan_state(hard_sigmoid_model(ONE_SIXTH, 0.5))
    plan = with_positions(
        state.plan, {key_of(state.plan, "hsig", 0): 5, out_key(state.plan, "h"): 8}
    )

    result = adjust_npu_positions(plan, graph_of(state), options())

    assert result.plan is plan


@pytest.mark.parametrize("dpu_mul", [False, True])
def test_shift_swish_fixed(dpu_mul: bool) -> None:
    state = plan_state(swish_model(dpu_mul))
    plan = state.plan
    gate = key_of(plan, "swish", 1)
    plan = with_positions(plan, {key_of(plan, "swish", 0): 6, gate: 8, out_key(plan, "s"): -20})

    result = adjust_npu_positions(plan, graph_of(state), options())

    total = sum(scalar(result.plan, key_of(plan, "swish", index)) for index in (0, 1))
    assert 0 <= total - scalar(result.plan, out_key(plan, "s")) <= 15
    assert "shift_swish" in result.report.moves_per_check()
    assert result.report.unresolved == ()


def test_shift_swish_off_leaves_mul_write_limit() -> None:
    """Without the Swish check only Mul's wider shift_write range [0, 32] applies."""
    state = plan_state(swish_model())
    plan = state.plan
    plan = with_positions(
        plan, {key_of(plan, "swish", 0): 6, key_of(plan, "swish", 1): 8, out_key(plan, "s"): -10}
    )

    result = adjust_npu_positions(plan, graph_of(state), options(AdjustShiftSwish=False))

    total = sum(scalar(result.plan, key_of(plan, "swish", index)) for index in (0, 1))
    assert total - scalar(result.plan, out_key(plan, "s")) == 24


# ---------------------------------------------------------------- alignments


def test_align_concat_fixed() -> None:
    state = plan_state(concat_model())
    plan = state.plan
    keys = [key_of(plan, "cat", 0), key_of(plan, "cat", 1), out_key(plan, "c")]
    plan = with_positions(plan, dict(zip(keys, (6, 3, 9), strict=True)))

    result = adjust_npu_positions(plan, graph_of(state), options())

    assert [scalar(result.plan, key) for key in keys] == [3, 3, 3]
    assert result.report.moves_per_check() == {"align_concat": 2}


def test_align_concat_aligned_unchanged() -> None:
    state = plan_state(concat_model())
    plan = state.plan
    keys = [key_of(plan, "cat", 0), key_of(plan, "cat", 1), out_key(plan, "c")]
    plan = with_positions(plan, dict.fromkeys(keys, 4))

    result = adjust_npu_positions(plan, graph_of(state), options())

    assert result.plan is plan


def test_align_concat_off_keeps_spread() -> None:
    state = plan_state(concat_model())
    plan = state.plan
    keys = [key_of(plan, "cat", 0), key_of(plan, "cat", 1), out_key(plan, "c")]
    plan = with_positions(plan, dict(zip(keys, (6, 3, 9), strict=True)))

    result = adjust_npu_positions(plan, graph_of(state), options(AlignConcat=False))

    assert [scalar(result.plan, key) for key in keys] == [6, 3, 9]


def test_align_average_pool_fixed() -> None:
    """AveragePool computes, so its input and output have their own parameters."""
    model = single_input_model("AveragePool", [], [], kernel_shape=[2, 2])
    state = plan_state(model)
    plan = state.plan
    source, output = key_of(plan, "move", 0), out_key(plan, "m")
    plan = with_positions(plan, {source: 7, output: 5})

    result = adjust_npu_positions(plan, graph_of(state), options())

    assert scalar(result.plan, source) == 5
    assert scalar(result.plan, output) == 5


def test_max_pool_shares_one_scale_unchanged() -> None:
    state = plan_state(single_input_model("MaxPool", [], [], kernel_shape=[2, 2]))
    plan = state.plan
    source, output = key_of(plan, "move", 0), out_key(plan, "m")
    assert output in group_members(plan, source)

    result = adjust_npu_positions(plan, graph_of(state), options())

    assert result.report.changes == ()
    assert scalar(result.plan, source) == scalar(result.plan, output)


MOVE_CASES = {
    "Pad": ("AlignPad", [("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], {}),
    "Slice": (
        "AlignSlice",
        [
            ("starts", np.array([1], np.int64)),
            ("ends", np.array([3], np.int64)),
            ("axes", np.array([2], np.int64)),
        ],
        {},
    ),
    "Transpose": ("AlignTranspose", [], {"perm": [0, 1, 3, 2]}),
    "Reshape": ("AlignReshape", [("shape", np.array([1, 2, 16], np.int64))], {}),
}


def split_move_state(op_type: str) -> tuple[State, Plan, str, str]:
    _, constants, attributes = MOVE_CASES[op_type]
    model = single_input_model(
        op_type,
        [name for name, _ in constants],
        [tensor(name, value) for name, value in constants],
        **attributes,
    )
    state = plan_state(model)
    plan = unsplit_selection_plan(state)
    source, output = key_of(plan, "move", 0), out_key(plan, "m")
    return state, with_positions(plan, {source: 4, output: 6}), source, output


@pytest.mark.parametrize("op_type", ["Pad", "Slice"])
def test_align_pad_slice_fixed(op_type: str) -> None:
    state, plan, source, output = split_move_state(op_type)

    result = adjust_npu_positions(plan, graph_of(state), options())

    assert scalar(result.plan, source) == 4
    assert scalar(result.plan, output) == 4


@pytest.mark.parametrize("op_type", ["Transpose", "Reshape"])
def test_align_transpose_reshape_only_when_enabled(op_type: str) -> None:
    option, _, _ = MOVE_CASES[op_type]
    state, plan, source, output = split_move_state(op_type)

    default = adjust_npu_positions(plan, graph_of(state), options())
    enabled = adjust_npu_positions(plan, graph_of(state), options(**{option: True}))

    assert scalar(default.plan, output) == 6
    assert scalar(enabled.plan, source) == 4
    assert scalar(enabled.plan, output) == 4


@pytest.mark.parametrize("op_type", ["Pad", "Slice", "Transpose", "Reshape"])
def test_move_ops_share_one_scale(op_type: str) -> None:
    _, constants, attributes = MOVE_CASES[op_type]
    model = single_input_model(
        op_type,
        [name for name, _ in constants],
        [tensor(name, value) for name, value in constants],
        **attributes,
    )
    state = plan_state(model)
    plan = state.plan

    result = adjust_npu_positions(
        plan, graph_of(state), options(AlignTranspose=True, AlignReshape=True)
    )

    assert result.report.changes == ()
    assert scalar(plan, key_of(plan, "move", 0)) == scalar(plan, out_key(plan, "m"))


# ---------------------------------------------------------------- options and scale types


def test_float_scales_returned_unchanged() -> None:
    state = plan_state(conv_model(1e-4, 100.0), activation=Int8Spec(), weight=Int8Spec())

    result = adjust_npu_positions(state.plan, graph_of(state), options())

    assert result.plan is state.plan
    assert result.report.skipped == "no target has a power-of-two scale"


def test_limitation_check_off_returns_plan() -> None:
    state = plan_state(conv_model(1e-4, 100.0))

    result = adjust_npu_positions(state.plan, graph_of(state), options(NPULimitationCheck=False))

    assert result.plan is state.plan
    assert result.report.skipped == "NPULimitationCheck is off"


def test_config_options_accepted() -> None:
    """The registry's defaults (Align options None) run every default check."""
    state = plan_state(conv_model(1e-4, 100.0))

    result = adjust_npu_positions(state.plan, graph_of(state), state.config.options)

    assert result.report.moves_per_check()["shift_cut"] == 1


def test_invalid_max_loop_num_rejected() -> None:
    state = plan_state(conv_model(0.3, 0.1))

    with pytest.raises(ValueError, match="MaxLoopNum must be at least 1, got 0"):
        adjust_npu_positions(state.plan, graph_of(state), options(MaxLoopNum=0))


def test_asymmetric_zero_point_keeps_its_value() -> None:
    """Moving an asymmetric power-of-two target keeps its lowest value where it was."""
    spec = UInt8Spec(scale_type=ScaleType.PowerOf2, symmetric=False)
    state = plan_state(concat_model(), activation=spec)
    plan = state.plan
    keys = [key_of(plan, "cat", 0), key_of(plan, "cat", 1), out_key(plan, "c")]
    plan = with_positions(plan, dict(zip(keys, (6, 3, 9), strict=True)))

    result = adjust_npu_positions(plan, graph_of(state), options())

    for key in keys:
        before, after = plan.params[key], result.plan.params[key]
        assert scalar(result.plan, key) == 3
        lowest_before = -float(before.zero_point) * float(before.scale)
        lowest_after = -float(after.zero_point) * float(after.scale)
        assert abs(lowest_after - lowest_before) <= float(after.scale) / 2, key


def test_report_summary_line() -> None:
    state = plan_state(conv_model(1e-4, 100.0))

    report = adjust_npu_positions(state.plan, graph_of(state), options()).report

    assert report.summary_line().startswith(
        "NPU position checks: 2 position(s) moved in 2 round(s)"
    )
    assert "shift_cut 1" in report.summary_line()


# ---------------------------------------------------------------- every check at once


def mixed_model() -> onnx.ModelProto:
    """Conv, Swish, AveragePool, Add and Concat: every default check has a node to look at."""
    first = (RNG.normal(size=(4, 3, 3, 3)) * 0.3).astype(np.float32)
    second = (RNG.normal(size=(4, 3, 1, 1)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("HardSigmoid", ["r1"], ["h"], name="hsig", alpha=ONE_SIXTH, beta=0.5),
        helper.make_node("Mul", ["r1", "h"], ["s"], name="swish"),
        helper.make_node(
            "AveragePool", ["s"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Conv", ["x", "w2", "b2"], ["c2"], name="conv2", strides=[2, 2]),
        helper.make_node("Add", ["p", "c2"], ["a"], name="add"),
        helper.make_node("Concat", ["a", "p"], ["cat"], name="cat", axis=1),
        helper.make_node("Relu", ["cat"], ["y"], name="act"),
    ]
    inits = [
        tensor("w1", first),
        tensor("b1", RNG.normal(size=4).astype(np.float32)),
        tensor("w2", second),
        tensor("b2", RNG.normal(size=4).astype(np.float32)),
    ]
    return make_model(nodes, [("x", [1, 3, 8, 8])], ["y"], inits)


MIXED_MODEL = mixed_model()
MIXED_STATE = plan_state(MIXED_MODEL)


def broken_limits(plan: Plan) -> set[tuple[str, str]]:
    """Return (check, node) of every limit the mixed model's positions break."""

    def p(node: str, index: int) -> int:
        return scalar(plan, key_of(plan, node, index))

    def o(name: str) -> int:
        return scalar(plan, out_key(plan, name))

    broken = set()
    for conv, output in (("conv1", "c1"), ("conv2", "c2")):
        cut = p(conv, 1) + p(conv, 0) - o(output)
        if not 0 <= cut <= 16:
            broken.add(("shift_cut", conv))
        shift_bias = p(conv, 1) + p(conv, 0) - p(conv, 2)
        if not min(0, cut - 16) <= shift_bias <= 15:
            broken.add(("shift_bias", conv))
    source, output = p("hsig", 0), o("h")
    if not (0 <= source <= 15 and output >= 7 and 0 <= 14 + source - output <= 31):
        broken.add(("hard_sigmoid", "hsig"))
    product = p("swish", 0) + p("swish", 1) - o("s")
    if not 0 <= product <= 15:
        broken.add(("shift_swish", "swish"))
    if not 0 <= product <= 32:
        broken.add(("shift_write", "swish"))
    if p("pool", 0) != o("p"):
        broken.add(("align_pool", "pool"))
    if abs(p("add", 0) - p("add", 1)) > 7:
        broken.add(("shift_read", "add"))
    if not -7 <= min(p("add", 0), p("add", 1)) - o("a") <= 25:
        broken.add(("shift_write", "add"))
    if len({p("cat", 0), p("cat", 1), o("cat")}) > 1:
        broken.add(("align_concat", "cat"))
    return broken


def test_mixed_model_limits_broken_then_fixed() -> None:
    plan = MIXED_STATE.plan
    groups = share_groups(plan.selection)
    plan = with_positions(
        plan, {group[0]: 30 if index % 2 else -5 for index, group in enumerate(groups)}
    )
    assert len(broken_limits(plan)) >= 5

    result = adjust_npu_positions(plan, graph_of(MIXED_STATE), options(MaxLoopNum=20))

    assert broken_limits(result.plan) == set()
    assert result.report.unresolved == ()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), rounds=st.integers(min_value=1, max_value=8))
def test_random_positions_fixed_or_reported(data: st.DataObject, rounds: int) -> None:
    plan = MIXED_STATE.plan
    groups = share_groups(plan.selection)
    values = data.draw(st.lists(st.integers(-6, 24), min_size=len(groups), max_size=len(groups)))
    plan = with_positions(
        plan, {group[0]: value for group, value in zip(groups, values, strict=True)}
    )
    before = snapshot(plan)

    result = adjust_npu_positions(plan, graph_of(MIXED_STATE), options(MaxLoopNum=rounds))

    assert snapshot(plan) == before
    reported = {(violation.check, violation.node) for violation in result.report.unresolved}
    assert broken_limits(result.plan) == reported
    assert result.report.rounds <= rounds
    if result.report.rounds < rounds:
        assert reported == set()
    for group in share_groups(result.plan.selection):
        scales = {result.plan.params[key].scale.tobytes() for key in group}
        assert len(scales) == 1, group
    assert set(npu_violations(result.plan, graph_of(MIXED_STATE), options())) == set(
        result.report.unresolved
    )


# ---------------------------------------------------------------- onnxruntime


def test_refined_mixed_model_runs_in_onnxruntime() -> None:
    plan = MIXED_STATE.plan
    groups = share_groups(plan.selection)
    plan = with_positions(
        plan, {group[0]: 30 if index % 2 else -5 for index, group in enumerate(groups)}
    )
    refined = refine_npu_positions(plan, graph_of(MIXED_STATE), options(MaxLoopNum=20))
    refined = refine_bias(refined, DataType.Int32)
    assert MIXED_STATE.model is not None

    quantized = ir.to_proto(materialize(MIXED_STATE.model, refined, qdq_pair_for_constants=False))

    onnx.checker.check_model(quantized, full_check=True)
    feed = samples({"x": [1, 3, 8, 8]}, 1, seed=5)[0]
    (output,) = run(quantized, feed)
    assert output.shape == (1, 8, 4, 4)
    assert np.all(np.isfinite(output))
    weight_key = key_of(refined, "conv1", 1)
    scales = [
        numpy_helper.to_array(init)
        for init in quantized.graph.initializer
        if init.name.startswith("w1_scale")
    ]
    assert [float(scale) for scale in scales] == [float(refined.params[weight_key].scale)]


def test_calibrated_mixed_model_runs_close_to_float() -> None:
    refined = refine_npu_positions(MIXED_STATE.plan, graph_of(MIXED_STATE), options())
    assert broken_limits(refined) == set()
    refined = refine_bias(refined, DataType.Int32)
    assert MIXED_STATE.model is not None

    quantized = ir.to_proto(materialize(MIXED_STATE.model, refined, qdq_pair_for_constants=False))

    for feed in samples({"x": [1, 3, 8, 8]}, 3, seed=9):
        (expected,) = run(MIXED_MODEL, feed)
        (actual,) = run(quantized, feed)
        assert cosine(expected, actual) >= 0.97
