import numpy as np
import pytest
from model_factory import ListReader, relu_chain, two_input_model

from qrewrite.calibration import samples_from
from qrewrite.config import QConfig
from qrewrite.errors import CalibrationDataError


def options(**kwargs):
    return QConfig(**kwargs).options


def sample(*shape):
    return {"x": np.ones(shape, np.float32)}


def test_reader_with_get_next():
    data = [sample(1, 4), sample(2, 4)]
    result = list(samples_from(ListReader(data), relu_chain(), options()))
    assert len(result) == 2
    assert result[1]["x"].shape == (2, 4)


def test_plain_iterable_and_generator():
    assert len(list(samples_from([sample(1, 4)], relu_chain(), options()))) == 1
    generator = (sample(1, 4) for _ in range(3))
    assert len(list(samples_from(generator, relu_chain(), options()))) == 3


def test_calib_data_size_stops_early():
    pulled = []

    def produce():
        for i in range(100):
            pulled.append(i)
            yield sample(1, 4)

    result = list(samples_from(produce(), relu_chain(), options(CalibDataSize=3)))
    assert len(result) == 3
    assert len(pulled) <= 4


def test_empty_reader_is_an_error():
    with pytest.raises(CalibrationDataError, match="no samples"):
        list(samples_from(ListReader([]), relu_chain(), options()))


def test_no_reader_without_random_data():
    with pytest.raises(CalibrationDataError, match="UseRandomData"):
        list(samples_from(None, relu_chain(), options()))


def test_missing_input_names_input():
    with pytest.raises(CalibrationDataError, match=r"missing input 'b'.*float32 of shape \[2, 3\]"):
        list(samples_from([{"a": np.ones((2, 3), np.float32)}], two_input_model(), options()))


def test_initializer_input_not_required():
    data = [{"a": np.ones((2, 3), np.float32), "b": np.ones((2, 3), np.float32)}]
    assert len(list(samples_from(data, two_input_model(), options()))) == 1


def test_unknown_input_name():
    data = [{"x": np.ones((1, 4), np.float32), "z": np.ones(1, np.float32)}]
    with pytest.raises(CalibrationDataError, match=r"'z'.*model inputs: 'x'"):
        list(samples_from(data, relu_chain(), options()))


def test_wrong_dtype_names_expected_and_given():
    data = [{"x": np.ones((1, 4), np.float64)}]
    with pytest.raises(CalibrationDataError, match="'x': expected dtype float32, given float64"):
        list(samples_from(data, relu_chain(), options()))


def test_wrong_rank_names_expected_and_given():
    data = [{"x": np.ones((1, 4, 1), np.float32)}]
    expected = r"expected float32 of shape \[\?, 4\], given shape \[1, 4, 1\]"
    with pytest.raises(CalibrationDataError, match=expected):
        list(samples_from(data, relu_chain(), options()))


def test_wrong_static_dim():
    data = [{"x": np.ones((1, 5), np.float32)}]
    with pytest.raises(CalibrationDataError, match=r"given shape \[1, 5\]"):
        list(samples_from(data, relu_chain(), options()))


def test_nan_input_is_an_error():
    data = [{"x": np.array([[0, np.nan, 0, 0]], np.float32)}]
    with pytest.raises(CalibrationDataError, match="'x': contains NaN"):
        list(samples_from(data, relu_chain(), options()))


def test_non_dict_sample():
    with pytest.raises(CalibrationDataError, match="is a list"):
        list(samples_from([[1, 2]], relu_chain(), options()))


def test_random_data_is_seeded_and_shaped():
    config = options(
        UseRandomData=True,
        CalibDataSize=2,
        RandomDataReaderInputShape={"x": [3, 4]},
        RandomDataReaderInputDataRange={"x": [-5, -4]},
    )
    first = list(samples_from(None, relu_chain(), config))
    second = list(samples_from(None, relu_chain(), config))
    assert len(first) == 2
    assert first[0]["x"].shape == (3, 4)
    assert first[0]["x"].dtype == np.float32
    assert np.all((first[0]["x"] >= -5) & (first[0]["x"] <= -4))
    np.testing.assert_array_equal(first[1]["x"], second[1]["x"])


def test_random_data_static_shape_default_range():
    result = list(samples_from(None, two_input_model(), options(UseRandomData=True)))
    assert len(result) == 1
    assert result[0]["a"].shape == (2, 3)
    assert np.all((result[0]["a"] >= 0) & (result[0]["a"] < 1))


def test_random_data_dynamic_dim_needs_shape():
    with pytest.raises(CalibrationDataError, match="RandomDataReaderInputShape"):
        list(samples_from(None, relu_chain(), options(UseRandomData=True)))


@pytest.mark.parametrize(
    "option", ["RandomDataReaderInputShape", "RandomDataReaderInputDataRange"]
)
def test_random_data_option_with_unknown_input(option):
    random_options = {"RandomDataReaderInputShape": {"x": [3, 4]}}
    unknown = {"image": [3, 4] if "Shape" in option else [0, 1]}
    random_options[option] = {**random_options.get(option, {}), **unknown}
    config = options(UseRandomData=True, **random_options)
    with pytest.raises(CalibrationDataError, match=r"names \['image'\], which are not graph"):
        list(samples_from(None, relu_chain(), config))


def test_random_shape_that_does_not_fit():
    config = options(UseRandomData=True, RandomDataReaderInputShape={"x": [3, 5]})
    with pytest.raises(CalibrationDataError, match="does not fit"):
        list(samples_from(None, relu_chain(), config))


def test_negative_dim_is_dynamic():
    model = relu_chain(shape=[-1, 4])
    data = [{"x": np.ones((3, 4), np.float32)}]
    assert len(list(samples_from(data, model, options()))) == 1
