"""SaveTensorHistFig: one PNG histogram per tensor with its calibrated range marked."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from qrewrite.calibration.collectors import Histogram
from qrewrite.calibration.ranges import TensorRange
from qrewrite.errors import ConfigError

logger = logging.getLogger(__name__)


def histogram_folder_for(model_output: str | Path) -> Path:
    """Return the folder next to the output model where the histogram figures go."""
    output = Path(model_output)
    return output.parent / f"{output.stem}_tensor_hist"


def _file_name(index: int, tensor: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", tensor).strip("_")[:80] or "tensor"
    return f"{index:04d}_{safe}.png"


def save_histogram_figures(
    folder: Path,
    histograms: Mapping[str, Histogram],
    ranges: Mapping[str, TensorRange],
) -> list[Path]:
    """Write one PNG per tensor into `folder`, plus tensors.json mapping files to tensors.

    Tensors without any finite value get no figure. Returns the written PNG paths.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ConfigError(
            "SaveTensorHistFig needs matplotlib; install it with pip install 'qrewrite[plots]'"
        ) from error

    folder.mkdir(parents=True, exist_ok=True)
    written, index = [], {}
    for number, (tensor, histogram) in enumerate(sorted(histograms.items())):
        if histogram.counts.size == 0:
            continue
        figure = Figure(figsize=(6, 3.5))
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        edges = histogram.edges()
        axes.stairs(np.maximum(histogram.counts, 0), edges, fill=True, color="tab:blue")
        axes.set_yscale("symlog")
        tensor_range = ranges[tensor]
        for bound in (tensor_range.min, tensor_range.max):
            axes.axvline(bound, color="tab:red", linestyle="--", linewidth=1)
        axes.set_title(f"{tensor}  range [{tensor_range.min:.4g}, {tensor_range.max:.4g}]",
                       fontsize=8)
        axes.set_xlabel("value")
        axes.set_ylabel("count")
        figure.tight_layout()
        path = folder / _file_name(number, tensor)
        figure.savefig(path, dpi=80)
        written.append(path)
        index[path.name] = tensor
    (folder / "tensors.json").write_text(json.dumps(index, indent=1) + "\n")
    logger.info("saved %d tensor histograms to %s", len(written), folder)
    return written
