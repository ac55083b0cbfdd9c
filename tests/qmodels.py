"""Builders of small float models and helpers to run and inspect them in onnxruntime."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

RNG_SEED = 0


def tensor(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[tuple[str, Sequence[int | str | None]]],
    outputs: Sequence[str],
    initializers: Sequence[onnx.TensorProto] = (),
    opset: int = 17,
    extra_opsets: Sequence[tuple[str, int]] = (),
) -> onnx.ModelProto:
    """A float32 model; output shapes are left to shape inference."""
    graph = helper.make_graph(
        list(nodes),
        "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        list(initializers),
    )
    opsets = [helper.make_opsetid("", opset)]
    opsets += [helper.make_opsetid(d, v) for d, v in extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    for output in model.graph.output:
        if output.name in known and known[output.name].type.tensor_type.HasField("shape"):
            output.CopyFrom(known[output.name])
    onnx.checker.check_model(model, full_check=True)
    return model


def samples(shapes: dict[str, Sequence[int]], count: int, seed: int = RNG_SEED) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
        for _ in range(count)
    ]


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feed)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    if denominator == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(a @ b / denominator)


def min_cosine(
    float_model: onnx.ModelProto, quantized: onnx.ModelProto, feeds: list[dict]
) -> float:
    worst = 1.0
    for feed in feeds:
        for expected, actual in zip(run(float_model, feed), run(quantized, feed), strict=False):
            worst = min(worst, cosine(expected, actual))
    return worst


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in model.graph.node for output in node.output}


def consumers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if name in node.input]


def nodes_of(model: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if node.op_type == op_type]


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise KeyError(name)


def dq_params(
    model: onnx.ModelProto, dq: onnx.NodeProto
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Scale, zero point and axis of a DequantizeLinear node whose params are initializers."""
    axis = next((a.i for a in dq.attribute if a.name == "axis"), None)
    return initializer(model, dq.input[1]), initializer(model, dq.input[2]), axis


def pipeline_state(model: onnx.ModelProto, feeds: list[dict], **options: object):
    """Run every pipeline stage with the recommended CPU types; return the final state."""
    from qrewrite import Int8Spec, QConfig, QLayerConfig, QuantGranularity, UInt8Spec
    from qrewrite.model.io import load_model
    from qrewrite.pipeline import State, build_stages, run_stages

    config = QConfig(
        global_config=QLayerConfig(
            activation=UInt8Spec(),
            weight=Int8Spec(quant_granularity=QuantGranularity.Channel),
        ),
        PrintSummary=False,
        **options,
    )
    state = State(config=config, proto=load_model(model).proto, reader=feeds)
    return run_stages(build_stages(config), state)
