"""DPU simulation: replace ops by the fixed-point approximations that AMD's DPU computes.

Calibration and the output model then see the device's arithmetic instead of the exact
float op. Each rule is exact with respect to the DPU formula below (up to float
rounding), and its contract bounds how far that formula is from the original op.

- ConvertLeakyReluToDPUVersion: the DPU multiplies negative inputs by k/256, so
  `LeakyRelu(alpha)` becomes `LeakyRelu(round(256 * alpha) / 256)`. The slope moves by at
  most 1/512, a relative change of at most 1 / (512 * |alpha|) (1.6% for alpha = 0.1, which
  becomes 26/256). The contract states the bound over every alpha, which is 1.
- ConvertSigmoidToHardSigmoid: `Sigmoid(x)` becomes `HardSigmoid(x, alpha=1/6, beta=0.5)`,
  which is `relu6(x + 3) / 6`. The two differ by at most 0.069182 (at x = +-1.31696, where
  the slope of Sigmoid is 1/6), computed in float64 by a bounded scalar maximization.
- ConvertHardSigmoidToDPUVersion: the DPU computes `relu6(x + 3) * 2731/16384`, a
  multiplication in place of the division by 6. With h = HardSigmoid(x, 1/6, 0.5) =
  relu6(x + 3) / 6, that is `h * (6 * 2731/16384) = h * 16386/16384`. So the rule keeps
  the HardSigmoid node with alpha=1/6, beta=0.5 and adds `Mul(h, 16386/16384)` after it.
  A single HardSigmoid with alpha=2731/16384 cannot express it: HardSigmoid clips at 1,
  while the DPU's output reaches 6 * 2731/16384 = 1.000122. The change from the
  original is `h * 2/16384`, at most 1.2207e-4.
- ConvertAvgPoolToDPUVersion: the DPU averages N elements as `sum * m / 2^s`, with
  m / 2^s close to 1/N. For square 2-D kernels the hardware uses fixed constants
  (3x3: 7/64, 5x5: 10/256, 6x6: 7/256, 7x7: 21/1024, 14x14: 21/4096). For every other
  kernel it uses `dpu_reciprocal(N)`. The pool (which computes sum / N) is followed by
  `Mul(N * m / 2^s)`. The largest change is 6/256 = 2.34% (5x5). The general formula
  stays within 1/128, because its search includes an s with 2^s >= 64 N.
- ConvertReduceMeanToDPUVersion: the same `sum * m / 2^s` on the reduced element count,
  always with `dpu_reciprocal` (Quark uses the square-kernel constants only for pooling).
- ConvertClipToDPUVersion: the DPU's Clip takes its bounds as integers in the int8
  range. Each bound becomes `clamp(round(bound), -128, 127)` (round half to even), and a
  missing bound becomes -128 or 127.
  NOTE: this reproduces Quark's rewrite. Rounding real-valued bounds to integers models
  the device only if the Clip's quantization scale is 1, which Quark does not check.
- ConvertSoftmaxToDPUVersion (in dpu_softmax.py): the DPU's bfloat16 softmax without max
  subtraction. Its error against exact softmax grows with the size of the logits.

The constants, the 255 kernel limit and the search range of `dpu_reciprocal` follow the
DPU simulation in AMD Quark's ONNX quantizer (simulate_dpu.py and quant_utils.py). The
replacements of the Mul-adding rules still match their own patterns, so each check
rejects a node whose only consumer is already the DPU Mul.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import onnx_ir as ir
from qrewrite.rules._patterns import is_float
from qrewrite.rules.activations import _clip_bounds
from qrewrite.rules.dpu_softmax import CONVERT_SOFTMAX_TO_DPU_VERSION

from qrewrite.rewrite import Contract, MatchResult, RewritePattern, Rule
from qrewrite.rewrite.helpers import (
    CONSTANT_RTOL,
    float_attribute,
    int_attribute,
    ints_attribute,
    normalize_axes,
    opset_version,
    reduce_axes,
    scalar_value,
    static_dim,
    static_rank,
    unique_name,
)

LEAKY_RELU_STEPS = 256
HARD_SIGMOID_ALPHA = 1.0 / 6.0
HARD_SIGMOID_BETA = 0.5
# The DPU computes relu6(x + 3) * 2731/16384. HardSigmoid(1/6, 0.5) gives relu6(x + 3) / 6,
# so the Mul after it scales by 6 * 2731/16384.
HARD_SIGMOID_DPU_SLOPE = Fraction(2731, 16384)
HARD_SIGMOID_DPU_SCALE = HARD_SIGMOID_DPU_SLOPE * 6

# Multipliers m / 2^s of the DPU's pooling for square kernels, by kernel size.
SQUARE_POOL_MULTIPLIERS = {
    3: Fraction(7, 64),
    5: Fraction(10, 256),
    6: Fraction(7, 256),
    7: Fraction(21, 1024),
    14: Fraction(21, 4096),
}
# Quark leaves pools with a kernel above 255 along an axis unchanged.
MAX_DPU_POOL_KERNEL = 255
CLIP_LOWEST, CLIP_HIGHEST = -128, 127

# max |Sigmoid(x) - HardSigmoid(x, 1/6, 0.5)| = 0.0691822, rounded up.
SIGMOID_MAX_ERROR = 0.0692
# h * (16386/16384 - 1) <= 2/16384 = 1.2207e-4 for h in [0, 1], rounded up.
HARD_SIGMOID_DPU_MAX_ERROR = 1.23e-4
AVG_POOL_MAX_RELATIVE_ERROR = 6 / 256
REDUCE_MEAN_MAX_RELATIVE_ERROR = 1 / 128

_REDUCE_MEAN_AXES_INPUT_OPSET = 18
_CLIP_BOUNDS_INPUT_OPSET = 11


def dpu_reciprocal(count: int) -> Fraction:
    """Return the DPU's approximation m / 2^s of 1 / `count`.

    s ranges over 0 <= s < ceil(log2(128 * count)), m = round(2^s / count) (half to even),
    and the pair with the smallest |m / 2^s - 1 / count| wins, the smallest s on a tie.
    """
    if count < 1:
        raise ValueError(f"the element count must be at least 1, got {count}")
    shift_limit = (count * 128 - 1).bit_length()
    best = Fraction(0)
    best_error: Fraction | None = None
    for shift in range(shift_limit):
        multiplier = Fraction(round(Fraction(2**shift, count)), 2**shift)
        error = abs(multiplier - Fraction(1, count))
        if best_error is None or error < best_error:
            best, best_error = multiplier, error
    return best


def avg_pool_multiplier(kernel: list[int]) -> Fraction:
    """Return the multiplier m / 2^s that the DPU's average pooling uses for `kernel`.

    NOTE: Quark rescales only square 2-D kernels. Other kernels get `dpu_reciprocal` of
    their element count here, which assumes the device uses that search for them too.
    """
    if len(kernel) == 2 and kernel[0] == kernel[1] and kernel[0] in SQUARE_POOL_MULTIPLIERS:
        return SQUARE_POOL_MULTIPLIERS[kernel[0]]
    return dpu_reciprocal(math.prod(kernel))


def dpu_leaky_relu_alpha(alpha: float) -> float:
    """Return the DPU's LeakyRelu slope: `alpha` rounded to a multiple of 1/256."""
    return round(alpha * LEAKY_RELU_STEPS) / LEAKY_RELU_STEPS


def _scalar_of(value: float | Fraction, dtype: ir.DataType | None) -> np.ndarray:
    # Every check calls is_float on the input before, which rules out None.
    assert dtype is not None
    return np.array(float(value), dtype=dtype.numpy())


def _only_consumer_scales(value: ir.Value, scale: Fraction, dtype: ir.DataType) -> bool:
    """Return whether `value`'s only consumer is a Mul by the constant `scale` in `dtype`.

    The Mul-adding rules produce that form, so their checks use this to stop matching.
    `dtype` is the type of the op's input, because a value that a rule created in the
    current sweep has no type information yet.
    """
    if value.is_graph_output():
        return False
    consumers = list(value.consumers())
    if len(consumers) != 1 or consumers[0].op_type != "Mul" or consumers[0].domain != "":
        return False
    operands = list(consumers[0].inputs)
    if len(operands) != 2:
        return False
    other = operands[1] if operands[0] is value else operands[0]
    expected = float(_scalar_of(scale, dtype))
    return scalar_value(other) == expected


class _LeakyReluToDPU(RewritePattern):
    def __init__(self) -> None:
        super().__init__(name="ConvertLeakyReluToDPUVersion")

    def pattern(self, op, x):
        return op.LeakyRelu(x, _outputs=["leaky_out"])

    def check(self, context, x, leaky_out, **_):  # type: ignore[override]
        if not is_float(x):
            return MatchResult().fail("the input is not a float tensor of known type", x)
        alpha = float_attribute(leaky_out.producer(), "alpha", 0.01)
        self._alpha = dpu_leaky_relu_alpha(alpha)
        if self._alpha == alpha:
            return MatchResult().fail(f"alpha {alpha} is already a multiple of 1/256")
        return MatchResult()

    def rewrite(self, op, x, **_):
        return op.LeakyRelu(x, alpha=self._alpha)


class _SigmoidToHardSigmoid(RewritePattern):
    def __init__(self) -> None:
        super().__init__(name="ConvertSigmoidToHardSigmoid")

    def pattern(self, op, x):
        return op.Sigmoid(x)

    def check(self, context, x, **_):  # type: ignore[override]
        if not is_float(x):
            return MatchResult().fail("the input is not a float tensor of known type", x)
        return MatchResult()

    def rewrite(self, op, x, **_):
        return op.HardSigmoid(x, alpha=HARD_SIGMOID_ALPHA, beta=HARD_SIGMOID_BETA)


class _HardSigmoidToDPU(RewritePattern):
    def __init__(self) -> None:
        super().__init__(name="ConvertHardSigmoidToDPUVersion")

    def pattern(self, op, x):
        return op.HardSigmoid(x, _outputs=["hard_out"])

    def check(self, context, x, hard_out, **_):  # type: ignore[override]
        if not is_float(x):
            return MatchResult().fail("the input is not a float tensor of known type", x)
        node = hard_out.producer()
        alpha = float_attribute(node, "alpha", 0.2)
        beta = float_attribute(node, "beta", 0.5)
        if not np.isclose(alpha, HARD_SIGMOID_ALPHA, rtol=CONSTANT_RTOL, atol=0.0):
            return MatchResult().fail(f"alpha is {alpha}, not 1/6", node)
        if not np.isclose(beta, HARD_SIGMOID_BETA, rtol=CONSTANT_RTOL, atol=0.0):
            return MatchResult().fail(f"beta is {beta}, not 0.5", node)
        if _only_consumer_scales(hard_out, HARD_SIGMOID_DPU_SCALE, x.dtype):
            return MatchResult().fail("the HardSigmoid is already followed by the DPU Mul")
        self._model = context.model
        return MatchResult()

    def rewrite(self, op, x, **_):
        hard = op.HardSigmoid(x, alpha=HARD_SIGMOID_ALPHA, beta=HARD_SIGMOID_BETA)
        return _scaled(op, self._model, hard, x.dtype, HARD_SIGMOID_DPU_SCALE, "hsigmoid_dpu")


def _scaled(op, model: ir.Model, value, dtype: ir.DataType, scale: Fraction, base: str):
    """Return `Mul(value, scale)` with the scale as a new scalar initializer of `dtype`."""
    tensor = ir.tensor(_scalar_of(scale, dtype))
    return op.Mul(value, op.initializer(tensor, name=unique_name(model, f"{base}_scale")))


def _pool_kernel(x: ir.Value, node: ir.Node) -> list[int] | MatchResult:
    """Return the kernel of a pool that computes sum / N in every window, or why not."""
    rank = static_rank(x)
    if rank is None or rank < 3:
        return MatchResult().fail("the input rank is unknown or below 3", x)
    if node.op_type == "GlobalAveragePool":
        dims = [static_dim(x, axis) for axis in range(2, rank)]
        static = [dim for dim in dims if dim is not None]
        if len(static) != len(dims):
            return MatchResult().fail(
                "the spatial dimensions are not static, so the element count N of the "
                "DPU multiplier is unknown: fix the input sizes with FixShapes",
                x,
            )
        return static

    kernel = ints_attribute(node, "kernel_shape") or []
    pads = ints_attribute(node, "pads") or [0] * (2 * len(kernel))
    auto_pad_attribute = node.attributes.get("auto_pad")
    auto_pad = "NOTSET" if auto_pad_attribute is None else auto_pad_attribute.as_string()
    padded = any(pads) or auto_pad in ("SAME_UPPER", "SAME_LOWER")
    if padded and int_attribute(node, "count_include_pad", 0) != 1:
        return MatchResult().fail(
            "the pool is padded with count_include_pad=0, so border windows divide by "
            "fewer than N elements",
            node,
        )

    if int_attribute(node, "ceil_mode", 0) and not _windows_fit(x, node, kernel, pads):
        return MatchResult().fail(
            "ceil_mode=1 gives partial windows at the end, which divide by fewer than N",
            node,
        )
    return kernel


def _windows_fit(x: ir.Value, node: ir.Node, kernel: list[int], pads: list[int]) -> bool:
    """Return whether the windows end exactly at the padded input's end on every axis."""
    strides = ints_attribute(node, "strides") or [1] * len(kernel)
    dilations = ints_attribute(node, "dilations") or [1] * len(kernel)
    for axis, size in enumerate(kernel):
        dim = static_dim(x, axis + 2)
        if dim is None:
            return False
        span = dim + pads[axis] + pads[axis + len(kernel)] - dilations[axis] * (size - 1) - 1
        if span % strides[axis]:
            return False
    return True


class _AvgPoolToDPU(RewritePattern):
    def __init__(self, op_type: str) -> None:
        super().__init__(name=f"ConvertAvgPoolToDPUVersion_{op_type}")
        self._op_type = op_type

    def pattern(self, op, x):
        return getattr(op, self._op_type)(x, _outputs=["pooled"])

    def check(self, context, x, pooled, **_):  # type: ignore[override]
        if not is_float(x):
            return MatchResult().fail("the input is not a float tensor of known type", x)
        kernel = _pool_kernel(x, pooled.producer())
        if isinstance(kernel, MatchResult):
            return kernel
        if not kernel or max(kernel) > MAX_DPU_POOL_KERNEL:
            return MatchResult().fail(
                f"kernel {kernel} is empty or above {MAX_DPU_POOL_KERNEL} along an axis, "
                f"for which the DPU multiplier is not known"
            )
        self._scale = math.prod(kernel) * avg_pool_multiplier(kernel)
        if float(_scalar_of(self._scale, x.dtype)) == 1.0:
            return MatchResult().fail(f"the DPU computes the exact mean for kernel {kernel}")
        if _only_consumer_scales(pooled, self._scale, x.dtype):
            return MatchResult().fail("the pool is already followed by the DPU Mul")
        self._model = context.model
        return MatchResult()

    def rewrite(self, op, x, pooled, **_):
        node = pooled.producer()
        pool = getattr(op, self._op_type)(x, **node.attributes)
        return _scaled(op, self._model, pool, x.dtype, self._scale, "avgpool_dpu")


class _ReduceMeanToDPU(RewritePattern):
    def __init__(self) -> None:
        super().__init__(name="ConvertReduceMeanToDPUVersion")

    def pattern(self, op, x):
        return op.ReduceMean(x, _allow_other_inputs=True, _outputs=["mean"])

    def _count(self, context, x: ir.Value, node: ir.Node) -> int | MatchResult:
        """Return the number of elements that each output element averages, or why not."""
        rank = static_rank(x)
        if rank is None:
            return MatchResult().fail("the input rank is unknown", x)
        axes = reduce_axes(node, _REDUCE_MEAN_AXES_INPUT_OPSET, opset_version(context.model))
        if axes is None:
            return MatchResult().fail("the axes input is not a constant", node)
        if not axes:
            if int_attribute(node, "noop_with_empty_axes", 0):
                return MatchResult().fail("ReduceMean with empty axes and noop is an identity")
            axes = list(range(rank))
        normalized = normalize_axes(axes, rank)
        if normalized is None:
            return MatchResult().fail(f"axes {axes} are out of range for rank {rank}", node)
        dims = [static_dim(x, axis) for axis in normalized]
        if any(dim is None for dim in dims):
            return MatchResult().fail(
                f"the reduced dimensions on axes {normalized} are not static, so the element "
                f"count of the DPU multiplier is unknown",
                x,
            )
        return math.prod(dim for dim in dims if dim is not None)

    def check(self, context, x, mean, **_):  # type: ignore[override]
        if not is_float(x):
            return MatchResult().fail("the input is not a float tensor of known type", x)
        count = self._count(context, x, mean.producer())
        if isinstance(count, MatchResult):
            return count
        if count < 1:
            return MatchResult().fail("ReduceMean reduces an empty tensor")
        self._scale = count * dpu_reciprocal(count)
        if float(_scalar_of(self._scale, x.dtype)) == 1.0:
            return MatchResult().fail(f"the DPU computes the exact mean of {count} elements")
        if _only_consumer_scales(mean, self._scale, x.dtype):
            return MatchResult().fail("the ReduceMean is already followed by the DPU Mul")
        self._model = context.model
        return MatchResult()

    def rewrite(self, op, x, mean, **_):
        node = mean.producer()
        reduced = op.ReduceMean(*node.inputs, **node.attributes)
        return _scaled(op, self._model, reduced, x.dtype, self._scale, "reducemean_dpu")


def _dpu_clip_bound(bound: float | None, missing: int) -> int:
    if bound is None:
        return missing
    return min(max(round(bound), CLIP_LOWEST), CLIP_HIGHEST)


class _ClipToDPU(RewritePattern):
    def __init__(self) -> None:
        super().__init__(name="ConvertClipToDPUVersion")

    def pattern(self, op, x):
        return op.Clip(x, _allow_other_inputs=True, _outputs=["clip_out"])

    def check(self, context, x, clip_out, **_):  # type: ignore[override]
        if not is_float(x):
            return MatchResult().fail("the input is not a float tensor of known type", x)
        self._opset = opset_version(context.model)
        bounds = _clip_bounds(clip_out.producer(), self._opset)
        if bounds is None:
            return MatchResult().fail("a Clip bound is not a constant", clip_out.producer())
        lowest, highest = bounds
        self._bounds = (
            _dpu_clip_bound(lowest, CLIP_LOWEST),
            _dpu_clip_bound(highest, CLIP_HIGHEST),
        )
        if self._bounds == (lowest, highest):
            return MatchResult().fail(f"Clip bounds {bounds} are already DPU bounds")
        self._model = context.model
        return MatchResult()

    def rewrite(self, op, x, **_):
        lowest, highest = self._bounds
        if self._opset < _CLIP_BOUNDS_INPUT_OPSET:
            return op.Clip(x, min=float(lowest), max=float(highest))
        names = (unique_name(self._model, "clip_dpu_min"), unique_name(self._model, "clip_dpu_max"))
        low = op.initializer(ir.tensor(_scalar_of(lowest, x.dtype)), name=names[0])
        high = op.initializer(ir.tensor(_scalar_of(highest, x.dtype)), name=names[1])
        return op.Clip(x, low, high)


CONVERT_LEAKY_RELU_TO_DPU_VERSION = Rule(
    name="ConvertLeakyReluToDPUVersion",
    patterns=[_LeakyReluToDPU()],
    matches="LeakyRelu whose alpha is not a multiple of 1/256",
    produces="LeakyRelu with alpha = round(256 * alpha) / 256 (the DPU's slope)",
    contract=Contract.bounded(atol=0.0, rtol=1.0),
    option="ConvertLeakyReluToDPUVersion",
)

CONVERT_SIGMOID_TO_HARD_SIGMOID = Rule(
    name="ConvertSigmoidToHardSigmoid",
    patterns=[_SigmoidToHardSigmoid()],
    matches="Sigmoid on a float tensor",
    produces="HardSigmoid(alpha=1/6, beta=0.5), which is relu6(x + 3) / 6",
    contract=Contract.bounded(atol=SIGMOID_MAX_ERROR),
    option="ConvertSigmoidToHardSigmoid",
)

CONVERT_HARD_SIGMOID_TO_DPU_VERSION = Rule(
    name="ConvertHardSigmoidToDPUVersion",
    patterns=[_HardSigmoidToDPU()],
    matches="HardSigmoid with alpha 1/6 and beta 0.5 not yet followed by the DPU Mul",
    produces=(
        "HardSigmoid(alpha=1/6, beta=0.5) followed by Mul(16386/16384), which is "
        "relu6(x + 3) * 2731/16384 as the DPU computes it"
    ),
    contract=Contract.bounded(atol=HARD_SIGMOID_DPU_MAX_ERROR),
    option="ConvertHardSigmoidToDPUVersion",
)

CONVERT_AVG_POOL_TO_DPU_VERSION = Rule(
    name="ConvertAvgPoolToDPUVersion",
    patterns=[_AvgPoolToDPU("AveragePool"), _AvgPoolToDPU("GlobalAveragePool")],
    matches=(
        "AveragePool (unpadded or count_include_pad=1, no partial windows) and "
        "GlobalAveragePool over static spatial dims, with kernels up to 255 per axis "
        "whose DPU multiplier is not exactly 1/N"
    ),
    produces=(
        "the same pool followed by Mul(N * m / 2^s), so the result is sum * m / 2^s as on "
        "the DPU (3x3: 7/64, 5x5: 10/256, 6x6: 7/256, 7x7: 21/1024, 14x14: 21/4096, "
        "otherwise the closest m / 2^s with s < ceil(log2(128 N)))"
    ),
    contract=Contract.bounded(atol=0.0, rtol=AVG_POOL_MAX_RELATIVE_ERROR),
    option="ConvertAvgPoolToDPUVersion",
)

CONVERT_REDUCE_MEAN_TO_DPU_VERSION = Rule(
    name="ConvertReduceMeanToDPUVersion",
    patterns=[_ReduceMeanToDPU()],
    matches=(
        "ReduceMean over constant axes (attribute or input form) whose reduced dims are "
        "static, when the DPU multiplier is not exactly 1/N"
    ),
    produces=(
        "the same ReduceMean followed by Mul(N * m / 2^s), with m / 2^s the closest to 1/N "
        "for s < ceil(log2(128 N))"
    ),
    contract=Contract.bounded(atol=0.0, rtol=REDUCE_MEAN_MAX_RELATIVE_ERROR),
    option="ConvertReduceMeanToDPUVersion",
)

CONVERT_CLIP_TO_DPU_VERSION = Rule(
    name="ConvertClipToDPUVersion",
    patterns=[_ClipToDPU()],
    matches=(
        "Clip with constant bounds (attribute or input form) that are not already "
        "integers in [-128, 127]"
    ),
    produces=(
        "Clip with each bound rounded to an integer and clamped to [-128, 127]. A missing "
        "bound becomes -128 or 127"
    ),
    contract=Contract.conditional(
        "every input of the Clip lies within both the original and the rounded bounds"
    ),
    option="ConvertClipToDPUVersion",
)

DPU_RULES = (
    CONVERT_SIGMOID_TO_HARD_SIGMOID,
    CONVERT_HARD_SIGMOID_TO_DPU_VERSION,
    CONVERT_LEAKY_RELU_TO_DPU_VERSION,
    CONVERT_AVG_POOL_TO_DPU_VERSION,
    CONVERT_REDUCE_MEAN_TO_DPU_VERSION,
    CONVERT_CLIP_TO_DPU_VERSION,
    CONVERT_SOFTMAX_TO_DPU_VERSION,
)
