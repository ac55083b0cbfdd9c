"""BatchNormalization folding and conversion.

In inference mode BatchNormalization computes `y = s * x + t` per channel, with
`s = gamma / sqrt(var + epsilon)` and `t = beta - mean * s`. Every rule here computes
`s` and `t` in float64 and stores results in the dtype of the weights they replace.

- FoldBatchNorm: `BN(Conv(x, W, B))` becomes `Conv(x, W * s, (B - mean) * s + beta)`,
  with `s` applied to the output-channel axis of W (axis 0 for Conv, the per-group
  output axis for ConvTranspose, the N axis of Gemm's B). `BN(Concat(a, b, ...))` over
  the channel axis folds each channel range into the Conv, ConvTranspose or Gemm that
  produces that Concat input.
- ConvertBNToConv: any other BN on an input of rank 3 or more becomes a depthwise Conv
  with 1x1 kernel, weight `s` and bias `t`.

Folded weights are new initializers with fresh names, so a weight that other nodes
share is left as it is for them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir

from qrewrite.rewrite import Contract, MatchResult, RewritePattern, Rule
from qrewrite.rewrite.helpers import (
    constant_value,
    float_attribute,
    int_attribute,
    static_rank,
    unique_name,
)

_FOLDABLE_PRODUCERS = ("Conv", "ConvTranspose", "Gemm")
_BN_DEFAULT_EPSILON = 1e-5


def _bn_scale_shift(bn: ir.Node) -> tuple[np.ndarray, np.ndarray] | MatchResult:
    """Return the per-channel (s, t) of an inference-mode BatchNormalization node."""
    if int_attribute(bn, "training_mode", 0) != 0:
        return MatchResult().fail("BatchNormalization is in training mode", bn)
    if any(output.uses() or output.is_graph_output() for output in bn.outputs[1:]):
        return MatchResult().fail("the running mean or variance output is used", bn)
    params = [constant_value(value) for value in bn.inputs[1:5]]
    if len(params) != 4 or any(param is None for param in params):
        return MatchResult().fail("scale, bias, mean and variance must be constants", bn)
    gamma, beta, mean, var = (np.asarray(param, dtype=np.float64).reshape(-1) for param in params)
    epsilon = float_attribute(bn, "epsilon", _BN_DEFAULT_EPSILON)
    scale = gamma / np.sqrt(var + epsilon)
    return scale, beta - mean * scale


def _output_channels(node: ir.Node) -> int | None:
    """Return the output channel count of a Conv, ConvTranspose or Gemm with constant weight."""
    weight = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight is None or weight.ndim < 2:
        return None
    if node.op_type == "Conv":
        return weight.shape[0]
    if node.op_type == "ConvTranspose":
        return weight.shape[1] * int_attribute(node, "group", 1)
    if int_attribute(node, "transB", 0):
        return weight.shape[0]
    return weight.shape[1]


def _check_producer(node: ir.Node | None) -> MatchResult:
    if node is None or node.op_type not in _FOLDABLE_PRODUCERS or node.domain != "":
        return MatchResult().fail("the input is not produced by a Conv, ConvTranspose or Gemm")
    if _output_channels(node) is None:
        return MatchResult().fail(f"the weight of {node.op_type} is not a constant", node)
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is not None and constant_value(bias) is None:
        return MatchResult().fail(f"the bias of {node.op_type} is not a constant", node)
    if node.op_type == "Gemm" and int_attribute(node, "transA", 0) not in (0, 1):
        return MatchResult().fail("invalid transA", node)
    return MatchResult()


def _folded_parameters(
    node: ir.Node, scale: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Return the weight, bias and attributes of `node` with `scale * node(x) + shift` folded in."""
    weight_value = constant_value(node.inputs[1])
    assert weight_value is not None
    weight = weight_value.astype(np.float64)
    channels = scale.size
    bias_input = node.inputs[2] if len(node.inputs) > 2 else None
    bias_value = constant_value(bias_input) if bias_input is not None else None
    bias = np.zeros(channels) if bias_value is None else bias_value.astype(np.float64)
    attributes = dict(node.attributes)

    if node.op_type == "Conv":
        weight = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    elif node.op_type == "ConvTranspose":
        group = int_attribute(node, "group", 1)
        grouped = weight.reshape(group, weight.shape[0] // group, weight.shape[1], -1)
        grouped = grouped * scale.reshape(group, 1, weight.shape[1], 1)
        weight = grouped.reshape(weight.shape)
    else:
        if int_attribute(node, "transB", 0):
            weight = weight * scale[:, None]
        else:
            weight = weight * scale[None, :]
        # Gemm scales C by beta. Fold beta into the new bias and emit beta=1.
        bias = bias * float_attribute(node, "beta", 1.0)
        attributes.pop("beta", None)

    new_bias = bias * scale + shift
    dtype = weight_value.dtype
    return weight.astype(dtype), new_bias.astype(dtype), attributes


def _emit_folded(op, model: ir.Model, node: ir.Node, x: ir.Value, scale, shift) -> ir.Value:
    weight, bias, attributes = _folded_parameters(node, scale, shift)
    weight_input = node.inputs[1]
    base = (weight_input.name if weight_input is not None else None) or "weight"
    weight_value = op.initializer(ir.tensor(weight), name=unique_name(model, f"{base}_bnfold"))
    bias_value = op.initializer(ir.tensor(bias), name=unique_name(model, f"{base}_bnfold_bias"))
    return op.op(node.op_type, x, weight_value, bias_value, **attributes)


class _FoldIntoProducer(RewritePattern):
    """BN(Conv | ConvTranspose | Gemm) → the producer with folded weight and bias."""

    def __init__(self, op_type: str) -> None:
        super().__init__(name=f"FoldBatchNormInto{op_type}")
        self._op_type = op_type

    def pattern(self, op, x):
        inbound = getattr(op, self._op_type)(x, _allow_other_inputs=True, _outputs=["inbound"])
        return op.BatchNormalization(inbound, _allow_other_inputs=True, _outputs=["bn_out"])

    def check(self, context, x, inbound, bn_out, **_):  # type: ignore[override]
        producer_check = _check_producer(inbound.producer())
        if not producer_check:
            return producer_check
        params = _bn_scale_shift(bn_out.producer())
        if isinstance(params, MatchResult):
            return params
        if params[0].size != _output_channels(inbound.producer()):
            return MatchResult().fail("BatchNormalization and its producer differ in channels")
        self._model, self._params = context.model, params
        return MatchResult()

    def rewrite(self, op, x, inbound, bn_out, **_):
        scale, shift = self._params
        return _emit_folded(op, self._model, inbound.producer(), x, scale, shift)


class _FoldThroughConcat(RewritePattern):
    """BN(Concat(p1, p2, ...) over channels) → Concat(p1', p2', ...), each producer folded."""

    def __init__(self) -> None:
        super().__init__(name="FoldBatchNormThroughConcat")

    def pattern(self, op):
        concat = op.Concat(_allow_other_inputs=True, _outputs=["concat_out"])
        return op.BatchNormalization(concat, _allow_other_inputs=True, _outputs=["bn_out"])

    def check(self, context, concat_out, bn_out, **_):  # type: ignore[override]
        concat = concat_out.producer()
        rank = static_rank(concat_out)
        axis = int_attribute(concat, "axis", 1)
        if rank is None or axis % rank != 1:
            return MatchResult().fail("Concat is not over the channel axis (axis 1)", concat)
        params = _bn_scale_shift(bn_out.producer())
        if isinstance(params, MatchResult):
            return params
        channels: list[int] = []
        for value in concat.inputs:
            producer = value.producer() if value is not None else None
            producer_check = _check_producer(producer)
            if not producer_check:
                return producer_check
            assert value is not None and producer is not None  # _check_producer ensures it.
            if len(value.uses()) != 1 or value.is_graph_output():
                return MatchResult().fail(f"{value.name} has users besides the Concat", value)
            count = _output_channels(producer)
            assert count is not None  # _check_producer ensures it.
            channels.append(count)
        if sum(channels) != params[0].size:
            return MatchResult().fail("Concat channels differ from BatchNormalization channels")
        self._model, self._params, self._channels = context.model, params, channels
        return MatchResult()

    def rewrite(self, op, concat_out, bn_out, **_):
        concat = concat_out.producer()
        scale, shift = self._params
        folded, start = [], 0
        for value, count in zip(concat.inputs, self._channels, strict=True):
            producer = value.producer()
            part = slice(start, start + count)
            x = producer.inputs[0]
            folded.append(_emit_folded(op, self._model, producer, x, scale[part], shift[part]))
            start += count
        return op.Concat(*folded, **concat.attributes)


class _BatchNormToConv(RewritePattern):
    """BN(x) with x of rank >= 3 → Conv(x, s as a C x 1 x 1... weight, t, group=C)."""

    def __init__(self) -> None:
        super().__init__(name="ConvertBNToConv")

    def pattern(self, op, x):
        return op.BatchNormalization(x, _allow_other_inputs=True, _outputs=["bn_out"])

    def check(self, context, x, bn_out, **_):  # type: ignore[override]
        rank = static_rank(x)
        if rank is None or rank < 3:
            return MatchResult().fail("the input rank is unknown or below 3", x)
        if x.dtype not in (ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16):
            return MatchResult().fail("the input is not a float tensor", x)
        params = _bn_scale_shift(bn_out.producer())
        if isinstance(params, MatchResult):
            return params
        self._model, self._params, self._rank = context.model, params, rank
        return MatchResult()

    def rewrite(self, op, x, bn_out, **_):
        scale, shift = self._params
        channels = scale.size
        dtype = x.dtype.numpy()
        weight = scale.reshape((channels, 1) + (1,) * (self._rank - 2)).astype(dtype)
        base = bn_out.producer().name or "batchnorm"
        weight_value = op.initializer(
            ir.tensor(weight), name=unique_name(self._model, f"{base}_conv_weight")
        )
        bias_value = op.initializer(
            ir.tensor(shift.astype(dtype)), name=unique_name(self._model, f"{base}_conv_bias")
        )
        return op.Conv(
            x, weight_value, bias_value, group=channels, kernel_shape=[1] * (self._rank - 2)
        )


FOLD_BATCH_NORM = Rule(
    name="FoldBatchNorm",
    patterns=[
        *(_FoldIntoProducer(op_type) for op_type in _FOLDABLE_PRODUCERS),
        _FoldThroughConcat(),
    ],
    matches=(
        "BatchNormalization (inference mode, constant parameters) whose input comes from a "
        "Conv, ConvTranspose or Gemm with constant weight and bias, or from a channel Concat "
        "whose inputs all come from such nodes and have no other users"
    ),
    produces="the same Conv, ConvTranspose or Gemm (and Concat) with folded weight and bias",
    contract=Contract.exact(),
    option="FoldBatchNorm",
)

CONVERT_BN_TO_CONV = Rule(
    name="ConvertBNToConv",
    patterns=[_BatchNormToConv()],
    matches="BatchNormalization (inference mode, constant parameters) on an input of rank >= 3",
    produces="a depthwise Conv with 1x1 kernel (group = channels)",
    contract=Contract.exact(),
    option="ConvertBNToConv",
)
