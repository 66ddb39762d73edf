"""MCAP recordings of ROS 2 topics (``ros2 bag record -s mcap``).

Read with ``mcap`` + ``mcap-ros2-support`` (CDR decoding from the ``ros2msg`` schemas the
file carries; no ROS installation needed). Topics are classified by schema name:

* ``sensor_msgs/msg/PointCloud2``: LiDAR. ``x, y, z`` and every other scalar field
  (``intensity``, ``ring``, ``time`` ...) become float32 columns, in the message's order.
* ``sensor_msgs/msg/Image`` (``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``) and
  ``sensor_msgs/msg/CompressedImage`` (``jpeg`` / ``png``): cameras, named after the topic
  by :func:`schemas.messages.camera_name` (``/camera/front/image_raw`` ->
  ``camera.front.image_raw``: a ``/`` is illegal in a camera name); the topic itself stays on
  the image as ``CameraImage.source``. ``source.cameras`` may list topics or names.
* ``sensor_msgs/msg/NavSatFix``: the pose (ENU metres relative to the first valid fix,
  interpolated at the frame time, no orientation); fixes with ``status.status < 0``
  (no fix) are ignored.

Time is ``header.stamp`` (sensor time) where set, else the MCAP log time. Frames are built
on the point-cloud topic (``lidar_topic``, default: the first point-cloud topic by name; if
the file has none, the first camera topic), cameras matched by nearest stamp.

Two streaming passes over the file, in file order (a truncated recording is read up to
where it ends, and its last frames are followed by a ``SourceError``). The first reads only
the 8-byte stamp of each message (the header is the first field of every supported type,
so it sits right after the 4-byte CDR encapsulation header) and decodes the small
NavSatFix messages; the second decodes only the messages that made it into a frame, and
buffers them until their frame is complete, so memory stays at the few frames the
recording interleaves.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mcap.reader import NonSeekingReader
from mcap.records import Channel, Message, Schema
from mcap_ros2.decoder import DecoderFactory
from numpy.typing import NDArray

from edge_agent.errors import SourceOpenError
from edge_agent.frame import CameraImage, Frame, LidarSweep, SourceError, SourceErrorReason
from edge_agent.sources.base import BadInputError, SourceBase, SourceOptions, decode_image
from edge_agent.sources.geo import ecef_to_enu, geodetic_to_ecef
from edge_agent.sources.sync import PoseTrack, match_nearest, poses_at
from schemas.messages import camera_name

__all__ = ["McapSource", "pointcloud2_to_array"]

log = logging.getLogger(__name__)

POINTCLOUD2 = "PointCloud2"
IMAGE = "Image"
COMPRESSED_IMAGE = "CompressedImage"
NAVSATFIX = "NavSatFix"
_KINDS = {POINTCLOUD2, IMAGE, COMPRESSED_IMAGE, NAVSATFIX}

# sensor_msgs/PointField datatypes.
_POINTFIELD_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC3": 3, "8UC1": 1}


def _kind(schema: Schema | None) -> str | None:
    if schema is None or not schema.name.startswith("sensor_msgs/"):
        return None
    kind = schema.name.rsplit("/", 1)[-1]
    return kind if kind in _KINDS else None


def _header_stamp_ns(data: bytes) -> int:
    """``header.stamp`` of a CDR message whose first field is a std_msgs/Header; 0 if
    the bytes are too short."""
    if len(data) < 12:
        return 0
    order = "<" if data[1] & 1 else ">"
    sec, nsec = struct.unpack_from(f"{order}iI", data, 4)
    return int(sec) * 1_000_000_000 + int(nsec)


def pointcloud2_to_array(
    msg: Any, path: str, topic: str
) -> tuple[NDArray[np.float32], tuple[str, ...]]:
    """A decoded ``sensor_msgs/PointCloud2`` -> ``(N, C)`` float32 and field names.

    ``x, y, z`` first, then the other scalar fields in message order; array fields
    (``count > 1``) and unknown datatypes are skipped.
    """
    names: list[str] = []
    formats: list[str] = []
    offsets: list[int] = []
    order = ">" if msg.is_bigendian else "<"
    for f in msg.fields:
        dtype = _POINTFIELD_DTYPES.get(int(f.datatype))
        if dtype is None or int(f.count) != 1 or not f.name or f.name in names:
            continue
        names.append(str(f.name))
        formats.append(order + dtype)
        offsets.append(int(f.offset))
    if not {"x", "y", "z"} <= set(names):
        raise BadInputError(
            SourceErrorReason.BAD_CONTENT,
            path,
            f"PointCloud2 on {topic} has fields {names}, needs scalar x, y, z; "
            "fix the driver's point format",
            topic,
        )
    n = int(msg.width) * int(msg.height)
    step = int(msg.point_step)
    data = msg.data
    if step <= 0 or len(data) < n * step:
        raise BadInputError(
            SourceErrorReason.BAD_SIZE,
            path,
            f"PointCloud2 on {topic}: {len(data)} data bytes for {n} points of {step} bytes; "
            "the message is truncated or its header is wrong",
            topic,
        )
    try:
        record = np.dtype(
            {"names": names, "formats": formats, "offsets": offsets, "itemsize": step}
        )
    except (ValueError, TypeError) as exc:
        raise BadInputError(
            SourceErrorReason.BAD_CONTENT, path, f"PointCloud2 on {topic}: bad fields: {exc}", topic
        ) from exc
    if int(msg.row_step) == int(msg.width) * step or int(msg.height) <= 1:
        records = np.frombuffer(data, dtype=record, count=n)
    else:  # rows padded: take each row separately
        row = int(msg.row_step)
        raw = np.frombuffer(data, dtype=np.uint8, count=row * int(msg.height))
        rows = raw.reshape(int(msg.height), row)[:, : int(msg.width) * step]
        records = np.frombuffer(rows.tobytes(), dtype=record, count=n)
    ordered = ["x", "y", "z"] + [name for name in names if name not in ("x", "y", "z")]
    out = np.empty((n, len(ordered)), dtype=np.float32)
    for i, name in enumerate(ordered):
        out[:, i] = records[name]
    return out, tuple(ordered)


def image_msg_to_array(msg: Any, path: str, topic: str) -> NDArray[np.uint8]:
    """A decoded ``sensor_msgs/Image`` -> ``(H, W, 3)`` uint8 RGB."""
    encoding = str(msg.encoding)
    channels = _CHANNELS.get(encoding)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if channels is None:
        raise BadInputError(
            SourceErrorReason.BAD_CONTENT,
            path,
            f"Image on {topic}: pixel encoding {encoding!r} not supported "
            f"(supported: {sorted(_CHANNELS)}); republish as rgb8 or compressed",
            topic,
        )
    if h <= 0 or w <= 0 or step < w * channels or len(msg.data) < h * step:
        raise BadInputError(
            SourceErrorReason.BAD_SIZE,
            path,
            f"Image on {topic}: {len(msg.data)} bytes for {h}x{w} {encoding} (step {step}); "
            "the message is truncated or its header is wrong",
            topic,
        )
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=h * step).reshape(h, step)
    pixels = raw[:, : w * channels].reshape(h, w, channels)
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    if encoding.startswith("bgr") or encoding == "8UC3":  # OpenCV's 8UC3 is BGR
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


@dataclass(slots=True)
class _Index:
    """Pass-one result: per topic the kind, stamps and message positions."""

    kinds: dict[str, str] = field(default_factory=dict)
    stamps: dict[str, list[int]] = field(default_factory=dict)
    fixes: list[tuple[int, float, float, float]] = field(default_factory=list)
    error: BadInputError | None = None


class McapSource(SourceBase):
    """A ROS 2 MCAP file. See the module docstring.

    ``lidar_topic`` picks the reference point-cloud topic; ``pose_tolerance_ns`` how far
    outside the NavSatFix span a frame may still get a pose (fixes come at 1-10 Hz, so
    this is wider than the camera tolerance).
    """

    def __init__(
        self,
        path: str | Path,
        options: SourceOptions | None = None,
        *,
        lidar_topic: str | None = None,
        pose_tolerance_ns: int = 1_000_000_000,
    ) -> None:
        root = Path(path)
        super().__init__(root, options or SourceOptions())
        if not root.is_file():
            raise SourceOpenError(str(root), "no such MCAP file")
        self.pose_tolerance_ns = pose_tolerance_ns
        self._factory = DecoderFactory()
        self._index = self._scan()
        if not self._index.kinds and self._index.error is not None:
            raise SourceOpenError(str(root), self._index.error.message)
        clouds = sorted(t for t, k in self._index.kinds.items() if k == POINTCLOUD2)
        self.camera_topics = tuple(
            sorted(
                t
                for t, k in self._index.kinds.items()
                if k in (IMAGE, COMPRESSED_IMAGE)
                and (self.options.wants_camera(t) or self.options.wants_camera(camera_name(t)))
            )
        )
        self.camera_names = {t: camera_name(t) for t in self.camera_topics}
        if len(set(self.camera_names.values())) != len(self.camera_names):
            raise SourceOpenError(
                str(root),
                f"camera topics {sorted(self.camera_topics)} map onto the same camera name "
                f"({self.camera_names}); list the ones to read in source.cameras",
            )
        if lidar_topic is not None and lidar_topic not in clouds:
            raise SourceOpenError(
                str(root), f"lidar_topic {lidar_topic!r} is not a PointCloud2 topic ({clouds})"
            )
        self.lidar_topic = lidar_topic or (clouds[0] if clouds else None)
        self.reference = self.lidar_topic or (self.camera_topics[0] if self.camera_topics else None)
        self._poses = self._pose_track()

    def _records(self, errors: list[Exception]) -> Iterator[tuple[Schema | None, Channel, Message]]:
        """Messages in file order; a read failure ends the stream and lands in ``errors``.

        Streaming (``NonSeekingReader``): works on files cut off by a power loss (no
        summary, no footer) and reads each chunk once. Only the reader's own ``next()``
        is guarded, so a bug in this module is not mistaken for a damaged file.
        """
        with self.root.open("rb") as fh:
            it = NonSeekingReader(fh).iter_messages(log_time_order=False)
            while True:
                try:
                    item = next(it)
                except StopIteration:
                    return
                except Exception as exc:  # mcap, zstd and lz4 raise their own types
                    errors.append(exc)
                    return
                yield item

    def _scan(self) -> _Index:
        index = _Index()
        errors: list[Exception] = []
        for schema, channel, message in self._records(errors):
            kind = _kind(schema)
            if kind is None:
                continue
            topic = channel.topic
            index.kinds.setdefault(topic, kind)
            stamp = _header_stamp_ns(message.data) or int(message.log_time)
            index.stamps.setdefault(topic, []).append(stamp)
            if kind == NAVSATFIX:
                try:
                    fix = self._decode(schema, message.data)
                    if fix is not None and int(fix.status.status) >= 0:
                        index.fixes.append(
                            (stamp, float(fix.latitude), float(fix.longitude), float(fix.altitude))
                        )
                except Exception as exc:  # the CDR decoder raises assorted errors
                    log.warning(
                        "%s: NavSatFix on %s undecodable, skipped: %s", self.root, topic, exc
                    )
        if errors:
            first = errors[0]
            index.error = BadInputError(
                SourceErrorReason.TRUNCATED,
                self.root,
                f"MCAP file unreadable after {sum(map(len, index.stamps.values()))} messages "
                f"({type(first).__name__}: {first}); the recording was cut off: frames up to "
                "there are used; run `mcap recover` on the file to salvage the rest",
            )
        return index

    def _decode(self, schema: Schema | None, data: bytes) -> Any:
        decoder: Callable[[bytes], Any] | None = self._factory.decoder_for("cdr", schema)
        return None if decoder is None else decoder(data)

    def _pose_track(self) -> PoseTrack | None:
        fixes = sorted(self._index.fixes)
        if not fixes:
            return None
        arr = np.array([f[1:] for f in fixes], dtype=np.float64)
        ts = np.array([f[0] for f in fixes], dtype=np.int64)
        ecef = geodetic_to_ecef(arr[:, 0], arr[:, 1], arr[:, 2])
        return PoseTrack(ts, ecef_to_enu(ecef, ecef[0]), None, arr)

    def __len__(self) -> int:
        return len(self._index.stamps.get(self.reference, [])) if self.reference else 0

    def _plan(
        self, reference: str
    ) -> tuple[NDArray[np.int64], dict[tuple[str, int], list[int]], list[int]]:
        """Reference stamps, which frames need each (topic, message number), and how many
        messages each frame waits for."""
        ref_order = np.asarray(self._index.stamps[reference], dtype=np.int64)
        # Reference messages are numbered in log order; frames go in stamp order.
        by_stamp = np.argsort(ref_order, kind="stable")
        ref_ts = ref_order[by_stamp]
        needs: dict[tuple[str, int], list[int]] = {}
        waiting = [0] * ref_ts.size
        for f, msg_no in enumerate(by_stamp.tolist()):
            needs.setdefault((reference, msg_no), []).append(f)
            waiting[f] += 1
        for topic in self.camera_topics:
            if topic == reference:
                continue
            stamps = np.asarray(self._index.stamps[topic], dtype=np.int64)
            order = np.argsort(stamps, kind="stable")
            pos = match_nearest(ref_ts, stamps[order], self.options.sync_tolerance_ns)
            for f, p in enumerate(pos.tolist()):
                if p >= 0:
                    needs.setdefault((topic, int(order[p])), []).append(f)
                    waiting[f] += 1
        return ref_ts, needs, waiting

    def frames(self) -> Iterator[Frame | SourceError]:
        if self.reference is None:
            if self._index.error is not None:
                yield self.error(self._index.error, None, None)
            return
        ref_ts, needs, waiting = self._plan(self.reference)
        poses = poses_at(self._poses, ref_ts, self.pose_tolerance_ns)
        parts: list[dict[str, CameraImage | LidarSweep]] = [{} for _ in range(ref_ts.size)]
        failed: dict[int, BadInputError] = {}
        counters: dict[str, int] = {}
        next_frame = 0
        errors: list[Exception] = []
        for schema, channel, message in self._records(errors):
            if self._closed:
                return
            topic = channel.topic
            if _kind(schema) is None:
                continue
            msg_no = counters.get(topic, 0)
            counters[topic] = msg_no + 1
            targets = needs.pop((topic, msg_no), None)
            if targets is None:
                continue
            try:
                part = self._part(schema, topic, message.data, message.log_time)
            except BadInputError as defect:
                for f in targets:
                    failed.setdefault(f, defect)
            else:
                for f in targets:
                    parts[f][topic] = part
            for f in targets:
                waiting[f] -= 1
            while next_frame < ref_ts.size and waiting[next_frame] == 0:
                yield self._emit(next_frame, ref_ts, parts, failed, poses)
                next_frame += 1
        if errors:
            log.warning("%s: stopped reading: %s", self.root, errors[0])
        # Frames whose messages were cut off by a truncated file: emit what arrived.
        while next_frame < ref_ts.size:
            has_ref = self.reference in parts[next_frame]
            if has_ref or next_frame in failed:
                yield self._emit(next_frame, ref_ts, parts, failed, poses)
            next_frame += 1
        if self._index.error is not None:
            yield self.error(self._index.error, None, None)

    def _part(
        self, schema: Schema | None, topic: str, data: bytes, log_time: int
    ) -> CameraImage | LidarSweep:
        path = f"{self.root}#{topic}"
        stamp = _header_stamp_ns(data) or int(log_time)
        type_name = schema.name if schema else "?"
        try:
            msg = self._decode(schema, data)
        except Exception as exc:  # the CDR decoder raises assorted errors on bad bytes
            raise BadInputError(
                SourceErrorReason.DECODE_FAILED,
                path,
                f"message at log time {log_time} does not decode as {type_name} "
                f"({type(exc).__name__}: {exc}); check the publisher's message definition",
                topic,
            ) from exc
        kind = _kind(schema)
        if kind == POINTCLOUD2:
            points, fields = pointcloud2_to_array(msg, path, topic)
            return LidarSweep(stamp, points, fields)
        if kind == IMAGE:
            image_array = image_msg_to_array(msg, path, topic)
            return CameraImage(self.camera_names[topic], stamp, image_array, source=topic)
        fmt = str(msg.format).lower()
        raw = bytes(msg.data)
        image, encoding = decode_image(raw, f"{path} ({fmt})", topic)
        return CameraImage(self.camera_names[topic], stamp, image, raw, encoding, source=topic)

    def _emit(
        self,
        f: int,
        ref_ts: NDArray[np.int64],
        parts: list[dict[str, CameraImage | LidarSweep]],
        failed: dict[int, BadInputError],
        poses: list[Any],
    ) -> Frame | SourceError:
        ts = int(ref_ts[f])
        got = parts[f]
        parts[f] = {}
        if f in failed:
            return self.error(failed.pop(f), f, ts)
        lidar = got.get(self.lidar_topic) if self.lidar_topic else None
        cams = tuple(p for t in self.camera_topics if isinstance(p := got.get(t), CameraImage))
        return self.make_frame(
            f, ts, poses[f], cams, lidar if isinstance(lidar, LidarSweep) else None
        )
