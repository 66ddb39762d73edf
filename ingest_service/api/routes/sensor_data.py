"""A task's sensor data: camera images as stored, the LiDAR sweep in four encodings."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures at run time.

from typing import Literal

import numpy as np
from fastapi import APIRouter, Query, Response
from numpy.typing import NDArray

from ingest_service.api.backend import API_PREFIX, NoSensorError
from ingest_service.api.deps import ERRORS, BackendDep, Labeler, TaskId
from ingest_service.exports.pcd import to_pcd

__all__ = ["router"]

_CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "raw": "application/octet-stream"}
_FPC_TYPE = "application/vnd.fleetal.pointcloud"

router = APIRouter(prefix=API_PREFIX, responses=ERRORS, tags=["sensor data"])


@router.get(
    "/tasks/{task_id}/cameras/{name}",
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}},
    response_class=Response,
    summary="A camera image, as stored",
)
def get_camera(be: BackendDep, task_id: TaskId, name: str, labeler: Labeler) -> Response:
    _, refs = be.frame_of(be.task(task_id))
    cam = refs.cameras.get(name)
    if cam is None:
        raise NoSensorError(f"task {task_id} has no camera {name!r}; it has {sorted(refs.cameras)}")
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


@router.get(
    "/tasks/{task_id}/lidar",
    responses={
        200: {
            "content": {_FPC_TYPE: {}, "application/octet-stream": {}},
            "description": "fal: our compressed format (schemas.pointcloud); bin: "
            "float32 N x C little endian; pcd / pcd-ascii: PCD v0.7",
        },
    },
    response_class=Response,
    summary="The LiDAR sweep",
)
def get_lidar(
    be: BackendDep,
    task_id: TaskId,
    labeler: Labeler,
    format: Literal["fal", "bin", "pcd", "pcd-ascii"] = Query("fal"),
) -> Response:
    _, refs = be.frame_of(be.task(task_id))
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
