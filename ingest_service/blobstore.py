"""Content-addressed storage for sensor blobs (camera images, LiDAR sweeps).

A blob is named by the sha256 of its bytes, so storing the same bytes twice stores them once
and a re-delivered Kafka message costs nothing. :class:`BlobRef` is what the label queue
records; the store that holds the bytes is configuration.

:class:`LocalBlobStore` (the default) keeps ``<root>/ab/cd/<sha256>``: two levels of 256
fan-out directories keep any one directory small (65 536 leaves; 10 M blobs is ~150 per
leaf). A blob is written to a temporary file in its final directory, fsynced, renamed into
place with :func:`os.replace` (atomic on POSIX), and the directory fsynced, so a power cut
leaves either the whole blob or no blob under its name. A failed write (disk full) removes
its temporary file before raising. Temporary files left by a crash (``.tmp-*``) are never
visible as blobs; :meth:`LocalBlobStore.sweep_partial` removes old ones.

:class:`S3BlobStore` is a documented stub: no S3 client (boto3, minio) is a dependency of this
project yet, and adding one is a decision for the project, not for this module.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ingest_service.errors import BlobCorruptError, BlobNotFound, BlobStoreError

__all__ = ["BlobRef", "BlobStore", "LocalBlobStore", "S3BlobStore"]

log = logging.getLogger(__name__)

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_TMP_PREFIX = ".tmp-"
_READ_CHUNK = 1 << 20
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True, slots=True)
class BlobRef:
    """The name of a stored blob: the hex sha256 of its bytes, and its size in bytes."""

    sha256: str
    size: int

    def __post_init__(self) -> None:
        if not _SHA_RE.fullmatch(self.sha256):
            raise ValueError(f"BlobRef.sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if self.size < 0:
            raise ValueError(f"BlobRef.size must be >= 0, got {self.size}")

    @classmethod
    def of(cls, data: bytes) -> BlobRef:
        """The reference ``data`` would be stored under."""
        return cls(hashlib.sha256(data).hexdigest(), len(data))

    def to_json(self) -> dict[str, str | int]:
        """A JSON-ready dict (what the label queue stores)."""
        return {"sha256": self.sha256, "size": self.size}

    @classmethod
    def from_json(cls, obj: object) -> BlobRef:
        """The inverse of :meth:`to_json`; raises ``ValueError`` for anything else."""
        if not isinstance(obj, dict):
            raise ValueError(f"a blob ref must be an object, got {obj!r}")
        sha, size = obj.get("sha256"), obj.get("size")
        if not isinstance(sha, str) or not isinstance(size, int) or isinstance(size, bool):
            raise ValueError(f"a blob ref needs sha256 (str) and size (int), got {obj!r}")
        return cls(sha, size)


@runtime_checkable
class BlobStore(Protocol):
    """Where sensor blobs live. Every implementation is content-addressed and idempotent."""

    def put(self, data: bytes) -> BlobRef:
        """Store ``data`` (once, whatever how often it is put) and return its reference."""
        ...

    def get(self, ref: BlobRef) -> bytes:
        """The stored bytes, verified against ``ref.sha256`` (:class:`BlobCorruptError`)."""
        ...

    def exists(self, ref: BlobRef) -> bool:
        """Whether a blob with this sha256 is stored."""
        ...

    def delete(self, ref: BlobRef) -> bool:
        """Remove the blob; False when it was not stored."""
        ...


class LocalBlobStore:
    """Blobs as files under ``root``: ``root/ab/cd/<sha256>`` (see the module docstring).

    ``fsync=False`` skips the file and directory fsyncs: for tests and replays that do not need
    to survive a power cut, never for the ingest service.
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BlobStoreError(f"cannot create blob store root {self.root}: {exc}") from exc

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def path_for(self, ref: BlobRef) -> Path:
        """Where the blob named by ``ref`` lives (whether or not it exists)."""
        sha = ref.sha256
        return self.root / sha[0:2] / sha[2:4] / sha

    def put(self, data: bytes) -> BlobRef:
        ref = BlobRef.of(data)
        path = self.path_for(ref)
        try:
            if path.stat().st_size == ref.size:
                return ref  # same name, same size: the same content (sha256)
            log.warning("blob %s has the wrong size; rewriting it", path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise BlobStoreError(f"cannot stat blob {path}: {exc}") from exc
        self._write_atomically(path, data)
        return ref

    def get(self, ref: BlobRef) -> bytes:
        path = self.path_for(ref)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(
                f"blob {ref.sha256} is not in {self.root} (looked at {path})"
            ) from None
        except OSError as exc:
            raise BlobStoreError(f"cannot read blob {path}: {exc}") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != ref.sha256:
            raise BlobCorruptError(str(path), ref.sha256, actual)
        return data

    def exists(self, ref: BlobRef) -> bool:
        return self.path_for(ref).is_file()

    def delete(self, ref: BlobRef) -> bool:
        path = self.path_for(ref)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise BlobStoreError(f"cannot delete blob {path}: {exc}") from exc
        return True

    def sweep_partial(self, older_than_s: float = 3600.0, *, now_s: float | None = None) -> int:
        """Remove temporary files left by a crash mid-write, older than ``older_than_s``.

        Returns how many were removed. A write in progress is younger than any sane
        ``older_than_s``, so this is safe to run while the store is in use.
        """
        now = time.time() if now_s is None else now_s
        removed = 0
        for tmp in self.root.glob(f"*/*/{_TMP_PREFIX}*"):
            try:
                if now - tmp.stat().st_mtime >= older_than_s:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise BlobStoreError(f"cannot remove partial blob {tmp}: {exc}") from exc
        return removed

    # --- internals ----------------------------------------------------------------------------

    def _write_atomically(self, path: Path, data: bytes) -> None:
        directory = path.parent
        tmp = directory / f"{_TMP_PREFIX}{path.name}.{os.getpid()}.{time.monotonic_ns()}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            if self.fsync:
                _fsync_dir(directory)
        except OSError as exc:
            _unlink_quietly(tmp)
            if exc.errno in _NO_SPACE:
                raise BlobStoreError(
                    f"blob store {self.root} is out of space ({os.strerror(exc.errno)}) while "
                    f"writing {len(data)} bytes to {path}; nothing was stored. Free space on "
                    "that filesystem or point the blob store root at a larger one; the frame "
                    "is not committed, so Kafka redelivers it after a restart"
                ) from exc
            raise BlobStoreError(f"cannot write blob {path}: {exc}") from exc


class S3BlobStore:
    """An S3-compatible blob store (AWS S3, MinIO, Ceph RGW): not implemented yet.

    The intended layout is the same as :class:`LocalBlobStore` under a bucket and prefix
    (``s3://bucket/prefix/ab/cd/<sha256>``), ``put`` a conditional PUT (``If-None-Match: *``)
    with the sha256 as ``x-amz-checksum-sha256``, ``get`` verified like the local store. It
    needs an S3 client (boto3 or minio), which is not a project dependency yet.
    """

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        raise NotImplementedError(
            f"S3BlobStore(bucket={bucket!r}, prefix={prefix!r}, endpoint_url={endpoint_url!r}) "
            "is not implemented: no S3 client (boto3 or minio) is a dependency of this project. "
            "Use the local blob store (a shared filesystem works for several ingest members), "
            "or add an S3 client dependency and implement this class (docs/label-queue.md)."
        )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:  # pragma: no cover - nothing more to do; the sweeper will retry
        log.error("could not remove partial blob %s: %s", path, exc)
