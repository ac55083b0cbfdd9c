import logging

import numpy as np
import pytest
from model_factory import log_model, relu_chain

from qrewrite.calibration import PowerOfTwoMethod, RangeRequest, TensorRange, calibrate
from qrewrite.calibration.collectors import Histogram
from qrewrite.calibration.grid import IntegerGrid
from qrewrite.calibration.runner import StatsRunner
from qrewrite.config import CalibMethod, DataType, QConfig, ScaleType
from qrewrite.quantization.qparams import params_from_range

pytestmark = pytest.mark.usefixtures("small_tensor_path")

HISTOGRAM_METHODS = [
    CalibMethod.Percentile,
    CalibMethod.Entropy,
    CalibMethod.MinMSE,
    CalibMethod.LayerwisePercentile,
    CalibMethod.Distribution,
    PowerOfTwoMethod.MinMSE,
]
ALL_METHODS = [CalibMethod.MinMax, PowerOfTwoMethod.NonOverflow, *HISTOGRAM_METHODS]


def run_sample(runner, sample):
    """Return the statistics of one sample, including the buffered small tensors."""
    stats = runner.run(sample)
    stats.update(runner.flush())
    return stats


def options(**kwargs):
    return QConfig(**kwargs).options


def gaussian_samples(count=4, rows=2000, seed=0, outlier=None):
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        x = rng.standard_normal((rows, 4)).astype(np.float32)
        if outlier is not None:
            x[0, 0] = outlier
        samples.append({"x": x})
    return samples


def quantization_mse(values, tensor_range, grid):
    scale, zero_point = grid.params(np.array([tensor_range.min]), np.array([tensor_range.max]))
    weights = np.ones_like(values, dtype=np.float64)
    return grid.errors(values.astype(np.float64), weights, scale, zero_point)[0]


def test_graph_histogram_equals_numpy_histogram():
    requests = {t: RangeRequest(CalibMethod.Percentile) for t in ("x", "doubled", "y")}
    runner = StatsRunner.from_requests(relu_chain(), requests, options())
    rng = np.random.default_rng(1)
    for trial in range(40):
        scale = np.float32(10.0 ** rng.uniform(-30, 30))
        x = (rng.standard_normal((int(rng.integers(1, 50)), 4)) * scale).astype(np.float32)
        if trial % 5 == 0:
            x[:] = x[0, 0]
        stats = run_sample(runner, {"x": x})
        expected = {"x": x, "doubled": x * 2, "y": np.maximum(x * 2, 0)}
        for tensor, values in expected.items():
            assert stats[tensor].histogram == Histogram().update(values), (trial, tensor)


def test_graph_histogram_in_parts_equals_numpy_histogram(monkeypatch):
    from qrewrite.calibration import runner as runner_module

    monkeypatch.setattr(runner_module, "RAW_ELEMENTS", -1)
    monkeypatch.setattr(runner_module, "HISTOGRAM_PIECE_ELEMENTS", 7)
    requests = {t: RangeRequest(CalibMethod.Percentile) for t in ("x", "doubled", "y")}
    runner = StatsRunner.from_requests(relu_chain(shape=None), requests, options())
    rng = np.random.default_rng(2)
    # The first sample sets 29 parts; later ones have fewer values than parts, or more.
    for rows in (50, 1, 3, 300, 0, 50):
        x = rng.standard_normal((rows, 4)).astype(np.float32)
        stats = run_sample(runner, {"x": x})
        assert runner.pieces["x"] == 29
        expected = {"x": x, "doubled": x * 2, "y": np.maximum(x * 2, 0)}
        for tensor, values in expected.items():
            histogram = stats[tensor].histogram if tensor in stats else Histogram()
            assert histogram == Histogram().update(values), (rows, tensor)


def test_graph_histogram_skips_nan_and_inf():
    requests = {"y": RangeRequest(CalibMethod.Entropy)}
    runner = StatsRunner.from_requests(log_model(), requests, options())
    x = np.array([-1, 0, 1, 2, 3, 0.5], np.float32)
    stats = run_sample(runner, {"x": x})["y"]
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = Histogram().update(np.log(x))
    assert stats.histogram == expected
    assert stats.min_max.nonfinite == 2
    assert stats.histogram.total == 4


def test_all_methods_in_one_pass():
    samples = gaussian_samples()
    requests = {
        "x": CalibMethod.Percentile,
        "doubled": CalibMethod.Entropy,
        "y": CalibMethod.MinMax,
    }
    ranges = calibrate(relu_chain(), requests, samples, options())
    assert set(ranges) == {"x", "doubled", "y"}
    for tensor_range in ranges.values():
        assert isinstance(tensor_range, TensorRange)


def test_percentile_matches_numpy():
    samples = gaussian_samples(count=3, rows=20000)
    values = np.concatenate([s["x"].ravel() for s in samples])
    config = options(Percentile=99.0)
    ranges = calibrate(relu_chain(), {"x": CalibMethod.Percentile}, samples, config)
    resolution = float(values.max() - values.min()) / 1024
    assert ranges["x"].min == pytest.approx(np.percentile(values, 0.5), abs=resolution)
    assert ranges["x"].max == pytest.approx(np.percentile(values, 99.5), abs=resolution)


def test_percentile_symmetric_uses_abs():
    samples = gaussian_samples(count=3, rows=20000)
    values = np.concatenate([s["x"].ravel() for s in samples])
    request = RangeRequest(CalibMethod.Percentile, symmetric=True)
    ranges = calibrate(relu_chain(), {"x": request}, samples, options(Percentile=99.0))
    expected = np.percentile(np.abs(values), 99.0)
    assert ranges["x"].max == pytest.approx(expected, rel=0.01)
    assert ranges["x"].min == -ranges["x"].max


def test_percentile_100_is_min_max():
    samples = gaussian_samples()
    config = options(Percentile=100.0)
    ranges = calibrate(relu_chain(), {"x": CalibMethod.Percentile, "y": MINMAX}, samples, config)
    minmax = calibrate(relu_chain(), {"x": MINMAX}, samples, options())
    assert ranges["x"] == minmax["x"]


MINMAX = CalibMethod.MinMax


def test_entropy_clips_outliers():
    # The smallest threshold has as many histogram bins as the grid has levels, so the
    # outlier must be within about 512 / 128 times the bulk of the data to be clipped.
    samples = gaussian_samples(outlier=30.0)
    ranges = calibrate(relu_chain(), {"x": CalibMethod.Entropy}, samples, options())
    assert 2.0 < ranges["x"].max < 30.0
    assert ranges["x"].min < -2.0


def test_min_mse_beats_min_max_with_outliers():
    samples = gaussian_samples(outlier=60.0)
    values = np.concatenate([s["x"].ravel() for s in samples])
    grid = IntegerGrid(8, True, False)
    mse_range = calibrate(relu_chain(), {"x": CalibMethod.MinMSE}, samples, options())["x"]
    min_max_range = calibrate(relu_chain(), {"x": MINMAX}, samples, options())["x"]
    assert mse_range.max < min_max_range.max
    assert quantization_mse(values, mse_range, grid) < quantization_mse(values, min_max_range, grid)


def test_layerwise_percentile_picks_a_candidate():
    samples = gaussian_samples(outlier=60.0)
    candidates = [90.0, 99.0, 100.0]
    for metric in ("mae", "mse"):
        config = options(PercentileCandidates=candidates, LWPMetric=metric, ActivationBitWidth=4)
        chosen = calibrate(relu_chain(), {"x": CalibMethod.LayerwisePercentile}, samples, config)
        per_candidate = [
            calibrate(relu_chain(), {"x": CalibMethod.Percentile}, samples, options(Percentile=p))
            for p in candidates
        ]
        assert chosen["x"] in [r["x"] for r in per_candidate]
        # With 4 bits a lone outlier at 60 costs more than clipping it.
        assert chosen["x"] != per_candidate[-1]["x"]


def test_distribution_range_is_min_max():
    samples = gaussian_samples()
    distribution = calibrate(relu_chain(), {"x": CalibMethod.Distribution}, samples, options())
    min_max = calibrate(relu_chain(), {"x": MINMAX}, samples, options())
    assert distribution == min_max


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.name)
def test_constant_tensor_gives_valid_scale(method):
    samples = [{"x": np.full((3, 4), 2.5, np.float32)} for _ in range(2)]
    ranges = calibrate(relu_chain(), {"x": method, "y": method}, samples, options())
    for tensor in ("x", "y"):
        params = params_from_range(
            ranges[tensor].min, ranges[tensor].max, DataType.Int8, symmetric=True
        )
        assert np.isfinite(params.scale).all()
        assert (params.scale > 0).all()


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.name)
def test_zero_size_and_scalar_samples(method):
    samples = [{"x": np.zeros((0, 4), np.float32)}, {"x": np.full((1, 4), 3.0, np.float32)}]
    ranges = calibrate(relu_chain(), {"y": method}, samples, options())
    assert ranges["y"].min <= 6.0 <= ranges["y"].max
    scalar_samples = [{"x": np.array(1.0, np.float32)}]
    scalar = calibrate(relu_chain(shape=[]), {"y": method}, scalar_samples, options())
    assert scalar["y"].max >= 0.0


@pytest.mark.parametrize("method", HISTOGRAM_METHODS, ids=lambda m: m.name)
def test_nan_in_activations_for_histogram_methods(method, caplog):
    rng = np.random.default_rng(3)
    samples = [{"x": rng.uniform(-1, 5, 500).astype(np.float32)} for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="qrewrite"):
        ranges = calibrate(log_model(), {"y": method}, samples, options())
    assert np.isfinite([ranges["y"].min, ranges["y"].max]).all()
    assert "'y' had" in caplog.text


def test_histogram_methods_on_old_opset_model():
    samples = gaussian_samples(count=2)
    ranges = calibrate(relu_chain(opset=12), {"y": CalibMethod.Percentile}, samples, options())
    assert ranges["y"].min >= 0.0


def test_power_of_two_non_overflow_covers_data():
    samples = gaussian_samples()
    values = np.concatenate([s["x"].ravel() for s in samples])
    for symmetric in (True, False):
        request = RangeRequest(PowerOfTwoMethod.NonOverflow, symmetric=symmetric)
        tensor_range = calibrate(relu_chain(), {"x": request}, samples, options())["x"]
        params = params_from_range(
            tensor_range.min, tensor_range.max, DataType.Int8,
            symmetric=symmetric, scale_type=ScaleType.PowerOf2,
        )
        scale = float(params.scale)
        assert np.log2(scale) == np.round(np.log2(scale))
        q = np.rint(values / scale) + float(params.zero_point)
        assert q.min() >= -128.5
        assert q.max() <= 127.5
        # The next smaller power of two would overflow.
        smaller = np.rint(values / (scale / 2)) + float(params.zero_point)
        assert smaller.min() < -129 or smaller.max() > 128 or not symmetric


def test_power_of_two_range_gives_chosen_scale():
    from qrewrite.calibration.power_of_two import power_of_two_range

    for bits, signed in ((8, True), (8, False), (16, True), (4, False)):
        data_type = {
            (8, True): DataType.Int8, (8, False): DataType.UInt8,
            (16, True): DataType.Int16, (4, False): DataType.UInt4,
        }[(bits, signed)]
        for symmetric in (True, False):
            grid = IntegerGrid(bits, signed, symmetric)
            for exponent in (-20, -7, 0, 3, 12):
                for low in (-5.0, 0.0, 1.0):
                    tensor_range = power_of_two_range(exponent, low, grid)
                    params = params_from_range(
                        tensor_range.min, tensor_range.max, data_type,
                        symmetric=symmetric, scale_type=ScaleType.PowerOf2,
                    )
                    assert float(params.scale) == 2.0**exponent


def test_power_of_two_min_mse_clips_outlier():
    samples = gaussian_samples(outlier=40.0)
    values = np.concatenate([s["x"].ravel() for s in samples])
    grid = IntegerGrid(8, True, True)
    results = {}
    for method in (PowerOfTwoMethod.NonOverflow, PowerOfTwoMethod.MinMSE):
        request = RangeRequest(method, symmetric=True)
        results[method] = calibrate(relu_chain(), {"x": request}, samples, options())["x"]
    mse = {m: quantization_mse(values, r, grid) for m, r in results.items()}
    assert results[PowerOfTwoMethod.MinMSE].max < results[PowerOfTwoMethod.NonOverflow].max
    assert mse[PowerOfTwoMethod.MinMSE] < mse[PowerOfTwoMethod.NonOverflow]


def test_power_of_two_most_common_votes_per_sample():
    rng = np.random.default_rng(5)
    small = [{"x": rng.standard_normal((500, 4)).astype(np.float32)} for _ in range(3)]
    large = [{"x": 8 * rng.standard_normal((500, 4)).astype(np.float32)}]
    request = RangeRequest(PowerOfTwoMethod.MinMSE, symmetric=True)
    config = options(MinMSEModePof2Scale="MostCommon")
    voted = calibrate(relu_chain(), {"x": request}, small + large, config)["x"]
    small_only = calibrate(relu_chain(), {"x": request}, small, options())["x"]
    all_data = calibrate(relu_chain(), {"x": request}, small + large, options())["x"]
    assert voted == small_only
    assert all_data.max > voted.max
