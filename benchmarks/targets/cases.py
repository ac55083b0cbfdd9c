"""The models of the targets table: float model, calibration feeds, evaluation and latency input.

Every quantizer setting gets the same calibration feeds. Evaluation inputs share no
sentence or image with them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.real_models import inputs
from benchmarks.real_models.models import cache_dir, ocr_model_path
from benchmarks.targets import embeddings, ocr_pipeline, vad

Feed = dict[str, np.ndarray]
MODEL_KEYS = ("minilm", "vad", "det", "rec", "cls")
OCR_MODEL_NAMES = {"det": "ppocr-det", "rec": "ppocr-rec", "cls": "ppocr-cls"}
# Images of the det calibration set, as indices into det_split's calibration list: the
# "astronaut" photo and a page rendered from sentences 0 to 9.
DET_CALIBRATION_INDICES = (0, 5)
# Frames per Silero calibration feed (32 ms each) and the voices and speeds of the
# calibration and evaluation clips, which differ so that evaluation is held out.
VAD_CALIBRATION_BLOCK_FRAMES = 128
VAD_LATENCY_BLOCK_FRAMES = 512
VAD_CALIBRATION_SPEECH = ("en-us", 160, range(0, 8))
VAD_EVALUATION_SPEECH = ("en-gb", 140, range(20, 30))
# A query whose float nearest neighbour beats the second nearest by less than this cosine
# is a tie that any change of the embeddings can flip. The second retrieval metric
# leaves such queries out.
DECIDED_MARGIN = 0.01
DECIDED_METRIC = f"retrieval top-1 agreement, float margin ≥ {DECIDED_MARGIN}"


@dataclass(frozen=True)
class Target:
    """A bound on one accuracy metric, with the text shown in the report."""

    metric: str
    text: str
    is_met: Callable[[float], bool]


@dataclass
class TargetCase:
    """One model: its float file, inputs and how to score a quantized copy.

    `evaluate` takes a quantized model path and returns a value per metric of
    `targets`. `reference` describes what the float model produced on the evaluation
    inputs and is filled in by the first call of `evaluate`.
    """

    key: str
    name: str
    model: Path
    calibration: list[Feed]
    calibration_text: str
    evaluation_text: str
    latency_feed: Feed
    targets: tuple[Target, ...]
    evaluate: Callable[[Path], dict[str, float]]
    reference: Callable[[], str]


def at_least(value: float) -> Callable[[float], bool]:
    return lambda measured: measured >= value


def at_most(value: float) -> Callable[[float], bool]:
    return lambda measured: measured <= value


def shape_text(feed: Feed) -> str:
    return ", ".join(f"{name} {list(value.shape)}" for name, value in feed.items())


def minilm_case() -> TargetCase:
    from benchmarks.real_models.minilm import export_minilm

    model = export_minilm()
    split = inputs.minilm_split(calibration_count=16, batch_size=4)

    @functools.cache
    def float_embeddings() -> np.ndarray:
        return embeddings.embed(model, split.evaluation)

    def evaluate(quantized: Path) -> dict[str, float]:
        candidate = embeddings.embed(quantized, split.evaluation)
        decided, _ = embeddings.decided_retrieval_agreement(
            float_embeddings(), candidate, DECIDED_MARGIN
        )
        return {
            "embedding cosine": embeddings.mean_cosine(float_embeddings(), candidate),
            "retrieval top-1 agreement": embeddings.retrieval_top1_agreement(
                float_embeddings(), candidate
            ),
            DECIDED_METRIC: decided,
        }

    def reference() -> str:
        margins = embeddings.top1_margins(float_embeddings())
        tied = int((margins < DECIDED_MARGIN).sum())
        return f"{len(margins)} embeddings, {tied} with a margin under {DECIDED_MARGIN}"

    evaluation_count = len(inputs.SENTENCES) - 16
    return TargetCase(
        key="minilm",
        name="MiniLM-L6-v2",
        model=model,
        calibration=split.calibration,
        calibration_text="16 sentences, 4 feeds of 4, padded per feed",
        evaluation_text=f"{evaluation_count} other sentences, feeds of 4",
        latency_feed=split.evaluation[0],
        targets=(
            Target("embedding cosine", "≥ 0.99", at_least(0.99)),
            Target("retrieval top-1 agreement", "1.0", at_least(1.0)),
            Target(DECIDED_METRIC, "1.0", at_least(1.0)),
        ),
        evaluate=evaluate,
        reference=reference,
    )


def vad_case() -> TargetCase:
    missing = vad.missing_programs()
    if missing:
        raise FileNotFoundError(
            f"{' and '.join(missing)} not found on PATH; install the Debian packages "
            "espeak-ng and sox to synthesize speech"
        )
    model = vad.sequence_model_path()
    cache = cache_dir() / "speech"

    def clip(voice: str, speed: int, indices: range, seed: int) -> np.ndarray:
        sentences = [inputs.SENTENCES[i] for i in indices]
        return vad.build_clip(sentences, voice, speed, seed, cache)

    calibration_audio = clip(*VAD_CALIBRATION_SPEECH, seed=1)
    evaluation_audio = clip(*VAD_EVALUATION_SPEECH, seed=2)
    calibration = vad.calibration_feeds(calibration_audio, VAD_CALIBRATION_BLOCK_FRAMES)
    latency_feed = vad.calibration_feeds(evaluation_audio, VAD_LATENCY_BLOCK_FRAMES)[0]

    @functools.cache
    def float_probabilities() -> np.ndarray:
        return vad.speech_probabilities(model, evaluation_audio)

    def evaluate(quantized: Path) -> dict[str, float]:
        candidate = vad.speech_probabilities(quantized, evaluation_audio)
        agreement = vad.decision_agreement(float_probabilities(), candidate)
        return {"speech decision agreement": agreement}

    def reference() -> str:
        probabilities = float_probabilities()
        speech = np.mean(probabilities > vad.SPEECH_THRESHOLD)
        return f"{len(probabilities)} frames, {speech:.0%} speech"

    voice, speed, indices = VAD_CALIBRATION_SPEECH
    evaluation_voice, evaluation_speed, evaluation_indices = VAD_EVALUATION_SPEECH
    return TargetCase(
        key="vad",
        name="Silero VAD 16k sequence",
        model=model,
        calibration=calibration,
        calibration_text=(
            f"{len(calibration_audio) / vad.SAMPLE_RATE:.0f} s of espeak-ng `{voice}` at "
            f"{speed} wpm, {len(indices)} sentences with silence, "
            f"{len(calibration)} feeds of up to {VAD_CALIBRATION_BLOCK_FRAMES} frames"
        ),
        evaluation_text=(
            f"{len(evaluation_audio) / vad.SAMPLE_RATE:.0f} s of `{evaluation_voice}` at "
            f"{evaluation_speed} wpm, {len(evaluation_indices)} other sentences"
        ),
        latency_feed=latency_feed,
        targets=(Target("speech decision agreement", "≥ 0.98", at_least(0.98)),),
        evaluate=evaluate,
        reference=reference,
    )


@functools.cache
def ocr_images() -> dict[str, np.ndarray]:
    return ocr_pipeline.evaluation_images()


@functools.cache
def float_ocr_texts() -> tuple[str, ...]:
    return tuple(ocr_pipeline.read_all(None, ocr_images()))


def ocr_case(key: str, det_size: tuple[int, int]) -> TargetCase:
    model = ocr_model_path(OCR_MODEL_NAMES[key])
    if key == "det":
        split = inputs.det_split(*det_size)
        calibration = [split.calibration[i] for i in DET_CALIBRATION_INDICES]
        calibration_text = f"2 images of {det_size[0]}x{det_size[1]}: a photo and a text page"
        latency_feed = {
            "x": inputs.normalize_image(inputs.render_document(range(20, 30), *det_size))[None]
        }
        target = Target("pipeline CER", "≤ 0.02", at_most(0.02))
    elif key == "rec":
        calibration = inputs.rec_split(calibration_count=16).calibration
        calibration_text = "16 rendered text lines, 4 feeds of 4"
        latency_feed = inputs.text_line_batches(range(20, 26), None, batch_size=6)[0]
        target = Target("pipeline CER", "≤ 0.05", at_most(0.05))
    elif key == "cls":
        calibration = inputs.cls_split(calibration_count=16).calibration
        calibration_text = "16 rendered text lines (every third upside down), 4 feeds of 4"
        latency_feed = inputs.text_line_batches(
            range(20, 26), inputs.CLS_WIDTH, batch_size=6, flip_every=3
        )[0]
        target = Target("pipeline CER", "0.0", at_most(0.0))
    else:
        raise ValueError(f"unknown OCR model {key!r}, expected det, rec or cls")

    def evaluate(quantized: Path) -> dict[str, float]:
        texts = ocr_pipeline.read_all({key: quantized}, ocr_images())
        return {"pipeline CER": ocr_pipeline.character_error_rate(list(float_ocr_texts()), texts)}

    def reference() -> str:
        characters = sum(len(text) for text in float_ocr_texts())
        return f"{characters} characters read from {len(ocr_images())} images"

    return TargetCase(
        key=key,
        name=f"PP-OCRv4 {key}" if key != "cls" else "PP-OCR cls",
        model=model,
        calibration=calibration,
        calibration_text=calibration_text,
        evaluation_text="whole pipeline on " + ", ".join(ocr_images()),
        latency_feed=latency_feed,
        targets=(target,),
        evaluate=evaluate,
        reference=reference,
    )


def build_case(key: str, det_size: tuple[int, int]) -> TargetCase:
    """Build the case for one of MODEL_KEYS; det_size is the det input [height, width]."""
    if key == "minilm":
        return minilm_case()
    if key == "vad":
        return vad_case()
    return ocr_case(key, det_size)
