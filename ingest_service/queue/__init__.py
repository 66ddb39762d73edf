"""The label queue: frames, label tasks and labels in SQLite (default) or PostgreSQL.

>>> from ingest_service.queue import LabelQueue
>>> queue = LabelQueue.open(":memory:")  # a file path, or a postgresql:// DSN
>>> queue.stats()["new"]
0
>>> queue.close()

See ``docs/label-queue.md`` for the schema, the task states, priority with ageing, leases and
the idempotency guarantee.
"""

from ingest_service.queue.db import Database, Dialect, connect, redact_dsn
from ingest_service.queue.label_queue import (
    FrameRecord,
    LabeledItem,
    LabelQueue,
    QueueConfig,
    QueueTransaction,
    StoredFrame,
    Task,
    TaskState,
)
from ingest_service.queue.migrations import MIGRATIONS, Migration, current_version, migrate

__all__ = [
    "MIGRATIONS",
    "Database",
    "Dialect",
    "FrameRecord",
    "LabelQueue",
    "LabeledItem",
    "Migration",
    "QueueConfig",
    "QueueTransaction",
    "StoredFrame",
    "Task",
    "TaskState",
    "connect",
    "current_version",
    "migrate",
    "redact_dsn",
]
