"""Folding of a constant per-channel scale or shift into the Conv, Gemm or MatMul before it.

Let P be a Conv, ConvTranspose, Gemm or MatMul with constant weight W and optional
constant bias b (b = 0 when absent), and let s and t be constants with one value per
output channel. Then

    P(x, W, b) * s + t == P(x, W * s, b * s + t)

where `W * s` multiplies each output channel's slice of W by its value of s. That
slice is along axis 0 of a Conv weight [Cout, Cin / group, k...] and along the
per-group output axis 1 of a ConvTranspose weight [Cin, Cout / group, k...]. For
Gemm's B it is axis 1, or axis 0 with transB, and for MatMul's B the last axis. Gemm
also multiplies its C by beta, so the folded C is `beta * C * s + t` and the folded
Gemm has beta = 1.

Each pattern folds one binary op:

- FoldConvAffine_Mul: `P * s` or `s * P`, so t = 0.
- FoldConvAffine_Add: `P + t` or `t + P`, so s = 1.
- FoldConvAffine_Sub: `P - c`, so s = 1 and t = -c.
- FoldConvAffine_Div: `P / c` with no zero in c, so s = 1 / c and t = 0.

A Mul followed by an Add, the usual form of a learnable scale and shift, folds in two
steps: the Mul folds first, so the Add then reads the producer directly and folds too.
MatMul has no bias input, so only Mul and Div fold into it.

A constant qualifies when it broadcasts along the output-channel axis only. Aligned to
the right with the producer's output, every other axis is 1 and the channel axis is 1
or the channel count, and its rank is not above the output's.
So a [C] constant qualifies after Gemm and MatMul, but after a Conv it lines up with
the last spatial axis and does not fold, while [C, 1, 1] and [1, C, 1, 1] do. The
producer's output must have no reader besides the folded op and must not be a graph
output, which the matcher enforces. s and t are computed in float64, and the results
are stored in the weight's dtype.

The folded weight and bias are new initializers with fresh names, so another node that
reads the original weight or bias keeps reading the unchanged tensor. A weight shared
this way is stored twice afterwards, which costs memory but never changes results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
from qrewrite.rules._patterns import is_float

from qrewrite.rewrite import Contract, MatchResult, RewritePattern, Rule
from qrewrite.rewrite.helpers import (
    any_op,
    constant_value,
    float_attribute,
    int_attribute,
    unique_name,
)

_PRODUCERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# Before opset 7, Mul, Add, Sub, Div and Gemm broadcast only with the `broadcast`
# attribute and their own axis rules, which `_per_channel` does not model.
_MIN_OPSET = 7


def _channel_layout(
    producer: ir.Node, weight: np.ndarray, output: ir.Value
) -> tuple[int, int] | None:
    """Return (output rank, output-channel axis) of the producer, or None when unknown."""
    if producer.op_type in ("Conv", "ConvTranspose"):
        return weight.ndim, 1
    if producer.op_type == "Gemm":
        return 2, 1
    rank = None if output.shape is None else output.shape.rank()
    if rank is None:
        return None
    return rank, rank - 1


def _output_channels(producer: ir.Node, weight: np.ndarray) -> int:
    if producer.op_type == "Conv":
        return weight.shape[0]
    if producer.op_type == "ConvTranspose":
        return weight.shape[1] * int_attribute(producer, "group", 1)
    if producer.op_type == "Gemm" and int_attribute(producer, "transB", 0):
        return weight.shape[0]
    return weight.shape[-1]


def _per_channel(constant: np.ndarray, rank: int, axis: int, channels: int) -> np.ndarray | None:
    """Return `constant` as a float64 vector of `channels` values, or None.

    None means that the constant does not broadcast along `axis` of a rank-`rank`
    output only: it has a higher rank, or an axis other than `axis` is not 1, or `axis`
    is neither 1 nor `channels`.
    """
    if constant.ndim > rank:
        return None
    shape = (1,) * (rank - constant.ndim) + constant.shape
    for index, size in enumerate(shape):
        if index == axis:
            if size not in (1, channels):
                return None
        elif size != 1:
            return None
    return np.broadcast_to(constant.astype(np.float64).reshape(-1), (channels,)).copy()


def _describe(node: ir.Node) -> str:
    return f"{node.op_type} {node.name!r}" if node.name else node.op_type


def _optional_input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if len(node.inputs) > index else None


class _FoldIntoProducer(RewritePattern):
    """Shared check and rewrite. A subclass gives the pattern and turns c into (s, t)."""

    op_type = ""
    folds_shift = False

    def __init__(self) -> None:
        super().__init__(name=f"FoldConvAffine_{self.op_type}")

    def scale_shift(self, constant: np.ndarray) -> tuple[np.ndarray, np.ndarray] | MatchResult:
        """Return (s, t) for the per-channel constant operand `constant`, in float64."""
        raise NotImplementedError

    def check(self, context, inbound, constant, **_):  # type: ignore[override]
        producer = inbound.producer()
        op_type = self.op_type
        name = _describe(producer)
        if self.folds_shift and producer.op_type == "MatMul":
            return MatchResult().fail(
                f"{name} has no bias input, so the {op_type} after it cannot fold and stays",
                producer,
            )
        if not is_float(inbound):
            return MatchResult().fail(
                f"the output of {name} is not a float tensor of known type. Run shape "
                "inference first.",
                inbound,
            )

        weight = constant_value(_optional_input(producer, 1))
        if weight is None or weight.ndim < 2:
            return MatchResult().fail(
                f"the weight of {name} is not a constant of rank 2 or more (it is a graph "
                "input or a computed value), so there is nothing to fold into",
                producer,
            )
        bias_input = _optional_input(producer, 2)
        if bias_input is not None and constant_value(bias_input) is None:
            return MatchResult().fail(f"the bias of {name} is not a constant", bias_input)

        value = constant_value(constant)
        if value is None:
            return MatchResult().fail(
                f"the other operand of {op_type} is not a constant: a graph input, even with "
                "an initializer, or a computed value cannot fold into a weight",
                constant,
            )
        if not np.all(np.isfinite(value)):
            return MatchResult().fail(f"the constant operand of {op_type} is not finite", constant)

        layout = _channel_layout(producer, weight, inbound)
        if layout is None:
            return MatchResult().fail(
                f"the rank of the output of {name} is unknown. Run shape inference first.",
                inbound,
            )
        rank, axis = layout
        channels = _output_channels(producer, weight)
        vector = _per_channel(value, rank, axis, channels)
        if vector is None:
            return MatchResult().fail(
                f"the constant of shape {list(value.shape)} does not broadcast along the "
                f"output-channel axis {axis} of the rank-{rank} output of {name} "
                f"({channels} channels) only, so it cannot fold into the weight",
                constant,
            )
        scale_shift = self.scale_shift(vector)
        if isinstance(scale_shift, MatchResult):
            return scale_shift

        self._model = context.model
        self._scale, self._shift = scale_shift
        return MatchResult()

    def rewrite(self, op, inbound, **_):
        producer = inbound.producer()
        weight_input = producer.inputs[1]
        weight = constant_value(weight_input)
        assert weight is not None  # check ensures it.
        bias_input = _optional_input(producer, 2)
        bias = constant_value(bias_input)
        attributes: dict[str, Any] = dict(producer.attributes)

        new_weight = _scaled_weight(producer, weight.astype(np.float64), self._scale)
        beta = 1.0
        if producer.op_type == "Gemm":
            # Gemm computes alpha * A * B + beta * C. The new C includes beta and the
            # folded Gemm has beta = 1, the default, also when the old one had no C.
            beta = float_attribute(producer, "beta", 1.0)
            attributes.pop("beta", None)
        new_bias = None
        if bias is not None or np.any(self._shift):
            old_bias = np.zeros(self._scale.size) if bias is None else bias.astype(np.float64)
            new_bias = beta * old_bias * self._scale + self._shift

        base = weight_input.name or "weight"
        inputs = [
            producer.inputs[0],
            op.initializer(
                ir.tensor(new_weight.astype(weight.dtype)),
                name=unique_name(self._model, f"{base}_affine"),
            ),
        ]
        if new_bias is not None:
            inputs.append(
                op.initializer(
                    ir.tensor(new_bias.astype(weight.dtype)),
                    name=unique_name(self._model, f"{base}_affine_bias"),
                )
            )
        return op.op(producer.op_type, *inputs, **attributes)


def _scaled_weight(producer: ir.Node, weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Return `weight` with output channel k multiplied by `scale[k]`."""
    if producer.op_type == "Conv":
        return weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    if producer.op_type == "ConvTranspose":
        # Output channel k is column k % (Cout / group) of the weight rows of group
        # k // (Cout / group).
        group = int_attribute(producer, "group", 1)
        per_group = weight.shape[1]
        grouped = weight.reshape(group, weight.shape[0] // group, per_group, -1)
        grouped = grouped * scale.reshape(group, 1, per_group, 1)
        return grouped.reshape(weight.shape)
    if producer.op_type == "Gemm" and int_attribute(producer, "transB", 0):
        return weight * scale[:, None]
    return weight * scale


class _FoldMul(_FoldIntoProducer):
    """P * c or c * P → P with its weight and bias scaled by c."""

    op_type = "Mul"

    def pattern(self, op, constant):
        inbound = any_op(op, _PRODUCERS)(_allow_other_inputs=True, _outputs=["inbound"])
        return op.Mul(inbound, constant)

    def scale_shift(self, constant):
        return constant, np.zeros_like(constant)


class _FoldAdd(_FoldIntoProducer):
    """P + c or c + P → P with c added to its bias."""

    op_type = "Add"
    folds_shift = True

    def pattern(self, op, constant):
        inbound = any_op(op, _PRODUCERS)(_allow_other_inputs=True, _outputs=["inbound"])
        return op.Add(inbound, constant)

    def scale_shift(self, constant):
        return np.ones_like(constant), constant


class _FoldSub(_FoldIntoProducer):
    """P - c → P with -c added to its bias. c - P is not matched."""

    op_type = "Sub"
    folds_shift = True

    def pattern(self, op, constant):
        inbound = any_op(op, _PRODUCERS)(_allow_other_inputs=True, _outputs=["inbound"])
        return op.Sub(inbound, constant)

    def scale_shift(self, constant):
        return np.ones_like(constant), -constant


class _FoldDiv(_FoldIntoProducer):
    """P / c with no zero in c → P with its weight and bias scaled by 1 / c.

    c / P is not matched.
    """

    op_type = "Div"

    def pattern(self, op, constant):
        inbound = any_op(op, _PRODUCERS)(_allow_other_inputs=True, _outputs=["inbound"])
        return op.Div(inbound, constant)

    def scale_shift(self, constant):
        if np.any(constant == 0):
            return MatchResult().fail(
                "the divisor contains 0, and P / 0 gives inf or NaN, which a finite "
                "weight cannot reproduce"
            )
        return 1.0 / constant, np.zeros_like(constant)


FOLD_CONV_AFFINE = Rule(
    name="FoldConvAffine",
    patterns=[_FoldMul(), _FoldAdd(), _FoldSub(), _FoldDiv()],
    matches=(
        "Mul, Add, Sub or Div of a constant that has one value per output channel (or one "
        "value), applied to the only reader of a Conv, ConvTranspose or Gemm with constant "
        "weight and bias, or Mul and Div of such a constant after a MatMul with constant B"
    ),
    produces="the same Conv, ConvTranspose, Gemm or MatMul with scaled weight and shifted bias",
    contract=Contract.exact(),
    option="FoldConvAffine",
    min_opset=_MIN_OPSET,
    # Matches the constant before the producer in Mul and Add as well. A pattern cannot
    # end in a choice of operand orders, and Sub and Div are not commutative, so their
    # patterns stay as they are.
    commute=True,
)
