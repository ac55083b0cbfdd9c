"""The onnxruntime session of the calibration graph, and the statistics of one sample."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import onnx
import onnxruntime as ort

from qrewrite.calibration import graph
from qrewrite.calibration.batch import SmallTensorStats, batch_stats
from qrewrite.calibration.collectors import ChannelPeaks, Histogram, MinMax
from qrewrite.calibration.requests import RangeRequest
from qrewrite.calibration.tensor_collector import TensorCollector, empty_collector
from qrewrite.errors import ConfigError, ModelInputError

logger = logging.getLogger(__name__)

# onnxruntime cannot take a serialized model above 2 GiB; larger ones go through a file.
_PROTOBUF_LIMIT = 2**31 - 1


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


def session_options() -> ort.SessionOptions:
    """Return the options of a calibration session, which keep its peak memory low."""
    options = ort.SessionOptions()
    # Run each reduction right after the node that produces its tensor, so the tensor can
    # be freed before the next large one is computed.
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    # The arena stays on: without it the many short-lived buffers fragment the C heap,
    # and PP-OCRv4 rec (4 samples of [4, 3, 48, ~1000]) peaked at 1.3 GB instead of
    # 0.32 GB. The memory pattern planner is off because with it PP-OCRv4 det (two
    # 736x736 images) peaked at 0.52 GB instead of 0.33 GB. Measured with onnxruntime
    # 1.32 on a 2-core x86_64 machine.
    # With the returned small tensors copied out of the arena (see `StatsRunner.run`), the
    # MinMax peak on det (256x320) went from 178 MB with 10 samples to 181 MB with 500.
    # An environment arena that extends by the requested size, instead of by powers of
    # two, measured 187 and 190 MB, and no arena 200 and 201 MB.
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    return options


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


@attrs.frozen
class StatsPlan:
    """The inputs of the calibration graph: source model, tensors of each kind, providers."""

    model: onnx.ModelProto
    histogram_tensors: tuple[str, ...]
    min_max_tensors: tuple[str, ...]
    types: dict[str, int] = attrs.field(eq=False)
    providers: tuple[str, ...]
    folder: str | None = None
    # Tensors whose collectors need each sample's statistics on their own: moving
    # averages and MostCommon votes.
    per_sample_tensors: tuple[str, ...] = ()
    # Tensor -> rank, for the tensors whose channel peaks are collected.
    peak_ranks: dict[str, int] = attrs.field(factory=dict, eq=False)
    # Folder of the model's external data files, which onnxruntime reads them from.
    data_folder: str | None = None

    @classmethod
    def create(
        cls,
        model: onnx.ModelProto,
        collectors: Mapping[str, TensorCollector],
        options: Any,
        folder: str | None = None,
        peak_ranks: Mapping[str, int] | None = None,
        data_folder: str | None = None,
    ) -> StatsPlan:
        """Plan the statistics `collectors` need, and channel peaks of `peak_ranks`' tensors."""
        histograms = tuple(t for t, c in collectors.items() if c.histogram is not None)
        min_max_only = tuple(t for t in collectors if t not in set(histograms))
        needed = graph.HISTOGRAM_MIN_OPSET if histograms else graph.MIN_MAX_MIN_OPSET
        source = _with_opset(model, needed)
        types = graph.tensor_types(source)
        providers = tuple(check_providers(options))
        per_sample = tuple(
            t for t, c in collectors.items() if c.moving_average is not None or c.votes is not None
        )
        return cls(
            source,
            histograms,
            min_max_only,
            types,
            providers,
            folder,
            per_sample,
            dict(peak_ranks or {}),
            data_folder,
        )


# Tensors with at most this many elements in the first sample are returned whole and
# reduced in numpy (see `batch`): below this size the reduction nodes cost more than the
# copy. A returned tensor that later grows past RAW_MAX_ELEMENTS is reduced in the graph
# from the next sample on.
RAW_ELEMENTS = 4096
RAW_MAX_ELEMENTS = 16 * RAW_ELEMENTS
# A histogram in the graph bins its tensor in parts of at most about this many elements
# (counted in the first sample), one ScatterElements node each. In onnxruntime 1.32 one
# ScatterElements with reduction "add" took 3 ns per index up to 1.5 million indices and
# 14 ns at 4 million. On PP-OCRv4 det at 768x960, 313 million values per sample, the
# calibration graph with histograms ran 7.6 to 8.3 s per sample unsplit. In parts of
# 2**20 it ran 5.2 to 5.8 s, and in parts of 2**18 3.8 to 5.3 s, but the parts added 0.5
# and 1.8 s to the session build (2-core x86_64 machine shared with other jobs).
HISTOGRAM_PIECE_ELEMENTS = 2**20
# Returned tensors wait in a buffer until it has this many elements (16 MiB of float32)
# or the values of RAW_BUFFER_SAMPLES samples. Then they go into the running statistics
# together, which costs a fixed number of numpy calls per batch instead of per sample.
# Merging is exact, so the result is the same. A chunk of the batch bins all values of
# some tensors into windows of HISTOGRAM_BINS bins each, so more values per tensor cost
# fewer bins per value. On the 1000 small ops model (512 values per tensor and sample),
# Percentile over 32 samples took 0.34 s of CPU with 2**21 elements and 0.31 s with
# 2**22, and peaked 6 MB higher (2-core x86_64). The sample bound keeps the buffer small
# when the small tensors are few. PP-OCRv4 det at 256x320 returns 9,456 values per
# sample, so the element bound alone let the buffer grow for 222 samples. The buffer is
# allocated once with RAW_BUFFER_ELEMENTS elements, or one sample's values if more, and
# its pages are touched only as far as samples fill it.
RAW_BUFFER_ELEMENTS = 2**22
RAW_BUFFER_SAMPLES = 16


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
        self.pieces: dict[str, int] = {}
        self.session: ort.InferenceSession | None = None
        # Returned tensors that wait for `_reduce_pending`: one flat block of values per
        # sample, with the size of each of `buffered` in it.
        self.buffered: list[str] = []
        self.buffered_positions: list[int] = []
        self.per_sample_positions: dict[str, int] = {}
        self.pending_blocks: list[np.ndarray] = []
        self.buffer = np.empty(0, np.float32)
        self.buffer_used = 0
        self.pending_sizes: list[np.ndarray] = []
        self.small_stats = SmallTensorStats(())

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
        self.pieces = {
            t: -(-sizes[t] // HISTOGRAM_PIECE_ELEMENTS)
            for t in self.plan.histogram_tensors
            if sizes.get(t, 0) > HISTOGRAM_PIECE_ELEMENTS
        }
        logger.debug("returning %d small tensors whole", len(self.raw))
        per_sample = set(self.plan.per_sample_tensors)
        buffered = [t for t in requested if t in self.raw and t not in per_sample]
        self.small_stats = SmallTensorStats(buffered, self.plan.histogram_tensors)

    def _build(self) -> None:
        # Pending blocks have the old session's layout, so they are reduced before it changes.
        self._reduce_pending()
        self._build_session()
        per_sample = set(self.plan.per_sample_tensors)
        raw_tensors = list(self.raw_outputs)
        self.buffered = [t for t in raw_tensors if t not in per_sample]
        self.buffered_positions = [i for i, t in enumerate(raw_tensors) if t not in per_sample]
        self.per_sample_positions = {t: i for i, t in enumerate(raw_tensors) if t in per_sample}

    def _build_session(self) -> None:
        # Release the previous session first, so two sessions never hold the weights at once.
        self.session = None
        plan = self.plan
        stats_model, self.outputs, self.raw_outputs, self.peak_outputs = graph.build_stats_model(
            plan.model,
            plan.histogram_tensors,
            plan.min_max_tensors,
            self.masked,
            plan.types,
            self.raw,
            plan.peak_ranks,
            self.pieces,
        )
        source = model_source(stats_model, plan.folder)
        del stats_model
        options = session_options()
        if plan.data_folder is not None:
            options.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", plan.data_folder
            )
        options.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(source, options, providers=list(plan.providers))
        self.output_names = [name for o in self.outputs for name in o.names()]
        self.raw_start = len(self.output_names)
        self.output_names += list(self.raw_outputs.values())
        self.output_names += list(self.peak_outputs.values())

    def run(self, sample: Mapping[str, np.ndarray]) -> dict[str, TensorCollector]:
        """Run one sample and return statistics of the tensors that are ready.

        Reduced tensors, per-sample tensors and channel peaks are always ready. Small
        tensors returned whole wait in a buffer, go into running statistics when it is
        full, and come back, covering all samples, from `flush`.
        """
        if self.session is None:
            self._choose_raw(sample)
            self._build()
        stats, unmasked, raw_arrays, peaks_by_tensor = self._run_once(sample)
        if unmasked:
            logger.debug("leaving NaN and inf out of %d more tensors", len(unmasked))
            self.masked |= unmasked
            self._build()
            stats, _, raw_arrays, peaks_by_tensor = self._run_once(sample)

        now = {t: raw_arrays[i] for t, i in self.per_sample_positions.items()}
        stats.update(self._reduce_whole(now))
        sizes = np.array([array.size for array in raw_arrays], np.int64)
        if self.buffered:
            parts = raw_arrays
            if len(self.buffered) < len(raw_arrays):
                parts = [raw_arrays[i] for i in self.buffered_positions]
            block = self._copy_to_buffer(parts, int(sizes.sum()))
            self.pending_blocks.append(block)
            self.pending_sizes.append(sizes[self.buffered_positions])
        full = self.buffer_used >= RAW_BUFFER_ELEMENTS
        if full or len(self.pending_blocks) >= RAW_BUFFER_SAMPLES:
            self._reduce_pending()

        for tensor, peaks in peaks_by_tensor.items():
            collector = stats.get(tensor, TensorCollector())
            stats[tensor] = attrs.evolve(collector, channel_peaks=ChannelPeaks().update(peaks))

        grown_positions = np.flatnonzero(sizes > RAW_MAX_ELEMENTS)
        if grown_positions.size:
            raw_tensors = list(self.raw_outputs)
            grown = {raw_tensors[i] for i in grown_positions}
            logger.debug("reducing %d grown tensors in the graph from now on", len(grown))
            self.raw -= grown
            self._build()
        return stats

    def _copy_to_buffer(self, parts: list[np.ndarray], size: int) -> np.ndarray:
        """Copy the flat values of `parts` into the next `size` elements of the buffer.

        A copy, because onnxruntime's outputs are views of memory in its arena, and keeping
        them kept arena chunks in use during later runs, so the arena grew. On PP-OCRv4
        det, the MinMax peak of 500 samples of 256x320 was 12 % above that of 10 samples
        without a copy, and 2 % above with it (onnxruntime 1.32, 2-core x86_64). The
        buffer is reused after each `_reduce_pending`, because a new 2 MiB array per
        sample cost 1.5 ms in page faults, and a reused one 0.4 ms.
        """
        if self.buffer_used + size > self.buffer.size:
            self._reduce_pending()
            if size > self.buffer.size:
                self.buffer = np.empty(max(size, RAW_BUFFER_ELEMENTS), np.float32)
        block = self.buffer[self.buffer_used : self.buffer_used + size]
        np.concatenate(parts, axis=None, out=block, casting="unsafe")
        self.buffer_used += size
        return block

    def _reduce_pending(self) -> None:
        blocks, sizes = self.pending_blocks, self.pending_sizes
        self.pending_blocks, self.pending_sizes = [], []
        self.small_stats.update_blocks(blocks, sizes, self.buffered)
        self.buffer_used = 0

    def flush(self) -> dict[str, TensorCollector]:
        """Return the statistics of the small tensors over the samples since the last flush."""
        self._reduce_pending()
        small_stats = self.small_stats
        self.small_stats = SmallTensorStats(small_stats.tensors, self.plan.histogram_tensors)
        result = {}
        for tensor, (min_max, histogram) in zip(
            small_stats.tensors, small_stats.results(), strict=True
        ):
            if min_max.count or min_max.nonfinite:
                result[tensor] = TensorCollector(min_max, None, histogram)
        return result

    def _reduce_whole(self, arrays: Mapping[str, np.ndarray]) -> dict[str, TensorCollector]:
        histogram_tensors = set(self.plan.histogram_tensors)
        wanted = [t in histogram_tensors for t in arrays]
        reduced = batch_stats(list(arrays.values()), wanted)
        return {
            tensor: TensorCollector(min_max, None, histogram)
            for tensor, (min_max, histogram) in zip(arrays, reduced, strict=True)
        }

    def _run_once(
        self, sample: Mapping[str, np.ndarray]
    ) -> tuple[dict[str, TensorCollector], set[str], list[np.ndarray], dict[str, np.ndarray]]:
        """Return reduced tensors' statistics, tensors to mask, raw tensors, channel peaks.

        The raw tensors come in the order of `raw_outputs`.
        """
        assert self.session is not None
        fetched = self.session.run(self.output_names, sample)
        values = dict(zip(self.output_names, fetched, strict=True))
        result, unmasked = {}, set()
        raw_arrays = fetched[self.raw_start : self.raw_start + len(self.raw_outputs)]
        peaks = {tensor: values[name] for tensor, name in self.peak_outputs.items()}
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
                assert outputs.exponent is not None and outputs.first_bin is not None
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
        return result, unmasked, raw_arrays, peaks

