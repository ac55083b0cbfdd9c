"""Silero VAD on speech synthesized with espeak-ng and padded with silence.

Needs the `espeak-ng` and `sox` programs (Debian packages of the same names).
espeak-ng writes 22,050 Hz audio, which sox resamples to the model's 16 kHz. Clips
put silence of random length, with faint noise, around every sentence, so both speech
and non-speech frames occur.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import wave
from importlib import resources
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
# Samples per frame and samples of the previous frame prefixed to each frame, at 16 kHz,
# as silero_vad.sequence_vad.RATE_CONFIG (silero-vad 6.2.3) defines them.
FRAME_SAMPLES, CONTEXT_SAMPLES = 512, 64
STATE_SHAPE = (1, 1, 128)
SPEECH_THRESHOLD = 0.5
# Standard deviation of the background noise, on the [-1, 1] sample scale (about -60 dBFS).
NOISE_STD = 0.001
REQUIRED_PROGRAMS = ("espeak-ng", "sox")


def sequence_model_path() -> Path:
    """Return the path of silero_vad_16k_sequence.onnx (Conv and LSTM, no If nodes)."""
    path = Path(str(resources.files("silero_vad").joinpath("data", "silero_vad_16k_sequence.onnx")))
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found. Install silero-vad==6.2.3.")
    return path


def missing_programs() -> list[str]:
    """Return the programs speech synthesis needs that are not on PATH."""
    return [program for program in REQUIRED_PROGRAMS if shutil.which(program) is None]


def synthesize(text: str, voice: str, words_per_minute: int, cache: Path) -> np.ndarray:
    """Speak `text` with espeak-ng and return 16 kHz mono float32 samples in [-1, 1].

    The WAV file is cached in `cache` under a hash of the text, voice and speed.
    """
    key = hashlib.sha256(f"{voice}|{words_per_minute}|{text}".encode()).hexdigest()[:16]
    target = cache / f"speech-{key}-16k.wav"
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        raw = cache / f"speech-{key}-raw.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(raw), text],
            check=True,
            capture_output=True,
        )
        partial = cache / f"speech-{key}-partial.wav"
        subprocess.run(
            ["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(partial)],
            check=True,
            capture_output=True,
        )
        partial.replace(target)
        raw.unlink()
    with wave.open(str(target), "rb") as audio:
        if audio.getframerate() != SAMPLE_RATE or audio.getsampwidth() != 2:
            raise ValueError(f"{target} is not 16-bit audio at {SAMPLE_RATE} Hz")
        samples = np.frombuffer(audio.readframes(audio.getnframes()), dtype=np.int16)
    return samples.astype(np.float32) / 32768.0


def build_clip(
    sentences: list[str], voice: str, words_per_minute: int, seed: int, cache: Path
) -> np.ndarray:
    """Join spoken sentences with 0.5 to 2 s of silence before, between and after them.

    The silence carries Gaussian noise of NOISE_STD, and the result is deterministic
    for the same arguments.
    """
    rng = np.random.default_rng(seed)
    pieces = []
    for sentence in sentences:
        pieces.append(np.zeros(int(rng.uniform(0.5, 2.0) * SAMPLE_RATE), dtype=np.float32))
        pieces.append(synthesize(sentence, voice, words_per_minute, cache))
    pieces.append(np.zeros(int(rng.uniform(0.5, 2.0) * SAMPLE_RATE), dtype=np.float32))
    clip = np.concatenate(pieces)
    clip += rng.normal(0.0, NOISE_STD, size=clip.shape).astype(np.float32)
    return np.clip(clip, -1.0, 1.0)


def frame_blocks(audio: np.ndarray, block_frames: int) -> list[np.ndarray]:
    """Cut audio into blocks of [frames, CONTEXT_SAMPLES + FRAME_SAMPLES] model input.

    Each frame starts with the last CONTEXT_SAMPLES of the previous frame (zeros for
    the first), and the last frame is zero-padded, as silero-vad's sequence front end
    does.
    """
    from silero_vad.sequence_vad import frame_blocks as silero_frame_blocks

    return list(silero_frame_blocks(audio, FRAME_SAMPLES, CONTEXT_SAMPLES, block_frames))


def zero_state() -> np.ndarray:
    return np.zeros(STATE_SHAPE, dtype=np.float32)


def calibration_feeds(audio: np.ndarray, block_frames: int) -> list[dict[str, np.ndarray]]:
    """Return one feed per block of `audio`, each starting from a zero LSTM state."""
    return [
        {"input": block, "h": zero_state(), "c": zero_state()}
        for block in frame_blocks(audio, block_frames)
    ]


def speech_probabilities(model: Path, audio: np.ndarray) -> np.ndarray:
    """Return one speech probability per 32 ms frame, with silero-vad's own front end.

    SileroVADSequence runs blocks of up to 512 frames on one thread and carries the
    LSTM state from block to block.
    """
    from silero_vad.sequence_vad import SileroVADSequence

    return SileroVADSequence(str(model)).audio_forward(audio, SAMPLE_RATE)


def decision_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Return the fraction of frames where both probabilities are on the same side of 0.5."""
    if reference.shape != candidate.shape or reference.size == 0:
        raise ValueError(
            f"need two non-empty probability arrays of one shape, "
            f"got {reference.shape} and {candidate.shape}"
        )
    return float(np.mean((reference > SPEECH_THRESHOLD) == (candidate > SPEECH_THRESHOLD)))
