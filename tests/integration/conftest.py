"""Fixtures for integration tests: real services started once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.postgres.pg_local import LocalPostgres, PostgresNotInstalledError, find_bindir


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
