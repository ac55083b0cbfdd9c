"""Model builders and the property check shared by the rule tests.

`assert_rewrite` runs a rule set on a model and checks four properties. The input is
unchanged, and each rule matched the expected number of times. The result passes the
full onnx checker, and onnxruntime (graph optimizations off) gives outputs that agree
within the rule's contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from qrewrite.rewrite import Contract, RewriteResult, RuleSet, apply_rules

FLOAT = onnx.TensorProto.FLOAT


def constant(name: str, value, dtype=np.float32) -> onnx.TensorProto:
    """Return an initializer named `name` with `value` as an array of `dtype`."""
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def constant_node(name: str, value, dtype=np.float32) -> onnx.NodeProto:
    """Return a Constant node whose output `name` has `value`."""
    return helper.make_node("Constant", [], [name], value=constant(f"{name}_value", value, dtype))


def add_scalar(draw, nodes: list, initializers: list, name: str, value: float) -> None:
    """Add a float constant as a scalar or [1]-shaped initializer or Constant node.

    `draw` is hypothesis' draw function, which picks the form.
    """
    array = [value] if draw(st.booleans()) else value
    if draw(st.booleans()):
        nodes.append(constant_node(name, array))
    else:
        initializers.append(constant(name, array))


def build_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Sequence[int]],
    outputs: Sequence[str],
    initializers: Sequence[onnx.TensorProto] = (),
    opset: int = 18,
    input_initializers: Sequence[str] = (),
    output_shapes: Mapping[str, Sequence[int]] | None = None,
) -> onnx.ModelProto:
    """Build a float model and give its outputs the types that shape inference finds.

    Names in `input_initializers` are initializers that are also graph inputs.
    `output_shapes` gives float outputs whose shape inference cannot find.
    """
    graph_inputs = [
        helper.make_tensor_value_info(name, FLOAT, shape) for name, shape in inputs.items()
    ]
    for tensor in initializers:
        if tensor.name in input_initializers:
            info = helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
            graph_inputs.append(info)
    graph = helper.make_graph(
        list(nodes),
        "rule_test",
        graph_inputs,
        [helper.make_value_info(name, onnx.TypeProto()) for name in outputs],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 18 else 10
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {info.name: info for info in inferred.graph.value_info}
    known.update({info.name: info for info in inferred.graph.output})
    for name, shape in (output_shapes or {}).items():
        known[name] = helper.make_tensor_value_info(name, FLOAT, shape)
    del model.graph.output[:]
    model.graph.output.extend(known[name] for name in outputs)
    onnx.checker.check_model(model, full_check=True)
    return model


def run_model(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run `model` in onnxruntime on the CPU with every graph optimization turned off."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, dict(feeds))


def random_feeds(
    model: onnx.ModelProto, seed: int = 0, low: float = -3.0, high: float = 3.0
) -> dict[str, np.ndarray]:
    """Return uniform random float inputs for every graph input that is not an initializer."""
    rng = np.random.default_rng(seed)
    initializer_names = {tensor.name for tensor in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializer_names:
            continue
        shape = [dim.dim_value for dim in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.uniform(low, high, size=shape).astype(np.float32)
    return feeds


def assert_rewrite(
    model: onnx.ModelProto,
    rules: RuleSet,
    expected_matches: Mapping[str, int],
    contract: Contract,
    feeds: Mapping[str, np.ndarray] | None = None,
) -> RewriteResult:
    """Apply `rules` and assert the properties every rule must have; return the result."""
    before = model.SerializeToString()
    result = apply_rules(model, rules)

    assert model.SerializeToString() == before, "apply_rules changed its input model"
    for name, count in expected_matches.items():
        assert result.matches(name) == count, f"{name}: {result.rules[name]}"
    onnx.checker.check_model(result.model, full_check=True)

    feeds = random_feeds(model) if feeds is None else feeds
    expected = run_model(model, feeds)
    actual = run_model(result.model, feeds)
    for reference, value in zip(expected, actual, strict=True):
        atol = contract.atol
        if contract.kind == "exact" and reference.size:
            # Rounding error follows the size of the values summed, not of each result:
            # an output near zero that cancels terms of a few hundred is off by more
            # than atol alone.
            atol *= max(1.0, float(np.abs(reference).max()))
        np.testing.assert_allclose(value, reference, rtol=contract.rtol, atol=atol)
    return result


def op_types(model: onnx.ModelProto) -> list[str]:
    """Return the op types of the main graph's nodes, in order."""
    return [node.op_type for node in model.graph.node]
