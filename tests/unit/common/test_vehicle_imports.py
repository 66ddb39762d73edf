"""The vehicle installs only what it runs: nothing under ``edge_agent/`` imports the centre's
libraries (torch, FastAPI, psycopg, boto3, MLflow, scikit-learn) or the centre's packages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FORBIDDEN = ("torch", "fastapi", "psycopg", "boto3", "mlflow", "sklearn", "ingest_service")


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
