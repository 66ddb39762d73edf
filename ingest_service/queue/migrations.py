"""Versioned schema migrations for the label queue, in both dialects.

Each :class:`Migration` is a version number, a description and its statements per dialect.
:func:`migrate` applies the missing ones in order, each in its own transaction together with
its row in ``schema_migrations`` (version, description, checksum, applied_ns), so a crash
leaves the schema at a whole version. Re-running is a no-op. Concurrent migrators are
serialised: SQLite by ``BEGIN IMMEDIATE``, PostgreSQL by a transaction-scoped advisory lock.

:func:`migrate` and :func:`check_current` raise :class:`~ingest_service.errors.MigrationError`
when the database is at a version newer than this code knows (an older ingest binary against
an upgraded database), or when an applied migration's statements have since been edited (its
checksum differs): migrations are append-only.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ingest_service.errors import DatabaseError, MigrationError
from ingest_service.queue.db import Database, Dialect

__all__ = [
    "MIGRATIONS",
    "Migration",
    "check_current",
    "current_version",
    "latest_version",
    "migrate",
]

# Any constant: the key of the PostgreSQL advisory lock that serialises migrators.
_PG_LOCK_KEY = 0x666C_6565_7461_6C31 & 0x7FFF_FFFF_FFFF_FFFF  # "fleetal1"

_CREATE_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY,"
    " description TEXT NOT NULL,"
    " checksum TEXT NOT NULL,"
    " applied_ns BIGINT NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: its statements per dialect (no trailing semicolons needed)."""

    version: int
    description: str
    statements: Mapping[Dialect, Sequence[str]]

    def checksum(self, dialect: Dialect) -> str:
        """sha256 of this dialect's statements, recorded when applied."""
        digest = hashlib.sha256()
        for stmt in self.statements[dialect]:
            digest.update(" ".join(stmt.split()).encode())
            digest.update(b"\0")
        return digest.hexdigest()


def _both(*statements: str) -> dict[Dialect, tuple[str, ...]]:
    return {Dialect.SQLITE: statements, Dialect.POSTGRES: statements}


_FRAMES = """
CREATE TABLE frames (
    frame_key       TEXT PRIMARY KEY,
    vehicle_id      TEXT NOT NULL,
    drive_id        TEXT NOT NULL,
    frame_seq       BIGINT NOT NULL CHECK (frame_seq >= 0),
    timestamp_ns    BIGINT NOT NULL,
    score           DOUBLE PRECISION NOT NULL,
    reason          TEXT NOT NULL,
    model_versions  TEXT NOT NULL,
    blob_refs       TEXT NOT NULL,
    created_ns      BIGINT NOT NULL
)"""

_TASKS_COLUMNS = """
    frame_key         TEXT NOT NULL UNIQUE REFERENCES frames (frame_key),
    state             TEXT NOT NULL DEFAULT 'new'
                      CHECK (state IN ('new', 'leased', 'labeled', 'skipped', 'expired')),
    score             DOUBLE PRECISION NOT NULL,
    enqueued_ns       BIGINT NOT NULL,
    rank              DOUBLE PRECISION NOT NULL,
    lease_owner       TEXT,
    lease_expires_ns  BIGINT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    labeled_ns        BIGINT,
    skip_reason       TEXT,
    skipped_ns        BIGINT,
    CHECK (state <> 'leased' OR (lease_owner IS NOT NULL AND lease_expires_ns IS NOT NULL))
)"""

_LABELS_COLUMNS = """
    task_id     BIGINT NOT NULL REFERENCES tasks (id),
    labeler     TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_ns  BIGINT NOT NULL
)"""

_SETTINGS = """
CREATE TABLE queue_settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
)"""

_INDEXES = (
    # claim: the best task of a state, in priority order (rank, then oldest id first).
    "CREATE INDEX tasks_claim ON tasks (state, rank DESC, id)",
    # expire_leases: leases that have run out.
    "CREATE INDEX tasks_state_lease ON tasks (state, lease_expires_ns)",
    "CREATE INDEX frames_drive ON frames (vehicle_id, drive_id, frame_seq)",
    "CREATE INDEX labels_task ON labels (task_id)",
)

_RETRAIN_JOBS_COLUMNS = """
    kind          TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'rejected')),
    trigger       TEXT NOT NULL,
    labels_at     BIGINT NOT NULL CHECK (labels_at >= 0),
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL CHECK (max_attempts >= 1),
    timeout_ns    BIGINT NOT NULL CHECK (timeout_ns > 0),
    worker        TEXT,
    deadline_ns   BIGINT,
    created_ns    BIGINT NOT NULL,
    started_ns    BIGINT,
    finished_ns   BIGINT,
    labels_used   BIGINT,
    metric        DOUBLE PRECISION,
    model_version TEXT,
    detail        TEXT NOT NULL DEFAULT '',
    CHECK (state <> 'running' OR (worker IS NOT NULL AND deadline_ns IS NOT NULL))
)"""

_RETRAIN_INDEXES = (
    # One job at a time per model kind: at most one queued or running row per kind.
    "CREATE UNIQUE INDEX retrain_jobs_one_active ON retrain_jobs (kind)"
    " WHERE state IN ('queued', 'running')",
    "CREATE INDEX retrain_jobs_kind_state ON retrain_jobs (kind, state, id)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "frames, tasks, labels and queue settings",
        {
            Dialect.SQLITE: (
                _FRAMES,
                "CREATE TABLE tasks (\n    id INTEGER PRIMARY KEY AUTOINCREMENT," + _TASKS_COLUMNS,
                "CREATE TABLE labels (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,"
                + _LABELS_COLUMNS,
                _SETTINGS,
                *_INDEXES,
            ),
            Dialect.POSTGRES: (
                _FRAMES,
                "CREATE TABLE tasks (\n    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                + _TASKS_COLUMNS,
                "CREATE TABLE labels (\n    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                + _LABELS_COLUMNS,
                _SETTINGS,
                *_INDEXES,
            ),
        },
    ),
    Migration(
        2,
        "retrain jobs",
        {
            Dialect.SQLITE: (
                "CREATE TABLE retrain_jobs (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,"
                + _RETRAIN_JOBS_COLUMNS,
                *_RETRAIN_INDEXES,
            ),
            Dialect.POSTGRES: (
                "CREATE TABLE retrain_jobs (\n"
                "    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY," + _RETRAIN_JOBS_COLUMNS,
                *_RETRAIN_INDEXES,
            ),
        },
    ),
)


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """The version a fully migrated database is at."""
    return migrations[-1].version if migrations else 0


def _check_sequence(migrations: Sequence[Migration]) -> None:
    expected = list(range(1, len(migrations) + 1))
    got = [m.version for m in migrations]
    if got != expected:
        raise MigrationError(
            f"migrations must be numbered 1..{len(migrations)} in order, got {got}"
        )


def _applied(db: Database) -> dict[int, str]:
    res = db.execute("SELECT version, checksum FROM schema_migrations ORDER BY version")
    return {int(v): str(c) for v, c in res.rows}


def _has_migrations_table(db: Database) -> bool:
    if db.dialect is Dialect.SQLITE:
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    else:
        sql = "SELECT 1 FROM pg_catalog.pg_tables WHERE tablename = 'schema_migrations'"
        sql += " AND schemaname = current_schema()"
    return db.execute(sql).one() is not None


def _verify(db: Database, applied: Mapping[int, str], migrations: Sequence[Migration]) -> None:
    latest = latest_version(migrations)
    newest = max(applied, default=0)
    if newest > latest:
        raise MigrationError(
            f"{db.where} is at schema version {newest}, newer than this code knows "
            f"(up to {latest}): upgrade ingest_service before pointing it at this database"
        )
    for m in migrations:
        recorded = applied.get(m.version)
        if recorded is not None and recorded != m.checksum(db.dialect):
            raise MigrationError(
                f"{db.where}: migration {m.version} ({m.description}) was applied with "
                "different statements than this code has; migrations are append-only: "
                "restore the original and add a new migration instead"
            )


def current_version(db: Database) -> int:
    """The highest applied version; 0 for a database never migrated."""
    if not _has_migrations_table(db):
        return 0
    return max(_applied(db), default=0)


def migrate(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the missing migrations in order; return the versions applied (empty: no-op)."""
    _check_sequence(migrations)
    if db.in_transaction:
        raise MigrationError(f"{db.where}: migrate() must not run inside a transaction")
    applied_now: list[int] = []
    for m in migrations:
        try:
            with db.transaction():
                if db.dialect is Dialect.POSTGRES:
                    db.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK_KEY,))
                db.execute(_CREATE_MIGRATIONS_TABLE)
                applied = _applied(db)
                _verify(db, applied, migrations)
                if m.version in applied:
                    continue
                for stmt in m.statements[db.dialect]:
                    db.execute(stmt)
                db.execute(
                    "INSERT INTO schema_migrations (version, description, checksum, applied_ns)"
                    " VALUES (?, ?, ?, ?)",
                    (m.version, m.description, m.checksum(db.dialect), time.time_ns()),
                )
        except DatabaseError as exc:
            raise MigrationError(
                f"{db.where}: migration {m.version} ({m.description}) failed and was rolled "
                f"back: {exc}"
            ) from exc
        applied_now.append(m.version)
    return applied_now


def check_current(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> None:
    """Raise :class:`MigrationError` unless the database is exactly at the latest version."""
    applied = _applied(db) if _has_migrations_table(db) else {}
    _verify(db, applied, migrations)
    have, want = max(applied, default=0), latest_version(migrations)
    if have < want:
        raise MigrationError(
            f"{db.where} is at schema version {have}, this code needs {want}: run the "
            "migrations first (ingest_service.queue.migrate, or open the queue with migrate=True)"
        )
