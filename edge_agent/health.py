"""The agent's health, derived from what it does: ``/healthz``, ``fleetal_edge_healthy``, ``check``.

Four checks, each with a threshold in the ``[metrics]`` table (0 turns a check off); the agent is
healthy when none fails (docs/metrics.md, *Health*):

* **uplink**: frames are waiting and none was delivered for ``health_max_send_age_s`` (the
  age of the last acknowledgement, or of the sink's start, and of the oldest waiting frame,
  whichever is younger: a frame that just arrived after an idle hour is not a stall);
* **spool**: the oldest waiting frame is older than ``health_max_spool_age_s`` (held frames,
  which the broker refused for good, are reported but do not count: they cannot leave);
* **model**: more than ``health_max_model_error_rate`` of the last
  ``health_model_error_window`` frames that reached the models failed in them (judged once at
  least ``health_model_min_frames`` did);
* **source**: no frame (good or bad) came from the source for ``health_max_source_gap_s``.

A fatal daemon error (the spool itself broke) is reported through :meth:`HealthMonitor.fail`.
The verdict is computed when asked (a probe or a scrape): two spool index reads and a few
counters, no I/O on the pipeline's path.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from edge_agent.config import MetricsSection
from edge_agent.sink import SinkStats
from edge_agent.spool import SpoolError, SpoolStats

__all__ = ["CHECKS", "HealthMonitor", "HealthReport"]

CHECKS = ("uplink", "spool", "model", "source", "daemon")

# FrameRow reasons of frames that never reached the models: they say nothing about them.
_NOT_SCORED_PREFIXES = ("source_", "quality_")
_NOT_SCORED = frozenset({"no_sensor_data"})


@dataclass(frozen=True, slots=True)
class HealthReport:
    """``ok`` and, per check, a line; ``failed`` names the checks that failed."""

    ok: bool
    failed: tuple[str, ...]
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The ``/healthz`` body: ``ok`` or ``unhealthy: <checks>``, then one line per check."""
        head = "ok" if self.ok else "unhealthy: " + ", ".join(self.failed)
        return "\n".join((head, *self.lines))


class HealthMonitor:
    """Judges the running agent; the daemon feeds it frames, probes and scrapes ask it."""

    def __init__(
        self,
        cfg: MetricsSection,
        *,
        sink_stats: Callable[[], SinkStats] | None = None,
        spool_stats: Callable[[], SpoolStats] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self._sink_stats = sink_stats
        self._spool_stats = spool_stats
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_frame: float | None = None
        self._outcomes: deque[bool] = deque(maxlen=cfg.health_model_error_window)
        self._fatal: str | None = None

    # -- fed by the daemon -----------------------------------------------------------------
    def frame(self, reason: str) -> None:
        """One item came from the source and went through the pipeline with ``reason``."""
        now = self._clock()
        scored = reason not in _NOT_SCORED and not reason.startswith(_NOT_SCORED_PREFIXES)
        with self._lock:
            self._last_frame = now
            if scored:
                self._outcomes.append(reason == "model_error")

    def fail(self, detail: str) -> None:
        """The daemon hit an error it cannot go on from."""
        with self._lock:
            self._fatal = detail

    # -- asked by probes -------------------------------------------------------------------
    def report(self) -> HealthReport:
        now = self._clock()
        cfg = self.cfg
        failed: list[str] = []
        lines: list[str] = []
        with self._lock:
            fatal = self._fatal
            last_frame = self._last_frame
            outcomes = list(self._outcomes)
        if fatal is not None:
            failed.append("daemon")
            lines.append(f"daemon: {fatal}")
        spool: SpoolStats | None = None
        try:
            spool = self._spool_stats() if self._spool_stats is not None else None
        except (SpoolError, ValueError) as exc:  # ValueError: closed at shutdown
            failed.append("spool")
            lines.append(f"spool: FAILED cannot be read: {exc}")
        sink = self._sink_stats() if self._sink_stats is not None else None
        if spool is not None:
            waiting = spool.pending + spool.inflight
            if sink is not None:
                last = sink.last_delivery_at
                since = now - (last if last is not None else sink.started_at)
                stalled = min(since, spool.oldest_age_s) if waiting else 0.0
                limit = cfg.health_max_send_age_s
                bad = limit > 0 and waiting > 0 and stalled > limit
                when = "never" if last is None else f"{now - last:.0f} s ago"
                lines.append(
                    f"uplink: {'FAILED ' if bad else ''}last delivery {when}, {waiting} frame(s) "
                    f"waiting, stalled {stalled:.0f} s (limit {_limit(limit)})"
                )
                if bad:
                    failed.append("uplink")
            limit = cfg.health_max_spool_age_s
            bad = limit > 0 and waiting > 0 and spool.oldest_age_s > limit
            lines.append(
                f"spool: {'FAILED ' if bad else ''}{spool.frames} frame(s), oldest waiting "
                f"{spool.oldest_age_s:.0f} s (limit {_limit(limit)}), {spool.held} held "
                "(refused by the broker for good)"
            )
            if bad:
                failed.append("spool")
        rate = sum(outcomes) / len(outcomes) if outcomes else 0.0
        judged = len(outcomes) >= cfg.health_model_min_frames
        bad = (
            cfg.health_max_model_error_rate < 1.0
            and judged
            and (rate > cfg.health_max_model_error_rate)
        )
        lines.append(
            f"model: {'FAILED ' if bad else ''}{sum(outcomes)} of the last {len(outcomes)} "
            f"scored frame(s) failed in the models ({rate:.0%}, limit "
            f"{cfg.health_max_model_error_rate:.0%}"
            f"{'' if judged else f', judged from {cfg.health_model_min_frames} frames'})"
        )
        if bad:
            failed.append("model")
        gap = now - (last_frame if last_frame is not None else self._started)
        limit = cfg.health_max_source_gap_s
        bad = limit > 0 and gap > limit
        lines.append(
            f"source: {'FAILED ' if bad else ''}"
            f"{'no frame yet' if last_frame is None else 'last frame'} ({gap:.0f} s, "
            f"limit {_limit(limit)})"
        )
        if bad:
            failed.append("source")
        return HealthReport(not failed, tuple(failed), tuple(lines))

    def __call__(self) -> tuple[bool, str]:
        """The ``OpsServer`` health callback."""
        report = self.report()
        return report.ok, report.text

    def register(self, registry: CollectorRegistry) -> None:
        """``fleetal_edge_healthy`` and ``fleetal_edge_health_check_failed{check}``, at scrape."""
        registry.register(_HealthCollector(self))


def _limit(seconds: float) -> str:
    return "off" if seconds <= 0 else f"{seconds:.0f} s"


class _HealthCollector(Collector):
    def __init__(self, monitor: HealthMonitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[GaugeMetricFamily]:
        report = self._monitor.report()
        yield GaugeMetricFamily(
            "fleetal_edge_healthy",
            "1 while every health check passes (what /healthz answers 200 to), else 0",
            value=1 if report.ok else 0,
        )
        family = GaugeMetricFamily(
            "fleetal_edge_health_check_failed",
            "1 for each failing health check (uplink, spool, model, source, daemon)",
            labels=["check"],
        )
        for name in CHECKS:
            family.add_metric([name], 1 if name in report.failed else 0)
        yield family
