"""The exports as streams and documents, shared by the export routes and ``ingest-service export``.

The routes serve one page at a time (``after_task_id`` / ``limit``); the CLI writes every
labeled task to a file. KITTI is streamed either way (:func:`kitti_chunks`): one frame's
image and sweep in memory at a time, never the archive.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, Literal

import numpy as np
from numpy.typing import NDArray

from ingest_service.api.backend import Backend
from ingest_service.blobrefs import BlobRefs
from ingest_service.errors import IngestError
from ingest_service.exports import coco, cvat, kitti, labelstudio
from ingest_service.exports.common import LabeledFrame

__all__ = ["FORMATS", "ExportFormat", "document", "kitti_chunks", "page_frames", "write_export"]

log = logging.getLogger(__name__)

ExportFormat = Literal["coco", "kitti", "cvat", "labelstudio"]
FORMATS: tuple[ExportFormat, ...] = ("coco", "kitti", "cvat", "labelstudio")


def page_frames(
    be: Backend, base: str, after_task_id: int, ids: list[int]
) -> Iterator[tuple[LabeledFrame, BlobRefs]]:
    """The labeled frames of the page ``ids`` (:meth:`Backend.labeled_page`), read lazily."""
    if not ids:
        return
    wanted, last = set(ids), ids[-1]
    for frame, refs in be.labeled_frames(base, after_task_id, None):
        if frame.task_id > last:
            return
        if frame.task_id in wanted:
            yield frame, refs


def _kitti_items(
    be: Backend, frames: Iterable[tuple[LabeledFrame, BlobRefs]], camera: str
) -> Iterator[kitti.KittiItem]:
    for frame, refs in frames:
        cam = refs.cameras.get(camera)
        image = None if cam is None else be.blob(cam.ref, f"task {frame.task_id} {camera}")
        points: NDArray[np.float32] | None = None
        fields: tuple[str, ...] = ("x", "y", "z")
        if refs.lidar is not None:
            _, cloud = be.points(refs, frame.task_id)
            points, fields = cloud.points, cloud.fields
        yield kitti.KittiItem(frame, camera if cam else None, image, points, fields)


def kitti_chunks(
    be: Backend, frames: Iterable[tuple[LabeledFrame, BlobRefs]], camera: str
) -> Iterator[bytes]:
    """The KITTI zip of ``frames``, chunk by chunk (one per frame, then the end)."""
    try:
        yield from kitti.iter_kitti_zip(_kitti_items(be, frames, camera))
    except IngestError as exc:
        # Once the first chunk is out the status line is gone: the stream is cut (the client
        # sees an incomplete body and a zip without its directory) and the reason is logged.
        log.error("KITTI export cut short: %s", exc)
        raise


def document(fmt: ExportFormat, frames: list[LabeledFrame]) -> Any:
    """The export of ``frames`` as a JSON value (coco, labelstudio) or XML text (cvat)."""
    if fmt == "coco":
        return coco.to_coco(frames)
    if fmt == "labelstudio":
        return labelstudio.to_labelstudio(frames)
    if fmt == "cvat":
        return cvat.to_cvat_xml(frames)
    raise ValueError(f"{fmt} is not a document export; use one of coco, cvat, labelstudio")


def write_export(
    be: Backend,
    fmt: ExportFormat,
    out: BinaryIO,
    *,
    base: str,
    after_task_id: int = 0,
    camera: str = "CAM_FRONT",
) -> list[int]:
    """Every labeled task after ``after_task_id`` exported to ``out``; their ids, in order."""
    frames = be.labeled_frames(base, after_task_id, None)
    ids: list[int] = []
    if fmt == "kitti":

        def counted() -> Iterator[tuple[LabeledFrame, BlobRefs]]:
            for frame, refs in frames:
                ids.append(frame.task_id)
                yield frame, refs

        for chunk in kitti_chunks(be, counted(), camera):
            out.write(chunk)
        return ids
    listed = [f for f, _ in frames]
    doc = document(fmt, listed)
    text = doc if isinstance(doc, str) else json.dumps(doc, indent=1)
    out.write(text.encode())
    return [f.task_id for f in listed]
