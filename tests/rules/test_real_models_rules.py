"""The built-in rules on the pretrained models that rapidocr_onnxruntime ships."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from qrewrite.rules import builtin_rules
from qrewrite.rules.dpu import DPU_RULES
from rule_harness import run_model

from qrewrite.rewrite import apply_rules

# Model file, its input shape for the test, and the rules expected to fire on it.
_MODELS = [
    ("ch_PP-OCRv4_det_infer.onnx", [1, 3, 64, 64], {"FoldBatchNorm", "FoldConvAffine"}),
    ("ch_PP-OCRv4_rec_infer.onnx", [1, 3, 48, 96], {"FoldBatchNorm", "FoldConvAffine"}),
    ("ch_ppocr_mobile_v2.0_cls_infer.onnx", [1, 3, 48, 192], {"FoldBatchNorm"}),
]


def _models_folder() -> Path | None:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "models"


@pytest.mark.parametrize(("file_name", "shape", "expected_rules"), _MODELS)
def test_exact_rules_keep_outputs(file_name, shape, expected_rules):
    folder = _models_folder()
    if folder is None or not (folder / file_name).exists():
        pytest.skip("rapidocr_onnxruntime is not installed")
    model = onnx.load(folder / file_name)
    # ReplaceClip6Relu is exact only for inputs up to 6, which these models exceed.
    # The DPU rules change results on purpose.
    dpu_names = [rule.name for rule in DPU_RULES]
    rules = builtin_rules().without(["ReplaceClip6Relu", *dpu_names])
    before = model.SerializeToString()

    result = apply_rules(model, rules)

    assert model.SerializeToString() == before
    fired = {name for name, report in result.rules.items() if report.matches}
    assert fired == expected_rules
    onnx.checker.check_model(result.model, full_check=True)
    feeds = {model.graph.input[0].name: np.random.default_rng(0).random(shape, np.float32)}
    expected_outputs = run_model(model, feeds)
    actual_outputs = run_model(result.model, feeds)
    for expected, actual in zip(expected_outputs, actual_outputs, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
