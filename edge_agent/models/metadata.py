"""What a model needs to be fed and what its outputs mean: ``ModelMetadata``.

The metadata travels inside the ONNX file as ``metadata_props`` (string key -> string
value; lists are JSON), so a model file is self-describing. A sidecar ``<model>.json``
next to ``<model>.onnx`` (a flat JSON object with the same keys, JSON types allowed) is
read too, and its keys win: that is how a third-party model is described without
re-exporting it. Everything is validated once, on load; a missing or bad key raises
``ModelMetadataError`` naming the key, the file and what to do.

Keys (see docs/models.md for a worked example)

common, required
    ``name``, ``version``, ``kind`` (``camera`` | ``lidar``), ``input_name``,
    ``input_shape`` (JSON list of ints, static, leading batch 1), ``input_layout``
    (``NCHW`` | ``NHWC`` for cameras, ``NPC`` for LiDAR), ``class_names`` (JSON list),
    ``probs_output`` and ``probs_are_logits`` (bool), ``embedding_output``,
    ``committee_axis`` (bool: probs are ``(T, n, K)``), ``dense`` (bool: ``n`` items per
    frame, one per patch or point; otherwise ``n == 1``)
camera, required
    ``mean``, ``std`` (JSON lists of 3 floats), ``scale`` (float): the model sees
    ``(pixel * scale - mean) / std`` per RGB channel
lidar, required
    ``point_features`` (JSON list of field names taken from the sweep, e.g.
    ``["x", "y", "z"]``), ``point_mean``, ``point_std`` (one float per feature),
    ``range_m`` (float: keep points with ``|x|, |y| <= range_m``), ``z_min``, ``z_max``
optional
    ``description``, ``training_data``, ``licence`` and any other key: kept in ``extra``
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edge_agent.models.errors import ModelLoadError, ModelMetadataError

__all__ = [
    "LIDAR_FIELDS",
    "ModelMetadata",
    "merged_mapping",
    "metadata_from_mapping",
    "read_metadata",
    "sidecar_path",
]

ModelKind = Literal["camera", "lidar"]

#: Field names a LiDAR model may ask for, in the column order of ``LidarSweep.points``.
LIDAR_FIELDS = ("x", "y", "z", "intensity", "ring")

_COMMON_KEYS = (
    "name",
    "version",
    "kind",
    "input_name",
    "input_shape",
    "input_layout",
    "class_names",
    "probs_output",
    "probs_are_logits",
    "embedding_output",
    "committee_axis",
    "dense",
)
_CAMERA_KEYS = ("mean", "std", "scale")
_LIDAR_KEYS = ("point_features", "point_mean", "point_std", "range_m", "z_min", "z_max")
_KNOWN_KEYS = frozenset(_COMMON_KEYS + _CAMERA_KEYS + _LIDAR_KEYS)
_HINT = (
    "set it in the model's metadata_props or in the sidecar JSON (docs/models.md lists the keys)"
)


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """Validated description of one model file; build it with ``metadata_from_mapping``."""

    name: str
    version: str
    kind: ModelKind
    input_name: str
    input_shape: tuple[int, ...]
    input_layout: str
    class_names: tuple[str, ...]
    probs_output: str
    probs_are_logits: bool
    embedding_output: str
    committee_axis: bool
    dense: bool
    # camera
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    scale: float = 1.0
    # lidar
    point_features: tuple[str, ...] = ()
    point_mean: tuple[float, ...] = ()
    point_std: tuple[float, ...] = ()
    range_m: float = 0.0
    z_min: float = 0.0
    z_max: float = 0.0
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` the camera model takes; ``ValueError`` for a LiDAR model."""
        if self.kind != "camera":
            raise ValueError(f"{self.name} is a {self.kind} model: it has no image size")
        if self.input_layout == "NCHW":
            return self.input_shape[2], self.input_shape[3]
        return self.input_shape[1], self.input_shape[2]

    @property
    def point_count(self) -> int:
        """Number of points the LiDAR model takes; ``ValueError`` for a camera model."""
        if self.kind != "lidar":
            raise ValueError(f"{self.name} is a {self.kind} model: it has no point count")
        return self.input_shape[1]

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` strings that ``metadata_from_mapping`` reads back."""
        props: dict[str, str] = dict(self.extra)
        props.update(
            name=self.name,
            version=self.version,
            kind=self.kind,
            input_name=self.input_name,
            input_shape=json.dumps(list(self.input_shape)),
            input_layout=self.input_layout,
            class_names=json.dumps(list(self.class_names)),
            probs_output=self.probs_output,
            probs_are_logits=_bool_str(self.probs_are_logits),
            embedding_output=self.embedding_output,
            committee_axis=_bool_str(self.committee_axis),
            dense=_bool_str(self.dense),
        )
        if self.kind == "camera":
            props.update(
                mean=json.dumps(list(self.mean)),
                std=json.dumps(list(self.std)),
                scale=repr(self.scale),
            )
        else:
            props.update(
                point_features=json.dumps(list(self.point_features)),
                point_mean=json.dumps(list(self.point_mean)),
                point_std=json.dumps(list(self.point_std)),
                range_m=repr(self.range_m),
                z_min=repr(self.z_min),
                z_max=repr(self.z_max),
            )
        return props


def _bool_str(value: bool) -> str:
    return "true" if value else "false"


class _Reader:
    """Typed access to a raw key/value mapping; every failure names the key and the file."""

    def __init__(self, raw: Mapping[str, object], source: str) -> None:
        self.raw = raw
        self.source = source

    def fail(self, key: str, message: str) -> ModelMetadataError:
        return ModelMetadataError(self.source, key, f"{message}; {_HINT}")

    def value(self, key: str) -> object:
        if key not in self.raw:
            raise self.fail(key, "missing")
        return self.raw[key]

    def text(self, key: str) -> str:
        value = self.value(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        return value.strip()

    def _json(self, key: str) -> object:
        value = self.value(key)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise self.fail(key, f"not valid JSON ({exc.msg}): {value!r}") from exc
        return value

    def flag(self, key: str) -> bool:
        value = self._json(key)
        if isinstance(value, bool):
            return value
        if value in (0, 1):
            return bool(value)
        raise self.fail(key, f"expected true or false, got {self.raw[key]!r}")

    def number(self, key: str) -> float:
        value = self._json(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"expected a number, got {self.raw[key]!r}")
        if not math.isfinite(value):
            raise self.fail(key, f"expected a finite number, got {value!r}")
        return float(value)

    def numbers(self, key: str, length: int) -> tuple[float, ...]:
        value = self._json(key)
        if (
            not isinstance(value, list)
            or len(value) != length
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in value
            )
        ):
            raise self.fail(key, f"expected a JSON list of {length} finite numbers, got {value!r}")
        return tuple(float(v) for v in value)

    def ints(self, key: str) -> tuple[int, ...]:
        value = self._json(key)
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            raise self.fail(
                key, f"expected a JSON list of positive ints (static shape), got {value!r}"
            )
        return tuple(int(v) for v in value)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._json(key)
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise self.fail(key, f"expected a JSON list of non-empty strings, got {value!r}")
        if len(set(value)) != len(value):
            raise self.fail(key, f"names must be unique, got {value!r}")
        return tuple(str(v) for v in value)


def metadata_from_mapping(raw: Mapping[str, object], source: str) -> ModelMetadata:
    """Validate a raw key/value mapping (metadata_props, sidecar or both) into metadata.

    ``source`` names where the mapping came from (the model path) for error messages.

    >>> try:
    ...     metadata_from_mapping({"kind": "camera", "name": "m"}, "m.onnx")
    ... except ModelMetadataError as exc:
    ...     print(exc.key)
    version
    """
    r = _Reader(raw, source)
    kind = r.text("kind")
    name = r.text("name")
    version = r.text("version")
    if kind not in ("camera", "lidar"):
        raise r.fail("kind", f"expected 'camera' or 'lidar', got {kind!r}")
    input_shape = r.ints("input_shape")
    layout = r.text("input_layout")
    class_names = r.strings("class_names")
    if len(class_names) < 2:
        raise r.fail("class_names", "a classifier needs at least 2 classes")
    probs_output = r.text("probs_output")
    embedding_output = r.text("embedding_output")
    if probs_output == embedding_output:
        raise r.fail("embedding_output", "must name a different output than probs_output")
    if input_shape[0] != 1:
        raise r.fail(
            "input_shape", f"batch dimension must be 1 (one frame a run), got {input_shape}"
        )
    base = ModelMetadata(
        name=name,
        version=version,
        kind="camera" if kind == "camera" else "lidar",
        input_name=r.text("input_name"),
        input_shape=input_shape,
        input_layout=layout,
        class_names=class_names,
        probs_output=probs_output,
        probs_are_logits=r.flag("probs_are_logits"),
        embedding_output=embedding_output,
        committee_axis=r.flag("committee_axis"),
        dense=r.flag("dense"),
        extra={k: str(v) for k, v in raw.items() if k not in _KNOWN_KEYS},
    )
    if kind == "camera":
        channel_axis = {"NCHW": 1, "NHWC": 3}.get(layout)
        if channel_axis is None:
            raise r.fail("input_layout", f"a camera model takes 'NCHW' or 'NHWC', got {layout!r}")
        if len(input_shape) != 4 or input_shape[channel_axis] != 3:
            raise r.fail(
                "input_shape",
                f"expected 4 dims with 3 colour channels ({layout}), got {input_shape}",
            )
        std = r.numbers("std", 3)
        if min(std) <= 0:
            raise r.fail("std", f"every std must be > 0, got {std}")
        scale = r.number("scale")
        if scale <= 0:
            raise r.fail("scale", f"must be > 0, got {scale}")
        return dataclasses.replace(base, mean=r.numbers("mean", 3), std=std, scale=scale)
    if layout != "NPC":
        raise r.fail(
            "input_layout", f"a lidar model takes 'NPC' (batch, points, channels), got {layout!r}"
        )
    features = r.strings("point_features")
    unknown = [f for f in features if f not in LIDAR_FIELDS]
    if unknown:
        raise r.fail("point_features", f"unknown field(s) {unknown}; valid: {list(LIDAR_FIELDS)}")
    if len(input_shape) != 3 or input_shape[2] != len(features):
        raise r.fail(
            "input_shape",
            f"expected (1, points, {len(features)}) for {list(features)}, got {input_shape}",
        )
    point_std = r.numbers("point_std", len(features))
    if min(point_std) <= 0:
        raise r.fail("point_std", f"every std must be > 0, got {point_std}")
    range_m = r.number("range_m")
    if range_m <= 0:
        raise r.fail("range_m", f"must be > 0, got {range_m}")
    z_min, z_max = r.number("z_min"), r.number("z_max")
    if z_min >= z_max:
        raise r.fail("z_max", f"must be greater than z_min ({z_min}), got {z_max}")
    return dataclasses.replace(
        base,
        point_features=features,
        point_mean=r.numbers("point_mean", len(features)),
        point_std=point_std,
        range_m=range_m,
        z_min=z_min,
        z_max=z_max,
    )


def sidecar_path(model_path: Path) -> Path:
    """``models/camera.onnx`` -> ``models/camera.json``."""
    return model_path.with_suffix(".json")


def merged_mapping(props: Mapping[str, str], model_path: Path) -> tuple[dict[str, object], str]:
    """Embedded props overlaid with the sidecar (if any); returns the mapping and its source."""
    merged: dict[str, object] = dict(props)
    source = str(model_path)
    side = sidecar_path(model_path)
    if side.is_file():
        try:
            loaded = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelMetadataError(
                str(side), "*", f"sidecar is not readable JSON ({exc}); fix or remove it"
            ) from exc
        if not isinstance(loaded, dict):
            raise ModelMetadataError(str(side), "*", "sidecar must hold one JSON object")
        merged.update(loaded)
        source = f"{model_path} (+ sidecar {side.name})"
    return merged, source


def read_metadata(model_path: Path) -> ModelMetadata:
    """Read and validate the metadata of an ONNX file without creating a session."""
    import onnx  # local: only this helper needs the protobuf loader

    try:
        proto = onnx.load(str(model_path), load_external_data=False)
    except OSError as exc:
        raise ModelLoadError(str(model_path), f"cannot read the file ({exc})") from exc
    except Exception as exc:  # protobuf's DecodeError and friends: no stable import path
        raise ModelLoadError(
            str(model_path), f"not a valid ONNX file ({exc}); re-export or re-download it"
        ) from exc
    props = {p.key: p.value for p in proto.metadata_props}
    merged, source = merged_mapping(props, model_path)
    return metadata_from_mapping(merged, source)
