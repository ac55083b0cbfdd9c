"""Cost per value of an exact in-graph histogram, against float inference of PP-OCRv4 det.

    python -m benchmarks.histogram_cost

The histogram methods bin every calibrated tensor inside the onnxruntime graph with the
chain that `qrewrite.calibration.graph` builds (Mul, Floor, Sub, Cast, Clip, then
ScatterElements with reduction "add"). This script times that chain, and ReduceMin plus
ReduceMax, on one tensor of 2^20 values. It then times float inference of det at 384x480
and counts the values its node outputs hold. From these it prints how long binning every
node output takes against float inference. It writes nothing.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

VALUES = 1 << 20
BINS = 4096
RUNS = 20


def _session(nodes, inputs, outputs, initializers=()) -> ort.InferenceSession:
    graph = helper.make_graph(nodes, "cost", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _seconds_per_run(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> float:
    for _ in range(3):
        session.run(None, feed)
    start = time.perf_counter()
    for _ in range(RUNS):
        session.run(None, feed)
    return (time.perf_counter() - start) / RUNS


def histogram_ns_per_value() -> float:
    """Return the time of the binning chain per value of a 2^20-value tensor."""
    nodes = [
        helper.make_node("Mul", ["x", "inverse_width"], ["scaled"]),
        helper.make_node("Floor", ["scaled"], ["bins"]),
        helper.make_node("Sub", ["bins", "first_bin"], ["relative"]),
        helper.make_node("Cast", ["relative"], ["as_int"], to=TensorProto.INT32),
        helper.make_node("Clip", ["as_int", "zero", "last_bin"], ["indices"]),
        helper.make_node(
            "ScatterElements", ["counts", "indices", "ones"], ["histogram"], axis=0, reduction="add"
        ),
    ]
    initializers = [
        numpy_helper.from_array(np.array(64.0, np.float32), "inverse_width"),
        numpy_helper.from_array(np.array(-128.0, np.float32), "first_bin"),
        numpy_helper.from_array(np.array(0, np.int32), "zero"),
        numpy_helper.from_array(np.array(BINS - 1, np.int32), "last_bin"),
        numpy_helper.from_array(np.zeros(BINS, np.int32), "counts"),
    ]
    session = _session(
        nodes,
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [VALUES]),
            helper.make_tensor_value_info("ones", TensorProto.INT32, [VALUES]),
        ],
        [helper.make_tensor_value_info("histogram", TensorProto.INT32, [BINS])],
        initializers,
    )
    values = np.random.default_rng(0).standard_normal(VALUES).astype(np.float32)
    feed = {"x": values, "ones": np.ones(VALUES, np.int32)}
    return _seconds_per_run(session, feed) / VALUES * 1e9


def min_max_ns_per_value() -> float:
    """Return the time of ReduceMin plus ReduceMax per value of a 2^20-value tensor."""
    session = _session(
        [
            helper.make_node("ReduceMin", ["x"], ["low"], keepdims=0),
            helper.make_node("ReduceMax", ["x"], ["high"], keepdims=0),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [VALUES])],
        [
            helper.make_tensor_value_info("low", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("high", TensorProto.FLOAT, []),
        ],
    )
    values = np.random.default_rng(0).standard_normal(VALUES).astype(np.float32)
    return _seconds_per_run(session, {"x": values}) / VALUES * 1e9


def det_float_cost() -> tuple[float, int]:
    """Return det's float inference seconds per 384x480 sample and its node-output values."""
    from benchmarks.real_models import inputs
    from benchmarks.real_models.models import ocr_model_path
    from qrewrite.calibration.graph import static_sizes

    path = str(ocr_model_path("ppocr-det"))
    feed = inputs.det_split(384, 480).calibration[0]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    seconds = _seconds_per_run(session, feed)
    model = onnx.load(path)
    outputs = {
        name
        for node in model.graph.node
        if node.op_type not in ("Constant", "Shape")
        for name in node.output
    }
    sizes = static_sizes(model, feed)
    return seconds, sum(size for name, size in sizes.items() if name in outputs)


def main() -> None:
    histogram = histogram_ns_per_value()
    min_max = min_max_ns_per_value()
    seconds, values = det_float_cost()
    print(f"binning chain: {histogram:.2f} ns per value; ReduceMin + ReduceMax: {min_max:.2f} ns")
    print(
        f"PP-OCRv4 det 384x480: float inference {seconds * 1e3:.1f} ms per sample, "
        f"{values / 1e6:.1f} M values in its node outputs ({seconds / values * 1e9:.2f} ns each)"
    )
    print(
        f"binning every node output: {values * histogram / 1e6:.1f} ms per sample, "
        f"{values * histogram * 1e-9 / seconds:.1f} x float inference"
    )


if __name__ == "__main__":
    main()
