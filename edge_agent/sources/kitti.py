"""KITTI readers: the raw-drive layout and the object-benchmark layout.

Raw drive (``2011_09_26_drive_0001_sync/``)::

    image_00..image_03/timestamps.txt, image_0X/data/0000000000.png
    velodyne_points/timestamps.txt, velodyne_points/data/0000000000.bin   (N x 4 float32)
    oxts/timestamps.txt, oxts/data/0000000000.txt, oxts/dataformat.txt

Line ``i`` of a ``timestamps.txt`` is the time of file ``i`` (10 digits, zero padded).
Frames are built on the Velodyne clock; cameras are matched by nearest timestamp (see
``edge_agent.sources.sync``); the pose is the OXTS record interpolated at the sweep time,
expressed in east / north / up metres relative to the drive's first OXTS fix.

Object benchmark (``training/``, ``testing/``): ``image_2/000000.png``, ``image_3``
(optional), ``velodyne/000000.bin`` or ``velodyne_reduced/000000.bin``. These are isolated
frames without timestamps or poses: they get a synthetic 10 Hz clock starting at
``start_ns`` (default 0). The benchmark root reads both splits, ``training/`` first.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_agent.errors import SourceOpenError
from edge_agent.frame import CameraImage, Frame, LidarSweep, SourceError, SourceErrorReason
from edge_agent.sources.base import (
    BadInputError,
    SourceBase,
    SourceOptions,
    read_float32_records,
    read_image_file,
)
from edge_agent.sources.geo import ecef_to_enu, geodetic_to_ecef, rpy_to_quat
from edge_agent.sources.sync import PoseTrack, match_nearest, poses_at

__all__ = [
    "KITTI_LIDAR_FIELDS",
    "KittiObjectSource",
    "KittiRawSource",
    "object_splits",
    "parse_kitti_timestamps",
    "read_oxts_track",
]

log = logging.getLogger(__name__)

KITTI_LIDAR_FIELDS = ("x", "y", "z", "reflectance")
KITTI_RAW_CAMERAS = ("image_00", "image_01", "image_02", "image_03")
KITTI_OBJECT_CAMERAS = ("image_2", "image_3")
KITTI_OBJECT_LIDAR = ("velodyne", "velodyne_reduced")
KITTI_OBJECT_SPLITS = ("training", "testing")
KITTI_OBJECT_PERIOD_NS = 100_000_000

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _parse_one_timestamp(line: str) -> int:
    # "2011-09-26 13:02:25.961661696": nanoseconds, more than datetime can hold.
    whole, _, frac = line.strip().partition(".")
    stamp = dt.datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
    if frac and not frac.isdigit():
        raise ValueError(f"bad fraction {frac!r}")
    seconds = (stamp - _EPOCH) // dt.timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((frac + "000000000")[:9])


def parse_kitti_timestamps(path: Path) -> NDArray[np.int64]:
    """Read a KITTI raw ``timestamps.txt``: one int64 ns per line, -1 for a bad line.

    KITTI writes local wall-clock time without a zone; it is read as if it were UTC, so
    absolute values are off by the recording's UTC offset, differences are exact.
    """
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceOpenError(str(path), f"cannot read timestamps: {exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    out = np.full(len(lines), -1, dtype=np.int64)
    for i, line in enumerate(lines):
        try:
            out[i] = _parse_one_timestamp(line)
        except ValueError:
            log.warning("%s line %d: bad timestamp %r, frame skipped", path, i + 1, line)
    return out


def read_oxts_track(oxts_dir: Path, timestamps_ns: NDArray[np.int64]) -> PoseTrack:
    """OXTS records -> pose track in ENU metres relative to the first readable record.

    A missing or malformed record leaves a gap (the samples either side are interpolated
    across it only if they are at most 1 s apart).
    """
    n = timestamps_ns.shape[0]
    records = np.full((n, 6), np.nan)
    bad = 0
    for i in range(n):
        path = oxts_dir / "data" / f"{i:010d}.txt"
        try:
            values = path.read_text(encoding="ascii").split()
            records[i] = [float(v) for v in values[:6]]
        except (OSError, ValueError, UnicodeDecodeError):
            bad += 1
    if bad:
        log.warning("%s: %d of %d OXTS records missing or malformed", oxts_dir, bad, n)
    keep = np.all(np.isfinite(records), axis=1) & (timestamps_ns >= 0)
    records = records[keep]
    times = timestamps_ns[keep]
    order = np.argsort(times, kind="stable")
    records, times = records[order], times[order]
    if times.size == 0:
        return PoseTrack(times, np.zeros((0, 3)), np.zeros((0, 4)), np.zeros((0, 3)))
    lat, lon, alt = records[:, 0], records[:, 1], records[:, 2]
    ecef = geodetic_to_ecef(lat, lon, alt)
    enu = ecef_to_enu(ecef, ecef[0])
    # OXTS: yaw 0 = east, counter-clockwise; R = Rz(yaw) Ry(pitch) Rx(roll) (KITTI devkit).
    quat = rpy_to_quat(records[:, 3], records[:, 4], records[:, 5])
    return PoseTrack(times, enu, quat, records[:, :3].copy())


class KittiRawSource(SourceBase):
    """A KITTI raw drive folder (synced or extract). See the module docstring."""

    def __init__(self, path: str | Path, options: SourceOptions | None = None) -> None:
        root = Path(path)
        super().__init__(root, options or SourceOptions())
        if not root.is_dir():
            raise SourceOpenError(str(root), "not a directory; expected a KITTI raw drive folder")
        self.cameras = tuple(
            name
            for name in KITTI_RAW_CAMERAS
            if (root / name / "timestamps.txt").is_file() and self.options.wants_camera(name)
        )
        self.has_lidar = (root / "velodyne_points" / "timestamps.txt").is_file()
        if not self.has_lidar and not self.cameras:
            raise SourceOpenError(
                str(root),
                "no velodyne_points/timestamps.txt and no image_0X/timestamps.txt "
                "(of the cameras asked for); is this a KITTI raw drive folder?",
            )
        self._camera_ts = {
            name: parse_kitti_timestamps(root / name / "timestamps.txt") for name in self.cameras
        }
        self.reference = "velodyne_points" if self.has_lidar else self.cameras[0]
        if self.has_lidar:
            self._ref_ts = parse_kitti_timestamps(root / "velodyne_points" / "timestamps.txt")
        else:
            self._ref_ts = self._camera_ts[self.reference]
        oxts_ts = root / "oxts" / "timestamps.txt"
        self._poses = (
            read_oxts_track(root / "oxts", parse_kitti_timestamps(oxts_ts))
            if oxts_ts.is_file()
            else None
        )

    def __len__(self) -> int:
        return int(self._ref_ts.shape[0])

    @property
    def reference_timestamps_ns(self) -> NDArray[np.int64]:
        return self._ref_ts.copy()

    def _match(self, name: str) -> NDArray[np.intp]:
        """Index into camera ``name``'s files for every reference frame, -1 if none."""
        ts = self._camera_ts[name]
        valid = np.flatnonzero(ts >= 0)
        order = valid[np.argsort(ts[valid], kind="stable")]
        pos = match_nearest(self._ref_ts, ts[order], self.options.sync_tolerance_ns)
        return np.where(pos >= 0, order[np.clip(pos, 0, None)], -1) if order.size else pos

    def frames(self) -> Iterator[Frame | SourceError]:
        tol = self.options.sync_tolerance_ns
        matches = {name: self._match(name) for name in self.cameras}
        poses = poses_at(self._poses, self._ref_ts, tol)
        for i, ts in enumerate(self._ref_ts.tolist()):
            if self._closed:
                return
            if ts < 0:
                yield SourceError(
                    drive_id=self.drive_id,
                    seq=i,
                    timestamp_ns=None,
                    sensor=self.reference,
                    path=str(self.root / self.reference / "timestamps.txt"),
                    reason=SourceErrorReason.BAD_METADATA,
                    message=f"{self.root / self.reference / 'timestamps.txt'} line {i + 1}: "
                    "malformed timestamp; fix the line or drop the frame",
                )
                continue
            try:
                lidar = None
                if self.has_lidar:
                    path = self.root / "velodyne_points" / "data" / f"{i:010d}.bin"
                    points = read_float32_records(path, 4, "velodyne_points")
                    lidar = LidarSweep(ts, points, KITTI_LIDAR_FIELDS, path=str(path))
                cams: list[CameraImage] = []
                for name in self.cameras:
                    j = int(matches[name][i])
                    if j < 0:
                        continue
                    cam_ts = int(self._camera_ts[name][j])
                    path = self.root / name / "data" / f"{j:010d}.png"
                    cams.append(read_image_file(path, name, cam_ts))
            except BadInputError as defect:
                yield self.error(defect, i, ts)
                continue
            yield self.make_frame(i, ts, poses[i], tuple(cams), lidar)


@dataclass(frozen=True, slots=True)
class _ObjectSplit:
    """One split folder of the object benchmark and the sensor folders it has."""

    root: Path
    cameras: tuple[str, ...]
    lidar_dir: str | None
    stems: tuple[str, ...]


def object_splits(path: Path) -> list[Path]:
    """The split folders to read at ``path``: itself if it holds sensor folders, else its
    ``training/`` and ``testing/`` (both, in that order, when both are there)."""
    if _has_object_sensors(path):
        return [path]
    return [path / name for name in KITTI_OBJECT_SPLITS if _has_object_sensors(path / name)]


def _has_object_sensors(path: Path) -> bool:
    return any((path / name).is_dir() for name in (*KITTI_OBJECT_CAMERAS, *KITTI_OBJECT_LIDAR))


class KittiObjectSource(SourceBase):
    """The KITTI object benchmark layout: a split folder (``training/`` or ``testing/``), or
    the benchmark root, which reads ``training/`` and then ``testing/`` as one drive.

    Frames are the sorted union of the camera and LiDAR file stems of each split; ``seq`` is
    the position in that order (continuing across splits) and ``timestamp_ns = start_ns +
    seq * 100 ms`` (synthetic). The sweep is read from ``velodyne/``, or from
    ``velodyne_reduced/`` (the points inside the camera's view, as mmdetection3d writes them)
    when there is no ``velodyne/``. Each sensor file is read on its own: a frame whose image
    is missing or unreadable is built from its sweep (and the other way round), the bad file
    listed in ``Frame.problems``; a frame with no readable file becomes a ``SourceError``
    (one bad file) or a sensorless frame whose ``problems`` name each bad file.
    """

    def __init__(
        self,
        path: str | Path,
        options: SourceOptions | None = None,
        *,
        start_ns: int = 0,
    ) -> None:
        given = Path(path)
        dirs = object_splits(given) if given.is_dir() else []
        root = dirs[0] if len(dirs) == 1 else given
        opts = options or SourceOptions()
        super().__init__(root, opts)
        if opts.drive_id is None:
            parent = root.parent.name if root.name in KITTI_OBJECT_SPLITS else ""
            self.drive_id = f"{parent}_{root.name}" if parent else root.name
        if not given.is_dir():
            raise SourceOpenError(
                str(given), "not a directory; expected a KITTI object folder or its training/"
            )
        self.start_ns = start_ns
        self.splits = tuple(self._split(d) for d in dirs)
        if not any(split.stems for split in self.splits):
            raise SourceOpenError(
                str(given),
                "no image_2/*.png, velodyne/*.bin or velodyne_reduced/*.bin files (here or in "
                "training/, testing/); is this KITTI object?",
            )
        self.cameras = tuple(dict.fromkeys(c for split in self.splits for c in split.cameras))
        self.has_lidar = any(split.lidar_dir for split in self.splits)
        if len(self.splits) > 1:
            log.info(
                "KITTI object %s: %s, read as one drive %r (seq and the synthetic clock "
                "continue from one split to the next)",
                given,
                ", then ".join(f"{s.root.name}/ ({len(s.stems)} frames)" for s in self.splits),
                self.drive_id,
            )

    def _split(self, root: Path) -> _ObjectSplit:
        cameras = tuple(
            name
            for name in KITTI_OBJECT_CAMERAS
            if (root / name).is_dir() and self.options.wants_camera(name)
        )
        lidar_dir = next((d for d in KITTI_OBJECT_LIDAR if (root / d).is_dir()), None)
        if lidar_dir == "velodyne_reduced":
            log.info("KITTI object %s: sweeps from velodyne_reduced/ (no velodyne/)", root)
        stems: set[str] = set()
        for name in cameras:
            stems.update(p.stem for p in (root / name).glob("*.png"))
        if lidar_dir is not None:
            stems.update(p.stem for p in (root / lidar_dir).glob("*.bin"))
        return _ObjectSplit(root, cameras, lidar_dir, tuple(sorted(stems)))

    @property
    def stems(self) -> tuple[str, ...]:
        """Every frame's file stem, in frame order (``split/stem`` when several splits)."""
        if len(self.splits) == 1:
            return self.splits[0].stems
        return tuple(f"{s.root.name}/{stem}" for s in self.splits for stem in s.stems)

    def __len__(self) -> int:
        return sum(len(split.stems) for split in self.splits)

    def frames(self) -> Iterator[Frame | SourceError]:
        seq = 0
        for split in self.splits:
            for stem in split.stems:
                if self._closed:
                    return
                yield self._frame(split, stem, seq)
                seq += 1

    def _frame(self, split: _ObjectSplit, stem: str, seq: int) -> Frame | SourceError:
        ts = self.start_ns + seq * KITTI_OBJECT_PERIOD_NS
        problems: list[SourceError] = []
        lidar = None
        if split.lidar_dir is not None:
            path = split.root / split.lidar_dir / f"{stem}.bin"
            try:
                points = read_float32_records(path, 4, split.lidar_dir)
            except BadInputError as defect:
                problems.append(self.error(defect, seq, ts))
            else:
                lidar = LidarSweep(ts, points, KITTI_LIDAR_FIELDS, path=str(path))
        cams: list[CameraImage] = []
        for name in split.cameras:
            try:
                cams.append(read_image_file(split.root / name / f"{stem}.png", name, ts))
            except BadInputError as defect:
                problems.append(self.error(defect, seq, ts))
        if not cams and lidar is None and len(problems) == 1:
            return problems[0]
        return self.make_frame(seq, ts, None, tuple(cams), lidar, tuple(problems))
