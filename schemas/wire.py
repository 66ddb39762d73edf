"""Bytes on the wire: a 6-byte header, then the message as schemaless Avro.

Header (``docs/schemas.md`` has the reasoning)::

    offset size field
    0      3    magic b"FAL"
    3      1    message type code (1 FrameEnvelope, 2 ModelUpdate, 3 LabelMessage)
    4      1    major version
    5      1    minor version

The body is the Avro binary encoding of the record without any schema or fingerprint. Every
reader carries a :class:`SchemaRegistry` of writer schemas keyed by (type, major, minor): it
decodes the body with the writer schema the header names and resolves it to its own current
(reader) schema, so a reader reads every older minor of its major (new fields take their
defaults) and, when it has been given their writer schemas, newer minors too (fields it does not
know are dropped). A major it does not know, or a minor newer than any it knows, raises
:class:`~schemas.errors.UnsupportedVersionError` saying which versions it reads and to upgrade.

>>> from schemas.messages import ModelUpdate
>>> raw = encode(ModelUpdate("det", "1.2.0", "ab" * 32, 123, "0.1.0", 0, url="s3://m/det.onnx"))
>>> raw[:6]
b'FAL\\x02\\x01\\x02'
>>> decode(raw).url
's3://m/det.onnx'
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import fastavro

from schemas.errors import DecodeError, UnsupportedVersionError, ValidationError
from schemas.messages import (
    Box2D,
    Box3D,
    CameraPayload,
    EgoPose,
    FrameEnvelope,
    GeoPoint,
    LabelMessage,
    LidarPayload,
    Message,
    ModelInfo,
    ModelUpdate,
    SelectionRecord,
    validate,
)

__all__ = [
    "DEFAULT_REGISTRY",
    "HEADER_SIZE",
    "MAGIC",
    "MESSAGE_TYPES",
    "Header",
    "SchemaRegistry",
    "decode",
    "decode_frame",
    "decode_label",
    "decode_model_update",
    "encode",
    "encode_record",
    "read_header",
]

MAGIC = b"FAL"
_HEADER = struct.Struct("<3sBBB")
HEADER_SIZE = _HEADER.size  # 6
MESSAGE_TYPES: dict[str, int] = {"FrameEnvelope": 1, "ModelUpdate": 2, "LabelMessage": 3}
_TYPE_NAMES = {code: name for name, code in MESSAGE_TYPES.items()}

AvroSchema = dict[str, Any]
Record = dict[str, Any]
Version = tuple[int, int]
M = TypeVar("M", FrameEnvelope, ModelUpdate, LabelMessage)

# --- Avro schemas, v1.0 -----------------------------------------------------------------------
# Field order is the wire order. A minor version only adds fields that have a default; see
# docs/schemas.md for the evolution rules.

_D = "double"
_OPT_LONG: list[str] = ["null", "long"]


def _fields(*names: str, type_: str = _D) -> list[dict[str, Any]]:
    return [{"name": n, "type": type_} for n in names]


FRAME_ENVELOPE_V1_0: AvroSchema = {
    "type": "record",
    "name": "FrameEnvelope",
    "namespace": "fleetal",
    "doc": "A selected frame, vehicle -> ingest, topic fleet.frames.",
    "fields": [
        {"name": "vehicle_id", "type": "string"},
        {"name": "drive_id", "type": "string"},
        {"name": "frame_seq", "type": "long"},
        {"name": "timestamp_ns", "type": "long", "doc": "UTC, ns since the Unix epoch"},
        {
            "name": "pose",
            "type": {
                "type": "record",
                "name": "EgoPose",
                "fields": [
                    {
                        "name": "position_local",
                        "type": {
                            "type": "record",
                            "name": "Vec3",
                            "fields": _fields("x", "y", "z"),
                        },
                    },
                    {
                        "name": "orientation_wxyz",
                        "type": {
                            "type": "record",
                            "name": "Quaternion",
                            "fields": _fields("w", "x", "y", "z"),
                        },
                    },
                    {
                        "name": "geo",
                        "type": [
                            "null",
                            {
                                "type": "record",
                                "name": "GeoPoint",
                                "fields": _fields("lat_deg", "lon_deg", "alt_m"),
                            },
                        ],
                        "default": None,
                    },
                ],
            },
        },
        {
            "name": "cameras",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "CameraPayload",
                    "fields": [
                        {"name": "name", "type": "string"},
                        {"name": "encoding", "type": "string", "doc": "jpeg | png | raw"},
                        {"name": "width", "type": "int"},
                        {"name": "height", "type": "int"},
                        {"name": "data", "type": "bytes"},
                        {"name": "timestamp_ns", "type": _OPT_LONG, "default": None},
                    ],
                },
            },
        },
        {
            "name": "lidar",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "LidarPayload",
                    "fields": [
                        {"name": "point_count", "type": "long"},
                        {"name": "fields", "type": {"type": "array", "items": "string"}},
                        {"name": "quantum_m", "type": "double"},
                        {"name": "compression", "type": "string", "doc": "zstd | lz4 | none"},
                        {"name": "data", "type": "bytes"},
                    ],
                },
            ],
            "default": None,
        },
        {
            "name": "selection",
            "type": {
                "type": "record",
                "name": "SelectionRecord",
                "fields": [
                    {"name": "score", "type": "double"},
                    {"name": "threshold", "type": "double"},
                    {"name": "strategy", "type": "string"},
                    {"name": "reason", "type": "string"},
                    {"name": "params_sha256", "type": "string"},
                    {"name": "components", "type": {"type": "map", "values": "double"}},
                ],
            },
        },
        {
            "name": "models",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "ModelInfo",
                    "fields": _fields("name", "version", "sha256", type_="string"),
                },
            },
        },
        {"name": "agent_version", "type": "string"},
    ],
}

MODEL_UPDATE_V1_0: AvroSchema = {
    "type": "record",
    "name": "ModelUpdate",
    "namespace": "fleetal",
    "doc": "A model to roll out, registry -> vehicles, topic fleet.models.",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "sha256", "type": "string"},
        {"name": "size_bytes", "type": "long"},
        {"name": "min_agent_version", "type": "string"},
        {"name": "created_ns", "type": "long"},
        {"name": "url", "type": ["null", "string"], "default": None},
        {"name": "inline", "type": ["null", "bytes"], "default": None},
    ],
}

MODEL_UPDATE_V1_1: AvroSchema = {
    **MODEL_UPDATE_V1_0,
    "fields": [
        *MODEL_UPDATE_V1_0["fields"],
        {"name": "signature", "type": ["null", "bytes"], "default": None},
    ],
}
"""v1.1 adds the Ed25519 ``signature`` (schemas/signing.py); v1.0 readers drop it."""

MODEL_UPDATE_V1_2: AvroSchema = {
    **MODEL_UPDATE_V1_1,
    "fields": [
        *MODEL_UPDATE_V1_1["fields"],
        {"name": "target_vehicles", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "target_fraction", "type": "double", "default": 1.0},
    ],
}
"""v1.2 adds the stage of a staged rollout (``target_vehicles``, ``target_fraction``). An agent
that reads only v1.1 refuses a v1.2 message (it lacks the writer schema), so it can never take
a canary's update for the whole fleet's: agents are upgraded first (docs/schemas.md)."""

LABEL_MESSAGE_V1_0: AvroSchema = {
    "type": "record",
    "name": "LabelMessage",
    "namespace": "fleetal",
    "doc": "Labels for one frame, labeling tool -> ingest.",
    "fields": [
        {"name": "task_id", "type": "string"},
        {"name": "frame_key", "type": "string"},
        {"name": "labeler", "type": "string"},
        {"name": "created_ns", "type": "long"},
        {
            "name": "boxes_2d",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Box2D",
                    "fields": [
                        {"name": "camera", "type": "string"},
                        {"name": "class_name", "type": "string"},
                        *_fields("x1", "y1", "x2", "y2"),
                    ],
                },
            },
        },
        {
            "name": "boxes_3d",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Box3D",
                    "fields": [
                        {"name": "class_name", "type": "string"},
                        {
                            "name": "center_xyz",
                            "type": {
                                "type": "record",
                                "name": "Vec3",
                                "fields": _fields("x", "y", "z"),
                            },
                        },
                        {
                            "name": "size_lwh",
                            "type": {
                                "type": "record",
                                "name": "Size3",
                                "fields": _fields("length", "width", "height"),
                            },
                        },
                        {"name": "yaw_rad", "type": "double"},
                    ],
                },
            },
        },
    ],
}


# --- registry ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """The 6-byte header: message type name and version."""

    message_type: str
    major: int
    minor: int

    @property
    def version(self) -> str:
        return f"v{self.major}.{self.minor}"


class SchemaRegistry:
    """Writer schemas by (message type, major, minor), and each type's current reader version.

    The process-wide :data:`DEFAULT_REGISTRY` holds every released version; tests build their
    own to stand for older or newer readers.
    """

    def __init__(self) -> None:
        self._writers: dict[tuple[str, int, int], Any] = {}
        self._current: dict[str, Version] = {}

    def register(
        self, message_type: str, version: Version, schema: AvroSchema, *, current: bool = False
    ) -> None:
        """Add the writer schema of ``message_type`` at ``version``; ``current`` makes it the
        version this process writes and the reader schema it resolves to."""
        if message_type not in MESSAGE_TYPES:
            raise ValueError(f"unknown message type {message_type!r}; one of {list(MESSAGE_TYPES)}")
        major, minor = version
        if not (0 <= major <= 255 and 0 <= minor <= 255):
            raise ValueError(f"version {version} must be two integers in 0..255")
        key = (message_type, major, minor)
        if key in self._writers:
            raise ValueError(f"{message_type} v{major}.{minor} is already registered")
        self._writers[key] = fastavro.parse_schema(schema)
        if current:
            self._current[message_type] = version

    def current_version(self, message_type: str) -> Version:
        try:
            return self._current[message_type]
        except KeyError:
            raise ValueError(f"no current version of {message_type} registered") from None

    def supported(self, message_type: str) -> tuple[Version, ...]:
        """Every (major, minor) of ``message_type`` this registry can read, ascending."""
        return tuple(sorted((a, b) for t, a, b in self._writers if t == message_type))

    def schema(self, message_type: str, version: Version) -> Any:
        return self._writers[(message_type, *version)]

    def _writer_for(self, header: Header) -> Any:
        key = (header.message_type, header.major, header.minor)
        found = self._writers.get(key)
        if found is not None:
            return found
        supported = self.supported(header.message_type)
        listed = ", ".join(f"v{a}.{b}" for a, b in supported) or "none"
        seen = f"{header.message_type} {header.version}"
        if not any(a == header.major for a, _ in supported):
            why = (
                f"{seen} is a major version this reader does not support (it reads {listed}); "
                "a new major is a breaking change: upgrade the ingest service (the "
                "fleet-active-learning schemas package) to a release that reads it"
            )
        elif header.minor > max(b for a, b in supported if a == header.major):
            why = (
                f"{seen} is newer than this reader knows (it reads {listed}); without that "
                "minor's writer schema the body cannot be decoded: upgrade the ingest service "
                "(readers must be upgraded before writers)"
            )
        else:
            why = (
                f"{seen} was never registered with this reader (it reads {listed}); the writer "
                "uses a version that was not released: check the writer's schemas package"
            )
        raise UnsupportedVersionError(
            why,
            message_type=header.message_type,
            seen=(header.major, header.minor),
            supported=supported,
        )


DEFAULT_REGISTRY = SchemaRegistry()
DEFAULT_REGISTRY.register("FrameEnvelope", (1, 0), FRAME_ENVELOPE_V1_0, current=True)
DEFAULT_REGISTRY.register("ModelUpdate", (1, 0), MODEL_UPDATE_V1_0)
DEFAULT_REGISTRY.register("ModelUpdate", (1, 1), MODEL_UPDATE_V1_1)
DEFAULT_REGISTRY.register("ModelUpdate", (1, 2), MODEL_UPDATE_V1_2, current=True)
DEFAULT_REGISTRY.register("LabelMessage", (1, 0), LABEL_MESSAGE_V1_0, current=True)


# --- dataclass <-> Avro record ----------------------------------------------------------------


def _vec3(v: tuple[float, float, float]) -> Record:
    return {"x": float(v[0]), "y": float(v[1]), "z": float(v[2])}


def _frame_to_record(m: FrameEnvelope) -> Record:
    pose = m.pose
    w, x, y, z = pose.orientation_wxyz
    geo = pose.geo
    lidar = m.lidar
    sel = m.selection
    return {
        "vehicle_id": m.vehicle_id,
        "drive_id": m.drive_id,
        "frame_seq": m.frame_seq,
        "timestamp_ns": m.timestamp_ns,
        "pose": {
            "position_local": _vec3(pose.position_local),
            "orientation_wxyz": {"w": float(w), "x": float(x), "y": float(y), "z": float(z)},
            "geo": None
            if geo is None
            else {"lat_deg": geo.lat_deg, "lon_deg": geo.lon_deg, "alt_m": geo.alt_m},
        },
        "cameras": [
            {
                "name": c.name,
                "encoding": c.encoding,
                "width": c.width,
                "height": c.height,
                "data": c.data,
                "timestamp_ns": c.timestamp_ns,
            }
            for c in m.cameras
        ],
        "lidar": None
        if lidar is None
        else {
            "point_count": lidar.point_count,
            "fields": list(lidar.fields),
            "quantum_m": lidar.quantum_m,
            "compression": lidar.compression,
            "data": lidar.data,
        },
        "selection": {
            "score": float(sel.score),
            "threshold": float(sel.threshold),
            "strategy": sel.strategy,
            "reason": sel.reason,
            "params_sha256": sel.params_sha256,
            "components": {k: float(v) for k, v in sel.components.items()},
        },
        "models": [{"name": i.name, "version": i.version, "sha256": i.sha256} for i in m.models],
        "agent_version": m.agent_version,
    }


def _frame_from_record(r: Record) -> FrameEnvelope:
    p = r["pose"]
    pos, q, geo = p["position_local"], p["orientation_wxyz"], p["geo"]
    lidar, sel = r["lidar"], r["selection"]
    return FrameEnvelope(
        vehicle_id=r["vehicle_id"],
        drive_id=r["drive_id"],
        frame_seq=r["frame_seq"],
        timestamp_ns=r["timestamp_ns"],
        pose=EgoPose(
            (pos["x"], pos["y"], pos["z"]),
            (q["w"], q["x"], q["y"], q["z"]),
            None if geo is None else GeoPoint(geo["lat_deg"], geo["lon_deg"], geo["alt_m"]),
        ),
        cameras=tuple(
            CameraPayload(
                c["name"], c["encoding"], c["width"], c["height"], c["data"], c["timestamp_ns"]
            )
            for c in r["cameras"]
        ),
        lidar=None
        if lidar is None
        else LidarPayload(
            lidar["point_count"],
            tuple(lidar["fields"]),
            lidar["quantum_m"],
            lidar["compression"],
            lidar["data"],
        ),
        selection=SelectionRecord(
            score=sel["score"],
            threshold=sel["threshold"],
            strategy=sel["strategy"],
            reason=sel["reason"],
            params_sha256=sel["params_sha256"],
            components=dict(sel["components"]),
        ),
        models=tuple(ModelInfo(i["name"], i["version"], i["sha256"]) for i in r["models"]),
        agent_version=r["agent_version"],
    )


def _model_update_to_record(m: ModelUpdate) -> Record:
    return {
        "name": m.name,
        "version": m.version,
        "sha256": m.sha256,
        "size_bytes": m.size_bytes,
        "min_agent_version": m.min_agent_version,
        "created_ns": m.created_ns,
        "url": m.url,
        "inline": m.inline,
        "signature": m.signature,
        "target_vehicles": list(m.target_vehicles),
        "target_fraction": m.target_fraction,
    }


def _model_update_from_record(r: Record) -> ModelUpdate:
    return ModelUpdate(
        name=r["name"],
        version=r["version"],
        sha256=r["sha256"],
        size_bytes=r["size_bytes"],
        min_agent_version=r["min_agent_version"],
        created_ns=r["created_ns"],
        url=r["url"],
        inline=r["inline"],
        signature=r.get("signature"),
        target_vehicles=tuple(r.get("target_vehicles", ())),
        target_fraction=float(r.get("target_fraction", 1.0)),
    )


def _label_to_record(m: LabelMessage) -> Record:
    return {
        "task_id": m.task_id,
        "frame_key": m.frame_key,
        "labeler": m.labeler,
        "created_ns": m.created_ns,
        "boxes_2d": [
            {
                "camera": b.camera,
                "class_name": b.class_name,
                "x1": float(b.x1),
                "y1": float(b.y1),
                "x2": float(b.x2),
                "y2": float(b.y2),
            }
            for b in m.boxes_2d
        ],
        "boxes_3d": [
            {
                "class_name": b.class_name,
                "center_xyz": _vec3(b.center_xyz),
                "size_lwh": {
                    "length": float(b.size_lwh[0]),
                    "width": float(b.size_lwh[1]),
                    "height": float(b.size_lwh[2]),
                },
                "yaw_rad": float(b.yaw_rad),
            }
            for b in m.boxes_3d
        ],
    }


def _label_from_record(r: Record) -> LabelMessage:
    return LabelMessage(
        task_id=r["task_id"],
        frame_key=r["frame_key"],
        labeler=r["labeler"],
        created_ns=r["created_ns"],
        boxes_2d=tuple(
            Box2D(b["camera"], b["class_name"], b["x1"], b["y1"], b["x2"], b["y2"])
            for b in r["boxes_2d"]
        ),
        boxes_3d=tuple(
            Box3D(
                b["class_name"],
                (b["center_xyz"]["x"], b["center_xyz"]["y"], b["center_xyz"]["z"]),
                (b["size_lwh"]["length"], b["size_lwh"]["width"], b["size_lwh"]["height"]),
                b["yaw_rad"],
            )
            for b in r["boxes_3d"]
        ),
    )


_TO_RECORD: dict[type, tuple[str, Callable[[Any], Record]]] = {
    FrameEnvelope: ("FrameEnvelope", _frame_to_record),
    ModelUpdate: ("ModelUpdate", _model_update_to_record),
    LabelMessage: ("LabelMessage", _label_to_record),
}
_FROM_RECORD: dict[str, Callable[[Record], Message]] = {
    "FrameEnvelope": _frame_from_record,
    "ModelUpdate": _model_update_from_record,
    "LabelMessage": _label_from_record,
}


# --- encode / decode --------------------------------------------------------------------------


def encode(msg: Message, *, registry: SchemaRegistry = DEFAULT_REGISTRY) -> bytes:
    """Validate ``msg`` and serialise it at its type's current version."""
    entry = _TO_RECORD.get(type(msg))
    if entry is None:
        raise ValidationError("message", f"{type(msg).__name__} is not a wire message type")
    validate(msg)
    name, to_record = entry
    return encode_record(name, to_record(msg), registry=registry)


def encode_record(
    message_type: str,
    record: Mapping[str, Any],
    *,
    version: Version | None = None,
    registry: SchemaRegistry = DEFAULT_REGISTRY,
) -> bytes:
    """Serialise a plain Avro record at ``version`` (default: current), without validation.

    For tools and tests that write a version other than the current one; applications use
    :func:`encode`.
    """
    major, minor = version if version is not None else registry.current_version(message_type)
    try:
        schema = registry.schema(message_type, (major, minor))
    except KeyError:
        raise ValueError(f"{message_type} v{major}.{minor} is not registered") from None
    buf = io.BytesIO()
    buf.write(_HEADER.pack(MAGIC, MESSAGE_TYPES[message_type], major, minor))
    try:
        fastavro.schemaless_writer(buf, schema, record)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValidationError(message_type, f"does not fit its Avro schema: {exc}") from exc
    return buf.getvalue()


def read_header(raw: bytes | bytearray | memoryview) -> Header:
    """Parse the 6-byte header; :class:`DecodeError` or :class:`UnsupportedVersionError`."""
    if len(raw) < HEADER_SIZE:
        if bytes(raw[:3]) != MAGIC[: len(raw)]:
            raise DecodeError(f"not a fleetal message: bad magic {bytes(raw[:3])!r}")
        raise DecodeError(f"truncated message: {len(raw)} bytes, the header alone is {HEADER_SIZE}")
    magic, code, major, minor = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise DecodeError(f"not a fleetal message: bad magic {magic!r}, expected {MAGIC!r}")
    name = _TYPE_NAMES.get(code)
    if name is None:
        known = ", ".join(f"{c} {n}" for c, n in sorted(_TYPE_NAMES.items()))
        raise UnsupportedVersionError(
            f"unknown message type code {code} (v{major}.{minor}); this reader knows {known}: "
            "upgrade the ingest service",
            message_type=f"type code {code}",
            seen=(major, minor),
            supported=(),
        )
    return Header(name, major, minor)


def decode(
    raw: bytes | bytearray | memoryview,
    *,
    registry: SchemaRegistry = DEFAULT_REGISTRY,
    check: bool = True,
) -> Message:
    """Parse a message written at any version ``registry`` knows, as its current dataclass.

    Raises :class:`DecodeError` (bad magic, truncated, corrupt body, trailing bytes),
    :class:`UnsupportedVersionError`, and with ``check`` :class:`ValidationError` for a message
    that decodes but breaks the contract (a NaN score from a faulty writer).
    """
    header = read_header(raw)
    writer = registry._writer_for(header)
    current = registry.current_version(header.message_type)
    reader = (
        None
        if current == (header.major, header.minor)
        else registry.schema(header.message_type, current)
    )
    buf = io.BytesIO(raw)
    buf.seek(HEADER_SIZE)
    where = f"{header.message_type} {header.version}"
    try:
        record = fastavro.schemaless_reader(buf, writer, reader)
    except EOFError as exc:
        raise DecodeError(f"truncated {where} body ({len(raw)} bytes in all)") from exc
    except Exception as exc:  # fastavro raises many types on garbage: name the message
        raise DecodeError(f"corrupt {where} body: {type(exc).__name__}: {exc}") from exc
    if buf.tell() != len(raw):
        raise DecodeError(
            f"corrupt {where}: {len(raw) - buf.tell()} trailing bytes after the Avro body"
        )
    if not isinstance(record, dict):
        raise DecodeError(f"corrupt {where} body: not a record")
    try:
        msg = _FROM_RECORD[header.message_type](record)
    except (KeyError, TypeError) as exc:
        raise DecodeError(f"corrupt {where} body: {exc!r}") from exc
    if check:
        validate(msg)
    return msg


def _decode_as(cls: type[M], raw: bytes | bytearray | memoryview, **kw: Any) -> M:
    msg = decode(raw, **kw)
    if not isinstance(msg, cls):
        raise DecodeError(f"expected a {cls.__name__}, got a {type(msg).__name__}")
    return msg


def decode_frame(
    raw: bytes | bytearray | memoryview, *, registry: SchemaRegistry = DEFAULT_REGISTRY
) -> FrameEnvelope:
    """:func:`decode`, insisting on a :class:`FrameEnvelope`."""
    return _decode_as(FrameEnvelope, raw, registry=registry)


def decode_model_update(
    raw: bytes | bytearray | memoryview, *, registry: SchemaRegistry = DEFAULT_REGISTRY
) -> ModelUpdate:
    """:func:`decode`, insisting on a :class:`ModelUpdate`."""
    return _decode_as(ModelUpdate, raw, registry=registry)


def decode_label(
    raw: bytes | bytearray | memoryview, *, registry: SchemaRegistry = DEFAULT_REGISTRY
) -> LabelMessage:
    """:func:`decode`, insisting on a :class:`LabelMessage`."""
    return _decode_as(LabelMessage, raw, registry=registry)
