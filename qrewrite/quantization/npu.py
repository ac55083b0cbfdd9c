"""NPU quantize-position checks: move power-of-two positions into the limits of AMD's NPU.

A power-of-two scale 2**-p gives each quantized tensor a position p. The NPU (and the
DPU before it) computes in integers and converts between the positions of a node's
inputs, weights, bias and output with bit shifts. The differences between those
positions must therefore stay within the shift ranges of its datapath. `refine_npu_positions`
changes positions until every enabled limit holds, or until MaxLoopNum rounds have
passed. The limits and the position each check moves are those of AMD Quark's
position refinement (amd/Quark, quark/onnx/postprocess/refinement/refine.py at
commit 1d27b55); npu_shifts.py and npu_align.py list them. Unlike that pass, shift
checks also record the lower limits they put on activations, and the next round's
alignments keep to them. Without that, aligning to the lowest position undoes a raise
that a Swish or HardSigmoid limit needs, and the rounds repeat until MaxLoopNum.

The refinement runs on the plan before `refine_bias`. With Int32Bias the bias scale is
then computed from the final input and weight scales, so shift_bias = 0, which every
limit allows. Without Int32Bias the bias is an int8 power-of-two target of its own,
and shift_bias moves it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import onnx_ir as ir

from qrewrite.config.enums import ScaleType
from qrewrite.quantization.npu_align import ALIGN_CHECKS
from qrewrite.quantization.npu_shifts import SHIFT_CHECKS, Violation
from qrewrite.quantization.plan import Plan
from qrewrite.quantization.qparams import QuantParams
from qrewrite.quantization.selection import share_groups

logger = logging.getLogger(__name__)

# The log names this many unresolved limits and counts the rest.
_LOGGED_VIOLATIONS = 10


@attrs.frozen
class PositionChange:
    """One position moved by one check. Per-channel weights have one position per channel."""

    check: str
    node: str
    key: str
    before: tuple[int, ...]
    after: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.check} at {self.node}: {self.key} position {self.before} -> {self.after}"


@attrs.frozen
class NPUPositionReport:
    """Record of the positions the NPU checks moved and the limits still broken afterwards."""

    rounds: int
    changes: tuple[PositionChange, ...]
    unresolved: tuple[Violation, ...]
    # Reason the checks did not run (disabled, or no power-of-two targets), or None.
    skipped: str | None = None

    def moves_per_check(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for change in self.changes:
            counts[change.check] = counts.get(change.check, 0) + 1
        return counts

    def summary_line(self) -> str:
        """Return one line for the log and the quantization summary."""
        if self.skipped is not None:
            return f"NPU position checks skipped: {self.skipped}"
        per_check = ", ".join(f"{name} {count}" for name, count in self.moves_per_check().items())
        moved = f"{len(self.changes)} position(s) moved in {self.rounds} round(s)"
        if per_check:
            moved += f" ({per_check})"
        return f"NPU position checks: {moved}; {len(self.unresolved)} limit(s) still broken"


@attrs.frozen
class NPUPositionResult:
    plan: Plan
    report: NPUPositionReport


@attrs.frozen
class NPUCheckOptions:
    """The NPU options of the `npu` group that the position checks read."""

    enabled: bool = True
    max_rounds: int = 5
    checks: frozenset[str] = frozenset()

    @classmethod
    def from_options(cls, options: Any) -> NPUCheckOptions:
        """Read the options with getattr. An Align option set to None means True."""

        def flag(name: str, default: bool) -> bool:
            value = getattr(options, name, default)
            return default if value is None else bool(value)

        max_rounds = int(getattr(options, "MaxLoopNum", 5))
        if max_rounds < 1:
            raise ValueError(f"MaxLoopNum must be at least 1, got {max_rounds}")
        checks = {
            name for name, (option, default) in _CHECK_OPTIONS.items() if flag(option, default)
        }
        return cls(flag("NPULimitationCheck", True), max_rounds, frozenset(checks))


# check name -> (option that enables it, its default with power-of-two scales)
_CHECK_OPTIONS: dict[str, tuple[str, bool]] = {
    "align_concat": ("AlignConcat", True),
    "align_pool": ("AlignPool", True),
    "align_pad": ("AlignPad", True),
    "align_slice": ("AlignSlice", True),
    "align_transpose": ("AlignTranspose", False),
    "align_reshape": ("AlignReshape", False),
    "shift_read": ("AdjustShiftRead", True),
    "shift_write": ("AdjustShiftWrite", True),
    "shift_cut": ("AdjustShiftCut", True),
    "shift_bias": ("AdjustShiftBias", True),
    "hard_sigmoid": ("AdjustHardSigmoid", True),
    "shift_swish": ("AdjustShiftSwish", True),
}

# Alignments run first, so the shift checks after them see the aligned positions.
CheckFunction = Callable[["PositionTable", ir.Node, bool], list[Violation]]
_CHECK_ORDER: tuple[tuple[str, CheckFunction], ...] = (*ALIGN_CHECKS, *SHIFT_CHECKS)


def _position_of(plan: Plan, key: str) -> np.ndarray | None:
    """Return -log2(scale) of a power-of-two target, or None for any other target."""
    target = plan.selection.targets[key]
    params = plan.params.get(key)
    if target.spec is None or target.spec.scale_type is not ScaleType.PowerOf2 or params is None:
        return None
    scale = params.scale.astype(np.float64)
    if scale.size == 0 or np.any(scale <= 0):
        return None
    exponent = np.log2(scale)
    if not np.all(exponent == np.rint(exponent)):
        return None
    return (-np.rint(exponent)).astype(np.int64)


def _params_at(params: QuantParams, symmetric: bool, position: np.ndarray) -> QuantParams:
    """Return `params` with scale 2**-position. An asymmetric zero point keeps its real value."""
    scale = np.exp2(-position.astype(np.float64)).reshape(params.scale.shape)
    zero_point = params.zero_point
    if not symmetric:
        qmin, qmax = params.data_type.qmin, params.data_type.qmax
        low = (qmin - params.zero_point.astype(np.float64)) * params.scale.astype(np.float64)
        zero_point = np.clip(np.rint(qmin - low / scale), qmin, qmax).astype(np.int64)
    return QuantParams(params.data_type, scale.astype(np.float32), zero_point, params.axis)


class PositionTable:
    """Positions of a plan's power-of-two targets during one refinement, one per share group.

    Targets of one share group have one position, so moving any member moves them all.
    """

    def __init__(self, plan: Plan, graph: ir.Graph) -> None:
        self.plan = plan
        self.selection = plan.selection
        self.nodes = list(graph)
        self.changes: list[PositionChange] = []
        self._group: dict[str, int] = {}
        self._members: list[list[str]] = []
        self._positions: dict[int, np.ndarray] = {}
        for index, members in enumerate(share_groups(plan.selection)):
            self._members.append(members)
            for key in members:
                self._group[key] = index
            position = _position_of(plan, members[0])
            if position is not None:
                self._positions[index] = position
        self._initial = dict(self._positions)
        # Lower limits that shift checks set on activations, from the last round and this one.
        self._floors: dict[int, int] = {}
        self._new_floors: dict[int, int] = {}

    @property
    def has_positions(self) -> bool:
        return bool(self._positions)

    def position(self, key: str | None) -> np.ndarray | None:
        if key is None or key not in self._group:
            return None
        return self._positions.get(self._group[key])

    def scalar(self, key: str | None) -> int | None:
        """Return the position of a per-tensor target, or None."""
        position = self.position(key)
        if position is None or position.size != 1:
            return None
        return int(position.reshape(-1)[0])

    def floor(self, key: str) -> int | None:
        """Return the lowest position that the shift checks of the last round allowed."""
        return self._floors.get(self._group[key])

    def require_at_least(self, key: str, position: int) -> None:
        """Record a lower limit for the next round's alignments.

        Aligning to the lowest position alone would undo a raise by a shift check, and
        the next round would raise it again until MaxLoopNum runs out.
        """
        group = self._group[key]
        self._new_floors[group] = max(position, self._new_floors.get(group, position))

    def end_round(self) -> None:
        self._floors = self._new_floors
        self._new_floors = {}

    def move(self, key: str, position: np.ndarray | int, check: str, node: ir.Node) -> None:
        group = self._group[key]
        before = self._positions[group]
        after = np.broadcast_to(np.asarray(position, dtype=np.int64), before.shape).copy()
        if np.array_equal(before, after):
            return
        self._positions[group] = after
        self.changes.append(
            PositionChange(
                check,
                node.name or "",
                key,
                tuple(int(p) for p in before.reshape(-1)),
                tuple(int(p) for p in after.reshape(-1)),
            )
        )

    def input_key(self, node: ir.Node, index: int) -> str | None:
        return self.selection.input_uses.get((node.name or "", index))

    def output_key(self, node: ir.Node) -> str | None:
        """Return the key of the node's first output, looking one fused consumer ahead.

        The NPU fuses an activation into the node before it. It also fuses a Mul into a
        pooling or HardSigmoid node before it, which is the DPU form of those ops. So when
        the output has no quantization of its own, that consumer's output counts.
        """
        if not node.outputs:
            return None
        output = node.outputs[0]
        key = self.selection.output_targets.get(output.name or "")
        if key is not None:
            return key
        uses = list(output.uses())
        if len(uses) != 1:
            return None
        consumer = uses[0].node
        fused = consumer.op_type in _FUSED_ACTIVATIONS or (
            consumer.op_type == "Mul" and node.op_type in _FUSED_BEFORE_MUL
        )
        if not fused or not consumer.outputs:
            return None
        return self.selection.output_targets.get(consumer.outputs[0].name or "")

    def refined_plan(self) -> Plan:
        updates: dict[str, QuantParams] = {}
        for group, position in self._positions.items():
            if np.array_equal(position, self._initial[group]):
                continue
            head = self.selection.targets[self._members[group][0]]
            assert head.spec is not None
            for key in self._members[group]:
                updates[key] = _params_at(self.plan.params[key], head.spec.symmetric, position)
        return self.plan.with_params(updates) if updates else self.plan


_FUSED_ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu"})
_FUSED_BEFORE_MUL = frozenset({"AveragePool", "GlobalAveragePool", "HardSigmoid"})


def _run_checks(table: PositionTable, checks: frozenset[str], *, fix: bool) -> list[Violation]:
    found: list[Violation] = []
    for name, check in _CHECK_ORDER:
        if name not in checks:
            continue
        for node in table.nodes:
            found.extend(check(table, node, fix))
    return found


def adjust_npu_positions(plan: Plan, graph: ir.Graph, options: Any) -> NPUPositionResult:
    """Move power-of-two positions into the NPU's limits; return the new plan and a report.

    `plan` is not changed. A plan without power-of-two targets comes back as it is.
    """
    settings = NPUCheckOptions.from_options(options)
    if not settings.enabled:
        return NPUPositionResult(plan, NPUPositionReport(0, (), (), "NPULimitationCheck is off"))
    table = PositionTable(plan, graph)
    if not table.has_positions:
        skipped = "no target has a power-of-two scale"
        return NPUPositionResult(plan, NPUPositionReport(0, (), (), skipped))

    rounds = 0
    while rounds < settings.max_rounds:
        rounds += 1
        moved = len(table.changes)
        _run_checks(table, settings.checks, fix=True)
        table.end_round()
        if len(table.changes) == moved:
            break
    unresolved = _run_checks(table, settings.checks, fix=False)
    report = NPUPositionReport(rounds, tuple(table.changes), tuple(unresolved))
    return NPUPositionResult(table.refined_plan(), report)


def npu_violations(plan: Plan, graph: ir.Graph, options: Any) -> tuple[Violation, ...]:
    """Return every enabled NPU limit that the plan's positions break, changing nothing."""
    settings = NPUCheckOptions.from_options(options)
    table = PositionTable(plan, graph)
    return tuple(_run_checks(table, settings.checks, fix=False))


def refine_npu_positions(plan: Plan, graph: ir.Graph, options: Any) -> Plan:
    """Move power-of-two positions into the NPU's limits and log what moved.

    Run it before `refine_bias`. Use `adjust_npu_positions` to get the report as well.
    """
    result = adjust_npu_positions(plan, graph, options)
    log_report(result.report)
    return result.plan


def log_report(report: NPUPositionReport) -> None:
    logger.info("%s", report.summary_line())
    for change in report.changes:
        logger.debug("%s", change.describe())
    for violation in report.unresolved[:_LOGGED_VIOLATIONS]:
        logger.warning(
            "NPU limit still broken after %d round(s): %s", report.rounds, violation.describe()
        )
    hidden = len(report.unresolved) - _LOGGED_VIOLATIONS
    if hidden > 0:
        logger.warning("%d more NPU limit(s) still broken", hidden)


__all__ = [
    "NPUCheckOptions",
    "NPUPositionReport",
    "NPUPositionResult",
    "PositionChange",
    "PositionTable",
    "Violation",
    "adjust_npu_positions",
    "log_report",
    "npu_violations",
    "refine_npu_positions",
]
