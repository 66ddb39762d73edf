"""The vehicle installs only what it runs: nothing under ``edge_agent/`` imports the centre's
libraries (torch, FastAPI, psycopg, boto3, MLflow, scikit-learn) or the centre's packages
(matplotlib only lazily, for the replay report's plots: the ``report`` extra); and the centre
reaches into the agent only for the model runtime the vehicle runs (``edge_agent.models``:
the metadata it reads, the runner whose outputs the trainer checks against torch), never for
its pipeline, sink or settings (those both sides use live in ``schemas``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FORBIDDEN = (
    "torch",
    "fastapi",
    "psycopg",
    "boto3",
    "mlflow",
    "sklearn",
    "ingest_service",
)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def offenders(package: Path, root: Path = ROOT) -> list[str]:
    """``file:line module`` for every import of a forbidden top-level module."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for line, module in _imports(path):
            if module.split(".")[0] in FORBIDDEN:
                found.append(f"{path.relative_to(root)}:{line} {module}")
    return found


def test_the_agent_imports_nothing_of_the_centre() -> None:
    assert offenders(ROOT / "edge_agent") == []


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text("def f():\n    import torch.nn\n    from mlflow import log\n")
    assert offenders(pkg, tmp_path) == ["pkg/m.py:2 torch.nn", "pkg/m.py:3 mlflow"]


@pytest.mark.parametrize("package", ["selector", "schemas"])
def test_the_shared_packages_import_nothing_of_the_centre(package: str) -> None:
    assert offenders(ROOT / package) == []


def test_the_centre_takes_only_the_model_runtime_from_the_agent() -> None:
    found = []
    for path in sorted((ROOT / "ingest_service").rglob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")
            if top[0] == "edge_agent" and top[:2] != ["edge_agent", "models"]:
                found.append(f"{path.relative_to(ROOT)}:{line} {module}")
    assert found == []
