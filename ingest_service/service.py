"""The ingest service assembled: consumer thread, labeling API, ``/metrics`` and ``/healthz``.

::

    service = IngestService(config, tokens=load_tokens(path)).start()
    ...                                   # SIGTERM handler: service.request_stop()
    exit_code = service.wait()            # consumer finished its write, committed, closed
    service.close()                       # API drained, ops server down, connections closed

Each part has its own label-queue connection (a connection serves one thread): the consumer's
(reopened after a database failure), the API's, and one for scrape-time queue depth and lease
maintenance.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Self

from prometheus_client import CollectorRegistry

from ingest_service.blobstore import blob_store_spec, open_blob_store
from ingest_service.config import IngestConfig
from ingest_service.consumer import IngestConsumer, QueueFactory, queue_opener
from ingest_service.metrics import IngestMetrics
from ingest_service.queue import LabelQueue
from ingest_service.registry import ModelRegistry
from ingest_service.retrain import JobState, JobStore, RetrainJob, RetrainScheduler
from ingest_service.retrain.worker import TrainerCommand, work_once
from ingest_service.staging import StagedRollout
from schemas.ops import OpsServer

__all__ = ["IngestService"]

log = logging.getLogger(__name__)

_MAINTENANCE_EVERY_S = 60.0


class IngestService:
    """Everything ``ingest-service run`` runs, startable and stoppable from a test."""

    def __init__(
        self,
        config: IngestConfig,
        *,
        tokens: Mapping[str, str] | None = None,
        registry: CollectorRegistry | None = None,
        queue_factory: QueueFactory | None = None,
    ) -> None:
        if config.api.enabled and not tokens:
            raise ValueError("api.enabled needs tokens (api.tokens_file)")
        self.config = config
        self.tokens = dict(tokens or {})
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = IngestMetrics(self.registry)
        self.queue_factory = queue_factory or queue_opener(config)
        self.blobs = open_blob_store(config)
        self.consumer = IngestConsumer(
            config, queue_factory=self.queue_factory, blobs=self.blobs, metrics=self.metrics
        )
        self.stop_event = threading.Event()
        self._stats_lock = threading.Lock()
        self._stats_queue: LabelQueue | None = None
        self._api_queue: LabelQueue | None = None
        self._api: Any = None
        self._ops: OpsServer | None = None
        self._consumer_thread: threading.Thread | None = None
        self._maintenance: threading.Thread | None = None
        self._consumer_error: BaseException | None = None
        self._retrain_thread: threading.Thread | None = None
        self._worker_thread: threading.Thread | None = None
        self._staging_thread: threading.Thread | None = None
        self._retrain_metrics_queue: LabelQueue | None = None
        self._retrain_metrics_jobs: JobStore | None = None

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Open the queue (migrating it), start the API, the ops server and the consumer."""
        self._stats_queue = self.queue_factory()  # migrates; fails fast on a bad database
        self.metrics.watch_queue(self._queue_stats)
        self.metrics.watch_lag(self.consumer.lag_snapshot)
        self.metrics.watch_retrain(self._retrain_metrics_store)
        if self.config.api.enabled:
            self._start_api()
        self._ops = OpsServer(
            self.registry,
            host=self.config.metrics.host,
            port=self.config.metrics.port,
            health=self.health,
        ).start()
        self._consumer_thread = threading.Thread(
            target=self._run_consumer, name="ingest-consumer", daemon=True
        )
        self._consumer_thread.start()
        self._maintenance = threading.Thread(
            target=self._maintain, name="ingest-maintenance", daemon=True
        )
        self._maintenance.start()
        if self.config.retrain.enabled:
            self._start_retrain()
        if self.config.rollout.staged:
            self._staging_thread = threading.Thread(
                target=self._run_staging, name="ingest-staged-rollout", daemon=True
            )
            self._staging_thread.start()
        return self

    def _start_retrain(self) -> None:
        """Take back the jobs the previous process left running, then schedule by policy."""
        queue = self.queue_factory()
        store = JobStore(queue.db)
        for job in store.recover(interrupted=True):
            log.warning(
                "retrain job %d (%s) was running when the service stopped: now %s",
                job.id,
                job.kind,
                job.state.value,
            )
        scheduler = RetrainScheduler(store, self.config.retrain.policies())
        self._retrain_thread = threading.Thread(
            target=self._schedule, args=(queue, scheduler), name="ingest-retrain", daemon=True
        )
        self._retrain_thread.start()
        if self.config.retrain.command:
            self._worker_thread = threading.Thread(
                target=self._train, name="ingest-retrain-worker", daemon=True
            )
            self._worker_thread.start()

    def _train(self) -> None:
        """Run queued jobs with the trainer command, one at a time, until the service stops.

        The trainer is started from this thread, so it dies with it (die_with_parent)."""
        import socket

        cfg = self.config.retrain
        blobs = blob_store_spec(self.config)
        command = TrainerCommand(cfg.command, cfg.work_dir, blobs, ray=cfg.ray_target())
        worker = f"{socket.gethostname()}:{os.getpid()}"
        queue: LabelQueue | None = None
        registry: ModelRegistry | None = None
        while not self.stop_event.is_set():
            try:
                if queue is None:
                    queue = self.queue_factory()
                if registry is None:
                    registry = self.config.registry.open()
                kinds = [p.kind for p in cfg.policies()]
                outcomes = work_once(
                    JobStore(queue.db),
                    queue,
                    kinds,
                    command,
                    worker=worker,
                    stop=self.stop_event,
                    registry=registry,
                    margin=self.config.registry.margin,
                )
                if self.config.rollout.auto_publish:
                    for job in outcomes:
                        self._publish_promoted(registry, job)
            except Exception as exc:
                log.warning("retrain worker: %s", exc)
                if queue is not None:
                    queue.close()
                queue = None
            if self.stop_event.wait(cfg.tick_s):
                break
        if queue is not None:
            queue.close()

    def _publish_promoted(self, registry: ModelRegistry, job: RetrainJob) -> None:
        """Send a model that a run just made production to the fleet (rollout.auto_publish)."""
        from ingest_service.rollout import build_update, publish

        if job.state is not JobState.SUCCEEDED or not job.model_version:
            return
        name, _, number = job.model_version.rpartition(":")
        if name != registry.model_name(job.kind) or not number.isdigit():
            return  # not registered by this worker
        try:
            if self.config.rollout.staged:
                update = self._staged(registry).start(job.kind, int(number))
            else:
                update = build_update(self.config, registry, job.kind, int(number))
                publish(self.config, update)
        except Exception as exc:
            self.metrics.models_published.labels(job.kind, "failed").inc()
            log.error(
                "retrain job %d: %s is production but was not published (%s); run "
                "`ingest-service publish-model --kind %s` once the cause is fixed",
                job.id,
                job.model_version,
                exc,
                job.kind,
            )
            return
        self.metrics.models_published.labels(job.kind, "ok").inc()
        log.info(
            "retrain job %d: published %s %s to %s",
            job.id,
            update.name,
            update.version,
            self.config.rollout.topic,
        )

    def _staged(self, registry: ModelRegistry) -> StagedRollout:
        from ingest_service.rollout import publish
        from ingest_service.staging import PrometheusFleet

        cfg = self.config.rollout
        return StagedRollout(
            self.config,
            registry,
            PrometheusFleet(cfg.prometheus_url, vehicle_label=cfg.vehicle_label),
            lambda update: publish(self.config, update),
            on_decision=lambda d: self.metrics.rollout_decisions.labels(d.kind, d.action).inc(),
        )

    def _run_staging(self) -> None:
        """Every ``rollout.canary_tick_s``: move staged rollouts on (ingest_service.staging)."""
        registry: ModelRegistry | None = None
        while not self.stop_event.wait(self.config.rollout.canary_tick_s):
            try:
                if registry is None:
                    registry = self.config.registry.open()
                self._staged(registry).tick()
            except Exception as exc:  # Prometheus or the registry is away: the next tick
                log.warning(
                    "staged rollout: %s; checked again in %.0f s",
                    exc,
                    self.config.rollout.canary_tick_s,
                )

    def _schedule(self, queue: LabelQueue, scheduler: RetrainScheduler) -> None:
        """Every ``retrain.tick_s``: take back timed-out jobs, queue the jobs that are due."""
        try:
            while True:
                try:
                    for job in scheduler.store.recover():
                        log.warning(
                            "retrain job %d (%s) timed out: now %s",
                            job.id,
                            job.kind,
                            job.state.value,
                        )
                    for job in scheduler.tick():
                        log.info("retrain job %d queued for %s: %s", job.id, job.kind, job.trigger)
                except Exception as exc:  # the database is down: try again at the next tick
                    log.warning("retrain scheduling failed: %s", exc)
                if self.stop_event.wait(self.config.retrain.tick_s):
                    return
        finally:
            queue.close()

    def _retrain_metrics_store(self) -> JobStore | None:
        """The scrape thread's own connection for the retrain metrics (reopened on failure)."""
        try:
            if self._retrain_metrics_queue is None:
                self._retrain_metrics_queue = self.queue_factory()
                self._retrain_metrics_jobs = JobStore(self._retrain_metrics_queue.db)
            return self._retrain_metrics_jobs
        except Exception:
            if self._retrain_metrics_queue is not None:
                self._retrain_metrics_queue.close()
            self._retrain_metrics_queue = None
            self._retrain_metrics_jobs = None
            return None

    def _start_api(self) -> None:
        from ingest_service.api import ApiServer, create_app

        self._api_queue = self.queue_factory()
        app = create_app(
            self._api_queue,
            self.blobs,
            tokens=self.tokens,
            lease_s=self.config.queue.lease_s,
            metrics=self.metrics.observe_request,
            retrain_policies=self.config.retrain.policies(),
        )
        self._api = ApiServer(app, self.config.api.host, self.config.api.port)
        self._api.start()
        log.info("labeling API on %s:%d", self.config.api.host, self.api_port)

    def liveness(self) -> str | None:
        """None while every part that was started runs, else which one stopped (systemd's
        watchdog then restarts the service: :mod:`schemas.sdnotify`)."""
        if self.stop_event.is_set():
            return None  # stopping: the threads end on purpose
        threads = (
            self._consumer_thread,
            self._maintenance,
            self._retrain_thread,
            self._worker_thread,
            self._staging_thread,
        )
        for thread in threads:
            if thread is not None and not thread.is_alive():
                return f"the {thread.name} thread stopped"
        if self._api is not None and not self._api.running:
            return "the labeling API's server stopped"
        return None

    def request_stop(self) -> None:
        """Stop polling; the consumer finishes its current write, commits and closes."""
        self.stop_event.set()

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the consumer thread; 0 when it stopped cleanly, 1 when it failed."""
        if self._consumer_thread is not None:
            self._consumer_thread.join(timeout_s)
            if self._consumer_thread.is_alive():
                return 1
        return 1 if self._consumer_error is not None else 0

    def close(self) -> None:
        """Stop everything (the consumer first), close every connection."""
        self.request_stop()
        if self._consumer_thread is not None:
            drain = self.config.consumer.drain_timeout_s + 30.0
            self._consumer_thread.join(drain)
        if self._api is not None:
            self._api.stop()
            self._api = None
        if self._ops is not None:
            self._ops.stop()
            self._ops = None
        if self._maintenance is not None:
            self._maintenance.join(5)
        for thread in (self._retrain_thread, self._worker_thread, self._staging_thread):
            if thread is not None:
                thread.join(10)
        with self._stats_lock:
            for queue in (self._api_queue, self._stats_queue, self._retrain_metrics_queue):
                if queue is not None:
                    queue.close()
            self._api_queue = self._stats_queue = self._retrain_metrics_queue = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- state ----------------------------------------------------------------------------

    @property
    def api_port(self) -> int | None:
        return None if self._api is None else int(self._api.port)

    @property
    def ops_port(self) -> int | None:
        return None if self._ops is None else self._ops.port

    def health(self) -> tuple[bool, str]:
        """``/healthz``: the consumer is polling and its writes succeed."""
        if self._consumer_error is not None:
            return False, f"consumer failed: {self._consumer_error!r}"
        return self.consumer.health()

    # --- threads --------------------------------------------------------------------------

    def _run_consumer(self) -> None:
        try:
            self.consumer.run(self.stop_event)
        except BaseException as exc:
            self._consumer_error = exc
            log.critical("ingest consumer failed: %r", exc, exc_info=True)
            self.stop_event.set()

    def queue_stats(self) -> dict[str, int]:
        """Tasks per state, now."""
        return self._queue_stats()

    def _queue_stats(self) -> dict[str, int]:
        with self._stats_lock:
            if self._stats_queue is None:
                self._stats_queue = self.queue_factory()
            try:
                return {str(k): v for k, v in self._stats_queue.stats().items()}
            except Exception:
                self._stats_queue.close()
                self._stats_queue = None  # reopened at the next scrape
                raise

    def _maintain(self) -> None:
        """Take back lapsed leases every minute (docs/label-queue.md)."""
        while not self.stop_event.wait(_MAINTENANCE_EVERY_S):
            with self._stats_lock:
                try:
                    if self._stats_queue is None:
                        self._stats_queue = self.queue_factory()
                    expired = self._stats_queue.expire_leases()
                    if expired:
                        log.info("took back %d lapsed leases", expired)
                except Exception as exc:
                    log.warning("lease maintenance failed: %s", exc)
                    if self._stats_queue is not None:
                        self._stats_queue.close()
                    self._stats_queue = None
