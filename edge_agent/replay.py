"""``edge-agent replay``: a recorded drive through the very pipeline a vehicle runs.

Frames are read from the drive (any layout :func:`edge_agent.sources.open_source` knows),
scored, decided and encoded exactly as on the vehicle; with ``kafka`` set, the selected frames
go through a spool and the Kafka sink to the broker, and the replay waits until every one is
acknowledged. That wait is bounded: once the broker has acknowledged nothing for
``kafka.stall_timeout_s`` (``--kafka-timeout``), the replay raises
:class:`~edge_agent.uplink.UplinkTimeoutError` naming the address, and keeps the spool file with
the unsent frames under ``<agent.data_dir>/replay-spools/`` for ``edge-agent send``. A spool
whose frames were all acknowledged is deleted. The report (``summary.json``, ``frames.csv``,
plots) lets data engineers compare strategies and budgets. The same drive, configuration,
models and seed give the identical selection.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from edge_agent.agent import MetricsObserver, Parts, build_pipeline
from edge_agent.config import AgentConfig
from edge_agent.frame import Frame, SourceError
from edge_agent.models.hotswap import ModelSlot
from edge_agent.report import FrameRow, Summary, check_report_dir, summarise, write_report
from edge_agent.sink import KafkaSink
from edge_agent.sources import open_source
from edge_agent.spool import Spool
from edge_agent.uplink import UplinkError, remove_spool_file, wait_delivered

log = logging.getLogger(__name__)


def parse_speed(value: str) -> float | None:
    """``max`` -> None (as fast as possible), ``realtime`` -> 1.0, ``X`` -> X times real time."""
    if value == "max":
        return None
    if value == "realtime":
        return 1.0
    try:
        factor = float(value)
    except ValueError:
        raise ValueError(f"--speed must be max, realtime or a number > 0, got {value!r}") from None
    if not factor > 0:
        raise ValueError(f"--speed must be max, realtime or a number > 0, got {value!r}")
    return factor


def paced(
    items: Iterator[Frame | SourceError],
    speed: float | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Frame | SourceError]:
    """Yield ``items`` at ``speed`` times the recording's pace (None: as fast as possible)."""
    start_wall: float | None = None
    start_ts: int | None = None
    for item in items:
        ts = item.timestamp_ns
        if speed is not None and ts is not None:
            if start_wall is None or start_ts is None:
                start_wall, start_ts = clock(), ts
            else:
                due = start_wall + (ts - start_ts) / 1e9 / speed
                delay = due - clock()
                if delay > 0:
                    sleep(delay)
        yield item


@dataclass
class ReplayResult:
    summary: Summary
    rows: list[FrameRow]
    report_files: list[Path]


def replay_spool_path(cfg: AgentConfig, drive: Path) -> Path:
    """Where a replay's spool lives: kept there when its frames could not all be sent."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"{drive.name or 'drive'}-{stamp}-{os.getpid()}.sqlite"
    return cfg.agent.data_dir / "replay-spools" / name


def replay(
    drive: Path,
    cfg: AgentConfig,
    *,
    speed: float | None = None,
    report_dir: Path | None = None,
    kafka: str | None = None,
    topic: str | None = None,
    strategy: str = "stream",
    progress: bool = False,
    kafka_timeout_s: float | None = None,
    manifest_path: Path | None = None,
) -> ReplayResult:
    """Replay ``drive``; returns the summary and per-frame rows, writes the report if asked.

    With ``kafka``: raises :class:`~edge_agent.uplink.UplinkTimeoutError` (after writing the
    report) when the broker acknowledged nothing for ``kafka_timeout_s`` (default
    ``kafka.stall_timeout_s``); the unsent frames stay in the spool file the error names.
    With ``manifest_path``, the models a rollout left in that active-model manifest run
    instead of the configured ones (as in the daemon; see :func:`~edge_agent.agent.load_slots`).
    ``ReportDirError`` before anything is read if ``report_dir`` cannot be written.
    """
    if report_dir is not None:
        check_report_dir(report_dir)
    start = time.perf_counter()
    spool = None
    sink = None
    spool_path: Path | None = None
    uplink_error: Exception | None = None
    if kafka is not None:
        spool_path = replay_spool_path(cfg, drive)
        spool = Spool(spool_path, max_bytes=cfg.spool.max_bytes)
        sink_cfg = dataclasses.replace(
            cfg.kafka,
            bootstrap_servers=(kafka,),
            topic=topic or cfg.kafka.topic,
        )
    timeout_s = cfg.kafka.stall_timeout_s if kafka_timeout_s is None else kafka_timeout_s
    parts = build_pipeline(
        cfg,
        registry=CollectorRegistry(),
        spool=spool,
        strategy=strategy,
        manifest_path=manifest_path,
    )
    if spool is not None:
        sink = KafkaSink(sink_cfg, spool, observer=MetricsObserver(parts.metrics))
        sink.start()
    source = open_source(
        drive,
        vehicle_id=cfg.agent.vehicle_id,
        drive_id=cfg.source.drive_id or None,
        cameras=cfg.source.cameras or None,
        sync_tolerance_ns=int(cfg.source.sync_tolerance_ms * 1e6),
    )
    rows: list[FrameRow] = []
    drive_name = drive.name
    try:
        items: Iterator[Frame | SourceError] = paced(iter(source.frames()), speed)
        if progress:
            from tqdm import tqdm

            items = iter(tqdm(items, desc=f"replay {drive_name}", unit="frame"))
        for item in items:
            if isinstance(item, Frame):
                drive_name = item.drive_id
            rows.append(parts.pipeline.process(item))
        parts.pipeline.flush_logs()
        if sink is not None and spool is not None:
            try:
                wait_delivered(sink, spool, timeout_s=timeout_s, topic=sink.config.topic)
            except UplinkError as exc:
                uplink_error = exc
    finally:
        source.close()
        if sink is not None:
            # After a stall there is nothing left to drain for: stop at once.
            sink.stop(drain_timeout_s=0.0 if uplink_error is not None else 10.0)
        if spool is not None and spool_path is not None:
            left = spool.stats().frames
            spool.close()
            if left == 0:
                remove_spool_file(spool_path)
            else:
                log.warning("%d unsent frame(s) kept in the spool %s", left, spool_path)
    wall = time.perf_counter() - start
    provider = ", ".join(
        sorted({slot.current.runner.provider for slot in _slots(parts)}) or ["none"]
    )
    summary = summarise(
        rows,
        drive=drive_name,
        budget=cfg.selector.budget.target_rate,
        provider=provider,
        model_versions=parts.pipeline.model_versions,
        wall_seconds=wall,
        strategy=parts.pipeline.strategy.name,
        seed=cfg.agent.seed,
        notes=explain(rows, cfg, has_models=bool(_slots(parts)), strategy=strategy),
    )
    files = write_report(report_dir, rows, summary) if report_dir is not None else []
    if uplink_error is not None:
        raise uplink_error
    return ReplayResult(summary, rows, files)


def explain(
    rows: list[FrameRow], cfg: AgentConfig, *, has_models: bool, strategy: str
) -> list[str]:
    """Plain-language notes for results that would otherwise puzzle: a replay inside the
    cold start, a replay without models."""
    notes: list[str] = []
    budget = cfg.selector.budget
    scored = sum(1 for r in rows if r.score is not None)
    selected = sum(1 for r in rows if r.selected)
    cold = sum(1 for r in rows if r.reason.startswith("cold_start"))
    if strategy == "stream" and scored and cold == scored:
        what = (
            "so nothing was selected"
            if selected == 0
            else f"so the {selected} selection(s) are cold-start exploration, not model scores"
        )
        notes.append(
            f"the replay is shorter than the cold start: all {scored} scored frame(s) fell "
            f"inside selector.budget.cold_start_frames = {budget.cold_start_frames}, {what}; "
            f"replay a drive of more than {budget.cold_start_frames} frames, or lower "
            "cold_start_frames (FLEETAL_SELECTOR__BUDGET__COLD_START_FRAMES) for a short test"
        )
    if not has_models:
        notes.append(
            "no models: every frame's uncertainty is 0, the selection follows time and space "
            "diversity and the budget only"
        )
    return notes


def _slots(parts: Parts) -> list[ModelSlot]:
    scorer = parts.pipeline.scorer
    return [s for s in (scorer.camera, scorer.lidar) if s is not None]
