"""Fast checks of the metric functions behind benchmarks/bench_targets.py on tiny inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

# benchmarks/ is not an installed package, and plain `pytest` puts only tests/ on sys.path.
REPOSITORY_ROOT = str(Path(__file__).resolve().parent.parent)
if REPOSITORY_ROOT not in sys.path:
    sys.path.insert(0, REPOSITORY_ROOT)

from benchmarks.targets import embeddings, latency, memory, report, vad  # noqa: E402
from benchmarks.targets.variants import quantizer_for  # noqa: E402


def write_add_model(path: Path) -> Path:
    """Write a float model y = x + x with input x of shape [2, 3]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_mean_cosine_ignores_scale():
    reference = np.array([[1.0, 0.0], [0.0, 2.0]])

    assert embeddings.mean_cosine(reference, 3.0 * reference) == pytest.approx(1.0)
    assert embeddings.mean_cosine(reference, reference[::-1]) == pytest.approx(0.0)


def test_mean_cosine_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        embeddings.mean_cosine(np.ones((2, 3)), np.ones((3, 3)))


def test_retrieval_agreement_counts_changed_neighbors():
    reference = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    # Moving sentence 2 towards sentence 1 changes only sentence 2's nearest neighbor.
    candidate = reference.copy()
    candidate[2] = [0.6, 0.4]

    assert embeddings.retrieval_top1_agreement(reference, reference) == 1.0
    assert embeddings.retrieval_top1_agreement(reference, candidate) == 0.75


def test_decided_agreement_skips_tied_queries():
    # Sentence 0 is equally close to sentences 1 and 2, so its neighbour is a tie.
    reference = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.8, 0.0, 0.6], [0.0, 0.0, 1.0]])
    candidate = reference.copy()
    candidate[0] = [1.0, 0.0, 0.01]

    margins = embeddings.top1_margins(reference)
    assert margins[0] == pytest.approx(0.0)
    assert embeddings.retrieval_top1_agreement(reference, candidate) == 0.75
    assert embeddings.decided_retrieval_agreement(reference, candidate, 0.01) == (1.0, 3)
    with pytest.raises(ValueError, match="no query"):
        embeddings.decided_retrieval_agreement(reference, candidate, 10.0)


def test_decision_agreement_splits_at_threshold():
    reference = np.array([0.1, 0.6, 0.9, 0.4], dtype=np.float32)
    candidate = np.array([0.2, 0.5, 0.7, 0.6], dtype=np.float32)

    # 0.5 is not above the threshold, so frames 1 and 3 disagree.
    assert vad.decision_agreement(reference, candidate) == 0.5
    with pytest.raises(ValueError, match="non-empty"):
        vad.decision_agreement(reference, candidate[:2])


def test_vad_frame_blocks_prefix_context():
    pytest.importorskip("silero_vad")
    audio = np.arange(3 * vad.FRAME_SAMPLES, dtype=np.float32)
    blocks = vad.frame_blocks(audio, block_frames=2)

    assert [block.shape for block in blocks] == [(2, 576), (1, 576)]
    assert not blocks[0][0, : vad.CONTEXT_SAMPLES].any()
    np.testing.assert_array_equal(
        blocks[1][0, : vad.CONTEXT_SAMPLES],
        audio[2 * vad.FRAME_SAMPLES - vad.CONTEXT_SAMPLES : 2 * vad.FRAME_SAMPLES],
    )


def test_character_error_rate_sums_over_texts():
    pytest.importorskip("PIL")
    from benchmarks.targets.ocr_pipeline import character_error_rate

    assert character_error_rate(["abcd", "ef"], ["abcd", "ef"]) == 0.0
    # One substitution and one deletion over 6 reference characters.
    assert character_error_rate(["abcd", "ef"], ["abxd", "e"]) == pytest.approx(2 / 6)
    assert character_error_rate([""], [""]) == 0.0
    assert character_error_rate([""], ["x"]) == float("inf")


def test_median_latencies_reports_load_errors(tmp_path):
    model = write_add_model(tmp_path / "add.onnx")
    feed = {"x": np.ones((2, 3), dtype=np.float32)}

    results = latency.median_latencies(
        {"add": model, "missing": tmp_path / "missing.onnx"}, feed, runs=3, warmup_runs=1
    )

    assert isinstance(results["add"], float)
    assert results["add"] > 0
    assert isinstance(results["missing"], str)


def test_feeds_round_trip(tmp_path):
    feeds = [
        {"x": np.ones((2, 3), dtype=np.float32), "mask": np.zeros(2, dtype=np.int64)},
        {"x": np.full((1, 3), 2.0, dtype=np.float32), "mask": np.ones(1, dtype=np.int64)},
    ]
    memory.save_feeds(feeds, tmp_path / "feeds.npz")
    loaded = memory.load_feeds(tmp_path / "feeds.npz")

    assert len(loaded) == 2
    for expected, actual in zip(feeds, loaded, strict=True):
        assert expected.keys() == actual.keys()
        for name in expected:
            np.testing.assert_array_equal(expected[name], actual[name])


def test_inference_process_measures_time_and_memory(tmp_path):
    model = write_add_model(tmp_path / "add.onnx")
    memory.save_feeds([{"x": np.ones((2, 3), dtype=np.float32)}], tmp_path / "feeds.npz")

    measured = memory.measure_in_subprocess(
        ["infer", str(model), str(tmp_path / "feeds.npz")], tmp_path / "infer.log", 60
    )

    assert measured.seconds > 0
    # A Python process with numpy and onnxruntime loaded uses well over 10 MB.
    assert measured.peak_rss_bytes > 10_000_000


def test_failed_process_raises_with_log(tmp_path):
    memory.save_feeds([{"x": np.ones((2, 3), dtype=np.float32)}], tmp_path / "feeds.npz")

    with pytest.raises(RuntimeError, match="exited with code"):
        memory.measure_in_subprocess(
            ["infer", str(tmp_path / "missing.onnx"), str(tmp_path / "feeds.npz")],
            tmp_path / "infer.log",
            60,
        )


def test_unknown_variant_rejected():
    with pytest.raises(ValueError, match="unknown variant"):
        quantizer_for("no such tool")


def test_ratio_cell_marks_target():
    assert report.ratio_cell(1.0, 2.0, 0.7, report.seconds) == "0.50 (1.0 s), met"
    assert report.ratio_cell(3.0, 2.0, 1.0, report.seconds) == "1.50 (3.0 s), not met"
    assert report.ratio_cell(None, 2.0, 1.0, report.seconds) == "failed"


def test_markdown_marks_failures():
    result = report.ModelResult(
        key="det",
        name="tiny det",
        calibration_text="2 images",
        evaluation_text="3 images",
        latency_input="x [1, 3, 32, 32]",
        targets=[("pipeline CER", "≤ 0.02")],
        reference="10 characters",
        accuracy={report.VARIANTS[0]: {"pipeline CER": 0.01}},
        met={("pipeline CER", report.VARIANTS[0]): True},
        float_latency=0.002,
        latency={report.VARIANTS[0]: 0.001},
        errors=["onnxruntime default quantize: RuntimeError: exited"],
    )

    markdown = report.format_markdown(
        [result], ["vad skipped: espeak-ng not found"], "cmd", 1.0, 10, 3, (0.5, 0.5), 2
    )

    assert "| tiny det | pipeline CER | ≤ 0.02 | 10 characters | 0.0100, met | failed |" in markdown
    assert "0.50 (1.0 ms), met" in markdown
    assert "- tiny det: onnxruntime default quantize: RuntimeError: exited" in markdown
    assert "- vad skipped: espeak-ng not found" in markdown
    assert "Command: `cmd`" in markdown
