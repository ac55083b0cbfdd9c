"""Value types of the extra options: each checks a raw value and returns a frozen one.

Lists become tuples and dicts become sorted tuples of pairs wrapped in `FrozenDict`, so a
validated option set is hashable and compares by value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs


class OptionTypeError(ValueError):
    """A raw option value that does not have the option's type; the message names the type."""


@attrs.frozen
class FrozenDict(Mapping[Any, Any]):
    """An immutable mapping with a stable order (keys sorted by their text)."""

    items_: tuple[tuple[Any, Any], ...]
    # A dict of items_ for lookups: calibration reads options thousands of times.
    _lookup: dict[Any, Any] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_lookup", dict(self.items_))

    @classmethod
    def of(cls, mapping: Mapping[Any, Any]) -> FrozenDict:
        return cls(tuple(sorted(mapping.items(), key=lambda kv: str(kv[0]))))

    def __getitem__(self, key: Any) -> Any:
        return self._lookup[key]

    def __iter__(self) -> Iterator[Any]:
        return (k for k, _ in self.items_)

    def __len__(self) -> int:
        return len(self.items_)


@attrs.frozen
class OptionType:
    """A named checker: `convert` returns the frozen value or raises OptionTypeError."""

    text: str
    convert: Callable[[Any], Any]


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise OptionTypeError("expected True or False")


def _int_in(low: int | None, high: int | None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionTypeError("expected an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            raise OptionTypeError(f"expected an integer from {low} to {high}")
        return value

    return convert


def _float_in(low: float, high: float, *, open_low: bool = False) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionTypeError("expected a number")
        number = float(value)
        too_low = number <= low if open_low else number < low
        if math.isnan(number) or too_low or number > high:
            bracket = "(" if open_low else "["
            raise OptionTypeError(f"expected a number in {bracket}{low}, {high}]")
        return number

    return convert


def _str_choice(choices: Sequence[str]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise OptionTypeError(f"expected one of {', '.join(repr(c) for c in choices)}")
        return value

    return convert


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise OptionTypeError("expected a string")
    return value


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise OptionTypeError("expected a list of strings")
    if not all(isinstance(item, str) for item in value):
        raise OptionTypeError("expected a list of strings")
    return tuple(value)


def _float_list(value: Any) -> tuple[float, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise OptionTypeError("expected a non-empty list of numbers")
    converted = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or math.isnan(item):
            raise OptionTypeError("expected a non-empty list of numbers")
        converted.append(float(item))
    return tuple(converted)


def _shape_dict(value: Any) -> FrozenDict:
    if not isinstance(value, Mapping):
        raise OptionTypeError(
            "expected a dict of input name to shape, like {'x': [1, 3, 224, 224]}"
        )
    frozen = {}
    for name, shape in value.items():
        if not isinstance(name, str) or isinstance(shape, str) or not isinstance(shape, Sequence):
            raise OptionTypeError("expected a dict of input name to a list of dimensions")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise OptionTypeError(f"shape of {name!r} must be a list of non-negative integers")
        frozen[name] = tuple(shape)
    return FrozenDict.of(frozen)


def _range_dict(value: Any) -> FrozenDict:
    if not isinstance(value, Mapping):
        raise OptionTypeError("expected a dict of input name to [low, high]")
    frozen = {}
    for name, bounds in value.items():
        ok = (
            isinstance(name, str)
            and isinstance(bounds, Sequence)
            and len(bounds) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
            and bounds[0] <= bounds[1]
        )
        if not ok:
            raise OptionTypeError(f"range of {name!r} must be [low, high] with low <= high")
        frozen[name] = (bounds[0], bounds[1])
    return FrozenDict.of(frozen)


def _axis_dict(value: Any) -> FrozenDict:
    if not isinstance(value, Mapping):
        raise OptionTypeError("expected a dict of op type to channel axis, like {'MatMul': 1}")
    for op_type, axis in value.items():
        if not isinstance(op_type, str) or isinstance(axis, bool) or not isinstance(axis, int):
            raise OptionTypeError("expected a dict of op type to an integer axis")
    return FrozenDict.of(dict(value))


def _op_pairs(value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise OptionTypeError("expected a list of (op type, op type) pairs")
    pairs = []
    for pair in value:
        if (
            isinstance(pair, str)
            or not isinstance(pair, Sequence)
            or len(pair) != 2
            or not all(isinstance(p, str) for p in pair)
        ):
            raise OptionTypeError("expected a list of (op type, op type) pairs")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def _any_dict(value: Any) -> FrozenDict:
    if not isinstance(value, Mapping):
        raise OptionTypeError("expected a dict")
    return FrozenDict.of(dict(value))


def _any(value: Any) -> Any:
    return value


MATMUL_NBITS_KEYS = ("Algorithm", "GroupSize", "Symmetric", "Bits", "AccuracyLevel")
MATMUL_NBITS_ALGORITHMS = ("DEFAULT", "GPTQ", "HQQ")


def _matmul_nbits_params(value: Any) -> FrozenDict:
    from qrewrite.errors import NotBuiltError

    if not isinstance(value, Mapping):
        raise OptionTypeError(f"expected a dict with keys {', '.join(MATMUL_NBITS_KEYS)}")
    for key in value:
        if key not in MATMUL_NBITS_KEYS:
            raise OptionTypeError(
                f"unknown key {key!r}; known keys: {', '.join(MATMUL_NBITS_KEYS)}"
            )
    algorithm = value.get("Algorithm", "DEFAULT")
    if algorithm not in MATMUL_NBITS_ALGORITHMS:
        choices = ", ".join(repr(c) for c in MATMUL_NBITS_ALGORITHMS)
        raise OptionTypeError(f"Algorithm {algorithm!r} is not one of {choices}")
    if algorithm == "GPTQ":
        raise NotBuiltError(
            "MatMulNBitsParams Algorithm='GPTQ' is not built yet; use 'DEFAULT' or 'HQQ'"
        )
    group_size = value.get("GroupSize", 128)
    if (
        isinstance(group_size, bool)
        or not isinstance(group_size, int)
        or group_size < 16
        or group_size & (group_size - 1)
    ):
        raise OptionTypeError(
            f"GroupSize {group_size!r} is not a power of two of at least 16 (16, 32, 64, "
            "128, ...), which MatMulNBits requires"
        )
    if not isinstance(value.get("Symmetric", True), bool):
        raise OptionTypeError(f"Symmetric {value['Symmetric']!r} is not True or False")
    bits = value.get("Bits", 4)
    if bits != 4 or isinstance(bits, bool):
        raise OptionTypeError(f"Bits {bits!r} is not supported; only Bits=4 is")
    level = value.get("AccuracyLevel", 0)
    if isinstance(level, bool) or level not in (0, 1, 2, 3, 4):
        raise OptionTypeError(
            f"AccuracyLevel {level!r} is not 0 (unset), 1 (fp32), 2 (fp16), 3 (bf16) or 4 "
            "(int8)"
        )
    return FrozenDict.of(dict(value))


def optional(inner: OptionType) -> OptionType:
    """Allow None besides the inner type."""

    def convert(value: Any) -> Any:
        return None if value is None else inner.convert(value)

    return OptionType(f"{inner.text} or None", convert)


BOOL = OptionType("bool", _bool)
INT = OptionType("int", _int_in(None, None))
POSITIVE_INT = OptionType("int >= 1", _int_in(1, None))
LOG_LEVEL = OptionType("int 0-4", _int_in(0, 4))
OPSET = OptionType("int 7-28", _int_in(7, 28))
BIT_WIDTH = OptionType("int 2-32", _int_in(2, 32))
FRACTION = OptionType("float in (0, 1]", _float_in(0.0, 1.0, open_low=True))
PERCENT = OptionType("float in (0, 100]", _float_in(0.0, 100.0, open_low=True))
PERCENT_LIST = OptionType("list of float in (0, 100]", _float_list)
STR = OptionType("str", _str)
STR_LIST = OptionType("list of str", _str_list)
SHAPE_DICT = OptionType("dict of str to list of int", _shape_dict)
RANGE_DICT = OptionType("dict of str to [low, high]", _range_dict)
AXIS_DICT = OptionType("dict of op type to int", _axis_dict)
OP_PAIRS = OptionType("list of (str, str)", _op_pairs)
ANY_DICT = OptionType("dict", _any_dict)
OBJECT = OptionType("object", _any)
MATMUL_NBITS_PARAMS = OptionType(
    "dict: Algorithm, GroupSize, Symmetric, Bits, AccuracyLevel", _matmul_nbits_params
)


def choice(*choices: str) -> OptionType:
    """Return the type of a string restricted to `choices`."""
    return OptionType(" | ".join(repr(c) for c in choices), _str_choice(choices))
