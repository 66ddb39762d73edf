"""The messages on the wire, as frozen dataclasses, and their validation.

Three message types travel between the fleet and the centre (``docs/schemas.md`` lists every
field): :class:`FrameEnvelope` (a selected frame, vehicle -> ingest, topic ``fleet.frames``),
:class:`ModelUpdate` (a model to roll out, registry -> vehicles, ``fleet.models``) and
:class:`LabelMessage` (labels for a frame, labeling tool -> ingest). Serialisation lives in
:mod:`schemas.wire`; this module knows nothing about bytes on the wire.

:func:`validate` checks a message and raises :class:`~schemas.errors.ValidationError` naming the
first bad field as a dotted path (``selection.components[entropy]``); :func:`schemas.wire.encode`
calls it before writing anything.

>>> frame_key("veh-0042", "2026-11-23T08-00", 123)
'veh-0042/2026-11-23T08-00/000123'
>>> parse_frame_key("veh-0042/2026-11-23T08-00/000123")
FrameKey(vehicle_id='veh-0042', drive_id='2026-11-23T08-00', frame_seq=123)
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from schemas.errors import ValidationError

__all__ = [
    "CAMERA_ENCODINGS",
    "LIDAR_COMPRESSIONS",
    "Box2D",
    "Box3D",
    "CameraPayload",
    "EgoPose",
    "FrameEnvelope",
    "FrameKey",
    "GeoPoint",
    "LabelMessage",
    "LidarPayload",
    "Message",
    "ModelInfo",
    "ModelUpdate",
    "SelectionRecord",
    "camera_name",
    "frame_key",
    "in_stage",
    "parse_frame_key",
    "stage_includes",
    "validate",
    "vehicle_bucket",
]

CAMERA_ENCODINGS = ("jpeg", "png", "raw")  # raw: packed RGB8, row-major, width*height*3 bytes
LIDAR_COMPRESSIONS = ("zstd", "lz4", "none")

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=@-]{0,127}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_NOT_ID_CHARS = re.compile(r"[^A-Za-z0-9._:+=@-]+")
_SEQ_WIDTH = 6
_MAX_LONG = 2**63 - 1


# --- camera names -----------------------------------------------------------------------------


def camera_name(source: str) -> str:
    """A legal camera name for a sensor named ``source`` (a ROS topic, a file stem).

    Camera names become blob and file names at ingest, so they follow the id rule: 1-128 of
    letters, digits and ``._:+=@-``, starting with a letter or digit, never ``/``. A ROS topic
    maps one to one onto dots (``/`` cannot otherwise appear in a name):

    >>> camera_name("/camera/front/image_raw/compressed")
    'camera.front.image_raw.compressed'
    >>> camera_name("CAM_FRONT")
    'CAM_FRONT'
    >>> camera_name("/cam 2/img")
    'cam_2.img'
    """
    name = _NOT_ID_CHARS.sub("_", source.strip("/").replace("/", ".")).lstrip("._:+=@-")
    if not name:
        raise ValidationError("camera name", f"{source!r} has no letter or digit to name it by")
    if len(name) > 128:  # keep it unique: a prefix plus a digest of the whole
        digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
        name = f"{name[:111]}.{digest}"
    return name


# --- frame keys -------------------------------------------------------------------------------


class FrameKey(NamedTuple):
    """The idempotency key of a frame: (vehicle_id, drive_id, frame_seq)."""

    vehicle_id: str
    drive_id: str
    frame_seq: int


def frame_key(vehicle_id: str, drive_id: str, frame_seq: int) -> str:
    """``"vehicle/drive/000123"``: the Kafka record key and blob name of a frame.

    The sequence is zero-padded to six digits (longer when larger) so keys of one drive sort in
    frame order up to a million frames.
    """
    _check_id("vehicle_id", vehicle_id)
    _check_id("drive_id", drive_id)
    _check_long("frame_seq", frame_seq, minimum=0)
    return f"{vehicle_id}/{drive_id}/{frame_seq:0{_SEQ_WIDTH}d}"


def parse_frame_key(key: str) -> FrameKey:
    """The inverse of :func:`frame_key`; raises :class:`ValidationError` for a malformed key."""
    parts = key.split("/")
    if len(parts) != 3:
        raise ValidationError("frame_key", f"{key!r} is not 'vehicle/drive/seq'")
    vehicle_id, drive_id, seq = parts
    _check_id("frame_key.vehicle_id", vehicle_id)
    _check_id("frame_key.drive_id", drive_id)
    if not (seq.isascii() and seq.isdigit() and len(seq) >= _SEQ_WIDTH):
        raise ValidationError("frame_key.frame_seq", f"{seq!r} is not a zero-padded sequence")
    frame_seq = int(seq)
    if f"{frame_seq:0{_SEQ_WIDTH}d}" != seq:
        raise ValidationError("frame_key.frame_seq", f"{seq!r} is not in canonical form")
    _check_long("frame_key.frame_seq", frame_seq, minimum=0)
    return FrameKey(vehicle_id, drive_id, frame_seq)


# --- frame envelope ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GeoPoint:
    """WGS84 position: latitude and longitude in degrees, altitude in metres (ellipsoid)."""

    lat_deg: float
    lon_deg: float
    alt_m: float


@dataclass(frozen=True, slots=True)
class EgoPose:
    """Vehicle pose when the frame was taken.

    ``position_local`` is (x, y, z) in metres in the drive's local frame (x forward at the
    drive's start, z up); ``orientation_wxyz`` a unit quaternion from vehicle to local frame.
    :meth:`from_heading` builds one from a yaw angle when that is all the source has.
    """

    position_local: tuple[float, float, float]
    orientation_wxyz: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    geo: GeoPoint | None = None

    @classmethod
    def from_heading(
        cls, x: float, y: float, z: float, heading_rad: float, geo: GeoPoint | None = None
    ) -> EgoPose:
        """A pose rotated by ``heading_rad`` about the local z axis (counter-clockwise)."""
        half = heading_rad / 2.0
        return cls((x, y, z), (math.cos(half), 0.0, 0.0, math.sin(half)), geo)

    @property
    def heading_rad(self) -> float:
        """Yaw about the local z axis, in (-pi, pi]."""
        w, x, y, z = self.orientation_wxyz
        return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


@dataclass(frozen=True, slots=True)
class CameraPayload:
    """One camera image; ``encoding`` is one of :data:`CAMERA_ENCODINGS`.

    ``timestamp_ns`` is the camera's own exposure time when it differs from the frame's
    (nuScenes cameras fire up to ~50 ms apart); None means the frame's timestamp.
    """

    name: str
    encoding: str
    width: int
    height: int
    data: bytes
    timestamp_ns: int | None = None


@dataclass(frozen=True, slots=True)
class LidarPayload:
    """A LiDAR sweep encoded by :func:`schemas.pointcloud.encode_points`.

    ``point_count``, ``fields``, ``quantum_m`` and ``compression`` repeat what the point-cloud
    header says so that ingest can index and account for a sweep without decoding it.
    """

    point_count: int
    fields: tuple[str, ...]
    quantum_m: float
    compression: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SelectionRecord:
    """Why the selector kept this frame: the score, its parts and the threshold it beat."""

    score: float
    threshold: float
    strategy: str
    reason: str
    params_sha256: str  # hex sha256 of the strategy's canonical parameters
    components: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model that scored the frame."""

    name: str
    version: str
    sha256: str  # hex, of the ONNX file


@dataclass(frozen=True, slots=True)
class FrameEnvelope:
    """A selected frame: who, when, where, the sensor data, and why it was selected."""

    vehicle_id: str
    drive_id: str
    frame_seq: int
    timestamp_ns: int  # UTC, nanoseconds since the Unix epoch
    pose: EgoPose
    cameras: tuple[CameraPayload, ...]
    lidar: LidarPayload | None
    selection: SelectionRecord
    models: tuple[ModelInfo, ...]
    agent_version: str

    @property
    def key(self) -> str:
        """The frame key, ``vehicle/drive/seq``."""
        return frame_key(self.vehicle_id, self.drive_id, self.frame_seq)


# --- model update -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelUpdate:
    """A model to roll out: fetched from ``url`` or carried ``inline`` (exactly one of them).

    ``sha256`` (hex) and ``size_bytes`` describe the ONNX file; the agent verifies both before it
    swaps the model in. Agents older than ``min_agent_version`` ignore the update.
    ``signature`` (wire v1.1): Ed25519 over the update (:mod:`schemas.signing`); an agent
    configured with the fleet's public key refuses updates without a valid one.
    ``target_vehicles`` and ``target_fraction`` (wire v1.2, signed): the stage of a staged
    rollout: the update is for the vehicles it names and for the share ``target_fraction`` of
    the fleet that :func:`vehicle_bucket` picks; ``()`` and ``1.0`` (the default): every
    vehicle. :func:`in_stage` decides.
    """

    name: str
    version: str
    sha256: str
    size_bytes: int
    min_agent_version: str
    created_ns: int
    url: str | None = None
    inline: bytes | None = None
    signature: bytes | None = None
    target_vehicles: tuple[str, ...] = ()
    target_fraction: float = 1.0

    @property
    def whole_fleet(self) -> bool:
        return self.target_fraction >= 1.0


def vehicle_bucket(vehicle_id: str, name: str, version: str) -> float:
    """Where a vehicle falls in ``[0, 1)`` for the rollout of model ``name`` ``version``.

    A hash, so every party computes it alike and without a fleet list; per model version, so
    the first vehicles to get a model are not always the same; and a vehicle in the first 5 %
    of a version is also in its first 25 %: widening a stage never drops a vehicle.

    >>> b = vehicle_bucket("veh-0042", "ref-camera", "1.0.1")
    >>> 0.0 <= b < 1.0, b == vehicle_bucket("veh-0042", "ref-camera", "1.0.1")
    (True, True)
    """
    digest = hashlib.sha256(f"{name}\0{version}\0{vehicle_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def in_stage(update: ModelUpdate, vehicle_id: str) -> bool:
    """Whether ``update`` is for ``vehicle_id`` (its ``target_vehicles`` / ``target_fraction``).

    >>> canary = ModelUpdate("m", "2", "ab" * 32, 1, "0.1.0", 0, url="s3://m",
    ...                      target_vehicles=("veh-a",), target_fraction=0.0)
    >>> in_stage(canary, "veh-a"), in_stage(canary, "veh-b")
    (True, False)
    """
    return stage_includes(
        vehicle_id,
        name=update.name,
        version=update.version,
        vehicles=update.target_vehicles,
        fraction=update.target_fraction,
    )


def stage_includes(
    vehicle_id: str, *, name: str, version: str, vehicles: Sequence[str], fraction: float
) -> bool:
    """Whether a stage (named ``vehicles`` and a ``fraction`` of the fleet) of the rollout of
    ``name`` ``version`` includes ``vehicle_id``: :func:`in_stage` without the update."""
    if fraction >= 1.0 or vehicle_id in vehicles:
        return True
    return vehicle_bucket(vehicle_id, name, version) < fraction


# --- labels -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Box2D:
    """An axis-aligned image box in pixels, (x1, y1) top-left, (x2, y2) bottom-right."""

    camera: str
    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True, slots=True)
class Box3D:
    """A 3D box in the LiDAR frame: centre (m), size length/width/height (m), yaw (rad)."""

    class_name: str
    center_xyz: tuple[float, float, float]
    size_lwh: tuple[float, float, float]
    yaw_rad: float


@dataclass(frozen=True, slots=True)
class LabelMessage:
    """Labels for one frame from one labeler (a task in the labeling queue)."""

    task_id: str
    frame_key: str
    labeler: str
    created_ns: int
    boxes_2d: tuple[Box2D, ...] = ()
    boxes_3d: tuple[Box3D, ...] = ()


Message = FrameEnvelope | ModelUpdate | LabelMessage


# --- validation -------------------------------------------------------------------------------


def validate(msg: Message) -> None:
    """Raise :class:`ValidationError` naming the first bad field of ``msg``."""
    if isinstance(msg, FrameEnvelope):
        _validate_frame(msg)
    elif isinstance(msg, ModelUpdate):
        _validate_model_update(msg)
    elif isinstance(msg, LabelMessage):
        _validate_label(msg)
    else:
        raise ValidationError("message", f"{type(msg).__name__} is not a wire message type")


def _validate_frame(m: FrameEnvelope) -> None:
    _check_id("vehicle_id", m.vehicle_id)
    _check_id("drive_id", m.drive_id)
    _check_long("frame_seq", m.frame_seq, minimum=0)
    _check_long("timestamp_ns", m.timestamp_ns, minimum=0)
    _check_floats("pose.position_local", m.pose.position_local, 3)
    _check_floats("pose.orientation_wxyz", m.pose.orientation_wxyz, 4)
    norm = math.sqrt(sum(c * c for c in m.pose.orientation_wxyz))
    if abs(norm - 1.0) > 1e-3:
        raise ValidationError("pose.orientation_wxyz", f"not a unit quaternion (norm {norm:.6g})")
    if m.pose.geo is not None:
        g = m.pose.geo
        _check_floats("pose.geo", (g.lat_deg, g.lon_deg, g.alt_m), 3)
        if not -90.0 <= g.lat_deg <= 90.0:
            raise ValidationError("pose.geo.lat_deg", f"{g.lat_deg} outside [-90, 90]")
        if not -180.0 <= g.lon_deg <= 180.0:
            raise ValidationError("pose.geo.lon_deg", f"{g.lon_deg} outside [-180, 180]")
    _check_tuple("cameras", m.cameras)
    names: set[str] = set()
    for i, cam in enumerate(m.cameras):
        path = f"cameras[{i}]"
        _check_camera_name(f"{path}.name", cam.name)
        if cam.name in names:
            raise ValidationError(f"{path}.name", f"camera {cam.name!r} appears twice")
        names.add(cam.name)
        _check_choice(f"{path}.encoding", cam.encoding, CAMERA_ENCODINGS)
        _check_long(f"{path}.width", cam.width, minimum=1)
        _check_long(f"{path}.height", cam.height, minimum=1)
        _check_bytes(f"{path}.data", cam.data, allow_empty=False)
        if cam.encoding == "raw" and len(cam.data) != cam.width * cam.height * 3:
            raise ValidationError(
                f"{path}.data",
                f"raw RGB8 {cam.width}x{cam.height} needs {cam.width * cam.height * 3} bytes, "
                f"got {len(cam.data)}",
            )
        if cam.timestamp_ns is not None:
            _check_long(f"{path}.timestamp_ns", cam.timestamp_ns, minimum=0)
    if m.lidar is not None:
        lidar = m.lidar
        _check_long("lidar.point_count", lidar.point_count, minimum=0)
        _check_tuple("lidar.fields", lidar.fields)
        if not lidar.fields or len(set(lidar.fields)) != len(lidar.fields):
            raise ValidationError("lidar.fields", f"must be non-empty and unique: {lidar.fields}")
        for j, name in enumerate(lidar.fields):
            _check_text(f"lidar.fields[{j}]", name)
        _check_float("lidar.quantum_m", lidar.quantum_m)
        if not lidar.quantum_m > 0:
            raise ValidationError("lidar.quantum_m", f"must be > 0, got {lidar.quantum_m}")
        _check_choice("lidar.compression", lidar.compression, LIDAR_COMPRESSIONS)
        _check_bytes("lidar.data", lidar.data, allow_empty=False)
    if not m.cameras and m.lidar is None:
        raise ValidationError("cameras", "a frame needs at least one camera image or a sweep")
    _validate_selection(m.selection)
    _check_tuple("models", m.models)
    for i, model in enumerate(m.models):
        _check_text(f"models[{i}].name", model.name)
        _check_text(f"models[{i}].version", model.version)
        _check_sha(f"models[{i}].sha256", model.sha256)
    _check_text("agent_version", m.agent_version)


def _validate_selection(s: SelectionRecord) -> None:
    _check_float("selection.score", s.score)
    _check_float("selection.threshold", s.threshold)
    _check_text("selection.strategy", s.strategy)
    _check_text("selection.reason", s.reason)
    _check_sha("selection.params_sha256", s.params_sha256)
    if not isinstance(s.components, Mapping):
        raise ValidationError("selection.components", "must be a mapping of name to float")
    for name, value in s.components.items():
        _check_text("selection.components key", name)
        _check_float(f"selection.components[{name}]", value)


def _validate_model_update(m: ModelUpdate) -> None:
    _check_text("name", m.name)
    _check_text("version", m.version)
    _check_sha("sha256", m.sha256)
    _check_long("size_bytes", m.size_bytes, minimum=0)
    _check_text("min_agent_version", m.min_agent_version)
    _check_long("created_ns", m.created_ns, minimum=0)
    if (m.url is None) == (m.inline is None):
        raise ValidationError("url", "exactly one of url and inline must be set")
    if m.url is not None:
        _check_text("url", m.url)
    if m.inline is not None:
        _check_bytes("inline", m.inline, allow_empty=False)
        if len(m.inline) != m.size_bytes:
            raise ValidationError(
                "size_bytes", f"{m.size_bytes} but inline model is {len(m.inline)} bytes"
            )
        digest = hashlib.sha256(m.inline).hexdigest()
        if digest != m.sha256:
            raise ValidationError("sha256", f"{m.sha256} but inline model hashes to {digest}")
    _check_tuple("target_vehicles", m.target_vehicles)
    for i, vehicle in enumerate(m.target_vehicles):
        _check_id(f"target_vehicles[{i}]", vehicle)
    _check_float("target_fraction", m.target_fraction)
    if not 0.0 <= m.target_fraction <= 1.0:
        raise ValidationError("target_fraction", f"{m.target_fraction} outside [0, 1]")
    if m.target_fraction == 0.0 and not m.target_vehicles:
        raise ValidationError("target_fraction", "0 with no target_vehicles: for no vehicle")


def _validate_label(m: LabelMessage) -> None:
    _check_text("task_id", m.task_id)
    parse_frame_key(m.frame_key)
    _check_text("labeler", m.labeler)
    _check_long("created_ns", m.created_ns, minimum=0)
    _check_tuple("boxes_2d", m.boxes_2d)
    for i, b in enumerate(m.boxes_2d):
        path = f"boxes_2d[{i}]"
        _check_text(f"{path}.camera", b.camera)
        _check_text(f"{path}.class_name", b.class_name)
        _check_floats(path, (b.x1, b.y1, b.x2, b.y2), 4)
        if not (b.x1 <= b.x2 and b.y1 <= b.y2):
            raise ValidationError(path, f"needs x1 <= x2 and y1 <= y2, got {b}")
    _check_tuple("boxes_3d", m.boxes_3d)
    for i, b3 in enumerate(m.boxes_3d):
        path = f"boxes_3d[{i}]"
        _check_text(f"{path}.class_name", b3.class_name)
        _check_floats(f"{path}.center_xyz", b3.center_xyz, 3)
        _check_floats(f"{path}.size_lwh", b3.size_lwh, 3)
        if min(b3.size_lwh) <= 0:
            raise ValidationError(f"{path}.size_lwh", f"sizes must be > 0, got {b3.size_lwh}")
        _check_float(f"{path}.yaw_rad", b3.yaw_rad)


def _check_id(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValidationError(name, f"must be a non-empty string, got {value!r}")
    if not _ID_RE.fullmatch(value):
        raise ValidationError(
            name,
            f"{value!r} must be 1-128 characters of letters, digits and ._:+=@- "
            "(starting with a letter or digit; no '/')",
        )


def _check_camera_name(name: str, value: object) -> None:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise ValidationError(
            name,
            f"{value!r} is not a camera name: 1-128 characters of letters, digits and ._:+=@- "
            "(starting with a letter or digit; no '/'); name a ROS topic with "
            "schemas.messages.camera_name(topic)",
        )


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(name, f"must be a non-empty string, got {value!r}")


def _check_long(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(name, f"must be an int, got {type(value).__name__}")
    if not minimum <= value <= _MAX_LONG:
        raise ValidationError(name, f"must be in {minimum}..2**63-1, got {value}")


def _check_float(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(name, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValidationError(name, f"must be finite, got {value}")


def _check_floats(name: str, values: Sequence[float], n: int) -> None:
    if not isinstance(values, tuple | list) or len(values) != n:
        raise ValidationError(name, f"must be {n} numbers, got {values!r}")
    for i, v in enumerate(values):
        _check_float(f"{name}[{i}]", v)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValidationError(name, f"{value!r} is not one of {', '.join(choices)}")


def _check_bytes(name: str, value: object, *, allow_empty: bool) -> None:
    if not isinstance(value, bytes):
        raise ValidationError(name, f"must be bytes, got {type(value).__name__}")
    if not allow_empty and not value:
        raise ValidationError(name, "must not be empty")


def _check_sha(name: str, value: object) -> None:
    if not isinstance(value, str) or not _SHA_RE.fullmatch(value):
        raise ValidationError(name, f"must be 64 lowercase hex digits (sha256), got {value!r}")


def _check_tuple(name: str, value: object) -> None:
    if not isinstance(value, tuple):
        raise ValidationError(name, f"must be a tuple, got {type(value).__name__}")
