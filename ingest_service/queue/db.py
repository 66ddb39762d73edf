"""A thin dialect layer over sqlite3 and psycopg 3: one code path for both backends.

:func:`connect` takes either a filesystem path (SQLite, the default) or a PostgreSQL DSN
(``postgresql://...``, ``postgres://...`` or a ``key=value`` conninfo string) and returns a
:class:`Database`. The label queue writes its SQL once, with ``?`` placeholders; this layer
translates them for psycopg, wraps driver errors in :class:`~ingest_service.errors.DatabaseError`
naming the database (never the password), and runs explicit transactions:

* SQLite: ``BEGIN IMMEDIATE`` takes the write lock up front, so two writers never deadlock on
  a lock upgrade; waiting for the lock is bounded by ``busy_timeout``. The database runs in
  WAL mode (readers never block the writer) with ``synchronous=FULL`` (a committed
  transaction survives a power cut: the Kafka offset is committed right after it) and
  foreign keys on.
* PostgreSQL: a ``READ COMMITTED`` transaction; the queue takes row locks where it needs them
  (``SELECT ... FOR UPDATE SKIP LOCKED``).

A :class:`Database` wraps one connection and is not thread-safe: use one per thread.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import sqlite3
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import psycopg
import psycopg.conninfo

from ingest_service.errors import DatabaseError, QueueError

__all__ = ["Database", "Dialect", "Result", "connect", "redact_dsn"]

log = logging.getLogger(__name__)

Params = Sequence[object]

DEFAULT_BUSY_TIMEOUT_S = 30.0
_PG_PREFIXES = ("postgresql://", "postgres://")


class Dialect(enum.StrEnum):
    """The SQL dialect a :class:`Database` speaks."""

    SQLITE = "sqlite"
    POSTGRES = "postgres"


@dataclass(frozen=True, slots=True)
class Result:
    """What a statement returned: its rows (empty for none) and the affected row count."""

    rows: list[tuple[Any, ...]]
    rowcount: int

    def one(self) -> tuple[Any, ...] | None:
        """The first row, or None."""
        return self.rows[0] if self.rows else None


def is_postgres_dsn(target: str | Path) -> bool:
    """Whether ``target`` names a PostgreSQL database rather than a SQLite file."""
    if isinstance(target, Path):
        return False
    text = target.strip()
    return text.startswith(_PG_PREFIXES) or ("=" in text and ("dbname" in text or "host" in text))


def redact_dsn(dsn: str) -> str:
    """``dsn`` as ``key=value`` conninfo with the password removed, for messages and logs."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<unparsable PostgreSQL DSN>"
    kept = {k: str(v) for k, v in parts.items() if k != "password" and v is not None}
    return psycopg.conninfo.make_conninfo("", **kept)


def connect(
    target: str | Path,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    application_name: str = "fleetal-ingest",
) -> Database:
    """Open ``target``: a SQLite file path (created if missing) or a PostgreSQL DSN.

    ``busy_timeout_s`` bounds how long a statement waits for a lock (SQLite ``busy_timeout``,
    PostgreSQL ``lock_timeout``) before failing with :class:`DatabaseError`.
    """
    if busy_timeout_s <= 0:
        raise ValueError(f"busy_timeout_s must be > 0, got {busy_timeout_s}")
    if is_postgres_dsn(target):
        dsn = str(target)
        where = f"PostgreSQL {redact_dsn(dsn)}"
        try:
            # Keep the DSN's own server options (search_path, ...) and add the lock timeout.
            options = psycopg.conninfo.conninfo_to_dict(dsn).get("options") or ""
            options = f"{options} -c lock_timeout={int(busy_timeout_s * 1000)}".strip()
            conn = psycopg.connect(
                dsn, autocommit=True, application_name=application_name, options=options
            )
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot connect to {where}: {_first_line(exc)}") from exc
        return Database(Dialect.POSTGRES, conn, where)
    memory = str(target) == ":memory:"  # private in-memory database: doctests, scratch use
    path = Path(target)
    where = f"SQLite {path}"
    try:
        if not memory:
            path.parent.mkdir(parents=True, exist_ok=True)
        sconn = sqlite3.connect(
            str(path),
            timeout=busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,  # one user at a time, but it may be handed to a thread
        )
    except (OSError, sqlite3.Error) as exc:
        raise DatabaseError(f"cannot open {where}: {exc}") from exc
    try:
        mode = sconn.execute("PRAGMA journal_mode=WAL").fetchone()
        if not memory and (mode is None or str(mode[0]).lower() != "wal"):
            raise DatabaseError(f"{where}: could not switch to WAL mode (got {mode!r})")
        sconn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        sconn.execute("PRAGMA synchronous=FULL")
        sconn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        sconn.close()
        raise DatabaseError(f"cannot set up {where}: {exc}") from exc
    except DatabaseError:
        sconn.close()
        raise
    return Database(Dialect.SQLITE, sconn, where)


class Database:
    """One connection to the label-queue database, in either dialect. Not thread-safe.

    Statements outside :meth:`transaction` run in autocommit mode (each its own transaction).
    """

    def __init__(
        self,
        dialect: Dialect,
        conn: sqlite3.Connection | psycopg.Connection[Any],
        where: str,
    ) -> None:
        self.dialect = dialect
        self.where = where  # "SQLite /path" or "PostgreSQL host=... dbname=..." (no password)
        self._conn = conn
        self._in_transaction = False

    def __repr__(self) -> str:
        return f"Database({self.where!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()

    @property
    def in_transaction(self) -> bool:
        """Whether a :meth:`transaction` block is open on this connection."""
        return self._in_transaction

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def execute(self, sql: str, params: Params = ()) -> Result:
        """Run one statement written with ``?`` placeholders; return its rows and rowcount."""
        try:
            if isinstance(self._conn, sqlite3.Connection):
                scur = self._conn.execute(sql, tuple(params))
                try:
                    return Result(scur.fetchall(), scur.rowcount)
                finally:
                    scur.close()
            with self._conn.cursor() as pcur:
                pcur.execute(_to_pyformat(sql), tuple(params))
                rows = pcur.fetchall() if pcur.description is not None else []
                return Result(rows, pcur.rowcount)
        except (sqlite3.Error, psycopg.Error) as exc:
            raise DatabaseError(f"{self.where}: {_first_line(exc)}") from exc

    def execute_atomic(self, sql: str, params: Params = ()) -> Result:
        """Run one writing statement as its own transaction, in the cheapest safe way.

        PostgreSQL: a single statement in autocommit mode is atomic, so no BEGIN / COMMIT
        round trips. SQLite: inside ``BEGIN IMMEDIATE``, so the statement waits for the write
        lock (``busy_timeout``) rather than failing when a WAL snapshot cannot be upgraded.
        Inside an open :meth:`transaction` it simply joins it.
        """
        if self.dialect is Dialect.POSTGRES or self._in_transaction:
            return self.execute(sql, params)
        with self.transaction():
            return self.execute(sql, params)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """A transaction: committed when the block ends, rolled back when it raises.

        SQLite takes the write lock at ``BEGIN IMMEDIATE``. Transactions do not nest: opening
        one inside another raises :class:`QueueError` rather than silently joining it.
        """
        if self._in_transaction:
            raise QueueError(f"{self.where}: a transaction is already open on this connection")
        self._in_transaction = True
        try:
            if isinstance(self._conn, sqlite3.Connection):
                yield from self._sqlite_transaction(self._conn)
            else:
                yield from self._pg_transaction(self._conn)
        finally:
            self._in_transaction = False

    def _sqlite_transaction(self, conn: sqlite3.Connection) -> Iterator[Database]:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise DatabaseError(f"{self.where}: cannot begin a transaction: {exc}") from exc
        try:
            yield self
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise DatabaseError(f"{self.where}: commit failed: {exc}") from exc

    def _pg_transaction(self, conn: psycopg.Connection[Any]) -> Iterator[Database]:
        try:
            tx = conn.transaction()
            tx.__enter__()
        except psycopg.Error as exc:
            raise DatabaseError(f"{self.where}: cannot begin a transaction: {exc}") from exc
        try:
            yield self
        except BaseException as exc:
            with contextlib.suppress(psycopg.Error):
                tx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        try:
            tx.__exit__(None, None, None)
        except psycopg.Error as exc:
            raise DatabaseError(f"{self.where}: commit failed: {_first_line(exc)}") from exc


def _to_pyformat(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s``; literal ``%`` doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
