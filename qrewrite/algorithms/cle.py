"""Cross-layer equalization (CLE) of consecutive Conv, Gemm and MatMul layers.

Take two layers where output channel i of layer 1 feeds only input channel i of layer 2,
possibly through positively homogeneous activations f, which satisfy f(x / s) = f(x) / s
for every s > 0:

    y = W2 · f(W1 · x + b1)

For any positive vector s, dividing output channel i of layer 1 by s_i and multiplying
input channel i of layer 2 by s_i gives the same function:

    W1'[i] = W1[i] / s_i,   b1'[i] = b1[i] / s_i,   W2'[:, i] = W2[:, i] · s_i
    W2' · f(W1' · x + b1') = W2 · S · f(S⁻¹ · (W1 · x + b1)) = W2 · f(W1 · x + b1)

Let r1_i = max |W1[i]| and r2_i = max |W2[:, i]| be the channel's weight ranges. With

    s_i = (1 / r2_i) · sqrt(r1_i · r2_i) = sqrt(r1_i / r2_i)

both ranges become sqrt(r1_i · r2_i), so the channels of each layer move toward equal
ranges and one scale per tensor rounds fewer of them to zero (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", ICCV 2019). A channel
with r1_i = 0 or r2_i = 0 keeps s_i = 1.

With `cle_scale_append_bias`, r1_i also includes |b1[i]|. The bias is divided by the
same s_i as the weights, so this keeps a channel with a large bias and small weights
from having its bias, and so its output activations, scaled up past the balanced
weight range. AMD Quark's ONNX CLE (`quark.onnx`, read from its public source) also
appends the head bias to the range, but first divides it by a shrink factor of 2 to 20
that it picks by heuristics. qrewrite includes |b1[i]| unshrunk.

Pairs handled (layer 1 -> activations -> layer 2):

- Conv (any group) -> Conv whose group count splits the same channels, which includes
  ordinary and depthwise Conv. Conv -> depthwise Conv -> Conv is two pairs that share
  the depthwise Conv, equalized one after the other in graph order.
- Gemm or MatMul -> Gemm or MatMul with a constant 2-D weight. A MatMul's bias is a
  following Add of a constant of shape [N] or [1, ..., 1, N].
- Activations between them: Relu, LeakyRelu, PRelu, and Clip with no upper bound and
  a lower bound of 0 or none. Sigmoid, HardSwish and a Clip with an upper bound are
  not positively homogeneous, so a pair through them is skipped.

A pair is also skipped when a tensor between the layers has another reader or is a
graph output, or when a weight or bias is not a float constant or another node reads it.
Channel counts and Gemm layouts must match. Only the main graph is searched, and
`exclude` does not apply, since the float function does not change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs
import numpy as np
import onnx_ir as ir

from qrewrite.config.algorithms import CLEConfig
from qrewrite.model.graph_utils import constant_array

logger = logging.getLogger(__name__)

_ONNX_DOMAINS = ("", "ai.onnx")
_CONV_OPS = frozenset({"Conv"})
_DENSE_OPS = frozenset({"Gemm", "MatMul"})
_HOMOGENEOUS_OPS = frozenset({"Relu", "LeakyRelu", "PRelu"})
_FLOAT_DTYPES = (np.float32, np.float64)


@attrs.frozen
class LayerPair:
    """Two layers whose shared channels can be rescaled, and the nodes between them."""

    head: ir.Node
    tail: ir.Node
    between: tuple[ir.Node, ...]
    head_weight: ir.Value
    head_bias: ir.Value | None
    tail_weight: ir.Value

    def describe(self) -> str:
        return f"{self.head.name} -> {self.tail.name}"


@attrs.frozen
class EqualizationResult:
    """The equalized copy of a model, with the pairs that were rescaled."""

    model: ir.Model
    pairs: tuple[LayerPair, ...]
    steps: int

    def summary_line(self) -> str:
        return (
            f"cross-layer equalization: {len(self.pairs)} layer pair(s) equalized, "
            f"{self.steps} step(s)"
        )


def equalize(model: ir.Model, config: CLEConfig) -> EqualizationResult:
    """Return a copy of `model` with the weights of every equalizable pair rescaled.

    The input model is not changed. Each of the `config.cle_steps` steps visits all
    pairs in graph order.
    """
    model = model.clone()
    pairs = find_pairs(model.graph)
    for _ in range(config.cle_steps):
        for pair in pairs:
            equalize_pair(pair, append_bias=config.cle_scale_append_bias)
    for pair in pairs:
        logger.debug("equalized %s", pair.describe())
    return EqualizationResult(model=model, pairs=tuple(pairs), steps=config.cle_steps)


def find_pairs(graph: ir.Graph) -> list[LayerPair]:
    """Return the equalizable layer pairs of `graph` (not its subgraphs), in graph order."""
    pairs = []
    for node in graph:
        if node.domain not in _ONNX_DOMAINS or node.op_type not in _CONV_OPS | _DENSE_OPS:
            continue
        pair = _pair_from_head(node, graph)
        if isinstance(pair, str):
            logger.debug("no CLE pair from %s %s: %s", node.op_type, node.name, pair)
        else:
            pairs.append(pair)
    return pairs


def equalize_pair(pair: LayerPair, *, append_bias: bool) -> None:
    """Rescale the shared channels of `pair` in place so their weight ranges are equal."""
    head_weight = _float_constant(pair.head_weight)
    tail_weight = _float_constant(pair.tail_weight)
    assert head_weight is not None and tail_weight is not None
    head_axis = _head_channel_axis(pair.head)

    head_range = _channel_rows(head_weight, head_axis).max(axis=1, initial=0.0)
    head_bias = None
    if pair.head_bias is not None:
        head_bias = _float_constant(pair.head_bias)
        assert head_bias is not None
        if append_bias:
            head_range = np.maximum(head_range, np.abs(head_bias.reshape(-1)))
    tail_range = _tail_rows(pair.tail, tail_weight).max(axis=1, initial=0.0)

    scales = np.ones_like(head_range, dtype=np.float64)
    balanced = (head_range > 0) & (tail_range > 0)
    scales[balanced] = np.sqrt(head_range[balanced] / tail_range[balanced])

    _store(pair.head_weight, _scale_along(head_weight, head_axis, 1.0 / scales))
    if head_bias is not None:
        assert pair.head_bias is not None
        _store(pair.head_bias, _scale_along(head_bias, head_bias.ndim - 1, 1.0 / scales))
    _store(pair.tail_weight, _scale_tail(pair.tail, tail_weight, scales))


def _pair_from_head(head: ir.Node, graph: ir.Graph) -> LayerPair | str:
    """Build the pair that starts at `head`, or return why there is none."""
    if len(head.inputs) < 2 or not head.outputs:
        return "missing weight input"
    weight = head.inputs[1]
    weight_array = _own_constant(weight, head)
    if weight is None or weight_array is None:
        return "weight is not a float constant read only by this node"
    if head.op_type == "Conv" and weight_array.ndim < 3:
        return f"Conv weight has rank {weight_array.ndim}"
    if head.op_type in _DENSE_OPS and weight_array.ndim != 2:
        return f"{head.op_type} weight has rank {weight_array.ndim}, not 2"
    channels = weight_array.shape[_head_channel_axis(head)]

    bias: ir.Value | None = None
    bias_add: ir.Node | None = None
    output = head.outputs[0]
    if head.op_type in ("Conv", "Gemm") and len(head.inputs) > 2 and head.inputs[2] is not None:
        bias = head.inputs[2]
        bias_array = _own_constant(bias, head)
        if bias_array is None or not _is_channel_vector(bias_array, channels):
            return "bias is not a per-channel float constant read only by this node"
    elif head.op_type == "MatMul":
        found_add = _bias_add(output, channels)
        if found_add is not None:
            bias_add, bias = found_add
            output = bias_add.outputs[0]

    found = _follow_to_tail(output, graph)
    if isinstance(found, str):
        return found
    tail, between = found
    if (head.op_type in _CONV_OPS) != (tail.op_type in _CONV_OPS):
        return f"{head.op_type} cannot pair with {tail.op_type}"
    if bias_add is not None:
        between = (bias_add, *between)

    tail_weight = tail.inputs[1] if len(tail.inputs) > 1 else None
    tail_array = _own_constant(tail_weight, tail)
    if tail_weight is None or tail_array is None:
        return f"weight of {tail.name} is not a float constant read only by that node"
    reason = _check_tail(tail, tail_array, channels)
    if reason:
        return reason
    return LayerPair(head, tail, between, weight, bias, tail_weight)


def _follow_to_tail(
    value: ir.Value, graph: ir.Graph
) -> tuple[ir.Node, tuple[ir.Node, ...]] | str:
    """Walk from a head output through homogeneous activations to the next layer."""
    between: list[ir.Node] = []
    while True:
        if value.is_graph_output():
            return f"{value.name} is a graph output"
        uses = list(value.uses())
        if len(uses) != 1:
            return f"{value.name} has {len(uses)} readers"
        node, index = uses[0].node, uses[0].idx
        if node.graph is not graph or node.domain not in _ONNX_DOMAINS:
            return f"{value.name} is read by {node.op_type} {node.name}"
        if index == 0 and _is_positively_homogeneous(node):
            between.append(node)
            value = node.outputs[0]
            continue
        if index == 0 and node.op_type in _CONV_OPS | _DENSE_OPS:
            return node, tuple(between)
        return f"{node.op_type} {node.name} is not a positively homogeneous activation"


def _is_positively_homogeneous(node: ir.Node) -> bool:
    """Return True for an activation with f(x / s) = f(x) / s for all s > 0."""
    if len(node.outputs) != 1:
        return False
    if node.op_type in _HOMOGENEOUS_OPS:
        return True
    if node.op_type != "Clip":
        return False
    # Clip(x, 0) and Clip(x) commute with positive scaling, but an upper bound does not.
    if "max" in node.attributes or (len(node.inputs) > 2 and node.inputs[2] is not None):
        return False
    if "min" in node.attributes:
        return node.attributes["min"].as_float() == 0.0
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        lower = constant_array(node.inputs[1])
        return lower is not None and lower.size == 1 and float(lower.reshape(-1)[0]) == 0.0
    return True


def _bias_add(output: ir.Value, channels: int) -> tuple[ir.Node, ir.Value] | None:
    """Find Add(output, bias) with a constant per-channel bias that only this Add reads."""
    if output.is_graph_output():
        return None
    uses = list(output.uses())
    if len(uses) != 1:
        return None
    add = uses[0].node
    if add.op_type != "Add" or add.domain not in _ONNX_DOMAINS or len(add.inputs) != 2:
        return None
    bias = add.inputs[1 - uses[0].idx]
    if bias is None or bias is output:
        return None
    array = _own_constant(bias, add)
    if array is None or not _is_channel_vector(array, channels):
        return None
    return add, bias


def _check_tail(tail: ir.Node, weight: np.ndarray, channels: int) -> str | None:
    """Return why `tail` cannot take `channels` input channels from the head, or None."""
    if tail.op_type == "Conv":
        groups = tail.attributes["group"].as_int() if "group" in tail.attributes else 1
        if weight.ndim < 3 or weight.shape[0] % groups != 0:
            return f"Conv {tail.name} weight shape {weight.shape} does not fit group={groups}"
        if weight.shape[1] * groups != channels:
            return (
                f"Conv {tail.name} reads {weight.shape[1] * groups} channels in "
                f"{groups} group(s), but the head writes {channels}"
            )
        return None
    if weight.ndim != 2:
        return f"{tail.op_type} {tail.name} weight has rank {weight.ndim}, not 2"
    if tail.op_type == "Gemm" and _int_attribute(tail, "transA"):
        return f"Gemm {tail.name} has transA=1"
    tail_channels = weight.shape[_tail_channel_axis(tail)]
    if tail_channels != channels:
        return f"{tail.name} reads {tail_channels} channels, but the head writes {channels}"
    return None


def _head_channel_axis(node: ir.Node) -> int:
    """Return the weight axis of the head's output channels."""
    if node.op_type == "Gemm":
        return 0 if _int_attribute(node, "transB") else 1
    if node.op_type == "MatMul":
        return 1
    return 0


def _tail_channel_axis(node: ir.Node) -> int:
    """Return the weight axis of a Gemm or MatMul tail's input channels."""
    if node.op_type == "Gemm":
        return 1 if _int_attribute(node, "transB") else 0
    return 0


def _tail_rows(tail: ir.Node, weight: np.ndarray) -> np.ndarray:
    """Return the absolute tail weights as one row per input channel."""
    if tail.op_type != "Conv":
        return _channel_rows(weight, _tail_channel_axis(tail))
    groups = _int_attribute(tail, "group", 1)
    blocks = np.abs(_conv_group_blocks(weight, groups))
    # Input channel g * (C / groups) + j is column j of group g's output filters.
    return blocks.transpose(0, 2, 1, 3).reshape(groups * weight.shape[1], -1)


def _scale_tail(tail: ir.Node, weight: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Multiply each input channel of the tail weight by its scale."""
    if tail.op_type != "Conv":
        return _scale_along(weight, _tail_channel_axis(tail), scales)
    groups = _int_attribute(tail, "group", 1)
    blocks = _conv_group_blocks(weight, groups)
    factors = scales.reshape(groups, 1, weight.shape[1], 1)
    return (blocks * factors).astype(weight.dtype).reshape(weight.shape)


def _conv_group_blocks(weight: np.ndarray, groups: int) -> np.ndarray:
    """View a Conv weight [M, C/groups, k...] as [groups, M/groups, C/groups, k]."""
    return weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1)


def _channel_rows(weight: np.ndarray, axis: int) -> np.ndarray:
    """Return the absolute weights as one row per index along `axis`."""
    return np.abs(np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1))


def _scale_along(array: np.ndarray, axis: int, scales: np.ndarray) -> np.ndarray:
    shape = [1] * array.ndim
    shape[axis] = -1
    return (array * scales.reshape(shape)).astype(array.dtype)


def _is_channel_vector(array: np.ndarray, channels: int) -> bool:
    """Return True for shape [channels] or [1, ..., 1, channels]."""
    return (
        array.ndim >= 1
        and array.shape[-1] == channels
        and all(size == 1 for size in array.shape[:-1])
    )


def _int_attribute(node: ir.Node, name: str, default: int = 0) -> int:
    attribute = node.attributes.get(name)
    return default if attribute is None else attribute.as_int()


def _float_constant(value: ir.Value) -> np.ndarray | None:
    array = constant_array(value)
    if array is None or array.dtype not in _FLOAT_DTYPES:
        return None
    return array


def _own_constant(value: ir.Value | None, reader: ir.Node) -> np.ndarray | None:
    """Return the float constant that only `reader` reads, else None.

    A shared weight is left alone, because rescaling it would change its other readers.
    """
    if value is None or value.is_graph_output():
        return None
    readers: Sequence[ir.Node] = [use.node for use in value.uses()]
    if any(node is not reader for node in readers):
        return None
    return _float_constant(value)


def _store(value: ir.Value, array: np.ndarray) -> None:
    """Replace the data of an initializer or a Constant node's output."""
    tensor = ir.tensor(array, name=value.name)
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant":
        for key in ("value_float", "value_floats"):
            producer.attributes.pop(key, None)
        producer.attributes["value"] = ir.AttrTensor("value", tensor)
        if value.const_value is not None:
            value.const_value = tensor
        return
    value.const_value = tensor
