"""Render docs/options.md from the option registry.

Run `python -m qrewrite.config.docs > docs/options.md` after changing the registry; a
test fails while the page is stale.
"""

from __future__ import annotations

import enum
from typing import Any

from qrewrite.config import support
from qrewrite.config.data_types import DataType
from qrewrite.config.enums import CalibMethod, QuantGranularity, ScaleType
from qrewrite.config.registry import NPU_CNN_DEFAULTS, OPTIONS

_GROUP_TITLES = {
    "general": "General",
    "rules": "Float-graph rules",
    "calibration": "Calibration",
    "npu": "NPU targets",
    "planner": "Planner defaults (qrewrite's own)",
}

_PARAMETERS = [
    (
        "global_config",
        "QLayerConfig",
        "QLayerConfig(activation=Int8Spec(), weight=Int8Spec())",
        "Specs of activations and weights for every layer without an override.",
    ),
    (
        "specific_layer_config",
        "dict of data type to list of node names",
        "None",
        "Per-node data type, e.g. {Int16: ['/conv1/Conv']}; other spec settings follow "
        "global_config.",
    ),
    (
        "layer_type_config",
        "dict of data type or None to list of op types",
        "None",
        "Per-op-type data type; the key None leaves those op types in float.",
    ),
    (
        "exclude",
        "list of node names, regular expressions or (starts, ends)",
        "None",
        "Nodes left in float. A (start names, end names) pair excludes every node on a path "
        "from a start node to an end node.",
    ),
    (
        "algo_config",
        "list of algorithm configs",
        "None",
        "Weight algorithms. CLEConfig (cross-layer equalization) and HQQConfig (4-bit "
        "MatMulNBits weights by HQQ, the same as UseMatMulNBits with Algorithm \"HQQ\") "
        "are built; the others raise NotBuiltError.",
    ),
    (
        "use_external_data_format",
        "bool",
        "False",
        "Save weights in a separate `<output>.data` file. Models over 2 GiB always are.",
    ),
]


def _order(data_type: DataType) -> int:
    return list(DataType).index(data_type)


def _choices(kind: type[enum.Enum], built: frozenset[Any]) -> str:
    return ", ".join(
        f"`{member.name}`" + ("" if member in built else " (not built)") for member in kind
    )


def _default_text(value: Any) -> str:
    if hasattr(value, "items_"):
        return repr(dict(value.items_))
    return repr(value)


def render() -> str:
    """Return the Markdown text of docs/options.md."""
    lines = [
        "# Options",
        "",
        "Generated from `qrewrite/config/registry.py` by `python -m qrewrite.config.docs`;",
        "do not edit by hand. An option marked *not built* accepts only its default and",
        "raises `NotBuiltError` for any other value.",
        "",
        "## QConfig parameters",
        "",
        "| parameter | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, type_text, default, doc in _PARAMETERS:
        lines.append(f"| `{name}` | {type_text} | `{default}` | {doc} |")

    lines += [
        "",
        "## Spec fields",
        "",
        "`Int8Spec`, `UInt8Spec` and the other specs take these fields:",
        "",
        "| field | values | default |",
        "|---|---|---|",
        "| `symmetric` | True, False | True for signed types, False for unsigned |",
        f"| `scale_type` | {_choices(ScaleType, support.BUILT_SCALE_TYPES)} | `Float32` |",
        f"| `calibration_method` | {_choices(CalibMethod, support.BUILT_CALIB_METHODS)} "
        "| `MinMax` |",
        f"| `quant_granularity` | {_choices(QuantGranularity, support.BUILT_GRANULARITIES)} "
        "| `Tensor` |",
        "| `group_size` | a positive integer, required with `Group` (weights only) | None |",
        "",
        "Built spec classes: "
        + ", ".join(f"`{t.value}Spec`" for t in sorted(support.BUILT_DATA_TYPES, key=_order))
        + ", and `XInt8Spec` (symmetric Int8 with power-of-two scales).",
        "",
        "## Config files",
        "",
        "`qrewrite quantize --config FILE` reads JSON or TOML with the same names. Spec fields go",
        "in the `global_config.activation` and `global_config.weight` tables; extra options go",
        "at top level or in an `options` table. A role left out keeps its default spec, and",
        '`"float"` leaves it in float:',
        "",
        "```toml",
        "exclude = [\"^/head/.*\"]",
        "",
        "[global_config.activation]",
        "type = \"UInt8\"",
        "calibration_method = \"Percentile\"",
        "",
        "[global_config.weight]",
        "type = \"Int8\"",
        "quant_granularity = \"Channel\"",
        "",
        "[layer_type_config]",
        "Int16 = [\"Softmax\"]",
        "float = [\"Resize\"]",
        "",
        "[options]",
        "Percentile = 99.99",
        "```",
    ]

    built = sum(option.built for option in OPTIONS.values())
    lines += [
        "",
        "## Extra options",
        "",
        f"Pass them as keyword arguments: `QConfig(..., PrintSummary=False)`. "
        f"{built} of {len(OPTIONS)} are built.",
    ]
    for group, title in _GROUP_TITLES.items():
        lines += [
            "",
            f"### {title}",
            "",
            "| option | type | default | built | meaning |",
            "|---|---|---|---|---|",
        ]
        for option in OPTIONS.values():
            if option.group != group:
                continue
            state = "yes" if option.built else "not built"
            default = "`" + _default_text(option.default).replace("|", "\\|") + "`"
            if option.name in NPU_CNN_DEFAULTS:
                npu_default = _default_text(NPU_CNN_DEFAULTS[option.name])
                default += f" (`{npu_default}` with enable_npu_cnn)"
            type_text = option.type.text.replace("|", "\\|")
            lines.append(f"| `{option.name}` | {type_text} | {default} | {state} | {option.doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
