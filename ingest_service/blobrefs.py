"""Which blobs hold a frame's sensor data: the contract between the consumer and the API.

The Kafka consumer puts every camera image, the LiDAR sweep and (optionally) the raw wire
envelope into the blob store and records their references with the frame; the labeling API
reads them back to serve images and point clouds. :class:`BlobRefs` is that record.

Its JSON form (:meth:`BlobRefs.to_json`, the *nested* layout)::

    {
      "cameras": {
        "CAM_FRONT": {"sha256": "<64 hex>", "size": 183224, "encoding": "jpeg",
                      "width": 1600, "height": 900},
        ...
      },
      "lidar": {"sha256": "<64 hex>", "size": 912331, "point_count": 34688,
                "fields": ["x", "y", "z", "intensity", "ring"], "encoding": "fal-pointcloud"},
      "envelope": {"sha256": "<64 hex>", "size": 2873311}
    }

``lidar`` and ``envelope`` may be null. ``encoding`` of a camera is one of
:data:`schemas.messages.CAMERA_ENCODINGS`; the LiDAR blob is always the bytes of
:func:`schemas.pointcloud.encode_points` (``"fal-pointcloud"``).

**How it is stored today.** :meth:`LabelQueue.ingest_frame
<ingest_service.queue.LabelQueue.ingest_frame>` takes a flat ``{sensor: BlobRef}`` mapping and
keeps only ``sha256`` and ``size`` of each. :meth:`BlobRefs.queue_refs` gives that mapping
(keys ``camera/<NAME>``, ``lidar``, ``envelope``: the *flat* layout) and
:meth:`BlobRefs.from_queue_refs` rebuilds a :class:`BlobRefs` from a
:class:`~ingest_service.queue.StoredFrame`. The metadata (encoding, image size, point count,
fields) does not survive that round trip and comes back as None; readers derive it from the
blob itself (an image header, the point-cloud header). :meth:`BlobRefs.from_json` reads both
layouts, so a queue that stores :meth:`to_json` verbatim later needs no change in readers.

Consumer side::

    refs = BlobRefs.put_envelope(blobs, envelope, raw=message_bytes)
    with queue.transaction() as tx:
        tx.ingest_frame(FrameRecord.from_envelope(envelope), refs.queue_refs())
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest_service.blobstore import BlobRef, BlobStore
from schemas.messages import CAMERA_ENCODINGS, FrameEnvelope

__all__ = [
    "CAMERA_PREFIX",
    "ENVELOPE_KEY",
    "LIDAR_ENCODING",
    "LIDAR_KEY",
    "BlobRefs",
    "CameraBlob",
    "LidarBlob",
]

CAMERA_PREFIX = "camera/"
"""Flat-layout key prefix of a camera image: ``camera/CAM_FRONT``."""
LIDAR_KEY = "lidar"
ENVELOPE_KEY = "envelope"
LIDAR_ENCODING = "fal-pointcloud"
"""The only LiDAR blob encoding: :func:`schemas.pointcloud.encode_points` bytes."""


@dataclass(frozen=True, slots=True)
class CameraBlob:
    """A stored camera image. Metadata is None when it came from the flat layout."""

    ref: BlobRef
    encoding: str | None = None
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        if self.encoding is not None and self.encoding not in CAMERA_ENCODINGS:
            raise ValueError(
                f"camera encoding must be one of {CAMERA_ENCODINGS}, got {self.encoding!r}"
            )
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"camera {name} must be >= 1, got {value}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.ref.to_json())
        out.update(encoding=self.encoding, width=self.width, height=self.height)
        return out

    @classmethod
    def from_json(cls, obj: object, *, where: str = "camera") -> CameraBlob:
        d = _object(obj, where)
        return cls(
            _ref(d, where),
            encoding=_opt(d, "encoding", str, where),
            width=_opt(d, "width", int, where),
            height=_opt(d, "height", int, where),
        )


@dataclass(frozen=True, slots=True)
class LidarBlob:
    """A stored LiDAR sweep (always ``fal-pointcloud``). Metadata None from the flat layout."""

    ref: BlobRef
    point_count: int | None = None
    fields: tuple[str, ...] | None = None
    encoding: str = LIDAR_ENCODING

    def __post_init__(self) -> None:
        if self.encoding != LIDAR_ENCODING:
            raise ValueError(f"lidar encoding must be {LIDAR_ENCODING!r}, got {self.encoding!r}")
        if self.point_count is not None and self.point_count < 0:
            raise ValueError(f"lidar point_count must be >= 0, got {self.point_count}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.ref.to_json())
        out.update(
            point_count=self.point_count,
            fields=None if self.fields is None else list(self.fields),
            encoding=self.encoding,
        )
        return out

    @classmethod
    def from_json(cls, obj: object, *, where: str = "lidar") -> LidarBlob:
        d = _object(obj, where)
        fields = d.get("fields")
        if fields is not None and not (
            isinstance(fields, list) and all(isinstance(f, str) for f in fields)
        ):
            raise ValueError(f"{where}.fields must be a list of strings, got {fields!r}")
        encoding = _opt(d, "encoding", str, where)
        return cls(
            _ref(d, where),
            point_count=_opt(d, "point_count", int, where),
            fields=None if fields is None else tuple(fields),
            encoding=LIDAR_ENCODING if encoding is None else encoding,
        )


@dataclass(frozen=True, slots=True)
class BlobRefs:
    """The blobs of one frame: camera images by name, the LiDAR sweep, the wire envelope."""

    cameras: Mapping[str, CameraBlob] = field(default_factory=dict)
    lidar: LidarBlob | None = None
    envelope: BlobRef | None = None

    def __post_init__(self) -> None:
        for name in self.cameras:
            if not name or "/" in name:
                raise ValueError(f"camera name must be non-empty without '/', got {name!r}")

    # --- building -----------------------------------------------------------------------------

    @classmethod
    def put_envelope(
        cls, blobs: BlobStore, envelope: FrameEnvelope, *, raw: bytes | None = None
    ) -> BlobRefs:
        """Put every sensor blob of ``envelope`` (and ``raw``, its wire bytes) into ``blobs``.

        Idempotent like the store: putting the same frame again returns equal references.
        """
        cameras = {
            cam.name: CameraBlob(blobs.put(cam.data), cam.encoding, cam.width, cam.height)
            for cam in envelope.cameras
        }
        lidar = None
        if envelope.lidar is not None:
            lidar = LidarBlob(
                blobs.put(envelope.lidar.data),
                envelope.lidar.point_count,
                tuple(envelope.lidar.fields),
            )
        return cls(cameras, lidar, None if raw is None else blobs.put(raw))

    # --- nested layout (module docstring) ---------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The nested JSON layout (module docstring); ``json.dumps`` ready."""
        return {
            "cameras": {name: cam.to_json() for name, cam in sorted(self.cameras.items())},
            "lidar": None if self.lidar is None else self.lidar.to_json(),
            "envelope": None if self.envelope is None else self.envelope.to_json(),
        }

    @classmethod
    def from_json(cls, obj: object) -> BlobRefs:
        """Parse the nested layout, or the flat one (``camera/<NAME>``, ``lidar``, ``envelope``).

        Raises ``ValueError`` naming the offending key.
        """
        d = _object(obj, "blob refs")
        if "cameras" not in d:
            return cls._from_flat(d)
        unknown = set(d) - {"cameras", "lidar", "envelope"}
        if unknown:
            raise ValueError(f"blob refs: unknown keys {sorted(unknown)}")
        cams = _object(d["cameras"], "cameras")
        lidar, env = d.get("lidar"), d.get("envelope")
        return cls(
            cameras={n: CameraBlob.from_json(c, where=f"cameras.{n}") for n, c in cams.items()},
            lidar=None if lidar is None else LidarBlob.from_json(lidar),
            envelope=None if env is None else _ref(_object(env, "envelope"), "envelope"),
        )

    # --- flat layout (what LabelQueue stores today) -------------------------------------------

    def queue_refs(self) -> dict[str, BlobRef]:
        """The flat ``{key: BlobRef}`` mapping :meth:`LabelQueue.ingest_frame` accepts."""
        out = {f"{CAMERA_PREFIX}{name}": cam.ref for name, cam in self.cameras.items()}
        if self.lidar is not None:
            out[LIDAR_KEY] = self.lidar.ref
        if self.envelope is not None:
            out[ENVELOPE_KEY] = self.envelope
        return out

    @classmethod
    def from_queue_refs(cls, refs: Mapping[str, BlobRef]) -> BlobRefs:
        """The inverse of :meth:`queue_refs` (metadata None); unknown keys raise ValueError."""
        cameras: dict[str, CameraBlob] = {}
        lidar: LidarBlob | None = None
        envelope: BlobRef | None = None
        for key, ref in refs.items():
            if key.startswith(CAMERA_PREFIX):
                cameras[key[len(CAMERA_PREFIX) :]] = CameraBlob(ref)
            elif key == LIDAR_KEY:
                lidar = LidarBlob(ref)
            elif key == ENVELOPE_KEY:
                envelope = ref
            else:
                raise ValueError(
                    f"blob refs: unknown key {key!r} (expected {CAMERA_PREFIX}<NAME>, "
                    f"{LIDAR_KEY!r} or {ENVELOPE_KEY!r})"
                )
        return cls(cameras, lidar, envelope)

    @classmethod
    def _from_flat(cls, d: Mapping[str, Any]) -> BlobRefs:
        refs: dict[str, BlobRef] = {}
        for key, value in d.items():
            refs[key] = _ref(_object(value, key), key)
        parsed = cls.from_queue_refs(refs)
        cams = {
            name: CameraBlob.from_json(d[f"{CAMERA_PREFIX}{name}"], where=name)
            for name in parsed.cameras
        }
        lidar = None if parsed.lidar is None else LidarBlob.from_json(d[LIDAR_KEY])
        return cls(cams, lidar, parsed.envelope)


def _object(obj: object, where: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where} must be a JSON object, got {type(obj).__name__}")
    return obj


def _ref(d: Mapping[str, Any], where: str) -> BlobRef:
    try:
        return BlobRef.from_json(dict(d))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _opt(d: Mapping[str, Any], key: str, typ: type[Any], where: str) -> Any:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, typ) or isinstance(value, bool):
        raise ValueError(f"{where}.{key} must be {typ.__name__}, got {value!r}")
    return value
