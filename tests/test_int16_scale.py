"""Int16Scale and ScaleType.Int16: activation and weight scales in M / 2^N form, 16-bit M, N."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from qrewrite import Int8Spec, ModelQuantizer, QConfig, QLayerConfig, ScaleType, UInt8Spec
from qrewrite.quantization.int16_scale import snap_to_int16_form
from qrewrite.quantization.qparams import int16_form
from tests.qmodels import initializer, min_cosine, nodes_of
from tests.test_quantize_model import FEEDS, conv_gemm_model


def _multiplier_and_shift(scale: float) -> tuple[float, int]:
    """Return (M, N) with scale = M / 2^N and M odd or N = 0, the form's unique reading."""
    shift = 0
    while scale * 2.0**shift != np.round(scale * 2.0**shift):
        shift += 1
    return scale * 2.0**shift, shift


@given(st.floats(min_value=1e-30, max_value=32767.0, allow_subnormal=False))
def test_snapped_scale_has_the_int16_form(scale) -> None:
    (snapped,) = snap_to_int16_form(np.array([scale], np.float64))

    multiplier, shift = _multiplier_and_shift(float(snapped))
    assert 1 <= multiplier <= 32767
    assert 0 <= shift <= 65535
    assert abs(snapped / scale - 1) <= 1 / 32768


def _scales(model) -> dict[str, np.ndarray]:
    return {n.name: initializer(model, n.input[1]) for n in nodes_of(model, "DequantizeLinear")}


def test_quantized_scales_have_the_int16_form() -> None:
    model = conv_gemm_model()
    plain = ModelQuantizer(QConfig(PrintSummary=False)).quantize_model(model, None, FEEDS)
    config = QConfig(Int16Scale=True, PrintSummary=False)
    snapped = ModelQuantizer(config).quantize_model(model, None, FEEDS)

    before, after = _scales(plain), _scales(snapped)
    assert before.keys() == after.keys()
    changed = [name for name in after if not np.array_equal(before[name], after[name])]
    assert changed
    bias_readers = {n.input[2] for n in snapped.graph.node if n.op_type in ("Conv", "Gemm")}
    biases = {n.name for n in nodes_of(snapped, "DequantizeLinear") if n.output[0] in bias_readers}
    assert biases
    for name, scale in after.items():
        if name in biases:
            continue
        for value in np.ravel(scale):
            multiplier, shift = _multiplier_and_shift(float(value))
            assert multiplier <= 32767, name
            assert shift <= 65535, name
    assert min_cosine(model, snapped, FEEDS[:3]) > 0.99


@given(st.floats(min_value=1e-30, max_value=32767.0, allow_subnormal=False))
def test_rounding_up_never_shrinks_the_scale(scale) -> None:
    (rounded,) = int16_form(np.array([scale], np.float64), round_up=True)

    multiplier, shift = _multiplier_and_shift(float(rounded))
    assert 1 <= multiplier <= 32767
    assert 0 <= shift <= 65535
    assert scale <= rounded <= scale * (1 + 1 / 16384)


def test_int16_scale_type_spec() -> None:
    model = conv_gemm_model()
    layer = QLayerConfig(
        activation=UInt8Spec(scale_type=ScaleType.Int16),
        weight=Int8Spec(scale_type=ScaleType.Int16),
    )
    quantized = ModelQuantizer(QConfig(layer, PrintSummary=False)).quantize_model(
        model, None, FEEDS
    )

    bias_readers = {n.input[2] for n in quantized.graph.node if n.op_type in ("Conv", "Gemm")}
    for node in nodes_of(quantized, "DequantizeLinear"):
        if node.output[0] in bias_readers:
            continue
        for value in np.ravel(initializer(quantized, node.input[1])):
            multiplier, _ = _multiplier_and_shift(float(value))
            assert multiplier <= 32767, node.name
    assert min_cosine(model, quantized, FEEDS[:3]) > 0.99
