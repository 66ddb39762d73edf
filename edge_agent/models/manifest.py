"""The active-model manifest: which model file each slot runs, kept across restarts.

``<agent.data_dir>/active_models.json`` is written by the rollout (after every swap and every
rollback) and read by the daemon at start, so a vehicle that rebooted runs the model it was
running, not the one its config file names::

    {"version": 1,
     "models": {"lidar": {"path": "/var/lib/fleetal/models/tiny-lidar-2.onnx",
                          "sha256": "…", "name": "tiny-lidar", "version": "2",
                          "previous": {"path": "…", "sha256": "…", "name": "…",
                                       "version": "1"}}}}

Writes are atomic (temporary file, fsync, rename, fsync of the directory): after a power cut
the file is the old one or the new one, never half of each. Reading validates every field;
anything else raises :class:`ManifestError` naming the file, and the caller falls back to the
configured models.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.models.errors import ModelError

__all__ = ["MANIFEST_NAME", "ManifestEntry", "ManifestError", "ModelRef", "read", "write"]

MANIFEST_NAME = "active_models.json"
_FORMAT = 1
_KINDS = ("camera", "lidar")


class ManifestError(ModelError):
    """The manifest file exists but cannot be used; the message names it and the problem."""


@dataclass(frozen=True, slots=True)
class ModelRef:
    """One model file: where it is and what it must hash to."""

    path: Path
    sha256: str
    name: str
    version: str

    def to_json(self) -> dict[str, str]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "name": self.name,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """The model a slot runs, and the one it replaced (the rollback target)."""

    current: ModelRef
    previous: ModelRef | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = self.current.to_json()
        out["previous"] = None if self.previous is None else self.previous.to_json()
        return out


def _ref(where: str, raw: object) -> ModelRef:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} is not an object")
    fields = {}
    for key in ("path", "sha256", "name", "version"):
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}.{key} is missing or not a non-empty string")
        fields[key] = value
    sha = fields["sha256"]
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"{where}.sha256 is not a hex sha256")
    return ModelRef(Path(fields["path"]), sha, fields["name"], fields["version"])


def read(path: Path) -> dict[str, ManifestEntry]:
    """The manifest's entries by kind; ``{}`` when there is no manifest yet.

    Raises :class:`ManifestError` when the file is unreadable or malformed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"model manifest {path} is unreadable: {exc}") from exc
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != _FORMAT:
            raise ValueError(f"not a version-{_FORMAT} manifest object")
        models = data.get("models")
        if not isinstance(models, dict):
            raise ValueError("'models' is not an object")
        entries: dict[str, ManifestEntry] = {}
        for kind, raw in models.items():
            if kind not in _KINDS:
                raise ValueError(f"unknown model kind {kind!r} (expected one of {_KINDS})")
            current = _ref(f"models.{kind}", raw)
            prev_raw = raw.get("previous")
            previous = None if prev_raw is None else _ref(f"models.{kind}.previous", prev_raw)
            entries[kind] = ManifestEntry(current, previous)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ManifestError(
            f"model manifest {path} is corrupt ({exc}); the configured models are used: "
            "delete the file to silence this, the next rollout writes a new one"
        ) from exc
    return entries


def write(path: Path, entries: Mapping[str, ManifestEntry]) -> None:
    """Replace the manifest atomically (temporary file, fsync, rename, fsync of the folder)."""
    body = {"version": _FORMAT, "models": {k: e.to_json() for k, e in sorted(entries.items())}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(body, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
