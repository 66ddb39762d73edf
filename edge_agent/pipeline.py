"""The per-frame pipeline: gate -> inference -> selector -> encoder -> spool.

``Pipeline.process(item)`` takes one ``Frame | SourceError`` from a source and returns the
:class:`~edge_agent.report.FrameRow` that says what happened to it. It never raises on bad
input: source errors, quality rejections, model errors and a full or broken spool are counted
by reason (``fleetal_edge_frames_dropped_total``), logged at most once per reason per minute
(the rest at DEBUG; ``flush_logs()`` says how many were held back), and the loop carries on.
Every bad file and every frame dropped on an error is also on its row as a
:class:`~edge_agent.report.Problem` naming the file, for the replay report. The selector's
decision is committed (``update``) only after the frame is durably in the spool, so a crash
between the two can only under-count a selection, never lose a committed one.

The spool decouples scoring from the uplink: the Kafka sink drains it from its own thread, so a
slow or absent broker never blocks this loop (back-pressure ends at the spool's byte bound,
where the lowest-scored unsent frames are evicted first).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_agent.encoder import StrategyInfo, encode_frame, estimate_nbytes
from edge_agent.frame import Frame, SourceError, content_digest
from edge_agent.metrics import AgentMetrics
from edge_agent.models.errors import ModelError
from edge_agent.quality import QualityGate, QualityIssue, QualityRejection, RateLimitedLogger
from edge_agent.report import FrameRow, Problem
from edge_agent.scoring import FrameModelScores, FrameScorer
from edge_agent.spool import Spool, SpoolError
from schemas.errors import SchemaError
from schemas.messages import ModelInfo, frame_key
from selector.decision import Decision
from selector.errors import SelectorError
from selector.stream import FrameScores, Selector

log = logging.getLogger(__name__)

_ORIGIN = (0.0, 0.0, 0.0)


class Pipeline:
    """One frame at a time; every collaborator is passed in (tests build their own)."""

    def __init__(
        self,
        *,
        gate: QualityGate,
        scorer: FrameScorer,
        selector: Selector,
        strategy: StrategyInfo,
        metrics: AgentMetrics,
        spool: Spool | None,
        clock: Callable[[], float] = time.perf_counter,
        log_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gate = gate
        self.scorer = scorer
        self.selector = selector
        self.strategy = strategy
        self.metrics = metrics
        self.spool = spool
        self._clock = clock
        self._limited = RateLimitedLogger(log, interval_s=60.0, clock=log_clock)
        self._last_position: tuple[float, float, float] = _ORIGIN
        self._model_infos: dict[str, ModelInfo] = {}
        self.frames_scored = 0
        self.frames_selected = 0
        self.refresh_models()

    # -- models ------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        """Record the running model versions (also after a hot swap) in metrics and envelopes."""
        for kind, slot in (("camera", self.scorer.camera), ("lidar", self.scorer.lidar)):
            if slot is None:
                continue
            runner = slot.current.runner
            meta = runner.metadata
            info = ModelInfo(meta.name, meta.version, runner.sha256)
            previous = self._model_infos.get(kind)
            if previous != info:
                self._model_infos[kind] = info
                if previous is not None:  # a swap: the scores now come from another model
                    self.selector.model_changed()
                self.metrics.set_model(
                    kind, meta.name, meta.version, runner.sha256, runner.provider
                )
                log.info("%s model %s %s on %s", kind, meta.name, meta.version, runner.provider)

    @property
    def model_versions(self) -> dict[str, str]:
        return {k: f"{m.name} {m.version}" for k, m in self._model_infos.items()}

    # -- the loop body -----------------------------------------------------------------------
    def flush_logs(self) -> dict[str, int]:
        """Log the counts held back by the rate limits (gate and pipeline); return them."""
        held = self.gate.flush_log()
        for key, n in self._limited.flush().items():
            held[key] = held.get(key, 0) + n
        return held

    def _drop(self, reason: str, row: FrameRow, message: str, *args: Any) -> FrameRow:
        self.metrics.frames_dropped.labels(reason).inc()
        self._limited.log(reason, logging.WARNING, message, *args)
        return row

    def process(self, item: Frame | SourceError) -> FrameRow:
        self.metrics.frames_in.inc()
        if isinstance(item, SourceError):
            seq = -1 if item.seq is None else item.seq
            ts = item.timestamp_ns or 0
            problem = _source_problem(item, seq, ts, "frame_dropped")
            row = FrameRow(
                seq=seq,
                timestamp_ns=ts,
                x_m=None,
                y_m=None,
                score=None,
                threshold=None,
                selected=False,
                reason=problem.reason,
                files=(item.path,),
                problems=(problem,),
            )
            return self._drop(row.reason, row, "bad input dropped: %s", item.message)
        files = _files(item)
        problems: list[Problem] = []
        if item.problems:
            if not item.cameras and item.lidar is None:  # nothing of it could be read
                dropped = tuple(
                    _source_problem(e, item.seq, item.timestamp_ns, "frame_dropped")
                    for e in item.problems
                )
                row = self._row(item, None, None, dropped[0].reason, files, dropped)
                detail = "; ".join(e.message for e in item.problems)
                return self._drop(row.reason, row, "frame %s dropped: %s", item.seq, detail)
            for e in item.problems:
                self.metrics.sensor_files_dropped.labels(str(e.reason)).inc()
                self._limited.log(
                    f"source_{e.reason}",
                    logging.WARNING,
                    "frame %s goes on without %s: %s",
                    item.seq,
                    e.sensor,
                    e.message,
                )
                problems.append(_source_problem(e, item.seq, item.timestamp_ns, "sensor_dropped"))
        checked, issues = self.gate.assess(item)
        if isinstance(checked, QualityRejection):
            problems += [_quality_problem(item, i, "frame_dropped") for i in issues]
            reason = f"quality_{checked.reason}"
            row = self._row(item, None, None, reason, files, tuple(problems))
            detail = "; ".join(f"{i.sensor}: {i.detail}" for i in checked.issues)
            return self._drop(row.reason, row, "frame %s dropped by the gate: %s", item.seq, detail)
        problems += [_quality_problem(item, i, "sensor_dropped") for i in issues]
        frame = checked
        if not frame.cameras and frame.lidar is None:  # a pose-only record: nothing to label
            row = self._row(frame, None, None, "no_sensor_data", files, tuple(problems))
            return self._drop("no_sensor_data", row, "frame %s has no sensor data", frame.seq)
        try:
            model_scores = self.scorer.score(frame)
        except ModelError as exc:
            problems.append(_frame_problem(frame, "model_error", files, str(exc)))
            row = self._row(frame, None, None, "model_error", files, tuple(problems))
            return self._drop("model_error", row, "frame %s not scored: %s", frame.seq, exc)
        for sensor in (model_scores.camera, model_scores.lidar):
            if sensor is not None:
                self.metrics.inference_seconds.labels(sensor.model, sensor.provider).observe(
                    sensor.seconds
                )
        self.frames_scored += 1
        self.metrics.frames_scored.inc()
        scores = self._frame_scores(frame, model_scores)
        start = self._clock()
        try:
            decision = self.selector.decide(scores)
        except SelectorError as exc:
            problems.append(_frame_problem(frame, "score_invalid", files, str(exc)))
            row = self._row(frame, None, None, "score_invalid", files, tuple(problems))
            return self._drop("score_invalid", row, "frame %s not decided: %s", frame.seq, exc)
        self.metrics.decision_seconds.observe(self._clock() - start)
        self.metrics.score.observe(decision.score)
        row_reason = str(decision.reason)
        if decision.selected:
            stored, why = self._spool(frame, decision)
            if not stored:
                decision = dataclasses.replace(decision, selected=False)
                row_reason = why
                problems.append(_frame_problem(frame, why, files, "selected but not spooled"))
        self.selector.update(decision, scores)
        self.metrics.threshold.set(decision.threshold)
        if decision.selected:
            self.frames_selected += 1
            self.metrics.frames_selected.inc()
        else:
            self.metrics.frames_dropped.labels(row_reason).inc()
        self.metrics.selection_rate.set(self.frames_selected / self.frames_scored)
        return self._row(frame, decision, model_scores, row_reason, files, tuple(problems))

    def _frame_scores(self, frame: Frame, ms: FrameModelScores) -> FrameScores:
        if frame.pose is not None:
            self._last_position = frame.pose.position_m
        embedding = ms.embedding
        if embedding is None:  # no model: diversity in time and space only
            embedding = np.ones(1, dtype=np.float32)
        no_score = ms.camera is None and ms.lidar is None
        return FrameScores(
            timestamp_s=frame.timestamp_ns / 1e9,
            nbytes=estimate_nbytes(frame),
            camera_uncertainty=None if ms.camera is None else ms.camera.uncertainty,
            # a frame no model could score (no models, or none of its sensors) is neutral
            lidar_uncertainty=0.0
            if no_score
            else (None if ms.lidar is None else ms.lidar.uncertainty),
            position=self._last_position,
            embedding=embedding,
        )

    def _spool(self, frame: Frame, decision: Decision) -> tuple[bool, str]:
        """Encode and store a selected frame; (stored, reason if not)."""
        try:
            payload = encode_frame(
                frame,
                decision,
                strategy=self.strategy,
                models=tuple(self._model_infos.values()),
            )
        except (SchemaError, ValueError) as exc:
            self._limited.log(
                "encode_error", logging.ERROR, "frame %s not encodable: %s", frame.seq, exc
            )
            return False, "encode_error"
        if self.spool is None:  # replay without an uplink: encoded (and timed), not kept
            return True, ""
        key = frame_key(frame.vehicle_id, frame.drive_id, frame.seq)
        try:
            result = self.spool.put(
                key, payload, decision.score, content_digest=content_digest(frame)
            )
        except SpoolError as exc:
            self._limited.log("spool_error", logging.ERROR, "frame %s not spooled: %s", key, exc)
            return False, "spool_error"
        if result.evicted:
            self._limited.log(
                "spool_evicted",
                logging.WARNING,
                "spool full: evicted %d lower-scored unsent frame(s) for %s",
                result.evicted,
                key,
            )
        if result.stored or result.status == "duplicate":
            return True, ""
        if result.status == "conflict":  # the spool logged it; counted by the caller
            return False, "spool_key_conflict"
        self._limited.log(
            "spool_rejected", logging.WARNING, "frame %s not spooled: %s", key, result.reason
        )
        return False, "spool_rejected"

    @staticmethod
    def _row(
        frame: Frame,
        decision: Decision | None,
        ms: FrameModelScores | None,
        reason: str,
        files: tuple[str, ...] = (),
        problems: tuple[Problem, ...] = (),
    ) -> FrameRow:
        pos = frame.pose.position_m if frame.pose is not None else None
        components: dict[str, float] = {}
        if decision is not None:
            components = dict(decision.components)
        return FrameRow(
            seq=frame.seq,
            timestamp_ns=frame.timestamp_ns,
            x_m=None if pos is None else pos[0],
            y_m=None if pos is None else pos[1],
            score=None if decision is None else decision.score,
            threshold=None if decision is None else decision.threshold,
            selected=decision is not None and decision.selected,
            reason=reason,
            components=components,
            files=files,
            problems=problems,
        )


def _files(frame: Frame) -> tuple[str, ...]:
    """The files a frame was read from (sensors that had one, and those that failed)."""
    paths = [c.path for c in frame.cameras if c.path]
    if frame.lidar is not None and frame.lidar.path:
        paths.append(frame.lidar.path)
    paths += [e.path for e in frame.problems if e.path]
    return tuple(paths)


def _source_problem(error: SourceError, seq: int, ts: int, outcome: str) -> Problem:
    return Problem(
        seq, ts, outcome, f"source_{error.reason}", error.sensor, error.path, error.message
    )


def _quality_problem(frame: Frame, issue: QualityIssue, outcome: str) -> Problem:
    return Problem(
        frame.seq,
        frame.timestamp_ns,
        outcome,
        f"quality_{issue.reason}",
        issue.sensor,
        issue.path,
        issue.detail,
    )


def _frame_problem(frame: Frame, reason: str, files: tuple[str, ...], detail: str) -> Problem:
    return Problem(
        frame.seq, frame.timestamp_ns, "frame_dropped", reason, "", ";".join(files), detail
    )
