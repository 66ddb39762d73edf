"""``ingest-service``: run (consumer + labeling API + /metrics), check (probe), admin commands.

The only place that reads ``os.environ`` (``FLEETAL_*`` overrides; the standard ``AWS_*``
variables for an S3 blob store, :func:`~ingest_service.config.apply_aws_environment`) and
configures logging.
Exit codes: 0 ok, 1 unhealthy or failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import types
from collections.abc import Sequence
from pathlib import Path

from ingest_service.config import (
    IngestConfig,
    apply_aws_environment,
    load_ingest_config,
    load_tokens,
)
from ingest_service.errors import IngestError
from schemas.config import ConfigError, config_help
from schemas.errors import SchemaError
from schemas.kafka_net import first_reachable

log = logging.getLogger("ingest_service")

_EXPORT_FORMATS = ("coco", "kitti", "cvat", "labelstudio")  # = ingest_service.api.exporting


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ingest-service",
        description="Consume selected frames from Kafka into the blob store and the label queue; "
        "serve the labeling API.",
        epilog="Every configuration key can be overridden by an environment variable "
        "FLEETAL_<TABLE>__<KEY>; `ingest-service config-help` lists them all.",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument("--config", type=Path, required=True, help="TOML configuration file")
        return sp

    with_config("run", "the service: consumer, labeling API, /metrics and /healthz")
    with_config("check", "exit 0 if the service can run, 1 if not (for probes)")
    with_config("queue-stats", "print the label queue's task counts per state (JSON)")
    with_config("requeue-expired", "send tasks whose leases ran out max_attempts times back to new")
    ex = with_config("export", "export every labeled task (the labeling API's exporters)")
    ex.add_argument(
        "--format",
        choices=_EXPORT_FORMATS,
        required=True,
        help="coco (JSON), kitti (zip, streamed), cvat (CVAT for images 1.1 XML), "
        "labelstudio (JSON)",
    )
    ex.add_argument("--out", type=Path, required=True, help="output file (.json, .zip, .xml)")
    ex.add_argument("--after-task-id", type=int, default=0, help="only tasks with a larger id")
    ex.add_argument("--camera", default="CAM_FRONT", help="kitti: the camera exported as image_2")
    rr = with_config("retrain-request", "queue a retrain of a model kind now (docs/loop.md)")
    rr.add_argument("--kind", choices=["camera", "lidar"], required=True)
    rr.add_argument("--reason", default="on demand", help="recorded as the job's trigger")
    rj = with_config("retrain-jobs", "print the latest retrain jobs, newest first (JSON lines)")
    rj.add_argument("--kind", choices=["camera", "lidar"], default=None)
    rj.add_argument("--limit", type=int, default=20)
    rm = with_config("registry-models", "print the registered model versions (JSON lines)")
    rm.add_argument("--kind", choices=["camera", "lidar"], required=True)
    rp = with_config("registry-promote", "make a registered version production (by the margin)")
    rp.add_argument("--kind", choices=["camera", "lidar"], required=True)
    rp.add_argument("--version", type=int, required=True)
    rp.add_argument("--margin", type=float, default=None, help="default: registry.margin")
    rb = with_config("registry-rollback", "point production back at the previous version")
    rb.add_argument("--kind", choices=["camera", "lidar"], required=True)
    pm = with_config("publish-model", "send a registered model, signed, to the fleet")
    pm.add_argument("--kind", choices=["camera", "lidar"], required=True)
    pm.add_argument("--version", type=int, default=None, help="default: production")
    pm.add_argument(
        "--whole-fleet",
        action="store_true",
        help="skip the canary stage of a staged rollout ([rollout] canary_*)",
    )
    rs = with_config("rollout-status", "print the stage of each kind's production model (JSON)")
    rs.add_argument("--kind", choices=["camera", "lidar"], default=None)
    kg = sub.add_parser("rollout-keygen", help="write a new Ed25519 key pair for signed rollouts")
    kg.add_argument("--private", type=Path, required=True, help="the centre's key (mode 0600)")
    kg.add_argument("--public", type=Path, required=True, help="the key every vehicle gets")
    sub.add_parser("config-help", help="list every configuration key and its variable")
    return p


def _load(path: Path) -> IngestConfig:
    env = {k: v for k, v in os.environ.items() if k.startswith("FLEETAL_")}
    cfg = load_ingest_config(path, env=env)
    if cfg.blobs.backend == "s3":
        cfg = apply_aws_environment(cfg, os.environ)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.log_level != "DEBUG":
        # kafka-python logs every failed connection attempt at ERROR; the service reports
        # what matters itself. A probe stays quiet unless asked.
        quiet = logging.CRITICAL if args.command != "run" else logging.WARNING
        logging.getLogger("kafka").setLevel(quiet)
    if args.command == "config-help":
        print(config_help(IngestConfig))
        return 0
    if args.command == "rollout-keygen":
        from schemas.signing import generate_keypair

        try:
            generate_keypair(args.private, args.public)
        except OSError as exc:
            print(f"ingest-service rollout-keygen: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.private} (keep it at the centre) and {args.public} (for the fleet)")
        return 0
    try:
        cfg = _load(args.config)
        tokens = (
            load_tokens(cfg.api.tokens_file)
            if cfg.api.enabled and cfg.api.tokens_file is not None
            else {}
        )
        if cfg.api.enabled and not tokens and args.command == "run":
            raise ConfigError("api.tokens_file: required when api.enabled is true")
    except ConfigError as exc:
        print(f"ingest-service: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "run":
            return _run(cfg, tokens)
        if args.command == "check":
            return _check(cfg)
        if args.command == "queue-stats":
            return _queue_stats(cfg)
        if args.command == "requeue-expired":
            return _requeue_expired(cfg)
        if args.command == "retrain-request":
            return _retrain_request(cfg, args.kind, args.reason)
        if args.command == "retrain-jobs":
            return _retrain_jobs(cfg, args.kind, args.limit)
        if args.command.startswith("registry-"):
            return _registry(cfg, args)
        if args.command == "publish-model":
            return _publish(cfg, args.kind, args.version, whole_fleet=args.whole_fleet)
        if args.command == "rollout-status":
            return _rollout_status(cfg, args.kind)
        return _export(cfg, args.format, args.out, args.after_task_id, args.camera)
    except (IngestError, SchemaError, ValueError, OSError) as exc:
        print(f"ingest-service {args.command}: {exc}", file=sys.stderr)
        return 1


def _run(cfg: IngestConfig, tokens: dict[str, str]) -> int:
    from ingest_service.service import IngestService

    service = IngestService(cfg, tokens=tokens)

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        service.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    from schemas.sdnotify import Watchdog, notify

    watchdog = Watchdog(service.liveness)
    try:
        service.start()
        watchdog.start()
        notify(f"READY=1\nSTATUS=consuming {cfg.kafka.topic}")
        while not service.stop_event.wait(1.0):
            pass
        notify("STOPPING=1")
        code = service.wait(cfg.consumer.drain_timeout_s + 30.0)
    finally:
        watchdog.stop()
        service.close()
    log.info("ingest-service stopped (exit %d)", code)
    return code


def _check(cfg: IngestConfig) -> int:
    """Config valid (already), DB reachable and migrated, blob store writable, brokers reachable.

    Exit 0 when every dependency answers, 1 when any does not (each named on stderr).
    """
    from ingest_service.queue import LabelQueue, QueueConfig

    problems: list[str] = []
    q = cfg.queue
    try:
        queue = LabelQueue.open(
            q.database,
            config=QueueConfig(ageing_per_hour=q.ageing_per_hour, max_attempts=q.max_attempts),
            run_migrations=False,
            busy_timeout_s=min(q.busy_timeout_s, 5.0),
        )
        queue.stats()
        queue.close()
        print(f"ingest-service check: label queue ok ({_redacted(q.database)})")
    except (IngestError, ValueError) as exc:
        problems.append(f"label queue: {exc}")
    if cfg.blobs.backend == "s3":
        from ingest_service.blobstore import S3BlobStore

        try:
            store = S3BlobStore(cfg.blobs.s3)
            try:
                print(f"ingest-service check: blob store: {store.check()}")
            finally:
                store.close()
        except IngestError as exc:
            problems.append(f"blob store: {exc}")
    else:
        try:
            cfg.blobs.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=cfg.blobs.root, prefix=".check-") as fh:
                fh.write(b"ok")
                fh.flush()
                os.fsync(fh.fileno())
            print(f"ingest-service check: blob root {cfg.blobs.root} writable")
        except OSError as exc:
            problems.append(f"blob root {cfg.blobs.root} is not writable: {exc}")
    if cfg.api.enabled:
        if cfg.api.tokens_file is None:
            problems.append("api.tokens_file: required when api.enabled is true")
        else:
            try:
                n = len(load_tokens(cfg.api.tokens_file))
                print(f"ingest-service check: {n} API tokens in {cfg.api.tokens_file}")
            except ConfigError as exc:
                problems.append(str(exc))
    reachable, report = _broker_report(cfg)
    if reachable:
        print(f"ingest-service check: broker: {report}")
    else:
        problems.append(f"broker: {report}")
    for problem in problems:
        print(f"ingest-service check: {problem}", file=sys.stderr)
    if not problems:
        print("ingest-service check: ok")
    return 1 if problems else 0


def _redacted(database: str) -> str:
    from ingest_service.queue import redact_dsn
    from ingest_service.queue.db import is_postgres_dsn

    return redact_dsn(database) if is_postgres_dsn(database) else database


def _broker_report(cfg: IngestConfig) -> tuple[bool, str]:
    """Whether the brokers answer (a failure of the probe when not) and know the topic (only
    reported: the topic may be created by the first producer)."""
    k = cfg.kafka
    reachable, why = first_reachable(k.bootstrap_servers)
    if reachable is None:  # no client built: kafka-python leaks one that fails to bootstrap
        where = ", ".join(k.bootstrap_servers)
        return False, f"unreachable at {where}: {why}; is Kafka up? check kafka.bootstrap_servers"
    try:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(
            bootstrap_servers=list(k.bootstrap_servers),
            client_id=f"{k.client_id}-check",
            request_timeout_ms=k.request_timeout_ms,
            bootstrap_timeout_ms=5000,
            **k.security.kafka_kwargs(),
        )
    except Exception as exc:
        where = ", ".join(k.bootstrap_servers)
        return False, f"unreachable at {where}: {exc}; is Kafka up? check kafka.bootstrap_servers"
    try:
        parts = consumer.partitions_for_topic(k.topic)
        if not parts:
            return True, f"reachable, but topic {k.topic!r} does not exist (yet)"
        return True, f"reachable; topic {k.topic!r} has {len(parts)} partitions"
    except Exception as exc:
        return False, f"reachable, but metadata failed: {exc}"
    finally:
        consumer.close()


def _queue_stats(cfg: IngestConfig) -> int:
    from ingest_service.consumer import queue_opener

    with queue_opener(cfg)() as queue:
        stats = {str(k): v for k, v in queue.stats().items()}
    print(json.dumps(stats, sort_keys=True))
    return 0


def _requeue_expired(cfg: IngestConfig) -> int:
    from ingest_service.consumer import queue_opener

    with queue_opener(cfg)() as queue:
        n = queue.requeue_expired()
    print(f"requeued {n} expired tasks")
    return 0


def _retrain_request(cfg: IngestConfig, kind: str, reason: str) -> int:
    from ingest_service.consumer import queue_opener
    from ingest_service.retrain import JobStore, RetrainScheduler

    with queue_opener(cfg)() as queue:
        sched = RetrainScheduler(JobStore(queue.db), cfg.retrain.policies())
        job, created = sched.request(kind, reason=reason)
    if created:
        print(f"queued retrain job {job.id} for {kind} ({job.labels_at} labels in the queue)")
    else:
        print(f"{kind} already has retrain job {job.id} ({job.state.value}): not queued again")
    return 0


def _retrain_jobs(cfg: IngestConfig, kind: str | None, limit: int) -> int:
    from ingest_service.consumer import queue_opener
    from ingest_service.retrain import JobStore

    with queue_opener(cfg)() as queue:
        jobs = JobStore(queue.db).jobs(kind, limit=limit)
    for job in jobs:
        print(json.dumps(job.to_json(), sort_keys=True))
    return 0


def _registry(cfg: IngestConfig, args: argparse.Namespace) -> int:
    registry = cfg.registry.open()
    if args.command == "registry-models":
        for model in registry.versions(args.kind):
            row = {
                "version": model.version,
                "aliases": list(model.aliases),
                "metric": model.metric,
                "sha256": model.sha256,
                "tags": dict(model.tags),
            }
            print(json.dumps(row, sort_keys=True))
        return 0
    if args.command == "registry-promote":
        margin = cfg.registry.margin if args.margin is None else args.margin
        decision = registry.promote(args.kind, args.version, margin=margin)
        print(decision.reason)
        return 0 if decision.promoted else 1
    model = registry.rollback(args.kind)
    print(f"{model.name} {model.version} is production again")
    return 0


def _publish(cfg: IngestConfig, kind: str, version: int | None, *, whole_fleet: bool) -> int:
    from ingest_service.registry import RegistryError
    from ingest_service.rollout import build_update, publish
    from ingest_service.staging import PrometheusFleet, StagedRollout
    from schemas.messages import ModelUpdate

    registry = cfg.registry.open()
    sent: list[int] = []

    def send(update: ModelUpdate) -> None:
        sent.append(publish(cfg, update))

    if cfg.rollout.staged and not whole_fleet:
        if version is None:
            production = registry.alias(kind, "production")
            if production is None:
                raise RegistryError(f"{registry.model_name(kind)} has no production version")
            version = production.version
        fleet = PrometheusFleet(cfg.rollout.prometheus_url, vehicle_label=cfg.rollout.vehicle_label)
        update = StagedRollout(cfg, registry, fleet, send).start(kind, version)
        stage = "to the canaries (`ingest-service rollout-status` follows it)"
    else:
        update = build_update(cfg, registry, kind, version)
        send(update)
        stage = "to the whole fleet"
    signed = "signed" if update.signature is not None else "UNSIGNED (no rollout.signing_key)"
    carried = "inline" if update.url is None else f"by reference: {update.url}"
    print(
        f"published {update.name} {update.version} ({update.size_bytes} bytes, sha256 "
        f"{update.sha256[:12]}, {signed}, {carried}) {stage} on {cfg.rollout.topic} in "
        f"{sent[0]} records"
    )
    return 0


def _rollout_status(cfg: IngestConfig, kind: str | None) -> int:
    from ingest_service.staging import DETAIL, STAGE

    registry = cfg.registry.open()
    for k in [kind] if kind else ["camera", "lidar"]:
        production = registry.alias(k, "production")
        row: dict[str, object] = {"kind": k, "production": None}
        if production is not None:
            row = {
                "kind": k,
                "production": production.version,
                "stage": production.tags.get(STAGE, "fleet (not staged)"),
                "detail": production.tags.get(DETAIL, ""),
            }
        print(json.dumps(row))
    return 0


def _export(cfg: IngestConfig, fmt: str, out: Path, after_task_id: int, camera: str) -> int:
    """Every labeled task after ``after_task_id``, through the API's exporters, in process.

    No page limit: the whole queue is exported (KITTI streamed to the file frame by frame).
    Written to a temporary file beside ``out`` and renamed, so ``out`` is never half written.
    """
    from ingest_service.api.backend import Backend
    from ingest_service.api.exporting import FORMATS, write_export
    from ingest_service.blobstore import open_blob_store
    from ingest_service.consumer import queue_opener

    out.parent.mkdir(parents=True, exist_ok=True)
    # data URLs in the export point at the service's API
    base = f"http://{cfg.api.host}:{cfg.api.port}"
    with queue_opener(cfg)() as queue:
        backend = Backend(queue, open_blob_store(cfg), cfg.queue.lease_s)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                ids = write_export(
                    backend,
                    FORMATS[FORMATS.index(fmt)],  # argparse's choices, as the Literal type
                    f,
                    base=base,
                    after_task_id=after_task_id,
                    camera=camera,
                )
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    span = f"task ids {ids[0]}..{ids[-1]}" if ids else "none found"
    print(
        f"wrote {fmt} export of all {len(ids)} labeled tasks after task {after_task_id} "
        f"({span}) to {out} ({out.stat().st_size} bytes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
