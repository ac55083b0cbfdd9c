"""`ModelQuantizer`: the public entry point that runs the pipeline on one model."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnx

from qrewrite.config import QConfig
from qrewrite.errors import ConfigError

ModelInput = str | os.PathLike[str] | onnx.ModelProto
CalibrationInput = Any | Iterable[Mapping[str, np.ndarray]] | None


class ModelQuantizer:
    """Quantize float ONNX models to QDQ models with one `QConfig`."""

    def __init__(self, config: QConfig) -> None:
        if not isinstance(config, QConfig):
            raise ConfigError(f"ModelQuantizer needs a QConfig, got {type(config).__name__}")
        self.config = config

    def quantize_model(
        self,
        model_input: ModelInput,
        model_output: str | os.PathLike[str] | None = None,
        calibration_data_reader: CalibrationInput = None,
    ) -> onnx.ModelProto:
        """Quantize `model_input` and return the quantized model.

        `model_input` is a path or a ModelProto; neither is modified. When `model_output`
        is given, the model is also written there, atomically, after it passed the
        onnx checker and loaded in onnxruntime.
        """
        from qrewrite.pipeline import quantize

        return quantize(self.config, model_input, model_output, calibration_data_reader)
