"""The summary printed after a run: what was quantized, to which types, and the sizes."""

from __future__ import annotations

from collections import Counter

import attrs
import onnx_ir as ir

from qrewrite.quantization.plan import Plan

_BIAS_OPS = frozenset({"Conv", "ConvTranspose", "Gemm"})


@attrs.frozen
class QuantizationSummary:
    """Counts and sizes of one quantization run."""

    quantized_op_types: tuple[tuple[str, int], ...]
    tensors_by_type: tuple[tuple[str, str, int], ...]
    size_before: int
    size_after: int
    kept_float: tuple[tuple[str, str], ...]
    notes: tuple[str, ...] = ()

    def format(self) -> str:
        """Render the summary as a plain-text table."""
        lines = ["qrewrite quantization summary", ""]
        lines.append(f"{'op type':<24}{'quantized nodes':>16}")
        for op_type, count in self.quantized_op_types:
            lines.append(f"{op_type:<24}{count:>16}")
        if self.tensors_by_type:
            lines.append("")
            lines.append(f"{'role':<12}{'data type':<12}{'tensors':>8}")
            for role, data_type, count in self.tensors_by_type:
                lines.append(f"{role:<12}{data_type:<12}{count:>8}")
        lines.append("")
        ratio = self.size_after / self.size_before if self.size_before else 0.0
        lines.append(
            f"model size: {_size(self.size_before)} -> {_size(self.size_after)} ({ratio:.2f}x)"
        )
        if self.kept_float:
            lines.append("")
            lines.append("kept in float:")
            lines.extend(f"  {tensor}: {reason}" for tensor, reason in self.kept_float)
        if self.notes:
            lines.append("")
            lines.extend(self.notes)
        return "\n".join(lines)


def _size(size: int) -> str:
    if size >= 2**20:
        return f"{size / 2**20:.2f} MiB"
    return f"{size / 2**10:.1f} KiB"


def summarize(
    model: ir.Model, plan: Plan, size_before: int, size_after: int, notes: tuple[str, ...]
) -> QuantizationSummary:
    """Build the summary of a run from its plan and the model it was applied to."""
    op_types = {node.name: node.op_type for node in model.graph}
    quantized = Counter(op_types[name] for name in plan.selection.quantized_nodes)

    # With Int32Bias off a bias is quantized like a weight; it is still listed as bias.
    bias_keys = {
        key
        for (node, index), key in plan.selection.input_uses.items()
        if index == 2 and op_types.get(node) in _BIAS_OPS
    }
    tensors: Counter[tuple[str, str]] = Counter()
    for key, target in plan.selection.targets.items():
        params = plan.params.get(key)
        if params is not None:
            role = "bias" if key in bias_keys else target.role.value
            tensors[(role, params.data_type.value)] += 1

    return QuantizationSummary(
        quantized_op_types=tuple(sorted(quantized.items())),
        tensors_by_type=tuple((role, dt, n) for (role, dt), n in sorted(tensors.items())),
        size_before=size_before,
        size_after=size_after,
        kept_float=tuple(sorted(plan.selection.kept_float.items())),
        notes=notes,
    )
