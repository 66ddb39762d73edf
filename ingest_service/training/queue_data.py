"""The label queue's labels as training data: a retrain job's ``labels.jsonl`` (the worker's
contract, ``docs/loop.md``) with the sensor data read from the blob store.

* :func:`queue_images`: each labeled task's 2D boxes, per camera, on that camera's image;
* :func:`queue_sweeps`: each labeled task's 3D boxes on its LiDAR sweep, as per-point labels
  (points inside a box take its class; the rest are background). The left half (y > 0) of
  every queue sweep is kept out of the loss: it covers the held-out region of every bundled
  sweep (their rear-left quadrant, the KITTI ones' left half), so a queue sweep that copies a
  bundled one, moved a little as the demo drive does, cannot leak the LiDAR holdout.

A blob whose bytes are a holdout file's (by sha256) is never trained on.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ingest_service.blobrefs import BlobRefs
from ingest_service.blobstore import BlobStore, open_blob_store_spec
from ingest_service.training.reference.data import (
    _KITTI_CAMERA,
    _NUSC_CAMERA,
    CAMERA_CLASSES,
    IGNORE,
    LabelledImage,
    LabelledSweep,
    lidar_class_index,
    points_in_box,
    yaw_matrix,
)
from schemas.errors import DecodeError
from schemas.pointcloud import decode_points

__all__ = ["JobError", "QueueData", "class_index", "queue_images", "queue_sweeps"]

log = logging.getLogger(__name__)


class JobError(ValueError):
    """The job's inputs are unusable (the trainer exits 2)."""


def class_index(name: str) -> int:
    """A 2D box's class name -> the camera model's class index (``IGNORE`` if unknown)."""
    if name in CAMERA_CLASSES:
        return CAMERA_CLASSES.index(name)
    if name in _KITTI_CAMERA:
        return _KITTI_CAMERA[name]
    return _NUSC_CAMERA.get(name.lower(), IGNORE)


@dataclass(frozen=True, slots=True)
class QueueData:
    """Training examples from the queue: images or sweeps, with what was used and left out."""

    items: list[Any]
    tasks_used: int
    skipped_holdout: int


def _rows(labels_file: Path, blobs: Mapping[str, str]) -> Iterator[tuple[int, Any, BlobRefs]]:
    for line_no, line in enumerate(labels_file.read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(line)
        try:
            refs = BlobRefs.from_json(row["blob_refs"])
        except (KeyError, ValueError) as exc:
            raise JobError(f"{labels_file} line {line_no}: blob_refs: {exc}") from exc
        yield line_no, row, refs


def _store(blobs: Mapping[str, str]) -> BlobStore:
    """The service's blob store, local or S3, from job.json's ``blobs``."""
    try:
        return open_blob_store_spec(blobs)
    except ValueError as exc:
        raise JobError(f"job.json blobs: {exc}") from exc


def queue_images(
    labels_file: Path, blobs: Mapping[str, str], holdout_sha256: set[str]
) -> QueueData:
    """The training images of the queue's labels (2D boxes per camera)."""
    store = _store(blobs)
    images: list[LabelledImage] = []
    used, skipped = 0, 0
    for line_no, row, refs in _rows(labels_file, blobs):
        boxes: dict[str, list[tuple[list[float], int]]] = {}
        for box in row["label"].get("boxes_2d", []):
            coords = [float(box["x1"]), float(box["y1"]), float(box["x2"]), float(box["y2"])]
            boxes.setdefault(str(box["camera"]), []).append(
                (coords, class_index(box["class_name"]))
            )
        task_used = False
        for camera, items in boxes.items():
            blob = refs.cameras.get(camera)
            if blob is None:
                log.warning(
                    "%s line %d: no image of camera %r among %s",
                    labels_file,
                    line_no,
                    camera,
                    sorted(refs.cameras),
                )
                continue
            if blob.ref.sha256 in holdout_sha256:
                skipped += 1  # the holdout is never trained on
                continue
            data = store.get(blob.ref)
            rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)
            images.append(
                LabelledImage(
                    name=f"queue/{row['task_id']}/{camera}",
                    image=rgb,
                    boxes=np.asarray([c for c, _ in items], dtype=np.float32).reshape(-1, 4),
                    labels=np.asarray([k for _, k in items], dtype=np.int64),
                )
            )
            task_used = True
        used += task_used
    return QueueData(images, used, skipped)


def queue_sweeps(
    labels_file: Path, blobs: Mapping[str, str], holdout_sha256: set[str]
) -> QueueData:
    """The training sweeps of the queue's labels (3D boxes -> per-point labels)."""
    store = _store(blobs)
    sweeps: list[LabelledSweep] = []
    used, skipped = 0, 0
    for line_no, row, refs in _rows(labels_file, blobs):
        boxes = row["label"].get("boxes_3d", [])
        if not boxes:
            continue
        if refs.lidar is None:
            log.warning("%s line %d: 3D boxes but no LiDAR sweep", labels_file, line_no)
            continue
        if refs.lidar.ref.sha256 in holdout_sha256:
            skipped += 1
            continue
        try:
            cloud = decode_points(store.get(refs.lidar.ref))
        except DecodeError as exc:
            raise JobError(
                f"{labels_file} line {line_no}: the sweep does not decode: {exc}"
            ) from exc
        points = np.ascontiguousarray(cloud.points[:, :3], dtype=np.float32)
        labels = np.zeros(len(points), dtype=np.int64)
        for box in boxes:
            center = np.asarray(box["center_xyz"], dtype=np.float64)
            half = 0.5 * np.asarray(box["size_lwh"], dtype=np.float64)
            inside = points_in_box(points, center, yaw_matrix(float(box["yaw_rad"])), half)
            labels[inside] = lidar_class_index(str(box["class_name"]))
        sweeps.append(
            LabelledSweep(f"queue/{row['task_id']}/lidar", points, labels, points[:, 1] > 0)
        )
        used += 1
    return QueueData(sweeps, used, skipped)
