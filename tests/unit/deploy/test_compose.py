"""The local full stack (deploy/compose/compose.yaml), checked without a container daemon by
the Compose Specification's own loader (compose-go, built by make as compose-validate): the
file loads (schema, references between services and volumes); the loader does catch a broken
file; every bind-mounted file and the build's Dockerfile exist; images are pinned; the stack's
ingest configuration and Prometheus configuration are valid."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import yaml

from ingest_service.config import load_ingest_config

REPO = Path(__file__).resolve().parents[3]
COMPOSE = REPO / "deploy" / "compose"
_SRC = COMPOSE / "validate"
_KEY = hashlib.sha256((_SRC / "main.go").read_bytes() + (_SRC / "go.sum").read_bytes())
VALIDATE = Path.home() / ".cache" / "fleetal" / f"compose-validate-{_KEY.hexdigest()[:12]}"
VALIDATE = VALIDATE / "compose-validate"


def _load(path: Path) -> subprocess.CompletedProcess[str]:
    assert VALIDATE.is_file(), f"{VALIDATE} missing: `make compose-validate` builds it"
    return subprocess.run(
        [str(VALIDATE), str(path)], capture_output=True, text=True, timeout=60, cwd=path.parent
    )


def _project() -> dict[str, object]:
    run = _load(COMPOSE / "compose.yaml")
    assert run.returncode == 0, run.stderr
    project = yaml.safe_load(run.stdout)
    assert isinstance(project, dict)
    return project


def test_the_stack_loads_with_every_part() -> None:
    services = _project()["services"]
    assert isinstance(services, dict)
    assert set(services) == {"kafka", "mlflow", "ingest", "prometheus", "grafana"}


def test_the_loader_catches_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  a:\n    image: x:1\n    depends_on: [b]\n    restrat: always\n")
    run = _load(bad)
    assert run.returncode != 0
    assert "restrat" in run.stderr


def test_every_mounted_file_and_the_dockerfile_exist() -> None:
    services = _project()["services"]
    assert isinstance(services, dict)
    binds = [
        Path(v["source"])
        for s in services.values()
        for v in s.get("volumes", [])
        if v["type"] == "bind"
    ]
    assert len(binds) >= 6
    for source in binds:
        assert source.exists(), f"bind mount {source} does not exist"
    build = services["ingest"]["build"]
    assert (Path(build["context"]) / build["dockerfile"]).is_file()


def test_images_are_pinned() -> None:
    services = _project()["services"]
    assert isinstance(services, dict)
    for name, service in services.items():
        image = service["image"]
        tag = image.rpartition(":")[2]
        assert tag not in ("", "latest"), f"{name}: {image}"
        assert any(c.isdigit() for c in tag), f"{name}: {image}"


def test_the_stacks_configurations_are_valid(tmp_path: Path) -> None:
    cfg = load_ingest_config(
        COMPOSE / "ingest.toml",
        data={"api": {"tokens_file": str(COMPOSE / "api-tokens.example.toml")}},
        env={"FLEETAL_KAFKA__BOOTSTRAP_SERVERS": "kafka:29092"},
    )
    assert cfg.kafka.bootstrap_servers == ("kafka:29092",)
    assert cfg.registry.tracking_uri == "http://mlflow:5000"
    # the stack mounts the shipped rules beside its prometheus.yml
    shutil.copy(COMPOSE / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(REPO / "deploy" / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    tool = shutil.which("promtool")
    assert tool is not None, "promtool missing: `apt-get install prometheus` (make test does)"
    run = subprocess.run(
        [tool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
