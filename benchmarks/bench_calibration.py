"""Time and memory of qrewrite calibration against onnxruntime.quantization's calibrators.

Run as `python -m benchmarks.bench_calibration`; it took 7 minutes on a shared 2-core
machine. `--quick` uses fewer samples and does not write docs/benchmarks.md. Other load
on the machine changes the times, so compare the ratios within one run.

Every measurement runs in its own Python subprocess, so the peak resident memory
(VmHWM from /proc/self/status) belongs to that measurement alone. Models:

- PP-OCRv4 det from the rapidocr_onnxruntime package, fed with the det images stored in
  benchmarks/real_models/ocr_test_inputs.npz, upscaled and varied with seeded noise;
- a synthetic model of many small elementwise ops on a [1, 64] tensor.

For each calibration method the page lists qrewrite's time, onnxruntime's time for the
same samples where onnxruntime has the method, and plain float inference over the same
samples (session creation included in all three, module imports excluded). qrewrite
calibrates the graph inputs and the float outputs of every node except Constant;
onnxruntime picks its own tensors.
Memory is measured with 10 and 500 samples that are generated one at a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks._report import write_section

INPUTS_FILE = Path(__file__).resolve().parent / "real_models" / "ocr_test_inputs.npz"
DET_MODEL = "ch_PP-OCRv4_det_infer.onnx"
# The stored det images are 128x160; they are upscaled by these factors.
DET_TIME_SCALE = 3  # 384x480 for the time comparison
DET_MEMORY_SCALE = 2  # 256x320 for the memory runs, to keep 500 samples affordable
SMALL_OPS_BLOCKS = 250  # four nodes each
SMALL_OPS_WIDTH = 64

QREWRITE_METHODS = (
    "MinMax",
    "Percentile",
    "Entropy",
    "Distribution",
    "MinMSE",
    "LayerwisePercentile",
    "PowerOfTwo.NonOverflow",
    "PowerOfTwo.MinMSE",
)
ONNXRUNTIME_METHODS = ("MinMax", "Percentile", "Entropy", "Distribution")


# Models and samples ----------------------------------------------------------------------


def det_model_path() -> Path:
    import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).resolve().parent / "models" / DET_MODEL


def small_ops_model() -> onnx.ModelProto:
    """Return a chain of Mul, Add, Sigmoid and Max blocks: many nodes, little compute."""
    rng = np.random.default_rng(0)
    nodes, initializers = [], []
    current = "x"
    for index in range(SMALL_OPS_BLOCKS):
        prefix = f"b{index}_"
        scale = rng.uniform(0.5, 1.5, SMALL_OPS_WIDTH).astype(np.float32)
        shift = rng.normal(size=SMALL_OPS_WIDTH).astype(np.float32)
        initializers += [
            numpy_helper.from_array(scale, prefix + "scale"),
            numpy_helper.from_array(shift, prefix + "shift"),
        ]
        nodes += [
            helper.make_node("Mul", [current, prefix + "scale"], [prefix + "mul"]),
            helper.make_node("Add", [prefix + "mul", prefix + "shift"], [prefix + "add"]),
            helper.make_node("Sigmoid", [prefix + "add"], [prefix + "gate"]),
            helper.make_node("Max", [prefix + "gate", prefix + "mul"], [prefix + "out"]),
        ]
        current = prefix + "out"
    graph = helper.make_graph(
        nodes,
        "small_ops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, SMALL_OPS_WIDTH])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, [None, SMALL_OPS_WIDTH])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def det_samples(count: int, scale: int) -> Iterator[dict[str, np.ndarray]]:
    """Yield `count` det inputs one at a time: stored images, upscaled, with seeded noise."""
    with np.load(INPUTS_FILE) as archive:
        images = np.concatenate([archive["det_calibration"], archive["det_evaluation"]])
    rng = np.random.default_rng(0)
    for index in range(count):
        image = images[index % len(images)].repeat(scale, 0).repeat(scale, 1)
        bgr = image[..., ::-1].astype(np.float32)
        bgr += rng.normal(0.0, 4.0, bgr.shape).astype(np.float32)
        normalized = (np.clip(bgr, 0, 255) / 255.0 - 0.5) / 0.5
        yield {"x": np.ascontiguousarray(normalized.transpose(2, 0, 1)[None])}


def small_ops_samples(count: int) -> Iterator[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    for _ in range(count):
        yield {"x": rng.normal(size=(8, SMALL_OPS_WIDTH)).astype(np.float32)}


def load_case(model_name: str, folder: Path, memory: bool) -> tuple[Path, onnx.ModelProto]:
    if model_name == "det":
        path = det_model_path()
        return path, onnx.load(path)
    model = small_ops_model()
    path = folder / "small_ops.onnx"
    onnx.save(model, path)
    return path, model


def samples_for(model_name: str, count: int, memory: bool) -> Iterator[dict[str, np.ndarray]]:
    if model_name == "det":
        return det_samples(count, DET_MEMORY_SCALE if memory else DET_TIME_SCALE)
    return small_ops_samples(count)


# One measurement, run in a child process --------------------------------------------------


def activation_tensors(model: onnx.ModelProto) -> list[str]:
    """Return the graph inputs and the float outputs of every node except Constant."""
    from qrewrite.calibration.graph import is_float_type, tensor_types

    types = tensor_types(model)
    initializers = {init.name for init in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    for node in model.graph.node:
        if node.op_type != "Constant":
            names += [o for o in node.output if o and is_float_type(types.get(o))]
    return names


def run_qrewrite(model: onnx.ModelProto, method: str, samples: Iterator) -> int:
    from qrewrite.calibration import PowerOfTwoMethod, RangeRequest, calibrate
    from qrewrite.config import CalibMethod, QConfig

    if method.startswith("PowerOfTwo."):
        request = RangeRequest(PowerOfTwoMethod[method.split(".")[1]], symmetric=True)
    else:
        request = RangeRequest(CalibMethod[method])
    tensors = activation_tensors(model)
    ranges = calibrate(model, dict.fromkeys(tensors, request), samples, QConfig().options)
    return len(ranges)


def run_onnxruntime(path: Path, method: str, samples: Iterator, folder: Path) -> int:
    from onnxruntime.quantization.calibrate import (
        CalibrationDataReader,
        CalibrationMethod,
        create_calibrator,
    )

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(samples, None)

    calibrator = create_calibrator(
        path,
        augmented_model_path=str(folder / "augmented.onnx"),
        calibrate_method=CalibrationMethod[method],
        providers=["CPUExecutionProvider"],
    )
    calibrator.collect_data(Reader())
    return len(calibrator.compute_data().data)


def run_float(path: Path, samples: Iterator) -> int:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    count = 0
    for sample in samples:
        session.run(None, sample)
        count += 1
    return count


def peak_memory_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def import_engine(engine: str) -> None:
    """Import the modules that `engine` runs, so their import time is not measured.

    Importing qrewrite.calibration took 0.13 to 0.19 s and onnxruntime 0.05 to 0.07 s
    (2-core x86_64, Python 3.11), while float inference of the small ops model over 32
    samples took 0.04 s.
    """
    import onnxruntime

    if engine == "qrewrite":
        import qrewrite.calibration
        import qrewrite.config  # noqa: F401
    elif engine == "onnxruntime":
        import onnxruntime.quantization.calibrate  # noqa: F401


def child(spec: dict) -> None:
    logging.getLogger("qrewrite").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        path, model = load_case(spec["model"], folder, spec["memory"])
        samples = samples_for(spec["model"], spec["samples"], spec["memory"])
        if not spec.get("with_imports", False):
            import_engine(spec["engine"])
        start, cpu_start = time.perf_counter(), time.process_time()
        if spec["engine"] == "qrewrite":
            tensors = run_qrewrite(model, spec["method"], samples)
        elif spec["engine"] == "onnxruntime":
            tensors = run_onnxruntime(path, spec["method"], samples, folder)
        else:
            tensors = run_float(path, samples)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
    result = {"seconds": seconds, "cpu_seconds": cpu_seconds, "tensors": tensors}
    print(json.dumps({**result, "peak_mb": peak_memory_mb()}))


def measure(**spec) -> dict:
    """Run one measurement in a fresh Python process and return its JSON result."""
    command = [sys.executable, "-m", "benchmarks.bench_calibration", "--child", json.dumps(spec)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        error = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        print(f"  failed: {spec}: {error[0]}", file=sys.stderr)
        return {"seconds": float("nan"), "peak_mb": float("nan"), "tensors": 0}
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    print(f"  {spec} -> {result}", file=sys.stderr)
    return result


# The report ------------------------------------------------------------------------------


def time_table(model_name: str, samples: int) -> str:
    float_run = measure(model=model_name, engine="float", method="", samples=samples, memory=False)
    rows = [
        "| method | qrewrite s | onnxruntime s | onnxruntime / qrewrite | qrewrite / float |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    counts = set()
    for method in QREWRITE_METHODS:
        ours = measure(
            model=model_name, engine="qrewrite", method=method, samples=samples, memory=False
        )
        counts.add(("qrewrite", ours["tensors"]))
        theirs_text = ratio_text = "n/a"
        if method in ONNXRUNTIME_METHODS:
            theirs = measure(
                model=model_name, engine="onnxruntime", method=method, samples=samples,
                memory=False,
            )
            counts.add(("onnxruntime", theirs["tensors"]))
            theirs_text = f"{theirs['seconds']:.2f}"
            ratio_text = f"{theirs['seconds'] / ours['seconds']:.2f}"
        rows.append(
            f"| {method} | {ours['seconds']:.2f} | {theirs_text} | {ratio_text} | "
            f"{ours['seconds'] / float_run['seconds']:.2f} |"
        )
    tensors = ", ".join(f"{engine} {count}" for engine, count in sorted(counts))
    return (
        "\n".join(rows)
        + f"\n\n{samples} samples; float inference {float_run['seconds']:.2f} s; tensors "
        f"calibrated: {tensors}.\n"
    )


def memory_table(model_name: str, counts: tuple[int, int]) -> str:
    rows = [
        f"| run | peak MB, {counts[0]} samples | peak MB, {counts[1]} samples | growth |",
        "| --- | ---: | ---: | ---: |",
    ]
    runs = [("float", ""), ("qrewrite", "MinMax"), ("qrewrite", "Percentile")]
    for engine, method in runs:
        peaks = [
            measure(model=model_name, engine=engine, method=method, samples=n, memory=True)
            for n in counts
        ]
        growth = peaks[1]["peak_mb"] / peaks[0]["peak_mb"] - 1.0
        label = f"{engine} {method}".strip()
        rows.append(
            f"| {label} | {peaks[0]['peak_mb']:.0f} | {peaks[1]['peak_mb']:.0f} | "
            f"{growth:+.1%} |"
        )
    ort_peak = measure(
        model=model_name, engine="onnxruntime", method="MinMax", samples=counts[0], memory=True
    )
    rows.append(f"| onnxruntime MinMax | {ort_peak['peak_mb']:.0f} | not run | |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help="internal: run one measurement given as JSON")
    parser.add_argument("--quick", action="store_true", help="fewer samples; no report")
    parser.add_argument(
        "--time-only",
        choices=["det", "small_ops"],
        help="measure only the time table of this model; no memory runs and no report",
    )
    arguments = parser.parse_args()
    if arguments.child:
        child(json.loads(arguments.child))
        return

    time_samples = 3 if arguments.quick else 8
    memory_counts = (2, 20) if arguments.quick else (10, 500)
    det_size = f"{128 * DET_TIME_SCALE}x{160 * DET_TIME_SCALE}"
    memory_size = f"{128 * DET_MEMORY_SCALE}x{160 * DET_MEMORY_SCALE}"
    small_ops_title = f"{SMALL_OPS_BLOCKS * 4} small elementwise ops on [8, {SMALL_OPS_WIDTH}]"
    if arguments.time_only == "det":
        print(f"### Time: PP-OCRv4 det, {det_size} images\n")
        print(time_table("det", time_samples))
        return
    if arguments.time_only == "small_ops":
        print(f"### Time: {small_ops_title}\n")
        print(time_table("small_ops", time_samples * 4))
        return
    sections = [
        "## Calibration",
        "",
        "Written by `python -m benchmarks.bench_calibration`. Times include model "
        "preparation and session creation but not module imports; each run is a separate "
        "process.",
        "",
        f"### Time: PP-OCRv4 det, {det_size} images",
        "",
        time_table("det", time_samples),
        f"### Time: {small_ops_title}",
        "",
        time_table("small_ops", time_samples * 4),
        f"### Peak memory: PP-OCRv4 det, {memory_size} images",
        "",
        memory_table("det", memory_counts),
        "### Peak memory: small elementwise ops",
        "",
        memory_table("small_ops", memory_counts),
    ]
    markdown = "\n".join(sections)
    print(markdown)
    if not arguments.quick:
        write_section("calibration", markdown)


if __name__ == "__main__":
    main()
