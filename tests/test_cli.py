"""Tests of the `qrewrite` command line and of calibration data files.

Tests marked with the `pipeline` fixture run a real quantization and are skipped while
the quantization pipeline cannot be imported. Every other test runs the command line
with `ModelQuantizer.quantize_model` replaced, so parsing, config building, exit codes
and error lines are checked on their own.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qrewrite import ModelQuantizer
from qrewrite.calibration.files import CalibrationFiles, read_calibration_data
from qrewrite.cli import (
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    build_config,
    build_parser,
    default_layer_config,
    main,
    parse_input_ranges,
    parse_input_shapes,
)
from qrewrite.config import (
    CalibMethod,
    Int8Spec,
    Int16Spec,
    QConfig,
    QLayerConfig,
    QuantGranularity,
    ScaleType,
    UInt8Spec,
)
from qrewrite.errors import CalibrationDataError, ModelInputError
from qrewrite.recommended import recommended_config

FEATURES = 16


def make_model() -> onnx.ModelProto:
    """Build y = relu(x @ W) with a static input of shape [1, FEATURES]."""
    weight = np.linspace(-1.0, 1.0, FEATURES * FEATURES, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
            helper.make_node("Relu", ["h"], ["y"], name="relu"),
        ],
        "cli_graph",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, FEATURES])],
        initializer=[numpy_helper.from_array(weight.reshape(FEATURES, FEATURES), "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(make_model(), path)
    return path


@pytest.fixture
def out_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace quantize_model with a recorder, so no test here depends on the pipeline."""
    recorded: list[dict[str, Any]] = []

    def record(
        self: ModelQuantizer, model_input: Any, model_output: Any = None, reader: Any = None
    ) -> onnx.ModelProto:
        samples = None if reader is None else list(reader)
        recorded.append(
            {
                "config": self.config,
                "input": model_input,
                "output": model_output,
                "samples": samples,
            }
        )
        return make_model()

    monkeypatch.setattr(ModelQuantizer, "quantize_model", record)
    return recorded


@pytest.fixture
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip the test unless the quantization pipeline can be imported and run."""
    pytest.importorskip("qrewrite.pipeline")
    folder = tmp_path_factory.mktemp("pipeline_probe")
    config = QConfig(UseRandomData=True, PrintSummary=False)
    try:
        ModelQuantizer(config).quantize_model(make_model(), folder / "probe.onnx")
    except ImportError as error:
        pytest.skip(f"the quantization pipeline is incomplete: {error}")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("qrewrite: error: ")
    assert "Traceback" not in err
    return lines[0]


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["quantize", "in.onnx", "out.onnx", *argv])


# Usage errors and help


def test_no_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys)

    assert code == EXIT_USAGE
    assert "required" in assert_one_error_line(err)


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "quantize", "--help")

    assert code == EXIT_OK
    assert "--calibration-data" in out
    assert "--per-channel" in out
    assert err == ""


def test_version_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--version")

    assert code == EXIT_OK
    assert out.startswith("qrewrite ")


def test_missing_output_argument(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "quantize", "in.onnx")

    assert code == EXIT_USAGE
    assert "OUT.onnx" in assert_one_error_line(err)


def test_invalid_type_choice(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "quantize", "a.onnx", "b.onnx", "--weight-type", "Int9")

    assert code == EXIT_USAGE
    assert "Int9" in assert_one_error_line(err)


def test_calibration_size_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "quantize", "a.onnx", "b.onnx", "--calibration-size", "0")

    assert code == EXIT_USAGE
    assert "positive integer" in assert_one_error_line(err)


@pytest.mark.parametrize(
    "flags",
    [
        ["--random-data", "--calibration-data", "data.npz"],
        ["--debug", "--quiet"],
        ["--symmetric", "--asymmetric"],
        ["--per-tensor", "--per-channel"],
    ],
)
def test_exclusive_flags(capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:
    code, _, err = run_cli(capsys, "quantize", "a.onnx", "b.onnx", *flags)

    assert code == EXIT_USAGE
    assert "not allowed with" in assert_one_error_line(err)


# Input and output path errors


def test_missing_input_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, calls: list[dict[str, Any]]
) -> None:
    missing = tmp_path / "absent.onnx"

    code, _, err = run_cli(capsys, "quantize", missing, tmp_path / "out.onnx", "--random-data")

    assert code == EXIT_USAGE
    line = assert_one_error_line(err)
    assert "not found" in line
    assert str(missing) in line
    assert calls == []


def test_truncated_input_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, calls: list[dict[str, Any]]
) -> None:
    data = make_model().SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])

    code, _, err = run_cli(capsys, "quantize", path, tmp_path / "out.onnx", "--random-data")

    assert code == EXIT_USAGE
    assert str(path) in assert_one_error_line(err)
    assert calls == []


def test_input_folder_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, calls: list[dict[str, Any]]
) -> None:
    code, _, err = run_cli(capsys, "quantize", tmp_path, tmp_path / "out.onnx", "--random-data")

    assert code == EXIT_USAGE
    assert "is a folder" in assert_one_error_line(err)


def test_missing_output_folder_exits_2(
    capsys: pytest.CaptureFixture[str],
    model_path: Path,
    tmp_path: Path,
    calls: list[dict[str, Any]],
) -> None:
    output = tmp_path / "absent" / "out.onnx"

    code, _, err = run_cli(capsys, "quantize", model_path, output, "--random-data")

    assert code == EXIT_USAGE
    assert "does not exist" in assert_one_error_line(err)
    assert calls == []


def test_output_equal_to_input_exits_2(
    capsys: pytest.CaptureFixture[str], model_path: Path, calls: list[dict[str, Any]]
) -> None:
    before = model_path.read_bytes()

    code, _, err = run_cli(capsys, "quantize", model_path, model_path, "--random-data")

    assert code == EXIT_USAGE
    assert "would overwrite the input" in assert_one_error_line(err)
    assert model_path.read_bytes() == before
    assert calls == []


def test_external_data_outside_exits_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    out_folder: Path,
    calls: list[dict[str, Any]],
) -> None:
    proto = make_model()
    tensor = proto.graph.initializer[0]
    onnx.external_data_helper.set_external_data(tensor, "../outside.bin")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    (tmp_path / "model").mkdir()
    path = tmp_path / "model" / "model.onnx"
    path.write_bytes(proto.SerializeToString())

    code, _, err = run_cli(capsys, "quantize", path, out_folder / "out.onnx", "--random-data")

    assert code == EXIT_USAGE
    assert "outside the model's folder" in assert_one_error_line(err)
    assert list(out_folder.iterdir()) == []


def test_no_calibration_data_exits_2(
    capsys: pytest.CaptureFixture[str], model_path: Path, out_folder: Path
) -> None:
    code, _, err = run_cli(capsys, "quantize", model_path, out_folder / "out.onnx")

    assert code == EXIT_USAGE
    line = assert_one_error_line(err)
    assert "--calibration-data" in line
    assert "--random-data" in line
    assert not (out_folder / "out.onnx").exists()


def test_weight_only_config_needs_no_data(
    capsys: pytest.CaptureFixture[str], model_path: Path, out_folder: Path, tmp_path: Path
) -> None:
    config = tmp_path / "weights.toml"
    config.write_text('[global_config]\nactivation = "float"\n')

    code, _, err = run_cli(
        capsys, "quantize", model_path, out_folder / "out.onnx", "--config", config
    )

    assert code == EXIT_OK, err
    quantized = onnx.load(out_folder / "out.onnx")
    assert any(node.op_type == "DequantizeLinear" for node in quantized.graph.node)


def test_eval_data_reports_metrics(
    capsys: pytest.CaptureFixture[str], model_path: Path, out_folder: Path, tmp_path: Path
) -> None:
    model = onnx.load(model_path)
    name = model.graph.input[0].name
    dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(3)
    samples = tmp_path / "samples.npz"
    np.savez(samples, **{f"{name}/{i}": rng.normal(size=dims).astype(np.float32) for i in range(3)})

    code, out, err = run_cli(
        capsys,
        "quantize",
        model_path,
        out_folder / "out.onnx",
        "--calibration-data",
        samples,
        "--eval-data",
        samples,
    )

    assert code == EXIT_OK, err
    assert "EvalMetrics" in out
    assert "over 3 sample(s)" in out


# Config files on the command line


def test_config_unknown_key_exits_2(
    capsys: pytest.CaptureFixture[str],
    model_path: Path,
    out_folder: Path,
    tmp_path: Path,
    calls: list[dict[str, Any]],
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("PrintSumary = false\n")

    code, _, err = run_cli(
        capsys,
        "quantize",
        model_path,
        out_folder / "out.onnx",
        "--random-data",
        "--config",
        config,
    )

    assert code == EXIT_USAGE
    line = assert_one_error_line(err)
    assert str(config) in line
    assert "Did you mean 'PrintSummary'" in line


def test_config_invalid_toml_exits_2(
    capsys: pytest.CaptureFixture[str],
    model_path: Path,
    out_folder: Path,
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[global_config\n")

    code, _, err = run_cli(
        capsys, "quantize", model_path, out_folder / "out.onnx", "--config", config
    )

    assert code == EXIT_USAGE
    assert "invalid TOML" in assert_one_error_line(err)


def test_unbuilt_type_exits_2(
    capsys: pytest.CaptureFixture[str],
    model_path: Path,
    out_folder: Path,
) -> None:
    code, _, err = run_cli(
        capsys,
        "quantize",
        model_path,
        out_folder / "out.onnx",
        "--random-data",
        "--weight-type",
        "Int32",
    )

    assert code == EXIT_USAGE
    assert "not built yet" in assert_one_error_line(err)


# Config building


def test_default_layer_config_is_recommended_cpu_types() -> None:
    expected = QLayerConfig(
        activation=UInt8Spec(), weight=Int8Spec(quant_granularity=QuantGranularity.Channel)
    )

    assert default_layer_config() == expected
    assert default_layer_config() == recommended_config().global_config
    assert expected.activation is not None and not expected.activation.symmetric


def test_no_flags_gives_recommended_config() -> None:
    assert build_config(parse()) == recommended_config()


def test_default_layer_config_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    default = QLayerConfig(
        activation=UInt8Spec(), weight=Int8Spec(quant_granularity=QuantGranularity.Channel)
    )
    monkeypatch.setattr("qrewrite.cli.default_layer_config", lambda: default)

    assert build_config(parse()).global_config == default
    assert build_config(parse("--weight-type", "Int16")).global_config == QLayerConfig(
        activation=UInt8Spec(), weight=Int16Spec(quant_granularity=QuantGranularity.Channel)
    )


def test_type_flags_override_defaults() -> None:
    config = build_config(parse("--activation-type", "Int8", "--weight-type", "Int16"))

    # The default's per-channel weights survive a change of type; symmetry follows the type.
    assert config.global_config == QLayerConfig(
        activation=Int8Spec(), weight=Int16Spec(quant_granularity=QuantGranularity.Channel)
    )


def test_float_type_flag() -> None:
    config = build_config(parse("--activation-type", "float"))

    assert config.global_config.activation is None
    assert config.global_config.weight == Int8Spec(quant_granularity=QuantGranularity.Channel)


def test_spec_flags() -> None:
    config = build_config(
        parse(
            "--asymmetric",
            "--per-channel",
            "--scale-type",
            "PowerOf2",
            "--calibration-method",
            "MinMax",
        )
    )

    activation = config.global_config.activation
    weight = config.global_config.weight
    assert activation == UInt8Spec(
        symmetric=False, scale_type=ScaleType.PowerOf2, calibration_method=CalibMethod.MinMax
    )
    assert weight == Int8Spec(
        symmetric=False, scale_type=ScaleType.PowerOf2, quant_granularity=QuantGranularity.Channel
    )


def test_spec_flag_on_float_specs_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        capsys, "quantize", "a.onnx", "b.onnx", "--weight-type", "float", "--per-channel"
    )

    assert code == EXIT_USAGE
    assert "--per-channel has no effect" in assert_one_error_line(err)


def test_flags_override_config_file(tmp_path: Path) -> None:
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        'exclude = ["head"]\n'
        "[global_config.activation]\n"
        'type = "UInt8"\n'
        "symmetric = false\n"
        "[global_config.weight]\n"
        'type = "Int8"\n'
        "[options]\n"
        "CalibDataSize = 5\n"
        "RandomDataReaderInputShape = { x = [1, 16], other = [2, 2] }\n"
    )

    config = build_config(
        parse(
            "--config",
            str(config_path),
            "--activation-type",
            "Int16",
            "--calibration-size",
            "7",
            "--input-shape",
            "x=4,16",
            "--exclude",
            "tail",
            "--random-data",
        )
    )

    # The file's explicit symmetric=false survives the type change.
    assert config.global_config.activation == Int16Spec(symmetric=False)
    assert config.global_config.weight == Int8Spec()
    assert config.options.CalibDataSize == 7
    assert config.options.UseRandomData is True
    assert dict(config.options.RandomDataReaderInputShape) == {"x": (4, 16), "other": (2, 2)}
    assert config.exclude == ("head", "tail")


def test_config_file_float_activation_kept(tmp_path: Path) -> None:
    config_path = tmp_path / "config.json"
    config_path.write_text(
        json.dumps({"global_config": {"activation": "float", "weight": {"type": "Int8"}}})
    )

    config = build_config(parse("--config", str(config_path), "--per-channel"))

    assert config.global_config.activation is None
    assert config.global_config.weight == Int8Spec(quant_granularity=QuantGranularity.Channel)


def test_config_file_missing_role_default(tmp_path: Path) -> None:
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        '[global_config.activation]\ntype = "UInt8"\ncalibration_method = "Percentile"\n'
    )

    config = build_config(parse("--config", str(config_path)))

    assert config.global_config.activation == UInt8Spec(calibration_method=CalibMethod.Percentile)
    assert config.global_config.weight == default_layer_config().weight


def test_verbosity_flags() -> None:
    quiet = build_config(parse("--quiet"))
    debug = build_config(parse("--debug"))

    assert quiet.options.PrintSummary is False
    assert quiet.options.LogSeverityLevel == 3
    assert debug.options.DebugMode is True


def test_external_data_flag() -> None:
    assert build_config(parse("--external-data")).use_external_data_format is True


def test_input_range_flag() -> None:
    config = build_config(parse("--random-data", "--input-range", "x=-1,1"))

    assert dict(config.options.RandomDataReaderInputDataRange) == {"x": (-1.0, 1.0)}


def test_parse_input_shapes() -> None:
    assert parse_input_shapes(["x=1,3,224,224", "a/b:0=2"]) == {
        "x": [1, 3, 224, 224],
        "a/b:0": [2],
    }


@pytest.mark.parametrize("entry", ["x", "=1,2", "x=", "x=1,two", "x=1,-2"])
def test_parse_input_shapes_invalid(entry: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "quantize", "a", "b", "--random-data", "--input-shape", entry)

    assert code == EXIT_USAGE
    assert "--input-shape" in assert_one_error_line(err)


def test_parse_input_ranges() -> None:
    assert parse_input_ranges(["x=-1,1.5"]) == {"x": [-1.0, 1.5]}


@pytest.mark.parametrize("entry", ["x=1", "x=2,1", "x=a,b", "x=1,2,3"])
def test_parse_input_ranges_invalid(entry: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "quantize", "a", "b", "--random-data", "--input-range", entry)

    assert code == EXIT_USAGE
    assert "--input-range" in assert_one_error_line(err)


def test_input_shape_with_calibration_data(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        capsys, "quantize", "a", "b", "--calibration-data", "d.npz", "--input-shape", "x=1"
    )

    assert code == EXIT_USAGE
    assert "only to random data" in assert_one_error_line(err)


# Running quantize with the pipeline replaced


def test_quantize_passes_config_and_paths(
    capsys: pytest.CaptureFixture[str],
    model_path: Path,
    out_folder: Path,
    calls: list[dict[str, Any]],
) -> None:
    output = out_folder / "out.onnx"

    code, out, err = run_cli(
        capsys, "quantize", model_path, output, "--random-data", "--weight-type", "Int16"
    )

    assert code == EXIT_OK
    assert err == ""
    assert str(output) in out
    assert len(calls) == 1
    assert calls[0]["input"] == str(model_path)
    assert calls[0]["output"] == str(output)
    assert calls[0]["samples"] is None
    assert calls[0]["config"].options.UseRandomData is True
    assert calls[0]["config"].global_config.weight == Int16Spec(
        quant_granularity=QuantGranularity.Channel
    )


def test_quantize_reads_calibration_npz(
    capsys: pytest.CaptureFixture[str],
    model_path: Path,
    out_folder: Path,
    tmp_path: Path,
    calls: list[dict[str, Any]],
) -> None:
    samples = [np.full((1, FEATURES), i, dtype=np.float32) for i in range(3)]
    data_path = tmp_path / "calibration.npz"
    np.savez(data_path, **{f"x/{i}": sample for i, sample in enumerate(samples)})

    code, _, _ = run_cli(
        capsys, "quantize", model_path, out_folder / "out.onnx", "--calibration-data", data_path
    )

    assert code == EXIT_OK
    received = calls[0]["samples"]
    assert len(received) == 3
    for sample, expected in zip(received, samples, strict=True):
        np.testing.assert_array_equal(sample["x"], expected)


def test_calibration_data_wrong_input_exits_2(
    capsys: pytest.CaptureFixture[str],
    model_path: Path,
    out_folder: Path,
    tmp_path: Path,
    calls: list[dict[str, Any]],
) -> None:
    data_path = tmp_path / "calibration.npz"
    np.savez(data_path, **{"image/0": np.zeros((1, FEATURES), dtype=np.float32)})

    code, _, err = run_cli(
        capsys, "quantize", model_path, out_folder / "out.onnx", "--calibration-data", data_path
    )

    assert code == EXIT_USAGE
    line = assert_one_error_line(err)
    assert "'image'" in line
    assert "model inputs: ['x']" in line
    assert calls == []


def test_quiet_prints_nothing(
    capsys: pytest.CaptureFixture[str],
    model_path: Path,
    out_folder: Path,
    calls: list[dict[str, Any]],
) -> None:
    code, out, err = run_cli(
        capsys, "quantize", model_path, out_folder / "out.onnx", "--random-data", "--quiet"
    )

    assert code == EXIT_OK
    assert out == ""
    assert err == ""


def raise_in_quantizer(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def fail(self: ModelQuantizer, *args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(ModelQuantizer, "quantize_model", fail)


def test_internal_error_exits_1(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    model_path: Path,
    out_folder: Path,
) -> None:
    raise_in_quantizer(monkeypatch, RuntimeError("broken plan\nsecond line"))

    code, _, err = run_cli(capsys, "quantize", model_path, out_folder / "o.onnx", "--random-data")

    assert code == EXIT_INTERNAL_ERROR
    line = assert_one_error_line(err)
    assert "internal error: RuntimeError: broken plan second line" in line
    assert "--debug" in line


def test_internal_error_debug_traceback(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    model_path: Path,
    out_folder: Path,
) -> None:
    raise_in_quantizer(monkeypatch, RuntimeError("broken plan"))

    code, _, err = run_cli(
        capsys, "quantize", model_path, out_folder / "o.onnx", "--random-data", "--debug"
    )

    assert code == EXIT_INTERNAL_ERROR
    assert "Traceback" in err
    assert err.splitlines()[-1].startswith("qrewrite: error: internal error: RuntimeError")


def test_user_error_from_pipeline_exits_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    model_path: Path,
    out_folder: Path,
) -> None:
    raise_in_quantizer(monkeypatch, CalibrationDataError("sample 0 contains NaN"))

    code, _, err = run_cli(capsys, "quantize", model_path, out_folder / "o.onnx", "--random-data")

    assert code == EXIT_USAGE
    assert assert_one_error_line(err) == "qrewrite: error: sample 0 contains NaN"


def test_interrupt_exits_130(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    model_path: Path,
    out_folder: Path,
) -> None:
    raise_in_quantizer(monkeypatch, KeyboardInterrupt())

    code, _, err = run_cli(capsys, "quantize", model_path, out_folder / "o.onnx", "--random-data")

    assert code == EXIT_INTERRUPTED
    assert "interrupted" in assert_one_error_line(err)


def test_errors_write_nothing_to_working_directory(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    model_path: Path,
    calls: list[dict[str, Any]],
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    run_cli(capsys, "quantize", model_path, "out.onnx")
    run_cli(capsys, "quantize", "absent.onnx", "out.onnx", "--random-data")
    run_cli(capsys, "quantize", model_path, "missing/out.onnx", "--random-data")

    assert list(cwd.iterdir()) == []


# Demo


def test_demo_runs_demo_main(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = pytest.importorskip("qrewrite.demo.run")
    received: list[Any] = []

    def fake_main(argv: list[str] | None = None) -> int:
        received.append(argv)
        return 0

    monkeypatch.setattr(run, "main", fake_main)

    code, _, _ = run_cli(capsys, "demo")

    assert code == EXIT_OK
    assert received == [[]]


def test_demo_failure_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = pytest.importorskip("qrewrite.demo.run")

    def broken_main(argv: list[str] | None = None) -> int:
        raise ValueError("accuracy table failed")

    monkeypatch.setattr(run, "main", broken_main)

    code, _, err = run_cli(capsys, "demo")

    assert code == EXIT_INTERNAL_ERROR
    assert "accuracy table failed" in assert_one_error_line(err)


# Runs with the real pipeline


@pytest.mark.usefixtures("pipeline")
def test_quantize_random_data_end_to_end(
    capsys: pytest.CaptureFixture[str], model_path: Path, out_folder: Path
) -> None:
    output = out_folder / "out.onnx"

    code, _, err = run_cli(capsys, "quantize", model_path, output, "--random-data", "--quiet")

    assert code == EXIT_OK, err
    assert [p.name for p in out_folder.iterdir()] == ["out.onnx"]
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    result = session.run(None, {"x": np.ones((1, FEATURES), dtype=np.float32)})
    assert result[0].shape == (1, FEATURES)


@pytest.mark.usefixtures("pipeline")
def test_quantize_twice_byte_identical(
    capsys: pytest.CaptureFixture[str], model_path: Path, out_folder: Path, tmp_path: Path
) -> None:
    data_path = tmp_path / "calibration.npz"
    rng = np.random.default_rng(0)
    np.savez(
        data_path, **{f"x/{i}": rng.normal(size=(1, FEATURES)).astype(np.float32) for i in range(4)}
    )
    first = out_folder / "first.onnx"
    second = out_folder / "second.onnx"

    for output in (first, second):
        code, _, err = run_cli(
            capsys, "quantize", model_path, output, "--calibration-data", data_path, "--quiet"
        )
        assert code == EXIT_OK, err

    assert first.read_bytes() == second.read_bytes()


@pytest.mark.usefixtures("pipeline")
def test_quantize_with_config_file(
    capsys: pytest.CaptureFixture[str], model_path: Path, out_folder: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        "UseRandomData = true\n"
        "PrintSummary = false\n"
        "[global_config.activation]\n"
        'type = "UInt8"\n'
        "[global_config.weight]\n"
        'type = "Int8"\n'
        'quant_granularity = "Channel"\n'
    )
    output = out_folder / "out.onnx"

    code, _, err = run_cli(capsys, "quantize", model_path, output, "--config", config)

    assert code == EXIT_OK, err
    element_types = {tensor.data_type for tensor in onnx.load(output).graph.initializer}
    assert TensorProto.INT8 in element_types


# Calibration data files


def test_npz_indexed_keys_in_numeric_order(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    arrays = {f"x/{i}": np.full((1, 2), i, dtype=np.float32) for i in (0, 1, 2, 10)}
    np.savez(path, **arrays)

    data = read_calibration_data(path)

    assert len(data) == 4
    assert [float(sample["x"][0, 0]) for sample in data] == [0.0, 1.0, 2.0, 10.0]


def test_npz_names_with_slash(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **{"encoder/ids/0": np.zeros(3), "encoder/ids/1": np.ones(3)})

    samples = list(read_calibration_data(path, ["encoder/ids"]))

    assert [sorted(sample) for sample in samples] == [["encoder/ids"], ["encoder/ids"]]


def test_npz_plain_keys_single_sample(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((1, 2)), mask=np.ones((1, 2)))

    samples = list(read_calibration_data(path))

    assert len(samples) == 1
    assert sorted(samples[0]) == ["mask", "x"]


def test_npz_iterates_twice(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **{f"x/{i}": np.full(2, i) for i in range(3)})
    data = read_calibration_data(path)

    first = [sample["x"].tolist() for sample in data]
    second = [sample["x"].tolist() for sample in data]

    assert first == second
    assert isinstance(data, CalibrationFiles)


def test_npz_mixed_keys(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **{"x/0": np.zeros(2), "mask": np.zeros(2)})

    with pytest.raises(CalibrationDataError, match="mixes NAME/INDEX keys"):
        read_calibration_data(path)


def test_npz_inconsistent_inputs(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **{"x/0": np.zeros(2), "m/0": np.zeros(2), "x/1": np.zeros(2)})

    with pytest.raises(CalibrationDataError, match=re.escape("missing ['m']")):
        read_calibration_data(path)


def test_npz_duplicate_index(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **{"x/0": np.zeros(2), "x/00": np.zeros(2)})

    with pytest.raises(CalibrationDataError, match="keep one"):
        read_calibration_data(path)


def test_npz_empty(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path)

    with pytest.raises(CalibrationDataError, match="contains no arrays"):
        read_calibration_data(path)


def test_npz_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip file")

    with pytest.raises(CalibrationDataError, match="failed to read") as caught:
        read_calibration_data(path)
    assert str(path) in str(caught.value)


def test_npz_object_array_rejected(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **{"x/0": np.array([{"a": 1}], dtype=object)})
    data = read_calibration_data(path)

    with pytest.raises(CalibrationDataError, match="x/0"):
        list(data)


def test_npz_unknown_input_name(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **{"image/0": np.zeros(2)})

    with pytest.raises(CalibrationDataError, match=re.escape("model inputs: ['x']")):
        read_calibration_data(path, ["x"])


def test_npz_missing_input_name(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, **{"x/0": np.zeros(2)})

    with pytest.raises(CalibrationDataError, match=re.escape("is missing inputs ['mask']")):
        read_calibration_data(path, ["x", "mask"])


def test_folder_natural_order(tmp_path: Path) -> None:
    for index in (10, 2, 1):
        np.savez(tmp_path / f"sample_{index}.npz", x=np.full(2, index))
    (tmp_path / "README.txt").write_text("ignored")
    (tmp_path / ".hidden.npz").write_bytes(b"ignored")
    (tmp_path / "sub").mkdir()

    data = read_calibration_data(tmp_path, ["x"])

    assert [int(sample["x"][0]) for sample in data] == [1, 2, 10]


def test_folder_npy_single_input(tmp_path: Path) -> None:
    np.save(tmp_path / "0.npy", np.zeros((1, 2), dtype=np.float32))
    np.save(tmp_path / "1.npy", np.ones((1, 2), dtype=np.float32))

    samples = list(read_calibration_data(tmp_path, ["x"]))

    assert [sample["x"].tolist() for sample in samples] == [[[0.0, 0.0]], [[1.0, 1.0]]]


def test_folder_npy_needs_single_input(tmp_path: Path) -> None:
    np.save(tmp_path / "0.npy", np.zeros(2))

    with pytest.raises(CalibrationDataError, match="single input"):
        read_calibration_data(tmp_path, ["x", "mask"])
    with pytest.raises(CalibrationDataError, match="single input"):
        read_calibration_data(tmp_path)


def test_folder_without_samples(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no samples")

    with pytest.raises(CalibrationDataError, match=re.escape("contains no .npz or .npy files")):
        read_calibration_data(tmp_path)


def test_single_npy_file(tmp_path: Path) -> None:
    path = tmp_path / "sample.npy"
    np.save(path, np.arange(4))

    samples = list(read_calibration_data(path, ["x"]))

    assert samples[0]["x"].tolist() == [0, 1, 2, 3]


def test_calibration_path_missing(tmp_path: Path) -> None:
    with pytest.raises(CalibrationDataError, match="not found"):
        read_calibration_data(tmp_path / "absent.npz")


def test_calibration_wrong_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("1,2,3\n")

    with pytest.raises(CalibrationDataError, match=re.escape("must be a .npz file")):
        read_calibration_data(path)


def test_calibration_error_is_user_error() -> None:
    from qrewrite.errors import QrewriteError

    assert issubclass(CalibrationDataError, QrewriteError)
    assert issubclass(ModelInputError, QrewriteError)


def test_sigterm_leaves_no_temporary_folder(tmp_path: Path) -> None:
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    model = Path(rapidocr.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f'TmpDir = "{scratch}"\nCalibDataSize = 400\n')
    command = [
        sys.executable,
        "-m",
        "qrewrite.cli",
        "quantize",
        str(model),
        str(tmp_path / "out.onnx"),
        "--random-data",
        "--input-shape",
        "x=1,3,320,320",
        "--config",
        str(config),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not any(scratch.iterdir()) and process.poll() is None:
        assert time.monotonic() < deadline, "calibration never started"
        time.sleep(0.05)

    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)

    assert process.returncode == EXIT_INTERRUPTED, err
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "out.onnx").exists()
