"""Wall time and peak memory of one quantize or float-inference process.

bench_targets.py runs each measurement in a fresh Python process:

    python -m benchmarks.targets.memory infer MODEL FEEDS RESULT
    python -m benchmarks.targets.memory quantize MODEL FEEDS RESULT --variant NAME --output OUT

FEEDS is an .npz written by `save_feeds`. The process imports only numpy, onnxruntime
and the quantizer it runs, loads the feeds, then times the work: session creation plus
one run per feed for `infer`, the whole quantize call (calibration and saving
included) for `quantize`. Imports and feed loading are outside the timed part. At the
end it writes {"seconds", "peak_rss_bytes"} as JSON to RESULT.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]
FEED_KEY_SEPARATOR = "."


@dataclass(frozen=True)
class ProcessMeasurement:
    """Timed-section wall time and peak resident memory of one measured process."""

    seconds: float
    peak_rss_bytes: int


def save_feeds(feeds: list[dict[str, np.ndarray]], path: Path) -> None:
    """Write a list of feeds to one .npz, keyed "<feed index>.<input name>"."""
    arrays = {
        f"{index:04d}{FEED_KEY_SEPARATOR}{name}": value
        for index, feed in enumerate(feeds)
        for name, value in feed.items()
    }
    np.savez(path, **arrays)


def load_feeds(path: Path) -> list[dict[str, np.ndarray]]:
    """Read feeds written by `save_feeds`, in their original order."""
    feeds: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path) as archive:
        for key in archive.files:
            index, name = key.split(FEED_KEY_SEPARATOR, 1)
            feeds.setdefault(int(index), {})[name] = archive[key]
    return [feeds[index] for index in sorted(feeds)]


def peak_rss_bytes() -> int:
    """Return this process's peak resident set size plus that of its largest child.

    VmHWM from /proc/self/status is the peak of this process. ru_maxrss of
    RUSAGE_CHILDREN covers child processes that were waited for (qrewrite with
    CalibWorkerNum > 1 starts workers).
    """
    # NOTE: adding the largest child's peak to ours is an upper bound for one worker
    # that ran alongside this process, and an underestimate for several workers.
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 + children
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 + children


def run_float_inference(model: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for feed in feeds:
        session.run(None, feed)


def measure_in_subprocess(
    arguments: list[str], log_path: Path, timeout_seconds: float
) -> ProcessMeasurement:
    """Run this module with `arguments` in a fresh interpreter and read its result.

    The process's stdout and stderr go to `log_path`. Raises RuntimeError with the end
    of that log when the process fails, and subprocess.TimeoutExpired when it runs
    longer than `timeout_seconds`.
    """
    result_path = log_path.with_suffix(".json")
    result_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.targets.memory", *arguments, str(result_path)]
    with log_path.open("w") as log:
        completed = subprocess.run(
            command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_seconds
        )
    if completed.returncode != 0 or not result_path.is_file():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(
            f"measured process exited with code {completed.returncode}: " + " | ".join(tail)
        )
    result = json.loads(result_path.read_text())
    return ProcessMeasurement(result["seconds"], result["peak_rss_bytes"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure one quantize or inference process.")
    parser.add_argument("task", choices=["infer", "quantize"])
    parser.add_argument("model", type=Path, help="float ONNX model")
    parser.add_argument("feeds", type=Path, help=".npz of feeds written by save_feeds")
    parser.add_argument("result", type=Path, help="JSON file to write the measurement to")
    parser.add_argument("--variant", help="quantizer setting (quantize only)")
    parser.add_argument("--output", type=Path, help="quantized model path (quantize only)")
    args = parser.parse_args(argv)

    feeds = load_feeds(args.feeds)
    if args.task == "infer":
        start = time.perf_counter()
        run_float_inference(args.model, feeds)
    else:
        if args.variant is None or args.output is None:
            parser.error("quantize needs --variant and --output")
        from benchmarks.targets.variants import quantizer_for

        quantize = quantizer_for(args.variant)
        start = time.perf_counter()
        quantize(args.model, feeds, args.output)
    seconds = time.perf_counter() - start

    result = {"seconds": seconds, "peak_rss_bytes": peak_rss_bytes()}
    args.result.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
