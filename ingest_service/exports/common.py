"""What every export format is built from: labeled frames, their images, their boxes.

The label queue stores a label as the JSON payload the labeling API accepted
(:func:`payload_from_boxes`)::

    {"boxes_2d": [{"camera": "CAM_FRONT", "class_name": "car",
                   "x1": 10.0, "y1": 20.0, "x2": 110.0, "y2": 80.0}, ...],
     "boxes_3d": [{"class_name": "car", "center_xyz": [12.1, -3.0, 0.9],
                   "size_lwh": [4.5, 1.9, 1.6], "yaw_rad": 0.12}, ...]}

2D boxes are pixels, (x1, y1) top-left and (x2, y2) bottom-right; 3D boxes are in the LiDAR
frame (metres, radians), as :class:`schemas.messages.Box2D` / :class:`~schemas.messages.Box3D`.
The exporters are pure functions of :class:`LabeledFrame` values; the API (or a batch job)
builds those from the queue and the blob store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.messages import Box2D, Box3D

__all__ = [
    "EXTENSIONS",
    "ImageInfo",
    "LabeledFrame",
    "boxes_from_payload",
    "categories",
    "payload_from_boxes",
]

EXTENSIONS = {"jpeg": "jpg", "png": "png", "raw": "png"}
"""File extension per camera encoding (a raw RGB8 image is exported as PNG)."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """One camera image of a frame: its size, encoding and where the API serves it."""

    camera: str
    width: int
    height: int
    encoding: str
    url: str

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.encoding, "bin")


@dataclass(frozen=True, slots=True)
class LabeledFrame:
    """A task with its frame's images and its label (empty boxes for an unlabeled task)."""

    task_id: int
    frame_key: str
    images: tuple[ImageInfo, ...]
    boxes_2d: tuple[Box2D, ...] = ()
    boxes_3d: tuple[Box3D, ...] = ()
    lidar_url: str | None = None
    labeled: bool = True
    """False for a task still waiting for its label (exported as work to do, no annotations)."""

    def image(self, camera: str) -> ImageInfo | None:
        return next((im for im in self.images if im.camera == camera), None)


def payload_from_boxes(boxes_2d: Iterable[Box2D], boxes_3d: Iterable[Box3D] = ()) -> dict[str, Any]:
    """The JSON payload stored in the label queue (module docstring)."""
    return {
        "boxes_2d": [
            {"camera": b.camera, "class_name": b.class_name,
             "x1": b.x1, "y1": b.y1, "x2": b.x2, "y2": b.y2}
            for b in boxes_2d
        ],
        "boxes_3d": [
            {"class_name": b.class_name, "center_xyz": list(b.center_xyz),
             "size_lwh": list(b.size_lwh), "yaw_rad": b.yaw_rad}
            for b in boxes_3d
        ],
    }  # fmt: skip


def boxes_from_payload(payload: object) -> tuple[tuple[Box2D, ...], tuple[Box3D, ...]]:
    """Parse a stored payload; ``ValueError`` naming the bad entry for anything else."""
    if not isinstance(payload, Mapping):
        raise ValueError(f"a label payload must be an object, got {type(payload).__name__}")
    b2: list[Box2D] = []
    for i, b in enumerate(_list(payload, "boxes_2d")):
        where = f"boxes_2d[{i}]"
        b2.append(
            Box2D(
                camera=_str(b, "camera", where),
                class_name=_str(b, "class_name", where),
                x1=_num(b, "x1", where),
                y1=_num(b, "y1", where),
                x2=_num(b, "x2", where),
                y2=_num(b, "y2", where),
            )
        )
    b3: list[Box3D] = []
    for i, b in enumerate(_list(payload, "boxes_3d")):
        where = f"boxes_3d[{i}]"
        b3.append(
            Box3D(
                class_name=_str(b, "class_name", where),
                center_xyz=_vec3(b, "center_xyz", where),
                size_lwh=_vec3(b, "size_lwh", where),
                yaw_rad=_num(b, "yaw_rad", where),
            )
        )
    return tuple(b2), tuple(b3)


def categories(frames: Iterable[LabeledFrame], extra: Sequence[str] = ()) -> list[str]:
    """Every class name used by the frames (and ``extra``), sorted: a stable category order."""
    names = set(extra)
    for f in frames:
        names.update(b.class_name for b in f.boxes_2d)
        names.update(b.class_name for b in f.boxes_3d)
    return sorted(names)


def _list(obj: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ValueError(f"{key} must be a list of objects")
    return value


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value


def _num(obj: Mapping[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}.{key} must be a finite number, got {value!r}")
    return float(value)


def _vec3(obj: Mapping[str, Any], key: str, where: str) -> tuple[float, float, float]:
    value = obj.get(key)
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(f"{where}.{key} must be a list of 3 numbers, got {value!r}")
    x, y, z = (_num({"v": v}, "v", f"{where}.{key}") for v in value)
    return (x, y, z)
