"""The rule packs ship as qrewrite.rules in both an editable install and a wheel."""

from __future__ import annotations

import shutil
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
    # Build from a copy without build/ and egg-info folders: setuptools reuses a stale
    # build/lib, which can hide a package missing from pyproject.toml.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            "build", "*.egg-info", ".git", ".nox", ".hypothesis", "__pycache__", ".*_cache"
        ),
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
    )
    [wheel] = list(wheels.glob("qrewrite-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "qrewrite/rules/__init__.py" in names
    assert "qrewrite/py.typed" in names
    assert "qrewrite/demo/digits_cnn.onnx" in names
    assert "qrewrite/quantization/planner/__init__.py" in names

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    # Running the demo from the installed copy imports every stage of the pipeline.
    probe = (
        "import qrewrite, qrewrite.rules; "
        f"assert qrewrite.__file__.startswith({str(target)!r}), qrewrite.__file__; "
        "from qrewrite.demo.run import main; code = main([]); "
        "print(qrewrite.rules.__file__); raise SystemExit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith(str(target))


def test_every_source_package_is_listed() -> None:
    tomllib = pytest.importorskip("tomllib")
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "qrewrite").rglob("__init__.py")
    }
    found.add("qrewrite.rules")
    assert found - listed == set(), "add these packages to pyproject.toml"
