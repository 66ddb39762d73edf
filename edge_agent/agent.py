"""Assembly: one :class:`AgentConfig` into the working parts of an agent.

``build_pipeline`` loads the models (provider chosen and reported), sizes the diversity memory
to the models' embeddings, restores the selector's saved state when there is one for the same
configuration, and wires gate, scorer, selector, spool and metrics into a :class:`Pipeline`.
``replay`` and ``run`` (the daemon) both start here, so a replay exercises the very code a
vehicle runs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from edge_agent.config import AgentConfig
from edge_agent.encoder import StrategyInfo, params_sha256
from edge_agent.metrics import AgentMetrics, SpoolStats
from edge_agent.models import manifest
from edge_agent.models.errors import ModelError
from edge_agent.models.hotswap import ModelSlot
from edge_agent.models.runner import ScoringModel, load_model
from edge_agent.pipeline import Pipeline
from edge_agent.quality import QualityGate
from edge_agent.scoring import FrameScorer
from edge_agent.sink import SinkObserver
from edge_agent.spool import Spool
from selector.baseline import RandomSelector
from selector.errors import StateError
from selector.stream import Selector, SelectorConfig, StreamSelector

log = logging.getLogger(__name__)

STRATEGIES = ("stream", "random")


@dataclass
class Parts:
    pipeline: Pipeline
    selector: Selector
    metrics: AgentMetrics
    spool: Spool | None


def load_slots(
    cfg: AgentConfig,
    *,
    manifest_path: Path | None = None,
    metrics: AgentMetrics | None = None,
) -> tuple[ModelSlot | None, ModelSlot | None]:
    """The camera and LiDAR models, each smoke-tested; None where not configured.

    With ``manifest_path`` (the daemon with rollout enabled), a kind the active-model manifest
    names runs that file (checksum verified, smoke-tested): the model a rollout left running.
    A manifest that is corrupt or names a missing or broken file falls back to the configured
    model, with the reason logged and counted in ``fleetal_edge_model_manifest_problems_total``.
    """
    active: dict[str, manifest.ManifestEntry] = {}
    if manifest_path is not None:
        try:
            active = manifest.read(manifest_path)
        except manifest.ManifestError as exc:
            _manifest_problem(metrics, "corrupt", str(exc))
    slots: list[ModelSlot | None] = []
    for kind, path, sha in (
        ("camera", cfg.models.camera, cfg.models.camera_sha256),
        ("lidar", cfg.models.lidar, cfg.models.lidar_sha256),
    ):
        if path is None:
            if kind in active:
                log.info(
                    "%s model in the manifest ignored: the config runs no %s model", kind, kind
                )
            slots.append(None)
            continue
        slot = _manifest_slot(cfg, kind, active.get(kind), metrics)
        if slot is None:
            model = load_model(path, sha256=sha or None, config=cfg.models.runner)
            slot = ModelSlot(model, config=cfg.models.runner)
        slots.append(slot)
    return slots[0], slots[1]


def _manifest_problem(metrics: AgentMetrics | None, problem: str, detail: str) -> None:
    if metrics is not None:
        metrics.model_manifest_problems.labels(problem).inc()
    log.warning("%s; starting with the configured model instead", detail)


def _manifest_slot(
    cfg: AgentConfig, kind: str, entry: manifest.ManifestEntry | None, metrics: AgentMetrics | None
) -> ModelSlot | None:
    if entry is None:
        return None
    ref = entry.current
    if not ref.path.is_file():
        _manifest_problem(
            metrics,
            "missing",
            f"{kind} model {ref.name} {ref.version} of the manifest: {ref.path} is gone",
        )
        return None
    try:
        model: ScoringModel = load_model(ref.path, sha256=ref.sha256, config=cfg.models.runner)
        if model.metadata.kind != kind:
            raise ModelError(f"{ref.path} is a {model.metadata.kind} model, not a {kind} model")
        slot = ModelSlot(model, config=cfg.models.runner)
    except ModelError as exc:
        _manifest_problem(
            metrics, "load_failed", f"{kind} model {ref.name} {ref.version} of the manifest: {exc}"
        )
        return None
    log.info("%s model %s %s from the rollout manifest", kind, ref.name, ref.version)
    return slot


def sized_selector_config(cfg: SelectorConfig, embedding_dim: int) -> SelectorConfig:
    """``cfg`` with the diversity memory sized to the models' frame embedding."""
    if cfg.diversity is None:
        return cfg
    dim = max(embedding_dim, 1)
    if cfg.diversity.dim != dim:
        log.info("diversity memory sized to the models' %d-d frame embedding", dim)
    return dataclasses.replace(cfg, diversity=dataclasses.replace(cfg.diversity, dim=dim))


def make_selector(
    cfg: SelectorConfig, *, strategy: str, seed: int, state_path: Path | None
) -> Selector:
    if strategy == "random":
        return RandomSelector(cfg.budget, seed=seed)
    if strategy != "stream":
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if state_path is not None and state_path.exists():
        try:
            restored = StreamSelector.from_state(cfg, state_path.read_bytes())
        except StateError as exc:
            log.warning(
                "selector state %s not restored (%s): starting fresh, with a cold start",
                state_path,
                exc,
            )
        else:
            log.info(
                "selector state restored from %s after %d frames",
                state_path,
                restored.budget.frames_seen,
            )
            return restored
    return StreamSelector(cfg, seed=seed)


def save_state(selector: Selector, path: Path) -> None:
    """Write the selector's state atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        fh.write(selector.state_bytes())
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def strategy_info(cfg: AgentConfig, strategy: str) -> StrategyInfo:
    sel = cfg.selector
    name = "random" if strategy == "random" else f"{sel.uncertainty_method}+{sel.combine_rule}"
    params = {
        "strategy": strategy,
        "selector": sel.to_json(),
        "aggregate": cfg.models.aggregate,
        "topk_fraction": cfg.models.topk_fraction,
    }
    return StrategyInfo(name, params_sha256(params))


class MetricsObserver(SinkObserver):
    """Feeds the sink's deliveries and failures into the agent's Prometheus metrics."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics

    def delivered(self, frame_key: str, nbytes: int, seconds: float) -> None:
        self.metrics.kafka_sent_frames.inc()
        self.metrics.kafka_sent_bytes.inc(nbytes)
        self.metrics.kafka_send_seconds.observe(seconds)

    def send_failed(self, error: str) -> None:
        self.metrics.kafka_send_errors.labels(error).inc()

    def held(self, frame_key: str, error: str) -> None:
        self.metrics.kafka_held_frames.labels(error).inc()


def build_pipeline(
    cfg: AgentConfig,
    *,
    registry: CollectorRegistry,
    spool: Spool | None,
    strategy: str = "stream",
    state_path: Path | None = None,
    manifest_path: Path | None = None,
) -> Parts:
    metrics = AgentMetrics(registry, vehicle_id=cfg.agent.vehicle_id)
    camera, lidar = load_slots(cfg, manifest_path=manifest_path, metrics=metrics)
    scorer = FrameScorer(
        camera=camera,
        lidar=lidar,
        method=cfg.selector.uncertainty_method,
        rule=cfg.models.aggregate,
        topk_fraction=cfg.models.topk_fraction,
        score_cameras=cfg.models.score_cameras,
    )
    sel_cfg = sized_selector_config(cfg.selector, scorer.embedding_dim())
    selector = make_selector(sel_cfg, strategy=strategy, seed=cfg.agent.seed, state_path=state_path)
    metrics.target_rate.set(cfg.selector.budget.target_rate)
    if spool is not None:
        metrics.watch_spool(lambda: _spool_stats(spool))
    gate = QualityGate(cfg.quality)
    metrics.watch_quality(lambda: {str(k): v for k, v in gate.counts.items()})
    pipeline = Pipeline(
        gate=gate,
        scorer=scorer,
        selector=selector,
        strategy=strategy_info(cfg, strategy),
        metrics=metrics,
        spool=spool,
    )
    return Parts(pipeline, selector, metrics, spool)


def _spool_stats(spool: Spool) -> SpoolStats:
    s = spool.stats()
    return SpoolStats(
        frames=s.frames,
        bytes=s.bytes,
        oldest_age_s=s.oldest_age_s,
        evicted_total=s.evicted_total,
        held=s.held,
        max_bytes=s.max_bytes,
    )
