"""The rule packs ship as qrewrite.rules in both an editable install and a wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_rules_importable_from_current_install() -> None:
    import qrewrite.rules

    assert Path(qrewrite.rules.__file__).parent.name == "rules"
    assert hasattr(qrewrite.rules, "float_graph_rules")


@pytest.mark.slow
def test_wheel_contains_and_imports_rules(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = list(wheels.glob("qrewrite-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "qrewrite/rules/__init__.py" in names
    assert "qrewrite/py.typed" in names
    assert "qrewrite/demo/digits_cnn.onnx" in names

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import qrewrite, qrewrite.rules, sys; "
        f"assert qrewrite.__file__.startswith({str(target)!r}), qrewrite.__file__; "
        "print(qrewrite.rules.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(target))
