"""Write a plan into the model: QuantizeLinear and DequantizeLinear nodes, stored integers.

Activations get a QuantizeLinear/DequantizeLinear pair right after their producer (or at
the start of the graph for graph inputs). Constants (weights, biases and constant inputs)
are stored as integer initializers followed by a DequantizeLinear, unless
AddQDQPairToWeight keeps weights float with a pair. Each planned node input is rewired to
its target's dequantized value. Every other consumer of a quantized producer output
reads the dequantized value too, so onnxruntime can fuse the producer into an integer
kernel. A quantized graph output keeps its name on the dequantized value.

A constant is quantized in the graph that defines it. A weight of an If, Loop or Scan
body gets its integer initializer and DequantizeLinear at the start of that body. A
weight that a body reads from an enclosing graph gets them in that graph, so it is
dequantized once per run of that graph and shared by every body that reads it.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from qrewrite.model.graph_utils import main_graph_uses, node_order
from qrewrite.model.names import NameAllocator
from qrewrite.quantization.plan import Plan
from qrewrite.quantization.qparams import QuantParams, quantize
from qrewrite.quantization.selection import Role, Target
from qrewrite.quantization.subgraphs import ScopedNames

logger = logging.getLogger(__name__)

# Constants with more elements than this are quantized a slice at a time, because
# `quantize` works in float64 and allocates two arrays of its input's size. MiniLM-L6's word
# embedding (11.7 M elements) took 188 MB at once.
_QUANTIZE_SLICE_ELEMENTS = 1 << 20


def _quantize_in_slices(data: np.ndarray, params: QuantParams) -> np.ndarray:
    """Return `quantize(data, params)`, computed a slice at a time along a non-channel axis.

    Each element is computed by the same float64 operations, so the result is identical.
    Blocked parameters have a scale per block of every row, so they are not sliced.
    """
    channel_axis = None if params.axis is None else params.axis % max(data.ndim, 1)
    slice_axes = [axis for axis in range(data.ndim) if axis != channel_axis]
    small = data.size <= _QUANTIZE_SLICE_ELEMENTS
    if small or not slice_axes or params.block_size is not None or np.ndim(params.scale) > 1:
        return quantize(data, params)
    axis = max(slice_axes, key=lambda candidate: data.shape[candidate])
    length = data.shape[axis]
    step = max(1, _QUANTIZE_SLICE_ELEMENTS * length // data.size)
    parts = []
    for start in range(0, length, step):
        index: list[slice] = [slice(None)] * data.ndim
        index[axis] = slice(start, start + step)
        parts.append(quantize(data[tuple(index)], params))
    return np.concatenate(parts, axis=axis)


class _Writer:
    def __init__(self, model: ir.Model, plan: Plan, *, qdq_pair_for_constants: bool) -> None:
        self.model = model
        self.graph = model.graph
        self.plan = plan
        self.names = NameAllocator(model)
        # Keys and first nodes are taken before any edit, so created nodes are not in them.
        self.scoped = ScopedNames(self.graph)
        self.values = self.scoped.values
        self.first_nodes = {
            id(graph): next(iter(graph), None)
            for graph in (self.graph, *(body.graph for body in self.scoped.bodies))
        }
        self.qdq_pair_for_constants = qdq_pair_for_constants
        self.created: set[int] = set()
        self.dequantized: dict[str, ir.Value] = {}
        # Float initializers of bodies that a quantized copy replaces.
        self.replaced_body_initializers: list[ir.Value] = []

    def _initializer(self, base: str, array: np.ndarray, graph: ir.Graph) -> ir.Value:
        name = self.names.fresh(base)
        # ir.Tensor directly: ir.tensor spends most of its time on Protocol isinstance checks.
        tensor = ir.Tensor(array, name=name)
        value = ir.Value(
            name=name,
            const_value=tensor,
            type=ir.TensorType(tensor.dtype),
            shape=ir.Shape(array.shape),
        )
        graph.register_initializer(value)
        return value

    def _place(self, nodes: list[ir.Node], after: ir.Node | None, graph: ir.Graph) -> None:
        self.created.update(id(node) for node in nodes)
        first_node = self.first_nodes.get(id(graph))
        if after is not None:
            graph.insert_after(after, nodes)
        elif first_node is not None:
            graph.insert_before(first_node, nodes)
        else:
            graph.extend(nodes)

    def _qdq_nodes(
        self,
        source: ir.Value,
        tensor: str,
        params: QuantParams,
        graph: ir.Graph,
        *,
        with_quantize: bool,
    ) -> tuple[list[ir.Node], ir.Value]:
        scale = self._initializer(f"{tensor}_scale", params.scale, graph)
        zero_point = self._initializer(f"{tensor}_zero_point", params.zero_point_array(), graph)
        attributes: dict[str, int] = {}
        if params.axis is not None:
            attributes["axis"] = params.axis
        if params.block_size is not None:
            attributes["block_size"] = params.block_size
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
        # New names start with the tensor's own name, because a body tensor's key adds
        # its path.
        base = source.name or target.tensor
        graph = source.graph or self.graph
        pair = self.qdq_pair_for_constants and target.role is Role.WEIGHT
        in_body = graph is not self.graph
        if target.constant and in_body and source.const_value is not None:
            self.replaced_body_initializers.append(source)
        if target.constant and not pair:
            data = self.plan.constants[target.key]
            stored = self._initializer(
                f"{base}_quantized", _quantize_in_slices(data, params), graph
            )
            nodes, dequantized = self._qdq_nodes(stored, base, params, graph, with_quantize=False)
            dequantized.shape = ir.Shape(data.shape)
            self._place(nodes, None, graph)
        elif target.constant:
            data = self.plan.constants[target.key]
            float_value = self._initializer(f"{base}_float", data.astype(np.float32), graph)
            nodes, dequantized = self._qdq_nodes(
                float_value, base, params, graph, with_quantize=True
            )
            self._place(nodes, None, graph)
        else:
            nodes, dequantized = self._qdq_nodes(source, base, params, graph, with_quantize=True)
            self._place(nodes, source.producer(), graph)
        self.dequantized[target.key] = dequantized

    def remove_replaced_body_initializers(self) -> None:
        """Delete the float body initializers that nothing reads any more.

        RemoveUnusedNodesPass (onnx_ir 1.1.0) removes unused initializers of the main
        graph only.
        """
        for value in self.replaced_body_initializers:
            graph = value.graph
            if graph is None or value.uses() or value.is_graph_output():
                continue
            assert value.name is not None
            graph.initializers.pop(value.name, None)

    def rewire(self) -> None:
        nodes = self.scoped.nodes
        for (node_name, index), key in sorted(self.plan.selection.input_uses.items()):
            nodes[node_name].replace_input_with(index, self.dequantized[key])

        planned = set(self.plan.selection.input_uses)
        # Rewiring changes no node's position, so one graph order serves every lookup.
        order = node_order(self.graph)
        for tensor, key in sorted(self.plan.selection.output_targets.items()):
            source = self.values[tensor]
            dequantized = self.dequantized[key]
            for node, index in main_graph_uses(source, self.graph, order):
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
    writer.remove_replaced_body_initializers()
    logger.debug("materialized %d targets", len(plan.selection.targets))
    return result
