"""Select what to quantize: one `Target` per Q/DQ to insert, and which node input uses it.

The selection depends only on the graph and the config, not on calibration data, so
calibration reads from it which tensors need a range. Nodes are visited in graph
(topological) order. A consumer reuses its producer's output quantization when the data
types agree. Otherwise it gets a Q/DQ pair of its own on the float tensor.

With EnableSubgraph, the nodes in If, Loop and Scan bodies at any depth get their
weights quantized too, keyed as `subgraphs.ScopedNames` describes. Their activations
stay float: calibration reduces main-graph tensors only, so body tensors have no range.
"""

from __future__ import annotations

import enum
import logging

import attrs
import onnx_ir as ir

from qrewrite.config import QConfig, QLayerConfig, QTensorConfig
from qrewrite.config.enums import QuantGranularity
from qrewrite.errors import ConfigError
from qrewrite.model.graph_utils import constant_array, is_float
from qrewrite.quantization.narrow_float import narrow_float_nodes
from qrewrite.quantization.node_config import node_layer_configs
from qrewrite.quantization.ops import (
    FLOAT_INPUTS_WITH_4BIT,
    FLOAT_ONLY_CONSUMERS,
    FLOAT_OUTPUTS_WITH_4BIT,
    OP_ROLES,
    PER_CHANNEL_BY_DEFAULT,
    OpRole,
    role_of,
)
from qrewrite.quantization.subgraphs import ScopedNames, body_layer_configs

logger = logging.getLogger(__name__)


_ELTWISE_OPS = frozenset({"Mul", "Add", "Sub", "Div", "Min", "Max"})


def _matmul_block_axis(node: ir.Node, rank: int) -> int:
    return max(rank - 2, 0)


def _gemm_block_axis(node: ir.Node, rank: int) -> int:
    trans_b = node.attributes.get("transB")
    return 1 if trans_b is not None and trans_b.as_int() else 0


def _conv_block_axis(node: ir.Node, rank: int) -> int:
    return 1


# Axis of the reduction (input-channel) dimension of a weight, along which
# QuantGranularity.Group cuts blocks. onnxruntime 1.32 runs a blocked DequantizeLinear
# before these ops for int4, uint4, int8 and uint8 weights, with the one exception that
# `_check_runtime_blocks` rejects.
BLOCK_AXIS_RULES = {
    "MatMul": _matmul_block_axis,
    "Gemm": _gemm_block_axis,
    "Conv": _conv_block_axis,
}


class Role(enum.Enum):
    """The part a quantized tensor plays for its consumer."""

    ACTIVATION = "activation"
    WEIGHT = "weight"
    BIAS = "bias"


@attrs.frozen
class Target:
    """One quantization of one tensor: a Q/DQ pair, or a DQ of stored integers."""

    key: str
    tensor: str
    role: Role
    spec: QTensorConfig | None
    axis: int | None = None
    constant: bool = False
    # Elements per block along `axis` for QuantGranularity.Group; None otherwise.
    block_size: int | None = None


@attrs.frozen
class BiasLink:
    """A bias whose scale is the product of its node's input and weight scales."""

    bias_key: str
    activation_key: str
    weight_key: str
    node: str


@attrs.frozen
class Selection:
    """Everything to quantize, before any scale is known."""

    targets: dict[str, Target]
    # (node name, input index) -> target key
    input_uses: dict[tuple[str, int], str]
    # tensor name -> key of the quantization of its producer's output
    output_targets: dict[str, str]
    share_groups: tuple[tuple[str, ...], ...]
    bias_links: tuple[BiasLink, ...]
    # Main-graph nodes only. Body nodes with quantized weights are in `body_nodes`.
    quantized_nodes: tuple[str, ...]
    # tensor name -> why it stays float although a quantized node touches it
    kept_float: dict[str, str]
    # One line per planner default that changed what the config asked for.
    notes: tuple[str, ...] = ()
    # Scoped keys of the If, Loop and Scan body nodes whose weights are quantized.
    body_nodes: tuple[str, ...] = ()


def _unsigned_relu(node: ir.Node) -> bool:
    if node.op_type == "Relu":
        return True
    if node.op_type != "Clip":
        return False
    low = node.attributes.get("min")
    if low is not None:
        return low.as_float() == 0.0
    if len(node.inputs) > 1:
        array = constant_array(node.inputs[1])
        return array is not None and array.size == 1 and float(array.reshape(())) == 0.0
    return False


def _float_only_reason(value: ir.Value) -> str | None:
    for use in value.uses():
        if use.node.op_type in FLOAT_ONLY_CONSUMERS:
            return f"feeds {use.node.op_type} {use.node.name!r}"
        if use.node.op_type == "Cast":
            to = use.node.attributes.get("to")
            if to is not None and not ir.DataType(to.as_int()).is_floating_point():
                return f"feeds Cast to {ir.DataType(to.as_int()).name} {use.node.name!r}"
    return None


class _Selector:
    def __init__(self, graph: ir.Graph, config: QConfig) -> None:
        self.graph = graph
        self.names = ScopedNames(graph)
        self.config = config
        self.options = config.options
        self.targets: dict[str, Target] = {}
        self.input_uses: dict[tuple[str, int], str] = {}
        self.output_targets: dict[str, str] = {}
        self.groups: list[tuple[str, ...]] = []
        self.bias_links: list[BiasLink] = []
        self.quantized: list[str] = []
        self.kept_float: dict[str, str] = {}
        self.spec_ids: dict[QTensorConfig, int] = {}
        self.per_channel_by_default = 0
        # Weight uses of op types without a block rule, quantized per channel instead.
        self.group_fallbacks: dict[str, int] = {}
        self.body_nodes: list[str] = []
        # Keys of body tensors that a quantizable body node reads or writes as float
        # activations, because no range is calibrated for them.
        self.float_body_activations: set[str] = set()

        extra = set(self.options.ExtraOpTypesToQuantize or ())
        if self.options.QuantizeAllOpTypes:
            extra |= {node.op_type for node in graph}
        self.extra_types = frozenset(extra)
        self.allowed_types = (
            None
            if self.options.OpTypesToQuantize is None
            else frozenset(self.options.OpTypesToQuantize) | self.extra_types
        )

    def _spec_id(self, spec: QTensorConfig) -> int:
        return self.spec_ids.setdefault(spec, len(self.spec_ids))

    def _eligible(self, value: ir.Value | None) -> bool:
        if value is None or not is_float(value):
            return False
        reason = _float_only_reason(value)
        if reason is not None:
            self.kept_float.setdefault(self.names.value_key(value), reason)
            return False
        return True

    def _runtime_allows(self, value: ir.Value, spec: QTensorConfig) -> bool:
        """Check that onnxruntime can load this tensor quantized with `spec` (see ops.py)."""
        if spec.data_type.bits != 4:
            return True
        producer = value.producer()
        blocked = producer is not None and producer.op_type in FLOAT_OUTPUTS_WITH_4BIT
        blocked = blocked or any(use.node.op_type in FLOAT_INPUTS_WITH_4BIT for use in value.uses())
        if blocked:
            self.kept_float.setdefault(
                self.names.value_key(value),
                "onnxruntime cannot load it with 4-bit activations next to MaxPool or Clip",
            )
        return not blocked

    def _add(self, target: Target) -> str:
        self.targets.setdefault(target.key, target)
        return target.key

    def _activation_key(
        self, value: ir.Value, spec: QTensorConfig, node: ir.Node, *, dedicated: bool
    ) -> str:
        name = self.names.value_key(value)
        producer_key = self.output_targets.get(name)
        if producer_key is not None and not dedicated:
            producer_spec = self.targets[producer_key].spec
            if producer_spec is not None and producer_spec.data_type is spec.data_type:
                return producer_key
        suffix = f"@{self.names.node_key(node)}" if dedicated else ""
        key = f"{name}|a{self._spec_id(spec)}{suffix}"
        constant = constant_array(value) is not None
        return self._add(Target(key, name, Role.ACTIVATION, spec, None, constant))

    def _weight_layout(
        self, node: ir.Node, rule: object, rank: int, spec: QTensorConfig
    ) -> tuple[int | None, int | None]:
        """Return the weight's quantization axis and block size (None, None: per tensor)."""
        if spec.quant_granularity is not QuantGranularity.Group:
            return self._weight_axis(node, rule, rank, spec), None
        block_rule = BLOCK_AXIS_RULES.get(node.op_type)
        if block_rule is None or rank < 1:
            self.group_fallbacks[node.op_type] = self.group_fallbacks.get(node.op_type, 0) + 1
            return self._weight_axis(node, rule, rank, spec, per_channel=True), None
        return block_rule(node, rank), spec.group_size

    def _weight_axis(
        self,
        node: ir.Node,
        rule: object,
        rank: int,
        spec: QTensorConfig,
        *,
        per_channel: bool = False,
    ) -> int | None:
        requested = per_channel or spec.quant_granularity is QuantGranularity.Channel
        by_default = (
            self.options.PerChannelWeightsByDefault
            and node.op_type in PER_CHANNEL_BY_DEFAULT
            and rank >= 2
        )
        if not (requested or by_default) or rank < 1:
            return None
        if by_default and not requested:
            self.per_channel_by_default += 1
        overrides = self.options.QDQOpTypePerChannelSupportToAxis
        axis = overrides[node.op_type] if node.op_type in overrides else rule(node, rank)  # type: ignore[operator]
        axis = axis + rank if axis < 0 else axis
        if not 0 <= axis < rank:
            logger.warning(
                "per-channel axis %d does not fit the rank-%d weight of %s; using per-tensor",
                axis,
                rank,
                node.name,
            )
            return None
        return axis

    def _weight_key(
        self,
        value: ir.Value,
        spec: QTensorConfig,
        axis: int | None,
        block_size: int | None = None,
    ) -> str:
        name = self.names.value_key(value)
        key = f"{name}|w{self._spec_id(spec)}:{axis}"
        if block_size is not None:
            key += f"/{block_size}"
        return self._add(Target(key, name, Role.WEIGHT, spec, axis, True, block_size))

    def _node_selected(self, node: ir.Node, role: OpRole) -> bool:
        if self.allowed_types is not None and node.op_type not in self.allowed_types:
            return False
        b_input = node.inputs[1] if len(node.inputs) > 1 else None
        if (
            node.op_type == "MatMul"
            and self.options.MatMulConstBOnly
            and constant_array(b_input) is None
        ):
            return False
        if role.shares_input_params and not self.options.ForceQuantizeNoInputCheck:
            # A data-movement op follows its input: quantized when the input already is,
            # or when the input is a constant table (an embedding read by Gather), which
            # is then stored as integers.
            data = node.inputs[0] if node.inputs else None
            if data is None:
                return False
            return (
                self.names.value_key(data) in self.output_targets
                or constant_array(data) is not None
            )
        return True

    def visit(
        self,
        node: ir.Node,
        layer_activation: QTensorConfig | None,
        layer_weight: QTensorConfig | None,
        role: OpRole,
    ) -> bool:
        """Select the targets of one node; return whether any input or output got one."""
        node_key = self.names.node_key(node)
        dedicated = self.options.DedicatedQDQPair
        activation = None if self.options.WeightsOnly else layer_activation
        weight_positions = {index: rule for index, rule in role.weight_inputs}
        per_tensor_positions = set(role.per_tensor_weight_inputs)
        # Without AlignEltwiseQuantType, constant operands of element-wise ops are weights.
        eltwise_weights = (
            node.op_type in _ELTWISE_OPS and not self.options.AlignEltwiseQuantType
        )
        touched = False

        input_keys: dict[int, str] = {}
        weight_keys: dict[int, str] = {}
        for index, value in enumerate(node.inputs):
            if index == role.bias_input or not self._eligible(value):
                continue
            assert value is not None
            data = constant_array(value)
            is_weight_slot = (
                index in weight_positions
                or index in per_tensor_positions
                or (eltwise_weights and data is not None)
            )
            if is_weight_slot and data is not None:
                if layer_weight is None:
                    continue
                axis = block_size = None
                if index in weight_positions:
                    axis, block_size = self._weight_layout(
                        node, weight_positions[index], data.ndim, layer_weight
                    )
                weight_keys[index] = self._weight_key(value, layer_weight, axis, block_size)
                self.input_uses[(node_key, index)] = weight_keys[index]
                touched = True
                continue
            in_activation_slot = (
                index in role.activation_inputs or role.all_inputs_are_activations or is_weight_slot
            )
            if activation is None or not in_activation_slot:
                continue
            if not self._runtime_allows(value, activation):
                continue
            key = self._activation_key(value, activation, node, dedicated=dedicated)
            input_keys[index] = key
            self.input_uses[(node_key, index)] = key
            touched = True

        self._check_runtime_blocks(node, input_keys, weight_keys)
        self._visit_bias(node, role, input_keys, weight_keys, layer_weight)
        output_keys = self._visit_outputs(node, role, activation)
        touched = touched or bool(output_keys)

        if role.shares_input_params and 0 in input_keys and output_keys:
            self.groups.append((input_keys[0], *output_keys))
        return touched

    def _check_runtime_blocks(
        self, node: ir.Node, input_keys: dict[int, str], weight_keys: dict[int, str]
    ) -> None:
        """Raise ConfigError for blocked weights that onnxruntime 1.32 cannot run.

        With a quantized input and 8-bit blocked weights, onnxruntime 1.32 fuses MatMul
        into MatMulIntegerToFloat, which then fails at run time because it takes only
        per-column weight scales.
        """
        if node.op_type != "MatMul" or 0 not in input_keys or 1 not in weight_keys:
            return
        weight = self.targets[weight_keys[1]]
        if weight.block_size is None or weight.spec is None or weight.spec.data_type.bits != 8:
            return
        raise ConfigError(
            f"MatMul {node.name!r}: onnxruntime 1.32 fails to run a MatMul with a quantized "
            f"input and 8-bit blocked weights ({weight.spec.data_type.value}, "
            f"group_size={weight.block_size}); use Int4Spec or UInt4Spec weights, "
            "WeightsOnly=True, or QuantGranularity.Channel"
        )

    def _visit_bias(
        self,
        node: ir.Node,
        role: OpRole,
        input_keys: dict[int, str],
        weight_keys: dict[int, str],
        layer_weight: QTensorConfig | None,
    ) -> None:
        index = role.bias_input
        if index is None or index >= len(node.inputs) or not self.options.QuantizeBias:
            return
        bias = node.inputs[index]
        weight_index = role.weight_inputs[0][0] if role.weight_inputs else None
        if (
            bias is None
            or not is_float(bias)
            or constant_array(bias) is None
            or 0 not in input_keys
            or weight_index not in weight_keys
            or layer_weight is None
        ):
            return
        name = self.names.value_key(bias)
        if self.targets[weight_keys[weight_index]].block_size is not None:
            # A bias scale is input scale x weight scale per output channel, and blocked
            # weights have one scale per block, not per output channel.
            self.kept_float.setdefault(name, "has blocked (QuantGranularity.Group) weights")
            return
        node_key = self.names.node_key(node)
        use = (node_key, index)
        weight_key = weight_keys[weight_index]
        if self.options.Int32Bias or self.options.Int16Bias:
            key = self._add(Target(f"{name}|b@{node_key}", name, Role.BIAS, None, None, True))
            self.bias_links.append(BiasLink(key, input_keys[0], weight_key, node_key))
        else:
            axis = 0 if self.targets[weight_key].axis is not None else None
            key = self._weight_key(bias, layer_weight, axis)
        self.input_uses[use] = key

    def _visit_outputs(
        self, node: ir.Node, role: OpRole, activation: QTensorConfig | None
    ) -> list[str]:
        if (
            activation is None
            or not role.quantize_outputs
            or node.op_type in self.options.OpTypesToExcludeOutputQuantization
        ):
            return []
        spec = activation
        if self.options.UseUnsignedReLU and _unsigned_relu(node) and spec.symmetric:
            spec = attrs.evolve(spec, symmetric=False)
        keys = []
        for output in node.outputs:
            name = self.names.value_key(output)
            if not self._eligible(output) or name in self.output_targets:
                continue
            if not self._runtime_allows(output, spec):
                continue
            key = f"{name}|a{self._spec_id(spec)}"
            self._add(Target(key, name, Role.ACTIVATION, spec, None, False))
            self.output_targets[name] = key
            keys.append(key)
        return keys

    def visit_body_node(self, node: ir.Node, layer: QLayerConfig, role: OpRole) -> None:
        """Select the weights of one If, Loop or Scan body node; its activations stay float.

        A bias that needs the input's scale stays float too, as in the main graph when
        the input is not quantized.
        """
        if self.visit(node, None, layer.weight, role):
            self.body_nodes.append(self.names.node_key(node))
        if layer.activation is None or self.options.WeightsOnly:
            return
        weight_slots = {index for index, _ in role.weight_inputs}
        weight_slots |= set(role.per_tensor_weight_inputs)
        for index, value in enumerate(node.inputs):
            in_activation_slot = (
                index in role.activation_inputs
                or role.all_inputs_are_activations
                or index in weight_slots
            )
            if in_activation_slot and index != role.bias_input and self._float_activation(value):
                assert value is not None
                self.float_body_activations.add(self.names.value_key(value))
        excluded_outputs = node.op_type in self.options.OpTypesToExcludeOutputQuantization
        if role.quantize_outputs and not excluded_outputs:
            for output in node.outputs:
                if self._float_activation(output):
                    self.float_body_activations.add(self.names.value_key(output))

    def _float_activation(self, value: ir.Value | None) -> bool:
        return is_float(value) and constant_array(value) is None


def select(graph: ir.Graph, config: QConfig) -> Selection:
    """Choose the targets of every quantized node of the main graph.

    With EnableSubgraph, also choose the weights of the nodes in If, Loop and Scan
    bodies.
    """
    layer_configs = node_layer_configs(graph, config)
    selector = _Selector(graph, config)
    narrow = narrow_float_nodes(graph)

    for node in graph:
        layer = layer_configs.get(node.name or "")
        if layer is None or node in narrow:
            continue
        role = role_of(node, selector.extra_types)
        if role is None or not selector._node_selected(node, role):
            continue
        if selector.visit(node, layer.activation, layer.weight, role):
            selector.quantized.append(node.name or "")

    if config.options.EnableSubgraph:
        _select_bodies(selector, layer_configs)

    for tensor, reason in selector.kept_float.items():
        logger.info("tensor %r stays float: it %s", tensor, reason)

    return Selection(
        targets=selector.targets,
        input_uses=selector.input_uses,
        output_targets=selector.output_targets,
        share_groups=tuple(selector.groups),
        bias_links=tuple(selector.bias_links),
        quantized_nodes=tuple(selector.quantized),
        kept_float=selector.kept_float,
        notes=_selection_notes(selector),
        body_nodes=tuple(selector.body_nodes),
    )


def _select_bodies(selector: _Selector, main_configs: dict[str, QLayerConfig | None]) -> None:
    names = selector.names
    configs = body_layer_configs(names, main_configs, selector.config)
    extra_types = selector.extra_types
    if selector.options.QuantizeAllOpTypes:
        extra_types |= {node.op_type for body in names.bodies for node in body.graph}
    for body in names.bodies:
        for node in body.graph:
            layer = configs.get(names.node_key(node))
            if layer is None:
                continue
            role = role_of(node, extra_types)
            if role is None or not selector._node_selected(node, role):
                continue
            selector.visit_body_node(node, layer, role)

    quantized_bodies = set(selector.body_nodes)
    body_weights = sum(1 for node_key, _ in selector.input_uses if node_key in quantized_bodies)
    logger.info(
        "EnableSubgraph: quantized %d weight(s) of %d node(s) found in %d subgraph(s) (the "
        "branches of If nodes and the bodies of Loop and Scan nodes); %d activation "
        "tensor(s) inside them stay float",
        body_weights,
        len(selector.body_nodes),
        len(names.bodies),
        len(selector.float_body_activations),
    )


def _selection_notes(selector: _Selector) -> tuple[str, ...]:
    notes = []
    for op_type, count in sorted(selector.group_fallbacks.items()):
        notes.append(
            f"QuantGranularity.Group: {count} weight use(s) of {op_type} quantized per "
            "channel, because blocks are built for MatMul, Gemm and Conv weights only"
        )
    if selector.per_channel_by_default:
        notes.append(
            f"PerChannelWeightsByDefault: {selector.per_channel_by_default} weight use(s) of "
            "Conv, ConvTranspose, Gemm or MatMul quantized per channel although the spec "
            "asked for per-tensor"
        )
    if selector.options.EnableSubgraph and selector.names.bodies:
        notes.append(
            f"EnableSubgraph: weights of {len(selector.body_nodes)} node(s) in If, Loop and "
            f"Scan bodies stored as integers; {len(selector.float_body_activations)} "
            "activation tensor(s) in those bodies stay float because calibration does not "
            "collect ranges inside bodies"
        )
    return tuple(notes)


def share_groups(selection: Selection) -> list[list[str]]:
    """Targets that share parameters, each group ordered with its upstream target first.

    The first target's spec decides the group's data type, symmetry and scale type.
    """
    order = {key: index for index, key in enumerate(selection.targets)}
    parent = {key: key for key in selection.targets}

    def find(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for group in selection.share_groups:
        for other in group[1:]:
            root_a, root_b = find(group[0]), find(other)
            if root_a != root_b:
                parent[root_b] = root_a

    members: dict[str, list[str]] = {}
    for key in selection.targets:
        members.setdefault(find(key), []).append(key)
    return [sorted(group, key=order.__getitem__) for group in members.values()]


def calibration_specs(selection: Selection, graph: ir.Graph) -> dict[str, QTensorConfig]:
    """Tensor name -> the spec its range is computed for, for every calibrated activation.

    Constants and initializers that are graph inputs get their range from their data
    instead. A tensor in a share group is calibrated for the group's spec.
    """
    initializers = set(graph.initializers)
    specs: dict[str, QTensorConfig] = {}
    for group in share_groups(selection):
        head = selection.targets[group[0]]
        for key in group:
            target = selection.targets[key]
            if (
                target.role is Role.ACTIVATION
                and not target.constant
                and target.tensor not in initializers
                and head.spec is not None
            ):
                specs.setdefault(target.tensor, head.spec)
    return specs


__all__ = [
    "OP_ROLES",
    "BiasLink",
    "Role",
    "Selection",
    "Target",
    "calibration_specs",
    "select",
    "share_groups",
]
