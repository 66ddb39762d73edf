"""KITTI object-detection export: one zip, one entry per labeled frame under its 6-digit id.

Streamed (:func:`iter_kitti_zip`): the archive is written frame by frame, never held whole.

Layout (ids are the task ids, zero-padded to 6 digits; ``mapping.txt`` maps them back)::

    label_2/000042.txt     one line per box, KITTI's 15 columns (below)
    image_2/000042.jpg     the chosen camera's image as stored (PNG for raw RGB8 images)
    velodyne/000042.bin    float32 N x 4: x, y, z, intensity (0 when the sweep has none)
    calib/000042.txt       P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo
    mapping.txt            "<id> <frame_key> <camera>" per frame

A label line is ``type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y``:

* a **3D box** (LiDAR frame) goes to KITTI's camera frame through ``Tr_velo_to_cam``, which
  here is the pure axis change LiDAR (x forward, y left, z up) -> camera (x right, y down,
  z forward) with no translation: the true camera extrinsics are not known to ingest. The
  location is the bottom centre of the box, ``rotation_y = -yaw - pi/2``, ``alpha`` the
  observation angle. Its 2D bbox is ``-1 -1 -1 -1``: without intrinsics it cannot be
  projected. Tools that read ``calib/`` to go back to LiDAR coordinates (OpenPCDet, mmdet3d)
  recover the box exactly (:func:`box3d_from_kitti` is that inverse).
* a **2D box** on the exported camera gets KITTI's "no 3D" values: dimensions -1, location
  -1000, rotation_y and alpha -10.

``truncated`` and ``occluded`` are 0 (not annotated). Class names keep their spelling, with
whitespace replaced by ``_`` (KITTI lines are whitespace-separated).
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ingest_service.exports.common import LabeledFrame
from schemas.messages import Box2D, Box3D

__all__ = [
    "KittiItem",
    "box3d_from_kitti",
    "iter_kitti_zip",
    "kitti_id",
    "label_lines",
    "to_kitti_zip",
]

_TR_VELO_TO_CAM = ((0.0, -1.0, 0.0, 0.0), (0.0, 0.0, -1.0, 0.0), (1.0, 0.0, 0.0, 0.0))
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip entries get a fixed time: the same input, same bytes


@dataclass(frozen=True, slots=True)
class KittiItem:
    """One frame to export: its labels, the chosen camera's image bytes, the sweep."""

    frame: LabeledFrame
    camera: str | None
    image: bytes | None
    points: NDArray[np.float32] | None
    fields: Sequence[str] = ("x", "y", "z", "intensity")


def kitti_id(task_id: int) -> str:
    return f"{task_id:06d}"


def _wrap(angle: float) -> float:
    """``angle`` in [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _type(name: str) -> str:
    return "_".join(name.split())


def _line3d(box: Box3D) -> str:
    cx, cy, cz = box.center_xyz
    length, width, height = box.size_lwh
    x, y, z = -cy, -(cz - height / 2), cx  # bottom centre, camera frame
    ry = _wrap(-box.yaw_rad - math.pi / 2)
    alpha = _wrap(ry - math.atan2(x, z))
    return (
        f"{_type(box.class_name)} 0.00 0 {alpha:.6f} -1.00 -1.00 -1.00 -1.00 "
        f"{height:.6f} {width:.6f} {length:.6f} {x:.6f} {y:.6f} {z:.6f} {ry:.6f}"
    )


def _line2d(box: Box2D) -> str:
    return (
        f"{_type(box.class_name)} 0.00 0 -10.00 {box.x1:.2f} {box.y1:.2f} {box.x2:.2f} "
        f"{box.y2:.2f} -1.00 -1.00 -1.00 -1000.00 -1000.00 -1000.00 -10.00"
    )


def label_lines(frame: LabeledFrame, camera: str | None) -> list[str]:
    """The ``label_2`` lines of a frame: its 3D boxes, then its 2D boxes on ``camera``."""
    lines = [_line3d(b) for b in frame.boxes_3d]
    lines += [_line2d(b) for b in frame.boxes_2d if b.camera == camera]
    return lines


def box3d_from_kitti(line: str) -> Box3D:
    """The LiDAR-frame box of a 3D ``label_2`` line written by this module (the inverse)."""
    parts = line.split()
    if len(parts) != 15:
        raise ValueError(f"a KITTI label line has 15 columns, got {len(parts)}: {line!r}")
    h, w, length, x, y, z, ry = (float(v) for v in parts[8:15])
    if h < 0:
        raise ValueError(f"not a 3D box line (dimensions -1): {line!r}")
    return Box3D(
        class_name=parts[0],
        center_xyz=(z, -x, -y + h / 2),
        size_lwh=(length, w, h),
        yaw_rad=_wrap(-ry - math.pi / 2),
    )


def _calib() -> str:
    identity_p = "1 0 0 0 0 1 0 0 0 0 1 0"
    tr = " ".join(f"{v:g}" for row in _TR_VELO_TO_CAM for v in row)
    return (
        "".join(f"P{i}: {identity_p}\n" for i in range(4))
        + "R0_rect: 1 0 0 0 1 0 0 0 1\n"
        + f"Tr_velo_to_cam: {tr}\n"
        + "Tr_imu_to_velo: 1 0 0 0 0 1 0 0 0 0 1 0\n"
    )


def _velodyne(points: NDArray[np.float32], fields: Sequence[str]) -> bytes:
    pts = np.asarray(points, dtype=np.float32)
    out = np.zeros((pts.shape[0], 4), dtype=np.float32)
    out[:, :3] = pts[:, :3]
    for name in ("intensity", "reflectance"):
        if name in fields:
            out[:, 3] = pts[:, list(fields).index(name)]
            break
    return out.tobytes()


def _png_of_raw(data: bytes, width: int, height: int) -> bytes:
    from PIL import Image  # only for raw RGB8 cameras

    buf = io.BytesIO()
    Image.frombytes("RGB", (width, height), data).save(buf, format="PNG")
    return buf.getvalue()


class _Chunks:
    """A write-only, unseekable file: ``zipfile`` then writes each entry once, in order, with
    its sizes in a data descriptor after the data, so the bytes can leave as they are made."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def iter_kitti_zip(items: Iterable[KittiItem]) -> Iterator[bytes]:
    """The zip (module docstring) of ``items``, streamed: one chunk per item, then the end.

    ``items`` is consumed lazily, one at a time: memory holds one frame's entries, never the
    archive (a KITTI export of 100 000 frames with images and sweeps is tens of GB).
    """
    sink = _Chunks()
    mapping: list[str] = []
    with zipfile.ZipFile(sink, "w") as zf:

        def write(name: str, data: bytes | str, *, deflate: bool) -> None:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            zf.writestr(info, data)

        for item in items:
            fid = kitti_id(item.frame.task_id)
            lines = label_lines(item.frame, item.camera)
            write(f"label_2/{fid}.txt", "".join(f"{ln}\n" for ln in lines), deflate=True)
            write(f"calib/{fid}.txt", _calib(), deflate=True)
            image = item.frame.image(item.camera) if item.camera else None
            if item.image is not None and image is not None:
                data = item.image
                if image.encoding == "raw":
                    data = _png_of_raw(data, image.width, image.height)
                write(f"image_2/{fid}.{image.extension}", data, deflate=False)
            if item.points is not None:
                write(f"velodyne/{fid}.bin", _velodyne(item.points, item.fields), deflate=True)
            mapping.append(f"{fid} {item.frame.frame_key} {item.camera or '-'}\n")
            yield sink.take()
        write("mapping.txt", "".join(mapping), deflate=True)
    yield sink.take()  # mapping.txt and the central directory


def to_kitti_zip(items: Iterable[KittiItem]) -> bytes:
    """The zip (module docstring) of ``items``, as bytes (:func:`iter_kitti_zip` joined)."""
    buf = io.BytesIO()
    for chunk in iter_kitti_zip(items):
        buf.write(chunk)
    return buf.getvalue()
