"""``edge-agent run``: the on-vehicle daemon, and ``edge-agent check``, its health probe.

The daemon reads the live source (the sensor bridge's spool directory), runs every frame
through the pipeline, keeps selected frames in the durable spool and drains the spool to Kafka
from the sink's own thread. ``/metrics`` and ``/healthz`` are served throughout; the health
verdict comes from :class:`edge_agent.health.HealthMonitor` (uplink, spool age, model errors,
source stalls, each with a ``[metrics]`` threshold). The configuration is checked first by
:func:`edge_agent.probe.validate_for_run`, the very check ``edge-agent check`` runs.

On SIGTERM or SIGINT it stops taking frames, saves the selector state, lets the sink drain the
spool for up to ``agent.drain_timeout_s``, flushes the producer, closes and exits 0. Whatever
is still spooled then is sent after the next start (the spool survives restarts and power
loss).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType

from prometheus_client import CollectorRegistry

from edge_agent.agent import MetricsObserver, Parts, build_pipeline, save_state
from edge_agent.config import AgentConfig
from edge_agent.errors import EdgeAgentError
from edge_agent.health import HealthMonitor
from edge_agent.probe import check, validate_for_run
from edge_agent.rollout import ModelRollout, start_listener
from edge_agent.sink import KafkaSink
from edge_agent.sources import SourceOptions, SpoolDirSource, open_source
from edge_agent.sources.base import FrameSource
from edge_agent.spool import Spool, SpoolError
from schemas.ops import OpsServer
from schemas.sdnotify import Watchdog, notify
from schemas.signing import load_public_key

log = logging.getLogger(__name__)

__all__ = ["check", "open_live_source", "run"]

_STUCK_S = 60.0  # one frame in the pipeline this long: hung (the unit's WatchdogSec is 90)


def open_live_source(cfg: AgentConfig) -> FrameSource:
    """The configured source: a spool directory (live bridge) or a recorded drive."""
    path = cfg.source.path
    if path is None:
        raise EdgeAgentError(
            "source.path is not set: point it at the sensor bridge's spool directory "
            "(or a recorded drive) in the [source] table or FLEETAL_SOURCE__PATH"
        )
    options = SourceOptions(
        vehicle_id=cfg.agent.vehicle_id,
        drive_id=cfg.source.drive_id or None,
        cameras=cfg.source.cameras or None,
        sync_tolerance_ns=int(cfg.source.sync_tolerance_ms * 1e6),
    )
    if cfg.source.kind == "spool_dir":
        path.mkdir(parents=True, exist_ok=True)
        return SpoolDirSource(path, options)
    return open_source(
        path,
        vehicle_id=options.vehicle_id,
        drive_id=options.drive_id,
        cameras=options.cameras,
        sync_tolerance_ns=options.sync_tolerance_ns,
    )


class _InFlight:
    """When the frame the pipeline is on went in (for the watchdog: a frame stuck in a model
    or a decoder for longer than the watchdog allows means a hung daemon). The first frame is
    not judged: it may carry the providers' warm-up (a TensorRT engine build takes minutes)."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.done = 0

    def enter(self) -> None:
        self.since = time.monotonic()

    def leave(self) -> None:
        self.since = None
        self.done += 1

    def liveness(self, sink: KafkaSink, stuck_s: float) -> str | None:
        if not sink.running:
            return "the uplink thread stopped"
        since = self.since
        if self.done and since is not None and time.monotonic() - since > stuck_s:
            return f"one frame has been in the pipeline for {time.monotonic() - since:.0f} s"
        return None


@dataclass
class _Stop:
    event: threading.Event
    source: FrameSource | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping intake, draining", signal.Signals(signum).name)
        self.event.set()
        stop = getattr(self.source, "stop", None)
        if callable(stop):
            stop()


def run(cfg: AgentConfig, *, stop: threading.Event | None = None) -> int:
    """The daemon's main loop; returns the process exit code."""
    stop = stop or threading.Event()
    validate_for_run(cfg)  # a ConfigError here: exit 2, before anything is built
    cfg.agent.data_dir.mkdir(parents=True, exist_ok=True)
    spool = Spool(cfg.spool_path, max_bytes=cfg.spool.max_bytes)
    registry = CollectorRegistry()
    parts = build_pipeline(
        cfg,
        registry=registry,
        spool=spool,
        state_path=cfg.state_path,
        manifest_path=cfg.manifest_path if cfg.rollout.enabled else None,
    )
    sink = KafkaSink(cfg.kafka, spool, observer=MetricsObserver(parts.metrics))
    health = HealthMonitor(cfg.metrics, sink_stats=sink.stats, spool_stats=spool.stats)
    health.register(registry)
    ops = None
    if cfg.metrics.enabled:
        ops = OpsServer(registry, host=cfg.metrics.host, port=cfg.metrics.port, health=health)
        ops.start()
    if cfg.rollout.enabled:
        _start_rollout(cfg, parts, stop)
    source = open_live_source(cfg)
    if isinstance(source, SpoolDirSource):
        parts.metrics.watch_source(lambda: source.counts)
    handler = _Stop(stop, source)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
    sink.start()
    in_flight = _InFlight()
    watchdog = Watchdog(lambda: in_flight.liveness(sink, stuck_s=_STUCK_S)).start()
    notify(f"READY=1\nSTATUS=scoring frames from {cfg.source.path}")
    frames = 0
    try:
        for item in source.frames():
            in_flight.enter()
            row = parts.pipeline.process(item)
            in_flight.leave()
            health.frame(row.reason)
            frames += 1
            if frames % cfg.agent.state_every_frames == 0:
                save_state(parts.selector, cfg.state_path)
            if stop.is_set():
                break
    except SpoolError as exc:  # the spool itself is gone: unhealthy, exit for systemd
        health.fail(str(exc))
        log.error("spool failed, stopping: %s", exc)
        return 1
    finally:
        notify("STOPPING=1")
        watchdog.stop()
        save_state(parts.selector, cfg.state_path)
        source.close()
        parts.pipeline.flush_logs()  # the counts of bad inputs the rate limits held back
        log.info(
            "intake stopped after %d frames; draining for up to %.0f s",
            frames,
            cfg.agent.drain_timeout_s,
        )
        sink.stop(drain_timeout_s=cfg.agent.drain_timeout_s)
        left = spool.stats().frames
        if left:
            log.info("%d frame(s) stay spooled for the next start", left)
        spool.close()
        if ops is not None:
            ops.stop()
    return 0


def _start_rollout(cfg: AgentConfig, parts: Parts, stop: threading.Event) -> None:
    scorer = parts.pipeline.scorer
    slots = {k: s for k, s in (("camera", scorer.camera), ("lidar", scorer.lidar)) if s}
    rollout = ModelRollout(
        slots,
        cfg.rollout.models_dir or cfg.agent.data_dir / "models",
        metrics=parts.metrics,
        on_swap=parts.pipeline.refresh_models,
        manifest_path=cfg.manifest_path,
        keep=[p for p in (cfg.models.camera, cfg.models.lidar) if p is not None],
        rollback_window=cfg.rollout.rollback_window_frames,
        rollback_error_rate=cfg.rollout.rollback_error_rate,
        public_key=None
        if cfg.rollout.public_key is None
        else load_public_key(cfg.rollout.public_key),
        vehicle_id=cfg.agent.vehicle_id,
        download=cfg.rollout.download_settings(),
    )
    start_listener(
        rollout,
        bootstrap_servers=cfg.kafka.bootstrap_servers,
        topic=cfg.rollout.topic,
        group_id=cfg.rollout.group_id or f"edge-{cfg.agent.vehicle_id}",
        security=cfg.kafka.security.kafka_kwargs(),
        stop=stop,
    )
