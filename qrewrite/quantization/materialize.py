"""Write a plan into the model: QuantizeLinear and DequantizeLinear nodes, stored integers.

Activations get a QuantizeLinear/DequantizeLinear pair right after their producer (or at
the start of the graph for graph inputs). Constants (weights, biases and constant inputs)
are stored as integer initializers followed by a DequantizeLinear, unless
AddQDQPairToWeight keeps weights float with a pair. Each planned node input is rewired to
its target's dequantized value. Every other consumer of a quantized producer output
reads the dequantized value too, so onnxruntime can fuse the producer into an integer
kernel. A quantized graph output keeps its name on the dequantized value.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from qrewrite.model.graph_utils import main_graph_uses, values_by_name
from qrewrite.model.names import NameAllocator
from qrewrite.quantization.plan import Plan
from qrewrite.quantization.qparams import QuantParams, quantize
from qrewrite.quantization.selection import Role, Target

logger = logging.getLogger(__name__)


class _Writer:
    def __init__(self, model: ir.Model, plan: Plan, *, qdq_pair_for_constants: bool) -> None:
        self.model = model
        self.graph = model.graph
        self.plan = plan
        self.names = NameAllocator(model)
        self.values = values_by_name(self.graph)
        self.first_node = next(iter(self.graph), None)
        self.qdq_pair_for_constants = qdq_pair_for_constants
        self.created: set[int] = set()
        self.dequantized: dict[str, ir.Value] = {}

    def _initializer(self, base: str, array: np.ndarray) -> ir.Value:
        name = self.names.fresh(base)
        tensor = ir.tensor(array, name=name)
        value = ir.Value(
            name=name,
            const_value=tensor,
            type=ir.TensorType(tensor.dtype),
            shape=ir.Shape(array.shape),
        )
        self.graph.register_initializer(value)
        return value

    def _place(self, nodes: list[ir.Node], after: ir.Node | None) -> None:
        self.created.update(id(node) for node in nodes)
        if after is not None:
            self.graph.insert_after(after, nodes)
        elif self.first_node is not None:
            self.graph.insert_before(self.first_node, nodes)
        else:
            self.graph.extend(nodes)

    def _qdq_nodes(
        self, source: ir.Value, tensor: str, params: QuantParams, *, with_quantize: bool
    ) -> tuple[list[ir.Node], ir.Value]:
        scale = self._initializer(f"{tensor}_scale", params.scale)
        zero_point = self._initializer(f"{tensor}_zero_point", params.zero_point_array())
        attributes = {"axis": params.axis} if params.axis is not None else {}
        nodes = []
        quantized = source
        if with_quantize:
            quantize_node = ir.node(
                "QuantizeLinear",
                [source, scale, zero_point],
                attributes,
                name=self.names.fresh(f"{tensor}_QuantizeLinear"),
            )
            quantized = quantize_node.outputs[0]
            quantized.name = self.names.fresh(f"{tensor}_quantized")
            quantized.type = ir.TensorType(ir.DataType(params.data_type.onnx_type))
            quantized.shape = source.shape
            nodes.append(quantize_node)
        dequantize_node = ir.node(
            "DequantizeLinear",
            [quantized, scale, zero_point],
            attributes,
            name=self.names.fresh(f"{tensor}_DequantizeLinear"),
        )
        dequantized = dequantize_node.outputs[0]
        dequantized.name = self.names.fresh(f"{tensor}_dequantized")
        dequantized.type = ir.TensorType(ir.DataType.FLOAT)
        dequantized.shape = source.shape
        nodes.append(dequantize_node)
        return nodes, dequantized

    def write_target(self, target: Target) -> None:
        params = self.plan.params[target.key]
        source = self.values[target.tensor]
        pair = self.qdq_pair_for_constants and target.role is Role.WEIGHT
        if target.constant and not pair:
            data = self.plan.constants[target.key]
            stored = self._initializer(f"{target.tensor}_quantized", quantize(data, params))
            nodes, dequantized = self._qdq_nodes(stored, target.tensor, params, with_quantize=False)
            dequantized.shape = ir.Shape(data.shape)
            self._place(nodes, None)
        elif target.constant:
            data = self.plan.constants[target.key]
            float_value = self._initializer(f"{target.tensor}_float", data.astype(np.float32))
            nodes, dequantized = self._qdq_nodes(
                float_value, target.tensor, params, with_quantize=True
            )
            self._place(nodes, None)
        else:
            nodes, dequantized = self._qdq_nodes(source, target.tensor, params, with_quantize=True)
            self._place(nodes, source.producer() if source.producer() is not None else None)
        self.dequantized[target.key] = dequantized

    def rewire(self) -> None:
        nodes = {node.name: node for node in self.graph if id(node) not in self.created}
        for (node_name, index), key in sorted(self.plan.selection.input_uses.items()):
            nodes[node_name].replace_input_with(index, self.dequantized[key])

        planned = set(self.plan.selection.input_uses)
        for tensor, key in sorted(self.plan.selection.output_targets.items()):
            source = self.values[tensor]
            dequantized = self.dequantized[key]
            for node, index in main_graph_uses(source, self.graph):
                if id(node) in self.created or (node.name, index) in planned:
                    continue
                node.replace_input_with(index, dequantized)
            if source.is_graph_output():
                self._move_output_name(source, dequantized)

    def _move_output_name(self, source: ir.Value, dequantized: ir.Value) -> None:
        name = source.name or ""
        source.name = self.names.fresh(f"{name}_float")
        dequantized.name = name
        outputs = self.graph.outputs
        for index, output in enumerate(outputs):
            if output is source:
                outputs[index] = dequantized


def materialize(model: ir.Model, plan: Plan, *, qdq_pair_for_constants: bool) -> ir.Model:
    """Return a copy of `model` with the plan's Q/DQ nodes; `model` is not changed."""
    result = model.clone()
    writer = _Writer(result, plan, qdq_pair_for_constants=qdq_pair_for_constants)
    for key in sorted(plan.selection.targets):
        writer.write_target(plan.selection.targets[key])
    writer.rewire()
    RemoveUnusedNodesPass()(result)
    logger.debug("materialized %d targets", len(plan.selection.targets))
    return result
