"""One-thread inference latency of several models on the same feed."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def one_thread_session(model: Path) -> ort.InferenceSession:
    """Create a CPU session that runs on one thread, with default graph optimizations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def median_latencies(
    models: dict[str, Path], feed: dict[str, np.ndarray], runs: int = 10, warmup_runs: int = 2
) -> dict[str, float | str]:
    """Return the median wall time in seconds of one run of each model on `feed`.

    Every model first runs `warmup_runs` times untimed. The timed runs then go round
    robin over the models, so a slowdown of the machine during the measurement hits
    every model alike instead of the last one. A model that fails to load or run gets
    its error message in place of a time.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    sessions: dict[str, ort.InferenceSession] = {}
    results: dict[str, float | str] = {}
    for name, path in models.items():
        try:
            session = one_thread_session(path)
            for _ in range(warmup_runs):
                session.run(None, feed)
        except Exception as error:  # onnxruntime raises several unrelated types
            results[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            continue
        sessions[name] = session

    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(runs):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            times[name].append(time.perf_counter() - start)
    for name, samples in times.items():
        results[name] = statistics.median(samples)
    return {name: results[name] for name in models}
