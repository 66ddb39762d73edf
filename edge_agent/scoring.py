"""Model outputs to what the selector needs: one uncertainty per sensor and one embedding.

A model's probabilities are per item (one item for a frame classifier, one per patch or point
for a dense model), optionally with a committee axis (``(T, n, K)``: ensemble members or
stochastic passes). Per item, the configured measure is computed: committee measures (BALD,
vote entropy, mean KL) need the committee axis; per-sample measures (entropy, margin, ...) use
the committee mean when there is one. The items are then aggregated to one frame score
(``max``, ``mean`` or the mean of the most uncertain ``topk_fraction``).

The frame embedding for the diversity memory is the concatenation of the camera and LiDAR
embeddings, each L2-normalised, so both sensors weigh the same in the cosine distance.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_agent.frame import Frame
from edge_agent.models.errors import ModelConfigError, ModelOutputError
from edge_agent.models.hotswap import ModelSlot
from edge_agent.models.runner import ModelOutput
from selector.aggregate import aggregate
from selector.errors import SelectorError
from selector.uncertainty import COMMITTEE_METHODS, uncertainty_scores

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, eq=False)
class SensorScore:
    uncertainty: float
    embedding: NDArray[np.float32]
    seconds: float
    model: str
    version: str
    provider: str


@dataclass(frozen=True, slots=True, eq=False)
class FrameModelScores:
    camera: SensorScore | None
    lidar: SensorScore | None
    embedding: NDArray[np.float32] | None


def output_uncertainty(
    probs: NDArray[np.float32], method: str, rule: str, topk_fraction: float
) -> float:
    """One frame score in [0, 1] from a model's ``(n, K)`` or ``(T, n, K)`` probabilities."""
    p = np.asarray(probs, dtype=np.float64)
    if method in COMMITTEE_METHODS:
        if p.ndim != 3:
            raise ModelConfigError(
                f"uncertainty method {method!r} needs a model with a committee axis "
                f"((T, n, K) outputs); this model gives {p.shape}. Choose a per-sample method "
                "(entropy, least_confidence, margin, ratio) or a committee model"
            )
        per_item = uncertainty_scores(p, method)
    else:
        per_item = uncertainty_scores(p.mean(axis=0) if p.ndim == 3 else p, method)
    k: float = topk_fraction if rule == "topk_mean" else 1
    return aggregate(per_item, rule, k=k)


class FrameScorer:
    """Runs the configured models on a frame; ``score(frame)`` raises ``ModelError``."""

    def __init__(
        self,
        *,
        camera: ModelSlot | None,
        lidar: ModelSlot | None,
        method: str,
        rule: str,
        topk_fraction: float,
        score_cameras: tuple[str, ...] = (),
    ) -> None:
        self.camera = camera
        self.lidar = lidar
        self.method = method
        self.rule = rule
        self.topk_fraction = topk_fraction
        self.score_cameras = score_cameras
        self._methods = {
            name: self._method_for(name, slot, method)
            for name, slot in (("camera", camera), ("lidar", lidar))
            if slot is not None
        }
        # embedding sizes from the slots' own smoke inference (the metadata does not carry them)
        self._dims = {
            name: int(np.prod(slot.output_shapes[1]))
            for name, slot in (("camera", camera), ("lidar", lidar))
            if slot is not None
        }

    @staticmethod
    def _method_for(name: str, slot: ModelSlot, method: str) -> str:
        """A committee method on a model without a committee axis falls back to entropy."""
        meta = slot.current.metadata
        if method in COMMITTEE_METHODS and not meta.committee_axis:
            log.warning(
                "%s model %s has no committee axis: scored with entropy instead of %s",
                name,
                meta.name,
                method,
            )
            return "entropy"
        return method

    def embedding_dim(self) -> int:
        """Length of the frame embedding (0 without models); checked against the selector."""
        return sum(self._dims.values())

    def _sensor(self, name: str, out: ModelOutput, provider: str) -> SensorScore:
        try:
            u = output_uncertainty(out.probs, self._methods[name], self.rule, self.topk_fraction)
        except SelectorError as exc:
            raise ModelOutputError(f"{out.model_name} {out.model_version}: {exc}") from exc
        emb = np.asarray(out.embedding, dtype=np.float32).ravel()
        norm = float(np.linalg.norm(emb))
        if not np.isfinite(norm):
            raise ModelOutputError(f"{out.model_name} {out.model_version}: non-finite embedding")
        unit = emb / norm if norm > 0 else emb
        return SensorScore(u, unit, out.seconds, out.model_name, out.model_version, provider)

    def _cameras_to_score(self, frame: Frame) -> list[int]:
        if not frame.cameras:
            return []
        if not self.score_cameras:
            return [0]
        return [i for i, cam in enumerate(frame.cameras) if cam.name in self.score_cameras]

    def score(self, frame: Frame) -> FrameModelScores:
        camera: SensorScore | None = None
        if self.camera is not None:
            provider = self.camera.current.runner.provider
            scored = [
                self._sensor("camera", self.camera.score(frame.cameras[i].image), provider)
                for i in self._cameras_to_score(frame)
            ]
            if scored:  # the most uncertain camera speaks for the frame
                best = max(scored, key=lambda s: s.uncertainty)
                camera = dataclasses.replace(best, seconds=sum(s.seconds for s in scored))
        lidar: SensorScore | None = None
        if self.lidar is not None and frame.lidar is not None:
            out = self.lidar.score(frame.lidar.points)
            lidar = self._sensor("lidar", out, self.lidar.current.runner.provider)
        return FrameModelScores(camera, lidar, self._embedding(camera, lidar))

    def _embedding(
        self, camera: SensorScore | None, lidar: SensorScore | None
    ) -> NDArray[np.float32] | None:
        parts: list[NDArray[np.float32]] = []
        for name, sensor in (("camera", camera), ("lidar", lidar)):
            if name not in self._dims:
                continue
            if sensor is not None:
                parts.append(sensor.embedding)
            else:  # a sensor missing from this frame: zeros keep the layout fixed
                parts.append(np.zeros(self._dims[name], dtype=np.float32))
        if not parts:
            return None
        return np.concatenate(parts).astype(np.float32, copy=False)
