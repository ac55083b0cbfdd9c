"""Fusions of decomposed normalizations: layer, instance and L2.

Layer and instance normalization share one decomposition over a set of axes:

    mean = ReduceMean(x, axes)                 keepdims=1
    d    = x - mean
    var  = ReduceMean(d^2, axes)               d^2 as Pow(d, 2) or d * d
    y    = d / Sqrt(var + epsilon)             or d * Reciprocal(Sqrt(var + epsilon))
    y    = y * scale + bias                    both optional (scale alone is allowed)

With the trailing axes `[a, ..., rank-1]` it becomes `LayerNormalization(axis=a)` (opset
17). With the spatial axes `[2, ..., rank-1]` and a per-channel scale and bias it
becomes `InstanceNormalization`. ReduceMean takes its axes as an attribute before opset
18 and as an input from opset 18 on; both forms match.

L2 normalization `x / sqrt(max(sum(x^2), eps))` over one axis becomes
`LpNormalization(p=2)`, which has no epsilon. So the result is exact only while the
sum of squares of every slice is at least eps.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern as orp
from qrewrite.rules._patterns import either, is_float

from qrewrite.rewrite import Contract, MatchResult, RewritePattern, Rule
from qrewrite.rewrite.helpers import (
    constant_value,
    int_attribute,
    is_scalar,
    normalize_axes,
    opset_version,
    reduce_axes,
    scalar_value,
    static_dim,
    static_rank,
    unique_name,
)

_LAYER_NORM_OPSET = 17
_REDUCE_MEAN_AXES_INPUT_OPSET = 18
_REDUCE_SUM_AXES_INPUT_OPSET = 13
_REDUCE_L2_AXES_INPUT_OPSET = 18

# An epsilon above this is part of the model's math rather than a numerical guard.
# The L2 fusion would then change results for ordinary inputs, so it does not fire.
_MAX_L2_EPSILON = 1e-3


def _binary(op, op_type: str, a, b, swap: bool, **kwargs):
    builder = getattr(op, op_type)
    return builder(b, a, **kwargs) if swap else builder(a, b, **kwargs)


class _DecomposedNormalization(RewritePattern):
    """The shared decomposition, with a given affine tail and root operand order.

    `tail` is "none" (root: the division), "scale" (root: Mul by scale) or "scale_bias"
    (root: Add of bias). `swap_root` swaps the root's two operands.
    """

    def __init__(self, kind: str, tail: str, swap_root: bool, reciprocal: bool) -> None:
        suffix = f"{tail}_{'reciprocal' if reciprocal else 'div'}_{int(swap_root)}"
        super().__init__(name=f"Fuse{kind}Norm_{suffix}")
        self._kind, self._tail, self._swap_root = kind, tail, swap_root
        self._reciprocal = reciprocal

    def pattern(self, op, x, epsilon):
        mean = op.ReduceMean(x, _allow_other_inputs=True, _outputs=["mean"])
        deviation = op.Sub(x, mean)
        square = orp.OrValue(
            [op.Pow(deviation, orp.Var("two")), op.Mul(deviation, deviation)], tag_var="square"
        )
        variance = op.ReduceMean(square, _allow_other_inputs=True, _outputs=["variance"])
        std = op.Sqrt(either(op, "Add", variance, epsilon))
        if self._reciprocal and self._tail == "none":
            normalized = _binary(op, "Mul", deviation, op.Reciprocal(std), self._swap_root)
        elif self._reciprocal:
            normalized = either(op, "Mul", deviation, op.Reciprocal(std))
        else:
            normalized = op.Div(deviation, std)
        if self._tail == "none":
            return normalized
        if self._tail == "scale":
            return _binary(op, "Mul", normalized, orp.Var("scale"), self._swap_root)
        scaled = either(op, "Mul", normalized, orp.Var("scale"))
        return _binary(op, "Add", scaled, orp.Var("bias"), self._swap_root)

    def check(self, context, x, epsilon, mean, variance, square, two=None, **bindings):  # type: ignore[override]
        absorbed = self._next_affine_step(context.output_values[0])
        if absorbed is not None:
            return MatchResult().fail(f"the following {absorbed} is fused with this match")
        opset = opset_version(context.model)
        if not is_float(x):
            return MatchResult().fail("the input is not a float tensor of known type", x)
        if square == 0 and not is_scalar(two, 2.0):
            return MatchResult().fail("the exponent of Pow is not 2")
        eps = scalar_value(epsilon)
        if eps is None or eps < 0:
            return MatchResult().fail("epsilon is not a non-negative constant", epsilon)
        axes_list = []
        for value in (mean, variance):
            node = value.producer()
            if int_attribute(node, "keepdims", 1) != 1:
                return MatchResult().fail("ReduceMean does not keep dims", node)
            axes = reduce_axes(node, _REDUCE_MEAN_AXES_INPUT_OPSET, opset)
            if not axes:
                return MatchResult().fail("ReduceMean axes are not constant or not given", node)
            axes_list.append(axes)
        rank = static_rank(x)
        if rank is None:
            return MatchResult().fail("the input rank is unknown", x)
        axes = normalize_axes(axes_list[0], rank)
        if axes is None or axes != normalize_axes(axes_list[1], rank):
            return MatchResult().fail("the two ReduceMean nodes differ in axes")
        found = self._check_axes_and_params(x, rank, axes, bindings)
        if isinstance(found, MatchResult):
            return found
        self._model, self._x, self._epsilon, self._rank = context.model, x, eps, rank
        return MatchResult()

    def _next_affine_step(self, output: ir.Value) -> str | None:
        """Return the op type of a constant Mul or Add that a longer tail would include.

        The sweep visits the division before the scale Mul and the bias Add, so without
        this check the shortest tail would always win and leave the Mul and Add behind.
        """
        following = {"none": "Mul", "scale": "Add"}.get(self._tail)
        uses = list(output.uses())
        if following is None or len(uses) != 1 or output.is_graph_output():
            return None
        consumer, index = uses[0]
        if consumer.op_type != following or len(consumer.inputs) != 2:
            return None
        other = consumer.inputs[1 - index]
        return following if constant_value(other) is not None else None

    def _check_axes_and_params(self, x, rank, axes, bindings) -> MatchResult | None:
        scale = bindings.get("scale")
        bias = bindings.get("bias")
        if self._kind == "Layer":
            if axes != list(range(axes[0], rank)):
                return MatchResult().fail(f"axes {axes} are not the trailing axes")
            shape = [static_dim(x, axis) for axis in axes]
            self._axis = axes[0]
        else:
            if rank < 3 or axes != list(range(2, rank)):
                return MatchResult().fail(f"axes {axes} are not the spatial axes")
            shape = [static_dim(x, 1)]
        if any(dim is None for dim in shape):
            return MatchResult().fail("the normalized dimensions are not static", x)
        self._scale = self._affine_parameter(scale, shape, rank, 1.0)
        self._bias = self._affine_parameter(bias, shape, rank, 0.0)
        if self._scale is None or self._bias is None:
            return MatchResult().fail("scale or bias is not a constant of a fitting shape")
        return None

    def _affine_parameter(self, value, shape, rank, default) -> np.ndarray | None:
        """Return a scale or bias as an array of the fused op's parameter shape, or None."""
        if value is None:
            return np.full(shape, default)
        array = constant_value(value)
        if array is None or array.ndim > rank:
            return None
        full = array.reshape((1,) * (rank - array.ndim) + array.shape)
        if self._kind == "Layer":
            leading, trailing = full.shape[: rank - len(shape)], full.shape[rank - len(shape) :]
            if any(dim != 1 for dim in leading):
                return None
            try:
                return np.broadcast_to(full.reshape(trailing), shape)
            except ValueError:
                return None
        # Instance normalization: the parameter must vary along the channel axis only.
        if any(dim != 1 for index, dim in enumerate(full.shape) if index != 1):
            return None
        try:
            return np.broadcast_to(full.reshape(-1), shape)
        except ValueError:
            return None

    def rewrite(self, op, **_):
        dtype = self._x.dtype.numpy()
        names = ("scale", "bias")
        params = []
        for name, array in zip(names, (self._scale, self._bias), strict=True):
            assert array is not None  # The check rejects a match without both.
            tensor = ir.tensor(array.astype(dtype))
            params.append(op.initializer(tensor, name=unique_name(self._model, f"{name}_fused")))
        if self._kind == "Layer":
            return op.LayerNormalization(
                self._x, *params, axis=self._axis, epsilon=self._epsilon
            )
        return op.InstanceNormalization(self._x, *params, epsilon=self._epsilon)


def _normalization_patterns(kind: str) -> list[_DecomposedNormalization]:
    patterns = []
    for tail in ("scale_bias", "scale", "none"):
        for reciprocal in (False, True):
            for swap_root in (False, True):
                if tail == "none" and swap_root and not reciprocal:
                    continue
                patterns.append(_DecomposedNormalization(kind, tail, swap_root, reciprocal))
    return patterns


class _L2Normalization(RewritePattern):
    """x / norm(x) over one axis, with the usual epsilon guards, in one root form."""

    def __init__(self, reciprocal: bool, swap_root: bool) -> None:
        form = "reciprocal" if reciprocal else "div"
        super().__init__(name=f"FuseL2Norm_{form}_{int(swap_root)}")
        self._reciprocal, self._swap_root = reciprocal, swap_root

    def pattern(self, op, x):
        square = orp.OrValue([op.Mul(x, x), op.Pow(x, orp.Var("two"))], tag_var="square")
        sum_squares = op.ReduceSum(square, _allow_other_inputs=True, _outputs=["reduce"])
        l2 = op.ReduceL2(x, _allow_other_inputs=True, _outputs=["reduce_l2"])
        norm = orp.OrValue([op.Sqrt(sum_squares), l2])
        eps = orp.Var("epsilon")
        denominator = orp.OrValue(
            [
                op.Sqrt(either(op, "Max", sum_squares, eps)),
                either(op, "Max", norm, eps),
                op.Clip(norm, eps),
                norm,
            ],
            tag_var="guard",
        )
        if self._reciprocal:
            return _binary(op, "Mul", x, op.Reciprocal(denominator), self._swap_root)
        return op.Div(x, denominator)

    def check(self, context, x, guard, square=None, two=None, epsilon=None, **bindings):  # type: ignore[override]
        if not is_float(x):
            return MatchResult().fail("the input is not a float tensor of known type", x)
        if square == 1 and not is_scalar(two, 2.0):
            return MatchResult().fail("the exponent of Pow is not 2")
        if guard != 3:
            eps = scalar_value(epsilon)
            if eps is None or not 0 <= eps <= _MAX_L2_EPSILON:
                return MatchResult().fail(f"epsilon is not a constant in [0, {_MAX_L2_EPSILON}]")
        opset = opset_version(context.model)
        reduce = bindings.get("reduce") or bindings.get("reduce_l2")
        node = reduce.producer() if reduce is not None else None
        if node is None:
            return MatchResult().fail("no reduction was bound")
        if node.op_type == "ReduceSum":
            axes = reduce_axes(node, _REDUCE_SUM_AXES_INPUT_OPSET, opset)
        else:
            axes = reduce_axes(node, _REDUCE_L2_AXES_INPUT_OPSET, opset)
        if int_attribute(node, "keepdims", 1) != 1:
            return MatchResult().fail("the reduction does not keep dims", node)
        if axes is None or len(axes) != 1:
            return MatchResult().fail("the reduction is not over exactly one constant axis", node)
        self._x, self._axis = x, axes[0]
        return MatchResult()

    def rewrite(self, op, **_):
        return op.LpNormalization(self._x, axis=self._axis, p=2)


FUSE_LAYER_NORM = Rule(
    name="FuseLayerNorm",
    patterns=_normalization_patterns("Layer"),
    matches=(
        "(x - mean) / sqrt(var + eps) over trailing axes, with ReduceMean axes as attribute "
        "or input, Pow or Mul for the square, Div or Reciprocal-Mul, optional scale and bias"
    ),
    produces="LayerNormalization (opset 17) with axis = the first normalized axis",
    contract=Contract.exact(),
    option="FuseLayerNorm",
    min_opset=_LAYER_NORM_OPSET,
)

FUSE_INSTANCE_NORM = Rule(
    name="FuseInstanceNorm",
    patterns=_normalization_patterns("Instance"),
    matches=(
        "the same decomposition as FuseLayerNorm over all spatial axes (2 to rank-1), "
        "with an optional per-channel scale and bias"
    ),
    produces="InstanceNormalization",
    contract=Contract.exact(),
    option="FuseInstanceNorm",
)

FUSE_L2_NORM = Rule(
    name="FuseL2Norm",
    patterns=[
        _L2Normalization(reciprocal=False, swap_root=False),
        _L2Normalization(reciprocal=True, swap_root=False),
        _L2Normalization(reciprocal=True, swap_root=True),
    ],
    matches=(
        "x / sqrt(max(sum(x^2), eps)), x / max(norm(x), eps), x / clip(norm(x), eps) and "
        "x / norm(x) over one axis, where norm is Sqrt(ReduceSum(x^2)) or ReduceL2, with "
        "Div or Reciprocal-Mul"
    ),
    produces="LpNormalization (p=2) over that axis",
    contract=Contract.conditional(
        "the epsilon guard never applies, because the L2 norm of every normalized slice "
        "exceeds it"
    ),
    option="FuseL2Norm",
)
