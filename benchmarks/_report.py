"""Write one benchmark's results into its own section of docs/benchmarks.md."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import onnxruntime

BENCHMARKS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

_HEADER = """# Benchmarks

Each section below is written by one script in `benchmarks/` when `nox -s bench` runs.
Ratios compare qrewrite with onnxruntime.quantization (or plain onnxruntime) measured in
the same run on the same machine.
"""


def machine_line() -> str:
    """Describe the machine and versions a result was measured with."""
    return (
        f"Measured on {platform.machine()} {platform.processor() or ''}, "
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}."
    )


def write_section(topic: str, markdown: str) -> None:
    """Replace the section of `topic` in docs/benchmarks.md, or append it."""
    start, end = f"<!-- bench:{topic} -->", f"<!-- /bench:{topic} -->"
    block = f"{start}\n{markdown.strip()}\n\n{machine_line()}\n{end}"
    text = BENCHMARKS_PAGE.read_text() if BENCHMARKS_PAGE.exists() else _HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_PAGE.parent.mkdir(parents=True, exist_ok=True)
    BENCHMARKS_PAGE.write_text(text)
