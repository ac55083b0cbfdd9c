"""docs/design.md's stage table names every stage that build_stages can return."""

from __future__ import annotations

from pathlib import Path

import pytest

from qrewrite import CLEConfig, QConfig
from qrewrite.pipeline import build_stages

DESIGN_PAGE = Path(__file__).resolve().parent.parent / "docs" / "design.md"

CONFIGS = [
    {},
    {"enable_npu_cnn": True},
    {"enable_npu_cnn": True, "NPULimitationCheck": False},
    {"UseMatMulNBits": True},
    {
        "ConvertFP16ToFP32": True,
        "ConvertNCHWToNHWC": True,
        "FixShapes": "x:[1]",
        "algo_config": [CLEConfig()],
        "Int16Scale": True,
        "RemoveQDQMulAdd": True,
    },
]


@pytest.mark.parametrize("arguments", CONFIGS)
def test_stage_table_names_every_stage(arguments) -> None:
    table = [line for line in DESIGN_PAGE.read_text().splitlines() if line.startswith("| ")]
    first_cells = " ".join(line.split("|")[1] for line in table)
    for stage in build_stages(QConfig(**arguments)):
        assert stage.name in first_cells, stage.name
