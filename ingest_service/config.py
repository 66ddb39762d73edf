"""The ingest service's one configuration file: TOML tables into frozen dataclasses.

Every table is optional and has working defaults for a single machine. Environment variables
``FLEETAL_<TABLE>__<KEY>`` override any key (``ingest-service config-help`` lists them); only
the CLI reads the environment. The file is validated once at start: an unknown key or a bad
value stops the program with a message that names it (:mod:`schemas.config`). Every key is
documented in ``deploy/ingest-service.example.toml``.

Tables: ``[kafka]`` (with ``[kafka.security]``), ``[consumer]``, ``[queue]``, ``[blobs]``
(with ``[blobs.s3]``),
``[reassembly]``, ``[api]``, ``[metrics]``.

>>> cfg = load_ingest_config(data={"kafka": {"topic": "frames"}})
>>> cfg.kafka.dlq, cfg.kafka.group_id, cfg.metrics.port
('frames.dlq', 'fleet-ingest', 9465)
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from schemas.config import ConfigError, load_config
from schemas.kafka_config import KafkaSecurity

if TYPE_CHECKING:
    from ingest_service.registry import ModelRegistry
    from ingest_service.retrain.policy import RetrainPolicy
    from ingest_service.retrain.ray_runner import RayTarget

__all__ = [
    "ApiSection",
    "BlobsSection",
    "ConsumerSection",
    "IngestConfig",
    "KafkaSection",
    "MetricsSection",
    "QueueSection",
    "ReassemblySection",
    "S3Section",
    "apply_aws_environment",
    "load_ingest_config",
    "load_tokens",
]

_MB = 1024 * 1024


@dataclass(frozen=True)
class KafkaSection:
    bootstrap_servers: tuple[str, ...] = ("localhost:9092",)
    """Kafka brokers, host:port."""
    topic: str = "fleet.frames"
    """The topic the vehicles send selected frames to (chunks keyed by frame key)."""
    group_id: str = "fleet-ingest"
    """Consumer group: every ingest instance with this id shares the topic's partitions."""
    dlq_topic: str = ""
    """Dead-letter topic; empty means ``<topic>.dlq``."""
    client_id: str = "ingest-service"
    """Client id reported to the brokers (with the host name in their logs)."""
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    """TLS and SASL settings (``[kafka.security]``), the same keys as edge-agent's."""
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a new group starts: ``earliest`` ingests what is retained on the topic."""
    session_timeout_ms: int = 10_000
    """How long the group waits for a silent (crashed) member before reassigning its partitions."""
    heartbeat_interval_ms: int = 3_000
    """Heartbeat period; at most a third of session_timeout_ms."""
    max_poll_interval_ms: int = 300_000
    """Longest pause between polls before the member is considered stuck (a long DB outage)."""
    max_poll_records: int = 64
    """Records per poll; the frames completed by one poll are stored in one transaction."""
    max_partition_fetch_bytes: int = 8 * _MB
    """Bytes fetched per partition per request (several ~1 MB chunks)."""
    request_timeout_ms: int = 40_000
    """Timeout of one request to a broker."""

    def __post_init__(self) -> None:
        if not self.bootstrap_servers or not all(self.bootstrap_servers):
            raise ValueError("bootstrap_servers: at least one host:port is needed")
        if not self.topic:
            raise ValueError("topic: must not be empty")
        if not self.group_id:
            raise ValueError("group_id: must not be empty")
        if self.dlq == self.topic:
            raise ValueError("dlq_topic: must differ from topic")
        if not 3 * self.heartbeat_interval_ms <= self.session_timeout_ms:
            raise ValueError(
                f"heartbeat_interval_ms: {self.heartbeat_interval_ms} must be at most a third "
                f"of session_timeout_ms ({self.session_timeout_ms})"
            )
        for name in ("max_poll_interval_ms", "max_poll_records", "max_partition_fetch_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.request_timeout_ms <= self.session_timeout_ms:
            raise ValueError(
                f"request_timeout_ms: {self.request_timeout_ms} must exceed session_timeout_ms "
                f"({self.session_timeout_ms})"
            )

    @property
    def dlq(self) -> str:
        """The dead-letter topic actually used."""
        return self.dlq_topic or f"{self.topic}.dlq"


@dataclass(frozen=True)
class ConsumerSection:
    poll_timeout_ms: int = 500
    """How long one poll waits for records (also how often timeouts are checked)."""
    retry_initial_s: float = 0.5
    """First wait after a failed database or blob-store write; doubles up to retry_max_s."""
    retry_max_s: float = 30.0
    """Longest wait between retries of a failed write (the frame is retried, never skipped)."""
    lag_interval_s: float = 5.0
    """How often the consumer loop refreshes the per-partition lag it reports."""
    known_keys: int = 100_000
    """Frame keys remembered as stored, to skip re-sent duplicates before reassembling them."""
    blob_workers: int = 4
    """Threads writing (and fsyncing) the blobs of one poll's frames in parallel; 1: none."""
    drain_timeout_s: float = 20.0
    """On SIGTERM: how long to keep retrying the current write before giving up (Kafka
    redelivers what was not committed)."""

    def __post_init__(self) -> None:
        if self.poll_timeout_ms <= 0:
            raise ValueError(f"poll_timeout_ms: must be positive, got {self.poll_timeout_ms}")
        if not 0 < self.retry_initial_s <= self.retry_max_s:
            raise ValueError(
                f"retry_initial_s: need 0 < retry_initial_s ({self.retry_initial_s}) <= "
                f"retry_max_s ({self.retry_max_s})"
            )
        if self.lag_interval_s <= 0:
            raise ValueError(f"lag_interval_s: must be positive, got {self.lag_interval_s}")
        if self.known_keys < 0:
            raise ValueError(f"known_keys: must be >= 0, got {self.known_keys}")
        if not 1 <= self.blob_workers <= 64:
            raise ValueError(f"blob_workers: must be in 1..64, got {self.blob_workers}")
        if self.drain_timeout_s < 0:
            raise ValueError(f"drain_timeout_s: must be >= 0, got {self.drain_timeout_s}")


@dataclass(frozen=True)
class QueueSection:
    database: str = "var/ingest/queue.db"
    """The label queue: a SQLite file path, or a PostgreSQL DSN (postgresql://...)."""
    ageing_per_hour: float = 0.05
    """Priority a waiting task gains per hour (score units; see docs/label-queue.md)."""
    max_attempts: int = 3
    """Leases a task may be granted before it goes to ``expired``."""
    lease_s: float = 900.0
    """How long an annotator's claim on a task lasts."""
    busy_timeout_s: float = 30.0
    """How long a statement waits for a lock before failing."""

    def __post_init__(self) -> None:
        if not self.database:
            raise ValueError("database: must not be empty")
        if not (math.isfinite(self.ageing_per_hour) and self.ageing_per_hour >= 0):
            raise ValueError(
                f"ageing_per_hour: must be finite and >= 0, got {self.ageing_per_hour}"
            )
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts: must be >= 1, got {self.max_attempts}")
        if not self.lease_s > 0:
            raise ValueError(f"lease_s: must be positive, got {self.lease_s}")
        if not self.busy_timeout_s > 0:
            raise ValueError(f"busy_timeout_s: must be positive, got {self.busy_timeout_s}")


_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class S3Section:
    endpoint_url: str = ""
    """S3 endpoint, http(s)://host[:port] (MinIO, Ceph RGW); empty: AWS S3 (or
    AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL from the environment of the CLI)."""
    bucket: str = ""
    """Bucket of the blobs; required when backend = "s3". It must exist (nothing creates it)."""
    prefix: str = ""
    """Key prefix inside the bucket: blobs are <prefix>/ab/cd/<sha256>; no leading or trailing /."""
    region: str = ""
    """Signing region; empty: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1."""
    addressing_style: Literal["path", "virtual"] = "path"
    """``path`` (endpoint/bucket/key: MinIO, Ceph, AWS) or ``virtual`` (bucket.endpoint/key)."""
    access_key_id: str = field(default="", repr=False)
    """Access key id; empty: AWS_ACCESS_KEY_ID, else botocore's chain (profile, instance role)."""
    secret_access_key: str = field(default="", repr=False)
    """Secret key; best from FLEETAL_BLOBS__S3__SECRET_ACCESS_KEY or AWS_SECRET_ACCESS_KEY."""
    session_token: str = field(default="", repr=False)
    """Session token of temporary credentials (AWS_SESSION_TOKEN); usually empty."""
    ca_bundle: Path | None = None
    """CA bundle to verify an https endpoint (unset: the system trust store)."""
    connect_timeout_s: float = 5.0
    """Timeout of one connection attempt to the endpoint."""
    read_timeout_s: float = 30.0
    """Timeout waiting for the endpoint's answer to one request."""
    max_attempts: int = 3
    """Attempts per request (with backoff) before the error reaches the consumer, which then
    retries the whole write (consumer.retry_*)."""

    def __post_init__(self) -> None:
        if self.endpoint_url:
            url = urllib.parse.urlsplit(self.endpoint_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(
                    f"endpoint_url: {self.endpoint_url!r} is not an http(s)://host[:port] URL"
                )
        if self.bucket and not _BUCKET_RE.fullmatch(self.bucket):
            raise ValueError(
                f"bucket: {self.bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, "
                "digits, dots and hyphens)"
            )
        if self.prefix.startswith("/") or self.prefix.endswith("/") or "//" in self.prefix:
            raise ValueError(
                f"prefix: {self.prefix!r} must not start or end with '/' nor contain '//'"
            )
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError(
                "access_key_id and secret_access_key: set both or neither (neither: the "
                "environment or botocore's credential chain)"
            )
        if self.session_token and not self.access_key_id:
            raise ValueError("session_token: set, but there is no access_key_id")
        if not self.connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s: must be positive, got {self.connect_timeout_s}")
        if not self.read_timeout_s > 0:
            raise ValueError(f"read_timeout_s: must be positive, got {self.read_timeout_s}")
        if not 1 <= self.max_attempts <= 10:
            raise ValueError(f"max_attempts: must be in 1..10, got {self.max_attempts}")


@dataclass(frozen=True)
class BlobsSection:
    backend: Literal["local", "s3"] = "local"
    """Where blobs live: ``local`` (a directory, root) or ``s3`` (a bucket, [blobs.s3])."""
    root: Path = Path("var/ingest/blobs")
    """Directory of the content-addressed blob store (backend = "local")."""
    fsync: bool = True
    """fsync every blob before its frame is committed; off only for tests and benchmarks
    (backend = "local"; an S3 PUT is durable when it returns)."""
    s3: S3Section = field(default_factory=S3Section)
    """The S3-compatible store (``[blobs.s3]``), used when backend = "s3"."""

    def __post_init__(self) -> None:
        if self.backend == "s3" and not self.s3.bucket:
            raise ValueError('s3.bucket: required when backend = "s3"')


@dataclass(frozen=True)
class ReassemblySection:
    max_frame_bytes: int = 64 * _MB
    """Largest frame accepted; a bigger manifest is dead-lettered (frame_too_large)."""
    max_inflight_bytes: int = 512 * _MB
    """Bytes of incomplete frames held at once; above it the oldest is dead-lettered."""
    timeout_s: float = 120.0
    """A frame still incomplete this long after its first chunk is dead-lettered."""

    def __post_init__(self) -> None:
        if self.max_frame_bytes <= 0:
            raise ValueError(f"max_frame_bytes: must be positive, got {self.max_frame_bytes}")
        if self.max_inflight_bytes < self.max_frame_bytes:
            raise ValueError(
                f"max_inflight_bytes: {self.max_inflight_bytes} must be >= max_frame_bytes "
                f"({self.max_frame_bytes})"
            )
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s: must be positive, got {self.timeout_s}")


@dataclass(frozen=True)
class ApiSection:
    enabled: bool = True
    """Serve the labeling HTTP API in this process."""
    host: str = "127.0.0.1"
    """Address the API listens on."""
    port: int = 8080
    """Port of the API (0: any free port)."""
    tokens_file: Path | None = None
    """TOML or JSON file mapping bearer token -> labeler name; required when enabled."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} is not a TCP port")


@dataclass(frozen=True)
class MetricsSection:
    host: str = "127.0.0.1"
    """Address of /metrics and /healthz (0.0.0.0 for a remote Prometheus)."""
    port: int = 9465
    """Port of /metrics and /healthz (0: any free port)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} is not a TCP port")


@dataclass(frozen=True)
class RetrainPolicySection:
    every_labels: int = 500
    """Retrain when this many labels were added since the last run that trained."""
    min_interval_s: float = 6 * 3600.0
    """At most one run per this many seconds (from the last run's queueing)."""
    max_attempts: int = 3
    """Attempts of a run (a timed-out or interrupted attempt is retried) before it fails."""
    timeout_s: float = 3600.0
    """An attempt still running after this long is taken back (and retried)."""

    def __post_init__(self) -> None:
        if self.every_labels < 1:
            raise ValueError(f"every_labels: must be >= 1, got {self.every_labels}")
        if self.min_interval_s < 0:
            raise ValueError(f"min_interval_s: must be >= 0, got {self.min_interval_s}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts: must be >= 1, got {self.max_attempts}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s: must be positive, got {self.timeout_s}")


@dataclass(frozen=True)
class RetrainSection:
    enabled: bool = False
    """Queue retrain jobs by the per-kind policies below (docs/loop.md)."""
    tick_s: float = 60.0
    """How often the scheduler checks the policies and takes back timed-out jobs."""
    command: tuple[str, ...] = ()
    """The trainer: a program run as COMMAND... --job-dir DIR for each job (docs/loop.md);
    empty: jobs are queued but no worker runs them here."""
    work_dir: Path = Path("var/ingest/retrain")
    """Where each job gets its directory of inputs, log and result."""
    runner: str = "subprocess"
    """Where the trainer runs: subprocess (on this host) or ray (a task on a Ray cluster)."""
    ray_address: str = ""
    """runner = ray: ray://host:10001 (Ray Client, from a host outside the cluster), or the
    GCS address host:port when the ingest host is itself a node of the cluster."""
    ray_token_file: Path | None = None
    """runner = ray: a file holding the cluster's auth token (Ray's token authentication)."""
    ray_num_cpus: float = 1.0
    """runner = ray: CPUs a job asks the cluster for."""
    ray_num_gpus: float = 0.0
    """runner = ray: GPUs a job asks the cluster for."""
    camera: RetrainPolicySection = field(default_factory=RetrainPolicySection)
    lidar: RetrainPolicySection = field(default_factory=RetrainPolicySection)

    def __post_init__(self) -> None:
        if not self.tick_s > 0:
            raise ValueError(f"tick_s: must be positive, got {self.tick_s}")
        if self.runner not in ("subprocess", "ray"):
            raise ValueError(f"runner: subprocess or ray, got {self.runner!r}")
        if self.runner == "ray" and not self.ray_address:
            raise ValueError('ray_address: runner = "ray" needs the cluster\'s address')
        if not (self.ray_num_cpus >= 0 and self.ray_num_gpus >= 0):
            raise ValueError("ray_num_cpus and ray_num_gpus must be >= 0")

    def ray_target(self) -> RayTarget | None:
        """Where jobs run on Ray (runner = ray), else None."""
        if self.runner != "ray":
            return None
        from ingest_service.retrain.ray_runner import RayTarget

        return RayTarget(
            self.ray_address, self.ray_token_file, self.ray_num_cpus, self.ray_num_gpus
        )

    def policies(self) -> list[RetrainPolicy]:
        """The scheduler's policies, one per model kind."""
        from ingest_service.retrain.policy import RetrainPolicy  # the queue imports this module

        return [
            RetrainPolicy(
                kind,
                every_labels=p.every_labels,
                min_interval_s=p.min_interval_s,
                max_attempts=p.max_attempts,
                timeout_s=p.timeout_s,
            )
            for kind, p in (("camera", self.camera), ("lidar", self.lidar))
        ]


@dataclass(frozen=True)
class RegistrySection:
    tracking_uri: str = ""
    """MLflow tracking URI of the model registry (http(s)://... for a server); empty: the
    embedded registry under data_dir (a SQLite file and an artifact folder)."""
    data_dir: Path = Path("var/ingest/registry")
    """Where the embedded registry lives."""
    margin: float = 0.0
    """A retrained model becomes production unless its holdout metric is worse than
    production's by more than this."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin: must be >= 0, got {self.margin}")

    def open(self) -> ModelRegistry:
        """The registry this section configures."""
        from ingest_service.registry import ModelRegistry

        if self.tracking_uri:
            return ModelRegistry(self.tracking_uri)
        return ModelRegistry.embedded(self.data_dir)


@dataclass(frozen=True)
class PublishSection:
    topic: str = "fleet.models"
    """The models topic every agent reads (the agent's rollout.topic)."""
    signing_key: Path | None = None
    """The centre's Ed25519 private key (PEM, `ingest-service rollout-keygen`): updates are
    signed with it; agents with the public key refuse anything else."""
    min_agent_version: str = "0.1.0"
    """Agents older than this ignore the updates published."""
    max_message_bytes: int = 900_000
    """Chunk size on the topic (below the broker's message.max.bytes)."""
    inline_max_bytes: int = 64 * 1024 * 1024
    """Models up to this size travel inline on the topic (in chunks); larger ones go by
    reference: stored in the blob store and sent as model_base_url + the blob's key."""
    model_base_url: str = ""
    """Where vehicles fetch models sent by reference: an http(s) address serving the blob
    store's root (the S3 bucket, or a web server over [blobs] root), e.g.
    https://models.fleet.example/blobs; empty: models above inline_max_bytes are refused."""
    auto_publish: bool = False
    """Publish every model a retrain run makes production, as soon as it is promoted."""
    canary_vehicles: tuple[str, ...] = ()
    """Staged rollout: these vehicles get a new model first (with ``canary_fraction``, both)."""
    canary_fraction: float = 0.0
    """Staged rollout: this share of the fleet (chosen by a hash of vehicle and model
    version) gets a new model first; 0 and no canary_vehicles: no staging."""
    canary_observe_s: float = 3600.0
    """How long every canary must run the new model before the rollout widens to the fleet."""
    canary_min_frames: int = 500
    """Frames the canaries must score on the new model before it is judged."""
    canary_max_error_rise: float = 0.02
    """Roll back when the canaries' model error rate exceeds the rest of the fleet's by more."""
    canary_tick_s: float = 60.0
    """How often the centre checks a staged rollout."""
    prometheus_url: str = ""
    """The Prometheus that scrapes the fleet's agents (the canaries' versions and errors)."""
    vehicle_label: str = "vehicle"
    """The Prometheus label naming the vehicle of an agent's series (deploy/prometheus)."""

    def __post_init__(self) -> None:
        if not self.topic:
            raise ValueError("topic: must not be empty")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes: must be >= 1024, got {self.max_message_bytes}")
        if self.inline_max_bytes < 0:
            raise ValueError(f"inline_max_bytes: must be >= 0, got {self.inline_max_bytes}")
        if self.model_base_url and not self.model_base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"model_base_url: vehicles fetch models over http(s), got {self.model_base_url!r}"
            )
        if not (math.isfinite(self.canary_fraction) and 0.0 <= self.canary_fraction < 1.0):
            raise ValueError(f"canary_fraction: must be in [0, 1), got {self.canary_fraction}")
        if not (math.isfinite(self.canary_max_error_rise) and self.canary_max_error_rise >= 0):
            raise ValueError(
                f"canary_max_error_rise: must be >= 0, got {self.canary_max_error_rise}"
            )
        if not (self.canary_observe_s >= 0 and self.canary_tick_s > 0):
            raise ValueError("canary_observe_s must be >= 0 and canary_tick_s > 0")
        if self.canary_min_frames < 1:
            raise ValueError(f"canary_min_frames: must be >= 1, got {self.canary_min_frames}")
        if self.staged and not self.prometheus_url:
            raise ValueError(
                "prometheus_url: a staged rollout (canary_vehicles / canary_fraction) judges "
                "the canaries from the Prometheus that scrapes the fleet: give its URL"
            )

    @property
    def staged(self) -> bool:
        """Whether new models go to canaries first."""
        return bool(self.canary_vehicles) or self.canary_fraction > 0.0


@dataclass(frozen=True)
class IngestConfig:
    kafka: KafkaSection = field(default_factory=KafkaSection)
    consumer: ConsumerSection = field(default_factory=ConsumerSection)
    queue: QueueSection = field(default_factory=QueueSection)
    blobs: BlobsSection = field(default_factory=BlobsSection)
    reassembly: ReassemblySection = field(default_factory=ReassemblySection)
    api: ApiSection = field(default_factory=ApiSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    retrain: RetrainSection = field(default_factory=RetrainSection)
    registry: RegistrySection = field(default_factory=RegistrySection)
    rollout: PublishSection = field(default_factory=PublishSection)


def load_ingest_config(
    path: Path | None = None,
    *,
    data: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
) -> IngestConfig:
    """Build the configuration from a TOML file and/or a mapping, then ``FLEETAL_`` overrides."""
    return load_config(IngestConfig, data, path=path, env=env)


def apply_aws_environment(config: IngestConfig, env: Mapping[str, str]) -> IngestConfig:
    """Fill the ``[blobs.s3]`` keys left empty from the standard AWS environment variables.

    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` (only when the
    file sets no key id), ``AWS_REGION`` or ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL_S3`` or
    ``AWS_ENDPOINT_URL``. The configuration file and ``FLEETAL_`` variables win. The CLI calls
    this with ``os.environ``; nothing else reads the environment.
    """
    s3 = config.blobs.s3
    changes: dict[str, Any] = {}
    if not s3.access_key_id and env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        changes["access_key_id"] = env["AWS_ACCESS_KEY_ID"]
        changes["secret_access_key"] = env["AWS_SECRET_ACCESS_KEY"]
        changes["session_token"] = env.get("AWS_SESSION_TOKEN", "")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if not s3.region and region:
        changes["region"] = region
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if not s3.endpoint_url and endpoint:
        changes["endpoint_url"] = endpoint
    if not changes:
        return config
    try:
        new_s3 = dataclasses.replace(s3, **changes)
    except ValueError as exc:
        raise ConfigError(f"[blobs.s3] (from the AWS_* environment): {exc}") from exc
    return dataclasses.replace(config, blobs=dataclasses.replace(config.blobs, s3=new_s3))


def load_tokens(path: Path) -> dict[str, str]:
    """The API's bearer tokens: a TOML or JSON file mapping token -> labeler name."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"api.tokens_file: cannot read {path}: {exc}") from exc
    try:
        raw: object = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"api.tokens_file: {path} is not valid: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"api.tokens_file: {path} must map at least one token to a labeler")
    tokens: dict[str, str] = {}
    for token, labeler in raw.items():
        if not isinstance(labeler, str) or not labeler.strip() or len(str(token)) < 16:
            raise ConfigError(
                f"api.tokens_file: {path}: every token must be >= 16 characters and map to a "
                "labeler name"
            )
        tokens[str(token)] = labeler
    return tokens
