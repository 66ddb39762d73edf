"""The exceptions of ``ingest_service``, one tree, translated once at the boundary.

::

    IngestError
    ├── QueueError                 the label queue (ingest_service.queue)
    │   ├── DatabaseError          sqlite3 / psycopg failure, names the database (no password)
    │   ├── MigrationError         schema missing, behind, ahead of the code, or edited
    │   ├── TaskNotFound           no task with that id
    │   └── LeaseLost              not the lease owner, or the lease ran out
    └── BlobStoreError             the blob store (ingest_service.blobstore), names the root/path
        ├── BlobNotFound           no blob with that sha256
        ├── BlobCorruptError       stored bytes do not hash to their name
        ├── BlobStoreUnavailableError  S3 endpoint unreachable, timed out, throttled, 5xx
        ├── BlobStoreAccessError   S3 credentials missing or refused, access denied
        └── BlobBucketNotFoundError    the configured S3 bucket does not exist

Driver exceptions (``sqlite3.Error``, ``psycopg.Error``, ``OSError``, botocore's) are wrapped
where they happen with ``raise ... from exc``, so the original stays in ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "BlobBucketNotFoundError",
    "BlobCorruptError",
    "BlobNotFound",
    "BlobStoreAccessError",
    "BlobStoreError",
    "BlobStoreUnavailableError",
    "DatabaseError",
    "IngestError",
    "LeaseLost",
    "MigrationError",
    "QueueError",
    "TaskNotFound",
]


class IngestError(Exception):
    """Base of every error raised on purpose by ``ingest_service``."""


class QueueError(IngestError):
    """The label queue could not do what was asked."""


class DatabaseError(QueueError):
    """The database backend failed (connection, lock timeout, disk, constraint)."""


class MigrationError(QueueError):
    """The schema cannot be brought to, or is not at, the version this code expects."""


class TaskNotFound(QueueError):  # noqa: N818 - the name the queue's API promises
    """No task with the given id."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id} does not exist")
        self.task_id = task_id


class LeaseLost(QueueError):  # noqa: N818 - the name the queue's API promises
    """The caller does not hold a live lease on the task (never had one, or it ran out)."""

    def __init__(self, task_id: int, labeler: str, detail: str) -> None:
        super().__init__(f"task {task_id}: labeler {labeler!r} holds no live lease: {detail}")
        self.task_id = task_id
        self.labeler = labeler
        self.detail = detail


class BlobStoreError(IngestError):
    """The blob store could not store, read or delete a blob."""


class BlobNotFound(BlobStoreError):  # noqa: N818 - pairs with TaskNotFound
    """No blob with the given sha256 is stored."""


class BlobCorruptError(BlobStoreError):
    """A stored blob's bytes do not hash to its name (bit rot, truncation, tampering)."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"blob {path} is corrupt: content sha256 is {actual}, expected {expected}; "
            "restore it from the source or delete it and re-ingest the frame"
        )
        self.path = path
        self.expected = expected
        self.actual = actual


class BlobStoreUnavailableError(BlobStoreError):
    """The blob store's endpoint did not answer usefully: unreachable, timed out, throttled, 5xx.

    Transient as far as the store can tell: the consumer retries the write with backoff.
    """


class BlobStoreAccessError(BlobStoreError):
    """The blob store refused the credentials or the operation (none, invalid, access denied)."""


class BlobBucketNotFoundError(BlobStoreError):
    """The configured bucket does not exist at the endpoint."""
