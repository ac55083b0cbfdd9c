import json
import logging

import numpy as np
import onnxruntime as ort
import pytest
from model_factory import relu_chain

from qrewrite.calibration import TensorRange, calibrate
from qrewrite.calibration.figures import histogram_folder_for
from qrewrite.calibration.graph import GRAPH_HISTOGRAM_BINS
from qrewrite.calibration.requests import RangeRequest
from qrewrite.calibration.runner import StatsRunner
from qrewrite.config import CalibMethod, QConfig
from qrewrite.errors import CalibrationDataError, ConfigError

pytestmark = pytest.mark.usefixtures("small_tensor_path")

REQUESTS = {"x": CalibMethod.MinMax, "doubled": CalibMethod.Percentile, "y": CalibMethod.Entropy}


def run_sample(runner, sample):
    """Return the statistics of one sample, including the buffered small tensors."""
    stats = runner.run(sample)
    stats.update(runner.flush())
    return stats


def options(**kwargs):
    return QConfig(**kwargs).options


def samples(count=6, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((int(rng.integers(1, 300)), 4)).astype(np.float32)}
            for _ in range(count)]


def never_read():
    raise AssertionError("samples were read although the range file exists")
    yield  # pragma: no cover


def test_range_file_written_then_loaded(tmp_path):
    path = tmp_path / "ranges.json"
    config = options(TensorsRangeFile=str(path))
    computed = calibrate(relu_chain(), REQUESTS, samples(), config)
    document = json.loads(path.read_text())
    assert document["format"] == "qrewrite-tensor-ranges"
    assert set(document["ranges"]) == set(REQUESTS)

    loaded = calibrate(relu_chain(), REQUESTS, never_read(), config)
    assert loaded == computed


def test_range_file_missing_tensor(tmp_path):
    path = tmp_path / "ranges.json"
    config = options(TensorsRangeFile=str(path))
    calibrate(relu_chain(), {"x": CalibMethod.MinMax}, samples(), config)
    both = {"x": CalibMethod.MinMax, "y": CalibMethod.MinMax}
    with pytest.raises(CalibrationDataError, match=r"no range for 1 tensors.*'y'"):
        calibrate(relu_chain(), both, never_read(), config)


def test_range_file_extra_tensor(tmp_path):
    path = tmp_path / "ranges.json"
    config = options(TensorsRangeFile=str(path))
    calibrate(relu_chain(), REQUESTS, samples(), config)
    fewer = {"x": CalibMethod.MinMax, "y": CalibMethod.MinMax}
    with pytest.raises(CalibrationDataError, match=r"does not calibrate.*'doubled'"):
        calibrate(relu_chain(), fewer, never_read(), config)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "cannot read it as JSON"),
        ('{"ranges": {}}', "format"),
        ('{"format": "qrewrite-tensor-ranges", "version": 7, "ranges": {}}', "version 7"),
        ('{"format": "qrewrite-tensor-ranges", "version": 1, "ranges": {"x": [2, 1]}}', "'x'"),
        ('{"format": "qrewrite-tensor-ranges", "version": 1, "ranges": {"x": [0, "1"]}}', "'x'"),
        ('{"format": "qrewrite-tensor-ranges", "version": 1, "ranges": {"x": [0, Infinity]}}',
         "finite"),
    ],
)
def test_range_file_invalid(tmp_path, content, message):
    path = tmp_path / "ranges.json"
    path.write_text(content)
    with pytest.raises(CalibrationDataError, match=message):
        calibrate(relu_chain(), {"x": CalibMethod.MinMax}, never_read(),
                  options(TensorsRangeFile=str(path)))


def test_histogram_figures_next_to_output(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    folder = histogram_folder_for(tmp_path / "out" / "model.onnx")
    calibrate(relu_chain(), REQUESTS, samples(), options(SaveTensorHistFig=True), folder)
    index = json.loads((folder / "tensors.json").read_text())
    assert sorted(index.values()) == sorted(REQUESTS)
    for name in index:
        assert (folder / name).read_bytes().startswith(b"\x89PNG")
    assert folder.parent == tmp_path / "out"
    assert list(work.iterdir()) == []


def test_histogram_figures_need_folder():
    with pytest.raises(ConfigError, match="output model"):
        calibrate(relu_chain(), REQUESTS, samples(), options(SaveTensorHistFig=True))


def test_workers_match_single_process():
    data = samples(count=9)
    single = calibrate(relu_chain(), REQUESTS, data, options())
    parallel = calibrate(relu_chain(), REQUESTS, data, options(CalibWorkerNum=2))
    assert parallel == single


def test_worker_error_is_reported():
    bad = [{"x": np.ones((2, 4), np.float32)}, {"x": np.ones((2, 5), np.float32)}]
    with pytest.raises(RuntimeError, match="calibration worker failed"):
        calibrate(relu_chain(shape=None), {"y": CalibMethod.MinMax}, bad,
                  options(CalibWorkerNum=2))


def test_progress_bar_quiet_above_info(capsys):
    logger = logging.getLogger("qrewrite")
    previous = logger.level
    try:
        logger.setLevel(logging.WARNING)
        calibrate(relu_chain(), {"y": CalibMethod.MinMax}, samples(2), options())
        assert "calibration" not in capsys.readouterr().err
        logger.setLevel(logging.INFO)
        calibrate(relu_chain(), {"y": CalibMethod.MinMax}, samples(2), options())
        assert "calibration" in capsys.readouterr().err
    finally:
        logger.setLevel(previous)


def test_session_is_priority_based_with_small_outputs(small_tensor_path):
    requests = {t: RangeRequest(CalibMethod.Percentile) for t in ("x", "doubled", "y")}
    runner = StatsRunner.from_requests(relu_chain(), requests, options())
    big = np.ones((5000, 4), np.float32)
    run_sample(runner, {"x": big})
    session_options = runner.session.get_session_options()
    assert session_options.execution_order == ort.ExecutionOrder.PRIORITY_BASED
    names = {o.name for o in runner.session.get_outputs()}
    assert "y" not in names
    for value in runner.session.run(None, {"x": big}):
        assert value.size <= GRAPH_HISTOGRAM_BINS


def test_small_tensors_returned_whole(small_tensor_path):
    requests = {t: RangeRequest(CalibMethod.Percentile) for t in ("x", "doubled", "y")}
    runner = StatsRunner.from_requests(relu_chain(), requests, options())
    run_sample(runner, {"x": np.ones((3, 4), np.float32)})
    names = {o.name for o in runner.session.get_outputs()}
    assert ("y" in names) == (small_tensor_path == "numpy")
    # A returned tensor that grows past the limit is reduced in the graph afterwards.
    stats = run_sample(runner, {"x": np.full((20000, 4), 2.0, np.float32)})
    assert stats["y"].min_max.max == 4.0
    assert "y" not in {o.name for o in runner.session.get_outputs()}


def test_ranges_are_tensor_ranges():
    ranges = calibrate(relu_chain(), REQUESTS, samples(), options())
    for tensor_range in ranges.values():
        assert isinstance(tensor_range, TensorRange)
        assert tensor_range.min <= tensor_range.max


def test_buffered_small_tensors_give_same_ranges(monkeypatch):
    from qrewrite.calibration import runner

    data = samples(count=7)
    unbuffered = calibrate(relu_chain(), REQUESTS, data, options())
    monkeypatch.setattr(runner, "RAW_BUFFER_ELEMENTS", 500)
    buffered = calibrate(relu_chain(), REQUESTS, data, options())
    assert buffered == unbuffered


def test_buffer_sample_bound_gives_same_ranges(monkeypatch):
    from qrewrite.calibration import runner

    data = samples(count=7)
    unbuffered = calibrate(relu_chain(), REQUESTS, data, options())
    monkeypatch.setattr(runner, "RAW_BUFFER_SAMPLES", 2)
    buffered = calibrate(relu_chain(), REQUESTS, data, options())
    assert buffered == unbuffered


def test_buffered_small_tensors_are_copies(small_tensor_path):
    if small_tensor_path == "graph":
        pytest.skip("every tensor is reduced in the graph")
    requests = {t: RangeRequest(CalibMethod.Percentile) for t in ("x", "doubled", "y")}
    runner = StatsRunner.from_requests(relu_chain(), requests, options())
    runner.run({"x": np.ones((3, 4), np.float32)})
    assert len(runner.pending_blocks) == 1
    block = runner.pending_blocks[0]
    # A view of qrewrite's own buffer, not of onnxruntime's output memory.
    assert block.base is runner.buffer
    assert runner.buffer.flags.owndata
