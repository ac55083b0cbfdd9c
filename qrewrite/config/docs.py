"""Render docs/options.md from the option registry.

Run `python -m qrewrite.config.docs > docs/options.md` after changing the registry; a
test fails while the page is stale.
"""

from __future__ import annotations

from typing import Any

from qrewrite.config.registry import OPTIONS

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
        "Weight algorithms such as CLEConfig or AdaRoundConfig. None is built yet.",
    ),
    (
        "use_external_data_format",
        "bool",
        "False",
        "Save weights in a separate `<output>.data` file. Models over 2 GiB always are.",
    ),
]


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
            default = _default_text(option.default).replace("|", "\\|")
            type_text = option.type.text.replace("|", "\\|")
            lines.append(
                f"| `{option.name}` | {type_text} | `{default}` | {state} | {option.doc} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
