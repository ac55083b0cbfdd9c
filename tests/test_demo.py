"""End-to-end checks of the bundled demo: data, model and int8 per-channel accuracy."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from qrewrite.demo import run


@pytest.fixture(scope="module")
def demo_result() -> run.DemoResult:
    return run.run_demo()


def test_demo_model_keeps_batchnorm() -> None:
    model = onnx.load_from_string(run.load_demo_model())
    op_types = {node.op_type for node in model.graph.node}
    for op_type in ("Conv", "BatchNormalization", "Relu", "MaxPool", "Add", "Gemm"):
        assert op_type in op_types
    assert model.opset_import[0].version == 17


def test_demo_data_splits_are_disjoint() -> None:
    data = run.load_demo_data()
    assert data["calib_images"].shape == (100, 8, 8)
    assert len(data["eval_images"]) == len(data["eval_labels"]) == 540
    calibration = {image.tobytes() for image in data["calib_images"]}
    evaluation = {image.tobytes() for image in data["eval_images"]}
    assert not calibration & evaluation


def test_demo_float_accuracy(demo_result: run.DemoResult) -> None:
    assert demo_result.float_accuracy >= 0.97


def test_demo_int8_loses_at_most_one_point(demo_result: run.DemoResult) -> None:
    assert demo_result.accuracy_drop <= 0.01, run.format_result(demo_result)


def test_demo_quantized_model_is_smaller(demo_result: run.DemoResult) -> None:
    assert demo_result.quantized_size < demo_result.float_size


def test_demo_main_writes_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run.main([]) == 0
    assert list(tmp_path.iterdir()) == []
    output = capsys.readouterr().out
    assert "float" in output
    assert "quantized" in output
