"""Build a `QConfig` from a mapping or from a JSON or TOML config file.

The file contains the `QConfig` parameters by name, and extra options either at top level or
in an `options` table. A TOML example:

    use_external_data_format = false
    exclude = ["head/.*"]
    CalibMovingAverage = true

    [global_config.activation]
    type = "UInt8"
    symmetric = false
    scale_type = "Float32"
    calibration_method = "MinMax"
    quant_granularity = "Tensor"

    [global_config.weight]
    type = "Int8"
    quant_granularity = "Channel"

    [layer_type_config]
    Int16 = ["Softmax"]
    float = ["Resize"]

    [options]
    PrintSummary = false

Inside `global_config`, a null `activation` or `weight` (or the string "float") leaves
those tensors in float, and an absent one keeps QConfig's default spec, as does an absent
`type`. Without `global_config` the file gets QConfig's default layer config. TOML has
no null, so `layer_type_config` accepts the key "float" or "None" for the op types that
stay in float. Nodes are kept in float with `exclude`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qrewrite.config import algorithms
from qrewrite.config.enums import CalibMethod, QuantGranularity, ScaleType
from qrewrite.config.extra_options import suggest_key
from qrewrite.config.qconfig import QConfig
from qrewrite.config.registry import OPTIONS
from qrewrite.config.spec import SPEC_BY_DATA_TYPE, QLayerConfig, QTensorConfig, XInt8Spec
from qrewrite.errors import ConfigError, QrewriteError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

QCONFIG_KEYS = (
    "global_config",
    "specific_layer_config",
    "layer_type_config",
    "exclude",
    "algo_config",
    "use_external_data_format",
)
OPTIONS_TABLE = "options"
SPEC_KEYS = (
    "type",
    "symmetric",
    "scale_type",
    "calibration_method",
    "quant_granularity",
    "group_size",
)
LAYER_KEYS = ("activation", "weight")
# Values that mean "leave in float" where TOML cannot write null.
FLOAT_NAMES = ("float", "none")

SPEC_CLASSES: dict[str, type[QTensorConfig]] = {
    **{spec.__name__.removesuffix("Spec").lower(): spec for spec in SPEC_BY_DATA_TYPE.values()},
    "xint8": XInt8Spec,
}
ALGORITHM_CLASSES: dict[str, type[algorithms.AlgoConfig]] = {
    cls.__name__.removesuffix("Config").lower(): cls
    for cls in (
        algorithms.CLEConfig,
        algorithms.AdaRoundConfig,
        algorithms.AdaQuantConfig,
        algorithms.GPTQConfig,
        algorithms.HQQConfig,
    )
}


def load_config_file(path: str | Path) -> QConfig:
    """Read a JSON or TOML config file and return the QConfig it describes.

    Raises ConfigError (or NotBuiltError for a value that is not built yet) whose message
    starts with the file path.
    """
    return config_from_mapping(read_config_file(path), source=str(path))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a JSON or TOML config file into a dict, without validating its keys.

    The format follows the suffix: `.json` or `.toml`. Raises ConfigError for a missing
    file, another suffix, a syntax error or a top level that is not a table or object.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ConfigError(f"config file {path} must end in .json or .toml, got {suffix!r}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")

    try:
        if suffix == ".json":
            with path.open(encoding="utf-8") as file:
                data = json.load(file)
        else:
            with path.open("rb") as file:
                data = tomllib.load(file)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: invalid JSON: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: the file is not UTF-8 text: {error}") from None
    except OSError as error:
        raise ConfigError(f"failed to read config file {path}: {error.strerror or error}") from None

    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be an object of QConfig keys, got {type(data).__name__}"
        )
    return data


def config_from_mapping(data: Mapping[str, Any], *, source: str | None = None) -> QConfig:
    """Build a QConfig from a mapping with the layout of a config file.

    Keys are the QConfig parameters and extra option names, with extra options also
    allowed under `options`. An unknown key raises ConfigError that suggests the nearest
    known key. When `source` is given, every error message starts with it.
    """
    try:
        return QConfig(**_qconfig_arguments(data))
    except QrewriteError as error:
        if source is None:
            raise
        raise type(error)(f"{source}: {error}") from None


def _qconfig_arguments(data: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"the config must be a table of keys, got {type(data).__name__}")
    known = [*QCONFIG_KEYS, OPTIONS_TABLE, *OPTIONS]
    for key in data:
        if key in SPEC_KEYS:
            raise ConfigError(
                f"config key {key!r} is a spec field: set it under [global_config.activation] "
                "or [global_config.weight]"
            )
        if key not in known:
            raise ConfigError(f"unknown config key {key!r}.{suggest_key(str(key), known)}")

    arguments: dict[str, Any] = {}
    if "global_config" in data:
        arguments["global_config"] = layer_config_from_mapping(data["global_config"])
    if data.get("specific_layer_config") is not None:
        arguments["specific_layer_config"] = data["specific_layer_config"]
    if data.get("layer_type_config") is not None:
        arguments["layer_type_config"] = _float_key_to_none(data["layer_type_config"])
    if "exclude" in data:
        arguments["exclude"] = data["exclude"]
    if data.get("algo_config") is not None:
        arguments["algo_config"] = _algorithms(data["algo_config"])
    if "use_external_data_format" in data:
        arguments["use_external_data_format"] = data["use_external_data_format"]
    arguments.update(_options(data))
    return arguments


def _options(data: Mapping[str, Any]) -> dict[str, Any]:
    options = {key: value for key, value in data.items() if key in OPTIONS}
    table = data.get(OPTIONS_TABLE)
    if table is None:
        return options
    if not isinstance(table, Mapping):
        raise ConfigError(f"options must be a table of extra options, got {table!r}")
    for key, value in table.items():
        if key in options:
            raise ConfigError(
                f"extra option {key!r} is set both at top level and under options; keep one"
            )
        options[key] = value
    return options


def layer_config_from_mapping(value: Any) -> QLayerConfig:
    """Build a QLayerConfig from `{activation = {...}, weight = {...}}`.

    A null or "float" activation or weight stays in float; an absent one keeps the default
    spec of `QLayerConfig()`.
    """
    if isinstance(value, QLayerConfig):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"global_config must be a table with activation and weight specs, got {value!r}"
        )
    for key in value:
        if key not in LAYER_KEYS:
            raise ConfigError(
                f"unknown global_config key {key!r}.{suggest_key(str(key), list(LAYER_KEYS))}"
            )
    defaults = QLayerConfig()
    specs = {}
    for role in LAYER_KEYS:
        default = getattr(defaults, role)
        if role in value:
            specs[role] = spec_from_mapping(value[role], f"global_config.{role}", default)
        else:
            specs[role] = default
    return QLayerConfig(**specs)


def spec_from_mapping(
    value: Any, where: str, default: QTensorConfig | None = None
) -> QTensorConfig | None:
    """Build a spec such as Int8Spec from `{type = "Int8", symmetric = true, ...}`.

    None or the string "float" or "None" returns None, which means the tensor stays in float.
    Without a "type", the type of `default` is used.
    """
    if value is None or (isinstance(value, str) and value.lower() in FLOAT_NAMES):
        return None
    if isinstance(value, QTensorConfig):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(
            f'{where} must be a table such as {{type = "Int8"}} or "float", got {value!r}'
        )
    for key in value:
        if key not in SPEC_KEYS:
            suggestion = suggest_key(str(key), list(SPEC_KEYS))
            raise ConfigError(f"unknown {where} key {key!r}.{suggestion}")
    if "type" in value:
        spec_class = _spec_class(value["type"], where)
    elif default is not None:
        spec_class = type(default)
    else:
        raise ConfigError(f"{where} is missing 'type', for example type = \"Int8\"")
    fields: dict[str, Any] = {}
    if "symmetric" in value:
        fields["symmetric"] = value["symmetric"]
    if "group_size" in value:
        fields["group_size"] = value["group_size"]
    enum_keys = (
        ("scale_type", ScaleType),
        ("calibration_method", CalibMethod),
        ("quant_granularity", QuantGranularity),
    )
    for key, enum_type in enum_keys:
        if key in value:
            fields[key] = _enum_member(enum_type, value[key], f"{where}.{key}")
    try:
        return spec_class(**fields)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None


def spec_to_mapping(spec: QTensorConfig | None) -> dict[str, Any] | None:
    """Return the mapping form of a spec that `spec_from_mapping` reads back, None for float.

    Only the type and the fields that differ from the type's defaults are written, so
    changing "type" later lets the other fields follow the new type's defaults.
    """
    if spec is None:
        return None
    defaults = type(spec)()
    mapping: dict[str, Any] = {"type": type(spec).__name__.removesuffix("Spec")}
    if spec.symmetric != defaults.symmetric:
        mapping["symmetric"] = spec.symmetric
    for key in ("scale_type", "calibration_method", "quant_granularity"):
        value = getattr(spec, key)
        if value != getattr(defaults, key):
            mapping[key] = value.value
    if spec.group_size is not None:
        mapping["group_size"] = spec.group_size
    return mapping


def _spec_class(value: Any, where: str) -> type[QTensorConfig]:
    names = sorted(cls.__name__.removesuffix("Spec") for cls in SPEC_CLASSES.values())
    if isinstance(value, str):
        key = value.lower().removesuffix("spec")
        if key in SPEC_CLASSES:
            return SPEC_CLASSES[key]
    raise ConfigError(
        f"{where}.type {value!r} is not a data type; use one of {', '.join(names)}"
        f".{suggest_key(str(value), names)}"
    )


def _enum_member(enum_type: Any, value: Any, where: str) -> Any:
    names = [member.name for member in enum_type]
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str):
        for member in enum_type:
            if value.lower() == member.name.lower():
                return member
    raise ConfigError(
        f"{where} {value!r} is invalid; use one of {', '.join(names)}."
        f"{suggest_key(str(value), names)}"
    )


def _float_key_to_none(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value  # QConfig rejects it with its own message.
    converted: dict[Any, Any] = {}
    for key, names in value.items():
        is_float = isinstance(key, str) and key.lower() in FLOAT_NAMES
        converted[None if is_float else key] = names
    return converted


def _algorithms(value: Any) -> list[algorithms.AlgoConfig]:
    if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
        raise ConfigError(
            'algo_config must be a list of tables such as [{type = "CLE", cle_steps = 1}], '
            f"got {value!r}"
        )
    configs = []
    for entry in value:
        if isinstance(entry, algorithms.AlgoConfig):
            configs.append(entry)
            continue
        if not isinstance(entry, Mapping) or not isinstance(entry.get("type"), str):
            raise ConfigError(f"algo_config entry {entry!r} must be a table with a 'type'")
        names = sorted(cls.__name__ for cls in ALGORITHM_CLASSES.values())
        key = entry["type"].lower().removesuffix("config")
        if key not in ALGORITHM_CLASSES:
            raise ConfigError(
                f"algo_config type {entry['type']!r} is unknown; use one of {', '.join(names)}"
            )
        fields = {name: field for name, field in entry.items() if name != "type"}
        try:
            configs.append(ALGORITHM_CLASSES[key](**fields))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"algo_config {entry['type']!r}: {error}") from None
    return configs
