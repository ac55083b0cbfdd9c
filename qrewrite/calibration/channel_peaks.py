"""Per-channel peaks: the maximum |x| of each slice along a tensor's last axis.

Planner rules use them to find tensors whose range a few channels dominate, which a
per-tensor min and max cannot show. Calibration collects them in the same onnxruntime
run as the ranges (see `engine.calibrate_with_channel_peaks`), so they cost no extra
inference. `ChannelPeakCollector` collects them on their own, with a session of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from qrewrite.calibration import graph as stats_graph
from qrewrite.calibration.collectors import ChannelPeaks
from qrewrite.calibration.runner import session_options


def channel_peak_ranks(graph: ir.Graph, tensors: Iterable[str]) -> dict[str, int]:
    """Map each of `tensors` whose shape in `graph` has rank 2 or more to that rank.

    Tensors that `graph` does not produce or take as input, or whose shape is unknown,
    are left out.
    """
    values = {value.name: value for node in graph for value in node.outputs}
    values.update({value.name: value for value in graph.inputs})
    ranks = {}
    for tensor in tensors:
        value = values.get(tensor)
        if value is not None and value.shape is not None and len(value.shape) >= 2:
            ranks[tensor] = len(value.shape)
    return ranks


class ChannelPeakCollector:
    """Running channel peaks of float tensors over samples, in a session of its own.

    A tensor whose last axis changes length between samples (a sequence axis, for
    example) has no per-channel peak and is left out of `peaks()`.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        graph: ir.Graph,
        tensors: Iterable[str],
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        ranks = channel_peak_ranks(graph, tensors)
        self._peaks: dict[str, ChannelPeaks] = {tensor: ChannelPeaks() for tensor in ranks}
        self._session: ort.InferenceSession | None = None
        self._outputs: dict[str, str] = {}
        if ranks:
            peak_model, _, _, self._outputs = stats_graph.build_stats_model(
                model, (), (), peak_ranks=ranks
            )
            self._session = ort.InferenceSession(
                peak_model.SerializeToString(), session_options(), providers=list(providers)
            )

    def update(self, sample: Mapping[str, np.ndarray]) -> None:
        """Run one sample and merge its channel peaks into the running maximum."""
        if self._session is None:
            return
        names = list(self._outputs)
        arrays = self._session.run([self._outputs[name] for name in names], dict(sample))
        for tensor, peaks in zip(names, arrays, strict=True):
            self._peaks[tensor] = self._peaks[tensor].update(peaks)

    def observe(
        self, samples: Iterable[Mapping[str, np.ndarray]]
    ) -> Iterator[Mapping[str, np.ndarray]]:
        """Yield `samples` unchanged, collecting the peaks of each one on the way."""
        for sample in samples:
            self.update(sample)
            yield sample

    def peaks(self) -> dict[str, np.ndarray]:
        """Return tensor name -> channel peaks, for the tensors with a fixed last axis."""
        return {
            tensor: collected.peaks
            for tensor, collected in self._peaks.items()
            if collected.peaks is not None
        }
