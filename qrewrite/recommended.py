"""Recommended configs: the data types that are fast and accurate on a runtime target.

For onnxruntime on CPU (`target="cpu"`): uint8 asymmetric activations and int8
symmetric per-channel weights, also the types of `qrewrite quantize` without type
options. With int8 activations onnxruntime's graph optimizer converts activations to
uint8 around each fused node and leaves many Convs in float. `python -m
benchmarks.bench_kernels` measured PP-OCRv4 det at 640x640 with onnxruntime 1.32.0 on
one thread (x86_64 AMD EPYC, AVX-512 VNNI): 0.52 of its float latency with this config
and 0.86 with int8 activations and the planner rules off (1.25 before FuseHardSwish).

For AMD NPUs running CNNs (`target="npu_cnn"`): XInt8Spec (int8, symmetric,
power-of-two scales, per-tensor) for activations and weights, activation ranges from
the power-of-two MinMSE search, and enable_npu_cnn.
"""

from __future__ import annotations

from typing import Any

from qrewrite.config import (
    Int8Spec,
    QConfig,
    QLayerConfig,
    QuantGranularity,
    UInt8Spec,
)
from qrewrite.config.spec import npu_cnn_layer_config
from qrewrite.errors import ConfigError

TARGETS = ("cpu", "npu_cnn")


def recommended_layer_config(target: str = "cpu") -> QLayerConfig:
    """Return the activation and weight specs recommended for `target`."""
    if target not in TARGETS:
        raise ConfigError(
            f"unknown target {target!r} for recommended_config; known targets: "
            f"{', '.join(TARGETS)}"
        )
    if target == "npu_cnn":
        return npu_cnn_layer_config()
    return QLayerConfig(
        activation=UInt8Spec(),
        weight=Int8Spec(quant_granularity=QuantGranularity.Channel),
    )


def recommended_config(target: str = "cpu", **overrides: Any) -> QConfig:
    """Build the QConfig recommended for `target`, with `overrides` applied on top.

    `overrides` takes any QConfig argument or extra option, for example
    `recommended_config(CalibDataSize=64)`. A `global_config` override replaces the
    recommended data types entirely.
    """
    layer = recommended_layer_config(target)
    arguments: dict[str, Any] = {"global_config": layer, **overrides}
    if target == "npu_cnn":
        arguments.setdefault("enable_npu_cnn", True)
    return QConfig(**arguments)
