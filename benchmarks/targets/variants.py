"""The quantizer settings that bench_targets.py compares, each applied the same way.

`quantizer_for` imports everything the function it returns needs, so timing that
function leaves import time out for every tool. For qrewrite that includes the modules
that a quantize call would otherwise import on first use (qrewrite.pipeline, stage
modules and onnxslim's), about 0.6 s on a 2-core x86_64.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

Feed = dict[str, np.ndarray]
Quantize = Callable[[Path, list[Feed], Path], None]

QREWRITE_DEFAULT = "qrewrite default"
QREWRITE_CPU = "qrewrite CPU config"
ORT_DEFAULT = "onnxruntime default"
ORT_U8_PER_CHANNEL = "onnxruntime U8/S8 per-channel"
VARIANTS = (QREWRITE_DEFAULT, QREWRITE_CPU, ORT_DEFAULT, ORT_U8_PER_CHANNEL)

DESCRIPTIONS = {
    QREWRITE_DEFAULT: "`QConfig()` with every default",
    QREWRITE_CPU: (
        "the recommended CPU config, `QConfig(global_config=QLayerConfig("
        "activation=UInt8Spec(), weight=Int8Spec(quant_granularity=QuantGranularity.Channel)))`"
    ),
    ORT_DEFAULT: (
        "`onnxruntime.quantization.quantize_static` defaults: QDQ, int8 activations and "
        "weights, per-tensor, MinMax"
    ),
    ORT_U8_PER_CHANNEL: (
        "`quantize_static` with `activation_type=QUInt8, weight_type=QInt8, "
        "per_channel=True`, otherwise defaults"
    ),
}


# The modules that a qrewrite quantize call imports when they are not imported yet:
# ModelQuantizer imports qrewrite.pipeline (0.43 s on a 2-core x86_64), and stages import
# the others (0.15 s together).
_QREWRITE_STAGE_MODULES = (
    "qrewrite.pipeline",
    "qrewrite.rewrite",
    "qrewrite.calibration.channel_peaks",
    "qrewrite.calibration.engine",
    "qrewrite.calibration.methods",
    "qrewrite.quantization.planner.rules",
    "onnxslim.core",
    "onnxslim.utils",
)


class FeedListReader:
    """onnxruntime CalibrationDataReader over a list of feeds, read once."""

    def __init__(self, feeds: list[Feed]) -> None:
        self._feeds: Iterator[Feed] = iter(feeds)

    def get_next(self) -> Feed | None:
        return next(self._feeds, None)


def _import_qrewrite_stage_modules() -> None:
    """Import what a qrewrite quantize call with a static QDQ config imports on first use."""
    for name in _QREWRITE_STAGE_MODULES:
        importlib.import_module(name)


def quantizer_for(variant: str) -> Quantize:
    """Import the tool behind one of VARIANTS and return a function that quantizes with it.

    The imports happen here, not in the returned function, so timing a call leaves
    import time out. For qrewrite they include the modules that its quantize call
    imports on first use. A process that runs one variant loads only that tool's modules.
    """
    if variant in (QREWRITE_DEFAULT, QREWRITE_CPU):
        from qrewrite import (
            Int8Spec,
            ModelQuantizer,
            QConfig,
            QLayerConfig,
            QuantGranularity,
            UInt8Spec,
        )

        _import_qrewrite_stage_modules()
        config = QConfig()
        if variant == QREWRITE_CPU:
            config = QConfig(
                global_config=QLayerConfig(
                    activation=UInt8Spec(),
                    weight=Int8Spec(quant_granularity=QuantGranularity.Channel),
                )
            )

        def quantize_with_qrewrite(model: Path, feeds: list[Feed], output: Path) -> None:
            ModelQuantizer(config).quantize_model(str(model), str(output), feeds)

        return quantize_with_qrewrite

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if variant == ORT_DEFAULT:
        options: dict[str, object] = {}
    elif variant == ORT_U8_PER_CHANNEL:
        options = {
            "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
            "per_channel": True,
        }
    else:
        raise ValueError(f"unknown variant {variant!r}, expected one of {VARIANTS}")

    def quantize_with_onnxruntime(model: Path, feeds: list[Feed], output: Path) -> None:
        quantize_static(
            str(model),
            str(output),
            FeedListReader(feeds),
            quant_format=QuantFormat.QDQ,
            **options,
        )

    return quantize_with_onnxruntime
