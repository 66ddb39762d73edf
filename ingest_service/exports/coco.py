"""COCO object-detection export: the camera images of labeled tasks and their 2D boxes.

Every camera image of every labeled frame is an ``image`` (an image without boxes is a
negative example, so it is included); every 2D box an ``annotation`` with
``bbox = [x, y, width, height]`` in pixels (COCO's top-left origin, like ours). Categories
are the class names, sorted, numbered from 1. Each image carries ``coco_url`` (the API's data
URL) and our ids (``fleetal_task_id``, ``frame_key``, ``camera``) so a result can be traced
back to its task.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ingest_service.exports.common import LabeledFrame, categories

__all__ = ["image_file_name", "to_coco"]


def image_file_name(task_id: int, camera: str, extension: str) -> str:
    """The file name of a task's camera image in exports: ``000042_CAM_FRONT.jpg``."""
    return f"{task_id:06d}_{camera}.{extension}"


def to_coco(
    frames: Iterable[LabeledFrame],
    *,
    extra_categories: Sequence[str] = (),
    description: str = "fleet active learning labels",
) -> dict[str, Any]:
    """The COCO dataset dict (``json.dumps`` ready) of ``frames``."""
    frames = list(frames)
    names = categories(frames, extra_categories)
    cat_id = {name: i for i, name in enumerate(names, start=1)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for frame in frames:
        image_ids: dict[str, int] = {}
        for im in frame.images:
            image_id = len(images) + 1
            image_ids[im.camera] = image_id
            images.append(
                {
                    "id": image_id,
                    "file_name": image_file_name(frame.task_id, im.camera, im.extension),
                    "width": im.width,
                    "height": im.height,
                    "coco_url": im.url,
                    "fleetal_task_id": frame.task_id,
                    "frame_key": frame.frame_key,
                    "camera": im.camera,
                }
            )
        for box in frame.boxes_2d:
            if box.camera not in image_ids:
                raise ValueError(
                    f"task {frame.task_id}: a 2D box is on camera {box.camera!r}, which the "
                    f"frame does not have ({sorted(image_ids)})"
                )
            w, h = box.x2 - box.x1, box.y2 - box.y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_ids[box.camera],
                    "category_id": cat_id[box.class_name],
                    "bbox": [box.x1, box.y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [],
                }
            )
    return {
        "info": {"description": description, "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": cat_id[name], "name": name, "supercategory": "object"} for name in names
        ],
    }
