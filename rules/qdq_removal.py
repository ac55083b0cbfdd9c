"""Removal of the QuantizeLinear/DequantizeLinear pair between two ops, for AMD NPUs.

The DPU computes an activation inside the op that feeds it (Conv, Add or Gemm followed
by Relu, for example) and quantizes only the activation's output. These rules make the
QDQ model compute the same: they match

    y = P(...)                       P of a listed producer op type
    z = C(..., DequantizeLinear(QuantizeLinear(y, s, zp), s, zp), ...)
    QuantizeLinear(z, ...)           every consumer of z is a QuantizeLinear

and produce `C(..., y, ...)`, the consumer reading the producer's float output. The
QuantizeLinear and DequantizeLinear must have equal scales, zero points, axis and
block size, and the chain must have no branches: y feeds only the QuantizeLinear, the
QuantizeLinear only the DequantizeLinear, and the DequantizeLinear only C. Otherwise
another reader of y or of the rounded tensor would see a value the DPU never computes.
The consumer keeps its node name, attributes and other inputs. A consumer with more
than one output is not rewritten.

Error. The pair maps y to r(y) = (clamp(round(y / s) + zp, qmin, qmax) - zp) * s. When
y lies inside the pair's range [(qmin - zp) * s, (qmax - zp) * s], |r(y) - y| <= s / 2,
so each output of C moves by at most L * s / 2, where L is the Lipschitz constant of C
in that input: 1 for Relu, Clip and Add, max(1, |alpha|) for LeakyRelu, max(1, |slope|)
for PRelu, and about 1.13 for Gelu (the maximum slope of x * Phi(x)). Outside that
range the pair clipped y and the rewritten model does not, so the change grows with the
distance by which y leaves the range. NOTE: calibration sets that range from sample
data, so other inputs can leave it. The rewrite is exact only when y is already on the
pair's grid. The QuantizeLinear after C rounds both results to its own grid, which adds
at most one of its steps to the difference of the dequantized outputs. The bound is for
one pair with the producer's inputs unchanged. When several pairs go, a later producer
reads inputs that earlier removals moved, so the changes compound through the ops in
between.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from qrewrite.rewrite import Contract, MatchResult, RewritePattern, Rule, RuleSet
from qrewrite.rewrite.helpers import any_op, constant_value, int_attribute

__all__ = [
    "QDQ_REMOVAL_RULES",
    "REMOVE_QDQ_CONV_CLIP",
    "REMOVE_QDQ_CONV_GELU",
    "REMOVE_QDQ_CONV_LEAKY_RELU",
    "REMOVE_QDQ_CONV_PRELU",
    "REMOVE_QDQ_CONV_RELU",
    "REMOVE_QDQ_INSTANCE_NORM",
    "REMOVE_QDQ_MUL_ADD",
    "qdq_removal_rules",
    "remove_qdq_between_ops_rule",
]

# The producers that the RemoveQDQConv* options name in the option registry.
CONV_PRODUCERS = ("Conv", "Add", "Gemm")
INSTANCE_NORM_ACTIVATIONS = ("Relu", "LeakyRelu", "PRelu")

_CONDITION = (
    "every output of the producer already lies on the removed pair's grid, "
    "(q - zero_point) x scale for an integer q in the pair's integer range"
)


def _describe(op_types: Iterable[str]) -> str:
    names = sorted(set(op_types))
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " or " + names[-1]


def _node_label(node: ir.Node) -> str:
    return f"{node.op_type} {node.name!r}" if node.name else f"unnamed {node.op_type}"


def _same_input(first: ir.Value | None, second: ir.Value | None) -> bool:
    """Return whether two optional Q/DQ inputs are the same value or equal true constants."""
    if first is None or second is None:
        return first is second
    if first is second:
        return True
    first_array, second_array = constant_value(first), constant_value(second)
    if first_array is None or second_array is None:
        return False
    return (
        first_array.dtype == second_array.dtype
        and first_array.shape == second_array.shape
        and bool(np.array_equal(first_array, second_array))
    )


def _optional_input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if len(node.inputs) > index else None


def _only_consumer(value: ir.Value, consumer: ir.Node) -> bool:
    """Return whether `consumer` is the only reader of `value`, which is no graph output."""
    if value.is_graph_output():
        return False
    uses = value.uses()
    return bool(uses) and all(use.node is consumer for use in uses)


def _pair_mismatch(quantize: ir.Node, dequantize: ir.Node) -> str | None:
    """Return why the QuantizeLinear and DequantizeLinear do not round-trip, or None."""
    if not _same_input(quantize.inputs[1], dequantize.inputs[1]):
        return "their scales are not the same constant"
    if not _same_input(_optional_input(quantize, 2), _optional_input(dequantize, 2)):
        return "their zero points are not the same constant"
    for name, default in (("axis", 1), ("block_size", 0)):
        if int_attribute(quantize, name, default) != int_attribute(dequantize, name, default):
            return f"their {name} attributes differ"
    return None


class _PairRemoval(RewritePattern):
    """Remove the Q/DQ pair between one listed producer type and the matched consumer.

    `producers_by_consumer` maps each consumer op type to the producer op types whose
    pair is removed before it. The pattern's root is the consumer, so the producer,
    which stays in the model, is checked in `check` and never deleted.
    """

    def __init__(self, name: str, producers_by_consumer: Mapping[str, frozenset[str]]) -> None:
        super().__init__(name=name)
        self._producers_by_consumer = dict(producers_by_consumer)

    def pattern(self, op):
        consumers = set(self._producers_by_consumer)
        return any_op(op, consumers)(_allow_other_inputs=True, _outputs=["consumer_out"])

    def check(self, context, consumer_out, **_):  # type: ignore[override]
        consumer = consumer_out.producer()
        if consumer.domain != "":
            return MatchResult().fail(f"{_node_label(consumer)} is not in the ONNX domain")
        if len(consumer.outputs) != 1:
            return MatchResult().fail(
                f"{_node_label(consumer)} has {len(consumer.outputs)} outputs, but only "
                "single-output consumers are rewritten",
                consumer,
            )
        producers = self._producers_by_consumer.get(consumer.op_type, frozenset())
        reasons = []
        for value in consumer.inputs:
            found = self._removable_pair(consumer, value, producers)
            if isinstance(found, str):
                reasons.append(found)
                continue
            if found is not None:
                output_failure = self._unquantized_output(consumer, consumer_out)
                if output_failure is not None:
                    return output_failure
                self._consumer, self._dequantized, self._source = consumer, value, found
                return MatchResult()
        if reasons:
            return MatchResult().fail("; ".join(dict.fromkeys(reasons)), consumer)
        return MatchResult().fail(
            f"no input of {_node_label(consumer)} is a DequantizeLinear of a QuantizeLinear "
            f"of an output of {_describe(producers) or 'a listed producer'}",
            consumer,
        )

    @staticmethod
    def _unquantized_output(consumer: ir.Node, output: ir.Value) -> MatchResult | None:
        """Return a failure when something other than a QuantizeLinear reads the output."""
        label = _node_label(consumer)
        if output.is_graph_output():
            return MatchResult().fail(
                f"the output of {label} is a graph output, not quantized: the pair before it "
                "is kept because its removal would change that output",
                output,
            )
        uses = output.uses()
        if not uses:
            return MatchResult().fail(f"the output of {label} has no consumers", output)
        others = sorted({use.node.op_type for use in uses} - {"QuantizeLinear"})
        if others or any(use.node.domain != "" for use in uses):
            return MatchResult().fail(
                f"the output of {label} also feeds {', '.join(others) or 'a non-ONNX node'}, "
                "but the pair before it is removed only when every consumer of that output "
                "is a QuantizeLinear",
                output,
            )
        return None

    @staticmethod
    def _removable_pair(
        consumer: ir.Node, value: ir.Value | None, producers: frozenset[str]
    ) -> ir.Value | str | None:
        """Return the producer output to read instead of `value`, a failure reason, or None.

        None means that `value` is not a Q/DQ pair after a listed producer at all.
        """
        if value is None:
            return None
        dequantize = value.producer()
        if dequantize is None or (dequantize.op_type, dequantize.domain) != (
            "DequantizeLinear",
            "",
        ):
            return None
        quantize = dequantize.inputs[0].producer() if dequantize.inputs[0] else None
        if quantize is None or (quantize.op_type, quantize.domain) != ("QuantizeLinear", ""):
            return None
        source = quantize.inputs[0]
        producer = None if source is None else source.producer()
        if source is None or producer is None or producer.domain != "":
            return None
        if producer.op_type not in producers:
            return None

        label = _node_label(producer)
        if not _only_consumer(source, quantize):
            return (
                f"the output of {label} has consumers besides the QuantizeLinear "
                f"{quantize.name!r} or is a graph output, so removing the pair would "
                "leave them reading the rounded and the unrounded value"
            )
        if not _only_consumer(quantize.outputs[0], dequantize):
            return (
                f"the QuantizeLinear {quantize.name!r} after {label} feeds nodes other than "
                f"the DequantizeLinear {dequantize.name!r} or is a graph output"
            )
        if not _only_consumer(value, consumer):
            return (
                f"the DequantizeLinear {dequantize.name!r} after {label} feeds nodes other "
                f"than {_node_label(consumer)} or is a graph output, and those readers "
                "need the rounded value"
            )
        mismatch = _pair_mismatch(quantize, dequantize)
        if mismatch is not None:
            return (
                f"the QuantizeLinear {quantize.name!r} and DequantizeLinear "
                f"{dequantize.name!r} after {label} are not one round trip: {mismatch}"
            )
        if source.dtype is None or source.dtype != value.dtype:
            return (
                f"the output type of {label} ({source.dtype}) is unknown or differs from "
                f"the DequantizeLinear output type ({value.dtype}). Run shape inference "
                "when it is unknown"
            )
        return source

    def rewrite(self, op, **_):
        node = self._consumer
        inputs = [self._source if value is self._dequantized else value for value in node.inputs]
        return op.op(
            node.op_type,
            *inputs,
            _domain=node.domain,
            _name=node.name,
            **node.attributes,
        )


def _conv_rule(name: str, activation: str, lipschitz: str) -> Rule:
    producers = frozenset(CONV_PRODUCERS)
    return Rule(
        name=name,
        patterns=[_PairRemoval(name, {activation: producers})],
        matches=(
            f"{activation} reading a QuantizeLinear/DequantizeLinear pair (equal parameters) "
            f"after {_describe(producers)}, with no other readers along the chain, and "
            f"whose output feeds only QuantizeLinear nodes"
        ),
        produces=(
            f"{activation} reading the producer's float output. While that output stays "
            f"inside the pair's range, each {activation} output moves by at most "
            f"{lipschitz} x scale / 2, with the removed pair's scale"
        ),
        contract=Contract.conditional(_CONDITION),
        option=name,
    )


REMOVE_QDQ_CONV_CLIP = _conv_rule("RemoveQDQConvClip", "Clip", "1")
REMOVE_QDQ_CONV_RELU = _conv_rule("RemoveQDQConvRelu", "Relu", "1")
REMOVE_QDQ_CONV_LEAKY_RELU = _conv_rule("RemoveQDQConvLeakyRelu", "LeakyRelu", "max(1, |alpha|)")
REMOVE_QDQ_CONV_PRELU = _conv_rule("RemoveQDQConvPRelu", "PRelu", "max(1, |slope|)")
REMOVE_QDQ_CONV_GELU = _conv_rule("RemoveQDQConvGelu", "Gelu", "1.13")

REMOVE_QDQ_MUL_ADD = Rule(
    name="RemoveQDQMulAdd",
    patterns=[_PairRemoval("RemoveQDQMulAdd", {"Add": frozenset({"Mul"})})],
    matches=(
        "Add reading a QuantizeLinear/DequantizeLinear pair (equal parameters) after Mul, "
        "with no other readers along the chain, and whose output feeds only "
        "QuantizeLinear nodes"
    ),
    produces=(
        "Add reading the Mul's float output. While that output stays inside the pair's "
        "range, each Add output moves by at most scale / 2, with the removed pair's scale"
    ),
    contract=Contract.conditional(_CONDITION),
    option="RemoveQDQMulAdd",
)

REMOVE_QDQ_INSTANCE_NORM = Rule(
    name="RemoveQDQInstanceNorm",
    patterns=[
        _PairRemoval(
            "RemoveQDQInstanceNorm",
            {
                activation: frozenset({"InstanceNormalization"})
                for activation in INSTANCE_NORM_ACTIVATIONS
            },
        )
    ],
    matches=(
        f"{_describe(INSTANCE_NORM_ACTIVATIONS)} reading a QuantizeLinear/DequantizeLinear "
        "pair (equal parameters) after InstanceNormalization, with no other readers along "
        "the chain, and whose output feeds only QuantizeLinear nodes"
    ),
    produces=(
        "the activation reading the InstanceNormalization's float output. While that "
        "output stays inside the pair's range, each activation output moves by at most "
        "max(1, |alpha| or |slope|) x scale / 2, with the removed pair's scale"
    ),
    contract=Contract.conditional(_CONDITION),
    option="RemoveQDQInstanceNorm",
)


def _checked_pairs(pairs: Iterable[Sequence[str]]) -> dict[str, frozenset[str]]:
    producers_by_consumer: dict[str, set[str]] = {}
    for pair in pairs:
        if (
            isinstance(pair, str)
            or len(pair) != 2
            or not all(isinstance(op_type, str) and op_type for op_type in pair)
        ):
            raise ValueError(
                f"invalid op type pair {pair!r}: expected (producer op type, consumer op type)"
            )
        producer, consumer = pair
        producers_by_consumer.setdefault(consumer, set()).add(producer)
    return {consumer: frozenset(found) for consumer, found in producers_by_consumer.items()}


def remove_qdq_between_ops_rule(pairs: Iterable[Sequence[str]]) -> Rule:
    """Return RemoveQDQBetweenOps for `pairs` of (producer op type, consumer op type).

    An empty list gives a rule that matches nothing. Raises ValueError for an entry that
    is not a pair of non-empty op type names.
    """
    producers_by_consumer = _checked_pairs(pairs)
    listed = ", ".join(
        f"({producer}, {consumer})"
        for consumer, producers in sorted(producers_by_consumer.items())
        for producer in sorted(producers)
    )
    return Rule(
        name="RemoveQDQBetweenOps",
        patterns=[_PairRemoval("RemoveQDQBetweenOps", producers_by_consumer)],
        matches=(
            "a consumer reading a QuantizeLinear/DequantizeLinear pair (equal parameters) "
            f"after a producer, for the (producer, consumer) op type pairs "
            f"{listed or 'of RemoveQDQBetweenOps (none by default)'}, with no other readers "
            "along the chain, and whose output feeds only QuantizeLinear nodes"
        ),
        produces=(
            "the consumer reading the producer's float output. While that output stays "
            "inside the pair's range, each consumer output moves by at most L x scale / 2, "
            "where L is the consumer's Lipschitz constant in that input (it depends on the "
            "other operands of ops such as Mul or Conv)"
        ),
        contract=Contract.conditional(_CONDITION),
        option="RemoveQDQBetweenOps",
    )


# The Conv-activation rules that are on by default for the NPU, in registry order.
_NPU_CONV_RULES = (
    REMOVE_QDQ_CONV_CLIP,
    REMOVE_QDQ_CONV_RELU,
    REMOVE_QDQ_CONV_LEAKY_RELU,
    REMOVE_QDQ_CONV_PRELU,
)

QDQ_REMOVAL_RULES = (
    *_NPU_CONV_RULES,
    REMOVE_QDQ_CONV_GELU,
    REMOVE_QDQ_MUL_ADD,
    remove_qdq_between_ops_rule([]),
    REMOVE_QDQ_INSTANCE_NORM,
)


def qdq_removal_rules(options: Any) -> RuleSet:
    """Return, as one stage, the Q/DQ removal rules that `options` selects.

    `options` has the attributes of `qrewrite.config.ExtraOptions`. RemoveQDQConvClip,
    RemoveQDQConvRelu, RemoveQDQConvLeakyRelu and RemoveQDQConvPRelu, on by default, run
    only with `enable_npu_cnn`. RemoveQDQConvGelu, RemoveQDQMulAdd and
    RemoveQDQInstanceNorm run whenever their option is True, and RemoveQDQBetweenOps when
    its list of pairs is not empty. The order is that of `QDQ_REMOVAL_RULES`.
    """
    selected: list[Rule] = []
    if options.enable_npu_cnn:
        selected.extend(
            rule for rule in _NPU_CONV_RULES if rule.option and getattr(options, rule.option)
        )
    if options.RemoveQDQConvGelu:
        selected.append(REMOVE_QDQ_CONV_GELU)
    if options.RemoveQDQMulAdd:
        selected.append(REMOVE_QDQ_MUL_ADD)
    if options.RemoveQDQBetweenOps:
        selected.append(remove_qdq_between_ops_rule(options.RemoveQDQBetweenOps))
    if options.RemoveQDQInstanceNorm:
        selected.append(REMOVE_QDQ_INSTANCE_NORM)
    return RuleSet.of(*selected)
