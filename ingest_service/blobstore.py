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

:class:`S3BlobStore` keeps the same layout in an S3-compatible bucket (AWS S3, MinIO, Ceph
RGW) through boto3: ``s3://<bucket>/<prefix>/ab/cd/<sha256>``. :func:`open_blob_store` builds
the one ``[blobs]`` configures.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import re
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from botocore.exceptions import BotoCoreError, ClientError

from ingest_service.config import (
    IngestConfig,
    S3Section,
    apply_aws_environment,
    load_ingest_config,
)
from ingest_service.errors import (
    BlobBucketNotFoundError,
    BlobCorruptError,
    BlobNotFound,
    BlobStoreAccessError,
    BlobStoreError,
    BlobStoreUnavailableError,
)

__all__ = [
    "BlobRef",
    "BlobStore",
    "LocalBlobStore",
    "S3BlobStore",
    "blob_key",
    "blob_store_spec",
    "open_blob_store",
    "open_blob_store_spec",
]

log = logging.getLogger(__name__)

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_TMP_PREFIX = ".tmp-"
_READ_CHUNK = 1 << 20
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

_DEFAULT_REGION = "us-east-1"
_BOTO_ERRORS = (BotoCoreError, ClientError)
_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "AuthorizationHeaderMalformed",
    }
)
_DIGEST_CODES = frozenset(
    {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidChecksum"}
)
_THROTTLE_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}
)


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


def blob_key(ref: BlobRef) -> str:
    """The blob's place under the store's root (local directory, or S3 bucket and prefix):
    ``aa/bb/<sha256>``, the same in every backend, so one base URL serves either.

    >>> blob_key(BlobRef("ab" * 32, 3)).split("/")[:2]
    ['ab', 'ab']
    """
    sha = ref.sha256
    return f"{sha[0:2]}/{sha[2:4]}/{sha}"


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
        return self.root / blob_key(ref)

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
    """Blobs as objects in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW), through boto3.

    Keys are ``<prefix>/ab/cd/<sha256>`` (the local layout under a prefix). ``put`` asks first
    (``HEAD``) and uploads only what is missing or has the wrong size, with the sha256
    (``x-amz-checksum-sha256``) and the MD5 (``Content-MD5``, which every S3 implementation
    checks) of the bytes, so the server refuses a body damaged in transit. A PUT that returned
    is durable: there is nothing to fsync. ``get`` re-hashes what came back.

    Errors are translated here, once, into :class:`BlobStoreError` subclasses that name the
    bucket, key and endpoint and say what to do; credentials never appear in them. Requests
    are bounded: ``connect_timeout_s`` and ``read_timeout_s`` per attempt, ``max_attempts``
    attempts (botocore's standard retry mode, exponential backoff with jitter).

    The boto3 client is thread-safe; the consumer's blob workers share it
    (``max_pool_connections`` connections).
    """

    def __init__(self, settings: S3Section, *, max_pool_connections: int = 10) -> None:
        if not settings.bucket:
            raise BlobStoreError('S3BlobStore needs a bucket ([blobs.s3] bucket = "...")')
        import boto3
        from botocore.config import Config

        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.endpoint = _redact_url(settings.endpoint_url) or "AWS S3"
        self.region = settings.region or _DEFAULT_REGION
        self._bucket_checked = False
        config = Config(
            region_name=self.region,
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
            retries={"max_attempts": settings.max_attempts, "mode": "standard"},
            max_pool_connections=max_pool_connections,
            s3={"addressing_style": settings.addressing_style},
            # the request carries our own sha256 and MD5; the response is re-hashed by get()
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(
            aws_access_key_id=settings.access_key_id or None,
            aws_secret_access_key=settings.secret_access_key or None,
            aws_session_token=settings.session_token or None,
            region_name=self.region,
        )
        self.client: Any = session.client(
            "s3",
            endpoint_url=settings.endpoint_url or None,
            verify=str(settings.ca_bundle) if settings.ca_bundle is not None else None,
            config=config,
        )

    def __repr__(self) -> str:
        return (
            f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint={self.endpoint!r})"
        )

    def key_for(self, ref: BlobRef) -> str:
        """The object key of the blob named by ``ref`` (whether or not it exists)."""
        leaf = blob_key(ref)
        return f"{self.prefix}/{leaf}" if self.prefix else leaf

    def url_for(self, ref: BlobRef) -> str:
        """``s3://bucket/key``, for messages and logs."""
        return f"s3://{self.bucket}/{self.key_for(ref)}"

    def put(self, data: bytes) -> BlobRef:
        digest = hashlib.sha256(data).digest()
        ref = BlobRef(digest.hex(), len(data))
        key = self.key_for(ref)
        size = self._head_size(key)
        if size == ref.size:
            return ref  # same name, same size: the same content (sha256)
        if size is not None:
            log.warning(
                "blob %s has the wrong size (%d, expected %d); rewriting it",
                self.url_for(ref),
                size,
                ref.size,
            )
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentLength=len(data),
                ContentType="application/octet-stream",
                ChecksumSHA256=base64.b64encode(digest).decode("ascii"),
                ContentMD5=base64.b64encode(md5).decode("ascii"),
            )
        except _BOTO_ERRORS as exc:
            raise self._translate(exc, "upload", key, len(data)) from exc
        return ref

    def get(self, ref: BlobRef) -> bytes:
        key = self.key_for(ref)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            with response["Body"] as body:
                data: bytes = body.read()
        except _BOTO_ERRORS as exc:
            raise self._translate(exc, "download", key) from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != ref.sha256:
            raise BlobCorruptError(
                f"s3://{self.bucket}/{key} (at {self.endpoint})", ref.sha256, actual
            )
        return data

    def exists(self, ref: BlobRef) -> bool:
        return self._head_size(self.key_for(ref)) is not None

    def delete(self, ref: BlobRef) -> bool:
        key = self.key_for(ref)
        if self._head_size(key) is None:
            return False  # DELETE of a missing key succeeds too: ask first to answer False
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except _BOTO_ERRORS as exc:
            raise self._translate(exc, "delete", key) from exc
        return True

    def check(self) -> str:
        """Probe the bucket: it exists, and a small object can be written, read and deleted.

        Returns a one-line report; raises :class:`BlobStoreError` naming what failed.
        """
        self._check_bucket()
        probe = (
            f"{self.prefix}/.check-{uuid.uuid4().hex}"
            if self.prefix
            else (f".check-{uuid.uuid4().hex}")
        )
        try:
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
            self.client.get_object(Bucket=self.bucket, Key=probe)["Body"].close()
            self.client.delete_object(Bucket=self.bucket, Key=probe)
        except _BOTO_ERRORS as exc:
            raise self._translate(exc, "write, read and delete a probe object", probe) from exc
        return f"bucket s3://{self.bucket}/{self.prefix} at {self.endpoint} is writable"

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    # --- internals ----------------------------------------------------------------------------

    def _head_size(self, key: str) -> int | None:
        """The stored object's size, or None when there is no object under ``key``."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except _BOTO_ERRORS as exc:
            if _status(exc) == 404:
                # HEAD has no body: a missing key and a missing bucket both say 404. Tell them
                # apart once, so a wrong bucket name is not silently "no such blob".
                if not self._bucket_checked:
                    self._check_bucket()
                return None
            raise self._translate(exc, "look up", key) from exc
        self._bucket_checked = True
        return int(head["ContentLength"])

    def _check_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except _BOTO_ERRORS as exc:
            raise self._translate(exc, "look up the bucket", None) from exc
        self._bucket_checked = True

    def _translate(
        self, exc: Exception, action: str, key: str | None, size: int | None = None
    ) -> BlobStoreError:
        """One botocore/boto3 exception as the :class:`BlobStoreError` that says what to do."""
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        what = f"s3://{self.bucket}/{key}" if key is not None else f"bucket {self.bucket!r}"
        where = f"{what} at {self.endpoint}"
        s = self.settings
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return BlobStoreAccessError(
                f"cannot {action} {where}: no S3 credentials. Set [blobs.s3] access_key_id and "
                "secret_access_key (the secret best from FLEETAL_BLOBS__S3__SECRET_ACCESS_KEY) "
                "or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or give the host an instance role"
            )
        if isinstance(exc, ConnectTimeoutError | EndpointConnectionError):
            return BlobStoreUnavailableError(
                f"cannot {action} {where}: the endpoint is unreachable after {s.max_attempts} "
                f"attempts (connect timeout {s.connect_timeout_s:g} s): {type(exc).__name__}. "
                "Check [blobs.s3] endpoint_url, DNS and the network; the frame is not committed "
                "and is retried"
            )
        if isinstance(exc, ReadTimeoutError):
            return BlobStoreUnavailableError(
                f"cannot {action} {where}: the endpoint did not answer within "
                f"{s.read_timeout_s:g} s, {s.max_attempts} attempts. The store is overloaded or "
                "hung; raise [blobs.s3] read_timeout_s if large blobs need longer. The frame is "
                "not committed and is retried"
            )
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "")) or "?"
            status = _status(exc)
            detail = f"{code}, HTTP {status}" if status else code
            if code == "NoSuchBucket" or (key is None and status == 404):
                return BlobBucketNotFoundError(
                    f"cannot {action} {where}: bucket {self.bucket!r} does not exist ({detail}). "
                    "Create it, or fix [blobs.s3] bucket (and endpoint_url / region)"
                )
            if code == "NoSuchKey" or status == 404:
                sha = (key or "").rsplit("/", 1)[-1]
                return BlobNotFound(f"blob {sha} is not in s3://{self.bucket} (looked at {where})")
            if code in _ACCESS_CODES or status in (401, 403):
                return BlobStoreAccessError(
                    f"cannot {action} {where}: access refused ({detail}). Check the credentials "
                    "([blobs.s3] access_key_id / secret_access_key or AWS_*; not shown here), "
                    "the region, and that the policy allows s3:GetObject, s3:PutObject, "
                    "s3:DeleteObject and s3:ListBucket on the bucket and prefix"
                )
            if code in _DIGEST_CODES:
                return BlobStoreError(
                    f"cannot {action} {where}: the endpoint refused the body of {size} bytes, its "
                    f"checksum did not match ({detail}): damaged in transit. Nothing was stored; "
                    "the write is retried"
                )
            if code in _THROTTLE_CODES or (status is not None and status >= 500):
                return BlobStoreUnavailableError(
                    f"cannot {action} {where}: the endpoint failed or throttled after "
                    f"{s.max_attempts} attempts ({detail}); the write is retried"
                )
            return BlobStoreError(f"cannot {action} {where}: the endpoint refused ({detail})")
        return BlobStoreUnavailableError(
            f"cannot {action} {where}: {type(exc).__name__} (connection dropped or response "
            "cut short); the operation is retried"
        )


def open_blob_store(config: IngestConfig) -> BlobStore:
    """The blob store ``[blobs]`` describes: local directory or S3 bucket."""
    blobs = config.blobs
    if blobs.backend == "s3":
        # the consumer's blob workers and the API's threads share one client
        return S3BlobStore(blobs.s3, max_pool_connections=max(10, config.consumer.blob_workers + 4))
    return LocalBlobStore(blobs.root, fsync=blobs.fsync)


_S3_SPEC = ("bucket", "prefix", "endpoint_url", "region", "addressing_style", "ca_bundle")


def blob_store_spec(config: IngestConfig) -> dict[str, str]:
    """What another process (a retrain trainer, ``job.json``'s ``blobs``) needs to open this
    blob store. No secrets: the trainer takes S3 credentials from its own environment
    (``FLEETAL_BLOBS__S3__ACCESS_KEY_ID`` ..., or the AWS chain)."""
    blobs = config.blobs
    spec = {"backend": str(blobs.backend)}
    if blobs.backend == "local":
        spec["root"] = str(blobs.root.resolve())
    else:
        for key in _S3_SPEC:
            value = getattr(blobs.s3, key)
            if value:
                spec[key] = str(value)
    return spec


def open_blob_store_spec(spec: Mapping[str, str]) -> BlobStore:
    """The blob store :func:`blob_store_spec` describes (``ValueError`` naming what is wrong)."""
    backend = spec.get("backend")
    if backend == "local":
        if "root" not in spec:
            raise ValueError(f"a local blob store needs its root, got {dict(spec)}")
        return LocalBlobStore(spec["root"], fsync=False)  # read here, never written
    if backend == "s3":
        s3 = {key: spec[key] for key in _S3_SPEC if spec.get(key)}
        # credentials from this process's environment, as the service takes its own:
        # FLEETAL_BLOBS__S3__ACCESS_KEY_ID and the rest, else AWS_* (else botocore's chain)
        env = dict(os.environ)
        config = load_ingest_config(data={"blobs": {"backend": "s3", "s3": s3}}, env=env)
        return S3BlobStore(apply_aws_environment(config, env).blobs.s3)
    raise ValueError(f"unknown blob store backend {backend!r} in {dict(spec)}")


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def _redact_url(url: str) -> str:
    """``url`` without a user:password part."""
    if "@" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


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
