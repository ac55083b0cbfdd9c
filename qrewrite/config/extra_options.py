"""`ExtraOptions`: the validated, frozen set of every extra option's value."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import attrs

from qrewrite.config.option_types import FrozenDict, OptionTypeError
from qrewrite.config.registry import NPU_CNN_DEFAULTS, OPTIONS
from qrewrite.config.spec import QTensorConfig
from qrewrite.errors import ConfigError, NotBuiltError

# The fields of the data-type specs, which users sometimes pass where options go.
_SPEC_FIELDS = frozenset(field.name for field in attrs.fields(QTensorConfig))


def suggest_key(key: str, known: list[str]) -> str:
    """Return ' Did you mean X?' for the nearest known key, or an empty string."""
    lowered = {k.lower(): k for k in known}
    if key.lower() in lowered:
        return f" Did you mean {lowered[key.lower()]!r}?"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _convert(name: str, value: Any) -> Any:
    option = OPTIONS[name]
    try:
        converted = option.type.convert(value)
    except OptionTypeError as error:
        raise ConfigError(f"invalid value for {name}: {error}, got {value!r}") from None
    if not option.built and converted != option.default:
        raise NotBuiltError(
            f"{name}={value!r} is not built yet; only its default {option.default!r} is accepted"
        )
    return converted


@attrs.frozen
class ExtraOptions:
    """Every extra option, defaults filled in. Read a value as an attribute: `opts.PrintSummary`."""

    values: FrozenDict

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> ExtraOptions:
        """Validate user-given options and fill in the defaults of the others.

        With enable_npu_cnn, options not given take their NPU_CNN_DEFAULTS value.
        """
        known = list(OPTIONS)
        for key in kwargs:
            if key in _SPEC_FIELDS:
                raise ConfigError(
                    f"{key!r} is a field of a data-type spec, not an option: set it on the "
                    f"specs, as in global_config=QLayerConfig(activation=UInt8Spec({key}=...), "
                    "weight=Int8Spec(quant_granularity=QuantGranularity.Channel))"
                )
            if key not in OPTIONS:
                raise ConfigError(f"unknown option {key!r}.{suggest_key(key, known)}")

        values = {name: option.default for name, option in OPTIONS.items()}
        for key, raw in kwargs.items():
            values[key] = _convert(key, raw)
        if values["enable_npu_cnn"]:
            for name, npu_default in NPU_CNN_DEFAULTS.items():
                if name not in kwargs:
                    values[name] = npu_default
        return cls(FrozenDict.of(values))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "values":
            raise AttributeError(name)
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(f"no option {name!r}.{suggest_key(name, list(OPTIONS))}") from None

    def prints_summary(self) -> bool:
        """Return whether quantize_model prints the summary, which then carries every note.

        A note that the summary prints need not be logged as well.
        """
        return bool(self.values["PrintSummary"]) and not self.values["CryptoMode"]

    def changed(self) -> dict[str, Any]:
        """Return the options whose value differs from the default."""
        return {
            name: value for name, value in self.values.items() if value != OPTIONS[name].default
        }
