"""Checks that a model qrewrite produced is valid: the full onnx checker, then an onnxruntime load.

A failure here is a qrewrite bug rather than a problem with the user's input, so it raises
`ModelVerificationError`, which is deliberately not a `QrewriteError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnxruntime as ort


class ModelVerificationError(RuntimeError):
    """A model written by qrewrite failed the onnx checker or did not load in onnxruntime."""


def verify_model_file(path: str | os.PathLike[str]) -> None:
    """Run the full onnx checker on the model file at `path`, then load it in onnxruntime.

    Checking the file rather than a ModelProto lets the checker handle external data and
    models over 2 GiB. Raises ModelVerificationError with the checker's or onnxruntime's
    message.
    """
    path = Path(path)
    try:
        onnx.checker.check_model(os.fspath(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ModelVerificationError(_message("the onnx checker rejected", path, error)) from error

    try:
        ort.InferenceSession(
            os.fspath(path), _session_options(), providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises several unrelated exception types.
        raise ModelVerificationError(_message("onnxruntime could not load", path, error)) from error


def verify_model_proto(proto: onnx.ModelProto) -> None:
    """Run the full onnx checker on `proto`, then load it in onnxruntime.

    The proto must hold all its tensor data and be under 2 GiB. Raises
    ModelVerificationError with the checker's or onnxruntime's message.
    """
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ModelVerificationError(_message("the onnx checker rejected", None, error)) from error

    try:
        ort.InferenceSession(
            proto.SerializeToString(), _session_options(), providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises several unrelated exception types.
        raise ModelVerificationError(_message("onnxruntime could not load", None, error)) from error


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    # Log only errors, because the exception carries the reason and warnings would clutter stderr.
    options.log_severity_level = 3
    return options


def _message(what_failed: str, path: Path | None, error: Exception) -> str:
    subject = f"the quantized model {path}" if path is not None else "the quantized model"
    detail = " ".join(str(error).split())
    return (
        f"{what_failed} {subject}: {detail}. This is a qrewrite bug; please report it with "
        "the input model and the config"
    )
