"""Planner rules: documented defaults that refine the selection before materializing.

A planner rule is a pure function from a `PlannerContext` to a new `Selection`. Rules
that need calibrated ranges run after calibration, the others right after `select`.
Each rule is turned off by one boolean option of the same name, and records what it
changed in `Selection.kept_float` or `Selection.notes`, which the summary prints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import numpy as np
import onnx_ir as ir

from qrewrite.config import QConfig
from qrewrite.quantization.selection import Selection


@attrs.frozen
class PlannerContext:
    """The model, config, selection and ranges a planner rule reads."""

    graph: ir.Graph
    config: QConfig
    selection: Selection
    # Calibrated ranges by tensor name; None before calibration.
    ranges: Mapping[str, Any] | None = None
    # Max |x| of each slice along the last axis, by tensor name; None when not collected.
    channel_peaks: Mapping[str, np.ndarray] | None = None


@attrs.frozen
class PlannerRule:
    """One planner default: its switch, when it runs, and the function that applies it."""

    name: str
    option: str
    after_calibration: bool
    apply: Callable[[PlannerContext], Selection]


def apply_planner_rules(
    rules: tuple[PlannerRule, ...], context: PlannerContext, *, after_calibration: bool
) -> Selection:
    """Apply the enabled rules of one phase in order and return the final selection."""
    selection = context.selection
    for rule in rules:
        if rule.after_calibration != after_calibration:
            continue
        if not getattr(context.config.options, rule.option):
            continue
        selection = rule.apply(attrs.evolve(context, selection=selection))
    return selection
