"""The list of planner rules, in the order they run within each phase."""

from __future__ import annotations

from qrewrite.quantization.planner import PlannerRule
from qrewrite.quantization.planner.fold_activation import fold_relu
from qrewrite.quantization.planner.outliers import keep_outlier_tensors_float
from qrewrite.quantization.planner.output_concat import split_output_concat
from qrewrite.quantization.planner.sentinel import keep_sentinel_tensors_float
from qrewrite.quantization.planner.slow_kernels import keep_slow_ops_float
from qrewrite.quantization.planner.slow_types import warn_slow_types
from qrewrite.quantization.planner.steep_inputs import keep_sqrt_log_inputs_float

PLANNER_RULES: tuple[PlannerRule, ...] = (
    PlannerRule(
        name="SplitOutputConcat",
        option="SplitOutputConcat",
        after_calibration=False,
        apply=split_output_concat,
    ),
    PlannerRule(
        name="KeepSentinelTensorsFloat",
        option="KeepSentinelTensorsFloat",
        after_calibration=True,
        apply=keep_sentinel_tensors_float,
    ),
    PlannerRule(
        name="KeepOutlierTensorsFloat",
        option="KeepOutlierTensorsFloat",
        after_calibration=True,
        apply=keep_outlier_tensors_float,
    ),
    PlannerRule(
        name="FoldRelu",
        option="FoldRelu",
        after_calibration=False,
        apply=fold_relu,
    ),
    PlannerRule(
        name="KeepSlowOpsFloat",
        option="KeepSlowOpsFloat",
        after_calibration=False,
        apply=keep_slow_ops_float,
    ),
    PlannerRule(
        name="WarnSlowTypes",
        option="WarnSlowTypes",
        after_calibration=False,
        apply=warn_slow_types,
    ),
    PlannerRule(
        name="KeepSqrtLogInputsFloat",
        option="KeepSqrtLogInputsFloat",
        after_calibration=False,
        apply=keep_sqrt_log_inputs_float,
    ),
)
