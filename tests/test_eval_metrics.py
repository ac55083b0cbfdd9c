"""EvalMetrics: cosine and L2 of every output, from EvalDataReader or the calibration list."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from qrewrite import Int4Spec, ModelQuantizer, QConfig, QLayerConfig
from qrewrite.errors import CalibrationDataError, ConfigError
from tests.qmodels import make_model, run, samples, tensor

FEEDS = samples({"x": [2, 8]}, 6)


def _model():
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["y"]),
        helper.make_node("Sigmoid", ["h"], ["p"]),
    ]
    inits = [
        tensor("w", rng.normal(size=(5, 8)).astype(np.float32)),
        tensor("b", rng.normal(size=5).astype(np.float32)),
    ]
    return make_model(nodes, [("x", [2, 8])], ["y", "p"], inits)


def _summary_metrics(printed: str) -> dict[str, str]:
    lines = [line for line in printed.splitlines() if line.startswith("EvalMetrics")]
    return {line.split("'")[1]: line for line in lines}


def test_metrics_match_a_direct_comparison(capsys) -> None:
    evaluation = samples({"x": [2, 8]}, 4, seed=9)
    config = QConfig(EvalMetrics=True, EvalDataReader=evaluation)

    quantized = ModelQuantizer(config).quantize_model(_model(), None, FEEDS)

    metrics = _summary_metrics(capsys.readouterr().out)
    assert set(metrics) == {"y", "p"}
    cosines = []
    for feed in evaluation:
        want, got = run(_model(), feed)[0].ravel(), run(quantized, feed)[0].ravel()
        cosines.append(want @ got / np.linalg.norm(want) / np.linalg.norm(got))
    assert f"min {min(cosines):.6f}" in metrics["y"]
    assert "over 4 sample(s)" in metrics["y"]


def test_worse_types_give_worse_metrics(capsys) -> None:
    int4 = QLayerConfig(activation=Int4Spec(), weight=Int4Spec())
    ModelQuantizer(QConfig(EvalMetrics=True)).quantize_model(_model(), None, FEEDS)
    eight_bit = _summary_metrics(capsys.readouterr().out)["y"]
    ModelQuantizer(QConfig(int4, EvalMetrics=True)).quantize_model(_model(), None, FEEDS)
    four_bit = _summary_metrics(capsys.readouterr().out)["y"]

    def mean_cosine(line: str) -> float:
        return float(line.split("cosine mean ")[1].split()[0])

    assert mean_cosine(four_bit) < mean_cosine(eight_bit)
    assert "over 6 sample(s)" in eight_bit


def test_used_up_reader_is_an_error() -> None:
    config = QConfig(EvalMetrics=True, PrintSummary=False)
    with pytest.raises(CalibrationDataError, match="pass EvalDataReader"):
        ModelQuantizer(config).quantize_model(_model(), None, iter(FEEDS))


def test_bad_eval_samples_leave_no_output(tmp_path) -> None:
    output = tmp_path / "model.q.onnx"
    wrong = [{"x": np.ones((2, 3), np.float32)}]
    config = QConfig(EvalMetrics=True, EvalDataReader=wrong, PrintSummary=False)
    with pytest.raises(CalibrationDataError, match="x"):
        ModelQuantizer(config).quantize_model(_model(), output, FEEDS)
    assert list(tmp_path.iterdir()) == []


def test_path_as_eval_reader_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--eval-data"):
        QConfig(EvalMetrics=True, EvalDataReader="samples.npz")


def test_calib_data_size_leaves_eval_set_whole(capsys) -> None:
    evaluation = samples({"x": [2, 8]}, 4, seed=5)
    config = QConfig(EvalMetrics=True, EvalDataReader=evaluation, CalibDataSize=2)

    ModelQuantizer(config).quantize_model(_model(), None, FEEDS)

    metrics = _summary_metrics(capsys.readouterr().out)
    assert "over 4 sample(s)" in metrics["y"]
