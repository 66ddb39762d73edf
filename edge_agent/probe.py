"""``edge-agent check``: a cheap, true health probe, and the start-up validation ``run`` shares.

Exit codes (README, docs/metrics.md): **0** healthy; **1** unhealthy (the running daemon's
``/healthz`` says so, or a dependency the daemon needs fails: data dir, disk, spool, model
files); **2** bad usage or a configuration ``run`` would refuse (:func:`validate_for_run`, the
very function ``run`` calls first).

When a daemon runs (its ``/healthz`` answers on ``metrics.host:metrics.port``), ``check`` reports
its verdict and touches nothing else: no spool lock taken, no model loaded. Otherwise it checks
what ``run`` would need, without building anything: the data dir is writable and has room, the
spool opens read-only (a spool locked by a daemon whose ops port is off counts as running), and
each model file exists, matches its configured sha256, is a well-formed ONNX ModelProto (its
top-level protobuf fields walked, the graph skipped) and has valid metadata of the right kind;
no onnxruntime session is created and onnx is not imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from edge_agent.config import AgentConfig
from edge_agent.models.errors import ModelError
from schemas.config import ConfigError

__all__ = ["MIN_FREE_BYTES", "CheckResult", "check", "validate_for_run"]

MIN_FREE_BYTES: Final = 64 * 1024 * 1024
_HTTP_TIMEOUT_S: Final = 3.0


def validate_for_run(cfg: AgentConfig) -> None:
    """What ``run`` needs of the configuration beyond what loading checks; raises ConfigError."""
    path = cfg.source.path
    if path is None:
        raise ConfigError(
            "source.path is not set: point it at the sensor bridge's spool directory "
            "(or a recorded drive) in the [source] table or FLEETAL_SOURCE__PATH"
        )
    if cfg.source.kind == "recorded" and not path.exists():
        raise ConfigError(f"source.path {path} does not exist (source.kind = 'recorded')")
    if cfg.source.kind == "spool_dir" and path.exists() and not path.is_dir():
        raise ConfigError(f"source.path {path} is not a directory (source.kind = 'spool_dir')")


@dataclass
class CheckResult:
    """``code`` is the exit code; ``lines`` say what was checked and what failed."""

    code: int = 0
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        self.code = max(self.code, 1)


def _health_url(cfg: AgentConfig) -> str | None:
    if not cfg.metrics.enabled or cfg.metrics.port == 0:
        return None
    host = cfg.metrics.host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.metrics.port}/healthz"


def _ask_daemon(url: str) -> tuple[int, str] | None:
    """(status, body) from a running daemon's /healthz; None when nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as response:
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            return int(exc.code), exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return None


def check(cfg: AgentConfig) -> CheckResult:
    """Probe the agent; see the module docstring. Raises ConfigError for a bad configuration."""
    validate_for_run(cfg)
    result = CheckResult()
    url = _health_url(cfg)
    if url is not None:
        answer = _ask_daemon(url)
        if answer is not None:
            status, body = answer
            lines = body.strip().splitlines() or [""]
            result.lines.append(f"daemon at {url}: HTTP {status}")
            result.lines.extend(lines[1:])
            if status != 200:
                result.problem(f"the running daemon is {lines[0]}")
            return result
        result.lines.append(f"no daemon answers on {url}: checking what `run` needs")
    _check_data_dir(cfg, result)
    _check_spool(cfg, result)
    _check_models(cfg, result)
    return result


def _check_data_dir(cfg: AgentConfig, result: CheckResult) -> None:
    data_dir = cfg.agent.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".check"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        result.problem(f"data_dir {data_dir} is not writable: {exc}")
        return
    free = shutil.disk_usage(data_dir).free
    if free < MIN_FREE_BYTES:
        result.problem(f"only {free // 2**20} MiB free under {data_dir}: free some disk")
    else:
        result.lines.append(f"data_dir {data_dir}: writable, {free // 2**20} MiB free")


def _check_spool(cfg: AgentConfig, result: CheckResult) -> None:
    path = cfg.spool_path
    if not path.exists():
        result.lines.append(f"spool {path}: none yet (created at start)")
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
    except sqlite3.Error as exc:
        result.problem(f"spool {path} cannot be opened: {exc}")
        return
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(frames)")}
        held_sql = "SUM(state = 'held')" if "last_error" in columns else "0"
        frames, held, oldest = conn.execute(
            f"SELECT COUNT(*), COALESCE({held_sql}, 0), MIN(created_ns) FROM frames"
        ).fetchone()
        errors: list[str] = []
        if held:
            errors = [
                f"{key} ({nbytes} bytes): {error}"
                for key, nbytes, error in conn.execute(
                    "SELECT frame_key, nbytes, last_error FROM frames WHERE state = 'held' "
                    "ORDER BY held_ns LIMIT 5"
                )
            ]
    except sqlite3.Error as exc:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            result.lines.append(
                f"spool {path}: in use by a running edge-agent (its /healthz is off: "
                "metrics.enabled = false or port 0, so it cannot be asked more)"
            )
        else:
            result.problem(f"spool {path} is not readable: {exc}")
        return
    finally:
        conn.close()
    age = 0.0 if oldest is None else max(0.0, time.time() - int(oldest) / 1e9)
    result.lines.append(
        f"spool {path}: {frames} frame(s), oldest {age:.0f} s, {held} held (refused by the "
        "broker for good)"
    )
    result.lines.extend(f"  held: {line}" for line in errors)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """Top-level protobuf fields of ``data``: (number, wire type, bytes or int)."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError(f"field {number} runs past the end of the file")
            yield number, wire, data[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(data):
                raise ValueError(f"field {number} runs past the end of the file")
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")


def onnx_metadata_props(data: bytes) -> dict[str, str]:
    """``metadata_props`` of a serialised ONNX ``ModelProto``, read without onnx or a session.

    Walks the top-level fields only (the graph's bytes are skipped, not parsed): enough to
    know the file is a well-formed ModelProto with an IR version and a graph. Raises
    ValueError when it is not.
    """
    props: dict[str, str] = {}
    ir_version = graph = False
    for number, wire, value in _fields(data):
        if number == 1 and wire == 0:
            ir_version = True
        elif number == 7 and wire == 2:
            graph = True
        elif number == 14 and wire == 2 and isinstance(value, bytes):
            key = val = ""
            for sub, sub_wire, item in _fields(value):
                if sub_wire == 2 and isinstance(item, bytes):
                    if sub == 1:
                        key = item.decode("utf-8")
                    elif sub == 2:
                        val = item.decode("utf-8")
            props[key] = val
    if not ir_version or not graph:
        raise ValueError("no IR version or no graph: not an ONNX model")
    return props


def _check_models(cfg: AgentConfig, result: CheckResult) -> None:
    from edge_agent.models.metadata import merged_mapping, metadata_from_mapping

    for kind, path, sha in (
        ("camera", cfg.models.camera, cfg.models.camera_sha256),
        ("lidar", cfg.models.lidar, cfg.models.lidar_sha256),
    ):
        if path is None:
            continue
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            result.problem(f"models.{kind} {path}: cannot be read ({exc})")
            continue
        if sha:
            actual = hashlib.sha256(data).hexdigest()
            if actual != sha.strip().lower():
                result.problem(
                    f"models.{kind} {path}: sha256 {actual} differs from the configured "
                    f"{sha.strip().lower()}"
                )
                continue
        try:
            props = onnx_metadata_props(data)
        except (ValueError, UnicodeDecodeError) as exc:
            result.problem(f"models.{kind} {path}: not a valid ONNX file ({exc})")
            continue
        try:
            mapping, source = merged_mapping(props, Path(path))
            meta = metadata_from_mapping(mapping, source)
        except ModelError as exc:
            result.problem(f"models.{kind} {path}: {exc}")
            continue
        if meta.kind != kind:
            result.problem(f"models.{kind} {path} is a {meta.kind} model")
            continue
        result.lines.append(
            f"models.{kind} {path}: {meta.name} {meta.version}, metadata valid"
            f"{', sha256 matches' if sha else ''}"
        )
