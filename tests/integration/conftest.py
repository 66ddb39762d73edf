"""Fixtures for integration tests: real services started once per test session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import torch

from deploy.postgres.pg_local import LocalPostgres, PostgresNotInstalledError, find_bindir
from ingest_service.training.reference.train import build_reference_models

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The DSN of a throwaway PostgreSQL server (database ``fleetal``), one per session.

    Tests that need isolation create their own schema or database on it. Without the
    PostgreSQL server binaries the tests error, naming the package to install (``make test``
    installs it): a test that needs a service starts it, it does not skip.
    """
    try:
        find_bindir()
    except PostgresNotInstalledError as exc:
        pytest.fail(str(exc))
    with LocalPostgres() as server:
        yield server.dsn


@pytest.fixture(params=["sqlite", "postgres"])
def queue_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty label-queue database of each backend: a SQLite file path, or a
    PostgreSQL DSN whose search_path is a schema of its own on the session's server (a schema
    per test is much faster than a database per test)."""
    if request.param == "sqlite":
        yield str(tmp_path / "queue.db")
        return
    server_dsn: str = request.getfixturevalue("postgres")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    yield psycopg.conninfo.make_conninfo(server_dsn, options=f"-c search_path={schema}")
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def quick_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference models built quick (camera.onnx, lidar.onnx and the camera.pt and
    lidar.pt a fine-tune starts from), once per session; tests copy them, never write there."""
    out = tmp_path_factory.mktemp("models")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_reference_models(out, DATA, quick=True)
    finally:
        torch.set_num_threads(threads)
    return out
