"""Calibration: read samples, collect statistics in one pass, and pick each tensor's range."""

from qrewrite.calibration.engine import calibrate
from qrewrite.calibration.figures import histogram_folder_for
from qrewrite.calibration.ranges import TensorRange
from qrewrite.calibration.requests import PowerOfTwoMethod, RangeRequest
from qrewrite.calibration.samples import samples_from

__all__ = [
    "PowerOfTwoMethod",
    "RangeRequest",
    "TensorRange",
    "calibrate",
    "histogram_folder_for",
    "samples_from",
]
