"""The container files, checked without a Docker daemon: hadolint (from PyPI) finds nothing
and does catch a bad file; every COPY source exists and is in the build context .dockerignore
lets through; the final stage runs as a non-root user with a health check; the base images are
pinned; the FLEETAL_ variables they set are configuration keys; the entry points exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from edge_agent.config import load_agent_config
from ingest_service.config import load_ingest_config

REPO = Path(__file__).resolve().parents[3]
FILES = sorted((REPO / "deploy" / "containers").glob("*.Dockerfile"))
HADOLINT = shutil.which("hadolint", path=str(REPO / ".venv" / "bin")) or "hadolint"


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending):
            continue
        if line.startswith("#"):
            continue
        pending += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def _final_stage(path: Path) -> list[tuple[str, str]]:
    ins = _instructions(path)
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def test_there_is_one_for_each_role() -> None:
    assert [f.name for f in FILES] == ["edge-agent.Dockerfile", "ingest-service.Dockerfile"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(path: Path) -> None:
    run = subprocess.run(
        [HADOLINT, "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == ""


def test_hadolint_catches_a_careless_file(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install -y curl\n")
    run = subprocess.run([HADOLINT, str(bad)], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "DL3008" in run.stdout  # unpinned apt package
    assert "DL3006" in run.stdout  # untagged base image


def _admitted(rel: str) -> bool:
    """Whether the repo's .dockerignore (an allowlist) lets ``rel`` into the build context."""
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    return any(rel == a or rel.startswith(a + "/") for a in allowed)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_copied_path_exists_in_the_build_context(path: Path) -> None:
    copies = [args for word, args in _instructions(path) if word == "COPY"]
    local = [a for a in copies if not a.startswith("--from")]
    assert local
    for args in local:
        *sources, _dest = args.split()
        for source in sources:
            rel = source.rstrip("/")
            assert (REPO / rel).exists(), f"{path.name}: COPY {source} does not exist"
            assert _admitted(rel), f"{path.name}: COPY {source} is excluded by .dockerignore"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_image_runs_unprivileged_with_a_health_check(path: Path) -> None:
    final = _final_stage(path)
    words = [w for w, _ in final]
    users = [args for word, args in final if word == "USER"]
    assert users, f"{path.name}: the final stage sets no USER"
    assert users[-1].split(":")[0] not in ("0", "root")
    assert "HEALTHCHECK" in words
    assert "ENTRYPOINT" in words


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_base_images_are_pinned(path: Path) -> None:
    args = dict(a.split("=", 1) for w, a in _instructions(path) if w == "ARG" and "=" in a)
    images = [args.get(k, "") for k in args if k in ("BASE", "UV_IMAGE")]
    assert len(images) == 2
    for image in images:
        assert re.search(r":\d+(\.\d+)+", image), f"{path.name}: {image} is not a version tag"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_entry_point_and_the_settings_exist(path: Path) -> None:
    final = dict(_final_stage(path))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    entry = final["ENTRYPOINT"].strip('[]"')
    assert entry in scripts
    env = dict(re.findall(r"(FLEETAL_[A-Z0-9_]+)=(\S+)", final.get("ENV", "")))
    assert env, f"{path.name}: sets no FLEETAL_ setting"
    load = load_agent_config if entry == "edge-agent" else load_ingest_config
    load(env=env)  # an unknown key or a bad value raises
