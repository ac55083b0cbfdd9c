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
from tqdm import tqdm

from qrewrite.calibration import graph
from qrewrite.calibration.collectors import MinMax
from qrewrite.calibration.figures import save_histogram_figures
from qrewrite.calibration.range_file import load_ranges, save_ranges
from qrewrite.calibration.ranges import TensorRange
from qrewrite.calibration.requests import RangeRequest, Request, as_range_request
from qrewrite.calibration.runner import StatsPlan, StatsRunner
from qrewrite.calibration.tensor_collector import TensorCollector, absorb, empty_collector
from qrewrite.errors import ConfigError

logger = logging.getLogger(__name__)

# A range whose end lies below this fraction of the observed extreme on the same side
# counts as clipped in the summary.
CLIPPED_FRACTION = 0.5
# Tensors the clipping note names, the most clipped first.
CLIPPED_EXAMPLES = 3


@attrs.frozen
class Calibration:
    """Ranges, channel peaks and summary notes of one calibration pass."""

    ranges: dict[str, TensorRange]
    channel_peaks: dict[str, np.ndarray]
    notes: tuple[str, ...] = ()


def _progress_disabled() -> bool:
    return logging.getLogger("qrewrite").getEffectiveLevel() > logging.INFO


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


def collect(
    model: onnx.ModelProto,
    requests: Mapping[str, RangeRequest],
    samples: Iterable[Mapping[str, np.ndarray]],
    options: Any,
    histogram_tensors: Iterable[str] = (),
    peak_ranks: Mapping[str, int] | None = None,
    data_folder: str | None = None,
) -> dict[str, TensorCollector]:
    """Run every sample once and return the merged statistics of each requested tensor.

    `histogram_tensors` get a histogram even when their method does not need one. The
    tensors of `peak_ranks` (tensor -> rank, at least 2) also get channel peaks. With
    CalibWorkerNum > 1 the samples are shared among worker processes.
    """
    extra = set(histogram_tensors)
    peak_ranks = dict(peak_ranks or {})
    collectors = {
        tensor: empty_collector(request, options, tensor in extra, tensor in peak_ranks)
        for tensor, request in requests.items()
    }
    progress = tqdm(samples, desc="calibration", unit="sample", disable=_progress_disabled())
    with tempfile.TemporaryDirectory(prefix="qrewrite-calib-", dir=options.TmpDir) as folder:
        plan = StatsPlan.create(model, collectors, options, folder, peak_ranks, data_folder)
        if options.CalibWorkerNum > 1:
            from qrewrite.calibration.workers import collect_in_workers

            return collect_in_workers(plan, collectors, progress, options.CalibWorkerNum)
        runner = StatsRunner(plan)
        for sample in progress:
            for tensor, stats in runner.run(sample).items():
                collectors[tensor] = absorb(collectors[tensor], stats)
        for tensor, stats in runner.flush().items():
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

    See `calibrate_with_channel_peaks`, which this calls without channel peaks.
    """
    result = calibrate_with_channel_peaks(model, requests, samples, options, {}, histogram_folder)
    return result.ranges


def calibrate_with_channel_peaks(
    model: onnx.ModelProto,
    requests: Mapping[str, Request],
    samples: Iterable[Mapping[str, np.ndarray]],
    options: Any,
    peak_ranks: Mapping[str, int],
    histogram_folder: str | os.PathLike[str] | None = None,
    data_folder: str | None = None,
) -> Calibration:
    """Return the calibrated ranges and channel peaks after one pass over `samples`.

    `requests` maps tensor names of the main graph (graph inputs and node outputs) to a
    CalibMethod, a PowerOfTwoMethod or a RangeRequest. `model` is not modified. NaN and
    infinite values are left out of the statistics, and each tensor that had some is named
    in a warning. A tensor with no finite value in any sample gets the range [0, 0].

    With TensorsRangeFile, an existing file is loaded instead of reading `samples`, and a
    missing one is written after calibration. With SaveTensorHistFig, one PNG per tensor
    goes to `histogram_folder` (see `figures.histogram_folder_for`), which is then required.

    `peak_ranks` maps requested tensors to their rank, at least 2. `channel_peaks` maps
    each of them to its channel peaks: max |x| over all axes but the last, a float32
    vector, over all samples. Tensors whose last axis changed length between samples are
    left out, and so is every tensor when the ranges come from TensorsRangeFile.
    The peaks come from the same onnxruntime run as the ranges. `notes` names the tensors
    whose range clips them to under CLIPPED_FRACTION of what the samples reached.
    """
    from qrewrite.calibration.methods import compute_ranges

    range_requests = {t: as_range_request(r, t) for t, r in requests.items()}
    _check_requests(model, range_requests)
    for tensor, rank in peak_ranks.items():
        if tensor not in range_requests:
            raise ConfigError(f"channel peaks of {tensor!r}: the tensor is not in the requests")
        if rank < 2:
            raise ConfigError(f"channel peaks of {tensor!r}: rank {rank} is below 2")
    if options.SaveTensorHistFig and histogram_folder is None:
        raise ConfigError(
            "SaveTensorHistFig saves the figures next to the output model; pass an output "
            "model path, or set SaveTensorHistFig=False"
        )
    if not range_requests:
        return Calibration({}, {})

    range_file = options.TensorsRangeFile
    if range_file is not None and Path(range_file).exists():
        logger.info("loading tensor ranges from %s instead of calibrating", range_file)
        if options.SaveTensorHistFig:
            logger.warning("SaveTensorHistFig: no histograms, because ranges were loaded")
        return Calibration(load_ranges(range_file, range_requests), {})

    figure_tensors = list(range_requests) if options.SaveTensorHistFig else []
    collectors = collect(
        model, range_requests, samples, options, figure_tensors, peak_ranks, data_folder
    )
    for tensor in range_requests:
        _warn_about_values(tensor, collectors[tensor].min_max)
    ranges = compute_ranges(collectors, range_requests, options)

    if range_file is not None:
        save_ranges(range_file, ranges)
        logger.info("saved %d tensor ranges to %s", len(ranges), range_file)
    if histogram_folder is not None and options.SaveTensorHistFig:
        histograms = {t: c.histogram for t, c in collectors.items() if c.histogram is not None}
        save_histogram_figures(Path(histogram_folder), histograms, ranges)
    peaks = {}
    for tensor, collector in collectors.items():
        channel_peaks = collector.channel_peaks
        if channel_peaks is not None and channel_peaks.peaks is not None:
            peaks[tensor] = channel_peaks.peaks
    observed = {tensor: collectors[tensor].min_max for tensor in range_requests}
    note = clipping_note(ranges, observed)
    if note is not None and not options.prints_summary():
        logger.warning("%s", note)
    return Calibration(ranges, peaks, () if note is None else (note,))


def clipping_note(ranges: Mapping[str, TensorRange], observed: Mapping[str, MinMax]) -> str | None:
    """Return a note on the tensors whose range cuts off much of what the samples reached.

    A side counts as clipped when the range ends below CLIPPED_FRACTION of the observed
    extreme on that side. The note names the most clipped tensors, or is None.
    """
    clipped: list[tuple[float, str, float, float]] = []
    for tensor, stats in observed.items():
        tensor_range = ranges.get(tensor)
        if tensor_range is None or stats.count == 0:
            continue
        # (fraction of the extreme that the range keeps, extreme, range end) per side.
        sides = []
        if stats.max > 0:
            sides.append((max(tensor_range.max, 0.0) / stats.max, stats.max, tensor_range.max))
        if stats.min < 0:
            sides.append((max(-tensor_range.min, 0.0) / -stats.min, stats.min, tensor_range.min))
        if not sides:
            continue
        fraction, extreme, end = min(sides)
        if fraction < CLIPPED_FRACTION:
            clipped.append((fraction, tensor, extreme, end))
    if not clipped:
        return None
    clipped.sort()
    examples = ", ".join(
        f"{tensor!r} {extreme:.3g} -> {end:.3g}"
        for _, tensor, extreme, end in clipped[:CLIPPED_EXAMPLES]
    )
    return (
        f"calibration clipped {len(clipped)} of {len(observed)} tensors to under "
        f"{CLIPPED_FRACTION:.0%} of the values the samples reached ({examples}); if accuracy "
        "drops, compare with MinMax calibration or measure it with EvalMetrics (--eval-data)"
    )


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
