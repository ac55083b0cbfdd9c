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
from qrewrite.calibration.batch import batch_stats
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


def model_source(stats_model: onnx.ModelProto, folder: str | None) -> bytes | str:
    """Return the serialized model, or the path of a saved copy when it exceeds 2 GiB."""
    if stats_model.ByteSize() < _PROTOBUF_LIMIT:
        return stats_model.SerializeToString()
    if folder is None:
        raise ModelInputError("a calibration model above 2 GiB needs a temporary folder")
    handle, path = tempfile.mkstemp(prefix="calibration-", suffix=".onnx", dir=folder)
    os.close(handle)
    location = Path(path).name + ".data"
    onnx.save(stats_model, path, save_as_external_data=True, location=location)
    return path


def _progress_disabled() -> bool:
    return logging.getLogger("qrewrite").getEffectiveLevel() > logging.INFO


@attrs.frozen
class StatsPlan:
    """The inputs of the calibration graph: source model, tensors of each kind, providers."""

    model: onnx.ModelProto
    histogram_tensors: tuple[str, ...]
    min_max_tensors: tuple[str, ...]
    types: dict[str, int] = attrs.field(eq=False)
    providers: tuple[str, ...]
    folder: str | None = None

    @classmethod
    def create(
        cls,
        model: onnx.ModelProto,
        collectors: Mapping[str, TensorCollector],
        options: Any,
        folder: str | None = None,
    ) -> StatsPlan:
        histograms = tuple(t for t, c in collectors.items() if c.histogram is not None)
        min_max_only = tuple(t for t in collectors if t not in set(histograms))
        needed = graph.HISTOGRAM_MIN_OPSET if histograms else graph.MIN_MAX_MIN_OPSET
        source = _with_opset(model, needed)
        types = graph.tensor_types(source)
        providers = tuple(check_providers(options))
        return cls(source, histograms, min_max_only, types, providers, folder)


# Tensors with at most this many elements in the first sample are returned whole and
# reduced in numpy (see `batch`): below this size the reduction nodes cost more than the
# copy. A returned tensor that later grows past RAW_MAX_ELEMENTS is reduced in the graph
# from the next sample on.
RAW_ELEMENTS = 4096
RAW_MAX_ELEMENTS = 16 * RAW_ELEMENTS


class StatsRunner:
    """A calibration session that returns the statistics of one sample at a time.

    The session is built at the first sample, whose input shapes decide which tensors are
    small enough to be returned whole. The other tensors start with the fast statistics.
    When a sample shows NaN or inf in one of them, the graph is rebuilt with the masked
    statistics for that tensor and the sample runs again, so the common case pays nothing
    for NaN handling.
    """

    def __init__(self, plan: StatsPlan, threads: int = 0) -> None:
        self.plan = plan
        self.threads = threads
        self.masked: set[str] = set()
        self.raw: set[str] = set()
        self.session: ort.InferenceSession | None = None

    @classmethod
    def from_requests(
        cls, model: onnx.ModelProto, requests: Mapping[str, RangeRequest], options: Any
    ) -> StatsRunner:
        """Return a runner for `requests` that keeps its models in memory."""
        collectors = {t: empty_collector(r, options) for t, r in requests.items()}
        return cls(StatsPlan.create(model, collectors, options))

    def _choose_raw(self, sample: Mapping[str, np.ndarray]) -> None:
        sizes = graph.static_sizes(self.plan.model, dict(sample))
        requested = (*self.plan.histogram_tensors, *self.plan.min_max_tensors)
        limit = RAW_ELEMENTS
        self.raw = {t for t in requested if sizes.get(t, limit + 1) <= limit}
        logger.debug("returning %d small tensors whole", len(self.raw))

    def _build(self) -> None:
        plan = self.plan
        stats_model, self.outputs, self.raw_outputs = graph.build_stats_model(
            plan.model,
            plan.histogram_tensors,
            plan.min_max_tensors,
            self.masked,
            plan.types,
            self.raw,
        )
        self.raw_histogram = [t in set(plan.histogram_tensors) for t in self.raw_outputs]
        source = model_source(stats_model, plan.folder)
        del stats_model
        session_options = _session_options()
        session_options.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(
            source, session_options, providers=list(plan.providers)
        )
        self.output_names = [name for o in self.outputs for name in o.names()]
        self.output_names += list(self.raw_outputs.values())

    def run(self, sample: Mapping[str, np.ndarray]) -> dict[str, TensorCollector]:
        """Run one sample and return each tensor's statistics of that sample alone."""
        if self.session is None:
            self._choose_raw(sample)
            self._build()
        stats, unmasked, grown = self._run_once(sample)
        if unmasked:
            logger.debug("leaving NaN and inf out of %d more tensors", len(unmasked))
            self.masked |= unmasked
            self._build()
            stats, _, grown = self._run_once(sample)
        if grown:
            logger.debug("reducing %d grown tensors in the graph from now on", len(grown))
            self.raw -= grown
            self._build()
        return stats

    def _run_once(
        self, sample: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, TensorCollector], set[str], set[str]]:
        assert self.session is not None
        fetched = self.session.run(self.output_names, sample)
        values = dict(zip(self.output_names, fetched, strict=True))
        result, unmasked = {}, set()
        raw_arrays = [values[name] for name in self.raw_outputs.values()]
        raw_stats = batch_stats(raw_arrays, self.raw_histogram)
        for tensor, (min_max, histogram) in zip(self.raw_outputs, raw_stats, strict=True):
            result[tensor] = TensorCollector(min_max, None, histogram)
        grown = {
            tensor
            for tensor, array in zip(self.raw_outputs, raw_arrays, strict=True)
            if array.size > RAW_MAX_ELEMENTS
        }
        for outputs in self.outputs:
            size = int(values[outputs.size])
            check = values[outputs.check]
            if not outputs.masked and not np.isfinite(check):
                unmasked.add(outputs.tensor)
                continue
            nonfinite = int(check) if outputs.masked else 0
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
        return result, unmasked, grown


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
    progress = tqdm(samples, desc="calibration", unit="sample", disable=_progress_disabled())
    with tempfile.TemporaryDirectory(prefix="qrewrite-calib-", dir=options.TmpDir) as folder:
        plan = StatsPlan.create(model, collectors, options, folder)
        if options.CalibWorkerNum > 1:
            from qrewrite.calibration.workers import collect_in_workers

            return collect_in_workers(plan, collectors, progress, options.CalibWorkerNum)
        runner = StatsRunner(plan)
        for sample in progress:
            for tensor, stats in runner.run(sample).items():
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
