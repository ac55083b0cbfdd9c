"""The quantization plan: parameters for every target, computed from ranges and weights.

`make_plan` is a pure function of the selection, the calibrated ranges and the model's
constants. Targets in one share group (a data-movement op and its input) get the
parameters of the union of their ranges, so the op runs on integers unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

import attrs
import numpy as np
import onnx_ir as ir

from qrewrite.model.graph_utils import constant_array
from qrewrite.quantization.blocks import block_range
from qrewrite.quantization.qparams import QuantParams, channel_range, params_from_range
from qrewrite.quantization.selection import Role, Selection, Target, share_groups
from qrewrite.quantization.subgraphs import ScopedNames

logger = logging.getLogger(__name__)


class RangeLike(Protocol):
    """A calibrated range; `qrewrite.calibration.TensorRange` is one."""

    @property
    def min(self) -> float: ...

    @property
    def max(self) -> float: ...


@attrs.frozen
class Plan:
    """Parameters of every target, plus the float data of constant targets."""

    selection: Selection
    params: dict[str, QuantParams]
    # Float data to quantize for constant targets (weights, biases, constant inputs).
    constants: dict[str, np.ndarray]

    def with_params(self, updates: Mapping[str, QuantParams]) -> Plan:
        """Return a plan with some targets' parameters replaced."""
        return attrs.evolve(self, params={**self.params, **updates})

    def with_constants(self, updates: Mapping[str, np.ndarray]) -> Plan:
        """Return a plan with some targets' float data replaced."""
        return attrs.evolve(self, constants={**self.constants, **updates})


def _activation_params(
    members: list[Target], ranges: Mapping[str, RangeLike], constants: Mapping[str, np.ndarray]
) -> QuantParams:
    lows: list[float] = []
    highs: list[float] = []
    for target in members:
        if target.constant:
            low, high = channel_range(constants[target.key], None)
            lows.append(float(low))
            highs.append(float(high))
        elif target.tensor in ranges:
            lows.append(float(ranges[target.tensor].min))
            highs.append(float(ranges[target.tensor].max))
        elif target.key in constants:
            low, high = channel_range(constants[target.key], None)
            lows.append(float(low))
            highs.append(float(high))
        else:
            logger.warning("no calibrated range for tensor %r; using [0, 0]", target.tensor)
    spec = members[0].spec
    assert spec is not None
    group_low = min(lows, default=0.0)
    group_high = max(highs, default=0.0)
    return params_from_range(
        group_low, group_high, spec.data_type, symmetric=spec.symmetric, scale_type=spec.scale_type
    )


def make_plan(selection: Selection, graph: ir.Graph, ranges: Mapping[str, RangeLike]) -> Plan:
    """Compute the parameters of every activation and weight target.

    Bias targets are left out; `refine_bias` computes them from the plan.
    """
    # Targets in If, Loop and Scan bodies name their tensors by scoped key.
    values = ScopedNames(graph).values
    constants: dict[str, np.ndarray] = {}
    for key, target in selection.targets.items():
        value = values.get(target.tensor)
        if target.constant:
            data = constant_array(value)
            if data is None:
                raise ValueError(f"target {key!r} is marked constant but has no data")
            constants[key] = data
        elif value is not None and value.const_value is not None:
            # An initializer that is also a graph input: its default value gives the range.
            constants[key] = value.const_value.numpy()

    params: dict[str, QuantParams] = {}
    for ordered in share_groups(selection):
        head = selection.targets[ordered[0]]
        if head.role is Role.BIAS:
            continue
        if head.role is Role.WEIGHT:
            spec = head.spec
            assert spec is not None
            if head.block_size is not None and head.axis is not None:
                low, high = block_range(constants[head.key], head.axis, head.block_size)
            else:
                low, high = channel_range(constants[head.key], head.axis)
            params[head.key] = params_from_range(
                low,
                high,
                spec.data_type,
                symmetric=spec.symmetric,
                scale_type=spec.scale_type,
                axis=head.axis,
                block_size=head.block_size,
            )
            continue
        shared = _activation_params([selection.targets[key] for key in ordered], ranges, constants)
        for key in ordered:
            params[key] = shared
    return Plan(selection=selection, params=params, constants=constants)
