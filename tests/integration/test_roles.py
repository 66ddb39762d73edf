"""Each role installs only what it runs, from the checked-in lock file: a vehicle the base
package (no torch, FastAPI, psycopg, boto3, MLflow, matplotlib, scikit-learn), the centre the
``centre`` extra. Each environment is built here from ``uv.lock`` (``uv export`` then ``uv pip
sync --offline``: the wheels ``make`` already fetched), the project installed into it as a
package (from a copy of its sources: nothing outside the packages comes along), and its entry
points are run there from outside the checkout, so an import of something not packaged (the
ingest service once imported ``deploy/``) fails here as it would on a vehicle or in a
container."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UV = REPO / ".cache" / "uv-env" / "bin" / "uv"
PACKAGES = ("edge_agent", "ingest_service", "schemas", "selector")
CENTRE_ONLY = ("torch", "fastapi", "uvicorn", "psycopg", "boto3", "mlflow", "sklearn", "ray")


def _role_env(tmp_path: Path, *extras: str) -> Path:
    """A venv holding exactly the lock's packages for the base install plus ``extras``."""
    assert UV.is_file(), f"{UV} missing: `make setup` installs uv there"
    req = tmp_path / "requirements.txt"
    export = [str(UV), "export", "--locked", "--no-dev", "--no-emit-project", "--no-header"]
    export += ["--format", "requirements-txt", "--quiet", "--output-file", str(req)]
    for extra in extras:
        export += ["--extra", extra]
    run = subprocess.run(export, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    project = tmp_path / "project"  # the distribution's sources only
    for name in PACKAGES:
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)
    for argv in (
        [str(UV), "venv", "--quiet", "--python", sys.executable, str(venv)],
        [str(UV), "pip", "sync", "--offline", "--quiet", "--python", str(python), str(req)],
        [str(UV), "pip", "install", "--offline", "--quiet", "--no-deps", "--python", str(python),
         str(project)],
    ):  # fmt: skip
        run = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{argv}: {run.stderr}"
    return python


def _python(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run in the role's environment, from outside the checkout: only what was installed."""
    return subprocess.run(
        [str(python), *args], cwd=python.parents[2], capture_output=True, text=True, timeout=300
    )


FIND = "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m)))"


def test_a_vehicle_installs_the_agent_and_none_of_the_centre(
    tmp_path: Path, quick_models: Path
) -> None:
    python = _role_env(tmp_path)
    present = _python(python, "-c", FIND, *CENTRE_ONLY, "matplotlib")
    assert present.returncode == 0, present.stderr
    assert present.stdout.split() == []  # none of them is installed on a vehicle
    imports = "import edge_agent.cli, edge_agent.daemon, edge_agent.replay, edge_agent.rollout"
    done = _python(python, "-c", imports)
    assert done.returncode == 0, done.stderr
    helped = _python(python, "-m", "edge_agent.cli", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "replay" in helped.stdout
    keys = _python(python, "-m", "edge_agent.cli", "config-help")
    assert keys.returncode == 0, keys.stderr
    assert "max_download_bytes" in keys.stdout
    # the vehicle scores real frames with the reference models; the report has no plots
    # (matplotlib is the `report` extra) and says so
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[models]\ncamera = "{quick_models / "camera.onnx"}"\n'
        f'lidar = "{quick_models / "lidar.onnx"}"\n'
    )
    report = tmp_path / "report"
    replay = _python(
        python, "-m", "edge_agent.cli", "replay", str(REPO / "data" / "kitti_object"),
        "--config", str(cfg), "--report", str(report), "--no-progress",
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    assert "frames selected" in replay.stdout
    assert (report / "summary.json").is_file()
    assert not list(report.glob("*.png"))
    assert "install the `report` extra" in replay.stderr


def test_the_centre_installs_ingest_the_api_the_trainer_and_the_registry(tmp_path: Path) -> None:
    python = _role_env(tmp_path, "centre")
    present = _python(python, "-c", FIND, "torch", "fastapi", "psycopg", "boto3", "mlflow", "ray")
    assert present.returncode == 0, present.stderr
    assert present.stdout.split() == ["torch", "fastapi", "psycopg", "boto3", "mlflow"]
    imports = (
        "import ingest_service.cli, ingest_service.service, ingest_service.api.app, "
        "ingest_service.training.finetune, ingest_service.registry, ingest_service.rollout"
    )
    done = _python(python, "-c", imports)
    assert done.returncode == 0, done.stderr
    helped = _python(python, "-m", "ingest_service.cli", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "publish-model" in helped.stdout
