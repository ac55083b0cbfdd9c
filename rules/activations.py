"""Activation fusions and conversions: GELU, and Clip into Relu.

GELU has two usual decompositions, and exporters write each in several orders:

    erf form:   0.5 * x * (1 + erf(x / sqrt(2)))
    tanh form:  0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))

The three products covered are `(0.5 * x) * s`, `(x * s) * 0.5` and `x * (s * 0.5)`,
where `s` is the `1 + erf(...)` or `1 + tanh(...)` term, with every operand order of
Mul and Add. The division by sqrt(2) may also be a multiplication by 1/sqrt(2), and x^3
may be `Pow(x, 3)` or `x * x * x`. Both forms become the opset-20 `Gelu` op, the tanh
form with `approximate="tanh"`.

Clip(x, 0) with no upper bound is Relu exactly. Clip(x, 0, 6) equals Relu only for
inputs up to 6, which ReplaceClip6Relu states in its contract.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern as orp
from qrewrite.rules._patterns import either, is_float, split_constant

from qrewrite.rewrite import Contract, MatchResult, RewritePattern, Rule
from qrewrite.rewrite.helpers import float_attribute, is_scalar, opset_version, scalar_value

_GELU_OPSET = 20
_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_CUBIC = 0.044715

# Spellings of the outer products of x, 0.5 and the shifted term s = 1 + erf(...).
_SPELLINGS = ("half_x_times_s", "x_times_s_times_half", "x_times_s_half")


class _GeluPattern(RewritePattern):
    """One spelling of GELU's outer products, with the root Mul's operands in one order."""

    def __init__(self, form: str, spelling: str, swap_root: bool) -> None:
        super().__init__(name=f"FuseGelu_{form}_{spelling}_{int(swap_root)}")
        self._form, self._spelling, self._swap_root = form, spelling, swap_root

    def _shifted(self, op, x):
        """Build the term s: 1 + erf(x / sqrt(2)) or 1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))."""
        if self._form == "erf":
            argument = orp.OrValue(
                [op.Div(x, orp.Var("sqrt_two")), op.Mul(orp.Var("arg_a"), orp.Var("arg_b"))],
                tag_var="argument_form",
            )
            inner = op.Erf(argument)
        else:
            cube = orp.OrValue(
                [op.Pow(x, orp.Var("three")), either(op, "Mul", op.Mul(x, x), x)],
                tag_var="cube_form",
            )
            polynomial = either(op, "Add", x, either(op, "Mul", cube, orp.Var("cubic")))
            inner = op.Tanh(either(op, "Mul", polynomial, orp.Var("tanh_scale")))
        return either(op, "Add", inner, orp.Var("one"))

    def pattern(self, op, x):
        shifted = self._shifted(op, x)
        if self._spelling == "half_x_times_s":
            left, right = op.Mul(orp.Var("half_a"), orp.Var("half_b")), shifted
        elif self._spelling == "x_times_s_times_half":
            left, right = either(op, "Mul", x, shifted), orp.Var("half")
        else:
            left, right = x, either(op, "Mul", shifted, orp.Var("half"))
        if self._swap_root:
            left, right = right, left
        return op.Mul(left, right)

    def _resolve_input(self, bindings) -> ir.Value | MatchResult:
        """Return the GELU input x after checking every constant of the matched form."""
        x = bindings.get("x")
        if self._form == "erf":
            if bindings.get("argument_form") == 0:
                if not is_scalar(bindings.get("sqrt_two"), _SQRT_2):
                    return MatchResult().fail("the Erf argument is not x / sqrt(2)")
            else:
                from_argument = split_constant(
                    bindings.get("arg_a"), bindings.get("arg_b"), 1.0 / _SQRT_2
                )
                if from_argument is None or (x is not None and from_argument is not x):
                    return MatchResult().fail("the Erf argument is not x * (1 / sqrt(2))")
                x = from_argument
        else:
            if bindings.get("cube_form") == 0 and not is_scalar(bindings.get("three"), 3.0):
                return MatchResult().fail("the exponent of Pow is not 3")
            if not is_scalar(bindings.get("cubic"), _TANH_CUBIC):
                return MatchResult().fail("the cubic coefficient is not 0.044715")
            if not is_scalar(bindings.get("tanh_scale"), _SQRT_2_OVER_PI):
                return MatchResult().fail("the Tanh argument is not scaled by sqrt(2 / pi)")
        if self._spelling == "half_x_times_s":
            from_half = split_constant(bindings.get("half_a"), bindings.get("half_b"), 0.5)
            if from_half is None or from_half is not x:
                return MatchResult().fail("the outer product is not (0.5 * x) * s")
        elif not is_scalar(bindings.get("half"), 0.5):
            return MatchResult().fail("the outer factor is not 0.5")
        if x is None or scalar_value(x) is not None:
            return MatchResult().fail("the GELU input is a constant")
        return x

    def check(self, context, **bindings):  # type: ignore[override]
        if not is_scalar(bindings.get("one"), 1.0):
            return MatchResult().fail("the shifted term does not add 1")
        x = self._resolve_input(bindings)
        if isinstance(x, MatchResult):
            return x
        if not is_float(x):
            return MatchResult().fail("the input is not a float tensor of known type", x)
        self._x = x
        return MatchResult()

    def rewrite(self, op, **_):
        if self._form == "tanh":
            return op.Gelu(self._x, approximate="tanh")
        return op.Gelu(self._x)


def _gelu_patterns(form: str) -> list[_GeluPattern]:
    return [
        _GeluPattern(form, spelling, swap_root)
        for spelling in _SPELLINGS
        for swap_root in (False, True)
    ]


def _clip_bounds(node: ir.Node, opset: int) -> tuple[float | None, float | None] | None:
    """Return Clip's (min, max), None for an absent bound, or None when a bound is not constant.

    Before opset 11 the bounds are attributes, from opset 11 on they are optional inputs.
    """
    lowest: float | None
    highest: float | None
    if opset < 11:
        lowest = float_attribute(node, "min", -np.inf)
        highest = float_attribute(node, "max", np.inf)
    else:
        bounds: list[float | None] = []
        for index in (1, 2):
            value = node.inputs[index] if len(node.inputs) > index else None
            if value is None:
                bounds.append(None)
                continue
            bound = scalar_value(value)
            if bound is None:
                return None
            bounds.append(bound)
        lowest, highest = bounds
    lowest = None if lowest is None or lowest <= np.finfo(np.float32).min else lowest
    highest = None if highest is None or highest >= np.finfo(np.float32).max else highest
    return lowest, highest


class _ClipToRelu(RewritePattern):
    """Clip(x, 0, max) → Relu(x) for one given max (None: no upper bound)."""

    def __init__(self, name: str, upper: float | None) -> None:
        super().__init__(name=name)
        self._upper = upper

    def pattern(self, op, x):
        return op.Clip(x, _allow_other_inputs=True, _outputs=["clip_out"])

    def check(self, context, x, clip_out, **_):  # type: ignore[override]
        if not is_float(x):
            return MatchResult().fail("the input is not a float tensor of known type", x)
        bounds = _clip_bounds(clip_out.producer(), opset_version(context.model))
        if bounds is None:
            return MatchResult().fail("a Clip bound is not a constant", clip_out.producer())
        if bounds != (0.0, self._upper):
            return MatchResult().fail(f"Clip bounds are {bounds}, not (0, {self._upper})")
        return MatchResult()

    def rewrite(self, op, x, **_):
        return op.Relu(x)


FUSE_GELU = Rule(
    name="FuseGelu",
    patterns=[*_gelu_patterns("erf"), *_gelu_patterns("tanh")],
    matches=(
        "0.5 * x * (1 + erf(x / sqrt(2))) and 0.5 * x * (1 + tanh(sqrt(2/pi) * "
        "(x + 0.044715 * x^3))), in the usual product orders and operand orders"
    ),
    produces='Gelu (opset 20); approximate="tanh" for the tanh form',
    contract=Contract.exact(),
    option="FuseGelu",
    min_opset=_GELU_OPSET,
)

CONVERT_CLIP_TO_RELU = Rule(
    name="ConvertClipToRelu",
    patterns=[_ClipToRelu("ConvertClipToRelu", None)],
    matches="Clip with constant min 0 and no max (attribute or input form)",
    produces="Relu",
    contract=Contract.exact(),
    option="ConvertClipToRelu",
)

REPLACE_CLIP6_RELU = Rule(
    name="ReplaceClip6Relu",
    patterns=[_ClipToRelu("ReplaceClip6Relu", 6.0)],
    matches="Clip with constant min 0 and max 6 (attribute or input form)",
    produces="Relu",
    contract=Contract.conditional("every input of the Clip is at most 6"),
    option="ReplaceClip6Relu",
)
