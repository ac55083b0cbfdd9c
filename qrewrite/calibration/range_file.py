"""TensorsRangeFile: save calibrated ranges as JSON and load them back, validated.

The file is plain JSON, never a pickle, so loading it cannot run code:

    {"format": "qrewrite-tensor-ranges", "version": 1,
     "ranges": {"tensor name": [min, max], ...}}
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from qrewrite.calibration.ranges import TensorRange
from qrewrite.errors import CalibrationDataError

FORMAT_NAME = "qrewrite-tensor-ranges"
FORMAT_VERSION = 1


def save_ranges(path: str | os.PathLike[str], ranges: Mapping[str, TensorRange]) -> None:
    """Write `ranges` to `path` atomically: a reader never sees a half-written file."""
    target = Path(path)
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "ranges": {name: [r.min, r.max] for name, r in sorted(ranges.items())},
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(document, file, indent=1)
            file.write("\n")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _invalid(path: Path, problem: str) -> CalibrationDataError:
    return CalibrationDataError(
        f"TensorsRangeFile {str(path)!r} is invalid: {problem}. Delete it to calibrate again"
    )


def _parse_range(path: Path, name: Any, value: Any) -> TensorRange:
    numbers = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
    if not numbers or not all(math.isfinite(v) for v in value) or value[0] > value[1]:
        raise _invalid(
            path, f"range of {name!r} must be [min, max] of finite numbers, got {value!r}"
        )
    return TensorRange(value[0], value[1])


def load_ranges(path: str | os.PathLike[str], expected: Iterable[str]) -> dict[str, TensorRange]:
    """Read ranges from `path` and check that they name exactly the `expected` tensors."""
    source = Path(path)
    try:
        document = json.loads(source.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _invalid(source, f"cannot read it as JSON ({error})") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise _invalid(source, f"expected a JSON object with \"format\": \"{FORMAT_NAME}\"")
    if document.get("version") != FORMAT_VERSION:
        raise _invalid(
            source, f"version {document.get('version')!r} is not the supported {FORMAT_VERSION}"
        )
    stored = document.get("ranges")
    if not isinstance(stored, dict):
        raise _invalid(source, "\"ranges\" must be an object of tensor name to [min, max]")

    wanted = set(expected)
    missing = sorted(wanted - stored.keys())
    extra = sorted(stored.keys() - wanted)
    if missing:
        raise _invalid(source, f"it has no range for {len(missing)} tensors, such as {missing[:5]}")
    if extra:
        raise _invalid(
            source,
            f"it has ranges for {len(extra)} tensors the model does not calibrate, such as "
            f"{extra[:5]}",
        )
    return {name: _parse_range(source, name, stored[name]) for name in sorted(wanted)}
