"""Per-channel peaks: the maximum |x| of each slice along a tensor's last axis.

Planner rules use them to find tensors whose range a few channels dominate, which a
per-tensor min and max cannot show. `ChannelPeakCollector` runs its own onnxruntime
session on each calibration sample as the sample passes by (see `observe`), so the
samples are still read only once. That session runs the whole float model again, which
adds one float inference per sample to calibration.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

# ReduceMax takes its axes as an input from opset 18 on, and as an attribute before.
_AXES_INPUT_OPSET = 18


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ValueError("the model imports no default-domain (ai.onnx) opset")


def build_peak_model(
    model: onnx.ModelProto, ranks: Mapping[str, int]
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """Return a copy of `model` whose outputs are the channel peaks of `ranks`' tensors.

    `ranks` maps tensor names to their rank, which must be at least 2. The second value
    maps each tensor to the name of its peak output, a float vector with one entry per
    slice of the last axis.
    """
    peak_model = onnx.ModelProto()
    peak_model.CopyFrom(model)
    graph = peak_model.graph
    del graph.output[:]
    opset = _default_opset(peak_model)
    outputs: dict[str, str] = {}
    for index, (tensor, rank) in enumerate(ranks.items()):
        absolute = f"qrewrite_channel_abs_{index}"
        peak = f"qrewrite_channel_peak_{index}"
        axes = list(range(rank - 1))
        graph.node.append(onnx.helper.make_node("Abs", [tensor], [absolute]))
        if opset >= _AXES_INPUT_OPSET:
            axes_name = f"qrewrite_channel_axes_{index}"
            graph.initializer.append(
                onnx.numpy_helper.from_array(np.asarray(axes, dtype=np.int64), axes_name)
            )
            graph.node.append(
                onnx.helper.make_node("ReduceMax", [absolute, axes_name], [peak], keepdims=0)
            )
        else:
            graph.node.append(
                onnx.helper.make_node("ReduceMax", [absolute], [peak], axes=axes, keepdims=0)
            )
        graph.output.append(onnx.helper.make_tensor_value_info(peak, onnx.TensorProto.FLOAT, None))
        outputs[tensor] = peak
    return peak_model, outputs


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    # Reduce each tensor right after its producer so it can be freed at once. The
    # default order keeps most activations alive: 2.4 GB against 0.5 GB on PP-OCRv4 det
    # with two 736x736 images.
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    # Give the memory back after each run, so this session and the statistics session
    # do not both hold their peak at once.
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3
    return options


class ChannelPeakCollector:
    """Running channel peaks of float tensors over calibration samples.

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
        values = {value.name: value for node in graph for value in node.outputs}
        values.update({value.name: value for value in graph.inputs})
        ranks = {}
        for tensor in tensors:
            value = values.get(tensor)
            if value is not None and value.shape is not None and len(value.shape) >= 2:
                ranks[tensor] = len(value.shape)
        self._peaks: dict[str, np.ndarray] = {}
        self._varying: set[str] = set()
        self._session: ort.InferenceSession | None = None
        self._outputs: dict[str, str] = {}
        if ranks:
            peak_model, self._outputs = build_peak_model(model, ranks)
            self._session = ort.InferenceSession(
                peak_model.SerializeToString(), _session_options(), providers=list(providers)
            )

    def update(self, sample: Mapping[str, np.ndarray]) -> None:
        """Run one sample and merge its channel peaks into the running maximum."""
        if self._session is None:
            return
        names = list(self._outputs)
        arrays = self._session.run([self._outputs[name] for name in names], dict(sample))
        for tensor, peaks in zip(names, arrays, strict=True):
            if tensor in self._varying:
                continue
            previous = self._peaks.get(tensor)
            if previous is None:
                self._peaks[tensor] = np.asarray(peaks, dtype=np.float32)
            elif previous.shape != peaks.shape:
                self._varying.add(tensor)
                del self._peaks[tensor]
            else:
                self._peaks[tensor] = np.maximum(previous, peaks)

    def observe(
        self, samples: Iterable[Mapping[str, np.ndarray]]
    ) -> Iterator[Mapping[str, np.ndarray]]:
        """Yield `samples` unchanged, collecting the peaks of each one on the way."""
        for sample in samples:
            self.update(sample)
            yield sample

    def peaks(self) -> dict[str, np.ndarray]:
        """Return tensor name -> channel peaks, for the tensors with a fixed last axis."""
        return dict(self._peaks)
