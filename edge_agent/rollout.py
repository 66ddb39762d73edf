"""Model rollout to the vehicle: ``ModelUpdate`` messages from the ``fleet.models`` topic.

Each vehicle reads the topic in a consumer group of its own (``edge-<vehicle_id>``), so every
vehicle sees every update, and one that was offline catches up from its committed offset. For
each update it:

1. skips it when the agent is older than ``min_agent_version``; with the fleet's public key
   configured (``rollout.public_key``) refuses it unless its Ed25519 signature verifies
   (``bad_signature``: unsigned, signed by another key, or changed after signing;
   :mod:`schemas.signing`); skips an update for a stage of a staged rollout that does not
   include this vehicle (``not_in_stage``: the canaries get it first; the widened update that
   follows reaches the rest); skips it when the version already runs;
2. writes the model to ``<models_dir>/<name>-<version>.onnx`` atomically, checking the size
   and the sha256 before anything else sees the file: carried ``inline``, or fetched from the
   update's ``url`` (http(s), streamed, never past the declared size, capped by
   ``rollout.max_download_bytes``; :mod:`edge_agent.models.download`). A download that may
   work later (server down, slow, cut short) is ``download_failed``: not committed, read
   again after ``retry_s``; one that cannot (missing object, wrong bytes, too large) is
   ``refused``;
3. hot-swaps it into the slot of its kind (:class:`ModelSlot`: smoke inference first; a model
   that fails to load, fails the smoke test or changes the output shapes is refused and the
   running model stays);
4. records the new model (and the one it replaced) in the active-model manifest
   (:mod:`edge_agent.models.manifest`), which the daemon loads at start, so a reboot keeps the
   rolled-out model;
5. prunes ``models_dir``: only the current and the previous model of each slot (and files the
   config names) stay; refused and superseded files are deleted;
6. counts the outcome in ``fleetal_edge_model_swaps_total{result}`` (``ok``, ``refused``,
   ``bad_signature``, ``not_in_stage``, ``skipped``, ``store_failed``, ``download_failed``,
   ``rolled_back``) and
   commits the offset, so a refused update is not retried forever.

A model that cannot be stored (disk full: ``OSError`` while writing) is ``store_failed``: the
running model stays, the offset is not committed, and the listener reconnects after
``retry_s`` and reads the update again. No error ends the listener thread: anything
unexpected is logged with its traceback, counted (``result="listener_error"``) and retried.

After every swap the slot watches the new model (:meth:`ModelSlot.watch`): when its error rate
over its first ``rollback_window`` calls rises more than ``rollback_error_rate`` above the
previous model's, it rolls back on its own, counted as ``rolled_back`` and recorded in the
manifest.

Frames keep being scored throughout: the swap replaces the model reference atomically, and
in-flight calls finish on the model they started with.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edge_agent import __version__
from edge_agent.metrics import AgentMetrics
from edge_agent.models import manifest
from edge_agent.models.download import DownloadError, DownloadSettings, fetch
from edge_agent.models.errors import ModelError
from edge_agent.models.hotswap import ModelSlot, SwapReport
from edge_agent.models.manifest import ManifestEntry, ManifestError, ModelRef
from edge_agent.models.metadata import read_metadata
from edge_agent.models.runner import ScoringModel
from schemas.chunking import Reassembler
from schemas.errors import SchemaError
from schemas.kafka_net import METADATA_MAX_AGE_MS, first_reachable
from schemas.messages import ModelUpdate, in_stage
from schemas.signing import SignatureError, verify_update
from schemas.wire import decode_model_update

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

Outcome = Literal[
    "ok", "refused", "bad_signature", "not_in_stage", "skipped", "store_failed", "download_failed"
]
_RETRY_LATER = ("store_failed", "download_failed")  # not committed: read again later

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_MODEL_BYTES = 512 * 1024 * 1024
ROLLBACK_WINDOW = 100
"""Default number of calls watched after a swap (``rollout.rollback_window_frames``)."""
ROLLBACK_ERROR_RATE = 0.2
"""Default rise of the error rate that rolls back (``rollout.rollback_error_rate``)."""
RETRY_S = 30.0
"""Default wait of the listener before it reads an update again that it could not store."""


class RetryLaterError(Exception):
    """Internal: an update could not be stored; do not commit, read it again later."""


@dataclass(frozen=True, slots=True)
class RolloutResult:
    outcome: Outcome
    detail: str


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", version)
    return tuple(int(p) for p in parts)


class ModelRollout:
    """Applies ``ModelUpdate`` messages to the running model slots."""

    def __init__(
        self,
        slots: Mapping[str, ModelSlot],
        models_dir: Path,
        *,
        metrics: AgentMetrics | None = None,
        on_swap: Callable[[], None] | None = None,
        agent_version: str = __version__,
        manifest_path: Path | None = None,
        keep: Iterable[Path] = (),
        rollback_window: int = ROLLBACK_WINDOW,
        rollback_error_rate: float = ROLLBACK_ERROR_RATE,
        public_key: Ed25519PublicKey | None = None,
        vehicle_id: str | None = None,
        download: DownloadSettings | None = None,
    ) -> None:
        self.slots = dict(slots)
        self.download = download or DownloadSettings()
        self.vehicle_id = vehicle_id
        self.public_key = public_key
        self.models_dir = models_dir
        self.metrics = metrics
        self.on_swap = on_swap
        self.agent_version = agent_version
        self.manifest_path = manifest_path
        self.keep = {Path(p).resolve() for p in keep}
        self._lock = threading.Lock()  # manifest and prune: the listener vs an auto-rollback
        for kind, slot in self.slots.items():
            slot.watch(rollback_window, rollback_error_rate, self._rollback_hook(kind))

    def _rollback_hook(self, kind: str) -> Callable[[SwapReport, str], None]:
        def rolled_back(report: SwapReport, reason: str) -> None:
            if self.metrics is not None:
                self.metrics.model_swaps.labels("rolled_back").inc()
            log.error(
                "%s model rolled back %s -> %s: %s",
                kind,
                report.previous_version,
                report.active_version,
                reason,
            )
            self.record()
            if self.on_swap is not None:
                self.on_swap()

        return rolled_back

    def count(self, result: RolloutResult) -> RolloutResult:
        if self.metrics is not None:
            self.metrics.model_swaps.labels(result.outcome).inc()
        level = {
            "refused": logging.WARNING,
            "store_failed": logging.ERROR,
            "download_failed": logging.ERROR,
        }.get(result.outcome, logging.INFO)
        log.log(level, "model update %s: %s", result.outcome, result.detail)
        return result

    def apply_raw(self, raw: bytes) -> RolloutResult:
        """Decode and apply one record value from the models topic."""
        try:
            update = decode_model_update(raw)
        except SchemaError as exc:
            return self.count(RolloutResult("refused", f"undecodable model update: {exc}"))
        return self.apply(update)

    def apply(self, update: ModelUpdate) -> RolloutResult:
        what = f"{update.name} {update.version}"
        if _version_tuple(self.agent_version) < _version_tuple(update.min_agent_version):
            return self.count(
                RolloutResult(
                    "skipped",
                    f"{what} needs agent >= {update.min_agent_version}, this is "
                    f"{self.agent_version}: upgrade the agent to run it",
                )
            )
        if self.public_key is not None:
            try:
                verify_update(update, self.public_key)
            except SignatureError as exc:
                return self.count(RolloutResult("bad_signature", f"{exc}; the running model stays"))
        if self.vehicle_id is not None and not in_stage(update, self.vehicle_id):
            return self.count(
                RolloutResult(
                    "not_in_stage",
                    f"{what} is for a stage of the rollout without {self.vehicle_id} "
                    f"({_stage(update)}); the running model stays until the rollout widens",
                )
            )
        for running in self.slots.values():
            meta = running.current.metadata
            if meta.name == update.name and meta.version == update.version:
                return self.count(RolloutResult("skipped", f"{what} already runs"))
        if update.inline is not None:
            checked = self._check_inline(update, what)
            if checked is not None:
                return self.count(checked)
        elif not update.url:
            return self.count(RolloutResult("refused", f"{what} has neither a model nor a url"))
        try:
            path = self._store(update)
        except DownloadError as exc:
            outcome: Outcome = "download_failed" if exc.transient else "refused"
            return self.count(RolloutResult(outcome, f"{what}: {exc}; the running model stays"))
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            return self.count(
                RolloutResult(
                    "store_failed",
                    f"{what}: cannot store it under {self.models_dir} ({exc}); "
                    + ("the disk is full: free space there" if full else "check that disk")
                    + "; the running model stays and the update is read again later",
                )
            )
        result = self._activate(update, path, what)
        if result.outcome != "ok":
            self.prune()  # the refused file goes
        return self.count(result)

    def _activate(self, update: ModelUpdate, path: Path, what: str) -> RolloutResult:
        try:
            kind = read_metadata(path).kind
        except ModelError as exc:
            return RolloutResult("refused", f"{what}: {exc}")
        slot = self.slots.get(kind)
        if slot is None:
            return RolloutResult("refused", f"{what} is a {kind} model; this agent runs none")
        try:
            report = slot.swap(path, update.sha256)
        except ModelError as exc:
            return RolloutResult("refused", str(exc))
        self.record()
        if self.on_swap is not None:
            self.on_swap()
        return RolloutResult(
            "ok",
            f"{kind} {report.previous_version} -> {report.active_version} on "
            f"{report.provider} in {report.seconds:.2f} s",
        )

    @staticmethod
    def _check_inline(update: ModelUpdate, what: str) -> RolloutResult | None:
        """Why the inline model does not match its update, or None."""
        data = update.inline or b""
        if len(data) != update.size_bytes:
            return RolloutResult(
                "refused", f"{what}: {len(data)} bytes, the update says {update.size_bytes}"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != update.sha256:
            return RolloutResult(
                "refused", f"{what}: sha256 {digest[:12]} != {update.sha256[:12]} (corrupt)"
            )
        return None

    def _store(self, update: ModelUpdate) -> Path:
        """The update's model in ``models_dir`` (written, or fetched from its url), fsynced;
        ``DownloadError`` or ``OSError`` with nothing left behind."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        name = _SAFE.sub("_", f"{update.name}-{update.version}") + ".onnx"
        path = self.models_dir / name
        tmp = path.with_suffix(".onnx.tmp")
        try:
            if update.inline is not None:
                with tmp.open("wb") as fh:
                    fh.write(update.inline)
                    fh.flush()
                    os.fsync(fh.fileno())
            else:
                assert update.url is not None
                d = self.download
                fetch(
                    update.url,
                    tmp,
                    size_bytes=update.size_bytes,
                    sha256=update.sha256,
                    max_bytes=d.max_bytes,
                    timeout_s=d.timeout_s,
                    token=d.token,
                    url_prefix=d.url_prefix,
                )
            tmp.replace(path)
        except (OSError, DownloadError):
            tmp.unlink(missing_ok=True)  # a partial file must not fill the disk further
            raise
        return path

    # -- the manifest and the models folder --------------------------------------------------
    def record(self) -> None:
        """Write what every slot runs (and its rollback target) to the manifest, then prune.

        A manifest that cannot be written is logged and counted; the swap itself stands.
        """
        if self.manifest_path is None:
            return
        with self._lock:
            try:
                on_disk = manifest.read(self.manifest_path)
            except ManifestError:
                on_disk = {}
            entries = {}
            for kind, slot in self.slots.items():
                current = _ref(slot.current)
                previous = None if slot.previous is None else _ref(slot.previous)
                known = on_disk.get(kind)
                if previous is None and known is not None and known.current == current:
                    previous = known.previous  # loaded at start: its rollback target stays
                entries[kind] = ManifestEntry(current, previous)
            try:
                manifest.write(self.manifest_path, entries)
            except OSError as exc:
                if self.metrics is not None:
                    self.metrics.model_manifest_problems.labels("write_failed").inc()
                log.error(
                    "model manifest %s not written (%s): after a restart the agent runs the "
                    "models of the previous manifest or the config; free space there",
                    self.manifest_path,
                    exc,
                )
                return
        self.prune()

    def prune(self) -> list[Path]:
        """Delete model files in ``models_dir`` that no slot, manifest entry or config needs."""
        with self._lock:
            needed = set(self.keep)
            for slot in self.slots.values():
                for model in (slot.current, slot.previous):
                    if model is not None:
                        needed.add(Path(model.runner.path).resolve())
            if self.manifest_path is not None:
                try:
                    on_disk = manifest.read(self.manifest_path)
                except ManifestError:
                    on_disk = {}
                for entry in on_disk.values():
                    for ref in (entry.current, entry.previous):
                        if ref is not None:
                            needed.add(ref.path.resolve())
            removed: list[Path] = []
            if not self.models_dir.is_dir():
                return removed
            for path in sorted(self.models_dir.iterdir()):
                if not path.is_file() or not path.name.endswith((".onnx", ".onnx.tmp")):
                    continue
                if path.resolve() in needed:
                    continue
                try:
                    path.unlink()
                except OSError as exc:
                    log.warning("model file %s not pruned: %s", path, exc)
                    continue
                removed.append(path)
            if removed:
                log.info("pruned %s", ", ".join(p.name for p in removed))
            return removed


def _stage(update: ModelUpdate) -> str:
    named = ", ".join(update.target_vehicles) or "no vehicle by name"
    return f"{named}; {update.target_fraction:.0%} of the fleet"


def _ref(model: ScoringModel) -> ModelRef:
    meta = model.metadata
    return ModelRef(Path(model.runner.path).resolve(), model.runner.sha256, meta.name, meta.version)


def consume_updates(
    rollout: ModelRollout,
    *,
    consumer: Any,
    stop: threading.Event,
    poll_timeout_ms: int = 500,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Reassemble and apply every update the consumer delivers until ``stop``.

    Offsets are committed only when no update is half-received, so a restart re-reads a
    partial one from its first chunk.
    """
    reasm = Reassembler(
        max_frame_bytes=MAX_MODEL_BYTES, max_inflight_bytes=2 * MAX_MODEL_BYTES, timeout_s=600.0
    )
    while not stop.is_set():
        batches = consumer.poll(timeout_ms=poll_timeout_ms)
        for records in batches.values():
            for record in records:
                try:
                    payload = reasm.add(record.value, clock())
                except SchemaError as exc:
                    rollout.count(RolloutResult("refused", f"bad model chunk: {exc}"))
                    continue
                if payload is not None:
                    result = rollout.apply_raw(payload)
                    if result.outcome in _RETRY_LATER:
                        raise RetryLaterError(result.detail)  # no commit: read it again later
        reasm.expire(clock())
        if batches and reasm.inflight_frames == 0:
            consumer.commit()


def start_listener(
    rollout: ModelRollout,
    *,
    bootstrap_servers: tuple[str, ...],
    topic: str,
    group_id: str,
    security: Mapping[str, Any],
    stop: threading.Event,
    retry_s: float = RETRY_S,
) -> threading.Thread:
    """A daemon thread consuming ``topic``; a broker that is away only delays updates, and no
    error ends the thread (a full disk, a bug: logged, counted, retried after ``retry_s``)."""

    def run() -> None:
        while not stop.is_set():
            try:
                listen_once()
            except Exception:  # the thread must not die silently; logged with the traceback
                if rollout.metrics is not None:
                    rollout.metrics.model_swaps.labels("listener_error").inc()
                log.exception("model updates: listener failed; restarting in %.0f s", retry_s)
                stop.wait(retry_s)

    def listen_once() -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaConnectionError, KafkaError

        while not stop.is_set():
            try:
                # no client before a server accepts: kafka-python leaks one that fails to
                # bootstrap (schemas.kafka_net)
                reachable, why = first_reachable(list(bootstrap_servers))
                if reachable is None:
                    raise KafkaConnectionError(why)
                consumer = KafkaConsumer(
                    topic,
                    bootstrap_servers=list(bootstrap_servers),
                    group_id=group_id,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    metadata_max_age_ms=METADATA_MAX_AGE_MS,
                    # a model download runs between two polls: the group must wait for it
                    max_poll_interval_ms=int((rollout.download.timeout_s + 60.0) * 1000),
                    **security,
                )
            except KafkaError as exc:
                log.warning("model updates: cannot reach %s (%s); retrying", topic, exc)
                stop.wait(5.0)
                continue
            try:
                consume_updates(rollout, consumer=consumer, stop=stop)
            except KafkaError as exc:
                log.warning("model updates: %s; reconnecting", exc)
            except RetryLaterError as exc:
                log.error("model updates: %s; retrying in %.0f s", exc, retry_s)
                stop.wait(retry_s)
            finally:
                consumer.close()

    thread = threading.Thread(target=run, name="model-rollout", daemon=True)
    thread.start()
    return thread
