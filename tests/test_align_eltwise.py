"""AlignEltwiseQuantType: which spec quantizes the constant operand of an element-wise op."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from qrewrite import Int8Spec, ModelQuantizer, QConfig, QLayerConfig, UInt8Spec
from tests.qmodels import initializer, make_model, min_cosine, producers, samples, tensor

FEEDS = samples({"x": [2, 6]}, 4)


def _model(op_type: str) -> onnx.ModelProto:
    nodes = [helper.make_node(op_type, ["x", "c"], ["y"])]
    constant = np.linspace(0.5, 2.0, 6, dtype=np.float32)
    return make_model(nodes, [("x", [2, 6])], ["y"], [tensor("c", constant)])


def _constant_type(model: onnx.ModelProto, op_type: str) -> np.dtype:
    node = next(n for n in model.graph.node if n.op_type == op_type)
    dq = producers(model)[node.input[1]]
    assert dq.op_type == "DequantizeLinear"
    return initializer(model, dq.input[0]).dtype


@pytest.mark.parametrize("op_type", ["Mul", "Add", "Sub", "Div"])
@pytest.mark.parametrize(("align", "expected"), [(True, np.uint8), (False, np.int8)])
def test_constant_operand_type(op_type, align, expected) -> None:
    layer = QLayerConfig(activation=UInt8Spec(), weight=Int8Spec())
    config = QConfig(layer, AlignEltwiseQuantType=align, PrintSummary=False)

    quantized = ModelQuantizer(config).quantize_model(_model(op_type), None, FEEDS)

    assert _constant_type(quantized, op_type) == np.dtype(expected)
    assert min_cosine(_model(op_type), quantized, FEEDS) > 0.99
