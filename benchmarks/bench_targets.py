"""Measure the real-model targets of the quantizer defaults against onnxruntime.

Run from the repository root (needs the espeak-ng and sox programs for Silero VAD):

    HF_HUB_OFFLINE=1 python -m benchmarks.bench_targets

For MiniLM-L6-v2, Silero VAD and the three PP-OCR models, quantizes the float model
with qrewrite's defaults, qrewrite's recommended CPU config and two
onnxruntime.quantization.quantize_static settings, all on the same calibration feeds.
It then measures accuracy against the float model, one-thread latency, quantize time
over float inference time and peak memory over that of float inference, and replaces
the "targets" section of docs/benchmarks.md. Exported models and synthesized speech are
cached in the system temp folder, and quantized models live in a temporary folder that
is removed at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks._report import write_section
from benchmarks.targets.cases import MODEL_KEYS, TargetCase, build_case, shape_text
from benchmarks.targets.latency import median_latencies
from benchmarks.targets.memory import measure_in_subprocess, save_feeds
from benchmarks.targets.report import ModelResult, format_markdown
from benchmarks.targets.variants import VARIANTS

LOGGER = logging.getLogger("bench_targets")
FLOAT = "float"
FLOAT_PROCESS_RUNS = 3


def short_error(error: BaseException) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line[:300]}"


def measure_processes(
    case: TargetCase, result: ModelResult, folder: Path, timeout_seconds: float
) -> dict[str, Path]:
    """Run float inference and every quantizer in fresh processes, return the outputs.

    Records times and peak memory in `result`. A quantizer that fails or times out is
    logged, recorded in `result.errors` and left out of the returned paths.
    """
    feeds_path = folder / f"{case.key}-calibration.npz"
    save_feeds(case.calibration, feeds_path)
    try:
        # Float inference is short, so one burst of load from other processes can
        # double it. The median of FLOAT_PROCESS_RUNS processes damps that.
        float_runs = [
            measure_in_subprocess(
                ["infer", str(case.model), str(feeds_path)],
                folder / f"{case.key}-float.log",
                timeout_seconds,
            )
            for _ in range(FLOAT_PROCESS_RUNS)
        ]
        result.float_inference_seconds = statistics.median(run.seconds for run in float_runs)
        result.float_peak_bytes = int(statistics.median(run.peak_rss_bytes for run in float_runs))
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        LOGGER.error("%s: float inference process failed: %s", case.name, error)
        result.errors.append(f"float inference process: {short_error(error)}")

    outputs = {}
    for index, variant in enumerate(VARIANTS):
        output = folder / f"{case.key}-variant{index}.onnx"
        LOGGER.info("%s: quantizing with %s", case.name, variant)
        try:
            measured = measure_in_subprocess(
                [
                    "quantize",
                    str(case.model),
                    str(feeds_path),
                    "--variant",
                    variant,
                    "--output",
                    str(output),
                ],
                folder / f"{case.key}-variant{index}.log",
                timeout_seconds,
            )
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            LOGGER.error("%s: %s failed: %s", case.name, variant, error)
            result.errors.append(f"{variant} quantize: {short_error(error)}")
            continue
        result.quantize_seconds[variant] = measured.seconds
        result.quantize_peak_bytes[variant] = measured.peak_rss_bytes
        outputs[variant] = output
    return outputs


def measure_accuracy(case: TargetCase, result: ModelResult, outputs: dict[str, Path]) -> None:
    """Score every quantized model against the float model and mark each target."""
    for variant, output in outputs.items():
        LOGGER.info("%s: evaluating %s", case.name, variant)
        try:
            values = case.evaluate(output)
        except Exception as error:  # a quantized model may fail to load or run
            LOGGER.error("%s: evaluating %s failed\n%s", case.name, variant, traceback.format_exc())
            result.errors.append(f"{variant} evaluation: {short_error(error)}")
            continue
        result.accuracy[variant] = values
        for target in case.targets:
            result.met[(target.metric, variant)] = target.is_met(values[target.metric])
    try:
        result.reference = case.reference()
    except Exception as error:
        LOGGER.error("%s: float evaluation failed\n%s", case.name, traceback.format_exc())
        result.errors.append(f"float evaluation: {short_error(error)}")


def measure_latency(
    case: TargetCase, result: ModelResult, outputs: dict[str, Path], runs: int
) -> None:
    LOGGER.info("%s: measuring 1-thread latency", case.name)
    latencies = median_latencies({FLOAT: case.model, **outputs}, case.latency_feed, runs)
    for name, value in latencies.items():
        if isinstance(value, str):
            result.errors.append(f"{name} latency: {value}")
        elif name == FLOAT:
            result.float_latency = value
        else:
            result.latency[name] = value


def measure_model(
    case: TargetCase, folder: Path, latency_runs: int, timeout_seconds: float
) -> ModelResult:
    result = ModelResult(
        key=case.key,
        name=case.name,
        calibration_text=case.calibration_text,
        evaluation_text=case.evaluation_text,
        latency_input=shape_text(case.latency_feed),
        targets=[(target.metric, target.text) for target in case.targets],
    )
    outputs = measure_processes(case, result, folder, timeout_seconds)
    measure_accuracy(case, result, outputs)
    measure_latency(case, result, outputs, latency_runs)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODEL_KEYS,
        default=list(MODEL_KEYS),
        help="models to measure (default: all)",
    )
    parser.add_argument(
        "--det-size",
        nargs=2,
        type=int,
        default=(736, 736),
        metavar=("HEIGHT", "WIDTH"),
        help="det calibration and latency input size in pixels, multiples of 32 (default: 736 736)",
    )
    parser.add_argument(
        "--latency-runs",
        type=int,
        default=10,
        help="timed runs per model for the median latency (default: 10)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds after which a quantize or inference process is stopped (default: 900)",
    )
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="print the results but leave docs/benchmarks.md unchanged",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    start = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    results, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="qrewrite-bench-targets-") as temporary:
        for key in args.models:
            LOGGER.info("%s: preparing model and inputs", key)
            try:
                case = build_case(key, tuple(args.det_size))
            except Exception as error:  # a missing package or program, or a failed export
                LOGGER.error("%s: skipped\n%s", key, traceback.format_exc())
                skipped.append(f"{key} skipped: {short_error(error)}")
                continue
            results.append(measure_model(case, Path(temporary), args.latency_runs, args.timeout))

    command = "python -m benchmarks.bench_targets"
    if argv is None and sys.argv[1:]:
        command += " " + shlex.join(sys.argv[1:])
    markdown = format_markdown(
        results,
        skipped,
        command,
        time.perf_counter() - start,
        args.latency_runs,
        FLOAT_PROCESS_RUNS,
        (load_at_start, os.getloadavg()[0]),
        os.cpu_count() or 0,
    )
    print(markdown)
    if not args.no_write:
        write_section("targets", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
