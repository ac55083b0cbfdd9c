"""`calibrate`: one streaming pass of the samples through onnxruntime, reduced in the graph."""

from __future__ import annotations

import logging
import os
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
from qrewrite.calibration.figures import save_histogram_figures
from qrewrite.calibration.grid import grid_for
from qrewrite.calibration.power_of_two import PositionVotes, min_mse_exponent
from qrewrite.calibration.range_file import load_ranges, save_ranges
from qrewrite.calibration.ranges import TensorRange
from qrewrite.calibration.requests import (
    PowerOfTwoMethod,
    RangeRequest,
    Request,
    as_range_request,
)
from qrewrite.config.enums import CalibMethod
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


def empty_collector(
    request: RangeRequest, options: Any, with_histogram: bool = False
) -> TensorCollector:
    """Return the collector a request needs, before any sample."""
    moving = None
    if options.CalibMovingAverage and request.method is CalibMethod.MinMax:
        moving = MovingAverageMinMax(options.CalibMovingAverageConstant)
    histogram = Histogram() if request.needs_histogram or with_histogram else None
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


def check_providers(options: Any) -> list[str]:
    """Return ExecutionProviders as a list, after checking that onnxruntime has each one."""
    available = ort.get_available_providers()
    for provider in options.ExecutionProviders:
        if provider not in available:
            raise ConfigError(
                f"ExecutionProviders: {provider!r} is not available in this onnxruntime; "
                f"available: {', '.join(available)}"
            )
    return list(options.ExecutionProviders)


def model_source(stats_model: onnx.ModelProto, folder: Path) -> bytes | str:
    """Return the serialized model, or the path of a saved copy when it exceeds 2 GiB."""
    if stats_model.ByteSize() < _PROTOBUF_LIMIT:
        return stats_model.SerializeToString()
    path = folder / "calibration.onnx"
    onnx.save(stats_model, path, save_as_external_data=True, location="calibration.onnx.data")
    return str(path)


def _progress_disabled() -> bool:
    return logging.getLogger("qrewrite").getEffectiveLevel() > logging.INFO


def build_stats_model(
    model: onnx.ModelProto, histogram_tensors: list[str], min_max_tensors: list[str]
) -> tuple[onnx.ModelProto, list[graph.StatOutputs]]:
    """Return the calibration model (opset raised if its reductions need it) and its outputs."""
    needed = graph.HISTOGRAM_MIN_OPSET if histogram_tensors else graph.MIN_MAX_MIN_OPSET
    source = _with_opset(model, needed)
    return graph.build_stats_model(source, histogram_tensors, min_max_tensors)


class StatsSession:
    """An onnxruntime session of the calibration model that returns per-sample collectors."""

    def __init__(
        self,
        source: bytes | str,
        outputs: list[graph.StatOutputs],
        providers: list[str],
        threads: int = 0,
    ) -> None:
        session_options = _session_options()
        session_options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(source, session_options, providers=providers)
        self.outputs = outputs
        self.output_names = [name for o in outputs for name in o.names()]

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


class StatsRunner(StatsSession):
    """A calibration session built from the float model, for one process."""

    def __init__(
        self,
        model: onnx.ModelProto,
        requests: Mapping[str, RangeRequest],
        options: Any,
        histogram_tensors: Iterable[str] = (),
    ) -> None:
        extra = set(histogram_tensors)
        histograms = [t for t, r in requests.items() if r.needs_histogram or t in extra]
        min_max_only = [t for t in requests if t not in set(histograms)]
        stats_model, outputs = build_stats_model(model, histograms, min_max_only)
        with tempfile.TemporaryDirectory(prefix="qrewrite-calib-", dir=options.TmpDir) as tmp:
            source = model_source(stats_model, Path(tmp))
            super().__init__(source, outputs, check_providers(options))


def absorb(collector: TensorCollector, sample_stats: TensorCollector) -> TensorCollector:
    """Merge one sample's statistics into a running collector."""
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


def collect(
    model: onnx.ModelProto,
    requests: Mapping[str, RangeRequest],
    samples: Iterable[Mapping[str, np.ndarray]],
    options: Any,
    histogram_tensors: Iterable[str] = (),
) -> dict[str, TensorCollector]:
    """Run every sample once and return the merged statistics of each requested tensor.

    `histogram_tensors` get a histogram even when their method does not need one. With
    CalibWorkerNum > 1 the samples are shared among worker processes.
    """
    extra = set(histogram_tensors)
    collectors = {
        tensor: empty_collector(request, options, tensor in extra)
        for tensor, request in requests.items()
    }
    histograms = [t for t, c in collectors.items() if c.histogram is not None]
    min_max_only = [t for t in requests if t not in set(histograms)]
    stats_model, outputs = build_stats_model(model, histograms, min_max_only)
    providers = check_providers(options)
    progress = tqdm(samples, desc="calibration", unit="sample", disable=_progress_disabled())

    with tempfile.TemporaryDirectory(prefix="qrewrite-calib-", dir=options.TmpDir) as folder:
        source = model_source(stats_model, Path(folder))
        del stats_model
        if options.CalibWorkerNum > 1:
            from qrewrite.calibration.workers import collect_in_workers

            return collect_in_workers(
                source, outputs, providers, collectors, progress, options.CalibWorkerNum
            )
        session = StatsSession(source, outputs, providers)
        for sample in progress:
            for tensor, stats in session.run(sample).items():
                collectors[tensor] = absorb(collectors[tensor], stats)
    return collectors


def calibrate(
    model: onnx.ModelProto,
    requests: Mapping[str, Request],
    samples: Iterable[Mapping[str, np.ndarray]],
    options: Any,
    histogram_folder: str | os.PathLike[str] | None = None,
) -> dict[str, TensorRange]:
    """Return the calibrated range of every requested tensor after one pass over `samples`.

    `requests` maps tensor names of the main graph (graph inputs and node outputs) to a
    CalibMethod, a PowerOfTwoMethod or a RangeRequest. `model` is not modified. NaN and
    infinite values are left out of the statistics, and each tensor that had some is named
    in a warning. A tensor with no finite value in any sample gets the range [0, 0].

    With TensorsRangeFile, an existing file is loaded instead of reading `samples`, and a
    missing one is written after calibration. With SaveTensorHistFig, one PNG per tensor
    goes to `histogram_folder` (see `figures.histogram_folder_for`), which is then required.
    """
    from qrewrite.calibration.methods import compute_range

    range_requests = {t: as_range_request(r, t) for t, r in requests.items()}
    _check_requests(model, range_requests)
    if options.SaveTensorHistFig and histogram_folder is None:
        raise ConfigError(
            "SaveTensorHistFig saves the figures next to the output model; pass an output "
            "model path, or set SaveTensorHistFig=False"
        )
    if not range_requests:
        return {}

    range_file = options.TensorsRangeFile
    if range_file is not None and Path(range_file).exists():
        logger.info("loading tensor ranges from %s instead of calibrating", range_file)
        if options.SaveTensorHistFig:
            logger.warning("SaveTensorHistFig: no histograms, because ranges were loaded")
        return load_ranges(range_file, range_requests)

    figure_tensors = list(range_requests) if options.SaveTensorHistFig else []
    collectors = collect(model, range_requests, samples, options, figure_tensors)
    ranges = {}
    for tensor, request in range_requests.items():
        collector = collectors[tensor]
        _warn_about_values(tensor, collector.min_max)
        ranges[tensor] = compute_range(collector, request, options)

    if range_file is not None:
        save_ranges(range_file, ranges)
        logger.info("saved %d tensor ranges to %s", len(ranges), range_file)
    if histogram_folder is not None and options.SaveTensorHistFig:
        histograms = {t: c.histogram for t, c in collectors.items() if c.histogram is not None}
        save_histogram_figures(Path(histogram_folder), histograms, ranges)
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
