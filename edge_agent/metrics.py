"""Prometheus metrics of the edge agent; every one is documented in ``docs/metrics.md``.

All metrics live in the registry passed in (tests use a fresh ``CollectorRegistry()``); gauges
that are costly to keep current (spool frames, bytes, oldest age) are computed at scrape time by
a collector that asks the spool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Inference on an edge GPU takes milliseconds; on a CPU, tens to hundreds.
_INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# A stream decision costs microseconds.
_DECISION_BUCKETS = (5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2)
_SCORE_BUCKETS = tuple(i / 20 for i in range(1, 21))
_SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class SpoolStats:
    frames: int
    bytes: int
    oldest_age_s: float
    evicted_total: int
    held: int = 0
    max_bytes: int = 0


class _SpoolCollector(Collector):
    def __init__(self, stats: Callable[[], SpoolStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self._stats()
        yield GaugeMetricFamily(
            "fleetal_edge_spool_frames", "Selected frames waiting in the spool", value=s.frames
        )
        yield GaugeMetricFamily(
            "fleetal_edge_spool_bytes", "Bytes of the frames waiting in the spool", value=s.bytes
        )
        yield GaugeMetricFamily(
            "fleetal_edge_spool_max_bytes",
            "The spool's size limit (spool.max_bytes); full, it evicts the lowest scores",
            value=s.max_bytes,
        )
        yield GaugeMetricFamily(
            "fleetal_edge_spool_oldest_age_seconds",
            "Age of the oldest frame waiting in the spool (0 when empty)",
            value=s.oldest_age_s,
        )
        yield GaugeMetricFamily(
            "fleetal_edge_spool_evicted_frames",
            "Unsent frames evicted (lowest score first) because the spool was full, since start",
            value=s.evicted_total,
        )
        yield GaugeMetricFamily(
            "fleetal_edge_spool_held_frames",
            "Frames the broker refused for good (too large, not authorised), set aside in the "
            "spool so they cannot hold back the others; retried every kafka.held_retry_s",
            value=s.held,
        )


class _QualityCollector(Collector):
    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "fleetal_edge_quality_issues",
            "Sensors (a camera image or a sweep) the quality gate removed, by reason; the frame "
            "itself goes on with its other sensors unless quality.on_bad_sensor = drop_frame",
            labels=["reason"],
        )
        for reason, count in sorted(self._counts().items()):
            family.add_metric([str(reason)], count)
        yield family


class _SourceCollector(Collector):
    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "fleetal_edge_source_sensors_left_out",
            "Sensors the live source left out of a frame, by reason (camera_out_of_sync: "
            "further than source.sync_tolerance_ms from the frame's reference time)",
            labels=["reason"],
        )
        for reason, count in sorted(self._counts().items()):
            family.add_metric([str(reason)], count)
        yield family


class AgentMetrics:
    """The edge agent's metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry, *, vehicle_id: str) -> None:
        self.registry = registry
        self.vehicle_id = vehicle_id
        self.frames_in = Counter(
            "fleetal_edge_frames_in_total",
            "Frames read from the source, good or bad",
            registry=registry,
        )
        self.frames_scored = Counter(
            "fleetal_edge_frames_scored_total",
            "Frames that passed the quality gate and were scored by the models",
            registry=registry,
        )
        self.frames_selected = Counter(
            "fleetal_edge_frames_selected_total",
            "Frames selected for labeling and written to the spool",
            registry=registry,
        )
        self.frames_dropped = Counter(
            "fleetal_edge_frames_dropped_total",
            "Frames not selected or not scorable, by reason (selector reasons, quality-gate "
            "reasons, source and model errors)",
            ["reason"],
            registry=registry,
        )
        self.sensor_files_dropped = Counter(
            "fleetal_edge_sensor_files_dropped_total",
            "Sensor files a source could not read while it kept the rest of the frame (the "
            "frame is scored on what it has), by source reason",
            ["reason"],
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "fleetal_edge_inference_seconds",
            "Model inference time per frame, by model and execution provider",
            ["model", "provider"],
            buckets=_INFERENCE_BUCKETS,
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "fleetal_edge_decision_seconds",
            "Selector decision time per frame (uncertainty, diversity, budget)",
            buckets=_DECISION_BUCKETS,
            registry=registry,
        )
        self.score = Histogram(
            "fleetal_edge_score",
            "Distribution of the fused per-frame selection score",
            buckets=_SCORE_BUCKETS,
            registry=registry,
        )
        self.threshold = Gauge(
            "fleetal_edge_selection_threshold",
            "Current adaptive score threshold of the budget controller",
            registry=registry,
        )
        self.selection_rate = Gauge(
            "fleetal_edge_selection_rate",
            "Realised selection rate (selected / scored) since start",
            registry=registry,
        )
        self.target_rate = Gauge(
            "fleetal_edge_selection_target_rate",
            "Configured target selection rate (the budget)",
            registry=registry,
        )
        self.kafka_send_errors = Counter(
            "fleetal_edge_kafka_send_errors_total",
            "Failed Kafka sends (a frame is retried from the spool), by error type",
            ["error"],
            registry=registry,
        )
        self.kafka_held_frames = Counter(
            "fleetal_edge_kafka_held_frames_total",
            "Frames set aside in the spool because the broker refused them for good, by error",
            ["error"],
            registry=registry,
        )
        self.kafka_send_seconds = Histogram(
            "fleetal_edge_kafka_send_seconds",
            "Time from handing a frame's chunks to the producer to the broker's last ack",
            buckets=_SEND_BUCKETS,
            registry=registry,
        )
        self.kafka_sent_bytes = Counter(
            "fleetal_edge_kafka_sent_bytes_total",
            "Payload bytes acknowledged by the broker",
            registry=registry,
        )
        self.kafka_sent_frames = Counter(
            "fleetal_edge_kafka_sent_frames_total",
            "Frames acknowledged by the broker and removed from the spool",
            registry=registry,
        )
        self.model_info = Gauge(
            "fleetal_edge_model_info",
            "Running model versions (value 1), with the execution provider actually in use",
            ["kind", "model", "version", "sha256", "provider"],
            registry=registry,
        )
        self.model_swaps = Counter(
            "fleetal_edge_model_swaps_total",
            "Model updates and swaps, by result: ok, refused, bad_signature, not_in_stage (for "
            "a stage of a staged rollout without this vehicle), skipped, store_failed (not "
            "written, e.g. disk full; retried), rolled_back (automatic, error rate rose after a "
            "swap), listener_error (the update listener failed and restarts)",
            ["result"],
            registry=registry,
        )
        self.model_manifest_problems = Counter(
            "fleetal_edge_model_manifest_problems_total",
            "Active-model manifest problems, by problem: corrupt, missing (a model file it "
            "names is gone), load_failed (checksum, load or smoke test), write_failed; at "
            "start each one falls back to the configured model",
            ["problem"],
            registry=registry,
        )
        self._running: dict[str, tuple[str, str, str, str, str]] = {}

    def watch_spool(self, stats: Callable[[], SpoolStats]) -> None:
        """Report spool gauges at scrape time from ``stats()``."""
        self.registry.register(_SpoolCollector(stats))

    def watch_quality(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Report the quality gate's per-reason counts at scrape time from ``counts()``."""
        self.registry.register(_QualityCollector(counts))

    def watch_source(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Report the live source's per-reason counts at scrape time from ``counts()``."""
        self.registry.register(_SourceCollector(counts))

    def set_model(self, kind: str, model: str, version: str, sha256: str, provider: str) -> None:
        """Mark ``model`` as the one running for ``kind`` (camera or lidar)."""
        labels = (kind, model, version, sha256[:12], provider)
        previous = self._running.get(kind)
        if previous is not None and previous != labels:
            self.model_info.remove(*previous)
        self._running[kind] = labels
        self.model_info.labels(*labels).set(1)
