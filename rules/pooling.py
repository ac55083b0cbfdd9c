"""Average-pooling conversions.

- ConvertReduceMeanToGlobalAvgPool: `ReduceMean(x)` over exactly the spatial axes
  `[2, ..., rank-1]` with keepdims=1 computes what `GlobalAveragePool(x)` computes.
- SplitLargeKernelPool: a mean over a window of `k1 * k2` elements equals the mean of
  `k2` means over `k1` elements each, when the windows tile the input without overlap.
  So `GlobalAveragePool` over static spatial dims, or an `AveragePool` whose strides equal
  its kernel (no padding, no ceil mode), becomes a chain of `AveragePool` nodes whose
  kernels are at most `MAX_POOL_KERNEL` along every axis. A dimension with no such
  factorization (a prime above the limit) does not match.
"""

from __future__ import annotations

import onnx_ir as ir
from qrewrite.rules._patterns import is_float

from qrewrite.rewrite import Contract, MatchResult, RewritePattern, Rule
from qrewrite.rewrite.helpers import (
    int_attribute,
    ints_attribute,
    normalize_axes,
    opset_version,
    reduce_axes,
    static_dim,
    static_rank,
)

_REDUCE_MEAN_AXES_INPUT_OPSET = 18

# Largest kernel size per axis that SplitLargeKernelPool leaves in place.
# NOTE: 8 is an assumption about typical NPU pooling limits, not a documented value of
# any particular device; pass another limit to `split_large_kernel_pool_rule` if needed.
MAX_POOL_KERNEL = 8


class _ReduceMeanToGlobalAveragePool(RewritePattern):
    def __init__(self) -> None:
        super().__init__(name="ConvertReduceMeanToGlobalAvgPool")

    def pattern(self, op, x):
        return op.ReduceMean(x, _allow_other_inputs=True, _outputs=["mean"])

    def check(self, context, x, mean, **_):  # type: ignore[override]
        node = mean.producer()
        rank = static_rank(x)
        if rank is None or rank < 3:
            return MatchResult().fail("the input rank is unknown or below 3", x)
        if not is_float(x):
            return MatchResult().fail("the input is not a float tensor of known type", x)
        if int_attribute(node, "keepdims", 1) != 1:
            return MatchResult().fail("ReduceMean does not keep dims", node)
        axes = reduce_axes(node, _REDUCE_MEAN_AXES_INPUT_OPSET, opset_version(context.model))
        if not axes or normalize_axes(axes, rank) != list(range(2, rank)):
            return MatchResult().fail(f"axes {axes} are not exactly the spatial axes", node)
        return MatchResult()

    def rewrite(self, op, x, **_):
        return op.GlobalAveragePool(x)


def _factor_kernel(size: int, limit: int) -> list[int] | None:
    """Split `size` into factors of at most `limit`, largest first, or return None."""
    factors = []
    while size > limit:
        factor = next((f for f in range(limit, 1, -1) if size % f == 0), None)
        if factor is None:
            return None
        factors.append(factor)
        size //= factor
    factors.append(size)
    return factors


class _SplitPool(RewritePattern):
    """GlobalAveragePool or tiled AveragePool with a large kernel → chain of AveragePools."""

    def __init__(self, op_type: str, limit: int) -> None:
        super().__init__(name=f"SplitLarge{op_type}")
        self._op_type, self._limit = op_type, limit

    def pattern(self, op, x):
        return getattr(op, self._op_type)(x, _outputs=["pooled"])

    def _kernel(self, x: ir.Value, node: ir.Node) -> list[int] | MatchResult:
        rank = static_rank(x)
        if rank is None or rank < 3:
            return MatchResult().fail("the input rank is unknown or below 3", x)
        if self._op_type == "GlobalAveragePool":
            dims = [static_dim(x, axis) for axis in range(2, rank)]
            static = [dim for dim in dims if dim is not None]
            if len(static) != len(dims):
                return MatchResult().fail("the spatial dimensions are not static", x)
            return static
        kernel = ints_attribute(node, "kernel_shape") or []
        strides = ints_attribute(node, "strides") or [1] * len(kernel)
        pads = ints_attribute(node, "pads") or [0] * (2 * len(kernel))
        auto_pad = node.attributes.get("auto_pad")
        if strides != kernel or any(pads) or int_attribute(node, "ceil_mode", 0):
            return MatchResult().fail("the pool windows overlap, are padded or use ceil mode")
        if auto_pad is not None and auto_pad.as_string() not in ("NOTSET", "VALID"):
            return MatchResult().fail("the pool uses automatic padding", node)
        if any(dilation != 1 for dilation in ints_attribute(node, "dilations") or []):
            return MatchResult().fail("the pool is dilated", node)
        return kernel

    def check(self, context, x, pooled, **_):  # type: ignore[override]
        if not is_float(x):
            return MatchResult().fail("the input is not a float tensor of known type", x)
        kernel = self._kernel(x, pooled.producer())
        if isinstance(kernel, MatchResult):
            return kernel
        if all(size <= self._limit for size in kernel):
            return MatchResult().fail(f"kernel {kernel} is within the limit {self._limit}")
        factors = []
        for size in kernel:
            axis_factors = _factor_kernel(size, self._limit)
            if axis_factors is None:
                reason = f"kernel size {size} has a prime factor above {self._limit}"
                return MatchResult().fail(reason)
            factors.append(axis_factors)
        depth = max(len(axis_factors) for axis_factors in factors)
        # Pad shorter factor lists with 1s, so every stage pools along every axis.
        self._stages = [
            [axis_factors[i] if i < len(axis_factors) else 1 for axis_factors in factors]
            for i in range(depth)
        ]
        return MatchResult()

    def rewrite(self, op, x, **_):
        value = x
        for stage in self._stages:
            value = op.AveragePool(value, kernel_shape=stage, strides=stage)
        return value


def split_large_kernel_pool_rule(limit: int = MAX_POOL_KERNEL) -> Rule:
    """Return the SplitLargeKernelPool rule for a maximum kernel size per axis."""
    if limit < 2:
        raise ValueError(f"the kernel limit must be at least 2, got {limit}")
    return Rule(
        name="SplitLargeKernelPool",
        patterns=[_SplitPool("GlobalAveragePool", limit), _SplitPool("AveragePool", limit)],
        matches=(
            f"GlobalAveragePool over static spatial dims, or AveragePool with strides equal "
            f"to its kernel and no padding, with a kernel above {limit} along some axis"
        ),
        produces=f"a chain of AveragePools with kernels of at most {limit} per axis",
        contract=Contract.exact(),
        option="SplitLargeKernelPool",
    )


CONVERT_REDUCE_MEAN_TO_GLOBAL_AVG_POOL = Rule(
    name="ConvertReduceMeanToGlobalAvgPool",
    patterns=[_ReduceMeanToGlobalAveragePool()],
    matches="ReduceMean with keepdims=1 over exactly the spatial axes (2 to rank-1)",
    produces="GlobalAveragePool",
    contract=Contract.exact(),
    option="ConvertReduceMeanToGlobalAvgPool",
)

SPLIT_LARGE_KERNEL_POOL = split_large_kernel_pool_rule()
