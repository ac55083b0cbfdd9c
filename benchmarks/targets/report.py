"""Markdown tables of the targets benchmark, with each value marked met or not met."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.targets.variants import DESCRIPTIONS, QREWRITE_CPU, VARIANTS

# Targets of the quantized / float ratios. Every model and setting is marked against them.
LATENCY_TARGET = 1.0
# The recommended CPU config on PP-OCRv4 det, whose time is in full convolutions.
DET_CPU_LATENCY_TARGET = 0.7
QUANTIZE_TIME_TARGET = 3.0
PEAK_MEMORY_TARGET = 1.5


@dataclass
class ModelResult:
    """Everything measured for one model. A value that is missing has its error in `errors`."""

    key: str
    name: str
    calibration_text: str
    evaluation_text: str
    latency_input: str
    targets: list[tuple[str, str]] = field(default_factory=list)
    reference: str = ""
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    float_latency: float | None = None
    latency: dict[str, float] = field(default_factory=dict)
    float_inference_seconds: float | None = None
    float_peak_bytes: int | None = None
    quantize_seconds: dict[str, float] = field(default_factory=dict)
    quantize_peak_bytes: dict[str, int] = field(default_factory=dict)
    met: dict[tuple[str, str], bool] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def met_text(is_met: bool) -> str:
    return "met" if is_met else "not met"


def number(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def latency_target(key: str, variant: str) -> float:
    if key == "det" and variant == QREWRITE_CPU:
        return DET_CPU_LATENCY_TARGET
    return LATENCY_TARGET


def seconds(value: float) -> str:
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.1f} s"


def megabytes(size: float) -> str:
    return f"{size / 1e6:.0f} MB"


def ratio_cell(
    measured: float | None,
    reference: float | None,
    bound: float,
    unit: Callable[[float], str],
) -> str:
    """Format measured / reference, the measured value, and whether the ratio is ≤ bound."""
    if measured is None or reference is None or reference <= 0:
        return "failed"
    ratio = measured / reference
    return f"{ratio:.2f} ({unit(measured)}), {met_text(ratio <= bound)}"


def accuracy_table(results: list[ModelResult]) -> list[str]:
    lines = [
        "| model | metric | target | float | " + " | ".join(VARIANTS) + " |",
        "|---" * (4 + len(VARIANTS)) + "|",
    ]
    for result in results:
        for metric, target_text in result.targets:
            cells = []
            for variant in VARIANTS:
                value = result.accuracy.get(variant, {}).get(metric)
                if value is None:
                    cells.append("failed")
                else:
                    cells.append(f"{number(value)}, {met_text(result.met[(metric, variant)])}")
            lines.append(
                f"| {result.name} | {metric} | {target_text} | {result.reference} | "
                + " | ".join(cells)
                + " |"
            )
    return lines


def performance_rows(result: ModelResult) -> list[str]:
    """Return the latency, quantize time and peak memory rows of one model."""
    if result.key == "det":
        latency_bound = f"≤ {DET_CPU_LATENCY_TARGET} (CPU config), ≤ {LATENCY_TARGET}"
    else:
        latency_bound = f"≤ {LATENCY_TARGET}"
    rows = [
        (
            "1-thread latency",
            latency_bound,
            result.float_latency,
            result.latency,
            lambda variant: latency_target(result.key, variant),
            seconds,
        ),
        (
            "quantize time / float inference",
            f"≤ {QUANTIZE_TIME_TARGET:g}",
            result.float_inference_seconds,
            result.quantize_seconds,
            lambda _: QUANTIZE_TIME_TARGET,
            seconds,
        ),
        (
            "peak memory / float inference",
            f"≤ {PEAK_MEMORY_TARGET:g}",
            result.float_peak_bytes,
            result.quantize_peak_bytes,
            lambda _: PEAK_MEMORY_TARGET,
            megabytes,
        ),
    ]
    lines = []
    for measure, bound_text, reference, measured, bound, unit in rows:
        cells = [
            ratio_cell(measured.get(variant), reference, bound(variant), unit)
            for variant in VARIANTS
        ]
        reference_text = "failed" if reference is None else unit(reference)
        lines.append(
            f"| {result.name} | {measure} | {bound_text} | {reference_text} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def performance_table(results: list[ModelResult]) -> list[str]:
    lines = [
        "| model | quantized / float | target | float | " + " | ".join(VARIANTS) + " |",
        "|---" * (4 + len(VARIANTS)) + "|",
    ]
    for result in results:
        lines += performance_rows(result)
    return lines


def inputs_table(results: list[ModelResult]) -> list[str]:
    lines = [
        "| model | calibration (every setting) | accuracy evaluation | latency input |",
        "|---|---|---|---|",
    ]
    for result in results:
        lines.append(
            f"| {result.name} | {result.calibration_text} | {result.evaluation_text} "
            f"| {result.latency_input} |"
        )
    return lines


def format_markdown(
    results: list[ModelResult],
    skipped: list[str],
    command: str,
    total_seconds: float,
    latency_runs: int,
    float_process_runs: int,
    load_averages: tuple[float, float],
    cpu_count: int,
) -> str:
    """Return the "targets" section of docs/benchmarks.md."""
    lines = [
        "## Targets of the quantizer defaults",
        "",
        "Each real model is quantized with four settings, all calibrated on the same feeds:",
        "",
        *[f"- {variant}: {DESCRIPTIONS[variant]}." for variant in VARIANTS],
        "",
        "Accuracy compares each quantized model with the float model on held-out inputs.",
        "MiniLM: mean cosine between float and quantized sentence embeddings, and the",
        "fraction of sentences whose nearest other sentence (by cosine) is the same under",
        "both; the second retrieval row leaves out the sentences whose two nearest",
        "neighbours are within 0.01 cosine of each other in the float model, since any",
        "change to the embeddings can swap a tie. Silero VAD: fraction of 32 ms frames",
        "where both put the speech probability",
        "on the same side of 0.5. PP-OCR: the whole rapidocr-onnxruntime 1.4.4 pipeline",
        "runs with one model replaced by its quantized copy. The character error rate is",
        "the edit distance to the text that the float pipeline reads, over that text's",
        "length (line breaks count). A cell reads `value, met` or `value, not met`",
        "against the row's target.",
        "",
        *accuracy_table(results),
        "",
        f"Latency is the median of {latency_runs} runs after 2 warm-up runs, one thread",
        "(`intra_op_num_threads=1`), runs interleaved across the models. Quantize time",
        "and peak memory come from fresh processes over the calibration feeds: the",
        "quantize call (calibration and saving included) against creating a float",
        "session and running every calibration feed, both with default threads and",
        "without imports. The float values are the median of",
        f"{float_process_runs} processes, and each quantizer runs once. Peak memory is",
        "the process's VmHWM. A cell reads `ratio (measured value), met`.",
        "",
        *performance_table(results),
        "",
        *inputs_table(results),
    ]
    errors = [f"- {result.name}: {error}" for result in results for error in result.errors]
    if errors or skipped:
        lines += ["", "Failures and skipped models:", "", *errors, *[f"- {s}" for s in skipped]]
    lines += [
        "",
        f"Command: `{command}` (whole run {total_seconds:.0f} s on {cpu_count} CPU cores).",
        f"The 1-minute load average was {load_averages[0]:.1f} at the start and "
        f"{load_averages[1]:.1f} at the end. A load above the core count means other "
        "processes shared the machine, which slows every measurement and adds noise.",
    ]
    return "\n".join(lines)
