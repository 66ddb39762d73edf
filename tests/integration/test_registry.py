"""The model registry against MLflow, both ways it runs: the embedded store (SQLite file and
artifact folder) and a real MLflow tracking server process on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.mlflow.local import LocalMlflow
from ingest_service.registry import ModelRegistry, RegistryError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mlflow_server() -> Iterator[LocalMlflow]:
    with LocalMlflow() as server:
        yield server


@pytest.fixture(params=["embedded", "server"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> ModelRegistry:
    if request.param == "embedded":
        return ModelRegistry.embedded(tmp_path / "registry")
    server: LocalMlflow = request.getfixturevalue("mlflow_server")
    return ModelRegistry(server.url)


def _onnx(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / f"m-{len(content)}.onnx"
    path.write_bytes(content)
    return path


def test_register_promote_reject_and_roll_back(registry: ModelRegistry, tmp_path: Path) -> None:
    kind = f"camera{tmp_path.name[-6:].replace('-', '')}"  # a model name per test on the server
    first = registry.register(
        kind,
        _onnx(tmp_path, b"v1"),
        metric=0.70,
        params={"epochs": 5},
        lineage={"labels_digest": "ab12", "parent_version": "none"},
    )
    assert first.version == 1
    assert first.aliases == ("candidate",)
    assert first.tags["labels_digest"] == "ab12"
    assert registry.promote(kind, 1).promoted
    assert registry.alias(kind, "production") == registry.get(kind, 1)

    worse = registry.register(kind, _onnx(tmp_path, b"v2-worse"), metric=0.60)
    decision = registry.promote(kind, worse.version, margin=0.05)
    assert not decision.promoted
    assert "worse than production 1's 0.7000" in decision.reason
    production = registry.alias(kind, "production")
    assert production is not None
    assert production.version == 1

    better = registry.register(kind, _onnx(tmp_path, b"v3-better"), metric=0.72)
    assert registry.promote(kind, better.version).promoted
    assert [v.version for v in registry.versions(kind)] == [3, 2, 1]
    back = registry.rollback(kind)
    assert back.version == 1
    assert "production" in back.aliases
    assert "previous" in registry.get(kind, 3).aliases

    fetched = registry.download(kind, 3, tmp_path / "fetched")
    assert fetched.read_bytes() == b"v3-better"


def test_errors_name_the_model(registry: ModelRegistry, tmp_path: Path) -> None:
    kind = f"lidar{tmp_path.name[-6:].replace('-', '')}"
    with pytest.raises(RegistryError, match="no such model file"):
        registry.register(kind, tmp_path / "missing.onnx", metric=0.5)
    with pytest.raises(RegistryError, match=f"fleetal-{kind} version 9 is not registered"):
        registry.get(kind, 9)
    registry.register(kind, _onnx(tmp_path, b"only"), metric=0.5)
    registry.promote(kind, 1)
    with pytest.raises(RegistryError, match="no previous production version"):
        registry.rollback(kind)


def test_the_cli_lists_promotes_and_rolls_back(tmp_path: Path) -> None:
    data_dir = tmp_path / "registry"
    registry = ModelRegistry.embedded(data_dir)
    registry.register("camera", _onnx(tmp_path, b"a"), metric=0.8)
    registry.register("camera", _onnx(tmp_path, b"bb"), metric=0.6)
    config = tmp_path / "ingest.toml"
    config.write_text(
        f'[queue]\ndatabase = "{tmp_path / "q.db"}"\n[registry]\ndata_dir = "{data_dir}"\n'
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ingest_service.cli", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )

    assert cli("registry-promote", "--kind", "camera", "--version", "1").returncode == 0
    refused = cli("registry-promote", "--kind", "camera", "--version", "2")
    assert refused.returncode == 1
    assert "worse than production 1's 0.8000" in refused.stdout
    forced = cli("registry-promote", "--kind", "camera", "--version", "2", "--margin", "0.5")
    assert forced.returncode == 0, forced.stderr
    listed = cli("registry-models", "--kind", "camera")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["version"], r["aliases"]) for r in rows] == [
        (2, ["candidate", "production"]),
        (1, ["previous"]),
    ]
    back = cli("registry-rollback", "--kind", "camera")
    assert back.returncode == 0
    assert "fleetal-camera 1 is production again" in back.stdout
    missing = cli("registry-promote", "--kind", "lidar", "--version", "1")
    assert missing.returncode == 1
    assert "fleetal-lidar version 1 is not registered" in missing.stderr
