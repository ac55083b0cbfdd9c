"""`QConfig`: the whole quantization configuration as one frozen, validated value."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from qrewrite.config.algorithms import AlgoConfig, CLEConfig, HQQConfig
from qrewrite.config.data_types import DataType
from qrewrite.config.enums import QuantGranularity, ScaleType
from qrewrite.config.extra_options import ExtraOptions
from qrewrite.config.option_types import FrozenDict
from qrewrite.config.registry import OPTIONS
from qrewrite.config.spec import QLayerConfig, QTensorConfig, npu_cnn_layer_config
from qrewrite.errors import ConfigError, NotBuiltError
from qrewrite.model.fixed_shapes import parse_fixed_shapes

# An exclude entry is a node name, a regular expression, or a subgraph given as
# (start node names, end node names).
ExcludeEntry = str | tuple[tuple[str, ...], tuple[str, ...]]


def parse_data_type(value: Any, where: str) -> DataType:
    """Accept a DataType, a spec class or instance, or a type name such as 'Int16'."""
    if isinstance(value, DataType):
        return value
    if isinstance(value, type) and issubclass(value, QTensorConfig) and value is not QTensorConfig:
        return value.data_type
    if isinstance(value, QTensorConfig):
        return value.data_type
    if isinstance(value, str):
        for data_type in DataType:
            if value.lower() in (data_type.value.lower(), data_type.value.lower() + "spec"):
                return data_type
    names = ", ".join(d.value for d in DataType)
    raise ConfigError(f"{where}: {value!r} is not a data type; use one of {names}")


def _names(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"{where} must be a list of names, got {value!r}")
    if not all(isinstance(name, str) for name in value):
        raise ConfigError(f"{where} must contain only strings, got {value!r}")
    return tuple(value)


def _layer_map(value: Any, where: str, *, allow_none: bool) -> FrozenDict | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a dict of data type to a list of names")
    converted: dict[DataType | None, tuple[str, ...]] = {}
    for key, names in value.items():
        data_type = None if key is None and allow_none else parse_data_type(key, where)
        converted[data_type] = _names(names, f"{where}[{key!r}]")
    return FrozenDict.of(converted)


def _exclude(value: Any) -> tuple[ExcludeEntry, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"exclude must be a list, got {value!r}")
    entries: list[ExcludeEntry] = []
    for entry in value:
        if isinstance(entry, str):
            try:
                re.compile(entry)
            except re.error as error:
                raise ConfigError(
                    f"exclude entry {entry!r} is neither a node name nor a valid regular "
                    f"expression: {error}"
                ) from None
            entries.append(entry)
        elif isinstance(entry, Sequence) and len(entry) == 2:
            starts = _names(entry[0], "exclude subgraph start nodes")
            ends = _names(entry[1], "exclude subgraph end nodes")
            entries.append((starts, ends))
        else:
            raise ConfigError(
                f"exclude entry {entry!r} must be a node name, a regular expression or "
                "([start nodes], [end nodes])"
            )
    return tuple(entries)


def _algorithms(value: Any) -> tuple[AlgoConfig, ...]:
    if value is None:
        return ()
    if isinstance(value, AlgoConfig) or not isinstance(value, Sequence):
        raise ConfigError(f"algo_config must be a list of algorithm configs, got {value!r}")
    for algorithm in value:
        if not isinstance(algorithm, AlgoConfig):
            raise ConfigError(f"algo_config entry {algorithm!r} is not an algorithm config")
        if not isinstance(algorithm, (CLEConfig, HQQConfig)):
            raise NotBuiltError(f"algo_config {type(algorithm).__name__} is not built yet")
        if isinstance(algorithm, HQQConfig) and algorithm.bits != 4:
            raise NotBuiltError(
                f"HQQConfig(bits={algorithm.bits}) is not built yet: onnxruntime's MatMulNBits "
                "runs 4-bit weights only; use bits=4"
            )
    if sum(isinstance(algorithm, HQQConfig) for algorithm in value) > 1:
        raise ConfigError("algo_config lists HQQConfig more than once; keep one")
    return tuple(value)


def _with_hqq_options(algorithms: tuple[AlgoConfig, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Turn an HQQConfig into UseMatMulNBits with Algorithm "HQQ" and its group size.

    HQQConfig is the algorithm-list spelling of MatMulNBits with the HQQ algorithm; other
    MatMulNBitsParams keys (Symmetric, AccuracyLevel) still apply.
    """
    hqq = next((a for a in algorithms if isinstance(a, HQQConfig)), None)
    if hqq is None:
        return kwargs
    if kwargs.get("UseMatMulNBits") is False:
        raise ConfigError(
            "algo_config has HQQConfig, which needs UseMatMulNBits; drop UseMatMulNBits=False"
        )
    params = dict(kwargs.get("MatMulNBitsParams") or {})
    if params.get("Algorithm", "HQQ") != "HQQ":
        raise ConfigError(
            f"algo_config has HQQConfig but MatMulNBitsParams asks for Algorithm "
            f"{params['Algorithm']!r}; keep one of them"
        )
    if params.get("GroupSize", hqq.group_size) != hqq.group_size:
        raise ConfigError(
            f"HQQConfig(group_size={hqq.group_size}) and MatMulNBitsParams GroupSize "
            f"{params['GroupSize']} disagree; keep one of them"
        )
    params.update(Algorithm="HQQ", GroupSize=hqq.group_size, Bits=hqq.bits)
    return {**kwargs, "UseMatMulNBits": True, "MatMulNBitsParams": params}


def _check_providers(providers: tuple[str, ...]) -> None:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    missing = [provider for provider in providers if provider not in available]
    if missing or not providers:
        raise ConfigError(
            f"ExecutionProviders {list(providers)!r} are not all available in this "
            f"onnxruntime; available: {available}"
        )


def _check_npu_specs(layer: QLayerConfig) -> None:
    """Fail unless every spec of `layer` suits an NPU: power-of-two scales, per-tensor."""
    for role in ("activation", "weight"):
        spec = getattr(layer, role)
        if spec is None:
            continue
        kind = type(spec).__name__
        if spec.scale_type is not ScaleType.PowerOf2:
            raise ConfigError(
                f"enable_npu_cnn needs power-of-two scales, but the {role} spec {kind} has "
                f"scale_type {spec.scale_type.name}; use XInt8Spec() or "
                "scale_type=ScaleType.PowerOf2 (command line: --scale-type PowerOf2)"
            )
        if spec.quant_granularity is not QuantGranularity.Tensor:
            raise ConfigError(
                f"enable_npu_cnn needs per-tensor specs, but the {role} spec {kind} has "
                f"quant_granularity {spec.quant_granularity.name}, and the NPU has no "
                "per-channel scales; use QuantGranularity.Tensor (command line: --per-tensor)"
            )


# Options of the "npu" group that act without enable_npu_cnn.
_NPU_GROUP_ALWAYS = frozenset(
    {
        "enable_npu_cnn",
        "enable_npu_transformer",
        "RemoveQDQConvGelu",
        "RemoveQDQMulAdd",
        "RemoveQDQBetweenOps",
        "RemoveQDQInstanceNorm",
    }
)


def _check_npu_only_options(explicit: Mapping[str, Any]) -> None:
    """Raise ConfigError when an explicit option would do nothing without enable_npu_cnn."""
    for name, value in explicit.items():
        option = OPTIONS[name]
        if option.group != "npu" or name in _NPU_GROUP_ALWAYS:
            continue
        if value and value != option.default:
            raise ConfigError(
                f"{name}={value!r} only acts with enable_npu_cnn=True; set enable_npu_cnn=True "
                f"or leave {name} out"
            )


@attrs.frozen(init=False)
class QConfig:
    """The whole quantization config: layer specs, overrides, exclusions and extra options.

    Every argument is validated here, so a config that constructs is one the quantizer
    can run. Extra options are keyword arguments named as in docs/options.md.
    """

    global_config: QLayerConfig
    specific_layer_config: FrozenDict | None
    layer_type_config: FrozenDict | None
    exclude: tuple[ExcludeEntry, ...]
    algo_config: tuple[AlgoConfig, ...]
    use_external_data_format: bool
    options: ExtraOptions

    def __init__(
        self,
        global_config: QLayerConfig | None = None,
        specific_layer_config: Mapping[Any, Sequence[str]] | None = None,
        layer_type_config: Mapping[Any, Sequence[str]] | None = None,
        exclude: Sequence[Any] | None = None,
        algo_config: Sequence[AlgoConfig] | None = None,
        use_external_data_format: bool = False,
        **kwargs: Any,
    ) -> None:
        algorithms = _algorithms(algo_config)
        kwargs = _with_hqq_options(algorithms, kwargs)
        options = ExtraOptions.from_kwargs(kwargs)
        if global_config is None:
            global_config = npu_cnn_layer_config() if options.enable_npu_cnn else QLayerConfig()
        if not isinstance(global_config, QLayerConfig):
            raise ConfigError(
                f"global_config must be a QLayerConfig, got {type(global_config).__name__}"
            )
        if not isinstance(use_external_data_format, bool):
            raise ConfigError(
                f"use_external_data_format must be True or False, got {use_external_data_format!r}"
            )
        if options.enable_npu_cnn:
            _check_npu_specs(global_config)
        else:
            _check_npu_only_options(kwargs)
        if options.FixShapes is not None:
            parse_fixed_shapes(options.FixShapes)
        if isinstance(options.EvalDataReader, (str, bytes, os.PathLike)):
            raise ConfigError(
                f"EvalDataReader must be samples (a list of dicts or a CalibrationDataReader), "
                f"got the path {options.EvalDataReader!r}; on the command line use --eval-data "
                "PATH"
            )
        if options.MatMulNBitsParams and not options.UseMatMulNBits:
            raise ConfigError(
                "MatMulNBitsParams is set but UseMatMulNBits is False; set UseMatMulNBits=True "
                "or leave MatMulNBitsParams out"
            )
        _check_providers(options.ExecutionProviders)
        if options.Int16Bias and kwargs.get("Int32Bias") is True:
            raise ConfigError("Int16Bias and Int32Bias are both True; set only one of them")

        self.__attrs_init__(
            global_config=global_config,
            specific_layer_config=_layer_map(
                specific_layer_config, "specific_layer_config", allow_none=False
            ),
            layer_type_config=_layer_map(layer_type_config, "layer_type_config", allow_none=True),
            exclude=_exclude(exclude),
            algo_config=algorithms,
            use_external_data_format=use_external_data_format,
            options=options,
        )
