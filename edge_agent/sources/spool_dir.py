"""A live source fed through a watched directory: the sensor bridge drops frame files.

Contract with the bridge (docs/sources.md has the long version). Each frame is one entry,
named by its zero-padded seq, created under a temporary name in the same directory (one
that starts with ``.`` or ends with ``.tmp``) and renamed when complete (``os.replace``:
atomic on one filesystem), so the source never sees half a frame. Two entry layouts:

* ``<seq:012d>.npz``, a NumPy archive without pickles: ``meta`` (a JSON string:
  ``drive_id``, ``seq``, ``timestamp_ns``, ``pose``, ``cameras`` [{name, timestamp_ns,
  encoding}], ``lidar`` {timestamp_ns, fields}), ``cam_<i>`` per camera (the encoded
  PNG/JPEG bytes as a 1-D uint8 array, or raw ``(H, W, 3)`` RGB when ``encoding`` is
  null), ``lidar`` (``(N, C)`` float32).
* ``<seq:012d>/``, a folder (what a C++ bridge writes most easily): ``meta.json`` (the same
  JSON, each camera and the lidar with a ``file`` name inside the folder), the encoded
  images, and ``lidar.bin`` (float32, ``len(fields)`` columns) or ``lidar.pcd`` (PCL's
  format, read with Open3D).

``write_spool_frame`` writes either and is the reference implementation.

The source lists the directory every ``poll_interval_s``, yields frames in file-name
order, and acknowledges a file (deletes it, or moves it to ``done/``) only when the
consumer asks for the next frame, so a crash re-delivers at most the frame in hand
(at-least-once; ingest de-duplicates on ``(vehicle, drive, seq)``). A file that cannot be
read is moved to ``rejected/`` and yielded as a ``SourceError``. ``stop()`` ends the
iteration within one poll interval; ``idle_timeout_s`` ends it after that long without a
new file (``None``: wait for ever).

``options.cameras`` keeps only the cameras named (the others are not even decoded), and a
camera more than ``options.sync_tolerance_ns`` from the frame's reference time (the sweep's
timestamp, else the frame's) is left out of the frame, counted in
``counts["camera_out_of_sync"]`` and logged (at most once a minute).

**Drive ids.** An entry whose ``meta`` carries ``drive_id`` keeps it. Without one the source
makes drive ids unique by itself: ``<base>-<UTC time of the drive's first frame>-<8 hex
digits of a uuid4>`` (``base``: ``options.drive_id``, else the directory name), persisted
with the last seq and timestamp in ``<directory>/.drive.json``. A frame continues the
current drive when its seq is greater than the last one (or is the last one again, with the
same timestamp: a frame re-delivered after a crash); a seq that goes back (the bridge
restarted its count: a new drive) starts a new drive id. So a restarted agent carries on
with the drive it was in, and a new drive never reuses the keys of an earlier one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from edge_agent.errors import SourceOpenError
from edge_agent.frame import (
    CameraImage,
    EgoPose,
    Frame,
    LidarSweep,
    SourceError,
    SourceErrorReason,
)
from edge_agent.quality import RateLimitedLogger
from edge_agent.sources.base import (
    BadInputError,
    SourceBase,
    SourceOptions,
    decode_image,
    read_float32_records,
)
from edge_agent.sources.pointcloud import read_pcd, write_pcd

__all__ = ["DriveTracker", "SpoolDirSource", "write_spool_frame"]

log = logging.getLogger(__name__)

SPOOL_SUFFIX = ".npz"
DRIVE_STATE = ".drive.json"
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._:+=@-]+")


def _spool_name(seq: int) -> str:
    return f"{seq:012d}{SPOOL_SUFFIX}"


_EXT = {"jpeg": "jpg", "png": "png"}


def _frame_meta(frame: Frame) -> dict[str, Any]:
    pose = None
    if frame.pose is not None:
        q = frame.pose.orientation_wxyz
        lla = frame.pose.lat_lon_alt
        pose = {
            "position_m": list(frame.pose.position_m),
            "orientation_wxyz": None if q is None else list(q),
            "lat_lon_alt": None if lla is None else list(lla),
        }
    return {
        "drive_id": frame.drive_id,
        "seq": frame.seq,
        "timestamp_ns": frame.timestamp_ns,
        "pose": pose,
        "cameras": [
            {
                "name": cam.name,
                "timestamp_ns": cam.timestamp_ns,
                "encoding": cam.encoding if cam.encoded is not None else None,
            }
            for cam in frame.cameras
        ],
        "lidar": None
        if frame.lidar is None
        else {"timestamp_ns": frame.lidar.timestamp_ns, "fields": list(frame.lidar.fields)},
    }


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_spool_frame(
    directory: str | Path,
    frame: Frame,
    *,
    layout: Literal["npz", "folder"] = "npz",
    lidar_format: Literal["bin", "pcd"] = "bin",
) -> Path:
    """Write ``frame`` into a spool directory atomically (temp name + rename); the path.

    ``layout="npz"``: one ``<seq>.npz``. ``layout="folder"``: a ``<seq>/`` folder with
    ``meta.json``, one encoded image file per camera and ``lidar.bin`` (float32) or
    ``lidar.pcd`` (``lidar_format``). Cameras without encoded bytes need ``"npz"``.
    """
    folder = Path(directory)
    meta = _frame_meta(frame)
    if layout == "folder":
        final = folder / f"{frame.seq:012d}"
        tmp = folder / f".{final.name}.{os.getpid()}.tmp"
        tmp.mkdir()
        for i, cam in enumerate(frame.cameras):
            if cam.encoded is None or cam.encoding is None:
                raise ValueError(f"camera {cam.name} has no encoded bytes; use layout='npz'")
            name = f"cam_{i}.{_EXT[cam.encoding]}"
            (tmp / name).write_bytes(cam.encoded)
            meta["cameras"][i]["file"] = name
        if frame.lidar is not None:
            name = f"lidar.{lidar_format}"
            if lidar_format == "pcd":
                write_pcd(tmp / name, frame.lidar.points, frame.lidar.fields)
            else:
                (tmp / name).write_bytes(np.ascontiguousarray(frame.lidar.points).tobytes())
            meta["lidar"]["file"] = name
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        for entry in tmp.iterdir():
            with entry.open("rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        os.replace(tmp, final)
        return final
    arrays: dict[str, Any] = {}
    for i, cam in enumerate(frame.cameras):
        if cam.encoded is not None and cam.encoding is not None:
            arrays[f"cam_{i}"] = np.frombuffer(cam.encoded, dtype=np.uint8)
        else:
            arrays[f"cam_{i}"] = np.asarray(cam.image)
    if frame.lidar is not None:
        arrays["lidar"] = np.asarray(frame.lidar.points, dtype=np.float32)
    arrays["meta"] = np.array(json.dumps(meta))
    final = folder / _spool_name(frame.seq)
    tmp = folder / f".{final.name}.{os.getpid()}.tmp"
    with tmp.open("wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def _tuple3(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    a, b, c = (float(v) for v in value)
    return (a, b, c)


CameraData = Callable[[int, dict[str, Any]], "bytes | NDArray[np.uint8]"]
LidarData = Callable[[dict[str, Any]], "tuple[NDArray[np.float32], tuple[str, ...]]"]


class DriveTracker:
    """Drive ids for entries without one (module docstring), kept in ``state_path``."""

    def __init__(self, state_path: Path, base: str) -> None:
        self.state_path = state_path
        self.base = (_UNSAFE_ID.sub("_", base).strip("._-") or "drive")[:80]
        self.drive_id: str | None = None
        self._last: tuple[int, int] | None = None  # (seq, timestamp_ns)
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            self.drive_id = str(state["drive_id"])
            self._last = (int(state["last_seq"]), int(state["last_timestamp_ns"]))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "drive state %s unreadable (%s): the next frame starts a new drive id",
                state_path,
                exc,
            )
            self.drive_id = None

    def drive_of(self, seq: int, timestamp_ns: int) -> str:
        """The drive id of the frame ``(seq, timestamp_ns)``; persists the new state."""
        last, drive = self._last, self.drive_id
        if drive is None or last is None or not (seq > last[0] or (seq, timestamp_ns) == last):
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(max(timestamp_ns, 0) / 1e9))
            drive = f"{self.base}-{stamp}-{uuid.uuid4().hex[:8]}"
            if last is not None:
                log.info("seq %d after %d: the bridge started a new drive, %s", seq, last[0], drive)
            fsync = True
        else:
            fsync = False
        self.drive_id, self._last = drive, (seq, timestamp_ns)
        self._save(drive, fsync=fsync)
        return drive

    def _save(self, drive: str, *, fsync: bool) -> None:
        seq, timestamp_ns = self._last or (0, 0)
        body = json.dumps({"drive_id": drive, "last_seq": seq, "last_timestamp_ns": timestamp_ns})
        tmp = self.state_path.with_name(f"{self.state_path.name}.tmp")
        try:
            with tmp.open("w", encoding="utf-8") as fh:
                fh.write(body)
                if fsync:  # a new drive id must survive a power cut; last_seq may lag
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.error("drive state %s not saved (%s)", self.state_path, exc)


@dataclass(frozen=True, slots=True)
class _Reading:
    """What building a frame from an entry needs besides the entry."""

    options: SourceOptions
    drive_of: Callable[[int, int], str]
    out_of_sync: Callable[[Path, str, int], None]


def _frame_from_meta(
    path: Path,
    meta: dict[str, Any],
    camera_data: CameraData,
    lidar_data: LidarData,
    ctx: _Reading,
) -> Frame:
    """Build the frame the contract describes; ``BadInputError`` on any breach."""
    try:
        seq = int(meta["seq"])
        ts = int(meta["timestamp_ns"])
        pose = None
        if meta.get("pose"):
            p = meta["pose"]
            position = _tuple3(p["position_m"])
            if position is None:
                raise ValueError("pose without position_m")
            q = p.get("orientation_wxyz")
            pose = EgoPose(
                position_m=position,
                orientation_wxyz=None
                if q is None
                else (float(q[0]), float(q[1]), float(q[2]), float(q[3])),
                lat_lon_alt=_tuple3(p.get("lat_lon_alt")),
            )
        ref_ts = int(meta["lidar"].get("timestamp_ns", ts)) if meta.get("lidar") else ts
        cams: list[CameraImage] = []
        for i, c in enumerate(meta.get("cameras", [])):
            name = str(c["name"])
            if not ctx.options.wants_camera(name):
                continue
            cam_ts = int(c.get("timestamp_ns", ts))
            if abs(cam_ts - ref_ts) > ctx.options.sync_tolerance_ns:
                ctx.out_of_sync(path, name, cam_ts - ref_ts)
                continue
            data = camera_data(i, c)
            if c.get("encoding") is None:
                if (
                    not isinstance(data, np.ndarray)
                    or data.dtype != np.uint8
                    or data.ndim != 3
                    or data.shape[2] != 3
                ):
                    raise ValueError(f"raw camera {name} must be (H, W, 3) uint8")
                cams.append(CameraImage(name, cam_ts, data))
            else:
                raw = data if isinstance(data, bytes) else data.tobytes()
                image, encoding = decode_image(raw, f"{path}#{name}", name)
                cams.append(CameraImage(name, cam_ts, image, raw, encoding))
        lidar = None
        if meta.get("lidar"):
            points, fields = lidar_data(meta["lidar"])
            if points.ndim != 2 or points.shape[1] != len(fields) or fields[:3] != ("x", "y", "z"):
                raise ValueError(f"lidar shape {points.shape} does not match fields {fields}")
            lidar = LidarSweep(
                int(meta["lidar"].get("timestamp_ns", ts)), points.astype(np.float32), fields
            )
        drive = str(meta.get("drive_id") or "")
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise BadInputError(
            SourceErrorReason.BAD_CONTENT,
            path,
            f"spool entry does not follow the frame contract ({type(exc).__name__}: "
            f"{exc}); moved to rejected/: fix the bridge (docs/sources.md)",
        ) from exc
    return Frame(
        vehicle_id=ctx.options.vehicle_id,
        drive_id=drive or ctx.drive_of(seq, ts),
        seq=seq,
        timestamp_ns=ts,
        pose=pose,
        cameras=tuple(cams),
        lidar=lidar,
    )


def _read_spool_file(path: Path, ctx: _Reading) -> Frame:
    try:
        with path.open("rb") as fh:
            loaded = np.load(fh, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            with loaded as npz:
                meta = json.loads(str(npz["meta"]))
                arrays = {k: npz[k] for k in npz.files if k != "meta"}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInputError(
            SourceErrorReason.DECODE_FAILED,
            path,
            f"spool file is not a readable frame ({type(exc).__name__}: {exc}); moved to "
            "rejected/: check the bridge writes via a temp name and rename",
        ) from exc
    if not isinstance(meta, dict):
        raise BadInputError(SourceErrorReason.BAD_CONTENT, path, "meta is not a JSON object")

    def camera(i: int, _: dict[str, Any]) -> NDArray[np.uint8]:
        data: NDArray[np.uint8] = arrays[f"cam_{i}"]
        return data

    def lidar(info: dict[str, Any]) -> tuple[NDArray[np.float32], tuple[str, ...]]:
        return arrays["lidar"], tuple(str(f) for f in info["fields"])

    return _frame_from_meta(path, meta, camera, lidar, ctx)


def _member(folder: Path, info: dict[str, Any]) -> Path:
    name = str(info["file"])
    if Path(name).name != name or name.startswith("."):
        raise ValueError(f"file {name!r} must be a plain name inside the frame folder")
    return folder / name


def _read_spool_folder(path: Path, ctx: _Reading) -> Frame:
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        if not path.exists():
            raise
        raise BadInputError(
            SourceErrorReason.MISSING_FILE,
            path / "meta.json",
            "frame folder without meta.json; moved to rejected/: the bridge must rename "
            "the folder only once it is complete",
        ) from exc
    except (OSError, ValueError) as exc:
        raise BadInputError(
            SourceErrorReason.DECODE_FAILED,
            path / "meta.json",
            f"unreadable meta.json ({type(exc).__name__}: {exc}); moved to rejected/",
        ) from exc
    if not isinstance(meta, dict):
        raise BadInputError(SourceErrorReason.BAD_CONTENT, path, "meta.json is not an object")

    def camera(_: int, info: dict[str, Any]) -> bytes:
        file = _member(path, info)
        try:
            return file.read_bytes()
        except OSError as exc:
            raise BadInputError(
                SourceErrorReason.MISSING_FILE,
                file,
                f"camera file named in meta.json is unreadable ({exc}); moved to rejected/",
                str(info.get("name", "")),
            ) from exc

    def lidar(info: dict[str, Any]) -> tuple[NDArray[np.float32], tuple[str, ...]]:
        file = _member(path, info)
        if file.suffix == ".pcd":
            return read_pcd(file)
        fields = tuple(str(f) for f in info["fields"])
        return read_float32_records(file, len(fields), "lidar"), fields

    return _frame_from_meta(path, meta, camera, lidar, ctx)


def _move_into(path: Path, folder: Path) -> None:
    """Move a spool entry into ``folder``; never overwrite an earlier entry of that name."""
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    if target.exists():
        target = folder / f"{path.name}.{time.time_ns()}"
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, target)


class SpoolDirSource(SourceBase):
    """Frames dropped into ``directory`` by a sensor bridge. See the module docstring.

    ``clock`` (monotonic seconds) is injectable for tests; waiting is done on the stop
    event, so ``stop()`` wakes a waiting ``frames()`` at once.
    """

    def __init__(
        self,
        directory: str | Path,
        options: SourceOptions | None = None,
        *,
        poll_interval_s: float = 0.05,
        idle_timeout_s: float | None = None,
        on_consumed: Literal["delete", "move"] = "delete",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        root = Path(directory)
        super().__init__(root, options or SourceOptions())
        if not root.is_dir():
            raise SourceOpenError(str(root), "spool directory does not exist; create it first")
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s}")
        if on_consumed not in ("delete", "move"):
            raise ValueError(f"on_consumed must be 'delete' or 'move', got {on_consumed!r}")
        self.poll_interval_s = poll_interval_s
        self.idle_timeout_s = idle_timeout_s
        self.on_consumed = on_consumed
        self._clock = clock
        self._stop = threading.Event()
        self.done_dir = root / "done"
        self.rejected_dir = root / "rejected"
        self.drives = DriveTracker(root / DRIVE_STATE, self.options.drive_id or root.name)
        self.counts: dict[str, int] = {"camera_out_of_sync": 0}
        self._limited = RateLimitedLogger(log, interval_s=60.0, clock=clock)
        self._reading = _Reading(self.options, self.drives.drive_of, self._out_of_sync)
        self.drive_id = self.drives.drive_id or self.drive_id  # what errors are filed under

    def _out_of_sync(self, path: Path, camera: str, delta_ns: int) -> None:
        self.counts["camera_out_of_sync"] += 1
        self._limited.log(
            "camera_out_of_sync",
            logging.WARNING,
            "%s: camera %s is %.1f ms from the frame's reference time, more than the sync "
            "tolerance of %.1f ms: left out of the frame (fix the bridge's sync, or raise "
            "source.sync_tolerance_ms)",
            path,
            camera,
            delta_ns / 1e6,
            self.options.sync_tolerance_ns / 1e6,
        )

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        super().close()

    def pending(self) -> list[Path]:
        """Complete frame files and folders waiting, in order (temp names excluded)."""
        with os.scandir(self.root) as it:
            names = sorted(
                e.name
                for e in it
                if not e.name.startswith(".")
                and (
                    (e.is_file() and e.name.endswith(SPOOL_SUFFIX))
                    or (e.is_dir() and e.name.isdigit())
                )
            )
        return [self.root / n for n in names]

    def _ack(self, path: Path) -> None:
        if self.on_consumed == "move":
            _move_into(path, self.done_dir)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def _reject(self, path: Path) -> None:
        _move_into(path, self.rejected_dir)

    def frames(self) -> Iterator[Frame | SourceError]:
        last_activity = self._clock()
        while not self._stop.is_set():
            batch = self.pending()
            if not batch:
                if (
                    self.idle_timeout_s is not None
                    and self._clock() - last_activity >= self.idle_timeout_s
                ):
                    return
                self._stop.wait(self.poll_interval_s)
                continue
            for path in batch:
                if self._stop.is_set():
                    return
                try:
                    read = _read_spool_folder if path.is_dir() else _read_spool_file
                    frame = read(path, self._reading)
                except BadInputError as defect:
                    self._reject(path)
                    yield self.error(defect, None, None)
                    continue
                except FileNotFoundError:
                    continue  # taken away between listing and reading
                self.drive_id = frame.drive_id
                yield frame
                # The consumer asked for the next frame: the last one is in its hands.
                self._ack(path)
            last_activity = self._clock()
