"""Channel peaks collected in the same session as the ranges."""

import numpy as np
import pytest
from model_factory import relu_chain

from qrewrite.calibration import TensorRange, calibrate
from qrewrite.calibration.collectors import ChannelPeaks
from qrewrite.calibration.engine import calibrate_with_channel_peaks
from qrewrite.config import CalibMethod, QConfig
from qrewrite.errors import ConfigError

pytestmark = pytest.mark.usefixtures("small_tensor_path")

MINMAX = CalibMethod.MinMax
PERCENTILE = CalibMethod.Percentile


def options(**kwargs):
    return QConfig(**kwargs).options


def random_samples(shapes: list[tuple[int, ...]], seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=shape).astype(np.float32)} for shape in shapes]


def test_peaks_match_numpy():
    model = relu_chain([None, 3, 16])
    samples = random_samples([(2, 3, 16), (1, 3, 16), (3, 3, 16)])
    requests = {"x": MINMAX, "doubled": PERCENTILE, "y": MINMAX}

    result = calibrate_with_channel_peaks(
        model, requests, samples, options(), {"doubled": 3, "y": 3}
    )
    ranges, peaks = result.ranges, result.channel_peaks

    doubled = np.concatenate([2 * s["x"] for s in samples])
    assert set(peaks) == {"doubled", "y"}
    assert peaks["doubled"].dtype == np.float32
    np.testing.assert_array_equal(peaks["doubled"], np.abs(doubled).max(axis=(0, 1)))
    np.testing.assert_array_equal(peaks["y"], np.maximum(doubled, 0).max(axis=(0, 1)))
    assert ranges["doubled"] == calibrate(model, requests, samples, options())["doubled"]


def test_peaks_with_worker_processes():
    model = relu_chain([None, 3, 16])
    samples = random_samples([(2, 3, 16), (1, 3, 16), (3, 3, 16), (1, 3, 16)])

    peaks = calibrate_with_channel_peaks(
        model, {"doubled": MINMAX}, samples, options(CalibWorkerNum=2), {"doubled": 3}
    ).channel_peaks

    doubled = np.concatenate([2 * s["x"] for s in samples])
    np.testing.assert_array_equal(peaks["doubled"], np.abs(doubled).max(axis=(0, 1)))


def test_peaks_leave_out_varying_last_axis():
    model = relu_chain([1, None])
    samples = random_samples([(1, 8), (1, 9)])

    result = calibrate_with_channel_peaks(model, {"y": MINMAX}, samples, options(), {"y": 2})
    ranges, peaks = result.ranges, result.channel_peaks

    assert peaks == {}
    expected = max(float(np.maximum(2 * s["x"], 0).max()) for s in samples)
    assert ranges["y"] == TensorRange(0.0, expected)


def test_peaks_from_range_file_are_empty(tmp_path):
    model = relu_chain([None, 4])
    samples = random_samples([(2, 4)])
    range_file = tmp_path / "ranges.json"
    calibrate(model, {"y": MINMAX}, samples, options(TensorsRangeFile=str(range_file)))

    peaks = calibrate_with_channel_peaks(
        model, {"y": MINMAX}, samples, options(TensorsRangeFile=str(range_file)), {"y": 2}
    ).channel_peaks

    assert peaks == {}


def test_peaks_of_unrequested_tensor_rejected():
    model = relu_chain([None, 4])

    with pytest.raises(ConfigError, match="not in the requests"):
        calibrate_with_channel_peaks(
            model, {"y": MINMAX}, random_samples([(2, 4)]), options(), {"doubled": 2}
        )


def test_peaks_of_rank_one_rejected():
    model = relu_chain([None, 4])

    with pytest.raises(ConfigError, match="rank 1"):
        calibrate_with_channel_peaks(
            model, {"y": MINMAX}, random_samples([(2, 4)]), options(), {"y": 1}
        )


def test_channel_peaks_merge_equals_updates():
    first = np.array([1.0, 0.25, 2.0], np.float32)
    second = np.array([3.0, 0.5, 2.0], np.float32)

    merged = ChannelPeaks().update(first).merge(ChannelPeaks().update(second))

    np.testing.assert_array_equal(merged.peaks, [3.0, 0.5, 2.0])
    assert ChannelPeaks().update(first).update(second).peaks.tolist() == merged.peaks.tolist()
    assert ChannelPeaks().update(first).update(np.ones(2)).varying
    assert ChannelPeaks(None, True).merge(ChannelPeaks().update(first)).peaks is None


def test_clipping_note_names_clipped_tensors():
    from qrewrite.calibration.collectors import MinMax
    from qrewrite.calibration.engine import clipping_note
    from qrewrite.calibration.ranges import TensorRange

    observed = {
        "kept": MinMax(count=10, min=-1.0, max=1.0),
        "tail": MinMax(count=10, min=0.0, max=30.0),
        "low": MinMax(count=10, min=-8.0, max=1.0),
        "top": MinMax(count=10, min=-40.0, max=30.0),
    }
    ranges = {
        "kept": TensorRange(-0.9, 0.9),
        "tail": TensorRange(0.0, 8.0),
        "low": TensorRange(-2.0, 1.0),
        "top": TensorRange(-40.0, 8.0),
    }

    note = clipping_note(ranges, observed)

    assert note is not None
    assert note.startswith("calibration clipped 3 of 4 tensors")
    assert "'low' -8 -> -2" in note
    assert "'tail' 30 -> 8" in note
    # The clipped side is named, not the side with the larger magnitude.
    assert "'top' 30 -> 8" in note
    assert "'kept'" not in note
    assert clipping_note({"kept": ranges["kept"]}, {"kept": observed["kept"]}) is None
