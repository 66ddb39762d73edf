"""LocalBlobStore: content addressing, idempotence, corruption, disk full."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from ingest_service.blobstore import BlobRef, BlobStore, LocalBlobStore, S3BlobStore
from ingest_service.config import S3Section
from ingest_service.errors import BlobCorruptError, BlobNotFound, BlobStoreError


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_round_trip_and_fan_out_layout(store: LocalBlobStore) -> None:
    data = b"\xff\xd8 a jpeg, more or less \xff\xd9"
    ref = store.put(data)
    sha = hashlib.sha256(data).hexdigest()
    assert ref == BlobRef(sha, len(data))
    assert store.path_for(ref) == store.root / sha[:2] / sha[2:4] / sha
    assert store.exists(ref)
    assert store.get(ref) == data
    assert isinstance(store, BlobStore)


def test_empty_blob_round_trips(store: LocalBlobStore) -> None:
    ref = store.put(b"")
    assert ref.size == 0
    assert store.get(ref) == b""


def test_put_is_idempotent(store: LocalBlobStore) -> None:
    first = store.put(b"sweep" * 1000)
    mtime = store.path_for(first).stat().st_mtime_ns
    second = store.put(b"sweep" * 1000)
    assert first == second
    assert files_under(store.root) == [store.path_for(first)]
    assert store.path_for(first).stat().st_mtime_ns == mtime  # not rewritten


def test_corrupt_blob_is_detected_and_named(store: LocalBlobStore) -> None:
    ref = store.put(b"the original bytes")
    path = store.path_for(ref)
    path.write_bytes(b"the 0riginal bytes")  # same size, one bit of rot
    with pytest.raises(BlobCorruptError, match=str(path)) as info:
        store.get(ref)
    assert info.value.expected == ref.sha256
    assert info.value.actual == hashlib.sha256(b"the 0riginal bytes").hexdigest()


def test_wrong_size_blob_is_rewritten_by_put(store: LocalBlobStore) -> None:
    ref = store.put(b"complete content")
    store.path_for(ref).write_bytes(b"compl")  # truncated by an outside hand
    assert store.put(b"complete content") == ref
    assert store.get(ref) == b"complete content"


def test_missing_blob_and_delete(store: LocalBlobStore) -> None:
    ref = store.put(b"to be deleted")
    assert store.delete(ref)
    assert not store.exists(ref)
    assert not store.delete(ref)
    with pytest.raises(BlobNotFound, match=ref.sha256):
        store.get(ref)


def test_disk_full_leaves_no_partial_file_and_says_what_to_do(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    calls: list[int] = []

    def write_until_full(fd: int, data: bytes | memoryview) -> int:
        # Only the blob store's files fill up; pytest's own fds keep working.
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(str(store.root)):
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:4096]))  # a partial write reaches the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write_until_full)
    data = os.urandom(64 * 1024)
    with pytest.raises(BlobStoreError, match="out of space") as info:
        store.put(data)
    message = str(info.value)
    assert str(store.root) in message
    assert "Free space" in message
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    assert len(calls) == 2
    assert files_under(store.root) == []
    assert not store.exists(BlobRef.of(data))

    monkeypatch.setattr(os, "write", real_write)  # space freed: the retry succeeds
    assert store.get(store.put(data)) == data


def test_sweep_partial_removes_only_old_temporary_files(store: LocalBlobStore) -> None:
    ref = store.put(b"kept")
    leftover = store.path_for(ref).parent / ".tmp-deadbeef.1.2"
    leftover.write_bytes(b"half a bl")
    assert store.sweep_partial(older_than_s=3600) == 0
    assert store.sweep_partial(older_than_s=3600, now_s=leftover.stat().st_mtime + 3601) == 1
    assert files_under(store.root) == [store.path_for(ref)]


def test_blob_ref_validates_and_round_trips_json() -> None:
    ref = BlobRef.of(b"x")
    assert BlobRef.from_json(ref.to_json()) == ref
    with pytest.raises(ValueError, match="64 lowercase hex"):
        BlobRef("ABC", 1)
    with pytest.raises(ValueError, match="needs sha256"):
        BlobRef.from_json({"sha256": ref.sha256})


def test_s3_store_needs_a_bucket_and_follows_the_protocol() -> None:
    """Building the store makes no request; behaviour over HTTP: test_s3_blobstore.py."""
    with pytest.raises(BlobStoreError, match="needs a bucket"):
        S3BlobStore(S3Section())
    store = S3BlobStore(
        S3Section(
            endpoint_url="http://user:pw@127.0.0.1:9",
            bucket="frames",
            access_key_id="AKIDUNIT",
            secret_access_key="unit-secret",
        )
    )
    assert isinstance(store, BlobStore)
    ref = BlobRef.of(b"x")
    assert store.key_for(ref) == f"{ref.sha256[:2]}/{ref.sha256[2:4]}/{ref.sha256}"
    assert store.url_for(ref) == f"s3://frames/{store.key_for(ref)}"
    assert store.endpoint == "http://127.0.0.1:9"  # user info is never echoed
    assert "unit-secret" not in repr(store)
    assert "pw" not in repr(store)
    store.close()
