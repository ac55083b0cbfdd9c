"""Every supported op type gets Q/DQ on its inputs and outputs and stays accurate."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from qmodels import make_model, min_cosine, nodes_of, producers, samples, tensor

from qrewrite import Int8Spec, ModelQuantizer, QConfig, QLayerConfig, QuantGranularity, UInt8Spec

RNG = np.random.default_rng(1)
IMAGE = [1, 4, 8, 8]


def _weights(*shape: int) -> np.ndarray:
    return (RNG.normal(size=shape) * 0.5).astype(np.float32)


def _head() -> tuple[list, list]:
    """x -> Conv(1x1) -> h, so every op under test reads a quantized producer output."""
    node = helper.make_node("Conv", ["x", "head_w", "head_b"], ["h"], name="head")
    return [node], [tensor("head_w", _weights(4, 4, 1, 1)), tensor("head_b", _weights(4))]


def _int64(name: str, values: list[int]):
    return tensor(name, np.array(values, dtype=np.int64))


# op type -> (nodes after the head, extra initializers, opset); the op under test writes "y".
CASES = {
    "Conv": (
        [helper.make_node("Conv", ["h", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
        [tensor("w", _weights(6, 4, 3, 3)), tensor("b", _weights(6))],
        17,
    ),
    "ConvTranspose": (
        [helper.make_node("ConvTranspose", ["h", "w", "b"], ["y"], group=2)],
        [tensor("w", _weights(4, 3, 3, 3)), tensor("b", _weights(6))],
        17,
    ),
    "Gemm": (
        [
            helper.make_node("Flatten", ["h"], ["f"]),
            helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1),
        ],
        [tensor("w", _weights(5, 256)), tensor("b", _weights(5))],
        17,
    ),
    "MatMul": ([helper.make_node("MatMul", ["h", "w"], ["y"])], [tensor("w", _weights(8, 3))], 17),
    "Add": (
        [helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Add", ["h", "r"], ["y"])],
        [],
        17,
    ),
    "Mul": (
        [helper.make_node("Sigmoid", ["h"], ["s"]), helper.make_node("Mul", ["h", "s"], ["y"])],
        [],
        17,
    ),
    "Sub": (
        [helper.make_node("Tanh", ["h"], ["t"]), helper.make_node("Sub", ["h", "t"], ["y"])],
        [],
        17,
    ),
    "Div": (
        [helper.make_node("Div", ["h", "d"], ["y"])],
        [tensor("d", (1.0 + RNG.random((4, 1, 1))).astype(np.float32))],
        17,
    ),
    # A Concat writing a graph output stays float (SplitOutputConcat), so one op follows.
    "Concat": (
        [
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Concat", ["h", "r"], ["cat"], axis=1),
            helper.make_node("Sigmoid", ["cat"], ["y"]),
        ],
        [],
        17,
    ),
    "Relu": ([helper.make_node("Relu", ["h"], ["y"])], [], 17),
    "Clip": (
        [helper.make_node("Clip", ["h", "lo", "hi"], ["y"])],
        [tensor("lo", np.array(-0.5, np.float32)), tensor("hi", np.array(0.7, np.float32))],
        17,
    ),
    "LeakyRelu": ([helper.make_node("LeakyRelu", ["h"], ["y"], alpha=0.1)], [], 17),
    "PRelu": (
        [helper.make_node("PRelu", ["h", "slope"], ["y"])],
        [tensor("slope", (RNG.random((4, 1, 1)) * 0.3).astype(np.float32))],
        17,
    ),
    "Sigmoid": ([helper.make_node("Sigmoid", ["h"], ["y"])], [], 17),
    "HardSigmoid": ([helper.make_node("HardSigmoid", ["h"], ["y"])], [], 17),
    "Tanh": ([helper.make_node("Tanh", ["h"], ["y"])], [], 17),
    "Softmax": ([helper.make_node("Softmax", ["h"], ["y"], axis=1)], [], 17),
    "Gelu": ([helper.make_node("Gelu", ["h"], ["y"])], [], 20),
    "LayerNormalization": (
        [helper.make_node("LayerNormalization", ["h", "g", "beta"], ["y"])],
        [tensor("g", 1 + _weights(8)), tensor("beta", _weights(8))],
        17,
    ),
    "MaxPool": (
        [helper.make_node("MaxPool", ["h"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
        [],
        17,
    ),
    "AveragePool": ([helper.make_node("AveragePool", ["h"], ["y"], kernel_shape=[2, 2])], [], 17),
    "GlobalAveragePool": ([helper.make_node("GlobalAveragePool", ["h"], ["y"])], [], 17),
    "Resize": (
        [helper.make_node("Resize", ["h", "", "scales"], ["y"], mode="nearest")],
        [tensor("scales", np.array([1, 1, 2, 2], np.float32))],
        17,
    ),
    "Pad": (
        [helper.make_node("Pad", ["h", "pads"], ["y"])],
        [_int64("pads", [0, 0, 1, 1, 0, 0, 1, 1])],
        17,
    ),
    "Slice": (
        [helper.make_node("Slice", ["h", "starts", "ends"], ["y"])],
        [_int64("starts", [1, 2]), _int64("ends", [3, 7])],
        17,
    ),
    "Split": (
        [
            helper.make_node("Split", ["h", "sizes"], ["y", "y2"], axis=1),
            helper.make_node("Add", ["y", "y2"], ["z"]),
        ],
        [_int64("sizes", [2, 2])],
        17,
    ),
    "Reshape": (
        [helper.make_node("Reshape", ["h", "shape"], ["y"])],
        [_int64("shape", [1, 4, 64])],
        17,
    ),
    "Transpose": ([helper.make_node("Transpose", ["h"], ["y"], perm=[0, 2, 3, 1])], [], 17),
    "Flatten": ([helper.make_node("Flatten", ["h"], ["y"])], [], 17),
    "Squeeze": (
        [
            helper.make_node("GlobalAveragePool", ["h"], ["g"]),
            helper.make_node("Squeeze", ["g", "axes"], ["y"]),
        ],
        [_int64("axes", [2, 3])],
        17,
    ),
    "Unsqueeze": ([helper.make_node("Unsqueeze", ["h", "axes"], ["y"])], [_int64("axes", [0])], 17),
    "Gather": (
        [helper.make_node("Gather", ["h", "idx"], ["y"], axis=1)],
        [_int64("idx", [3, 0, 1])],
        17,
    ),
}

# FoldRelu merges a Relu after a Conv into the Conv's output range, so the Relu case
# turns it off to check the Relu's own quantization. FoldConvAffine would fold the
# Div by a constant into the Conv before it.
OPTIONS_BY_CASE = {"Relu": {"FoldRelu": False}, "Div": {"FoldConvAffine": False}}

# Outputs that the test reads: Split feeds an Add whose output is the graph output.
OUTPUTS = {"Split": ["z"]}


def _quantize(model, feeds, **options):
    config = QConfig(
        global_config=QLayerConfig(
            activation=UInt8Spec(),
            weight=Int8Spec(quant_granularity=QuantGranularity.Channel),
        ),
        PrintSummary=False,
        **options,
    )
    return ModelQuantizer(config).quantize_model(model, None, feeds)


@pytest.mark.parametrize("op_type", sorted(CASES))
def test_op_quantized_and_accurate(op_type: str) -> None:
    body, initializers, opset = CASES[op_type]
    head_nodes, head_inits = _head()
    model = make_model(
        head_nodes + body,
        [("x", IMAGE)],
        OUTPUTS.get(op_type, ["y"]),
        head_inits + initializers,
        opset=opset,
    )
    feeds = samples({"x": IMAGE}, 6)

    quantized = _quantize(model, feeds, **OPTIONS_BY_CASE.get(op_type, {}))

    node = nodes_of(quantized, op_type)[0]
    made_by = producers(quantized)
    assert made_by[node.input[0]].op_type == "DequantizeLinear", f"{op_type} input 0 is float"
    out = node.output[0]
    readers = [n.op_type for n in quantized.graph.node if out in n.input]
    assert "QuantizeLinear" in readers, f"{op_type} output is not quantized: {readers}"
    assert min_cosine(model, quantized, feeds[:3]) > 0.98
