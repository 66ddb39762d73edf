"""The spool: a durable, bounded on-disk queue of selected frames waiting for the uplink.

The pipeline thread calls :meth:`Spool.put`; the sender thread (:mod:`edge_agent.sink`) calls
:meth:`Spool.lease`, then :meth:`Spool.ack` once Kafka acknowledged every chunk of a frame, or
:meth:`Spool.nack` when the send failed.

Guarantees (docs/spool-and-sink.md tells the whole story):

* **Whole entries or none.** Every ``put`` (with its evictions), ``lease``, ``ack`` and ``nack``
  is one SQLite transaction. SQLite in WAL mode never shows a torn entry after a crash. A frame
  is a metadata row in ``frames`` plus its payload in ``payloads`` (same id), always written and
  deleted together.
* **Survives kill -9 and power loss at commit granularity.** ``journal_mode=WAL`` with
  ``synchronous=FULL``: the WAL is fsynced at every commit, so a ``put`` that returned is on
  the disk. (``synchronous=NORMAL`` would only sync at checkpoints: consistent after a power
  cut, but the last puts could be gone, and this queue promises to lose no selected frame.)
* **At-least-once.** A frame leaves the spool only in the transaction of its ``ack``, and the
  sink acks only after Kafka acknowledged it. Entries that were ``inflight`` when the process
  died go back to ``pending`` on open and are sent again; acknowledged ones were deleted.
* **Bounded.** The sum of payload sizes never exceeds ``max_bytes``. A put that does not fit
  evicts the lowest-scored *pending* frames (never one that is being sent) that score strictly
  lower than the new frame; if that cannot make room, the new frame is rejected and nothing
  is evicted.
* **Lease order: highest score first**, ties oldest first. Under a long outage the spool holds
  the most valuable frames (eviction takes the least valuable); when the uplink comes back,
  possibly only for a short window, the most valuable leave first. Ingest does not need
  temporal order: it keys frames by (vehicle, drive, seq) and queues labels by priority.
* **Held frames.** A frame the broker refused for good (:meth:`Spool.hold`, called by the
  sink) is kept with ``state = 'held'`` and its error, counted, never leased by
  :meth:`Spool.lease` (so it cannot hold back the others), and evicted first when full;
  :meth:`Spool.lease_held` takes one out for a retry and :meth:`Spool.release_held` puts them
  all back to pending.
* **One owner.** The connection holds an exclusive lock (``locking_mode=EXCLUSIVE``), so a
  second process opening the same spool gets a :class:`SpoolError` instead of corrupting the
  in-memory totals.

Failures are :class:`SpoolError` (with ``kind`` and ``path``), never a bare ``sqlite3`` error:

* disk full (``SQLITE_FULL``): the transaction is rolled back, the spool is unchanged and
  stays usable; the message says to free space or lower ``max_bytes``;
* a corrupt database file: moved aside as ``<name>.corrupt-<UTC time>`` (with its ``-wal``),
  the readable rows are salvaged into a fresh spool, and the recovery is counted.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

from edge_agent.errors import EdgeAgentError

log = logging.getLogger(__name__)

__all__ = [
    "HeldFrame",
    "PutResult",
    "PutStatus",
    "Spool",
    "SpoolEntry",
    "SpoolError",
    "SpoolErrorKind",
    "SpoolStats",
]

PutStatus = Literal["stored", "duplicate", "conflict", "rejected"]
SpoolErrorKind = Literal["disk_full", "corrupt", "locked", "io"]

_SCHEMA_VERSION: Final = 2
_BUSY_TIMEOUT_MS: Final = 2_000
# After a checkpoint the WAL file is truncated back to this size, so a burst of large frames
# does not leave a large -wal file behind.
_JOURNAL_SIZE_LIMIT: Final = 64 * 1024 * 1024

# Payloads live in their own table, keyed by the frame's id. SQLite rewrites a whole row (its
# overflow pages included) when any column changes size, so with the payload in ``frames`` every
# lease and nack ('pending' -> 'inflight' -> 'pending', attempts + 1) would copy a multi-MB
# payload into the WAL again and fsync it. This way a payload is written once, by its put, and
# deleted once, in the same transaction as its metadata row.
_FRAMES_COLUMNS: Final = """
    id          INTEGER PRIMARY KEY,
    frame_key   TEXT    NOT NULL UNIQUE,
    score       REAL    NOT NULL,
    nbytes      INTEGER NOT NULL,
    created_ns  INTEGER NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'inflight', 'held')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT    NOT NULL DEFAULT '',
    held_ns     INTEGER
"""
_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS frames (
{_FRAMES_COLUMNS});
CREATE TABLE IF NOT EXISTS payloads (
    id          INTEGER PRIMARY KEY,  -- = frames.id, written and deleted with it
    payload     BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS frames_by_state_score ON frames (state, score, id);
CREATE INDEX IF NOT EXISTS frames_by_created ON frames (created_ns);
"""

# Version 1 had no 'held' state (its CHECK constraint refuses it) and no last_error / held_ns:
# the table is rebuilt, same ids (payloads stay as they are), inside the opening transaction.
_MIGRATE_1_TO_2: Final = f"""
CREATE TABLE frames_v2 (
{_FRAMES_COLUMNS});
INSERT INTO frames_v2 (id, frame_key, score, nbytes, created_ns, state, attempts)
    SELECT id, frame_key, score, nbytes, created_ns, state, attempts FROM frames;
DROP TABLE frames;
ALTER TABLE frames_v2 RENAME TO frames
"""


class SpoolError(EdgeAgentError):
    """The spool could not do what was asked; the message names the file and what to do.

    ``kind`` is one of ``disk_full``, ``corrupt``, ``locked``, ``io``. The agent loop catches
    this, counts it and goes on: the spool stays usable after every kind except ``locked``
    (raised by the constructor only).
    """

    def __init__(self, message: str, *, path: Path, kind: SpoolErrorKind) -> None:
        super().__init__(message)
        self.path = path
        self.kind: SpoolErrorKind = kind


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """A leased frame: its payload plus what the sender needs to know about it."""

    frame_key: str
    payload: bytes
    score: float
    created_ns: int
    attempts: int

    @property
    def nbytes(self) -> int:
        return len(self.payload)


@dataclass(frozen=True, slots=True)
class PutResult:
    """What :meth:`Spool.put` did.

    ``stored``: the frame is now on disk (``evicted_keys`` lists the frames removed to make
    room, lowest score first). ``duplicate``: an entry with this key and the same content was
    already spooled, and nothing changed. ``conflict``: an entry with this key but *different*
    content is spooled (two frames claim one identity: an error, logged; ``reason`` says
    which), nothing changed. ``rejected``: the frame did not fit (``reason`` says why),
    nothing changed.
    """

    status: PutStatus
    frame_key: str
    evicted_keys: tuple[str, ...] = ()
    evicted_bytes: int = 0
    reason: str = ""

    @property
    def stored(self) -> bool:
        return self.status == "stored"

    @property
    def evicted(self) -> int:
        return len(self.evicted_keys)


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot for metrics. Totals (``*_total``) count since this :class:`Spool` was opened."""

    frames: int
    bytes: int
    max_bytes: int
    pending: int
    inflight: int
    oldest_age_s: float
    stored_total: int
    duplicate_total: int
    rejected_total: int
    evicted_total: int
    evicted_bytes_total: int
    acked_total: int
    nacked_total: int
    dropped_total: int
    errors_total: int
    corrupt_recoveries_total: int
    salvaged_total: int
    # Frames set aside because they can never be sent as they are (see Spool.hold).
    held: int = 0
    held_bytes: int = 0
    held_total: int = 0


@dataclass(frozen=True, slots=True)
class HeldFrame:
    """A frame the sink set aside (``state = 'held'``): why, since when, after how many tries."""

    frame_key: str
    nbytes: int
    score: float
    attempts: int
    error: str
    held_ns: int


def _errcode(exc: sqlite3.Error) -> int:
    code = getattr(exc, "sqlite_errorcode", None)
    return int(code) & 0xFF if code is not None else -1


def _is_corruption(exc: sqlite3.Error) -> bool:
    if _errcode(exc) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def _is_full(exc: sqlite3.Error) -> bool:
    return _errcode(exc) == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc).lower()


def _is_busy(exc: sqlite3.Error) -> bool:
    return _errcode(exc) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc)


def _add_content_digest(conn: sqlite3.Connection) -> None:
    """Spools written before the key-collision check get the column (empty: not compared)."""
    columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(frames)")}
    if "content_digest" not in columns:
        conn.execute("ALTER TABLE frames ADD COLUMN content_digest TEXT NOT NULL DEFAULT ''")


class _CorruptDatabaseError(Exception):
    """Internal: the database file failed its check or a read hit a corrupt page."""


class Spool:
    """A durable, bounded, thread-safe queue of frames, highest score out first.

    ``max_bytes`` bounds the sum of payload sizes (the file adds a few percent of SQLite pages
    and the WAL, which is truncated to 64 MiB after checkpoints). ``clock`` returns wall-clock
    nanoseconds; it stamps ``created_ns`` and gives the age of the oldest entry.

    One connection, serialised by a lock: the pipeline thread's ``put`` waits at most for one
    ``lease``/``ack`` transaction of the sender thread, never for the network.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        max_bytes: int,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self._frames = 0
        self._bytes = 0
        self._stored = 0
        self._duplicates = 0
        self._rejected = 0
        self._evicted = 0
        self._evicted_bytes = 0
        self._acked = 0
        self._nacked = 0
        self._dropped = 0
        self._errors = 0
        self._corrupt_recoveries = 0
        self._salvaged = 0
        self._held_total = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._open_or_recover()
        if self._bytes > self.max_bytes:
            self._shrink_to_bound()

    # -- opening ---------------------------------------------------------------------------

    def _open_or_recover(self) -> sqlite3.Connection:
        try:
            return self._open()
        except _CorruptDatabaseError as exc:
            log.error("spool %s is corrupt (%s); moving it aside", self.path, exc)
            moved = self._move_aside()
            conn = self._open()
            self._corrupt_recoveries += 1
            self._salvage(moved, conn)
            return conn

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._error(exc, "opening") from exc
        try:
            self._configure(conn)
            # A write at open takes the exclusive lock now, not at the first put.
            conn.execute("BEGIN IMMEDIATE")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            has_frames = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'frames'"
            ).fetchone()
            if has_frames and version < 2:
                for statement in _MIGRATE_1_TO_2.strip().split(";"):
                    if statement.strip():
                        conn.execute(statement)
                log.info("spool %s: schema upgraded to version %d", self.path, _SCHEMA_VERSION)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    conn.execute(statement)
            _add_content_digest(conn)
            requeued = conn.execute(
                "UPDATE frames SET state = 'pending' WHERE state = 'inflight'"
            ).rowcount
            frames, nbytes = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM frames"
            ).fetchone()
            conn.execute("COMMIT")
        except _CorruptDatabaseError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            if _is_corruption(exc):
                raise _CorruptDatabaseError(str(exc)) from exc
            raise self._error(exc, "opening") from exc
        self._frames = int(frames)
        self._bytes = int(nbytes)
        if requeued:
            log.warning(
                "spool %s: %d frames were in flight when the agent stopped; they will be resent",
                self.path,
                requeued,
            )
        log.info("spool %s opened: %d frames, %d bytes", self.path, self._frames, self._bytes)
        return conn

    @staticmethod
    def _configure(conn: sqlite3.Connection) -> None:
        # EXCLUSIVE before the first WAL access: no shared-memory index, one owner process.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch to WAL journal mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
        result = conn.execute("PRAGMA quick_check").fetchall()
        if [tuple(r) for r in result] != [("ok",)]:
            problems = "; ".join(str(r[0]) for r in result[:3])
            raise _CorruptDatabaseError(f"quick_check: {problems}")

    def _shrink_to_bound(self) -> None:
        """After ``max_bytes`` was lowered: evict the lowest-scored frames until within it."""
        conn = self._conn
        victims: list[tuple[int, str, int]] = []
        excess = self._bytes - self.max_bytes
        try:
            conn.execute("BEGIN IMMEDIATE")
            for row_id, key, size in conn.execute(
                "SELECT id, frame_key, nbytes FROM frames ORDER BY score ASC, id ASC"
            ):
                if excess <= 0:
                    break
                victims.append((int(row_id), str(key), int(size)))
                excess -= int(size)
            ids = [(v[0],) for v in victims]
            conn.executemany("DELETE FROM frames WHERE id = ?", ids)
            conn.executemany("DELETE FROM payloads WHERE id = ?", ids)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail(exc, "shrinking to the configured max_bytes") from exc
        freed = sum(v[2] for v in victims)
        self._frames -= len(victims)
        self._bytes -= freed
        self._evicted += len(victims)
        self._evicted_bytes += freed
        log.warning(
            "spool %s holds more than max_bytes=%d: evicted the %d lowest-scored frames (%d bytes)",
            self.path,
            self.max_bytes,
            len(victims),
            freed,
        )

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock() / 1e9))
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        for suffix in ("-wal", "-shm", "-journal"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.replace(target.with_name(target.name + suffix))
        if self.path.exists():
            self.path.replace(target)
        log.error("spool: corrupt database moved to %s; starting a fresh spool", target)
        return target

    def _salvage(self, moved: Path, conn: sqlite3.Connection) -> None:
        """Copy the rows of a moved-aside corrupt spool that can still be read whole."""
        rows: dict[int, tuple[str, float, bytes, int, int]] = {}
        try:
            old = sqlite3.connect(f"file:{moved}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error:
            return
        try:
            ids: list[int] = []
            for order in ("ASC", "DESC"):  # read from both ends: a bad page stops a scan
                try:
                    for (row_id,) in old.execute(f"SELECT id FROM frames ORDER BY id {order}"):
                        ids.append(int(row_id))
                except sqlite3.Error:
                    pass
            for row_id in sorted(set(ids)):
                try:
                    row = old.execute(
                        "SELECT f.frame_key, f.score, p.payload, f.nbytes, f.created_ns, "
                        "f.attempts FROM frames AS f JOIN payloads AS p ON p.id = f.id "
                        "WHERE f.id = ?",
                        (row_id,),
                    ).fetchone()
                except sqlite3.Error:
                    continue
                if row is None:
                    continue
                key, score, payload, nbytes, created_ns, attempts = row
                if (
                    isinstance(key, str)
                    and isinstance(payload, bytes)
                    and isinstance(score, float | int)
                    and math.isfinite(score)
                    and nbytes == len(payload)
                ):
                    rows[row_id] = (key, float(score), payload, int(created_ns), int(attempts))
        finally:
            old.close()
        if not rows:
            return
        # Highest score first until the bound is reached: the same policy as eviction.
        budget = self.max_bytes
        kept: list[tuple[str, float, bytes, int, int]] = []
        for entry in sorted(rows.values(), key=lambda r: (-r[1], r[3])):
            if len(entry[2]) <= budget:
                kept.append(entry)
                budget -= len(entry[2])
        try:
            conn.execute("BEGIN IMMEDIATE")
            for key, score, payload, created_ns, attempts in kept:
                row_id = conn.execute(
                    "INSERT OR IGNORE INTO frames (frame_key, score, nbytes, created_ns, attempts) "
                    "VALUES (?, ?, ?, ?, ?) RETURNING id",
                    (key, score, len(payload), created_ns, attempts),
                ).fetchone()
                if row_id is not None:
                    conn.execute(
                        "INSERT INTO payloads (id, payload) VALUES (?, ?)", (row_id[0], payload)
                    )
            frames, nbytes = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM frames"
            ).fetchone()
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            log.error("spool %s: salvage from %s failed: %s", self.path, moved, exc)
            return
        self._frames, self._bytes = int(frames), int(nbytes)
        self._salvaged += len(kept)
        log.warning("spool %s: salvaged %d frames from %s", self.path, len(kept), moved)

    # -- errors ----------------------------------------------------------------------------

    def _error(self, exc: sqlite3.Error, doing: str) -> SpoolError:
        if _is_full(exc):
            return SpoolError(
                f"spool {self.path}: disk full while {doing} ({exc}). Nothing was changed. "
                f"Free space on the filesystem holding {self.path.parent}, or lower the spool's "
                f"max_bytes (now {self.max_bytes}) below the free space.",
                path=self.path,
                kind="disk_full",
            )
        if _is_corruption(exc):
            return SpoolError(
                f"spool {self.path}: database corrupt while {doing} ({exc}); it was moved aside "
                "and a fresh spool started with the frames that could be read.",
                path=self.path,
                kind="corrupt",
            )
        if _is_busy(exc):
            return SpoolError(
                f"spool {self.path} is locked by another process ({exc}): only one edge-agent "
                "may use a spool; stop the other one or give this one its own spool path.",
                path=self.path,
                kind="locked",
            )
        return SpoolError(
            f"spool {self.path}: I/O error while {doing} ({exc}); check the disk.",
            path=self.path,
            kind="io",
        )

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("spool: rollback failed")

    def _fail(self, exc: sqlite3.Error, doing: str) -> SpoolError:
        """Roll back, recover from corruption if that is what happened, and build the error."""
        self._errors += 1
        self._rollback(self._conn)
        error = self._error(exc, doing)
        if error.kind == "corrupt":
            log.error("spool %s: corruption detected while %s: %s", self.path, doing, exc)
            self._conn.close()
            moved = self._move_aside()
            self._frames = self._bytes = 0
            self._conn = self._open()
            self._corrupt_recoveries += 1
            self._salvage(moved, self._conn)
        return error

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"spool {self.path} is closed")

    # -- the queue -------------------------------------------------------------------------

    def put(
        self, frame_key: str, payload: bytes, score: float, *, content_digest: str = ""
    ) -> PutResult:
        """Store a frame durably (one fsynced transaction), evicting lower-scored ones if full.

        Idempotent by ``frame_key``: a key already spooled is reported ``duplicate`` when its
        ``content_digest`` (a digest of the sensor data, not of the payload, which carries the
        selector's decision) is the same or either one is empty, and ``conflict`` (logged as
        an error) when the two differ.
        Raises :class:`SpoolError` on disk full or I/O failure (nothing changed) and
        ``ValueError`` on a bad argument.
        """
        if not frame_key:
            raise ValueError("frame_key must be a non-empty string")
        if not math.isfinite(score):
            raise ValueError(f"score must be finite, got {score!r}")
        payload = bytes(payload)
        nbytes = len(payload)
        with self._lock:
            self._check_open()
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                existing = conn.execute(
                    "SELECT content_digest FROM frames WHERE frame_key = ?", (frame_key,)
                ).fetchone()
                if existing is not None:
                    conn.execute("COMMIT")
                    if content_digest and existing[0] and existing[0] != content_digest:
                        log.error(
                            "spool %s: key %s is already spooled with different content "
                            "(digest %s, this frame %s): two frames claim one identity; the "
                            "new one is not stored. Give each drive its own drive_id",
                            self.path,
                            frame_key,
                            existing[0][:12],
                            content_digest[:12],
                        )
                        return PutResult(
                            "conflict",
                            frame_key,
                            reason=f"key {frame_key} is spooled with different content",
                        )
                    self._duplicates += 1
                    return PutResult("duplicate", frame_key)
                victims: list[tuple[int, str, int]] = []
                if nbytes > self.max_bytes:
                    conn.execute("COMMIT")
                    self._rejected += 1
                    return PutResult(
                        "rejected",
                        frame_key,
                        reason=f"frame of {nbytes} bytes exceeds the spool bound {self.max_bytes}",
                    )
                need = self._bytes + nbytes - self.max_bytes
                if need > 0:
                    freed = 0
                    # Held frames first (they cannot be sent as they are), then the pending
                    # ones scoring lower than the new frame, lowest first.
                    cursor = conn.execute(
                        "SELECT id, frame_key, nbytes FROM frames "
                        "WHERE state = 'held' OR (state = 'pending' AND score < ?) "
                        "ORDER BY state = 'pending', score ASC, id ASC",
                        (score,),
                    )
                    for row_id, key, size in cursor:
                        victims.append((int(row_id), str(key), int(size)))
                        freed += int(size)
                        if freed >= need:
                            break
                    cursor.close()
                    if freed < need:
                        conn.execute("COMMIT")
                        self._rejected += 1
                        return PutResult(
                            "rejected",
                            frame_key,
                            reason=(
                                f"spool full ({self._bytes}/{self.max_bytes} bytes) and the "
                                f"held frames and the pending ones scoring below {score:g} "
                                f"free only {freed} "
                                f"of the {need} bytes needed"
                            ),
                        )
                    ids = [(v[0],) for v in victims]
                    conn.executemany("DELETE FROM frames WHERE id = ?", ids)
                    conn.executemany("DELETE FROM payloads WHERE id = ?", ids)
                row_id = conn.execute(
                    "INSERT INTO frames (frame_key, score, nbytes, created_ns, content_digest) "
                    "VALUES (?, ?, ?, ?, ?) RETURNING id",
                    (frame_key, float(score), nbytes, self._clock(), content_digest),
                ).fetchone()[0]
                conn.execute("INSERT INTO payloads (id, payload) VALUES (?, ?)", (row_id, payload))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._fail(exc, f"storing frame {frame_key} ({nbytes} bytes)") from exc
            evicted_bytes = sum(v[2] for v in victims)
            self._frames += 1 - len(victims)
            self._bytes += nbytes - evicted_bytes
            self._stored += 1
            self._evicted += len(victims)
            self._evicted_bytes += evicted_bytes
        if victims:
            log.info(
                "spool %s full: evicted %d lower-scored frames (%d bytes) for %s",
                self.path,
                len(victims),
                evicted_bytes,
                frame_key,
            )
        return PutResult(
            "stored",
            frame_key,
            evicted_keys=tuple(v[1] for v in victims),
            evicted_bytes=evicted_bytes,
        )

    def lease(self, max_items: int, max_bytes: int) -> list[SpoolEntry]:
        """Mark up to ``max_items`` pending frames in flight and return them, best first.

        Stops before ``max_bytes`` of payload would be exceeded, but always returns at least one
        frame when any is pending (a frame larger than ``max_bytes`` must still leave).
        """
        if max_items <= 0 or max_bytes <= 0:
            raise ValueError("max_items and max_bytes must be positive")
        with self._lock:
            self._check_open()
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                chosen: list[int] = []
                total = 0
                cursor = conn.execute(
                    "SELECT id, nbytes FROM frames WHERE state = 'pending' "
                    "ORDER BY score DESC, id ASC"
                )
                for row_id, size in cursor:
                    if chosen and total + int(size) > max_bytes:
                        break
                    chosen.append(int(row_id))
                    total += int(size)
                    if len(chosen) >= max_items:
                        break
                cursor.close()
                entries: list[SpoolEntry] = []
                for row_id in chosen:
                    key, payload, score, created_ns, attempts = conn.execute(
                        "SELECT f.frame_key, p.payload, f.score, f.created_ns, f.attempts "
                        "FROM frames AS f JOIN payloads AS p ON p.id = f.id WHERE f.id = ?",
                        (row_id,),
                    ).fetchone()
                    entries.append(
                        SpoolEntry(str(key), bytes(payload), float(score), created_ns, attempts)
                    )
                conn.executemany(
                    "UPDATE frames SET state = 'inflight' WHERE id = ?", [(i,) for i in chosen]
                )
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._fail(exc, "leasing frames") from exc
            return entries

    def ack(self, frame_keys: Iterable[str]) -> int:
        """Delete frames that Kafka acknowledged; returns how many were deleted."""
        keys = list(frame_keys)
        if not keys:
            return 0
        with self._lock:
            self._check_open()
            deleted, _ = self._delete(keys, "acknowledging frames")
            self._acked += deleted
        return deleted

    def drop(self, frame_keys: Iterable[str]) -> int:
        """Delete frames that can never be sent (the sink's dead-letter path); counted."""
        keys = list(frame_keys)
        if not keys:
            return 0
        with self._lock:
            self._check_open()
            deleted, _ = self._delete(keys, "dropping frames")
            self._dropped += deleted
        return deleted

    def _delete(self, keys: Sequence[str], doing: str) -> tuple[int, int]:
        conn = self._conn
        deleted = freed = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            for key in keys:
                row = conn.execute(
                    "DELETE FROM frames WHERE frame_key = ? RETURNING id, nbytes", (key,)
                ).fetchone()
                if row is not None:
                    conn.execute("DELETE FROM payloads WHERE id = ?", (row[0],))
                    deleted += 1
                    freed += int(row[1])
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail(exc, doing) from exc
        self._frames -= deleted
        self._bytes -= freed
        return deleted, freed

    def nack(self, frame_keys: Iterable[str], *, count_attempt: bool = True) -> int:
        """Return in-flight frames to pending with ``attempts + 1``; returns how many.

        ``count_attempt=False`` leaves ``attempts`` alone: the sink's choice when the link, not
        the frame, failed (nothing in the round was delivered).
        """
        step = 1 if count_attempt else 0
        keys = list(frame_keys)
        if not keys:
            return 0
        with self._lock:
            self._check_open()
            conn = self._conn
            changed = 0
            try:
                conn.execute("BEGIN IMMEDIATE")
                for key in keys:
                    changed += conn.execute(
                        "UPDATE frames SET state = 'pending', attempts = attempts + ? "
                        "WHERE frame_key = ? AND state = 'inflight'",
                        (step, key),
                    ).rowcount
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._fail(exc, "returning frames to pending") from exc
            self._nacked += changed
        return changed

    def hold(self, errors: Mapping[str, str]) -> int:
        """Set in-flight frames aside (``state = 'held'``, ``attempts + 1``), with their error.

        A held frame is kept (and counted) but never leased again by :meth:`lease`, so a frame
        the broker refuses for good cannot hold back the others; :meth:`lease_held` takes one out
        for a retry and :meth:`release_held` puts them all back. Held frames are the first to
        be evicted when the spool is full. Returns how many were held.
        """
        if not errors:
            return 0
        now = self._clock()
        with self._lock:
            self._check_open()
            conn = self._conn
            changed = 0
            try:
                conn.execute("BEGIN IMMEDIATE")
                for key, error in errors.items():
                    changed += conn.execute(
                        "UPDATE frames SET state = 'held', attempts = attempts + 1, "
                        "last_error = ?, held_ns = ? WHERE frame_key = ? AND state = 'inflight'",
                        (error, now, key),
                    ).rowcount
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._fail(exc, "holding undeliverable frames") from exc
            self._held_total += changed
        return changed

    def lease_key(self, frame_key: str) -> SpoolEntry | None:
        """Lease one given pending frame (the sink retries a suspect alone), or None."""
        return self._lease_one(
            "f.frame_key = ? AND f.state = 'pending'", (frame_key,), f"leasing frame {frame_key}"
        )

    def lease_held(self) -> SpoolEntry | None:
        """Lease the held frame that was set aside longest ago (a retry), or None."""
        return self._lease_one(
            "f.state = 'held' ORDER BY f.held_ns ASC, f.id ASC LIMIT 1", (), "leasing a held frame"
        )

    def _lease_one(self, where: str, params: tuple[object, ...], what: str) -> SpoolEntry | None:
        """Mark the first frame matching ``where`` (SQL after WHERE) inflight; it, or None."""
        with self._lock:
            self._check_open()
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                row = conn.execute(
                    "SELECT f.id, f.frame_key, p.payload, f.score, f.created_ns, f.attempts "
                    f"FROM frames AS f JOIN payloads AS p ON p.id = f.id WHERE {where}",
                    params,
                ).fetchone()
                if row is not None:
                    conn.execute("UPDATE frames SET state = 'inflight' WHERE id = ?", (row[0],))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._fail(exc, what) from exc
        if row is None:
            return None
        _, key, payload, score, created_ns, attempts = row
        return SpoolEntry(str(key), bytes(payload), float(score), int(created_ns), int(attempts))

    def release_held(self) -> int:
        """Put every held frame back to pending (the cause was fixed); returns how many."""
        with self._lock:
            self._check_open()
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                changed = self._conn.execute(
                    "UPDATE frames SET state = 'pending', held_ns = NULL WHERE state = 'held'"
                ).rowcount
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._fail(exc, "releasing held frames") from exc
        return int(changed)

    def held_frames(self, limit: int = 100) -> list[HeldFrame]:
        """The held frames, longest held first (at most ``limit``)."""
        with self._lock:
            self._check_open()
            try:
                rows = self._conn.execute(
                    "SELECT frame_key, nbytes, score, attempts, last_error, held_ns FROM frames "
                    "WHERE state = 'held' ORDER BY held_ns ASC, id ASC LIMIT ?",
                    (limit,),
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._fail(exc, "listing held frames") from exc
        return [
            HeldFrame(str(k), int(n), float(sc), int(a), str(e), int(h or 0))
            for k, n, sc, a, e, h in rows
        ]

    # -- inspection ------------------------------------------------------------------------

    def keys(self, state: Literal["pending", "inflight", "held"] | None = None) -> list[str]:
        """The spooled frame keys (optionally of one state), in lease order."""
        query = "SELECT frame_key FROM frames"
        params: tuple[str, ...] = ()
        if state is not None:
            query += " WHERE state = ?"
            params = (state,)
        query += " ORDER BY score DESC, id ASC"
        with self._lock:
            self._check_open()
            try:
                return [str(r[0]) for r in self._conn.execute(query, params)]
            except sqlite3.Error as exc:
                raise self._fail(exc, "listing frames") from exc

    def stats(self) -> SpoolStats:
        """Sizes, age of the oldest entry and totals, computed now (cheap: two index reads)."""
        with self._lock:
            self._check_open()
            try:
                # The oldest frame that can still leave (held ones are reported apart).
                oldest, inflight = self._conn.execute(
                    "SELECT (SELECT created_ns FROM frames WHERE state != 'held' "
                    "ORDER BY created_ns LIMIT 1), "
                    "(SELECT COUNT(*) FROM frames WHERE state = 'inflight')"
                ).fetchone()
                held, held_bytes = self._conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM frames WHERE state = 'held'"
                ).fetchone()
            except sqlite3.Error as exc:
                raise self._fail(exc, "reading statistics") from exc
            age = 0.0 if oldest is None else max(0.0, (self._clock() - int(oldest)) / 1e9)
            return SpoolStats(
                frames=self._frames,
                bytes=self._bytes,
                max_bytes=self.max_bytes,
                pending=self._frames - int(inflight) - int(held),
                inflight=int(inflight),
                oldest_age_s=age,
                stored_total=self._stored,
                duplicate_total=self._duplicates,
                rejected_total=self._rejected,
                evicted_total=self._evicted,
                evicted_bytes_total=self._evicted_bytes,
                acked_total=self._acked,
                nacked_total=self._nacked,
                dropped_total=self._dropped,
                errors_total=self._errors,
                corrupt_recoveries_total=self._corrupt_recoveries,
                salvaged_total=self._salvaged,
                held=int(held),
                held_bytes=int(held_bytes),
                held_total=self._held_total,
            )

    def close(self) -> None:
        """Close the database (idempotent). In-flight entries go back to pending on next open."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.close()
            except sqlite3.Error:
                log.exception("spool %s: error while closing", self.path)

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
