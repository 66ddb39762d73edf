"""Prometheus metrics of the ingest service; every one is documented in ``docs/metrics.md``.

All metrics live in the registry passed in (tests use a fresh ``CollectorRegistry()``). Gauges
that are costly or unsafe to read from the scrape thread are computed at scrape time by
collectors: queue depth asks the label queue (its own connection, behind a lock), and consumer
lag reads a snapshot the consumer loop refreshes every few seconds (a kafka-python consumer
must only be touched by its own thread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ingest_service.retrain.jobs import JobStore

__all__ = ["IngestMetrics", "LagSnapshot"]

# A frame's store (blobs + one transaction) takes milliseconds; a DB outage, seconds.
_STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_SUBMIT_ROUTE_SUFFIX = "/tasks/{task_id}/labels"

LagSnapshot = Callable[[], Mapping[tuple[str, int], int]]
"""(topic, partition) -> records behind the partition's end offset."""


class _LagCollector(Collector):
    def __init__(self, snapshot: LagSnapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "fleetal_ingest_consumer_lag_records",
            "Records between the consumer's position and the partition's end offset, per "
            "assigned partition (refreshed by the consumer loop every few seconds)",
            labels=["topic", "partition"],
        )
        for (topic, partition), lag in sorted(self._snapshot().items()):
            family.add_metric([topic, str(partition)], lag)
        yield family


class _QueueDepthCollector(Collector):
    def __init__(self, stats: Callable[[], Mapping[str, int]]) -> None:
        self._stats = stats
        self._lock = threading.Lock()  # one queue connection; scrapes may overlap

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "fleetal_ingest_queue_tasks",
            "Label tasks per state (new, leased, labeled, skipped, expired), read at scrape time",
            labels=["state"],
        )
        ok = 1.0
        with self._lock:
            try:
                stats = dict(self._stats())
            except Exception:  # the database is down: say so, do not fail the scrape
                stats, ok = {}, 0.0
        for state, count in sorted(stats.items()):
            family.add_metric([str(state)], count)
        yield family
        yield GaugeMetricFamily(
            "fleetal_ingest_queue_up",
            "1 when the label-queue database answered the last scrape, else 0",
            value=ok,
        )


class _RetrainCollector(Collector):
    def __init__(self, store: Callable[[], JobStore | None]) -> None:
        self._store = store
        self._lock = threading.Lock()  # one connection; scrapes may overlap

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            yield from self._collect()

    def _collect(self) -> list[GaugeMetricFamily]:
        jobs = GaugeMetricFamily(
            "fleetal_ingest_retrain_jobs",
            "Retrain jobs per model kind and state (queued, running, succeeded, failed, "
            "rejected), read from the queue database at scrape time",
            labels=["kind", "state"],
        )
        metric = GaugeMetricFamily(
            "fleetal_ingest_retrain_last_metric",
            "Holdout metric of the last finished retrain run of each kind that reported one",
            labels=["kind"],
        )
        labels_used = GaugeMetricFamily(
            "fleetal_ingest_retrain_last_labels_used",
            "Labels the last finished retrain run of each kind trained on",
            labels=["kind"],
        )
        duration = GaugeMetricFamily(
            "fleetal_ingest_retrain_last_duration_seconds",
            "Duration of the last finished attempt of each kind's last retrain run",
            labels=["kind"],
        )
        failed_streak = GaugeMetricFamily(
            "fleetal_ingest_retrain_consecutive_failures",
            "Retrain runs of each kind that failed in a row since the last one that trained",
            labels=["kind"],
        )
        store = self._store()
        if store is not None:
            try:
                counts = store.counts()
                kinds = sorted({k for k, _ in counts})
                for (kind, state), n in sorted(counts.items()):
                    jobs.add_metric([kind, state.value], n)
                for kind in kinds:
                    last = store.last_finished(kind)
                    if last is None:
                        continue
                    if last.metric is not None:
                        metric.add_metric([kind], last.metric)
                    if last.labels_used is not None:
                        labels_used.add_metric([kind], last.labels_used)
                    if last.started_ns is not None and last.finished_ns is not None:
                        duration.add_metric([kind], (last.finished_ns - last.started_ns) / 1e9)
                    failed_streak.add_metric([kind], store.failures_in_a_row(kind))
            except Exception:  # the database is down: the queue's up gauge says so
                pass
        return [jobs, metric, labels_used, duration, failed_streak]


class IngestMetrics:
    """The ingest service's metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.frames_ingested = Counter(
            "fleetal_ingest_frames_ingested_total",
            "Frames stored with a new label task (blobs + one transaction committed)",
            registry=registry,
        )
        self.duplicates = Counter(
            "fleetal_ingest_duplicate_frames_total",
            "Frames received again after they were stored (re-sent by a vehicle, or re-read "
            "after a rebalance or crash); no second task",
            registry=registry,
        )
        self.duplicate_chunks = Counter(
            "fleetal_ingest_duplicate_chunks_total",
            "Chunks received twice for a frame still being reassembled (ignored)",
            registry=registry,
        )
        self.dead_lettered = Counter(
            "fleetal_ingest_dead_lettered_total",
            "Records sent to the dead-letter topic, by reason",
            ["reason"],
            registry=registry,
        )
        self.reassembly_expired = Counter(
            "fleetal_ingest_reassembly_expired_total",
            "Incomplete frames given up by the reassembler, by reason (timeout, memory)",
            ["reason"],
            registry=registry,
        )
        self.inflight_frames = Gauge(
            "fleetal_ingest_reassembly_inflight_frames",
            "Incomplete frames held by the reassembler",
            registry=registry,
        )
        self.inflight_bytes = Gauge(
            "fleetal_ingest_reassembly_inflight_bytes",
            "Bytes of incomplete frames held by the reassembler",
            registry=registry,
        )
        self.ingest_bytes = Counter(
            "fleetal_ingest_bytes_total",
            "Bytes of the frames stored (whole envelopes, as sent)",
            registry=registry,
        )
        self.consumed_bytes = Counter(
            "fleetal_ingest_consumed_bytes_total",
            "Bytes of Kafka record values read from the frames topic",
            registry=registry,
        )
        self.store_seconds = Histogram(
            "fleetal_ingest_store_seconds",
            "Time to store one poll's completed frames: blob writes plus the transaction",
            buckets=_STORE_BUCKETS,
            registry=registry,
        )
        self.store_retries = Counter(
            "fleetal_ingest_store_retries_total",
            "Failed attempts to store frames (database or blob store down), retried with backoff",
            ["error"],
            registry=registry,
        )
        self.commit_failures = Counter(
            "fleetal_ingest_offset_commit_failures_total",
            "Kafka offset commits that failed (the records are redelivered and de-duplicated)",
            registry=registry,
        )
        self.rebalances = Counter(
            "fleetal_ingest_rebalances_total",
            "Partition revocations seen by this consumer (group rebalances)",
            registry=registry,
        )
        self.assigned_partitions = Gauge(
            "fleetal_ingest_assigned_partitions",
            "Partitions of the frames topic assigned to this consumer",
            registry=registry,
        )
        self.kafka_connected = Gauge(
            "fleetal_ingest_kafka_connected",
            "1 once the consumer reached the brokers and subscribed; 0 while it is (re)trying",
            registry=registry,
        )
        self.kafka_connect_failures = Counter(
            "fleetal_ingest_kafka_connect_failures_total",
            "Attempts to reach the brokers at start that failed (retried with backoff)",
            registry=registry,
        )
        self.models_published = Counter(
            "fleetal_ingest_models_published_total",
            "Models a retrain run made production, sent to the fleet by rollout.auto_publish "
            "(result ok or failed)",
            ["kind", "result"],
            registry=registry,
        )
        self.rollout_decisions = Counter(
            "fleetal_ingest_rollout_decisions_total",
            "Checks of a staged rollout, by decision: wait (the canaries are still observed), "
            "widen (sent to the whole fleet), rollback (production back to the previous "
            "version, sent to the canaries)",
            ["kind", "decision"],
            registry=registry,
        )
        self.labels_submitted = Counter(
            "fleetal_ingest_labels_submitted_total",
            "Labels submitted through the labeling API",
            registry=registry,
        )
        self.api_request_seconds = Histogram(
            "fleetal_ingest_api_request_seconds",
            "Labeling API request latency, by route template and HTTP status code",
            ["route", "status"],
            buckets=_API_BUCKETS,
            registry=registry,
        )

    def watch_retrain(self, store: Callable[[], JobStore | None]) -> None:
        """Report retrain jobs at scrape time from the store ``store()`` returns (``None``
        while the database is unavailable)."""
        self.registry.register(_RetrainCollector(store))

    def watch_lag(self, snapshot: LagSnapshot) -> None:
        """Report consumer lag at scrape time from ``snapshot()`` (a cached copy)."""
        self.registry.register(_LagCollector(snapshot))

    def watch_queue(self, stats: Callable[[], Mapping[str, int]]) -> None:
        """Report queue depth per state at scrape time from ``stats()``."""
        self.registry.register(_QueueDepthCollector(stats))

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """The hook the labeling API calls after every request (its ``MetricsHook``).

        A successful ``POST .../tasks/{task_id}/labels`` also counts a submitted label.
        """
        self.api_request_seconds.labels(route, str(status)).observe(seconds)
        if route.endswith(_SUBMIT_ROUTE_SUFFIX) and 200 <= status < 300:
            self.labels_submitted.inc()
