"""Time applying every built-in rule pack to a synthetic model and to real models.

Run as `python -m benchmarks.bench_rules`. The synthetic model repeats a block that
gives most rules something to match (Conv + BatchNormalization, a decomposed GELU,
Clip, Split). Each model is timed for `apply_rules(builtin_rules())` and for an onnx
load plus save of the same model, and the page reports time per 1,000 nodes and the
ratio of the two. The real models come from the rapidocr_onnxruntime package and are
skipped when it is not installed.
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from qrewrite.rules import builtin_rules

from benchmarks._report import write_section
from qrewrite.rewrite import RewriteResult, RuleSet, apply_rules

SYNTHETIC_NODES = 20_000
# Smaller synthetic models show whether the time grows linearly with node count.
_SCALING_NODES = (5_000, 10_000)
_CHANNELS = 4
_REAL_MODELS = (
    "ch_PP-OCRv4_det_infer.onnx",
    "ch_PP-OCRv4_rec_infer.onnx",
    "ch_ppocr_mobile_v2.0_cls_infer.onnx",
)


def _block(index: int, source: str, rng) -> tuple[list, list, str]:
    """Return the nodes, initializers and output of one 20-node block."""
    p = f"b{index}_"
    c = _CHANNELS
    inits = [
        numpy_helper.from_array(rng.normal(size=(c, c, 1, 1)).astype(np.float32), p + "w"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), p + "gamma"),
        numpy_helper.from_array(rng.normal(size=c).astype(np.float32), p + "beta"),
        numpy_helper.from_array(rng.normal(size=c).astype(np.float32), p + "mean"),
        numpy_helper.from_array(rng.uniform(0.5, 2.0, c).astype(np.float32), p + "var"),
        numpy_helper.from_array(np.array(math.sqrt(2), np.float32), p + "sqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), p + "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), p + "half"),
        numpy_helper.from_array(np.array(0.0, np.float32), p + "zero"),
        numpy_helper.from_array(np.array([2, 2], np.int64), p + "sizes"),
    ]
    bn_inputs = [p + "conv", p + "gamma", p + "beta", p + "mean", p + "var"]
    nodes = [
        helper.make_node("Conv", [source, p + "w"], [p + "conv"]),
        helper.make_node("BatchNormalization", bn_inputs, [p + "bn"]),
        helper.make_node("Div", [p + "bn", p + "sqrt2"], [p + "d"]),
        helper.make_node("Erf", [p + "d"], [p + "e"]),
        helper.make_node("Add", [p + "e", p + "one"], [p + "s"]),
        helper.make_node("Mul", [p + "bn", p + "s"], [p + "m"]),
        helper.make_node("Mul", [p + "m", p + "half"], [p + "gelu"]),
        helper.make_node("Clip", [p + "gelu", p + "zero"], [p + "clip"]),
        helper.make_node("Split", [p + "clip", p + "sizes"], [p + "s0", p + "s1"], axis=1),
        helper.make_node("Concat", [p + "s1", p + "s0"], [p + "cat"], axis=1),
    ]
    # Ten cheap nodes that no rule matches, as in a real graph.
    value = p + "cat"
    for k in range(10):
        op_type = ("Relu", "Neg", "Abs", "Sigmoid", "Identity")[k % 5]
        nodes.append(helper.make_node(op_type, [value], [f"{p}t{k}"]))
        value = f"{p}t{k}"
    return nodes, inits, value


def synthetic_model(node_count: int = SYNTHETIC_NODES) -> onnx.ModelProto:
    """Return a valid opset-20 model of about `node_count` nodes."""
    rng = np.random.default_rng(0)
    nodes, inits, value = [], [], "x"
    for index in range(node_count // 20):
        block_nodes, block_inits, value = _block(index, value, rng)
        nodes += block_nodes
        inits += block_inits
    graph = helper.make_graph(
        nodes,
        "synthetic",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, _CHANNELS, 8, 8])],
        [helper.make_tensor_value_info(value, onnx.TensorProto.FLOAT, [1, _CHANNELS, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


# Runs per real model. The table reports the fastest, because on a shared machine the
# slower runs measure other processes: one recorded run of PP-OCR cls took twice as long
# for the rules and for load+save alike. Synthetic models, of 3.5 s to 20 s, run once.
REAL_MODEL_RUNS = 3


def _load_save_seconds(model: onnx.ModelProto) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        onnx.save(model, path)
        start = time.perf_counter()
        loaded = onnx.load(path)
        onnx.save(loaded, Path(folder) / "copy.onnx")
        return time.perf_counter() - start


def _rewrite_seconds(model: onnx.ModelProto, rules: RuleSet) -> tuple[float, RewriteResult]:
    start = time.perf_counter()
    result = apply_rules(model, rules)
    return time.perf_counter() - start, result


def measure(name: str, model: onnx.ModelProto, runs: int = 1) -> str:
    """Return one Markdown table row for `model`, with the fastest of `runs` runs."""
    nodes = len(model.graph.node)
    rules = builtin_rules()
    timed = [_rewrite_seconds(model, rules) for _ in range(runs)]
    rewrite_seconds = min(seconds for seconds, _ in timed)
    result = timed[0][1]
    baseline = min(_load_save_seconds(model) for _ in range(runs))
    per_thousand = rewrite_seconds / nodes * 1000
    return (
        f"| {name} | {nodes} | {result.total_matches} | {rewrite_seconds:.2f} | "
        f"{per_thousand * 1000:.1f} | {baseline * 1000:.1f} | {rewrite_seconds / baseline:.0f} |"
    )


def real_models() -> list[tuple[str, onnx.ModelProto]]:
    """Return the rapidocr models when the package is installed."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        return []
    folder = Path(spec.origin).parent / "models"
    return [(name, onnx.load(folder / name)) for name in _REAL_MODELS if (folder / name).exists()]


def main() -> None:
    sizes = (*_SCALING_NODES, SYNTHETIC_NODES)
    rows = [measure(f"synthetic ({size // 20} blocks)", synthetic_model(size)) for size in sizes]
    rows += [measure(name, model, REAL_MODEL_RUNS) for name, model in real_models()]
    table = "\n".join(
        [
            "## Rule packs",
            "",
            "`python -m benchmarks.bench_rules` applies `builtin_rules()` (every built-in rule, "
            "default parameters) to each model. Load+save is one `onnx.load` plus one "
            "`onnx.save` of the same model from and to a temporary folder. A synthetic model "
            f"is timed once, a real model {REAL_MODEL_RUNS} times, keeping the fastest run. "
            "There is no warm-up, so expect run-to-run variation on a shared machine.",
            "",
            "| model | nodes | matches | rules (s) | ms per 1,000 nodes | load+save (ms) | ratio |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    write_section("rules", table)


if __name__ == "__main__":
    main()
