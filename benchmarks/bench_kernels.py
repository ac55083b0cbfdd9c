"""Time onnxruntime's quantized CPU kernels against the float op inside a quantized graph.

Run from the repository root:

    python -m benchmarks.bench_kernels

Each case is a one-op float model that qrewrite quantizes to QDQ (uint8 asymmetric or
int8 symmetric activations, int8 symmetric per-channel weights). The same QDQ model then
runs in two onnxruntime sessions on one thread:

- fused: the default session, whose graph optimizer turns DQ -> op -> Q into the integer
  kernel (QLinearConv, QLinearAdd, a uint8 MaxPool, ...);
- unfused: the same model with float weights, in a session with
  `session.disable_quant_qdq=1`, so the op runs in float between the DequantizeLinear
  of its input and the QuantizeLinear of its output. Float weights let onnxruntime
  prepack them as in a float model (a weight behind a DequantizeLinear is not constant
  folded, so it would be dequantized on every run).

Both sessions pay the same quantization of the graph input and dequantization of the
graph output, so "fused / unfused" is the cost of the integer kernel against leaving
this one op float inside an otherwise quantized graph. Above 1.0 the integer kernel is
the slower choice. "fused / float" compares with the float model for reference. The
KeepSlowOpsFloat planner rule encodes the cases above 1.0; the results replace the
"kernels" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from benchmarks._report import write_section
from qrewrite import Int8Spec, ModelQuantizer, QConfig, QLayerConfig, QuantGranularity, UInt8Spec

LOGGER = logging.getLogger("bench_kernels")
OPSET = 13
# Integer kernels that onnxruntime's QDQ fusion writes in place of a float op.
INTEGER_OP_TYPES = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "MatMulInteger",
        "QLinearAdd",
        "QLinearMul",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "QLinearGlobalAveragePool",
        "QLinearAveragePool",
        "QLinearConcat",
        "QLinearSoftmax",
        "QLinearConvTranspose",
    }
)


@dataclass(frozen=True)
class KernelCase:
    """One op in one shape: a builder of its float model and the shapes of its inputs."""

    name: str
    op_type: str
    build: Callable[[], onnx.ModelProto]
    input_shapes: dict[str, tuple[int, ...]]


@dataclass
class KernelResult:
    """Median times in ms and the op that ran in the fused session."""

    case: str
    activation: str
    float_ms: float
    fused_ms: float
    unfused_ms: float
    fused_ops: str


def _weight(rng: np.random.Generator, shape: tuple[int, ...], name: str) -> TensorProto:
    fan_in = int(np.prod(shape[1:])) or 1
    data = rng.normal(0.0, 1.0 / np.sqrt(fan_in), size=shape).astype(np.float32)
    return numpy_helper.from_array(data, name)


def _model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, tuple[int, ...]],
    output_shape: tuple[int, ...],
    initializers: list[TensorProto] = (),  # type: ignore[assignment]
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "kernel",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        initializer=list(initializers),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def conv_case(
    name: str,
    channels: int,
    size: int | tuple[int, int],
    kernel: int,
    *,
    group: int = 1,
    out_channels: int = 0,
    batch: int = 1,
) -> KernelCase:
    out_channels = out_channels or channels
    height, width = (size, size) if isinstance(size, int) else size
    shape = (batch, channels, height, width)

    def build() -> onnx.ModelProto:
        rng = np.random.default_rng(0)
        weight = _weight(rng, (out_channels, channels // group, kernel, kernel), "w")
        bias = numpy_helper.from_array(rng.normal(size=out_channels).astype(np.float32), "b")
        pad = kernel // 2
        node = helper.make_node(
            "Conv", ["x", "w", "b"], ["y"], group=group, kernel_shape=[kernel, kernel],
            pads=[pad] * 4,
        )
        return _model([node], {"x": shape}, (batch, out_channels, height, width), [weight, bias])

    return KernelCase(name, "Conv", build, {"x": shape})


def unary_case(
    name: str,
    op_type: str,
    shape: tuple[int, ...],
    output_shape: tuple[int, ...] | None = None,
    **attributes: object,
) -> KernelCase:
    def build() -> onnx.ModelProto:
        node = helper.make_node(op_type, ["x"], ["y"], **attributes)
        return _model([node], {"x": shape}, output_shape or shape)

    return KernelCase(name, op_type, build, {"x": shape})


def binary_case(
    name: str, op_type: str, shape: tuple[int, ...], other_shape: tuple[int, ...]
) -> KernelCase:
    def build() -> onnx.ModelProto:
        node = helper.make_node(op_type, ["x", "z"], ["y"])
        return _model([node], {"x": shape, "z": other_shape}, shape)

    return KernelCase(name, op_type, build, {"x": shape, "z": other_shape})


def global_pool_case(name: str, shape: tuple[int, ...]) -> KernelCase:
    def build() -> onnx.ModelProto:
        node = helper.make_node("GlobalAveragePool", ["x"], ["y"])
        return _model([node], {"x": shape}, (*shape[:2], 1, 1))

    return KernelCase(name, "GlobalAveragePool", build, {"x": shape})


def matmul_case(name: str, rows: int, inner: int, columns: int) -> KernelCase:
    shape = (1, rows, inner)

    def build() -> onnx.ModelProto:
        weight = _weight(np.random.default_rng(0), (inner, columns), "w")
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        return _model([node], {"x": shape}, (1, rows, columns), [weight])

    return KernelCase(name, "MatMul", build, {"x": shape})


def cases() -> list[KernelCase]:
    """Return the op cases: shapes from the middle of the CNNs and transformers measured."""
    feature = (1, 64, 56, 56)
    return [
        conv_case("Conv 3x3, 64->64, 56x56", 64, 56, 3),
        conv_case("Conv 1x1, 64->64, 56x56", 64, 56, 1),
        conv_case("Conv 1x1, 16->16, 56x56", 16, 56, 1),
        conv_case("Conv 3x3 depthwise, 64 ch, 56x56", 64, 56, 3, group=64),
        conv_case("Conv 5x5 depthwise, 64 ch, 56x56", 64, 56, 5, group=64),
        conv_case("Conv 3x3 depthwise, 256 ch, 14x14", 256, 14, 3, group=256),
        conv_case("Conv 5x5 depthwise, batch 4, 88 ch, 12x48", 88, (12, 48), 5, group=88, batch=4),
        conv_case("Conv 3x3 depthwise, batch 4, 16 ch, 24x96", 16, (24, 96), 3, group=16, batch=4),
        unary_case("MaxPool 3x3 stride 1, 64 ch, 56x56", "MaxPool", feature,
                   kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        unary_case("MaxPool 2x2 stride 2, 64 ch, 56x56", "MaxPool", feature, (1, 64, 28, 28),
                   kernel_shape=[2, 2], strides=[2, 2]),
        unary_case("AveragePool 3x3 stride 1, 64 ch, 56x56", "AveragePool", feature,
                   kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        global_pool_case("GlobalAveragePool, 64 ch, 56x56", feature),
        binary_case("Add, same shape, 64 ch, 56x56", "Add", feature, feature),
        binary_case("Add, per-channel broadcast, 64 ch, 56x56", "Add", feature, (1, 64, 1, 1)),
        binary_case("Mul, same shape, 64 ch, 56x56", "Mul", feature, feature),
        binary_case("Mul, per-channel broadcast, 64 ch, 56x56", "Mul", feature, (1, 64, 1, 1)),
        binary_case(
            "Mul, per-channel broadcast, batch 4, 8 ch, 24x96", "Mul", (4, 8, 24, 96), (4, 8, 1, 1)
        ),
        binary_case(
            "Add, per-channel broadcast, batch 4, 8 ch, 24x96", "Add", (4, 8, 24, 96), (4, 8, 1, 1)
        ),
        unary_case("Sigmoid, 64 ch, 56x56", "Sigmoid", feature),
        unary_case("HardSigmoid, 64 ch, 56x56", "HardSigmoid", feature),
        unary_case("Relu, 64 ch, 56x56", "Relu", feature),
        matmul_case("MatMul 128x384 by 384x384", 128, 384, 384),
        matmul_case("MatMul 128x384 by 384x1536", 128, 384, 1536),
    ]


ACTIVATION_SPECS = {
    "uint8": UInt8Spec(),
    "int8": Int8Spec(),
}


class _Reader:
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def random_feed(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}


def quantize_case(case: KernelCase, activation: str, *, weights: bool) -> bytes:
    """Quantize the case's model with qrewrite, with no planner rule keeping ops float.

    With `weights=False` the weights stay float constants, which onnxruntime prepacks
    like in the float model.
    """
    weight_spec = Int8Spec(quant_granularity=QuantGranularity.Channel) if weights else None
    config = QConfig(
        global_config=QLayerConfig(activation=ACTIVATION_SPECS[activation], weight=weight_spec),
        PrintSummary=False,
        LogSeverityLevel=3,
        ForceQuantizeNoInputCheck=True,
        KeepSlowOpsFloat=False,
    )
    feeds = [random_feed(case.input_shapes, seed) for seed in range(4)]
    proto = ModelQuantizer(config).quantize_model(case.build(), None, _Reader(feeds))
    return proto.SerializeToString()


def make_session(
    model: bytes, *, fuse: bool, optimized_path: str | None = None
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not fuse:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    if optimized_path is not None:
        options.optimized_model_filepath = optimized_path
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def executed_ops(model: bytes, *, fuse: bool) -> Counter[str]:
    """Op types of the graph that onnxruntime runs after its optimizations."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "optimized.onnx")
        make_session(model, fuse=fuse, optimized_path=path)
        return Counter(node.op_type for node in onnx.load(path).graph.node)


def interleaved_medians(
    sessions: list[ort.InferenceSession], feed: dict[str, np.ndarray], seconds: float
) -> list[float]:
    """Run the sessions in turn until `seconds` pass; return each one's median in ms.

    Interleaving spreads the load of other processes evenly over the sessions.
    """
    for session in sessions:
        for _ in range(3):
            session.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times[0]) < 20:
        for session, samples in zip(sessions, times, strict=True):
            begin = time.perf_counter()
            session.run(None, feed)
            samples.append(time.perf_counter() - begin)
    return [float(np.median(samples)) * 1000.0 for samples in times]


def measure(case: KernelCase, activation: str, seconds: float) -> KernelResult:
    float_model = case.build().SerializeToString()
    quantized = quantize_case(case, activation, weights=True)
    float_weights = quantize_case(case, activation, weights=False)
    sessions = [
        make_session(float_model, fuse=True),
        make_session(quantized, fuse=True),
        make_session(float_weights, fuse=False),
    ]
    feed = random_feed(case.input_shapes, seed=100)
    float_ms, fused_ms, unfused_ms = interleaved_medians(sessions, feed, seconds)
    ops = executed_ops(quantized, fuse=True)
    kernel = sorted(op for op in ops if op in INTEGER_OP_TYPES or op == case.op_type)
    return KernelResult(case.name, activation, float_ms, fused_ms, unfused_ms, ", ".join(kernel))


@dataclass
class ContextResult:
    """Median times in ms of a MaxPool between two 1x1 Convs, integer and float."""

    case: str
    float_ms: float
    integer_ms: float
    float_pool_ms: float
    integer_op: str


def conv_pool_conv(channels: int, size: int) -> onnx.ModelProto:
    """1x1 Conv -> MaxPool 3x3 stride 2 -> 1x1 Conv, the stem pattern of many CNNs."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[1, 1]),
        helper.make_node(
            "MaxPool", ["c1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
            name="pool",
        ),
        helper.make_node("Conv", ["p1", "w2"], ["y"], kernel_shape=[1, 1]),
    ]
    half = (size + 1) // 2
    weights = [_weight(rng, (channels, channels, 1, 1), name) for name in ("w1", "w2")]
    return _model(nodes, {"x": (1, channels, size, size)}, (1, channels, half, half), weights)


def measure_between_convs(channels: int, size: int, seconds: float) -> ContextResult:
    """Time a MaxPool between QLinearConvs as an integer op and excluded from quantization.

    Excluded, the MaxPool's input and output get separate quantizations, so it runs in
    float between a DequantizeLinear and a QuantizeLinear.
    """
    model = conv_pool_conv(channels, size)
    shapes = {"x": (1, channels, size, size)}
    feeds = [random_feed(shapes, seed) for seed in range(4)]
    common: dict[str, object] = {"PrintSummary": False, "LogSeverityLevel": 3}
    layer = QLayerConfig(
        activation=UInt8Spec(), weight=Int8Spec(quant_granularity=QuantGranularity.Channel)
    )
    integer = ModelQuantizer(
        QConfig(global_config=layer, KeepSlowOpsFloat=False, **common)
    ).quantize_model(model, None, _Reader(feeds))
    float_pool = ModelQuantizer(
        QConfig(global_config=layer, exclude=["pool"], KeepSlowOpsFloat=False, **common)
    ).quantize_model(model, None, _Reader(feeds))
    sessions = [
        make_session(model.SerializeToString(), fuse=True),
        make_session(integer.SerializeToString(), fuse=True),
        make_session(float_pool.SerializeToString(), fuse=True),
    ]
    float_ms, integer_ms, float_pool_ms = interleaved_medians(sessions, feeds[0], seconds)
    ops = executed_ops(integer.SerializeToString(), fuse=True)
    pool_ops = ", ".join(sorted(op for op in ops if "MaxPool" in op))
    name = f"1x1 Conv -> MaxPool 3x3 stride 2 -> 1x1 Conv, {channels} ch, {size}x{size}"
    return ContextResult(name, float_ms, integer_ms, float_pool_ms, pool_ops)


CONTEXT_SHAPES = ((16, 48), (64, 112), (200, 12))


@dataclass(frozen=True)
class RealModel:
    """A real model file with its calibration feeds and the feed that is timed."""

    name: str
    path: str
    calibration: list[dict[str, np.ndarray]]
    timed: dict[str, np.ndarray]


def vad_feed(seed: int, frames: int = 64) -> dict[str, np.ndarray]:
    """Synthetic 16 kHz audio for the Silero VAD sequence model: tone bursts and noise.

    The model's latency does not depend on what the audio contains, and its input is
    [frames, 576]: 512 new samples and 64 of context per frame.
    """
    rng = np.random.default_rng(seed)
    samples = frames * 576
    time_axis = np.arange(samples) / 16000.0
    bursts = (np.sin(2 * np.pi * 3.0 * time_axis) > 0).astype(np.float32)
    tone = 0.3 * np.sin(2 * np.pi * (180.0 + 40.0 * seed) * time_axis) * bursts
    audio = (tone + 0.02 * rng.standard_normal(samples)).astype(np.float32)
    state = np.zeros((1, 1, 128), np.float32)
    return {"input": audio.reshape(frames, 576), "h": state, "c": state.copy()}


def real_models() -> list[RealModel]:
    """PP-OCRv4 det (640x640), rec and cls (batches of 4 lines) and Silero VAD (16 kHz).

    Models whose package is not installed are left out.
    """
    models = []
    try:
        from benchmarks.real_models import inputs
        from benchmarks.real_models.models import ocr_model_path

        det = inputs.det_split(640, 640)
        rec = inputs.rec_split(8, 4)
        cls = inputs.cls_split(8, 4)
        models += [
            RealModel("PP-OCRv4 det, 640x640", str(ocr_model_path("ppocr-det")),
                      det.calibration[:4], det.evaluation[0]),
            RealModel("PP-OCRv4 rec, 4 lines", str(ocr_model_path("ppocr-rec")),
                      rec.calibration, rec.evaluation[0]),
            RealModel("PP-OCR cls, 4 lines", str(ocr_model_path("ppocr-cls")),
                      cls.calibration, cls.evaluation[0]),
        ]
    except (ModuleNotFoundError, FileNotFoundError) as error:
        LOGGER.warning("PP-OCR models skipped: %s", error)
    try:
        from importlib import resources

        vad_path = resources.files("silero_vad").joinpath("data", "silero_vad_16k_sequence.onnx")
        models.append(
            RealModel("Silero VAD 16k sequence, 64 frames", str(vad_path),
                      [vad_feed(seed) for seed in range(4)], vad_feed(10))
        )
    except ModuleNotFoundError as error:
        LOGGER.warning("Silero VAD skipped: %s", error)
    return models


# Configs compared on the real models: the command line's types before this benchmark's
# rules existed, uint8 activations without the rules, and the recommended CPU config.
REAL_MODEL_CONFIGS: dict[str, dict[str, object]] = {
    "int8 activations, rules off": {
        "global_config": QLayerConfig(activation=Int8Spec(), weight=Int8Spec()),
        "FoldRelu": False,
        "KeepSlowOpsFloat": False,
    },
    "uint8 activations, rules off": {"FoldRelu": False, "KeepSlowOpsFloat": False},
    "recommended_config()": {},
}


def measure_real_model(model: RealModel, seconds: float) -> dict[str, float]:
    """Return quantized / float latency, the median of interleaved runs, per config."""
    from qrewrite import recommended_config

    quantized = {}
    for label, overrides in REAL_MODEL_CONFIGS.items():
        config = recommended_config(PrintSummary=False, LogSeverityLevel=3, **overrides)
        proto = ModelQuantizer(config).quantize_model(model.path, None, _Reader(model.calibration))
        quantized[label] = proto.SerializeToString()
    with open(model.path, "rb") as file:
        float_bytes = file.read()
    sessions = [make_session(float_bytes, fuse=True)]
    sessions += [make_session(data, fuse=True) for data in quantized.values()]
    medians = interleaved_medians(sessions, model.timed, seconds)
    return {label: medians[i + 1] / medians[0] for i, label in enumerate(quantized)}


def format_real_markdown(rows: dict[str, dict[str, float]]) -> str:
    labels = list(REAL_MODEL_CONFIGS)
    lines = [
        "One-thread latency of real models, quantized / float (median of interleaved runs;",
        "weights int8 symmetric per channel in every config; \"rules\" are FoldRelu and",
        "KeepSlowOpsFloat):",
        "",
        "| model | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for name, ratios in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{ratios[label]:.2f}" for label in labels) + " |")
    return "\n".join(lines)


def format_markdown(results: list[KernelResult], seconds: float) -> str:
    lines = [
        "## Quantized CPU kernels against float",
        "",
        "`python -m benchmarks.bench_kernels` quantizes one-op models with qrewrite (weights",
        "int8 symmetric per channel) and times each in onnxruntime on one thread, as the",
        f"median of interleaved runs over {seconds:g} s per case. \"fused\" is the default",
        "session, which runs the integer kernel; \"unfused\" runs the same model with float",
        "weights and `session.disable_quant_qdq=1`, so the op runs in float between the",
        "DequantizeLinear of its input and the QuantizeLinear of its output. Both pay the",
        "same graph-input quantization and graph-output dequantization. A fused / unfused",
        "ratio above 1.0 means the integer kernel is slower than leaving that op float",
        "inside a quantized graph. Other processes shared the machine, so ratios within",
        "about 10 % of 1.0 are not a clear result.",
        "",
        "| op | activations | kernel run | float (ms) | fused (ms) | unfused (ms) "
        "| fused / unfused | fused / float |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        lines.append(
            f"| {result.case} | {result.activation} | {result.fused_ops} "
            f"| {result.float_ms:.3f} | {result.fused_ms:.3f} | {result.unfused_ms:.3f} "
            f"| {result.fused_ms / result.unfused_ms:.2f} "
            f"| {result.fused_ms / result.float_ms:.2f} |"
        )
    return "\n".join(lines)


def format_context_markdown(results: list[ContextResult]) -> str:
    lines = [
        "Between two QLinearConvs onnxruntime runs a uint8 MaxPool in NHWC layout",
        "(NhwcMaxPool), which the one-op models above never reach. \"float pool\" excludes",
        "the MaxPool from quantization, so it runs in float between a DequantizeLinear and",
        "a QuantizeLinear:",
        "",
        "| model | MaxPool run | float model (ms) | integer pool (ms) | float pool (ms) "
        "| integer / float pool |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        lines.append(
            f"| {result.case} | {result.integer_op} | {result.float_ms:.3f} "
            f"| {result.integer_ms:.3f} | {result.float_pool_ms:.3f} "
            f"| {result.integer_ms / result.float_pool_ms:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=2.0,
        help="time spent on each case and activation type, in seconds (default: 2)",
    )
    parser.add_argument(
        "--filter", default="", help="run only the cases whose name contains this text"
    )
    parser.add_argument(
        "--real-model-seconds", type=float, default=8.0,
        help="time spent on each real model, in seconds; 0 skips them (default: 8)",
    )
    parser.add_argument(
        "--no-write", action="store_true",
        help="print the results but leave docs/benchmarks.md unchanged",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    results = []
    for case in cases():
        if args.filter not in case.name:
            continue
        for activation in ACTIVATION_SPECS:
            result = measure(case, activation, args.seconds)
            LOGGER.warning(
                "%s %s: fused/unfused %.2f", case.name, activation,
                result.fused_ms / result.unfused_ms,
            )
            results.append(result)
    markdown = format_markdown(results, args.seconds)
    if "MaxPool" in args.filter or not args.filter:
        context = [measure_between_convs(c, size, args.seconds) for c, size in CONTEXT_SHAPES]
        markdown += "\n\n" + format_context_markdown(context)
    if args.real_model_seconds > 0 and not args.filter:
        rows = {
            model.name: measure_real_model(model, args.real_model_seconds)
            for model in real_models()
        }
        markdown += "\n\n" + format_real_markdown(rows)
    print(markdown)
    if not args.no_write:
        write_section("kernels", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
