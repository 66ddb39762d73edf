"""Label Studio: tasks (JSON) pointing at the data URLs, and import of its results.

Export: one Label Studio task per camera image of a queue task::

    {"data": {"image": "<data URL>", "fleetal_task_id": 42, "camera": "CAM_FRONT",
              "frame_key": "veh-1/d1/000017"},
     "annotations": [{"result": [<rectanglelabels>...]}]}     # only for labeled tasks

Label Studio keeps rectangles in **percent** of the image (``x, y, width, height`` of the
top-left corner, 0..100) with ``original_width`` / ``original_height``; the conversion is
``x_px = x / 100 * original_width``. The labeling config the tasks expect
(:data:`LABEL_CONFIG`) names the image ``image`` and the labels ``label``.

Import reads Label Studio's JSON export (a list of tasks with ``annotations``, or a single
task): the latest annotation of each task that is not cancelled, its ``rectanglelabels``
results as pixel boxes. The queue task and camera come from ``data.fleetal_task_id`` and
``data.camera``, else from the image URL. Rotated rectangles are refused (our boxes are
axis-aligned).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest_service.exports.common import LabeledFrame
from ingest_service.exports.cvat import parse_image_name
from schemas.messages import Box2D

__all__ = ["LABEL_CONFIG", "LabelStudioImport", "from_labelstudio", "to_labelstudio"]

LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <!-- one <Label value="car"/> per class -->
  </RectangleLabels>
</View>"""


def _result(box: Box2D, width: int, height: int, index: int) -> dict[str, Any]:
    return {
        "id": f"b{index}",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": box.x1 / width * 100.0,
            "y": box.y1 / height * 100.0,
            "width": (box.x2 - box.x1) / width * 100.0,
            "height": (box.y2 - box.y1) / height * 100.0,
            "rotation": 0,
            "rectanglelabels": [box.class_name],
        },
    }


def to_labelstudio(frames: Iterable[LabeledFrame]) -> list[dict[str, Any]]:
    """Label Studio tasks (``json.dumps`` ready) for ``frames``; labeled ones with results."""
    tasks: list[dict[str, Any]] = []
    for frame in frames:
        for im in frame.images:
            task: dict[str, Any] = {
                "data": {
                    "image": im.url,
                    "fleetal_task_id": frame.task_id,
                    "camera": im.camera,
                    "frame_key": frame.frame_key,
                }
            }
            if frame.labeled:
                mine = [b for b in frame.boxes_2d if b.camera == im.camera]
                task["annotations"] = [
                    {"result": [_result(b, im.width, im.height, i) for i, b in enumerate(mine)]}
                ]
            tasks.append(task)
    return tasks


@dataclass(frozen=True, slots=True)
class LabelStudioImport:
    """2D boxes per queue task, and the Label Studio tasks that matched no queue task."""

    boxes: dict[int, tuple[Box2D, ...]] = field(default_factory=dict)
    unmatched_tasks: tuple[str, ...] = ()


def _num(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _target(task: Mapping[str, Any]) -> tuple[int, str] | None:
    data = task.get("data")
    if not isinstance(data, Mapping):
        return None
    tid, camera = data.get("fleetal_task_id"), data.get("camera")
    if isinstance(tid, int) and not isinstance(tid, bool) and isinstance(camera, str) and camera:
        return tid, camera
    image = data.get("image")
    return parse_image_name(image) if isinstance(image, str) else None


def _boxes(result: list[Any], camera: str, where: str) -> list[Box2D]:
    out: list[Box2D] = []
    for i, r in enumerate(result):
        w = f"{where}.result[{i}]"
        if not isinstance(r, Mapping) or r.get("type") != "rectanglelabels":
            continue
        value = r.get("value")
        if not isinstance(value, Mapping):
            raise ValueError(f"{w}.value must be an object")
        if _num(value.get("rotation", 0), f"{w}.value.rotation") != 0:
            raise ValueError(f"{w}: rotated rectangles are not supported (axis-aligned only)")
        labels = value.get("rectanglelabels")
        if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
            raise ValueError(f"{w}.value.rectanglelabels must hold exactly one class name")
        ow = _num(r.get("original_width"), f"{w}.original_width")
        oh = _num(r.get("original_height"), f"{w}.original_height")
        x = _num(value.get("x"), f"{w}.value.x") / 100.0 * ow
        y = _num(value.get("y"), f"{w}.value.y") / 100.0 * oh
        bw = _num(value.get("width"), f"{w}.value.width") / 100.0 * ow
        bh = _num(value.get("height"), f"{w}.value.height") / 100.0 * oh
        out.append(Box2D(camera, labels[0], x, y, x + bw, y + bh))
    return out


def from_labelstudio(doc: str | bytes | object) -> LabelStudioImport:
    """Parse a Label Studio JSON export (text or already parsed); ``ValueError`` naming the spot."""
    obj = json.loads(doc) if isinstance(doc, str | bytes) else doc
    tasks = [obj] if isinstance(obj, Mapping) else obj
    if not isinstance(tasks, list):
        raise ValueError("a Label Studio export is a list of tasks (or one task object)")
    boxes: dict[int, list[Box2D]] = {}
    unmatched: list[str] = []
    for t, task in enumerate(tasks):
        where = f"[{t}]"
        if not isinstance(task, Mapping):
            raise ValueError(f"{where} must be a task object")
        target = _target(task)
        if target is None:
            unmatched.append(str(task.get("id", where)))
            continue
        annotations = task.get("annotations") or task.get("completions") or []
        if not isinstance(annotations, list):
            raise ValueError(f"{where}.annotations must be a list")
        live = [
            (a, i)
            for i, a in enumerate(annotations)
            if isinstance(a, Mapping) and not a.get("was_cancelled", False)
        ]
        if not live:
            continue
        annotation, index = live[-1]
        result = annotation.get("result", [])
        if not isinstance(result, list):
            raise ValueError(f"{where}.annotations[{index}].result must be a list")
        task_id, camera = target
        found = _boxes(result, camera, f"{where}.annotations[{index}]")
        boxes.setdefault(task_id, []).extend(found)
    return LabelStudioImport({k: tuple(v) for k, v in boxes.items()}, tuple(unmatched))
