"""Claim a task under a lease, read it, label or skip it; the queue's counts."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures at run time.

from datetime import UTC, datetime

from fastapi import APIRouter, Response, status

from ingest_service.api.backend import API_PREFIX, data_urls
from ingest_service.api.boxes import BoxError, check_2d
from ingest_service.api.deps import ERRORS, BackendDep, BaseUrl, Labeler, TaskId
from ingest_service.api.models import (
    ClaimedTask,
    FrameInfo,
    LabelAccepted,
    LabelsIn,
    QueueStats,
    SkipIn,
    Skipped,
    TaskOut,
)
from ingest_service.exports.common import payload_from_boxes
from schemas.messages import Box3D

__all__ = ["router"]

NS_PER_S = 1_000_000_000

router = APIRouter(prefix=API_PREFIX, responses=ERRORS)


@router.post(
    "/tasks/claim",
    responses={204: {"description": "nothing to claim"}},
    response_model=ClaimedTask,
    tags=["tasks"],
    summary="Lease the highest-priority task",
)
def claim(be: BackendDep, base: BaseUrl, labeler: Labeler) -> ClaimedTask | Response:
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
        data=data_urls(base, task.id, refs),
    )


@router.get("/tasks/{task_id}", tags=["tasks"])
def get_task(be: BackendDep, base: BaseUrl, task_id: TaskId, labeler: Labeler) -> TaskOut:
    task = be.task(task_id)
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
        data=data_urls(base, task.id, refs),
        labels=None if payload is None else LabelsIn.model_validate(payload),
    )


@router.post(
    "/tasks/{task_id}/labels",
    tags=["tasks"],
    summary="Submit the label of a task you hold the lease on",
)
def submit_labels(
    be: BackendDep, task_id: TaskId, body: LabelsIn, labeler: Labeler
) -> LabelAccepted:
    task = be.task(task_id)
    _, refs = be.frame_of(task)
    try:
        boxes = check_2d(body.boxes_2d, be.size_getter(task_id, refs), refs.cameras)
    except BoxError as exc:
        raise exc.as_validation_error() from None
    if body.boxes_3d and refs.lidar is None:
        raise BoxError(
            ("body", "boxes_3d"), "this frame has no LiDAR sweep for 3D boxes", None
        ).as_validation_error()
    boxes_3d = [Box3D(b.class_name, b.center_xyz, b.size_lwh, b.yaw_rad) for b in body.boxes_3d]
    payload = payload_from_boxes(boxes, boxes_3d)  # the stored label (exports.common)
    be.locked(lambda: be.queue.submit_label(task_id, labeler, payload))
    return LabelAccepted(task_id=task_id, boxes_2d=len(body.boxes_2d), boxes_3d=len(body.boxes_3d))


@router.post(
    "/tasks/{task_id}/skip",
    tags=["tasks"],
    summary="Give up on a task for good (unlabelable frame)",
)
def skip(be: BackendDep, task_id: TaskId, body: SkipIn, labeler: Labeler) -> Skipped:
    be.locked(lambda: be.queue.skip(task_id, labeler, body.reason))
    return Skipped(task_id=task_id, reason=body.reason)


@router.get("/queue/stats", tags=["queue"])
def stats(be: BackendDep, labeler: Labeler) -> QueueStats:
    counts = be.locked(be.queue.stats)
    return QueueStats(**{str(k.value): v for k, v in counts.items()})
