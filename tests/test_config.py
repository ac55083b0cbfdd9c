"""QConfig validation: every option accepted with its default, bad values rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

import qrewrite
from qrewrite import (
    CalibMethod,
    ConfigError,
    Int8Spec,
    QConfig,
    QLayerConfig,
    QuantGranularity,
    ScaleType,
    UInt8Spec,
    XInt8Spec,
)
from qrewrite.config import OPTIONS, DataType
from qrewrite.config.docs import render

SPEC_NAMES = [
    "Int8Spec",
    "UInt8Spec",
    "XInt8Spec",
    "Int16Spec",
    "UInt16Spec",
    "Int32Spec",
    "UInt32Spec",
    "BFloat16Spec",
    "BFP16Spec",
    "Int4Spec",
    "UInt4Spec",
]


def test_public_names_importable() -> None:
    for name in [
        *SPEC_NAMES,
        "ModelQuantizer",
        "QConfig",
        "QLayerConfig",
        "ScaleType",
        "CalibMethod",
        "QuantGranularity",
    ]:
        assert hasattr(qrewrite, name), name


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_option_accepts_its_default(name: str) -> None:
    config = QConfig(**{name: OPTIONS[name].default})
    assert getattr(config.options, name) == OPTIONS[name].default


@pytest.mark.parametrize("name", sorted(n for n, o in OPTIONS.items() if o.type.text == "bool"))
def test_bool_options_reject_other_types(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        QConfig(**{name: "yes"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LogSeverityLevel", 7),
        ("CalibMovingAverageConstant", 0.0),
        ("CalibMovingAverageConstant", 2),
        ("Percentile", 120.0),
        ("CalibDataSize", 0),
        ("OpTypesToQuantize", "Conv"),
        ("RandomDataReaderInputShape", {"x": [1, -3]}),
        ("RandomDataReaderInputDataRange", {"x": [2, 1]}),
        ("QDQOpTypePerChannelSupportToAxis", {"MatMul": "1"}),
        ("LWPMetric", "rmse"),
        ("ConvertOpsetVersion", 3),
    ],
)
def test_wrong_values_rejected(name, value) -> None:
    with pytest.raises(ConfigError, match=name):
        QConfig(**{name: value})


NON_DEFAULT_SAMPLES = {
    "bool": None,
    "bool or None": True,
    "int >= 1": 3,
    "int 2-32": 4,
    "str or None": "somewhere",
    "list of str or None": ["Conv"],
    "float in (0, 100]": 99.0,
    "list of float in (0, 100]": [99.0, 99.9],
    "list of (str, str) or None": [("Conv", "Relu")],
    "dict": {"GroupSize": 32},
    "object": object(),
    "'AES-256' or None": "AES-256",
    "'All' | 'MostCommon'": "MostCommon",
    "'mae' | 'mse'": "mse",
}


@pytest.mark.parametrize("name", sorted(n for n, o in OPTIONS.items() if not o.built))
def test_unbuilt_options_raise_on_non_default(name: str) -> None:
    option = OPTIONS[name]
    assert option.type.text in NON_DEFAULT_SAMPLES, f"add a sample value for {option.type.text}"
    value = NON_DEFAULT_SAMPLES[option.type.text]
    if value is None:
        value = not option.default
    with pytest.raises(NotImplementedError, match=name):
        QConfig(**{name: value})


def test_unknown_option_suggests_nearest() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'CalibMovingAverage'"):
        QConfig(CalibMovingAvrage=True)


def test_spec_defaults_follow_signedness() -> None:
    assert Int8Spec().symmetric is True
    assert UInt8Spec().symmetric is False
    assert Int8Spec().scale_type is ScaleType.Float32
    assert Int8Spec().calibration_method is CalibMethod.MinMax
    assert Int8Spec().quant_granularity is QuantGranularity.Tensor


def test_spec_rejects_wrong_types() -> None:
    with pytest.raises(ConfigError, match="scale_type"):
        Int8Spec(scale_type="Pow2")
    with pytest.raises(ConfigError, match="scale_type"):
        Int8Spec(scale_type=2)
    with pytest.raises(ConfigError, match="symmetric"):
        Int8Spec(symmetric="no")
    with pytest.raises(ConfigError, match="activation"):
        QLayerConfig(activation="Int8")


def test_unbuilt_spec_raises() -> None:
    with pytest.raises(NotImplementedError, match="Int32Spec"):
        qrewrite.Int32Spec()


def test_config_is_frozen_and_comparable() -> None:
    first = QConfig(CalibMovingAverage=True, exclude=["conv.*"])
    second = QConfig(CalibMovingAverage=True, exclude=["conv.*"])
    assert first == second
    with pytest.raises(AttributeError):
        first.exclude = ()  # type: ignore[misc]


def test_layer_maps_parse_data_types() -> None:
    config = QConfig(specific_layer_config={"Int16": ["conv"]}, layer_type_config={None: ["Gemm"]})
    assert config.specific_layer_config[DataType.Int16] == ("conv",)
    assert config.layer_type_config[None] == ("Gemm",)
    with pytest.raises(ConfigError, match="Int9"):
        QConfig(specific_layer_config={"Int9": ["conv"]})


def test_exclude_rejects_bad_regex() -> None:
    with pytest.raises(ConfigError, match="regular expression"):
        QConfig(exclude=["(unclosed"])


def test_algorithms_not_built() -> None:
    with pytest.raises(NotImplementedError, match="AdaRoundConfig"):
        QConfig(algo_config=[qrewrite.AdaRoundConfig()])


def test_unavailable_provider_rejected() -> None:
    with pytest.raises(ConfigError, match="NoSuchExecutionProvider"):
        QConfig(ExecutionProviders=["NoSuchExecutionProvider"])


def test_options_page_is_current() -> None:
    page = Path(__file__).resolve().parent.parent / "docs" / "options.md"
    assert page.read_text() == render(), "run: python -m qrewrite.config.docs > docs/options.md"


def test_spec_field_as_option_names_fix():
    with pytest.raises(ConfigError, match="field of a data-type spec") as caught:
        QConfig(calibration_method="Entropy")
    assert "UInt8Spec(calibration_method=...)" in str(caught.value)


def test_spec_fields_take_member_names():
    spec = UInt8Spec(calibration_method="Entropy", quant_granularity="Channel")

    assert spec.calibration_method is CalibMethod.Entropy
    assert spec.quant_granularity is QuantGranularity.Channel
    assert XInt8Spec(scale_type="PowerOf2").scale_type is ScaleType.PowerOf2
    with pytest.raises(ConfigError, match="got 'Entropi'"):
        UInt8Spec(calibration_method="Entropi")
