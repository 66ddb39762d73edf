"""Imports: boxes from CVAT XML or a Label Studio export onto the caller's leased tasks."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures at run time.

import functools
from collections.abc import Callable, Mapping
from typing import TypeVar

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from ingest_service.api.backend import API_PREFIX, Backend
from ingest_service.api.boxes import ROUNDING_PX, BoxError, check_2d
from ingest_service.api.deps import ERRORS, BackendDep, Labeler
from ingest_service.api.errors import lease_message
from ingest_service.api.models import ImportReport, ImportResult
from ingest_service.errors import BlobStoreError, LeaseLost, QueueError
from ingest_service.exports import cvat, labelstudio
from ingest_service.exports.common import payload_from_boxes
from schemas.messages import Box2D

__all__ = ["MAX_UPLOAD_BYTES", "router"]

MAX_UPLOAD_BYTES = 64 << 20
"""Largest CVAT / Label Studio file an import accepts (~100 000 boxes)."""
_T = TypeVar("_T")

router = APIRouter(prefix=f"{API_PREFIX}/import", responses=ERRORS, tags=["import"])


def _import_boxes(
    be: Backend, labeler: str, boxes: Mapping[int, tuple[Box2D, ...]], unmatched: list[str]
) -> ImportReport:
    results: list[ImportResult] = []
    for task_id, task_boxes in sorted(boxes.items()):
        try:
            _, refs = be.frame_of(be.task(task_id))
            size_of = be.size_getter(task_id, refs)
            checked = check_2d(task_boxes, size_of, refs.cameras, tolerance=ROUNDING_PX)
            payload = payload_from_boxes(checked)
            be.locked(functools.partial(be.queue.submit_label, task_id, labeler, payload))
        except (QueueError, BoxError, BlobStoreError) as exc:
            if isinstance(exc, BoxError):
                detail = f"{'.'.join(map(str, exc.loc[1:]))}: {exc.msg}"
            elif isinstance(exc, LeaseLost):
                detail = lease_message(exc)
            else:
                detail = str(exc)
            results.append(ImportResult(task_id=task_id, status="failed", detail=detail))
            continue
        results.append(ImportResult(task_id=task_id, status="labeled", boxes_2d=len(checked)))
    ok = sum(r.status == "labeled" for r in results)
    return ImportReport(labeled=ok, failed=len(results) - ok, results=results, unmatched=unmatched)


@router.post(
    "/cvat",
    openapi_extra={"requestBody": {"content": {"application/xml": {"schema": {"type": "string"}}}}},
    summary="Labels from CVAT for images 1.1 XML onto tasks you hold the lease on",
)
async def import_cvat(
    be: BackendDep,
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
        raise _invalid_body(exc) from None
    boxes = {t: b for t, b in parsed.boxes.items() if b or include_empty}
    return await _in_thread(
        lambda: _import_boxes(be, labeler, boxes, list(parsed.unmatched_images))
    )


@router.post(
    "/labelstudio",
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": {"type": "array"}}}}},
    summary="Labels from a Label Studio JSON export onto tasks you hold the lease on",
)
async def import_labelstudio(be: BackendDep, request: Request, labeler: Labeler) -> ImportReport:
    body = await _read_upload(request)
    try:
        parsed = await _in_thread(lambda: labelstudio.from_labelstudio(body))
    except ValueError as exc:
        raise _invalid_body(exc) from None
    return await _in_thread(
        lambda: _import_boxes(be, labeler, parsed.boxes, list(parsed.unmatched_tasks))
    )


def _invalid_body(exc: ValueError) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body",), "msg": str(exc), "input": None}]
    )


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
