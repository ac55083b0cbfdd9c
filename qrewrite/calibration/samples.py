"""Calibration samples: read them from a reader, an iterable or random data, and check them.

Every sample is a dict from graph input name to a numpy array. `samples_from` checks each
one against the model's graph inputs before it reaches onnxruntime, so a wrong name, dtype
or rank fails with a message that names the input instead of an onnxruntime error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs
import numpy as np
import onnx

from qrewrite.errors import CalibrationDataError, MissingCalibrationDataError

logger = logging.getLogger(__name__)

# Seed of the random calibration data, so one config always produces the same samples.
RANDOM_DATA_SEED = 0


@attrs.frozen
class InputSpec:
    """A graph input that samples must provide: name, numpy dtype and static dims."""

    name: str
    dtype: np.dtype[Any]
    # One entry per axis: the fixed size, or None for a dynamic axis. None for unknown rank.
    dims: tuple[int | None, ...] | None

    def describe(self) -> str:
        if self.dims is None:
            return f"{self.dtype} of any shape"
        shape = ", ".join("?" if d is None else str(d) for d in self.dims)
        return f"{self.dtype} of shape [{shape}]"


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """List the graph inputs that are not initializers, with their dtypes and dims."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        dims: tuple[int | None, ...] | None = None
        if tensor_type.HasField("shape"):
            # Some exporters (PaddlePaddle) write -1 for a dynamic axis.
            dims = tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
                for d in tensor_type.shape.dim
            )
        specs.append(InputSpec(value.name, dtype, dims))
    return specs


def _check_sample(sample: Any, index: int, inputs: list[InputSpec]) -> dict[str, np.ndarray]:
    if not isinstance(sample, Mapping):
        raise CalibrationDataError(
            f"calibration sample {index} is a {type(sample).__name__}; expected a dict from "
            "input name to numpy array"
        )
    by_name = {spec.name: spec for spec in inputs}
    for name in sample:
        if name not in by_name:
            expected = ", ".join(repr(n) for n in by_name) or "none"
            raise CalibrationDataError(
                f"calibration sample {index} has an input {name!r} that the model does not "
                f"have; model inputs: {expected}"
            )

    checked = {}
    for spec in inputs:
        if spec.name not in sample:
            raise CalibrationDataError(
                f"calibration sample {index} is missing input {spec.name!r}; expected "
                f"{spec.describe()}, given keys {sorted(sample)}"
            )
        array = np.asarray(sample[spec.name])
        if array.dtype != spec.dtype:
            raise CalibrationDataError(
                f"calibration sample {index}, input {spec.name!r}: expected dtype {spec.dtype}, "
                f"given {array.dtype} of shape {list(array.shape)}; convert it with "
                f".astype(np.{spec.dtype})"
            )
        if spec.dims is not None:
            fits = len(spec.dims) == array.ndim and all(
                d is None or d == size for d, size in zip(spec.dims, array.shape, strict=True)
            )
            if not fits:
                raise CalibrationDataError(
                    f"calibration sample {index}, input {spec.name!r}: expected "
                    f"{spec.describe()}, given shape {list(array.shape)}"
                )
        if array.dtype.kind == "f" and np.isnan(array).any():
            raise CalibrationDataError(
                f"calibration sample {index}, input {spec.name!r}: contains NaN; calibration "
                "inputs must be numbers"
            )
        checked[spec.name] = array
    return checked


def _iterate_reader(reader: Any) -> Iterator[Any]:
    if hasattr(reader, "get_next"):
        while (sample := reader.get_next()) is not None:
            yield sample
    elif isinstance(reader, Iterable) and not isinstance(reader, (str, bytes, Mapping)):
        yield from reader
    else:
        raise CalibrationDataError(
            f"calibration reader of type {type(reader).__name__} is neither a "
            "CalibrationDataReader (with get_next) nor an iterable of dicts"
        )


def _random_shape(spec: InputSpec, options: Any) -> tuple[int, ...]:
    shapes = options.RandomDataReaderInputShape
    if spec.name in shapes:
        shape = tuple(shapes[spec.name])
        if spec.dims is not None and (
            len(shape) != len(spec.dims)
            or any(d is not None and d != s for d, s in zip(spec.dims, shape, strict=True))
        ):
            raise CalibrationDataError(
                f"RandomDataReaderInputShape[{spec.name!r}] = {list(shape)} does not fit "
                f"the input, which expects {spec.describe()}"
            )
        return shape
    if spec.dims is None or any(d is None for d in spec.dims):
        raise CalibrationDataError(
            f"input {spec.name!r} ({spec.describe()}) has dynamic or unknown dims; give its "
            f"shape in RandomDataReaderInputShape, like {{{spec.name!r}: [1, 3, 224, 224]}} "
            f"(on the command line: --input-shape {spec.name}=1,3,224,224)"
        )
    return tuple(d for d in spec.dims if d is not None)


def _random_array(
    spec: InputSpec, shape: tuple[int, ...], options: Any, rng: np.random.Generator
) -> np.ndarray:
    ranges = options.RandomDataReaderInputDataRange or {}
    dtype = spec.dtype
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = ranges.get(spec.name, (info.min, info.max))
        return rng.integers(int(low), int(high), size=shape, endpoint=True).astype(dtype)
    if dtype.kind == "f":
        low, high = ranges.get(spec.name, (0.0, 1.0))
        return rng.uniform(low, high, size=shape).astype(dtype)
    raise CalibrationDataError(
        f"input {spec.name!r} has dtype {dtype}, for which no random data can be made"
    )


def random_samples(model: onnx.ModelProto, options: Any) -> Iterator[dict[str, np.ndarray]]:
    """Yield seeded random samples: CalibDataSize of them, or one when it is None.

    Shapes come from RandomDataReaderInputShape or the static dims; values are uniform in
    RandomDataReaderInputDataRange, else [0, 1) for floats and the type's range for integers.
    """
    inputs = model_inputs(model)
    names = [spec.name for spec in inputs]
    for option in ("RandomDataReaderInputShape", "RandomDataReaderInputDataRange"):
        unknown = sorted(set(getattr(options, option) or {}) - set(names))
        if unknown:
            raise CalibrationDataError(
                f"{option} names {unknown}, which are not graph inputs; the model's inputs "
                f"are {names}"
            )
    shapes = {spec.name: _random_shape(spec, options) for spec in inputs}
    rng = np.random.default_rng(RANDOM_DATA_SEED)
    count = options.CalibDataSize or 1
    for _ in range(count):
        yield {spec.name: _random_array(spec, shapes[spec.name], options, rng) for spec in inputs}


def require_samples(reader: Any, options: Any) -> None:
    """Raise MissingCalibrationDataError when there is no reader and no random data."""
    if reader is None and not options.UseRandomData:
        raise MissingCalibrationDataError(
            "no calibration data: pass a calibration data reader, or set "
            "UseRandomData=True to calibrate on random data"
        )


def samples_from(
    reader: Any, model: onnx.ModelProto, options: Any, *, capped: bool = True
) -> Iterator[dict[str, np.ndarray]]:
    """Yield checked calibration samples from `reader`, at most CalibDataSize of them.

    With `capped=False` every sample of `reader` is read (an evaluation set).

    `reader` is an onnxruntime-style CalibrationDataReader (`get_next()` returns a dict or
    None), any iterable of dicts, or None for random data (needs UseRandomData). Raises
    CalibrationDataError for a sample that does not fit the model's graph inputs, for NaN
    in an input, and when the reader yields no sample at all.
    """
    if reader is None:
        require_samples(reader, options)
        source: Iterator[Any] = random_samples(model, options)
    else:
        source = _iterate_reader(reader)

    inputs = model_inputs(model)
    limit = options.CalibDataSize if capped else None
    count = 0
    for sample in source:
        if limit is not None and count >= limit:
            break
        yield _check_sample(sample, count, inputs)
        count += 1
    if count == 0:
        raise CalibrationDataError(
            "the calibration data (a list, a reader or a file) has no samples; calibration needs "
            "at least one"
        )
    logger.debug("read %d calibration samples", count)
