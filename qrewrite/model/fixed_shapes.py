"""FixShapes: give graph inputs and outputs fixed shapes before quantizing.

The option's text lists `name:[d1,d2,...]` entries separated by `;`, such as
`image:[1,3,224,224];logits:[1,1000]`. Each name must be a graph input or output of the
main graph. A fixed dimension must agree with a fixed dimension the model already has,
and the rank must agree when the model gives one.
"""

from __future__ import annotations

import logging
import re

import onnx

from qrewrite.errors import ConfigError, ModelInputError

logger = logging.getLogger(__name__)

_ENTRY = re.compile(r"^\s*([^:;\[\]]+?)\s*:\s*\[([^\]]*)\]\s*$")
_EXAMPLE = "'image:[1,3,224,224];logits:[1,1000]'"


def parse_fixed_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """Parse the FixShapes text into a dict of tensor name to shape.

    Raises ConfigError naming the entry that does not parse.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for entry in text.split(";"):
        if not entry.strip():
            continue
        match = _ENTRY.match(entry)
        if match is None:
            raise ConfigError(f"FixShapes entry {entry!r} must look like name:[1,3,224,224]")
        name, dims_text = match.group(1), match.group(2)
        try:
            dims = tuple(int(dim) for dim in dims_text.split(",")) if dims_text.strip() else ()
        except ValueError:
            raise ConfigError(
                f"FixShapes entry {entry!r}: dimensions must be integers, as in {_EXAMPLE}"
            ) from None
        if any(dim < 1 for dim in dims):
            raise ConfigError(f"FixShapes entry {entry!r}: dimensions must be at least 1")
        if name in shapes:
            raise ConfigError(f"FixShapes names {name!r} twice")
        shapes[name] = dims
    if not shapes:
        raise ConfigError(f"FixShapes {text!r} has no entries; write it as {_EXAMPLE}")
    return shapes


def _set_shape(value: onnx.ValueInfoProto, shape: tuple[int, ...]) -> None:
    tensor_type = value.type.tensor_type
    if tensor_type.HasField("shape"):
        current = tensor_type.shape.dim
        if len(current) != len(shape):
            raise ModelInputError(
                f"FixShapes gives {value.name!r} rank {len(shape)} {list(shape)}, but the "
                f"model declares rank {len(current)}"
            )
        for axis, (dim, fixed) in enumerate(zip(current, shape, strict=True)):
            # Some exporters write -1 or 0 for a dynamic dimension.
            if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != fixed:
                raise ModelInputError(
                    f"FixShapes gives {value.name!r} dimension {fixed} on axis {axis}, but the "
                    f"model fixes it to {dim.dim_value}"
                )
    tensor_type.ClearField("shape")
    for fixed in shape:
        tensor_type.shape.dim.add().dim_value = fixed


def fix_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """Return a copy of `model` whose named graph inputs and outputs have `shapes`.

    Intermediate shape annotations are dropped, since they may name the old symbolic
    dimensions; later stages infer them again. Raises ModelInputError for a name that
    is not a graph input or output, or a shape that contradicts the model.
    """
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    values = {value.name: value for value in (*fixed.graph.input, *fixed.graph.output)}
    unknown = sorted(set(shapes) - set(values))
    if unknown:
        raise ModelInputError(
            f"FixShapes names {unknown} that are not graph inputs or outputs; the model has "
            f"{sorted(values)}"
        )
    for name, shape in shapes.items():
        _set_shape(values[name], shape)
        logger.info("fixed the shape of %r to %s", name, list(shape))
    del fixed.graph.value_info[:]
    return fixed
