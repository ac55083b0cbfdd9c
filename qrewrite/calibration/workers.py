"""CalibWorkerNum: share the calibration samples among worker processes and merge.

The main process reads the samples and hands them to the workers through a bounded
queue, so at most two samples per worker wait in memory. Each worker builds and runs its own
onnxruntime session and returns its merged collectors at the end. Collectors merge
exactly, except the moving averages of CalibMovingAverage, which depend on sample order.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from qrewrite.calibration.runner import StatsPlan

logger = logging.getLogger(__name__)

# Seconds between checks that the workers are still alive while waiting on a queue.
_POLL_SECONDS = 1.0


def _worker(
    plan: StatsPlan,
    collectors: dict[str, Any],
    threads: int,
    tasks: Any,
    results: Any,
) -> None:
    from qrewrite.calibration.runner import StatsRunner
    from qrewrite.calibration.tensor_collector import absorb

    try:
        runner = StatsRunner(plan, threads)
        while (sample := tasks.get()) is not None:
            for tensor, stats in runner.run(sample).items():
                collectors[tensor] = absorb(collectors[tensor], stats)
        for tensor, stats in runner.flush().items():
            collectors[tensor] = absorb(collectors[tensor], stats)
        results.put(("done", collectors))
    except BaseException as error:  # report every failure to the main process
        results.put(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))


def _put(tasks: Any, item: Any, processes: list[Any]) -> None:
    while True:
        try:
            tasks.put(item, timeout=_POLL_SECONDS)
            return
        except queue.Full:
            _check_alive(processes)


def _check_alive(processes: list[Any]) -> None:
    for process in processes:
        if not process.is_alive() and process.exitcode not in (0, None):
            raise RuntimeError(
                f"calibration worker process {process.pid} exited with code "
                f"{process.exitcode}; run with CalibWorkerNum=1 to see the error"
            )


def collect_in_workers(
    plan: StatsPlan,
    collectors: dict[str, Any],
    samples: Iterable[Mapping[str, np.ndarray]],
    workers: int,
) -> dict[str, Any]:
    """Run `samples` in `workers` processes and return the merged collectors."""
    context = multiprocessing.get_context("spawn")
    tasks = context.Queue(maxsize=2 * workers)
    results = context.Queue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = [
        context.Process(
            target=_worker,
            args=(plan, collectors, threads, tasks, results),
            daemon=True,
        )
        for _ in range(workers)
    ]
    logger.info("calibrating with %d worker processes, %d threads each", workers, threads)
    for process in processes:
        process.start()

    merged = dict(collectors)
    try:
        for sample in samples:
            _put(tasks, dict(sample), processes)
        for _ in processes:
            _put(tasks, None, processes)
        for _ in processes:
            status, payload = _get_result(results, processes)
            if status == "error":
                raise RuntimeError(f"a calibration worker failed: {payload}")
            for tensor, collector in payload.items():
                merged[tensor] = merged[tensor].merge(collector)
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
    return merged


def _get_result(results: Any, processes: list[Any]) -> tuple[str, Any]:
    while True:
        try:
            return results.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            _check_alive(processes)
