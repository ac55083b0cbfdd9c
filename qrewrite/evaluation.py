"""EvalMetrics: compare the quantized model with the float model on evaluation samples.

For every graph output and every sample, the cosine similarity of the flattened float
and quantized outputs and the L2 distance between them. The report keeps the mean and
the worst value of each over the samples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import onnx
import onnxruntime as ort

from qrewrite.calibration import samples_from
from qrewrite.errors import CalibrationDataError

logger = logging.getLogger(__name__)


@attrs.frozen
class OutputMetrics:
    """Cosine similarity and L2 distance of one output, over the evaluation samples."""

    name: str
    mean_cosine: float
    min_cosine: float
    mean_l2: float
    max_l2: float

    def describe(self) -> str:
        return (
            f"EvalMetrics {self.name!r}: cosine mean {self.mean_cosine:.6f} "
            f"min {self.min_cosine:.6f}, L2 mean {self.mean_l2:.6g} max {self.max_l2:.6g}"
        )


@attrs.frozen
class EvalReport:
    """The metrics of every graph output and the number of samples they cover."""

    outputs: tuple[OutputMetrics, ...]
    samples: int

    def lines(self) -> tuple[str, ...]:
        return tuple(
            f"{metrics.describe()} over {self.samples} sample(s)" for metrics in self.outputs
        )


def _cosine(expected: np.ndarray, actual: np.ndarray) -> float:
    a = expected.astype(np.float64).ravel()
    b = actual.astype(np.float64).ravel()
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0.0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(a @ b / norms)


def evaluation_source(eval_reader: Any, calibration_reader: Any, use_random: bool) -> Any:
    """Return the samples to evaluate on: EvalDataReader, else a reusable calibration set.

    A calibration reader that is a list or tuple can be read twice. A generator or a
    `get_next()` reader is used up by calibration, so then EvalDataReader is required.
    """
    if eval_reader is not None:
        return eval_reader
    if isinstance(calibration_reader, Sequence) and not isinstance(calibration_reader, str):
        return calibration_reader
    if calibration_reader is None and use_random:
        return None
    raise CalibrationDataError(
        "EvalMetrics=True needs samples to evaluate on: pass EvalDataReader, or give the "
        "calibration samples as a list so they can be read again"
    )


def _session(model: onnx.ModelProto, providers: list[str]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=providers)


def evaluate(
    float_model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    samples: Iterable[Mapping[str, np.ndarray]],
    providers: list[str],
) -> EvalReport:
    """Run both models on every sample and collect the metrics of each graph output."""
    reference = _session(float_model, providers)
    candidate = _session(quantized, providers)
    names = [output.name for output in reference.get_outputs()]
    cosines: dict[str, list[float]] = {name: [] for name in names}
    distances: dict[str, list[float]] = {name: [] for name in names}

    count = 0
    for sample in samples:
        expected = reference.run(names, dict(sample))
        actual = candidate.run(names, dict(sample))
        for name, want, got in zip(names, expected, actual, strict=True):
            want = np.asarray(want)
            got = np.asarray(got)
            cosines[name].append(_cosine(want, got))
            difference = want.astype(np.float64) - got.astype(np.float64)
            distances[name].append(float(np.linalg.norm(difference.ravel())))
        count += 1

    outputs = tuple(
        OutputMetrics(
            name=name,
            mean_cosine=float(np.mean(cosines[name])),
            min_cosine=float(np.min(cosines[name])),
            mean_l2=float(np.mean(distances[name])),
            max_l2=float(np.max(distances[name])),
        )
        for name in names
    )
    return EvalReport(outputs=outputs, samples=count)


def evaluate_with_options(
    float_model: onnx.ModelProto, quantized: onnx.ModelProto, source: Any, options: Any
) -> EvalReport:
    """Evaluate on `source`, the samples `evaluation_source` picked.

    The float and quantized models must each serialize below 2 GiB.
    """
    # CalibDataSize caps the calibration samples, not an evaluation set of its own.
    capped = options.EvalDataReader is None
    samples = samples_from(source, float_model, options, capped=capped)
    report = evaluate(float_model, quantized, samples, list(options.ExecutionProviders))
    if not options.prints_summary():
        for line in report.lines():
            logger.info("%s", line)
    return report
