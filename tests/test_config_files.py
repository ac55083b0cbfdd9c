"""Tests of QConfig construction from mappings and from JSON and TOML config files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qrewrite.config import (
    CalibMethod,
    DataType,
    Int4Spec,
    Int8Spec,
    Int16Spec,
    QConfig,
    QLayerConfig,
    QuantGranularity,
    ScaleType,
    UInt8Spec,
    XInt8Spec,
)
from qrewrite.config.files import (
    config_from_mapping,
    load_config_file,
    read_config_file,
    spec_from_mapping,
    spec_to_mapping,
)
from qrewrite.config.registry import OPTIONS
from qrewrite.errors import ConfigError, NotBuiltError

FULL_TOML = """\
use_external_data_format = true
exclude = ["head/.*", [["start_a", "start_b"], ["end"]]]
CalibMovingAverage = true
CalibMovingAverageConstant = 0.05

[global_config.activation]
type = "UInt8"
symmetric = false
scale_type = "PowerOf2"
calibration_method = "MinMax"
quant_granularity = "Tensor"

[global_config.weight]
type = "Int8"
symmetric = true
scale_type = "Float32"
calibration_method = "MinMax"
quant_granularity = "Channel"

[specific_layer_config]
Int16 = ["conv_1", "conv_2"]

[layer_type_config]
Int16 = ["Softmax"]
float = ["Resize"]

[options]
PrintSummary = false
UseRandomData = true
RandomDataReaderInputShape = { x = [1, 3, 8, 8] }
RandomDataReaderInputDataRange = { x = [-1.0, 1.0] }
OpTypesToExcludeOutputQuantization = ["Softmax"]
"""

FULL_MAPPING = {
    "use_external_data_format": True,
    "exclude": ["head/.*", [["start_a", "start_b"], ["end"]]],
    "CalibMovingAverage": True,
    "CalibMovingAverageConstant": 0.05,
    "global_config": {
        "activation": {
            "type": "UInt8",
            "symmetric": False,
            "scale_type": "PowerOf2",
            "calibration_method": "MinMax",
            "quant_granularity": "Tensor",
        },
        "weight": {
            "type": "Int8",
            "symmetric": True,
            "scale_type": "Float32",
            "calibration_method": "MinMax",
            "quant_granularity": "Channel",
        },
    },
    "specific_layer_config": {"Int16": ["conv_1", "conv_2"]},
    "layer_type_config": {"Int16": ["Softmax"], "None": ["Resize"]},
    "options": {
        "PrintSummary": False,
        "UseRandomData": True,
        "RandomDataReaderInputShape": {"x": [1, 3, 8, 8]},
        "RandomDataReaderInputDataRange": {"x": [-1.0, 1.0]},
        "OpTypesToExcludeOutputQuantization": ["Softmax"],
    },
}


def expected_full_config() -> QConfig:
    return QConfig(
        global_config=QLayerConfig(
            activation=UInt8Spec(symmetric=False, scale_type=ScaleType.PowerOf2),
            weight=Int8Spec(quant_granularity=QuantGranularity.Channel),
        ),
        specific_layer_config={DataType.Int16: ["conv_1", "conv_2"]},
        layer_type_config={DataType.Int16: ["Softmax"], None: ["Resize"]},
        exclude=["head/.*", (["start_a", "start_b"], ["end"])],
        use_external_data_format=True,
        CalibMovingAverage=True,
        CalibMovingAverageConstant=0.05,
        PrintSummary=False,
        UseRandomData=True,
        RandomDataReaderInputShape={"x": [1, 3, 8, 8]},
        RandomDataReaderInputDataRange={"x": [-1.0, 1.0]},
        OpTypesToExcludeOutputQuantization=["Softmax"],
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# Round trips


def test_toml_file_matches_python_config(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", FULL_TOML)

    assert load_config_file(path) == expected_full_config()


def test_json_file_matches_python_config(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", json.dumps(FULL_MAPPING))

    assert load_config_file(path) == expected_full_config()


def test_json_and_toml_files_equal(tmp_path: Path) -> None:
    toml_path = write(tmp_path / "config.toml", FULL_TOML)
    json_path = write(tmp_path / "config.json", json.dumps(FULL_MAPPING))

    assert load_config_file(toml_path) == load_config_file(json_path)


def test_options_at_top_level_equal_options_table() -> None:
    top_level = config_from_mapping({"PrintSummary": False, "CalibDataSize": 4})
    table = config_from_mapping({"options": {"PrintSummary": False, "CalibDataSize": 4}})

    assert top_level == table
    assert top_level.options.CalibDataSize == 4


def test_spec_mapping_round_trip() -> None:
    specs = [
        Int8Spec(),
        UInt8Spec(symmetric=True, scale_type=ScaleType.PowerOf2),
        Int16Spec(quant_granularity=QuantGranularity.Channel),
        XInt8Spec(),
        Int4Spec(quant_granularity=QuantGranularity.Group, group_size=32),
    ]
    for spec in specs:
        assert spec_from_mapping(spec_to_mapping(spec), "spec") == spec


def test_spec_mapping_writes_only_changes() -> None:
    assert spec_to_mapping(Int8Spec()) == {"type": "Int8"}
    assert spec_to_mapping(UInt8Spec(symmetric=True)) == {"type": "UInt8", "symmetric": True}
    assert spec_to_mapping(Int8Spec(quant_granularity=QuantGranularity.Channel)) == {
        "type": "Int8",
        "quant_granularity": "Channel",
    }


def test_group_size_from_a_config_file(tmp_path: Path) -> None:
    text = (
        "[global_config.weight]\n"
        'type = "Int4"\n'
        'quant_granularity = "Group"\n'
        "group_size = 64\n"
    )
    config = load_config_file(write(tmp_path / "config.toml", text))

    assert config.global_config.weight == Int4Spec(
        quant_granularity=QuantGranularity.Group, group_size=64
    )


def test_spec_mapping_float_is_none() -> None:
    assert spec_to_mapping(None) is None
    assert spec_from_mapping(None, "spec") is None
    assert spec_from_mapping("float", "spec") is None
    assert spec_from_mapping("None", "spec") is None


# Defaults and float


def test_empty_mapping_is_default_config() -> None:
    assert config_from_mapping({}) == QConfig()


def test_empty_toml_file_is_default_config(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "")

    assert load_config_file(path) == QConfig()


def test_absent_activation_keeps_default() -> None:
    config = config_from_mapping({"global_config": {"weight": {"type": "Int16"}}})

    assert config.global_config.activation == Int8Spec()
    assert config.global_config.weight == Int16Spec()


def test_float_activation_string() -> None:
    config = config_from_mapping({"global_config": {"activation": "float"}})

    assert config.global_config.activation is None
    assert config.global_config.weight == Int8Spec()


def test_null_weight_stays_float() -> None:
    config = config_from_mapping(
        {"global_config": {"activation": {"type": "Int8"}, "weight": None}}
    )

    assert config.global_config.weight is None


def test_layer_type_float_keys() -> None:
    expected = QConfig(layer_type_config={None: ["Resize"]}).layer_type_config
    for key in ("float", "None", "none", "FLOAT"):
        config = config_from_mapping({"layer_type_config": {key: ["Resize"]}})
        assert config.layer_type_config == expected


def test_type_names_accept_spec_suffix_and_case() -> None:
    for name in ("Int16", "int16", "Int16Spec", "INT16"):
        spec = spec_from_mapping({"type": name}, "spec")
        assert spec == Int16Spec()


def test_enum_names_ignore_case() -> None:
    spec = spec_from_mapping(
        {
            "type": "Int8",
            "scale_type": "powerof2",
            "calibration_method": "minmax",
            "quant_granularity": "channel",
        },
        "spec",
    )

    assert spec == Int8Spec(
        scale_type=ScaleType.PowerOf2,
        calibration_method=CalibMethod.MinMax,
        quant_granularity=QuantGranularity.Channel,
    )


def test_every_option_accepted_with_default() -> None:
    defaults = {name: option.default for name, option in OPTIONS.items()}

    assert config_from_mapping({"options": defaults}) == QConfig()
    assert config_from_mapping(defaults) == QConfig()


# Errors


def test_unknown_top_level_key_suggestion() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'global_config'"):
        config_from_mapping({"global_confg": {}})


def test_unknown_option_suggestion() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'PrintSummary'"):
        config_from_mapping({"options": {"PrintSumary": False}})


def test_unknown_top_level_option_suggestion() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'CalibMovingAverage'"):
        config_from_mapping({"CalibMovingAvrage": True})


def test_unknown_spec_key_suggestion() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'symmetric'"):
        config_from_mapping({"global_config": {"activation": {"type": "Int8", "symetric": True}}})


def test_unknown_layer_key_suggestion() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'activation'"):
        config_from_mapping({"global_config": {"activations": {"type": "Int8"}}})


def test_unknown_type_name_suggestion() -> None:
    with pytest.raises(ConfigError, match="'Int9' is not a data type") as caught:
        config_from_mapping({"global_config": {"weight": {"type": "Int9"}}})
    assert "Did you mean 'Int8'" in str(caught.value)


def test_spec_without_type_keeps_default_type() -> None:
    config = config_from_mapping({"global_config": {"weight": {"symmetric": False}}})

    assert config.global_config.weight == Int8Spec(symmetric=False)
    with pytest.raises(ConfigError, match="missing 'type'"):
        spec_from_mapping({"symmetric": True}, "spec")


def test_top_level_spec_field_rejected() -> None:
    with pytest.raises(ConfigError, match=r"global_config\.activation"):
        config_from_mapping({"calibration_method": "Percentile"})


def test_invalid_enum_value() -> None:
    with pytest.raises(ConfigError, match="scale_type 'Float64' is invalid"):
        config_from_mapping(
            {"global_config": {"weight": {"type": "Int8", "scale_type": "Float64"}}}
        )


def test_unbuilt_type_raises_not_built() -> None:
    with pytest.raises(NotBuiltError, match="Int32Spec"):
        config_from_mapping({"global_config": {"weight": {"type": "Int32"}}})


def test_unbuilt_algorithm_raises_not_built() -> None:
    with pytest.raises(NotBuiltError, match="AdaRoundConfig"):
        config_from_mapping({"algo_config": [{"type": "AdaRound", "num_iterations": 2}]})


def test_unknown_algorithm_type() -> None:
    with pytest.raises(ConfigError, match="'Magic' is unknown"):
        config_from_mapping({"algo_config": [{"type": "Magic"}]})


def test_option_set_twice() -> None:
    with pytest.raises(ConfigError, match="both at top level and under options"):
        config_from_mapping({"PrintSummary": True, "options": {"PrintSummary": False}})


def test_wrong_option_type() -> None:
    with pytest.raises(ConfigError, match="CalibDataSize"):
        config_from_mapping({"CalibDataSize": "ten"})


def test_wrong_symmetric_type() -> None:
    with pytest.raises(ConfigError, match="symmetric must be True or False"):
        config_from_mapping({"global_config": {"weight": {"type": "Int8", "symmetric": "yes"}}})


def test_file_errors_name_file(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "global_confg = {}\n")

    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    assert str(caught.value).startswith(str(path))
    assert "Did you mean 'global_config'" in str(caught.value)


def test_not_built_error_names_file(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", json.dumps({"QuantizeFP16": True}))

    with pytest.raises(NotBuiltError) as caught:
        load_config_file(path)
    assert str(caught.value).startswith(str(path))


def test_invalid_toml_syntax(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "PrintSummary = \n")

    with pytest.raises(ConfigError, match="invalid TOML") as caught:
        load_config_file(path)
    assert str(path) in str(caught.value)


def test_invalid_json_syntax(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", "{PrintSummary: false}")

    with pytest.raises(ConfigError, match="invalid JSON") as caught:
        load_config_file(path)
    assert str(path) in str(caught.value)


def test_json_top_level_list(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", "[1, 2]")

    with pytest.raises(ConfigError, match="top level must be an object"):
        load_config_file(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config_file(tmp_path / "absent.toml")


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "PrintSummary: false\n")

    with pytest.raises(ConfigError, match=re.escape("must end in .json or .toml")):
        read_config_file(path)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b'{"TmpDir": "\xff"}')

    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config_file(path)


def test_options_page_example_loads(tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "options.md").read_text()
    example = page.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.toml"
    path.write_text(example)

    config = load_config_file(path)

    assert config.global_config.activation == UInt8Spec(
        calibration_method=CalibMethod.Percentile
    )
    assert config.global_config.weight == Int8Spec(quant_granularity=QuantGranularity.Channel)
    assert config.options.Percentile == 99.99
