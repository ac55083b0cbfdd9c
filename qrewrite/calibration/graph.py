"""Build the calibration model: the float model plus reductions next to each requested tensor.

For every requested tensor `x` the builder adds nodes that reduce it to a few small
outputs, so onnxruntime can free `x` as soon as they ran and only the reduced values come
back to Python. Small tensors, chosen by the caller, become outputs themselves instead.
The reduced outputs are:

- `min`, `max`: extremes of the elements, `size`: number of elements,
- with a histogram: `exponent` k, `first_bin` b and `counts` c, where c[i] counts the
  elements in [(b + i) * 2**k, (b + i + 1) * 2**k),
- with channel peaks: max |x| of each slice along the last axis, also for small tensors.

A tensor without NaN or inf, the common case, needs only three reductions; the third, its
sum, shows whether that holds. Tensors that had NaN or inf get the masked form, which
leaves those elements out and counts them. The caller decides per tensor which form to
build (see `runner.StatsRunner`).

The histogram exponent is chosen in the graph from log2 of the range. It may come out
finer than the exponent `collectors.canonical_exponent` picks, never coarser, so the graph
writes up to `2 * HISTOGRAM_BINS + 2` bins and Python coarsens them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qrewrite.model.shapes import without_large_initializers

# Bins of a canonical histogram. 2048 matches the default of onnxruntime's percentile
# calibrator; more bins cost transfer time per sample and merge time in Python.
HISTOGRAM_BINS = 2048
GRAPH_HISTOGRAM_BINS = 2 * HISTOGRAM_BINS + 2
# Smallest histogram exponent: 2**-126 is the smallest normal float32.
MIN_EXPONENT = -126
# The graph never bins finer than 2**(floor(log2(max |x|)) - 25), so bin indices stay
# below 2**27 and are exact in float32 arithmetic.
GRAPH_EXPONENT_FLOOR_OFFSET = 25

# ScatterElements with reduction "add" exists from opset 16.
HISTOGRAM_MIN_OPSET = 16
# IsNaN and Where exist from opset 9.
MIN_MAX_MIN_OPSET = 9
# ReduceMax takes its axes as an input from opset 18 on, and as an attribute before.
REDUCE_AXES_INPUT_OPSET = 18

_FLOAT_TYPES = {
    TensorProto.FLOAT,
    TensorProto.FLOAT16,
    TensorProto.BFLOAT16,
    TensorProto.DOUBLE,
}


@attrs.frozen
class StatOutputs:
    """Names of the graph outputs that carry one tensor's statistics."""

    tensor: str
    min: str
    max: str
    size: str
    # Masked: the number of NaN and inf elements. Otherwise: the sum of the elements,
    # which is finite exactly when no element is NaN or inf (or the sum overflows).
    check: str
    masked: bool
    exponent: str | None = None
    first_bin: str | None = None
    counts: str | None = None

    def names(self) -> list[str]:
        optional = [self.exponent, self.first_bin, self.counts]
        return [self.min, self.max, self.size, self.check] + [n for n in optional if n]


class _Names:
    """Fresh value and node names that cannot clash with the model's names."""

    def __init__(self, model: onnx.ModelProto) -> None:
        taken = {value for node in model.graph.node for value in (*node.input, *node.output)}
        taken |= {node.name for node in model.graph.node}
        taken |= {v.name for v in (*model.graph.input, *model.graph.output)}
        taken |= {init.name for init in model.graph.initializer}
        prefix = "qrewrite_calib"
        while any(name.startswith(prefix) for name in taken):
            prefix += "_"
        self.prefix = prefix
        self.counter = 0

    def __call__(self, hint: str) -> str:
        self.counter += 1
        return f"{self.prefix}/{self.counter}/{hint}"


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Map every typed value of the main graph to its ONNX element type."""
    try:
        inferred = onnx.shape_inference.infer_shapes(without_large_initializers(model))
    except (onnx.shape_inference.InferenceError, ValueError):
        inferred = model
    graph = inferred.graph
    types = {}
    # The copy lists the large initializers as inputs after the model's own inputs.
    inputs = graph.input[: len(model.graph.input)]
    for value in (*inputs, *graph.value_info, *graph.output):
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    return types


def default_opset(model: onnx.ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    return 1


class _Builder:
    def __init__(self, names: _Names) -> None:
        self.names = names
        self.initializers: list[TensorProto] = []
        self.constants: dict[tuple[str, object], str] = {}

    def const(self, value: float | int, dtype: type) -> str:
        key = (np.dtype(dtype).name, value)
        if key not in self.constants:
            name = self.names("const")
            self.initializers.append(numpy_helper.from_array(np.array(value, dtype), name))
            self.constants[key] = name
        return self.constants[key]

    def shape_const(self, values: list[int]) -> str:
        name = self.names("shape")
        self.initializers.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    def node(
        self, nodes: list[onnx.NodeProto], op: str, inputs: list[str], hint: str, **attrs_: Any
    ) -> str:
        output = self.names(hint)
        nodes.append(
            helper.make_node(op, inputs, [output], name=self.names(op), **attrs_)
        )
        return output


def _histogram_nodes(
    b: _Builder,
    nodes: list[onnx.NodeProto],
    pieces: list[tuple[str, str]],
    low: str,
    high: str,
) -> tuple[str, str, str]:
    """Append the nodes that bin the (finite, flat values, int32 weights) `pieces`."""
    f32 = np.float32
    inv_ln2 = b.const(1.0 / math.log(2.0), f32)
    span = b.node(nodes, "Sub", [high, low], "span")
    per_bin = b.node(nodes, "Div", [span, b.const(float(HISTOGRAM_BINS), f32)], "per_bin")
    log_per_bin = b.node(nodes, "Mul", [b.node(nodes, "Log", [per_bin], "ln"), inv_ln2], "lg")
    span_exponent = b.node(nodes, "Floor", [log_per_bin], "k_span")

    abs_low = b.node(nodes, "Abs", [low], "abs_low")
    abs_high = b.node(nodes, "Abs", [high], "abs_high")
    abs_max = b.node(nodes, "Max", [abs_low, abs_high], "abs_max")
    log_abs = b.node(nodes, "Mul", [b.node(nodes, "Log", [abs_max], "ln"), inv_ln2], "lg")
    floor_offset = b.const(float(GRAPH_EXPONENT_FLOOR_OFFSET), f32)
    abs_exponent = b.node(nodes, "Floor", [log_abs], "k_abs")
    floor_exponent = b.node(nodes, "Sub", [abs_exponent, floor_offset], "k_floor")
    exponent = b.node(
        nodes, "Max", [span_exponent, floor_exponent, b.const(float(MIN_EXPONENT), f32)], "k"
    )

    width = b.node(nodes, "Pow", [b.const(2.0, f32), exponent], "width")
    inverse_width = b.node(nodes, "Reciprocal", [width], "inv_width")
    first_bin = b.node(nodes, "Floor", [b.node(nodes, "Mul", [low, inverse_width], "lo")], "b")
    counts = b.node(
        nodes,
        "ConstantOfShape",
        [b.shape_const([GRAPH_HISTOGRAM_BINS])],
        "zeros",
        value=numpy_helper.from_array(np.array([0], np.int32)),
    )
    for values, updates in pieces:
        scaled = b.node(nodes, "Mul", [values, inverse_width], "scaled")
        # NOTE: unlike `collectors.bin_index`, a tiny negative value whose product
        # underflows to zero lands in bin 0 here instead of bin -1.
        bins = b.node(nodes, "Floor", [scaled], "bins")
        relative = b.node(nodes, "Sub", [bins, first_bin], "rel")
        # Clip after the cast: a NaN (whose statistics are discarded) casts to some
        # integer, and the clip moves it into the bins, so every index is valid.
        as_int = b.node(nodes, "Cast", [relative], "rel_int", to=TensorProto.INT32)
        last_bin = b.const(GRAPH_HISTOGRAM_BINS - 1, np.int32)
        indices = b.node(nodes, "Clip", [as_int, b.const(0, np.int32), last_bin], "idx")
        counts = b.node(
            nodes, "ScatterElements", [counts, indices, updates], "counts", axis=0, reduction="add"
        )
    return exponent, first_bin, counts


def _split_nodes(
    b: _Builder, nodes: list[onnx.NodeProto], flat: str, size: str, count: int
) -> list[str]:
    """Append the nodes that split the 1-D `flat` of `size` elements into `count` pieces.

    The pieces have ceil(size / count) elements each, except the last ones, which may
    be shorter or empty, so any size works.
    """
    i64 = np.int64
    rounded_up = b.node(nodes, "Add", [size, b.const(count - 1, i64)], "rounded_up")
    piece = b.node(nodes, "Div", [rounded_up, b.const(count, i64)], "piece")
    offsets = b.node(nodes, "Mul", [b.shape_const(list(range(count))), piece], "offsets")
    remaining = b.node(nodes, "Sub", [size, offsets], "remaining")
    sizes = b.node(nodes, "Clip", [remaining, b.const(0, i64), piece], "sizes")
    outputs = [b.names("piece") for _ in range(count)]
    nodes.append(helper.make_node("Split", [flat, sizes], outputs, name=b.names("Split"), axis=0))
    return outputs


def _reduce(
    b: _Builder, nodes: list[onnx.NodeProto], op: str, tensor: str, axis: int, opset: int
) -> str:
    if opset >= REDUCE_AXES_INPUT_OPSET:
        return b.node(nodes, op, [tensor, b.shape_const([axis])], "reduced", keepdims=0)
    return b.node(nodes, op, [tensor], "reduced", axes=[axis], keepdims=0)


def _reduce_to_last_axis(
    b: _Builder, nodes: list[onnx.NodeProto], op: str, tensor: str, rank: int, opset: int
) -> str:
    """Append `op` reductions over every axis of `tensor` but the last, one axis at a time.

    Each step reduces the second-to-last axis, which onnxruntime 1.32 runs as a
    vectorized loop. Reducing all leading axes in one node runs a scalar loop instead:
    ReduceMax of a [1, 32, 368, 368] tensor took 14 ms that way and 2.5 ms in steps
    (2-core x86_64).
    """
    current = tensor
    for axis in range(rank - 2, -1, -1):
        current = _reduce(b, nodes, op, current, axis, opset)
    return current


def _stat_nodes(
    b: _Builder,
    tensor: str,
    elem_type: int | None,
    histogram: bool,
    masked: bool,
    peak_rank: int | None = None,
    opset: int = MIN_MAX_MIN_OPSET,
    pieces: int = 1,
) -> tuple[list[onnx.NodeProto], StatOutputs, str | None]:
    """Return the nodes that reduce `tensor`, the names of their outputs, and its peaks.

    With `peak_rank`, the third result is the output of the channel peaks. Otherwise it
    is None. An unmasked histogram bins `pieces` parts of the tensor one after another.
    """
    f32, i32 = np.float32, np.int32
    nodes: list[onnx.NodeProto] = []
    peaks: str | None = None
    source = tensor
    if elem_type != TensorProto.FLOAT:
        source = b.node(nodes, "Cast", [tensor], "as_float", to=TensorProto.FLOAT)
    # Reductions without axes reduce over every axis, so only ScatterElements, which
    # takes 1-D indices, needs the flat view.
    flat = source
    if histogram:
        flat = b.node(nodes, "Reshape", [source, b.shape_const([-1])], "flat")
    size = b.node(nodes, "Size", [flat], "size")

    if masked:
        # x - x is NaN exactly when x is NaN or infinite.
        difference = b.node(nodes, "Sub", [flat, flat], "d")
        finite = b.node(nodes, "Not", [b.node(nodes, "IsNaN", [difference], "n")], "finite")
        as_int = b.node(nodes, "Cast", [finite], "f", to=TensorProto.INT64)
        finite_count = b.node(nodes, "ReduceSum", [as_int], "finite_count", keepdims=0)
        check = b.node(nodes, "Sub", [size, finite_count], "nonfinite")
        low_input = b.node(nodes, "Where", [finite, flat, b.const(math.inf, f32)], "w")
        high_input = b.node(nodes, "Where", [finite, flat, b.const(-math.inf, f32)], "w")
        low = b.node(nodes, "ReduceMin", [low_input], "min", keepdims=0)
        high = b.node(nodes, "ReduceMax", [high_input], "max", keepdims=0)
    elif peak_rank is not None:
        # The minimum and maximum of each slice along the last axis give both the
        # channel peaks and, reduced once more, the tensor's extremes. Besides the sum,
        # the full tensor is then read twice, where whole-tensor ReduceMin and ReduceMax
        # plus Abs and its ReduceMax read it four times.
        channel_min = _reduce_to_last_axis(b, nodes, "ReduceMin", source, peak_rank, opset)
        channel_max = _reduce_to_last_axis(b, nodes, "ReduceMax", source, peak_rank, opset)
        low = b.node(nodes, "ReduceMin", [channel_min], "min", keepdims=0)
        high = b.node(nodes, "ReduceMax", [channel_max], "max", keepdims=0)
        check = b.node(nodes, "ReduceSum", [flat], "sum", keepdims=0)
        # max(-min, max) is max |x| of each slice, and -inf like ReduceMax of |x| when
        # the slice is empty.
        negated_min = b.node(nodes, "Neg", [channel_min], "neg_min")
        peaks = b.node(nodes, "Max", [negated_min, channel_max], "peaks")
    else:
        low = b.node(nodes, "ReduceMin", [flat], "min", keepdims=0)
        high = b.node(nodes, "ReduceMax", [flat], "max", keepdims=0)
        check = b.node(nodes, "ReduceSum", [flat], "sum", keepdims=0)

    if masked and peak_rank is not None:
        peak_nodes, peaks = _peak_nodes(b, tensor, elem_type, peak_rank, opset)
        nodes.extend(peak_nodes)

    outputs = StatOutputs(tensor, low, high, size, check, masked)
    if histogram:
        if masked:
            # Non-finite elements are moved to the minimum and given weight 0.
            values = b.node(nodes, "Where", [finite, flat, low], "kept")
            weights = b.node(nodes, "Cast", [finite], "weights", to=TensorProto.INT32)
            binned = [(values, weights)]
        else:
            parts = [flat] if pieces <= 1 else _split_nodes(b, nodes, flat, size, pieces)
            binned = []
            for part in parts:
                shape = b.node(nodes, "Shape", [part], "shape")
                binned.append((part, b.node(nodes, "Expand", [b.const(1, i32), shape], "ones")))
        exponent, first_bin, counts = _histogram_nodes(b, nodes, binned, low, high)
        outputs = attrs.evolve(outputs, exponent=exponent, first_bin=first_bin, counts=counts)
    return nodes, outputs, peaks


def _peak_nodes(
    b: _Builder, tensor: str, elem_type: int | None, rank: int, opset: int
) -> tuple[list[onnx.NodeProto], str]:
    """Return the nodes that compute max |x| over all axes of `tensor` but the last."""
    nodes: list[onnx.NodeProto] = []
    source = tensor
    if elem_type != TensorProto.FLOAT:
        source = b.node(nodes, "Cast", [tensor], "as_float", to=TensorProto.FLOAT)
    absolute = b.node(nodes, "Abs", [source], "abs")
    return nodes, _reduce_to_last_axis(b, nodes, "ReduceMax", absolute, rank, opset)


def build_stats_model(
    model: onnx.ModelProto,
    histogram_tensors: Iterable[str],
    min_max_tensors: Iterable[str],
    masked_tensors: Iterable[str] = (),
    types: dict[str, int] | None = None,
    raw_tensors: Iterable[str] = (),
    peak_ranks: Mapping[str, int] | None = None,
    histogram_pieces: Mapping[str, int] | None = None,
) -> tuple[onnx.ModelProto, list[StatOutputs], dict[str, str], dict[str, str]]:
    """Return a copy of `model` whose outputs are the statistics of the given tensors.

    The model's own outputs are dropped, so nothing but the reduced values is kept alive.
    `masked_tensors` get the slower statistics that leave out NaN and inf; the others
    report their sum, from which the caller sees whether they need masking.
    `raw_tensors` (small ones) are not reduced but become float32 outputs themselves; the
    third result maps each of them to its output name.
    `peak_ranks` maps tensors of rank 2 or more to their rank. Each gets a float32 output
    with its channel peaks, max |x| over all axes but the last; the fourth result maps
    each of them to that output's name.
    `histogram_pieces` maps histogram tensors to the number of parts that are binned one
    after another (1 when missing); see `runner.HISTOGRAM_PIECE_ELEMENTS`.
    The caller must ensure the model's opset is at least `HISTOGRAM_MIN_OPSET` when any
    histogram is requested, and at least `MIN_MAX_MIN_OPSET` otherwise.
    """
    stats_model = onnx.ModelProto()
    stats_model.CopyFrom(model)
    graph = stats_model.graph
    types = tensor_types(model) if types is None else types
    masked_set = set(masked_tensors)
    builder = _Builder(_Names(model))

    all_outputs: list[StatOutputs] = []
    raw_list = list(dict.fromkeys(raw_tensors))
    raw_set = set(raw_list)
    histogram_list = [t for t in dict.fromkeys(histogram_tensors) if t not in raw_set]
    histogram_set = set(histogram_list)
    min_max_list = [
        t for t in dict.fromkeys(min_max_tensors) if t not in histogram_set and t not in raw_set
    ]
    raw_outputs = {}
    for tensor in raw_list:
        if types.get(tensor) == TensorProto.FLOAT:
            raw_outputs[tensor] = tensor
        else:
            cast = helper.make_node("Cast", [tensor], [builder.names("raw")], to=TensorProto.FLOAT)
            graph.node.append(cast)
            raw_outputs[tensor] = cast.output[0]
    peak_ranks = dict(peak_ranks or {})
    for tensor, rank in peak_ranks.items():
        if rank < 2:
            raise ValueError(
                f"channel peaks need a tensor of rank 2 or more, {tensor!r} has rank {rank}"
            )
    opset = default_opset(model)
    peak_outputs = {}
    for tensor in histogram_list + min_max_list:
        nodes, outputs, peaks = _stat_nodes(
            builder,
            tensor,
            types.get(tensor),
            tensor in histogram_set,
            tensor in masked_set,
            peak_ranks.get(tensor),
            opset,
            (histogram_pieces or {}).get(tensor, 1),
        )
        graph.node.extend(nodes)
        all_outputs.append(outputs)
        if peaks is not None:
            peak_outputs[tensor] = peaks
    for tensor, rank in peak_ranks.items():
        if tensor not in peak_outputs:
            nodes, peak_outputs[tensor] = _peak_nodes(
                builder, tensor, types.get(tensor), rank, opset
            )
            graph.node.extend(nodes)

    graph.initializer.extend(builder.initializers)
    del graph.output[:]
    for outputs in all_outputs:
        typed = [
            (outputs.min, TensorProto.FLOAT),
            (outputs.max, TensorProto.FLOAT),
            (outputs.size, TensorProto.INT64),
            (outputs.check, TensorProto.INT64 if outputs.masked else TensorProto.FLOAT),
            (outputs.exponent, TensorProto.FLOAT),
            (outputs.first_bin, TensorProto.FLOAT),
            (outputs.counts, TensorProto.INT32),
        ]
        for name, elem_type in typed:
            if name is not None:
                graph.output.append(helper.make_tensor_value_info(name, elem_type, None))
    for name in raw_outputs.values():
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    for name in peak_outputs.values():
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return stats_model, all_outputs, raw_outputs, peak_outputs


def is_float_type(elem_type: int | None) -> bool:
    return elem_type in _FLOAT_TYPES


def static_sizes(model: onnx.ModelProto, sample: dict[str, object]) -> dict[str, int]:
    """Return the element count of every tensor whose shape follows from `sample`'s shapes.

    The graph inputs get the sample's concrete shapes before shape inference runs, so
    dynamic axes resolve wherever the ops allow it.
    """
    fixed = without_large_initializers(model)
    for value in fixed.graph.input[: len(model.graph.input)]:
        array = sample.get(value.name)
        if array is None or not value.type.HasField("tensor_type"):
            continue
        shape = value.type.tensor_type.shape
        shape.ClearField("dim")
        for size in getattr(array, "shape", ()):
            shape.dim.add().dim_value = int(size)
    del fixed.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError):
        return {}
    sizes = {}
    inputs = inferred.graph.input[: len(model.graph.input)]
    for value in (*inputs, *inferred.graph.value_info, *inferred.graph.output):
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
            continue
        dims = tensor_type.shape.dim
        if all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims):
            sizes[value.name] = int(np.prod([d.dim_value for d in dims], dtype=np.int64))
    return sizes
