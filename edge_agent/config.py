"""The edge agent's one configuration file: TOML tables into frozen dataclasses.

Every table is optional and has working defaults, so ``edge-agent replay DRIVE`` needs no file.
Environment variables ``FLEETAL_<TABLE>__<KEY>`` override any key (``edge-agent config-help``
lists them all). The file is validated once at start: an unknown key or a bad value stops the
program with a message that names it (see :mod:`schemas.config`). An example with every table is
``deploy/edge-agent.example.toml``.

Tables: ``[agent]``, ``[source]``, ``[models]`` (with ``[models.runner]``), ``[quality]``,
``[selector]`` (with ``[selector.budget]`` and ``[selector.diversity]``), ``[spool]``,
``[kafka]`` (with ``[kafka.security]``), ``[metrics]``, ``[rollout]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edge_agent.models.download import DownloadSettings
from edge_agent.models.runner import RunnerConfig
from edge_agent.quality import QualityConfig
from edge_agent.sink import SinkConfig
from schemas.config import load_config
from selector.budget import BudgetConfig
from selector.stream import SelectorConfig

__all__ = [
    "AgentConfig",
    "AgentSection",
    "MetricsSection",
    "ModelsSection",
    "RolloutSection",
    "SourceSection",
    "SpoolSection",
    "default_selector",
    "load_agent_config",
]


def default_selector() -> SelectorConfig:
    """5 % of frames: the default selector (margin, refreshed at every model swap, a
    diversity veto), the configuration that won in the closed loop (docs/evaluation.md)."""
    return SelectorConfig(budget=BudgetConfig(target_rate=0.05))


@dataclass(frozen=True)
class AgentSection:
    vehicle_id: str = "veh-local"
    """Identity of this vehicle; part of every frame key (vehicle/drive/seq)."""
    data_dir: Path = Path("var/edge")
    """Where the spool and the saved selector state live (``/var/lib/fleetal`` on a vehicle)."""
    drain_timeout_s: float = 20.0
    """On SIGTERM: how long to keep sending spooled frames before exiting."""
    state_every_frames: int = 100
    """Save the selector state every N frames (and at exit), so a restart carries on."""
    seed: int = 0
    """Seed of every random choice: the same drive, config, models and seed select the same."""

    def __post_init__(self) -> None:
        if not self.vehicle_id or "/" in self.vehicle_id:
            raise ValueError(f"vehicle_id must be non-empty without '/', got {self.vehicle_id!r}")
        if self.drain_timeout_s < 0:
            raise ValueError(f"drain_timeout_s must be >= 0, got {self.drain_timeout_s}")
        if self.state_every_frames < 1:
            raise ValueError(f"state_every_frames must be >= 1, got {self.state_every_frames}")


@dataclass(frozen=True)
class SourceSection:
    kind: Literal["spool_dir", "recorded"] = "spool_dir"
    """``spool_dir``: the sensor bridge drops frames into ``path`` (see docs/sources.md);
    ``recorded``: ``path`` is a recorded drive, read once (a test rig)."""
    path: Path | None = None
    """The live spool directory (``run``) or a recorded drive (``replay`` takes it as argument)."""
    drive_id: str = ""
    """Drive identity; empty: the recording's folder name. For the live spool directory, the
    base of the per-drive ids the source makes when the bridge names none (docs/sources.md)."""
    cameras: tuple[str, ...] = ()
    """Camera names to read; empty: every camera of the layout."""
    sync_tolerance_ms: float = 50.0
    """Camera and LiDAR are paired by nearest timestamp within this tolerance."""

    def __post_init__(self) -> None:
        if self.sync_tolerance_ms <= 0:
            raise ValueError(f"sync_tolerance_ms must be > 0, got {self.sync_tolerance_ms}")


@dataclass(frozen=True)
class ModelsSection:
    camera: Path | None = None
    """ONNX camera model (metadata in its metadata_props or a sidecar JSON); none: not scored."""
    camera_sha256: str = ""
    """Expected sha256 of the camera model; empty: not checked."""
    lidar: Path | None = None
    """ONNX LiDAR model; none: LiDAR not scored."""
    lidar_sha256: str = ""
    """Expected sha256 of the LiDAR model; empty: not checked."""
    score_cameras: tuple[str, ...] = ()
    """Cameras the camera model scores (max over them); empty: the first camera of each frame."""
    aggregate: Literal["max", "mean", "topk_mean"] = "topk_mean"
    """How per-patch / per-point uncertainties become one frame score."""
    topk_fraction: float = 0.05
    """With ``topk_mean``: the fraction of the most uncertain patches / points averaged."""
    runner: RunnerConfig = field(default_factory=RunnerConfig)

    def __post_init__(self) -> None:
        if not 0.0 < self.topk_fraction <= 1.0:
            raise ValueError(f"topk_fraction must be in (0, 1], got {self.topk_fraction}")


@dataclass(frozen=True)
class SpoolSection:
    path: Path | None = None
    """SQLite file of the spool; none: ``<agent.data_dir>/spool.sqlite``."""
    max_bytes: int = 2 * 1024**3
    """Bound of the spool; when full, the lowest-scored unsent frames are evicted first."""

    def __post_init__(self) -> None:
        if self.max_bytes < 1024 * 1024:
            raise ValueError(f"max_bytes must be at least 1 MiB, got {self.max_bytes}")


@dataclass(frozen=True)
class MetricsSection:
    enabled: bool = True
    """Serve /metrics and /healthz (the ops port)."""
    host: str = "127.0.0.1"
    """Address of /metrics and /healthz (0.0.0.0 to let the fleet's Prometheus in)."""
    port: int = 9464
    """Port of /metrics and /healthz (0: any free port)."""
    health_max_send_age_s: float = 900.0
    """/healthz fails when frames wait and none was delivered for this long (0: off)."""
    health_max_spool_age_s: float = 3600.0
    """/healthz fails when the oldest frame waiting to be sent is older than this (0: off)."""
    health_max_model_error_rate: float = 0.5
    """/healthz fails when more than this share of recent frames failed in the models (1: off)."""
    health_model_error_window: int = 200
    """How many of the latest frames that reached the models the error rate is taken over."""
    health_model_min_frames: int = 20
    """The model error rate is judged once at least this many frames reached the models."""
    health_max_source_gap_s: float = 300.0
    """/healthz fails when the source delivered no frame for this long (0: off)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        for name in ("health_max_send_age_s", "health_max_spool_age_s", "health_max_source_gap_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 (0: off), got {getattr(self, name)}")
        if not 0.0 <= self.health_max_model_error_rate <= 1.0:
            raise ValueError(
                f"health_max_model_error_rate must be in [0, 1], got "
                f"{self.health_max_model_error_rate}"
            )
        if not 1 <= self.health_model_min_frames <= self.health_model_error_window:
            raise ValueError(
                "health_model_min_frames must be in 1..health_model_error_window, got "
                f"{self.health_model_min_frames} (window {self.health_model_error_window})"
            )


@dataclass(frozen=True)
class RolloutSection:
    enabled: bool = False
    """Take new model versions from the models topic and hot-swap them (docs/models.md)."""
    topic: str = "fleet.models"
    """The models topic the centre publishes on (the ingest service's rollout.topic)."""
    group_id: str = ""
    """Consumer group; empty: ``edge-<vehicle_id>``, so every vehicle sees every update."""
    models_dir: Path | None = None
    """Where received models are kept; none: ``<agent.data_dir>/models``."""
    rollback_window_frames: int = 100
    """After a swap, this many calls of the new model are watched for errors (one call per
    frame for LiDAR, one per scored camera)."""
    rollback_error_rate: float = 0.2
    """Roll back when the new model's error rate in its window exceeds the previous model's
    by more than this fraction."""
    public_key: Path | None = None
    """The fleet's Ed25519 public key (PEM): updates without a valid signature from the
    centre's key are refused (docs/loop.md); none: signatures are not checked."""
    max_download_bytes: int = 2 * 1024**3
    """Largest model this vehicle fetches when an update comes by url (models above the
    centre's rollout.inline_max_bytes do); larger ones are refused."""
    download_timeout_s: float = 600.0
    """A model download that takes longer is abandoned and tried again later."""
    model_url_prefix: str = ""
    """Models sent by url are fetched only from under this prefix (e.g.
    https://models.fleet.example/blobs/; the URL is not signed, the model's sha256 is): set it;
    empty: any http(s) URL."""
    download_token_file: Path | None = None
    """A file holding a bearer token sent with model downloads (for a model server that asks
    for one), only to model_url_prefix, which must then be https; none: no Authorization
    header (a presigned URL carries its own)."""

    def __post_init__(self) -> None:
        if self.max_download_bytes < 1:
            raise ValueError(f"max_download_bytes must be >= 1, got {self.max_download_bytes}")
        if not self.download_timeout_s > 0:
            raise ValueError(f"download_timeout_s must be > 0, got {self.download_timeout_s}")
        if self.model_url_prefix and not self.model_url_prefix.startswith(("http://", "https://")):
            raise ValueError(
                f"model_url_prefix must be an http(s) URL, got {self.model_url_prefix!r}"
            )
        if self.download_token_file is not None and not self.model_url_prefix.startswith(
            "https://"
        ):
            raise ValueError(
                "download_token_file: the token is sent only to model_url_prefix over https: "
                'set model_url_prefix = "https://..."'
            )
        if self.rollback_window_frames < 1:
            raise ValueError(
                f"rollback_window_frames must be >= 1, got {self.rollback_window_frames}"
            )
        if not 0.0 <= self.rollback_error_rate < 1.0:
            raise ValueError(
                f"rollback_error_rate must be in [0, 1), got {self.rollback_error_rate}"
            )

    def download_settings(self) -> DownloadSettings:
        """How models sent by url are fetched; ``ValueError`` if the token file is unreadable."""
        token = None
        if self.download_token_file is not None:
            try:
                token = self.download_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(
                    f"rollout.download_token_file {self.download_token_file}: cannot read it "
                    f"({exc}); fix the path or its permissions"
                ) from exc
        return DownloadSettings(
            self.max_download_bytes, self.download_timeout_s, token, self.model_url_prefix
        )


@dataclass(frozen=True)
class AgentConfig:
    agent: AgentSection = field(default_factory=AgentSection)
    source: SourceSection = field(default_factory=SourceSection)
    models: ModelsSection = field(default_factory=ModelsSection)
    quality: QualityConfig = field(default_factory=QualityConfig)
    selector: SelectorConfig = field(default_factory=default_selector)
    spool: SpoolSection = field(default_factory=SpoolSection)
    kafka: SinkConfig = field(default_factory=SinkConfig)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    rollout: RolloutSection = field(default_factory=RolloutSection)

    @property
    def spool_path(self) -> Path:
        return self.spool.path or self.agent.data_dir / "spool.sqlite"

    @property
    def state_path(self) -> Path:
        return self.agent.data_dir / "selector.state"

    @property
    def manifest_path(self) -> Path:
        """The active-model manifest the rollout keeps (docs/models.md)."""
        return self.agent.data_dir / "active_models.json"


def load_agent_config(
    path: Path | None = None,
    *,
    data: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
) -> AgentConfig:
    """Load and validate; raises :class:`schemas.config.ConfigError` naming the bad key."""
    return load_config(AgentConfig, data, path=path, env=env)
