"""Fusion of the decomposed hard swish into the opset-14 HardSwish op.

HardSwish(x) = x * max(0, min(1, x / 6 + 1/2)). Exporters write it in three ways, and
for every real x

    x * Clip(x + 3, 0, 6) / 6  ==  x * (Clip(x + 3, 0, 6) * (1/6))
                               ==  x * HardSigmoid(x, alpha=1/6, beta=1/2)
                               ==  HardSwish(x)

because Clip(x + 3, 0, 6) / 6 = min(max(x / 6 + 1/2, 0), 1). The forms differ only in
float rounding. The patterns cover:

- FuseHardSwish_div: `Mul(x, Clip(Add(x, 3), 0, 6)) / 6`, which PaddlePaddle writes;
- FuseHardSwish_mul: the same product times 1/6, either operand order;
- FuseHardSwish_sigmoid: `Mul(x, HardSigmoid(x))` with alpha 1/6 and beta 1/2.

Mul and Add may have their operands in either order. A HardSigmoid with other
constants (PaddlePaddle's slope 0.2, say) is a different function and stays.

For onnxruntime the fused op matters twice. onnxruntime 1.32 on CPU runs HardSwish as
HardSigmoid and Mul (seen in its profile), so two passes replace four. In a quantized
model, onnxruntime has no integer kernel for the decomposed chain. Its Add, Mul and Div
each run between their own DequantizeLinear and QuantizeLinear, which costs three
rounding steps and several conversions. HardSwish runs in float between one
DequantizeLinear and one QuantizeLinear.
"""

from __future__ import annotations

import onnx
import onnx.numpy_helper
from onnxscript.rewriter import pattern as orp
from qrewrite.rules._patterns import either, is_float, split_constant

from qrewrite.rewrite import Contract, MatchResult, RewritePattern, Rule
from qrewrite.rewrite.helpers import float_attribute, is_scalar

HARD_SWISH_OPSET = 14
_ALPHA = 1.0 / 6.0
_BETA = 0.5


class _ClipForm(RewritePattern):
    """x * Clip(x + 3, 0, 6), then divided by 6 or multiplied by 1/6."""

    def __init__(self, name: str, root: str, swap_root: bool = False) -> None:
        super().__init__(name=name)
        self._root, self._swap_root = root, swap_root

    def pattern(self, op, x):
        shifted = op.Add(orp.Var("add_a"), orp.Var("add_b"))
        clipped = op.Clip(shifted, orp.Var("low"), orp.Var("high"))
        product = either(op, "Mul", x, clipped)
        if self._root == "Div":
            return op.Div(product, orp.Var("six"))
        if self._swap_root:
            return op.Mul(orp.Var("sixth"), product)
        return op.Mul(product, orp.Var("sixth"))

    def check(self, context, x, add_a, add_b, low, high, **bindings):  # type: ignore[override]
        if not is_float(x):
            return MatchResult().fail("the input is not a float tensor of known type", x)
        if split_constant(add_a, add_b, 3.0) is not x:
            return MatchResult().fail("the Clip input is not x + 3")
        if not (is_scalar(low, 0.0) and is_scalar(high, 6.0)):
            return MatchResult().fail("the Clip bounds are not the constants 0 and 6")
        if self._root == "Div" and not is_scalar(bindings.get("six"), 6.0):
            return MatchResult().fail("the product is not divided by 6")
        if self._root == "Mul" and not is_scalar(bindings.get("sixth"), _ALPHA):
            return MatchResult().fail("the product is not multiplied by 1/6")
        return MatchResult()

    def rewrite(self, op, x, **_):
        return op.HardSwish(x)


class _HardSigmoidForm(RewritePattern):
    """x * HardSigmoid(x) with alpha 1/6 and beta 1/2."""

    def __init__(self, name: str, swap_root: bool) -> None:
        super().__init__(name=name)
        self._swap_root = swap_root

    def pattern(self, op, x):
        gate = op.HardSigmoid(x, _outputs=["gate"])
        if self._swap_root:
            return op.Mul(gate, x)
        return op.Mul(x, gate)

    def check(self, context, x, gate, **_):  # type: ignore[override]
        if not is_float(x):
            return MatchResult().fail("the input is not a float tensor of known type", x)
        node = gate.producer()
        alpha = float_attribute(node, "alpha", 0.2)
        beta = float_attribute(node, "beta", 0.5)
        if abs(alpha - _ALPHA) > 1e-6 or abs(beta - _BETA) > 1e-6:
            return MatchResult().fail(
                f"HardSigmoid has alpha {alpha:g} and beta {beta:g}, not 1/6 and 1/2"
            )
        return MatchResult()

    def rewrite(self, op, x, **_):
        return op.HardSwish(x)


def has_hard_swish_gate(proto: onnx.ModelProto) -> bool:
    """Return whether the main graph has a HardSigmoid(alpha 1/6) or a Clip(Add(...), 0, 6).

    This cheap scan of the model before any conversion decides whether raising the opset
    to 14 can pay off. It looks at the gate only, so it may return True for a graph where
    the whole pattern does not match.
    """
    graph = proto.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    producers = {output: node.op_type for node in graph.node for output in node.output}

    def scalar(name: str) -> float | None:
        tensor = constants.get(name)
        if tensor is None:
            return None
        array = onnx.numpy_helper.to_array(tensor)
        return float(array.reshape(-1)[0]) if array.size == 1 else None

    for node in graph.node:
        attributes = {attribute.name: attribute for attribute in node.attribute}
        if node.op_type == "HardSigmoid":
            alpha = attributes["alpha"].f if "alpha" in attributes else 0.2
            if abs(alpha - _ALPHA) <= 1e-6:
                return True
        if node.op_type != "Clip" or producers.get(node.input[0]) != "Add":
            continue
        if len(node.input) == 3:
            low, high = scalar(node.input[1]), scalar(node.input[2])
        else:
            low = attributes["min"].f if "min" in attributes else None
            high = attributes["max"].f if "max" in attributes else None
        if (low, high) == (0.0, 6.0):
            return True
    return False


FUSE_HARD_SWISH = Rule(
    name="FuseHardSwish",
    patterns=[
        _ClipForm("FuseHardSwish_div", "Div"),
        _ClipForm("FuseHardSwish_mul", "Mul"),
        _ClipForm("FuseHardSwish_mul_swapped", "Mul", swap_root=True),
        _HardSigmoidForm("FuseHardSwish_sigmoid", swap_root=False),
        _HardSigmoidForm("FuseHardSwish_sigmoid_swapped", swap_root=True),
    ],
    matches=(
        "x * Clip(x + 3, 0, 6) / 6, the same times 1/6, and x * HardSigmoid(x) with "
        "alpha 1/6 and beta 1/2, in either operand order"
    ),
    produces="HardSwish (opset 14)",
    contract=Contract.exact(),
    option="FuseHardSwish",
    min_opset=HARD_SWISH_OPSET,
)
