"""MiniLM sentence-embedding agreement between a float and a quantized model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def embed(model: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Run `model` on every feed and stack the embeddings into [sentences, dimensions]."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, feed)[0] for feed in feeds])


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 norm in float64. An all-zero row stays zero."""
    rows = embeddings.astype(np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def mean_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Return the mean over sentences of the cosine between the two embeddings of each."""
    if reference.shape != candidate.shape:
        raise ValueError(f"embedding shapes differ: {reference.shape} and {candidate.shape}")
    return float(np.mean(np.sum(unit_rows(reference) * unit_rows(candidate), axis=1)))


def nearest_neighbors(embeddings: np.ndarray) -> np.ndarray:
    """Return, for each sentence, the index of the most cosine-similar other sentence."""
    rows = unit_rows(embeddings)
    similarity = rows @ rows.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(axis=1)


def retrieval_top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Return the fraction of sentences whose nearest other sentence is the same for both.

    Each sentence is a query against all other sentences of the same set.
    """
    if reference.shape != candidate.shape or len(reference) < 2:
        raise ValueError(
            f"need two embedding sets of the same shape with at least two sentences, "
            f"got {reference.shape} and {candidate.shape}"
        )
    return float(np.mean(nearest_neighbors(reference) == nearest_neighbors(candidate)))


def top1_margins(embeddings: np.ndarray) -> np.ndarray:
    """Return, per sentence, the cosine of its nearest other sentence minus the second nearest."""
    rows = unit_rows(embeddings)
    similarity = rows @ rows.T
    np.fill_diagonal(similarity, -np.inf)
    ranked = np.sort(similarity, axis=1)
    return ranked[:, -1] - ranked[:, -2]


def decided_retrieval_agreement(
    reference: np.ndarray, candidate: np.ndarray, min_margin: float
) -> tuple[float, int]:
    """Agreement over the queries whose float nearest neighbour wins by at least `min_margin`.

    A query whose two nearest sentences are tied in the float model (margin 1e-4, say)
    flips with any change to the embeddings, float rounding included, so it measures
    nothing about the quantizer. Returns the agreement and the number of queries kept.
    """
    if reference.shape != candidate.shape or len(reference) < 3:
        raise ValueError(
            f"need two embedding sets of the same shape with at least three sentences, "
            f"got {reference.shape} and {candidate.shape}"
        )
    decided = top1_margins(reference) >= min_margin
    if not decided.any():
        raise ValueError(f"no query has a float top-1 margin of at least {min_margin}")
    agree = nearest_neighbors(reference) == nearest_neighbors(candidate)
    return float(np.mean(agree[decided])), int(decided.sum())
