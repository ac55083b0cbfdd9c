"""Split into Slices.

`Split(x)` along `axis` into n parts becomes n `Slice` nodes with constant starts, ends
and axes. The part sizes come from the `split` attribute (before opset 13), the `split`
input (opset 13 on), or from the static size of the axis when neither is given. That
gives equal parts before opset 18, and from opset 18 on `num_outputs` parts of
ceil(size / n) with a smaller last part. Slice takes starts and ends as inputs from
opset 10 on, so the rule needs opset 10. A pattern has a fixed number of outputs, so
there is one pattern per output count from 2 to `MAX_SPLIT_OUTPUTS`.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qrewrite.rewrite import Contract, MatchResult, RewritePattern, Rule
from qrewrite.rewrite.helpers import (
    int_attribute,
    int_list,
    ints_attribute,
    opset_version,
    static_dim,
    static_rank,
    unique_name,
)

_SPLIT_INPUT_OPSET = 13
_NUM_OUTPUTS_OPSET = 18
MAX_SPLIT_OUTPUTS = 32


class _SplitToSlices(RewritePattern):
    def __init__(self, outputs: int) -> None:
        super().__init__(name=f"ConvertSplitToSlice_{outputs}")
        self._outputs = outputs

    def pattern(self, op, x):
        names = ["split_out"] + [None] * (self._outputs - 1)
        return op.Split(x, _allow_other_inputs=True, _outputs=names)

    def _sizes(self, x: ir.Value, node: ir.Node, axis: int, opset: int) -> list[int] | None:
        if opset < _SPLIT_INPUT_OPSET:
            sizes = ints_attribute(node, "split")
        elif len(node.inputs) > 1 and node.inputs[1] is not None:
            sizes = int_list(node.inputs[1])
            if sizes is None:
                return None
        else:
            sizes = None
        if sizes is not None:
            return sizes
        total = static_dim(x, axis)
        if total is None:
            return None
        count = self._outputs
        if opset >= _NUM_OUTPUTS_OPSET:
            part = -(-total // count)
            sizes = [min(part, max(total - i * part, 0)) for i in range(count)]
            return sizes if all(sizes) else None
        return [total // count] * count if total % count == 0 else None

    def check(self, context, x, split_out, **_):  # type: ignore[override]
        node = split_out.producer()
        opset = opset_version(context.model)
        rank = static_rank(x)
        axis = int_attribute(node, "axis", 0)
        if axis < 0:
            if rank is None:
                return MatchResult().fail("a negative axis needs a known input rank", x)
            axis += rank
        sizes = self._sizes(x, node, axis, opset)
        if sizes is None or len(sizes) != self._outputs or any(size < 0 for size in sizes):
            return MatchResult().fail("the part sizes are not constant or not known", node)
        self._model, self._axis, self._sizes_found = context.model, axis, sizes
        return MatchResult()

    def _constant(self, op, base: str, values: list[int]) -> ir.Value:
        tensor = ir.tensor(np.array(values, dtype=np.int64))
        return op.initializer(tensor, name=unique_name(self._model, base))

    def rewrite(self, op, x, **_):
        axes = self._constant(op, "split_axes", [self._axis])
        outputs, start = [], 0
        for size in self._sizes_found:
            starts = self._constant(op, "split_starts", [start])
            ends = self._constant(op, "split_ends", [start + size])
            outputs.append(op.Slice(x, starts, ends, axes))
            start += size
        return outputs


CONVERT_SPLIT_TO_SLICE = Rule(
    name="ConvertSplitToSlice",
    patterns=[_SplitToSlices(count) for count in range(2, MAX_SPLIT_OUTPUTS + 1)],
    matches=(
        f"Split into 2 to {MAX_SPLIT_OUTPUTS} parts with constant sizes (attribute or input), "
        "or with static axis size when no sizes are given"
    ),
    produces="one Slice per output, with constant starts, ends and axes",
    contract=Contract.exact(),
    option="ConvertSplitToSlice",
    min_opset=10,
)
