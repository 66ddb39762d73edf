"""The labeling API: claim, fetch sensor data, label or skip, export and import (FastAPI).

:func:`create_app` builds the ASGI app over one :class:`~ingest_service.queue.LabelQueue` and a
:class:`~ingest_service.blobstore.BlobStore`. Routes are plain ``def`` functions, so FastAPI runs
them in its thread pool; the queue wraps a single database connection, so every queue call
holds one lock (claims are serialised in this process; run several API processes on
PostgreSQL to claim in parallel). Blob reads and format conversions run outside the lock.

Domain errors become HTTP statuses here and nowhere else (``docs/labeling-api.md``):
TaskNotFound 404, LeaseLost 409, invalid input 422, a missing blob 500 and a corrupt one 502
(both name the blob), a database failure 503.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route signatures at run
# time, and the ``Annotated`` aliases defined inside ``create_app`` must resolve eagerly.

import dataclasses
import functools
import io
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from ingest_service.api.auth import bearer_labeler
from ingest_service.api.models import (
    Box2DIn,
    ClaimedTask,
    DataUrls,
    ErrorOut,
    FrameInfo,
    ImportReport,
    ImportResult,
    LabelAccepted,
    LabelsIn,
    QueueStats,
    SkipIn,
    Skipped,
    TaskOut,
)
from ingest_service.blobrefs import BlobRefs, CameraBlob
from ingest_service.blobstore import BlobRef, BlobStore
from ingest_service.errors import (
    BlobCorruptError,
    BlobNotFound,
    BlobStoreError,
    DatabaseError,
    IngestError,
    LeaseLost,
    QueueError,
    TaskNotFound,
)
from ingest_service.exports import coco, cvat, kitti, labelstudio
from ingest_service.exports.common import (
    ImageInfo,
    LabeledFrame,
    boxes_from_payload,
    payload_from_boxes,
)
from ingest_service.exports.pcd import to_pcd
from ingest_service.queue import LabelQueue, StoredFrame, Task
from schemas.errors import DecodeError
from schemas.messages import Box2D, Box3D
from schemas.pointcloud import PointCloud, decode_points

__all__ = ["API_PREFIX", "MAX_UPLOAD_BYTES", "MetricsHook", "create_app"]

log = logging.getLogger(__name__)

API_PREFIX = "/v1"
MetricsHook = Callable[[str, int, float], None]
"""Called after every request with (route template, HTTP status, seconds)."""

NS_PER_S = 1_000_000_000
_CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "raw": "application/octet-stream"}
_PIL_ENCODINGS = {"JPEG": "jpeg", "PNG": "png"}
_FPC_TYPE = "application/vnd.fleetal.pointcloud"
MAX_UPLOAD_BYTES = 64 << 20
"""Largest CVAT / Label Studio file an import accepts (~100 000 boxes)."""
_ROUNDING_PX = 0.5  # imported boxes may overshoot the image by this much (format rounding)
_T = TypeVar("_T")

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or unknown bearer token"},
    404: {"model": ErrorOut, "description": "no such task (or camera / sweep)"},
    409: {"model": ErrorOut, "description": "the caller holds no live lease on the task"},
}


class _BoxError(ValueError):
    def __init__(self, loc: tuple[str | int, ...], msg: str, value: object) -> None:
        super().__init__(msg)
        self.loc, self.msg, self.value = loc, msg, value

    def as_validation_error(self) -> RequestValidationError:
        return RequestValidationError(
            [{"type": "value_error", "loc": self.loc, "msg": self.msg, "input": self.value}]
        )


class _Backend:
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
            raise _NoSensorError(f"task {task_id} has no LiDAR sweep")
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


class _NoSensorError(LookupError):
    """The task's frame has no such camera, or no sweep (404)."""


def _data_urls(base: str, task_id: int, refs: BlobRefs) -> DataUrls:
    root = f"{base}{API_PREFIX}/tasks/{task_id}"
    return DataUrls(
        cameras={name: f"{root}/cameras/{name}" for name in sorted(refs.cameras)},
        lidar=None if refs.lidar is None else f"{root}/lidar",
    )


def _check_2d(
    boxes: Sequence[Box2DIn | Box2D],
    size_of: Callable[[str], tuple[int, int] | None],
    cameras: Iterable[str],
    *,
    tolerance: float = 0.0,
) -> list[Box2D]:
    """Boxes within their camera's image; clamped when within ``tolerance`` px of the edge.

    ``size_of(camera)`` is (width, height), None for a camera the frame does not have.
    """
    out: list[Box2D] = []
    for i, b in enumerate(boxes):
        loc: tuple[str, int] = ("boxes_2d", i)
        size = size_of(b.camera)
        if size is None:
            raise _BoxError(
                ("body", *loc, "camera"),
                f"camera {b.camera!r} is not in this frame (it has {sorted(cameras)})",
                b.camera,
            )
        w, h = size
        coords = {"x1": b.x1, "y1": b.y1, "x2": b.x2, "y2": b.y2}
        for name, value in coords.items():
            limit = w if name[0] == "x" else h
            if -tolerance <= value < 0:
                coords[name] = 0.0
            elif limit < value <= limit + tolerance:
                coords[name] = float(limit)
            elif not 0 <= value <= limit:
                axis = "width" if name[0] == "x" else "height"
                raise _BoxError(
                    ("body", *loc, name),
                    f"{name}={value} is outside the image of {b.camera} "
                    f"({axis} {limit}: 0 <= {name} <= {limit})",
                    value,
                )
        if coords["x2"] <= coords["x1"] or coords["y2"] <= coords["y1"]:
            raise _BoxError(("body", *loc), "the box is empty after clipping to the image", None)
        out.append(Box2D(b.camera, b.class_name, **coords))
    return out


def create_app(
    queue: LabelQueue,
    blobs: BlobStore,
    *,
    tokens: Mapping[str, str],
    lease_s: float = 900.0,
    metrics: MetricsHook | None = None,
    public_url: str | None = None,
) -> FastAPI:
    """The labeling API over ``queue`` and ``blobs``.

    ``tokens`` maps API token -> labeler name. ``lease_s`` is the lease a claim grants.
    ``metrics`` is called after each request with (route template, status, seconds).
    ``public_url`` is the base of the data URLs handed out (default: the request's own base
    URL; set it behind a reverse proxy).
    """
    if not tokens:
        raise ValueError("the labeling API needs at least one token")
    if not lease_s > 0:
        raise ValueError(f"lease_s must be > 0, got {lease_s}")
    be = _Backend(queue, blobs, lease_s)
    app = FastAPI(
        title="Fleet Active Learning labeling API",
        version="1.0",
        description="Claim label tasks by priority, fetch their sensor data, submit labels; "
        "export and import COCO, KITTI, CVAT and Label Studio. See docs/labeling-api.md.",
    )
    labeler_dep = bearer_labeler(tokens)
    Labeler = Annotated[str, Depends(labeler_dep)]  # noqa: N806 - a type alias
    TaskId = Annotated[int, Path(ge=1, description="task id")]  # noqa: N806

    def base_of(request: Request) -> str:
        return (public_url or str(request.base_url)).rstrip("/")

    _install_error_handlers(app)
    if metrics is not None:
        _install_metrics(app, metrics)

    # --- tasks --------------------------------------------------------------------------------

    @app.post(
        f"{API_PREFIX}/tasks/claim",
        responses={204: {"description": "nothing to claim"}, **_ERRORS},
        response_model=ClaimedTask,
        tags=["tasks"],
        summary="Lease the highest-priority task",
    )
    def claim(request: Request, labeler: Labeler) -> ClaimedTask | Response:
        task = be.locked(lambda: be.queue.claim(labeler, be.lease_s))
        if task is None:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        _, refs = be.frame_of(task)
        expires = task.lease_expires_ns or 0
        return ClaimedTask(
            task_id=task.id,
            frame_key=task.frame_key,
            priority=task.priority,
            score=task.score,
            attempts=task.attempts,
            lease_expires_ns=expires,
            lease_expires_at=datetime.fromtimestamp(expires / NS_PER_S, tz=UTC),
            data=_data_urls(base_of(request), task.id, refs),
        )

    @app.get(f"{API_PREFIX}/tasks/{{task_id}}", responses=_ERRORS, tags=["tasks"])
    def get_task(request: Request, task_id: TaskId, labeler: Labeler) -> TaskOut:
        task = be.locked(lambda: be.queue.get_task(task_id))
        frame, refs = be.frame_of(task)
        payload = be.label_of(task_id) if task.state == "labeled" else None
        rec = frame.record
        return TaskOut(
            id=task.id,
            frame_key=task.frame_key,
            state=task.state.value,
            score=task.score,
            priority=task.priority,
            attempts=task.attempts,
            lease_owner=task.lease_owner,
            lease_expires_ns=task.lease_expires_ns,
            labeled_ns=task.labeled_ns,
            skip_reason=task.skip_reason,
            frame=FrameInfo(
                vehicle_id=rec.vehicle_id,
                drive_id=rec.drive_id,
                frame_seq=rec.frame_seq,
                timestamp_ns=rec.timestamp_ns,
                reason=rec.reason,
                model_versions=dict(rec.model_versions),
            ),
            data=_data_urls(base_of(request), task.id, refs),
            labels=None if payload is None else LabelsIn.model_validate(payload),
        )

    @app.get(
        f"{API_PREFIX}/tasks/{{task_id}}/cameras/{{name}}",
        responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}, **_ERRORS},
        response_class=Response,
        tags=["sensor data"],
        summary="A camera image, as stored",
    )
    def get_camera(task_id: TaskId, name: str, labeler: Labeler) -> Response:
        task = be.locked(lambda: be.queue.get_task(task_id))
        _, refs = be.frame_of(task)
        cam = refs.cameras.get(name)
        if cam is None:
            raise _NoSensorError(
                f"task {task_id} has no camera {name!r}; it has {sorted(refs.cameras)}"
            )
        what = f"task {task_id} camera {name} (blob {cam.ref.sha256})"
        data = be.blob(cam.ref, what)
        encoding, width, height = be.image_meta(cam, what)
        return Response(
            data,
            media_type=_CONTENT_TYPES[encoding],
            headers={
                "X-Image-Width": str(width),
                "X-Image-Height": str(height),
                "ETag": f'"{cam.ref.sha256}"',
                "Cache-Control": "private, max-age=31536000, immutable",
            },
        )

    @app.get(
        f"{API_PREFIX}/tasks/{{task_id}}/lidar",
        responses={
            200: {
                "content": {_FPC_TYPE: {}, "application/octet-stream": {}},
                "description": "fal: our compressed format (schemas.pointcloud); bin: "
                "float32 N x C little endian; pcd / pcd-ascii: PCD v0.7",
            },
            **_ERRORS,
        },
        response_class=Response,
        tags=["sensor data"],
        summary="The LiDAR sweep",
    )
    def get_lidar(
        task_id: TaskId,
        labeler: Labeler,
        format: Literal["fal", "bin", "pcd", "pcd-ascii"] = Query("fal"),
    ) -> Response:
        task = be.locked(lambda: be.queue.get_task(task_id))
        _, refs = be.frame_of(task)
        raw, cloud = be.points(refs, task_id)
        headers = {
            "X-Point-Count": str(cloud.point_count),
            "X-Point-Fields": ",".join(cloud.fields),
        }
        if format == "fal":
            return Response(raw, media_type=_FPC_TYPE, headers=headers)
        pts: NDArray[np.float32] = np.ascontiguousarray(cloud.points, dtype="<f4")
        if format == "bin":
            return Response(pts.tobytes(), media_type="application/octet-stream", headers=headers)
        body = to_pcd(pts, cloud.fields, binary=format == "pcd")
        return Response(body, media_type="application/octet-stream", headers=headers)

    @app.post(
        f"{API_PREFIX}/tasks/{{task_id}}/labels",
        responses=_ERRORS,
        tags=["tasks"],
        summary="Submit the label of a task you hold the lease on",
    )
    def submit_labels(task_id: TaskId, body: LabelsIn, labeler: Labeler) -> LabelAccepted:
        task = be.locked(lambda: be.queue.get_task(task_id))
        _, refs = be.frame_of(task)
        try:
            boxes = _check_2d(body.boxes_2d, be.size_getter(task_id, refs), refs.cameras)
        except _BoxError as exc:
            raise exc.as_validation_error() from None
        if body.boxes_3d and refs.lidar is None:
            raise _BoxError(
                ("body", "boxes_3d"), "this frame has no LiDAR sweep for 3D boxes", None
            ).as_validation_error()
        boxes_3d = [Box3D(b.class_name, b.center_xyz, b.size_lwh, b.yaw_rad) for b in body.boxes_3d]
        payload = payload_from_boxes(boxes, boxes_3d)  # the stored label (exports.common)
        be.locked(lambda: be.queue.submit_label(task_id, labeler, payload))
        return LabelAccepted(
            task_id=task_id, boxes_2d=len(body.boxes_2d), boxes_3d=len(body.boxes_3d)
        )

    @app.post(
        f"{API_PREFIX}/tasks/{{task_id}}/skip",
        responses=_ERRORS,
        tags=["tasks"],
        summary="Give up on a task for good (unlabelable frame)",
    )
    def skip(task_id: TaskId, body: SkipIn, labeler: Labeler) -> Skipped:
        be.locked(lambda: be.queue.skip(task_id, labeler, body.reason))
        return Skipped(task_id=task_id, reason=body.reason)

    @app.get(f"{API_PREFIX}/queue/stats", responses=_ERRORS, tags=["queue"])
    def stats(labeler: Labeler) -> QueueStats:
        counts = be.locked(be.queue.stats)
        return QueueStats(**{str(k.value): v for k, v in counts.items()})

    # --- exports ------------------------------------------------------------------------------

    def labeled_frames(
        base: str, after_task_id: int, limit: int
    ) -> Iterator[tuple[LabeledFrame, BlobRefs]]:
        items = be.locked(
            lambda: list(
                itertools.islice(be.queue.export_labeled(after_task_id=after_task_id), limit)
            )
        )
        for item in items:
            b2, b3 = boxes_from_payload(item.payload)
            refs = BlobRefs.from_queue_refs(item.frame.blob_refs)
            yield _labeled_frame(be, base, item.task_id, item.frame.key, refs, b2, b3), refs

    def leased_frames(base: str, labeler: str, limit: int) -> Iterator[LabeledFrame]:
        def read() -> list[Task]:
            now = be.queue.clock()
            rows = be.queue.db.execute(
                "SELECT id FROM tasks WHERE state = 'leased' AND lease_owner = ?"
                " AND lease_expires_ns > ? ORDER BY id LIMIT ?",
                (labeler, now, limit),
            ).rows
            return [be.queue.get_task(int(r[0])) for r in rows]

        for task in be.locked(read):
            _, refs = be.frame_of(task)
            frame = _labeled_frame(be, base, task.id, task.frame_key, refs, (), ())
            yield dataclasses.replace(frame, labeled=False)

    After = Annotated[int, Query(ge=0, description="export tasks with id > this")]  # noqa: N806
    Limit = Annotated[int, Query(ge=1, le=100_000, description="at most this many tasks")]  # noqa: N806
    State = Annotated[  # noqa: N806
        Literal["labeled", "leased"],
        Query(description="labeled tasks with their boxes, or the tasks leased to the caller"),
    ]

    @app.get(f"{API_PREFIX}/export/coco", responses=_ERRORS, tags=["export"])
    def export_coco(
        request: Request,
        response: Response,
        labeler: Labeler,
        after_task_id: After = 0,
        limit: Limit = 10_000,
    ) -> dict[str, Any]:
        frames = [f for f, _ in labeled_frames(base_of(request), after_task_id, limit)]
        response.headers.update(_page_headers(frames))
        return coco.to_coco(frames)

    @app.get(
        f"{API_PREFIX}/export/kitti",
        responses={200: {"content": {"application/zip": {}}}, **_ERRORS},
        response_class=Response,
        tags=["export"],
    )
    def export_kitti(
        request: Request,
        labeler: Labeler,
        after_task_id: After = 0,
        limit: Limit = 1_000,
        camera: str = Query("CAM_FRONT", description="the camera exported as image_2"),
    ) -> Response:
        items = []
        frames = []
        for frame, refs in labeled_frames(base_of(request), after_task_id, limit):
            frames.append(frame)
            cam = refs.cameras.get(camera)
            image = None if cam is None else be.blob(cam.ref, f"task {frame.task_id} {camera}")
            points: NDArray[np.float32] | None = None
            fields: tuple[str, ...] = ("x", "y", "z")
            if refs.lidar is not None:
                _, cloud = be.points(refs, frame.task_id)
                points, fields = cloud.points, cloud.fields
            items.append(kitti.KittiItem(frame, camera if cam else None, image, points, fields))
        return Response(
            kitti.to_kitti_zip(items),
            media_type="application/zip",
            headers={
                "Content-Disposition": 'attachment; filename="kitti.zip"',
                **_page_headers(frames),
            },
        )

    @app.get(
        f"{API_PREFIX}/export/cvat",
        responses={200: {"content": {"application/xml": {}, "text/plain": {}}}, **_ERRORS},
        response_class=Response,
        tags=["export"],
    )
    def export_cvat(
        request: Request,
        labeler: Labeler,
        state: State = "labeled",
        format: Literal["xml", "urls"] = Query(
            "xml", description="xml: CVAT for images 1.1; urls: one data URL per line"
        ),
        after_task_id: After = 0,
        limit: Limit = 10_000,
    ) -> Response:
        base = base_of(request)
        frames = (
            [f for f, _ in labeled_frames(base, after_task_id, limit)]
            if state == "labeled"
            else list(leased_frames(base, labeler, limit))
        )
        headers = _page_headers(frames)
        if format == "urls":
            return PlainTextResponse(cvat.to_cvat_urls(frames), headers=headers)
        return Response(cvat.to_cvat_xml(frames), media_type="application/xml", headers=headers)

    @app.get(f"{API_PREFIX}/export/labelstudio", responses=_ERRORS, tags=["export"])
    def export_labelstudio(
        request: Request,
        response: Response,
        labeler: Labeler,
        state: State = "labeled",
        after_task_id: After = 0,
        limit: Limit = 10_000,
    ) -> list[dict[str, Any]]:
        base = base_of(request)
        frames = (
            [f for f, _ in labeled_frames(base, after_task_id, limit)]
            if state == "labeled"
            else list(leased_frames(base, labeler, limit))
        )
        response.headers.update(_page_headers(frames))
        return labelstudio.to_labelstudio(frames)

    # --- imports ------------------------------------------------------------------------------

    def import_boxes(
        labeler: str, boxes: Mapping[int, tuple[Box2D, ...]], unmatched: list[str]
    ) -> ImportReport:
        results: list[ImportResult] = []
        for task_id, task_boxes in sorted(boxes.items()):
            try:
                task = be.locked(functools.partial(be.queue.get_task, task_id))
                _, refs = be.frame_of(task)
                size_of = be.size_getter(task_id, refs)
                checked = _check_2d(task_boxes, size_of, refs.cameras, tolerance=_ROUNDING_PX)
                payload = payload_from_boxes(checked)
                be.locked(functools.partial(be.queue.submit_label, task_id, labeler, payload))
            except (QueueError, _BoxError, BlobStoreError) as exc:
                if isinstance(exc, _BoxError):
                    detail = f"{'.'.join(map(str, exc.loc[1:]))}: {exc.msg}"
                elif isinstance(exc, LeaseLost):
                    detail = _lease_message(exc)
                else:
                    detail = str(exc)
                results.append(ImportResult(task_id=task_id, status="failed", detail=detail))
                continue
            results.append(ImportResult(task_id=task_id, status="labeled", boxes_2d=len(checked)))
        ok = sum(r.status == "labeled" for r in results)
        return ImportReport(
            labeled=ok, failed=len(results) - ok, results=results, unmatched=unmatched
        )

    @app.post(
        f"{API_PREFIX}/import/cvat",
        responses=_ERRORS,
        tags=["import"],
        openapi_extra={
            "requestBody": {"content": {"application/xml": {"schema": {"type": "string"}}}}
        },
        summary="Labels from CVAT for images 1.1 XML onto tasks you hold the lease on",
    )
    async def import_cvat(
        request: Request,
        labeler: Labeler,
        include_empty: bool = Query(
            False,
            description="also label tasks whose images have no box (CVAT XML cannot tell "
            "'nothing to box' from 'not annotated yet')",
        ),
    ) -> ImportReport:
        body = await _read_upload(request)
        try:
            parsed = await _in_thread(lambda: cvat.from_cvat_xml(body))
        except ValueError as exc:
            raise RequestValidationError(
                [{"type": "value_error", "loc": ("body",), "msg": str(exc), "input": None}]
            ) from None
        boxes = {t: b for t, b in parsed.boxes.items() if b or include_empty}
        return await _in_thread(lambda: import_boxes(labeler, boxes, list(parsed.unmatched_images)))

    @app.post(
        f"{API_PREFIX}/import/labelstudio",
        responses=_ERRORS,
        tags=["import"],
        openapi_extra={
            "requestBody": {"content": {"application/json": {"schema": {"type": "array"}}}}
        },
        summary="Labels from a Label Studio JSON export onto tasks you hold the lease on",
    )
    async def import_labelstudio(request: Request, labeler: Labeler) -> ImportReport:
        body = await _read_upload(request)
        try:
            parsed = await _in_thread(lambda: labelstudio.from_labelstudio(body))
        except ValueError as exc:
            raise RequestValidationError(
                [{"type": "value_error", "loc": ("body",), "msg": str(exc), "input": None}]
            ) from None
        return await _in_thread(
            lambda: import_boxes(labeler, parsed.boxes, list(parsed.unmatched_tasks))
        )

    return app


async def _read_upload(request: Request) -> bytes:
    """The request body, refused with 413 beyond :data:`MAX_UPLOAD_BYTES`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise _too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"upload larger than {MAX_UPLOAD_BYTES >> 20} MiB: split it (one file per batch of tasks)",
    )


async def _in_thread(fn: Callable[[], _T]) -> _T:
    return await run_in_threadpool(fn)


def _labeled_frame(
    be: _Backend,
    base: str,
    task_id: int,
    frame_key: str,
    refs: BlobRefs,
    boxes_2d: tuple[Box2D, ...],
    boxes_3d: tuple[Box3D, ...],
) -> LabeledFrame:
    urls = _data_urls(base, task_id, refs)
    images = []
    for name, cam in sorted(refs.cameras.items()):
        encoding, width, height = be.image_meta(cam, f"task {task_id} camera {name}")
        images.append(ImageInfo(name, width, height, encoding, urls.cameras[name]))
    return LabeledFrame(task_id, frame_key, tuple(images), boxes_2d, boxes_3d, urls.lidar)


def _page_headers(frames: Sequence[LabeledFrame]) -> dict[str, str]:
    """``X-Task-Count`` and ``X-Last-Task-Id``: pass the latter as ``after_task_id`` next."""
    headers = {"X-Task-Count": str(len(frames))}
    if frames:
        headers["X-Last-Task-Id"] = str(max(f.task_id for f in frames))
    return headers


def _lease_message(exc: LeaseLost) -> str:
    """What a labeler should read when the queue says they hold no live lease.

    ``LeaseLost`` carries the task id, labeler and why (queue wording: "it is leased to 'x'",
    "the lease ran out N s ago", "the task is not leased (...)", "the task is <state>").
    """
    why = exc.detail
    tid, claim = exc.task_id, f"POST {API_PREFIX}/tasks/claim"
    if why.startswith("the task is not leased"):
        return (
            f"task {tid} is not leased: nobody holds a lease on it; claim a task first "
            f"({claim}) and label the task it gives you"
        )
    if why.startswith("it is leased to"):
        owner = why.removeprefix("it ")
        return f"task {tid} {owner}, not to you ({exc.labeler}); claim again ({claim})"
    if why.startswith("the lease ran out"):
        return f"your lease on task {tid} expired ({why}); claim again ({claim})"
    if why == "the task is new":
        return (
            f"your lease on task {tid} expired and the task went back to the queue "
            f"({why}); claim again ({claim})"
        )
    if why == "the task is expired":
        return (
            f"the lease on task {tid} expired and the task has used all its leases ({why}): "
            "it is out of the queue until an admin requeues it (ingest-service "
            f"requeue-expired); claim another task ({claim})"
        )
    if why in ("the task is labeled", "the task is skipped"):
        return f"task {tid} is already {why.rsplit(' ', 1)[1]}; claim another task ({claim})"
    return f"{exc}; claim again ({claim})"


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as the string Python spells it ("nan", "inf").

    A refused ``NaN`` / ``Infinity`` / ``1e999`` is echoed in the 422's ``input``; JSON cannot
    hold it, and writing it raised inside the error handler (a 500 instead of the 422).
    """
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _install_error_handlers(app: FastAPI) -> None:
    def error(code: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _json_safe(jsonable_encoder(exc.errors()))
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(TaskNotFound)
    async def _not_found(request: Request, exc: TaskNotFound) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(_NoSensorError)
    async def _no_sensor(request: Request, exc: _NoSensorError) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(LeaseLost)
    async def _lease_lost(request: Request, exc: LeaseLost) -> JSONResponse:
        return error(409, _lease_message(exc))

    @app.exception_handler(BlobStoreError)
    async def _blob(request: Request, exc: BlobStoreError) -> JSONResponse:
        code = 500 if isinstance(exc, BlobNotFound) else 502
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error(code, f"sensor data unavailable: {exc}")

    @app.exception_handler(DatabaseError)
    async def _db(request: Request, exc: DatabaseError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error(503, f"label queue database unavailable: {exc}")

    @app.exception_handler(IngestError)
    async def _ingest(request: Request, exc: IngestError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error(500, str(exc))


def _install_metrics(app: FastAPI, hook: MetricsHook) -> None:
    @app.middleware("http")
    async def _observe(request: Request, call_next: Callable[[Request], Any]) -> Response:
        start = time.perf_counter()
        code = 500
        try:
            response: Response = await call_next(request)
            code = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            try:
                hook(template, code, time.perf_counter() - start)
            except Exception:  # a broken metrics hook must not fail requests
                log.exception("labeling API metrics hook failed")
