"""Exports of labeled (or the caller's leased) tasks: COCO, KITTI, CVAT, Label Studio.

Every export pages by task id: ``after_task_id`` and ``limit`` in, ``X-Task-Count`` and
``X-Last-Task-Id`` out (pass the latter as ``after_task_id`` for the next page).
"""

# No ``from __future__ import annotations``: FastAPI reads the route signatures at run time.

import itertools
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from ingest_service.api.backend import API_PREFIX
from ingest_service.api.deps import ERRORS, BackendDep, BaseUrl, Labeler
from ingest_service.api.exporting import kitti_chunks, page_frames
from ingest_service.exports import coco, cvat, labelstudio
from ingest_service.exports.common import LabeledFrame

__all__ = ["router"]

router = APIRouter(prefix=f"{API_PREFIX}/export", responses=ERRORS, tags=["export"])

After = Annotated[int, Query(ge=0, description="export tasks with id > this")]
Limit = Annotated[int, Query(ge=1, le=100_000, description="at most this many tasks")]
State = Annotated[
    Literal["labeled", "leased"],
    Query(description="labeled tasks with their boxes, or the tasks leased to the caller"),
]


def _page_headers(frames: Sequence[LabeledFrame]) -> dict[str, str]:
    """``X-Task-Count`` and ``X-Last-Task-Id``: pass the latter as ``after_task_id`` next."""
    headers = {"X-Task-Count": str(len(frames))}
    if frames:
        headers["X-Last-Task-Id"] = str(max(f.task_id for f in frames))
    return headers


def _frames(
    be: BackendDep, base: str, labeler: str, state: str, after_task_id: int, limit: int
) -> list[LabeledFrame]:
    if state == "labeled":
        return [f for f, _ in be.labeled_frames(base, after_task_id, limit)]
    return list(be.leased_frames(base, labeler, limit))


@router.get("/coco")
def export_coco(
    be: BackendDep,
    base: BaseUrl,
    response: Response,
    labeler: Labeler,
    after_task_id: After = 0,
    limit: Limit = 10_000,
) -> dict[str, Any]:
    frames = _frames(be, base, labeler, "labeled", after_task_id, limit)
    response.headers.update(_page_headers(frames))
    return coco.to_coco(frames)


@router.get(
    "/kitti",
    responses={200: {"content": {"application/zip": {}}}},
    response_class=StreamingResponse,
)
def export_kitti(
    be: BackendDep,
    base: BaseUrl,
    labeler: Labeler,
    after_task_id: After = 0,
    limit: Limit = 1_000,
    camera: str = Query("CAM_FRONT", description="the camera exported as image_2"),
) -> StreamingResponse:
    ids = be.labeled_page(after_task_id, limit)
    chunks = kitti_chunks(be, page_frames(be, base, after_task_id, ids), camera)
    # The first frame is read here, before the status line: a database or blob failure there
    # is still a 503 / 500 / 502. Later frames stream (exporting.kitti_chunks).
    first = next(chunks)
    headers = {
        "Content-Disposition": 'attachment; filename="kitti.zip"',
        "X-Task-Count": str(len(ids)),
    }
    if ids:
        headers["X-Last-Task-Id"] = str(ids[-1])
    return StreamingResponse(
        itertools.chain([first], chunks), media_type="application/zip", headers=headers
    )


@router.get(
    "/cvat",
    responses={200: {"content": {"application/xml": {}, "text/plain": {}}}},
    response_class=Response,
)
def export_cvat(
    be: BackendDep,
    base: BaseUrl,
    labeler: Labeler,
    state: State = "labeled",
    format: Literal["xml", "urls"] = Query(
        "xml", description="xml: CVAT for images 1.1; urls: one data URL per line"
    ),
    after_task_id: After = 0,
    limit: Limit = 10_000,
) -> Response:
    frames = _frames(be, base, labeler, state, after_task_id, limit)
    headers = _page_headers(frames)
    if format == "urls":
        return PlainTextResponse(cvat.to_cvat_urls(frames), headers=headers)
    return Response(cvat.to_cvat_xml(frames), media_type="application/xml", headers=headers)


@router.get("/labelstudio")
def export_labelstudio(
    be: BackendDep,
    base: BaseUrl,
    response: Response,
    labeler: Labeler,
    state: State = "labeled",
    after_task_id: After = 0,
    limit: Limit = 10_000,
) -> list[dict[str, Any]]:
    frames = _frames(be, base, labeler, state, after_task_id, limit)
    response.headers.update(_page_headers(frames))
    return labelstudio.to_labelstudio(frames)
