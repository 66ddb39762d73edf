"""What the routes share: the queue behind a lock, the blob store, and cached image metadata.

The queue wraps a single database connection, so every queue call holds :attr:`Backend.lock`
(claims are serialised in this process; run several API processes on PostgreSQL to claim in
parallel). Blob reads and format conversions run outside the lock.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from PIL import Image, UnidentifiedImageError

from ingest_service.api.models import DataUrls
from ingest_service.blobrefs import BlobRefs, CameraBlob
from ingest_service.blobstore import BlobRef, BlobStore
from ingest_service.errors import BlobCorruptError, BlobNotFound, BlobStoreError, QueueError
from ingest_service.exports.common import ImageInfo, LabeledFrame, boxes_from_payload
from ingest_service.queue import LabeledItem, LabelQueue, StoredFrame, Task
from schemas.errors import DecodeError
from schemas.messages import Box2D, Box3D
from schemas.pointcloud import PointCloud, decode_points

__all__ = ["API_PREFIX", "Backend", "NoSensorError", "data_urls"]

API_PREFIX = "/v1"
_PIL_ENCODINGS = {"JPEG": "jpeg", "PNG": "png"}
_READ_BATCH = 200  # labeled tasks read per locked query while an export streams
_T = TypeVar("_T")


class NoSensorError(LookupError):
    """The task's frame has no such camera, or no sweep (404)."""


def data_urls(base: str, task_id: int, refs: BlobRefs) -> DataUrls:
    root = f"{base}{API_PREFIX}/tasks/{task_id}"
    return DataUrls(
        cameras={name: f"{root}/cameras/{name}" for name in sorted(refs.cameras)},
        lidar=None if refs.lidar is None else f"{root}/lidar",
    )


class Backend:
    """The queue behind a lock, the blob store, and cached image metadata."""

    def __init__(self, queue: LabelQueue, blobs: BlobStore, lease_s: float) -> None:
        self.queue = queue
        self.blobs = blobs
        self.lease_s = lease_s
        self.lock = threading.Lock()
        # Blobs are content-addressed (immutable): (encoding, width, height) per sha256 never
        # goes stale. Bounded by clearing when full.
        self._image_meta: dict[str, tuple[str, int, int]] = {}

    def locked(self, fn: Callable[[], _T]) -> _T:
        with self.lock:
            return fn()

    def task(self, task_id: int) -> Task:
        return self.locked(lambda: self.queue.get_task(task_id))

    def frame_of(self, task: Task) -> tuple[StoredFrame, BlobRefs]:
        frame = self.locked(lambda: self.queue.get_frame(task.frame_key))
        try:
            return frame, BlobRefs.from_queue_refs(frame.blob_refs)
        except ValueError as exc:
            raise QueueError(f"frame {frame.key}: {exc}") from exc

    def blob(self, ref: BlobRef, what: str) -> bytes:
        try:
            return self.blobs.get(ref)
        except BlobCorruptError:
            raise  # names the path and both hashes already
        except BlobNotFound as exc:
            raise BlobNotFound(f"{what}: {exc}") from exc
        except BlobStoreError as exc:
            raise BlobStoreError(f"{what}: {exc}") from exc

    def image_meta(self, cam: CameraBlob, what: str) -> tuple[str, int, int]:
        if cam.encoding is not None and cam.width is not None and cam.height is not None:
            return cam.encoding, cam.width, cam.height
        cached = self._image_meta.get(cam.ref.sha256)
        if cached is not None:
            return cached
        data = self.blob(cam.ref, what)
        try:
            with Image.open(io.BytesIO(data)) as im:
                meta = (_PIL_ENCODINGS.get(im.format or "", "raw"), im.width, im.height)
        except (UnidentifiedImageError, OSError) as exc:
            raise BlobStoreError(
                f"{what}: blob {cam.ref.sha256} is not an image this API can read ({exc})"
            ) from exc
        if len(self._image_meta) > 100_000:
            self._image_meta.clear()
        self._image_meta[cam.ref.sha256] = meta
        return meta

    def points(self, refs: BlobRefs, task_id: int) -> tuple[bytes, PointCloud]:
        if refs.lidar is None:
            raise NoSensorError(f"task {task_id} has no LiDAR sweep")
        what = f"task {task_id} LiDAR sweep (blob {refs.lidar.ref.sha256})"
        data = self.blob(refs.lidar.ref, what)
        try:
            return data, decode_points(data)
        except DecodeError as exc:
            raise BlobStoreError(f"{what} does not decode: {exc}") from exc

    def size_getter(self, task_id: int, refs: BlobRefs) -> Callable[[str], tuple[int, int] | None]:
        """(width, height) of a camera of the frame, None for a camera it does not have."""

        def size_of(name: str) -> tuple[int, int] | None:
            cam = refs.cameras.get(name)
            if cam is None:
                return None
            _, width, height = self.image_meta(cam, f"task {task_id} camera {name}")
            return width, height

        return size_of

    def label_of(self, task_id: int) -> Any:
        def read() -> Any:
            item = next(self.queue.export_labeled(after_task_id=task_id - 1, batch=1), None)
            return None if item is None or item.task_id != task_id else item.payload

        return self.locked(read)

    # --- exports ------------------------------------------------------------------------------

    def labeled_frame(
        self,
        base: str,
        task_id: int,
        frame_key: str,
        refs: BlobRefs,
        boxes_2d: tuple[Box2D, ...],
        boxes_3d: tuple[Box3D, ...],
    ) -> LabeledFrame:
        urls = data_urls(base, task_id, refs)
        images = []
        for name, cam in sorted(refs.cameras.items()):
            encoding, width, height = self.image_meta(cam, f"task {task_id} camera {name}")
            images.append(ImageInfo(name, width, height, encoding, urls.cameras[name]))
        return LabeledFrame(task_id, frame_key, tuple(images), boxes_2d, boxes_3d, urls.lidar)

    def labeled_items(self, after_task_id: int, limit: int | None) -> Iterator[LabeledItem]:
        """Labeled tasks with id > ``after_task_id`` by id, at most ``limit`` (None: all).

        Read :data:`_READ_BATCH` at a time, each batch one locked query: a long export never
        holds the lock (or the whole page) while it is written out.
        """
        last, left = after_task_id, limit
        while left is None or left > 0:
            n = _READ_BATCH if left is None else min(_READ_BATCH, left)
            batch = self.locked(functools.partial(self._read_labeled, last, n))
            yield from batch
            if len(batch) < n:
                return
            last = batch[-1].task_id
            if left is not None:
                left -= len(batch)

    def _read_labeled(self, after_task_id: int, n: int) -> list[LabeledItem]:
        items = self.queue.export_labeled(after_task_id=after_task_id, batch=n)
        return list(itertools.islice(items, n))

    def labeled_page(self, after_task_id: int, limit: int) -> list[int]:
        """The ids of the labeled tasks an export page of ``limit`` after ``after_task_id`` has."""
        rows = self.locked(
            lambda: (
                self.queue.db.execute(
                    "SELECT id FROM tasks WHERE state = 'labeled' AND id > ? ORDER BY id LIMIT ?",
                    (after_task_id, limit),
                ).rows
            )
        )
        return [int(r[0]) for r in rows]

    def labeled_frames(
        self, base: str, after_task_id: int, limit: int | None
    ) -> Iterator[tuple[LabeledFrame, BlobRefs]]:
        for item in self.labeled_items(after_task_id, limit):
            b2, b3 = boxes_from_payload(item.payload)
            refs = BlobRefs.from_queue_refs(item.frame.blob_refs)
            yield self.labeled_frame(base, item.task_id, item.frame.key, refs, b2, b3), refs

    def leased_frames(self, base: str, labeler: str, limit: int) -> Iterator[LabeledFrame]:
        """The tasks leased to ``labeler`` (live leases), without boxes, by id."""

        def read() -> list[Task]:
            now = self.queue.clock()
            rows = self.queue.db.execute(
                "SELECT id FROM tasks WHERE state = 'leased' AND lease_owner = ?"
                " AND lease_expires_ns > ? ORDER BY id LIMIT ?",
                (labeler, now, limit),
            ).rows
            return [self.queue.get_task(int(r[0])) for r in rows]

        for task in self.locked(read):
            _, refs = self.frame_of(task)
            frame = self.labeled_frame(base, task.id, task.frame_key, refs, (), ())
            yield dataclasses.replace(frame, labeled=False)
