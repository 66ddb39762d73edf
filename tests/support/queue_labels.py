"""Bundled real camera images as labeled tasks of a label queue (their own boxes as labels)."""

from __future__ import annotations

from pathlib import Path

from ingest_service.blobrefs import CAMERA_PREFIX
from ingest_service.blobstore import LocalBlobStore
from ingest_service.queue import FrameRecord, LabelQueue
from ingest_service.training.reference.data import (
    CAMERA_CLASSES,
    camera_image_files,
    load_camera_images,
)

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
