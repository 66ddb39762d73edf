"""The demo's annotator: a script that labels the queue over the labeling API, as a person
would in CVAT or Label Studio, with the real boxes of the bundled data.

Every camera scene of the demo drive is a crop of a labelled image (``build_drive``), so the
true 2D boxes of a drive frame are the source image's boxes (nuScenes / KITTI annotations),
scaled and shifted by the frame's crop and clipped to it. The annotator claims the most
valuable task (``POST /v1/tasks/claim``), reads its frame (``GET /v1/tasks/{id}``), and posts
the boxes (``POST /v1/tasks/{id}/labels``), or skips the task with a reason when it has no
labels to give: a scene without annotations (the comma2k19 preview), or a crop of a
**holdout** image, which would leak the holdout into training (the trainer only recognises a
holdout image by its file bytes, and a crop has other bytes).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from deploy.demo.build_drive import IMAGE_SIZE, FrameView, frame_view, scene_sources
from ingest_service.training.reference.data import (
    CAMERA_CLASSES,
    CAMERA_HOLDOUT,
    load_camera_images,
)

__all__ = ["AnnotationReport", "DriveTruth", "annotate"]

MIN_SIDE_PX = 4.0
"""A box clipped by the crop to less than this (width or height) is not labelled."""


@dataclass(frozen=True, slots=True)
class Box:
    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float


class DriveTruth:
    """The true 2D boxes of every frame of the demo drive."""

    def __init__(self, data: Path) -> None:
        self.sources: list[tuple[str, tuple[int, int]]] = []
        for name, path in scene_sources():
            with Image.open(path) as im:
                self.sources.append((name, im.size))
        self.labelled = {img.name: img for img in load_camera_images(data)}

    def view(self, frame_index: int) -> FrameView:
        return frame_view(frame_index, self.sources)

    def boxes(self, frame_index: int) -> list[Box] | str:
        """The frame's boxes, or the reason it cannot be labelled."""
        view = self.view(frame_index)
        if view.scene in CAMERA_HOLDOUT:
            return f"{view.scene} is a holdout image: labelling it would train on the holdout"
        img = self.labelled.get(view.scene)
        if img is None:
            return f"{view.scene} has no annotations to label from"
        out: list[Box] = []
        width, height = IMAGE_SIZE
        for (x1, y1, x2, y2), label in zip(img.boxes.tolist(), img.labels.tolist(), strict=True):
            if label < 1:
                continue  # ignore regions and background are not boxes to draw
            bx1 = min(max(x1 * view.sx - view.x0, 0.0), width)
            bx2 = min(max(x2 * view.sx - view.x0, 0.0), width)
            by1 = min(max(y1 * view.sy - view.top, 0.0), height)
            by2 = min(max(y2 * view.sy - view.top, 0.0), height)
            if bx2 - bx1 >= MIN_SIDE_PX and by2 - by1 >= MIN_SIDE_PX:
                out.append(Box(CAMERA_CLASSES[label], bx1, by1, bx2, by2))
        return out


@dataclass(slots=True)
class AnnotationReport:
    labeled: int = 0
    skipped: int = 0
    boxes: Counter[str] = field(default_factory=Counter)
    skip_reasons: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        boxes = ", ".join(f"{n} {k}" for k, n in sorted(self.boxes.items())) or "no boxes"
        skips = "; ".join(f"{n} x {r}" for r, n in sorted(self.skip_reasons.items()))
        return f"{self.labeled} labeled ({boxes}), {self.skipped} skipped" + (
            f" ({skips})" if skips else ""
        )


class _Api:
    def __init__(self, base_url: str, token: str) -> None:
        self.base = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: object | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.base}{path}", data=data, method=method, headers=self.headers
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')}"
            ) from exc


def annotate(
    base_url: str, token: str, truth: DriveTruth, *, limit: int = 1000
) -> AnnotationReport:
    """Claim and label (or skip) tasks until the queue has none left, or ``limit`` of them."""
    api = _Api(base_url, token)
    report = AnnotationReport()
    for _ in range(limit):
        status, claimed = api.call("POST", "/tasks/claim")
        if status == 204 or claimed is None:
            break
        task_id = int(claimed["task_id"])
        _, task = api.call("GET", f"/tasks/{task_id}")
        cameras = sorted(claimed["data"]["cameras"])
        boxes = truth.boxes(int(task["frame"]["frame_seq"])) if cameras else "no camera image"
        if isinstance(boxes, str):
            api.call("POST", f"/tasks/{task_id}/skip", {"reason": boxes})
            report.skipped += 1
            report.skip_reasons[boxes.split(":")[0]] += 1
            continue
        body = {
            "boxes_2d": [
                {
                    "camera": cameras[0],
                    "class_name": b.class_name,
                    "x1": b.x1,
                    "y1": b.y1,
                    "x2": b.x2,
                    "y2": b.y2,
                }
                for b in boxes
            ],
            "boxes_3d": [],
        }
        api.call("POST", f"/tasks/{task_id}/labels", body)
        report.labeled += 1
        report.boxes.update(b.class_name for b in boxes)
    return report
