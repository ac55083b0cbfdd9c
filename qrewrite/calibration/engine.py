"""`calibrate`: one streaming pass of the samples through onnxruntime, reduced in the graph."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import onnx
import onnxruntime as ort
from tqdm import tqdm

from qrewrite.calibration import graph
from qrewrite.calibration.collectors import Histogram, MinMax, MovingAverageMinMax
from qrewrite.calibration.grid import grid_for
from qrewrite.calibration.power_of_two import PositionVotes, min_mse_exponent
from qrewrite.calibration.ranges import TensorRange
from qrewrite.calibration.requests import (
    PowerOfTwoMethod,
    RangeRequest,
    Request,
    as_range_request,
)
from qrewrite.errors import ConfigError, ModelInputError

logger = logging.getLogger(__name__)

# onnxruntime cannot take a serialized model above 2 GiB; larger ones go through a file.
_PROTOBUF_LIMIT = 2**31 - 1


@attrs.frozen
class TensorCollector:
    """All statistics of one tensor that its request needs."""

    min_max: MinMax = attrs.field(factory=MinMax)
    moving_average: MovingAverageMinMax | None = None
    histogram: Histogram | None = None
    votes: PositionVotes | None = None

    def merge(self, other: TensorCollector) -> TensorCollector:
        moving = self.moving_average
        if moving is not None and other.moving_average is not None:
            moving = moving.merge(other.moving_average)
        histogram = self.histogram
        if histogram is not None and other.histogram is not None:
            histogram = histogram.merge(other.histogram)
        votes = self.votes
        if votes is not None and other.votes is not None:
            votes = votes.merge(other.votes)
        return TensorCollector(self.min_max.merge(other.min_max), moving, histogram, votes)


def empty_collector(request: RangeRequest, options: Any) -> TensorCollector:
    """Return the collector a request needs, before any sample."""
    moving = None
    if options.CalibMovingAverage and not request.needs_histogram:
        moving = MovingAverageMinMax(options.CalibMovingAverageConstant)
    histogram = Histogram() if request.needs_histogram else None
    votes = None
    if request.method is PowerOfTwoMethod.MinMSE and options.MinMSEModePof2Scale == "MostCommon":
        votes = PositionVotes(grid_for(request, options))
    return TensorCollector(MinMax(), moving, histogram, votes)


def _producible_tensors(model: onnx.ModelProto) -> set[str]:
    initializers = {init.name for init in model.graph.initializer}
    names = {value.name for value in model.graph.input if value.name not in initializers}
    names |= {output for node in model.graph.node for output in node.output if output}
    return names


def _check_requests(model: onnx.ModelProto, requests: Mapping[str, RangeRequest]) -> None:
    producible = _producible_tensors(model)
    types = graph.tensor_types(model)
    for tensor in requests:
        if tensor not in producible:
            raise ConfigError(
                f"cannot calibrate {tensor!r}: it is neither a graph input nor a node output "
                "of the main graph"
            )
        elem_type = types.get(tensor)
        if elem_type is not None and not graph.is_float_type(elem_type):
            type_name = onnx.TensorProto.DataType.Name(elem_type)
            raise ConfigError(f"cannot calibrate {tensor!r}: it has type {type_name}, not float")


def _with_opset(model: onnx.ModelProto, needed: int) -> onnx.ModelProto:
    current = graph.default_opset(model)
    if current >= needed:
        return model
    logger.info(
        "converting the calibration copy of the model from opset %d to %d for its reductions",
        current,
        needed,
    )
    try:
        converted = onnx.version_converter.convert_version(model, needed)
    except Exception as error:  # the converter raises bare RuntimeErrors and others
        raise ModelInputError(
            f"the model has opset {current}, and converting it to opset {needed} for "
            f"calibration failed: {error}. Convert the model with ConvertOpsetVersion={needed}"
        ) from error
    converted.ir_version = max(converted.ir_version, 8)
    return converted


def _session_options() -> ort.SessionOptions:
    session_options = ort.SessionOptions()
    # Run each reduction right after the node that produces its tensor, so the tensor can
    # be freed before the next large one is computed.
    session_options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    session_options.log_severity_level = 3
    return session_options


def create_session(
    stats_model: onnx.ModelProto, options: Any, folder: Path | None = None
) -> ort.InferenceSession:
    """Create the calibration session with the configured execution providers."""
    available = ort.get_available_providers()
    for provider in options.ExecutionProviders:
        if provider not in available:
            raise ConfigError(
                f"ExecutionProviders: {provider!r} is not available in this onnxruntime; "
                f"available: {', '.join(available)}"
            )
    providers = list(options.ExecutionProviders)
    if stats_model.ByteSize() < _PROTOBUF_LIMIT:
        return ort.InferenceSession(
            stats_model.SerializeToString(), _session_options(), providers=providers
        )
    if folder is None:
        raise ModelInputError("a calibration model above 2 GiB needs a temporary folder")
    path = folder / "calibration.onnx"
    onnx.save(stats_model, path, save_as_external_data=True, location="calibration.onnx.data")
    return ort.InferenceSession(str(path), _session_options(), providers=providers)


def _progress_disabled() -> bool:
    return logging.getLogger("qrewrite").getEffectiveLevel() > logging.INFO


class StatsRunner:
    """The calibration session and the mapping from its outputs to collectors."""

    def __init__(
        self,
        model: onnx.ModelProto,
        requests: Mapping[str, RangeRequest],
        options: Any,
        folder: Path | None = None,
    ) -> None:
        histogram_tensors = [t for t, r in requests.items() if r.needs_histogram]
        min_max_tensors = [t for t, r in requests.items() if not r.needs_histogram]
        needed = graph.HISTOGRAM_MIN_OPSET if histogram_tensors else graph.MIN_MAX_MIN_OPSET
        source = _with_opset(model, needed)
        stats_model, self.outputs = graph.build_stats_model(
            source, histogram_tensors, min_max_tensors
        )
        self.session = create_session(stats_model, options, folder)
        self.output_names = [name for outputs in self.outputs for name in outputs.names()]

    def run(self, sample: Mapping[str, np.ndarray]) -> dict[str, TensorCollector]:
        """Run one sample and return each tensor's statistics of that sample alone."""
        fetched = self.session.run(self.output_names, sample)
        values = dict(zip(self.output_names, fetched, strict=True))
        result = {}
        for outputs in self.outputs:
            size = int(values[outputs.size])
            nonfinite = int(values[outputs.nonfinite])
            count = size - nonfinite
            low, high = float(values[outputs.min]), float(values[outputs.max])
            histogram = None
            if outputs.counts is not None:
                histogram = Histogram()
                if count > 0:
                    histogram = Histogram.from_graph(
                        float(values[outputs.exponent]),
                        float(values[outputs.first_bin]),
                        values[outputs.counts],
                        low,
                        high,
                    )
            min_max = MinMax(count, nonfinite, low, high) if count > 0 else MinMax(0, nonfinite)
            result[outputs.tensor] = TensorCollector(min_max, None, histogram)
        return result


def collect(
    model: onnx.ModelProto,
    requests: Mapping[str, RangeRequest],
    samples: Iterable[Mapping[str, np.ndarray]],
    options: Any,
) -> dict[str, TensorCollector]:
    """Run every sample once and return the merged statistics of each requested tensor."""
    collectors = {tensor: empty_collector(r, options) for tensor, r in requests.items()}
    with tempfile.TemporaryDirectory(prefix="qrewrite-calib-", dir=options.TmpDir) as folder:
        runner = StatsRunner(model, requests, options, Path(folder))
        progress = tqdm(samples, desc="calibration", unit="sample", disable=_progress_disabled())
        for sample in progress:
            for tensor, stats in runner.run(sample).items():
                collectors[tensor] = _absorb(collectors[tensor], stats)
    return collectors


def _absorb(collector: TensorCollector, sample_stats: TensorCollector) -> TensorCollector:
    moving = collector.moving_average
    stats = sample_stats.min_max
    if moving is not None and stats.count > 0:
        moving = moving.update_extremes(stats.min, stats.max)
    histogram = collector.histogram
    votes = collector.votes
    if histogram is not None and sample_stats.histogram is not None:
        histogram = histogram.merge(sample_stats.histogram)
        if votes is not None and sample_stats.histogram.counts.size:
            votes = votes.vote(min_mse_exponent(sample_stats.histogram, votes.grid))
    return TensorCollector(collector.min_max.merge(stats), moving, histogram, votes)


def calibrate(
    model: onnx.ModelProto,
    requests: Mapping[str, Request],
    samples: Iterable[Mapping[str, np.ndarray]],
    options: Any,
) -> dict[str, TensorRange]:
    """Return the calibrated range of every requested tensor after one pass over `samples`.

    `requests` maps tensor names of the main graph (graph inputs and node outputs) to a
    CalibMethod, a PowerOfTwoMethod or a RangeRequest. `model` is not modified. NaN and
    infinite values are left out of the statistics, and each tensor that had some is named
    in a warning. A tensor with no finite value in any sample gets the range [0, 0].
    """
    from qrewrite.calibration.methods import compute_range

    range_requests = {t: as_range_request(r, t) for t, r in requests.items()}
    _check_requests(model, range_requests)
    if not range_requests:
        return {}
    collectors = collect(model, range_requests, samples, options)
    ranges = {}
    for tensor, request in range_requests.items():
        collector = collectors[tensor]
        _warn_about_values(tensor, collector.min_max)
        ranges[tensor] = compute_range(collector, request, options)
    return ranges


def _warn_about_values(tensor: str, stats: MinMax) -> None:
    if stats.nonfinite:
        logger.warning(
            "tensor %r had %d NaN or infinite values during calibration; they were left out "
            "of its range",
            tensor,
            stats.nonfinite,
        )
    if stats.count == 0:
        logger.warning(
            "tensor %r had no finite values in any calibration sample; its range is [0, 0]",
            tensor,
        )
