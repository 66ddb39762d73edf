"""Bundled real camera images and sweeps as labeled tasks of a label queue (their own boxes
as labels), stored as the consumer stores frames (blob keys of ``BlobRefs.queue_refs``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ingest_service.blobrefs import CAMERA_PREFIX, LIDAR_KEY
from ingest_service.blobstore import LocalBlobStore
from ingest_service.queue import FrameRecord, LabelQueue
from ingest_service.training.reference.data import (
    CAMERA_CLASSES,
    camera_image_files,
    load_camera_images,
    nuscenes_boxes_3d,
    nuscenes_sweep_file,
)
from schemas.pointcloud import encode_points

DATA = Path(__file__).resolve().parents[2] / "data"


def label_bundled_images(queue: LabelQueue, blobs: LocalBlobStore, names: list[str]) -> None:
    """Each named bundled image as a selected frame, labeled with its own boxes."""
    files = camera_image_files(DATA)
    images = {i.name: i for i in load_camera_images(DATA)}
    for seq, name in enumerate(names):
        ref = blobs.put(files[name].read_bytes())
        queue.ingest_frame(
            FrameRecord("veh", "d1", seq, seq, 0.9, "margin", {"camera": "ref"}),
            {f"{CAMERA_PREFIX}CAM_FRONT": ref},  # the consumer's layout (BlobRefs.queue_refs)
        )
        task = queue.claim("alice", 60.0)
        if task is None:
            raise RuntimeError(f"the task of {name} was not claimable")
        item = images[name]
        boxes = [
            {"camera": "CAM_FRONT", "class_name": CAMERA_CLASSES[k] if k >= 0 else "DontCare",
             "x1": float(b[0]), "y1": float(b[1]), "x2": float(b[2]), "y2": float(b[3])}
            for b, k in zip(item.boxes.tolist(), item.labels.tolist(), strict=True)
        ]  # fmt: skip
        queue.submit_label(task.id, "alice", {"boxes_2d": boxes, "boxes_3d": []})


def label_bundled_sweep(queue: LabelQueue, blobs: LocalBlobStore) -> int:
    """The nuScenes sample sweep as a selected frame (encoded as the agent sends it), labeled
    with its own 3D boxes; returns how many boxes."""
    raw = np.fromfile(nuscenes_sweep_file(DATA), dtype=np.float32).reshape(-1, 5)[:, :4]
    ref = blobs.put(encode_points(raw))
    queue.ingest_frame(
        FrameRecord("veh", "d-lidar", 0, 0, 0.9, "margin", {"lidar": "ref"}), {LIDAR_KEY: ref}
    )
    task = queue.claim("alice", 60.0)
    if task is None:
        raise RuntimeError("the task of the nuScenes sweep was not claimable")
    boxes = [
        {"class_name": name, "center_xyz": list(c), "size_lwh": list(s), "yaw_rad": yaw}
        for name, c, s, yaw in nuscenes_boxes_3d(DATA)
    ]
    queue.submit_label(task.id, "alice", {"boxes_2d": [], "boxes_3d": boxes})
    return len(boxes)
