"""Character error rate of the rapidocr pipeline with one PP-OCR model swapped.

The reference is the text that the float pipeline (rapidocr-onnxruntime 1.4.4 with its
own det, cls and rec models and config.yaml) reads from each image. It is not a ground
truth, because the measure is how much quantizing one model changes the pipeline's output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.bench_real_models import edit_distance
from benchmarks.real_models import inputs

# RapidOCR keyword argument that sets each model's path (rapidocr-onnxruntime 1.4.4).
MODEL_PATH_ARGUMENTS = {"det": "det_model_path", "rec": "rec_model_path", "cls": "cls_model_path"}


def evaluation_images() -> dict[str, np.ndarray]:
    """Return uint8 RGB text images that share no sentence with the calibration inputs.

    scikit-image's scanned "page" and photographed "text" samples, two pages rendered
    from sentences 20 to 39 of inputs.SENTENCES, and a third page rotated by 180
    degrees so that the cls model has lines to turn. The calibration inputs use
    sentences 0 to 15 and other images.
    """
    upside_down = inputs.render_document(range(24, 34), 480, 640)[::-1, ::-1]
    return {
        "skimage page": inputs.load_sample("page"),
        "skimage text": inputs.load_sample("text"),
        "rendered page A": inputs.render_document(range(20, 30), 736, 736),
        "rendered page B": inputs.render_document(range(30, 40), 640, 736),
        "rendered page C, upside down": np.ascontiguousarray(upside_down),
    }


def make_pipeline(models: dict[str, Path] | None = None):  # returns rapidocr's RapidOCR
    """Build a RapidOCR pipeline, replacing the models named in `models` ("det", "rec", "cls")."""
    from rapidocr_onnxruntime import RapidOCR

    arguments = {MODEL_PATH_ARGUMENTS[name]: str(path) for name, path in (models or {}).items()}
    return RapidOCR(**arguments)


def read_text(pipeline, image: np.ndarray) -> str:
    """Return the text lines that `pipeline` reads from a uint8 RGB image, one per line.

    The image goes in as a PIL image, which rapidocr converts from RGB to BGR itself.
    """
    result, _ = pipeline(Image.fromarray(image))
    return "\n".join(text for _, text, _ in result or [])


def read_all(models: dict[str, Path] | None, images: dict[str, np.ndarray]) -> list[str]:
    pipeline = make_pipeline(models)
    return [read_text(pipeline, image) for image in images.values()]


def character_error_rate(references: list[str], candidates: list[str]) -> float:
    """Return the edit distance summed over texts divided by the summed reference length.

    Line breaks between text lines count as characters. With empty references the rate
    is 0 when every candidate is empty too and infinite otherwise.
    """
    if len(references) != len(candidates):
        raise ValueError(f"got {len(references)} references and {len(candidates)} candidates")
    errors = sum(
        edit_distance(tuple(map(ord, reference)), tuple(map(ord, candidate)))
        for reference, candidate in zip(references, candidates, strict=True)
    )
    length = sum(len(reference) for reference in references)
    if length == 0:
        return 0.0 if errors == 0 else float("inf")
    return errors / length
