"""CVAT for images 1.1: export tasks with their boxes as annotation XML, import it back.

An image is a task's camera image, named like the COCO export (``000042_CAM_FRONT.jpg``), so
the import finds the task and camera again from the name; a name that is one of our data URLs
(``.../v1/tasks/42/cameras/CAM_FRONT``, what CVAT keeps for a task made from remote URLs)
works too. Boxes are ``xtl ytl xbr ybr`` in pixels, the same convention as ours.

Import takes the ``<box>`` elements (other shapes are ignored and counted) and returns, per
task, the 2D boxes of all its images; a task whose images have no box comes back with an
empty tuple (labeled: nothing to box).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field

from ingest_service.exports.coco import image_file_name
from ingest_service.exports.common import LabeledFrame, categories
from schemas.messages import Box2D

__all__ = ["CvatImport", "from_cvat_xml", "parse_image_name", "to_cvat_urls", "to_cvat_xml"]

_FILE_RE = re.compile(r"(?:^|/)(\d+)_([^/]+?)\.[A-Za-z0-9]+$")
_URL_RE = re.compile(r"/tasks/(\d+)/cameras/([^/?#]+)")


def parse_image_name(name: str) -> tuple[int, str] | None:
    """``(task_id, camera)`` of an exported image name or data URL; None if it is neither."""
    m = _URL_RE.search(name) or _FILE_RE.search(name)
    return None if m is None else (int(m.group(1)), m.group(2))


def _fmt(v: float) -> str:
    return f"{v:.2f}"


def to_cvat_xml(frames: Iterable[LabeledFrame], *, task_name: str = "fleetal") -> str:
    """CVAT for images 1.1 annotations of ``frames`` (their camera images and 2D boxes)."""
    frames = list(frames)
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    meta = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(meta, "name").text = task_name
    ET.SubElement(meta, "size").text = str(sum(len(f.images) for f in frames))
    ET.SubElement(meta, "mode").text = "annotation"
    labels = ET.SubElement(meta, "labels")
    for name in categories(frames):
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = "rectangle"
        ET.SubElement(label, "attributes")
    image_id = 0
    for frame in frames:
        for im in frame.images:
            el = ET.SubElement(
                root,
                "image",
                id=str(image_id),
                name=image_file_name(frame.task_id, im.camera, im.extension),
                width=str(im.width),
                height=str(im.height),
            )
            image_id += 1
            for box in frame.boxes_2d:
                if box.camera != im.camera:
                    continue
                ET.SubElement(
                    el,
                    "box",
                    label=box.class_name,
                    source="manual",
                    occluded="0",
                    xtl=_fmt(box.x1),
                    ytl=_fmt(box.y1),
                    xbr=_fmt(box.x2),
                    ybr=_fmt(box.y2),
                    z_order="0",
                )
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")


def to_cvat_urls(frames: Iterable[LabeledFrame]) -> str:
    """One data URL per line: what CVAT's "remote sources" field takes to create a task."""
    return "".join(f"{im.url}\n" for f in frames for im in f.images)


@dataclass(frozen=True, slots=True)
class CvatImport:
    """What :func:`from_cvat_xml` found: 2D boxes per task, and what it could not use."""

    boxes: dict[int, tuple[Box2D, ...]] = field(default_factory=dict)
    unmatched_images: tuple[str, ...] = ()
    ignored_shapes: int = 0


def from_cvat_xml(xml: str | bytes) -> CvatImport:
    """Parse CVAT for images 1.1 XML; ``ValueError`` for malformed XML or box attributes."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"not CVAT XML: {exc}") from exc
    if root.tag != "annotations":
        raise ValueError(f"not CVAT for images XML: root element is <{root.tag}>")
    boxes: dict[int, list[Box2D]] = {}
    unmatched: list[str] = []
    ignored = 0
    for image in root.iter("image"):
        name = image.get("name", "")
        parsed = parse_image_name(name)
        if parsed is None:
            unmatched.append(name)
            continue
        task_id, camera = parsed
        out = boxes.setdefault(task_id, [])
        for shape in image:
            if shape.tag != "box":
                ignored += 1
                continue
            try:
                out.append(
                    Box2D(
                        camera=camera,
                        class_name=shape.attrib["label"],
                        x1=float(shape.attrib["xtl"]),
                        y1=float(shape.attrib["ytl"]),
                        x2=float(shape.attrib["xbr"]),
                        y2=float(shape.attrib["ybr"]),
                    )
                )
            except (KeyError, ValueError) as exc:
                raise ValueError(f"image {name!r}: a <box> has a missing or bad {exc}") from exc
    return CvatImport({k: tuple(v) for k, v in boxes.items()}, tuple(unmatched), ignored)
