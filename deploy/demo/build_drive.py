"""Assemble the demo drive, in the KITTI raw layout, from the bundled real data.

No bundled recording has a minute of synchronised video and LiDAR (see data/README.md), so
``make demo`` builds one from real parts, every one of them recorded by a real vehicle:

* time: the 108 real frame timestamps of KITTI raw drive 2011_09_26_0001 (10 Hz);
* ego track: the real comma2k19 highway minute (ECEF fixes at 20 Hz, every other one), written
  as KITTI OXTS records (lat, lon, alt, yaw, forward speed) on the real OXTS record's template;
* camera (image_02): the real KITTI object images, the nuScenes CAM_FRONT image and the
  comma2k19 preview, in scenes of 12 frames; within a scene each frame is a crop that slides
  as the vehicle moves, so consecutive frames are near-duplicates as in a real drive;
* LiDAR (velodyne_points): the real KITTI, nuScenes and Argoverse 2 sweeps, rotated and
  shifted a little per frame in the same way;
* two deliberately bad frames, as on a real vehicle: a black image (lens covered) and a
  truncated sweep, which the quality gate must drop and count.

Run: ``python -m deploy.demo.build_drive OUT_DIR`` (idempotent: does nothing if complete).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.feather as feather
from numpy.typing import NDArray
from PIL import Image

from edge_agent.sources.geo import ecef_to_enu, ecef_to_geodetic
from ingest_service.training.reference.data import CAMERA_HOLDOUT

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
RAW_META = DATA / "kitti_raw_2011_09_26_drive_0001_meta"
DRIVE_NAME = "2011_09_26_drive_0001_demo"
SCENE_FRAMES = 12
IMAGE_SIZE = (1242, 375)  # KITTI image_02 width x height
BLACK_FRAME = 40
TRUNCATED_SWEEP = 77
DONE = ".complete"


def scene_sources() -> list[tuple[str, Path]]:
    """The camera scenes in drive order, each with the name of its labelled image (the names
    of ``ingest_service.training.reference.data``; the comma2k19 preview has no labels).

    The trainer's holdout images come last, so that a short drive (the first few scenes, as
    the tests build) holds only frames an annotator may label; the whole drive still passes
    the holdout scene, which the demo's annotator must refuse to label."""
    kitti = sorted((DATA / "kitti_object" / "training" / "image_2").glob("*.png"))
    out = [(f"kitti/{p.stem}", p) for p in kitti]
    out += [
        ("nuscenes/CAM_FRONT", p)
        for p in sorted((DATA / "nuscenes_sample").glob("*__CAM_FRONT__*.jpg"))
    ]
    out.append(("comma2k19/preview", DATA / "comma2k19_segment" / "preview.png"))
    return sorted(out, key=lambda scene: scene[0] in CAMERA_HOLDOUT)


@dataclass(frozen=True, slots=True)
class FrameView:
    """Where frame ``i`` of the drive comes from: source pixel (x, y) is drive pixel
    (x * sx - x0, y * sy - top) in a KITTI-sized image."""

    scene: str
    sx: float
    sy: float
    x0: int
    top: int


def _band(w: int, h: int) -> tuple[int, int, int]:
    """Source size -> the scaled band's size and its first row: a little wider than KITTI's
    image, so the crop can slide as the vehicle moves."""
    scale = (IMAGE_SIZE[0] + 8 * SCENE_FRAMES) / w
    bw, bh = int(w * scale), int(h * scale)
    return bw, bh, max(0, (bh - IMAGE_SIZE[1]) // 2)


def frame_view(i: int, sources: list[tuple[str, tuple[int, int]]]) -> FrameView:
    """The view of frame ``i``, given the (name, (width, height)) of each scene source."""
    name, (w, h) = sources[(i // SCENE_FRAMES) % len(sources)]
    bw, bh, top = _band(w, h)
    return FrameView(name, bw / w, bh / h, 8 * (i % SCENE_FRAMES), top)


def _scenes() -> list[NDArray[np.uint8]]:
    images = []
    for _, path in scene_sources():
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            bw, bh, top = _band(*rgb.size)
            band = rgb.resize((bw, bh), Image.Resampling.BILINEAR)
            images.append(np.asarray(band)[top : top + IMAGE_SIZE[1]])
    return images


def _sweeps() -> list[NDArray[np.float32]]:
    sweeps = [
        np.fromfile(p, dtype=np.float32).reshape(-1, 4)
        for p in sorted((DATA / "kitti_object" / "training" / "velodyne").glob("*.bin"))
    ]
    nus = next((DATA / "nuscenes_sample").glob("*LIDAR_TOP*.pcd.bin"))
    pts = np.fromfile(nus, dtype=np.float32).reshape(-1, 5)[:, :4].copy()
    pts[:, 3] /= 255.0  # nuScenes intensity 0..255 -> KITTI reflectance 0..1
    sweeps.append(pts)
    for path in sorted((DATA / "av2_sensor").glob("*/sensors/lidar/*.feather")):
        table = feather.read_table(path)
        cols = [np.asarray(table.column(c), dtype=np.float32) for c in ("x", "y", "z")]
        inten = np.asarray(table.column("intensity"), dtype=np.float32) / 255.0
        sweeps.append(np.stack([*cols, inten], axis=1))
    return sweeps


def _track(n: int) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(lat, lon, alt) per frame, heading (rad, 0 = east, CCW) and forward speed (m/s)."""
    seg = DATA / "comma2k19_segment" / "global_pose"
    with (seg / "frame_positions").open("rb") as fh:
        ecef = np.load(fh)[: 2 * n : 2].astype(np.float64)
    with (seg / "frame_times").open("rb") as fh:
        t = np.load(fh)[: 2 * n : 2].astype(np.float64)
    geo = ecef_to_geodetic(ecef)
    enu = ecef_to_enu(ecef, ecef[0])
    d = np.diff(enu[:, :2], axis=0, append=enu[-1:, :2] + (enu[-1:, :2] - enu[-2:-1, :2]))
    heading = np.arctan2(d[:, 1], d[:, 0])
    dt = np.diff(t, append=t[-1] + (t[-1] - t[-2]))
    speed = np.linalg.norm(d, axis=1) / np.maximum(dt, 1e-3)
    return geo, heading, speed


def _rotate(points: NDArray[np.float32], yaw: float, shift_x: float) -> NDArray[np.float32]:
    c, s = math.cos(yaw), math.sin(yaw)
    out = points.copy()
    x, y = points[:, 0], points[:, 1]
    out[:, 0] = c * x - s * y - shift_x
    out[:, 1] = s * x + c * y
    return out


def build(out: Path, frames: int | None = None) -> Path:
    """Write the drive under ``out`` (the first ``frames`` frames only, if given)."""
    drive = out / DRIVE_NAME
    if (drive / DONE).is_file():
        return drive
    stamps = (RAW_META / "velodyne_points" / "timestamps.txt").read_text().splitlines()
    n = len(stamps) if frames is None else min(frames, len(stamps))
    images, sweeps = _scenes(), _sweeps()
    geo, heading, speed = _track(n)
    template = (RAW_META / "oxts" / "data" / "0000000000.txt").read_text().split()
    for sub in ("image_02/data", "velodyne_points/data", "oxts/data"):
        (drive / sub).mkdir(parents=True, exist_ok=True)
    for sensor in ("image_02", "velodyne_points", "oxts"):
        lines = (RAW_META / sensor / "timestamps.txt").read_text().splitlines()[:n]
        (drive / sensor / "timestamps.txt").write_text("\n".join(lines) + "\n")
    (drive / "oxts" / "dataformat.txt").write_text(
        (RAW_META / "oxts" / "dataformat.txt").read_text()
    )
    rng = np.random.default_rng(2011)
    for i in range(n):
        scene = i // SCENE_FRAMES
        step = i % SCENE_FRAMES
        img = images[scene % len(images)]
        x0 = 8 * step  # FrameView.x0
        frame = img[:, x0 : x0 + IMAGE_SIZE[0]]
        if i == BLACK_FRAME:
            frame = np.zeros_like(frame)
        Image.fromarray(np.ascontiguousarray(frame)).save(drive / "image_02/data" / f"{i:010d}.png")
        sweep = sweeps[scene % len(sweeps)]
        moved = _rotate(sweep, yaw=0.01 * step, shift_x=0.8 * step)
        moved[:, :3] += rng.normal(0.0, 0.01, size=(len(moved), 3)).astype(np.float32)
        blob = moved.astype(np.float32).tobytes()
        if i == TRUNCATED_SWEEP:
            blob = blob[: len(blob) // 2 + 7]  # not a whole number of 16-byte points
        (drive / "velodyne_points/data" / f"{i:010d}.bin").write_bytes(blob)
        rec = list(template)
        rec[0], rec[1], rec[2] = (f"{geo[i, 0]:.10f}", f"{geo[i, 1]:.10f}", f"{geo[i, 2]:.4f}")
        rec[5] = f"{heading[i]:.6f}"
        rec[8] = f"{speed[i]:.4f}"
        (drive / "oxts/data" / f"{i:010d}.txt").write_text(" ".join(rec) + "\n")
    (drive / "README.md").write_text(__doc__ or "")
    (drive / DONE).write_text("ok\n")
    return drive


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="build the demo drive from data/")
    p.add_argument("out", type=Path, nargs="?", default=ROOT / "var" / "demo")
    p.add_argument("--frames", type=int, help="only the first N frames")
    args = p.parse_args(argv)
    print(build(args.out, args.frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
