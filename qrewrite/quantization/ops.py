"""Which inputs and outputs of each supported op type are quantized, and how.

Every op in `OP_ROLES` gets its float activation inputs and its outputs quantized.
Weight inputs get per-channel scales along `weight_axis` when the spec requests it.
Bias inputs get an int32 scale derived from the input and weight scales. Ops with
`shares_input_params` move or select values without computing new ones, so their
outputs reuse the parameters of their first input. An op type missing from the table
stays float, with Q/DQ only where a quantized neighbour needs it.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import onnx_ir as ir

# Axis of the output channels of a weight, given the consuming node and the weight's rank.
AxisRule = Callable[[ir.Node, int], int]


def _axis0(node: ir.Node, rank: int) -> int:
    return 0


def _axis1(node: ir.Node, rank: int) -> int:
    return 1


def _gemm_axis(node: ir.Node, rank: int) -> int:
    trans_b = node.attributes.get("transB")
    return 0 if trans_b is not None and trans_b.as_int() else 1


def _last_axis(node: ir.Node, rank: int) -> int:
    return rank - 1


@attrs.frozen
class OpRole:
    """The quantization role of one op type: which inputs and outputs get Q/DQ."""

    activation_inputs: tuple[int, ...] = (0,)
    # Input index -> rule for the per-channel axis of a constant weight at that index.
    weight_inputs: tuple[tuple[int, AxisRule], ...] = ()
    # Constant inputs quantized per tensor with the weight spec (PRelu slope, norm scale).
    per_tensor_weight_inputs: tuple[int, ...] = ()
    bias_input: int | None = None
    quantize_outputs: bool = True
    shares_input_params: bool = False
    # Every input position that carries float data is an activation (Concat, Add, ...).
    all_inputs_are_activations: bool = False


_COMPUTE = OpRole()
_BINARY = OpRole(activation_inputs=(0, 1))
_MOVE = OpRole(shares_input_params=True)

OP_ROLES: dict[str, OpRole] = {
    "Conv": OpRole(weight_inputs=((1, _axis0),), bias_input=2),
    "ConvTranspose": OpRole(weight_inputs=((1, _axis1),), bias_input=2),
    "Gemm": OpRole(weight_inputs=((1, _gemm_axis),), bias_input=2),
    "MatMul": OpRole(activation_inputs=(0,), weight_inputs=((1, _last_axis),)),
    "Add": _BINARY,
    "Mul": _BINARY,
    "Sub": _BINARY,
    "Div": _BINARY,
    "Concat": OpRole(activation_inputs=(), all_inputs_are_activations=True),
    "Relu": _COMPUTE,
    "Clip": _COMPUTE,
    "LeakyRelu": _COMPUTE,
    "PRelu": OpRole(per_tensor_weight_inputs=(1,)),
    "Sigmoid": _COMPUTE,
    "HardSigmoid": _COMPUTE,
    "HardSwish": _COMPUTE,
    "Tanh": _COMPUTE,
    "Softmax": _COMPUTE,
    "Gelu": _COMPUTE,
    "LayerNormalization": OpRole(per_tensor_weight_inputs=(1,)),
    "MaxPool": _MOVE,
    "AveragePool": _COMPUTE,
    "GlobalAveragePool": _COMPUTE,
    "Resize": _MOVE,
    "Pad": _MOVE,
    "Slice": _MOVE,
    "Split": _MOVE,
    "Reshape": _MOVE,
    "Transpose": _MOVE,
    "Flatten": _MOVE,
    "Squeeze": _MOVE,
    "Unsqueeze": _MOVE,
    "Gather": _MOVE,
}

# Op types whose weights PerChannelWeightsByDefault quantizes per channel.
PER_CHANNEL_BY_DEFAULT = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

# Op types in com.microsoft that onnxruntime ships and that match a standard role.
MICROSOFT_OP_ROLES: dict[str, OpRole] = {"Gelu": _COMPUTE}

# Generic role for op types outside the table when QuantizeAllOpTypes or
# ExtraOpTypesToQuantize selects them.
GENERIC_ROLE = OpRole(activation_inputs=(), all_inputs_are_activations=True)

# onnxruntime 1.32 fails to load 4-bit models in two places, so with 4-bit activations:
# a tensor read by these ops stays float (its graph optimizer moves the DequantizeLinear
# past MaxPool, which has no int4/uint4 kernel),
FLOAT_INPUTS_WITH_4BIT = frozenset({"MaxPool"})
# and a tensor written by these ops stays float (its Clip + QuantizeLinear fusion rejects
# a 4-bit zero point during session initialization).
FLOAT_OUTPUTS_WITH_4BIT = frozenset({"Clip"})

# Consumers that need the exact float value of their input: quantizing the input would
# change their result (NaN and infinity tests, conversion to integers).
FLOAT_ONLY_CONSUMERS = frozenset({"IsNaN", "IsInf"})


def role_of(node: ir.Node, extra_types: frozenset[str]) -> OpRole | None:
    """Return the quantization role of `node`, or None if it stays float."""
    if node.domain in ("", "ai.onnx"):
        role = OP_ROLES.get(node.op_type)
        if role is not None:
            return role
    elif node.domain == "com.microsoft":
        role = MICROSOFT_OP_ROLES.get(node.op_type)
        if role is not None:
            return role
    if node.op_type in extra_types and node.domain in ("", "ai.onnx", "com.microsoft"):
        return GENERIC_ROLE
    return None
