"""The stream selector: one frame in, select or drop with the reason, state to bytes.

Pipeline of :meth:`StreamSelector.decide`, for one frame:

1. **uncertainty** per sensor, from class probabilities (``uncertainty_method``, default
   ``"margin"``, via :func:`selector.uncertainty.uncertainty_scores`) or a precomputed score
   in [0, 1]; margin won the closed-loop evaluation, entropy lost (docs/evaluation.md);
2. **sensor fusion** of camera and LiDAR (:func:`selector.fusion.fuse_sensors`);
3. **novelty** against the memory of selected frames (:class:`DiversityMemory`);
4. **budget** (:class:`BudgetController`): cold start, streaming-quantile threshold, caps.

When novelty is computed, and what it costs: a novelty query is the one step whose cost
grows with the memory (a few microseconds in the common case, up to a full pass over the
memory in the worst case, see :mod:`selector.diversity`). So it is computed

* for every frame when the combine rule uses it (``"novelty"``, ``"weighted"``,
  ``"product"``, ``"geometric"``) or during a ``"diversity"`` cold start, because the score
  that the budget thresholds depends on it;
* otherwise (rule ``"uncertainty"``) only for frames that the budget would select, as a
  veto: a frame whose novelty is below ``similar_threshold`` is dropped as ``too_similar``.
  At a 5 % rate that is one query per twenty frames, and a cheap one: the search is capped at
  ``similar_threshold`` (``DiversityMemory.novelty(..., cap=...)``), so only entries close in
  time and space are looked at. The ``novelty`` component of such a decision is then
  ``min(novelty, similar_threshold)``.

The veto applies to every would-be selection, cold start included. Vetoed frames count as not
selected, so the budget's integral correction makes up for them with other frames.

``decide`` is pure; ``update(decision, frame)`` commits (remembers a selected frame, advances
the budget). ``model_changed()`` is called when the scoring model changes (the agent's
rollout hook does it): it refreshes the budget's score window and, for a retrained model,
empties the memory (its embeddings lived in the old model's space). ``state_bytes`` /
``from_state`` save and restore everything, without pickle.

>>> cfg = SelectorConfig(budget=BudgetConfig(target_rate=0.5, cold_start_frames=0),
...                      diversity=DiversityConfig(dim=2, similar_threshold=0.05))
>>> sel = StreamSelector(cfg, seed=1)
>>> frame = FrameScores(timestamp_s=0.0, camera_probs=np.array([0.6, 0.4]),
...                     position=(0.0, 0.0), embedding=np.array([1.0, 0.0]))
>>> d = sel.decide(frame)
>>> d.selected, d.reason, round(d.component("uncertainty"), 3)  # margin: 1 - (0.6 - 0.4)
(True, <Reason.SELECTED: 'selected'>, 0.8)
>>> sel.update(d, frame)
>>> sel.decide(FrameScores(timestamp_s=0.1, camera_probs=np.array([0.5, 0.5]),
...     position=(0.0, 0.0), embedding=np.array([1.0, 0.0]))).reason  # the same scene again
<Reason.TOO_SIMILAR: 'too_similar'>
>>> StreamSelector.from_state(cfg, sel.state_bytes()).decide(frame) == sel.decide(frame)
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from selector.budget import BudgetConfig, BudgetController, check_frame
from selector.decision import Decision, Reason, make_decision
from selector.diversity import (
    EMPTY_NOVELTY,
    DiversityMemory,
    Eviction,
    Novelty,
    unit_embedding,
)
from selector.errors import InvalidConfigError, InvalidScoresError, StateError
from selector.fusion import (
    COMBINE_RULES,
    FUSION_RULES,
    combine_uncertainty_novelty,
    fuse_sensors,
)
from selector.state import pack, unpack
from selector.uncertainty import COMMITTEE_METHODS, check_method, score_one

__all__ = [
    "NOMINAL_FRAME_PERIOD_S",
    "DiversityConfig",
    "FrameScores",
    "MemoryLayout",
    "Selector",
    "SelectorConfig",
    "StreamSelector",
]


@dataclass(frozen=True, slots=True)
class FrameScores:
    """What the selector needs to know about one frame (model outputs, not sensor data).

    Per sensor, give either class probabilities (``(K,)``; ``(T, K)`` for the committee
    methods ``bald`` / ``vote_entropy`` / ``mean_kl``) or a precomputed uncertainty in
    [0, 1], not both; at least one sensor. ``timestamp_s`` may be ``None`` where there is no
    clock: the frame then gets the nominal time ``seq * NOMINAL_FRAME_PERIOD_S`` (10 Hz).
    ``position`` (ego, metres, xy or xyz) and ``embedding`` (any size) are optional: the
    diversity memory measures distance on what the first frame it sees carries (see
    :class:`DiversityConfig`), and later frames must carry the same.
    """

    timestamp_s: float | None = None
    nbytes: int = 0
    camera_probs: NDArray[np.floating[Any]] | None = None
    lidar_probs: NDArray[np.floating[Any]] | None = None
    camera_uncertainty: float | None = None
    lidar_uncertainty: float | None = None
    position: tuple[float, ...] | NDArray[np.floating[Any]] | None = None
    embedding: NDArray[np.floating[Any]] | None = None


NOMINAL_FRAME_PERIOD_S = 0.1
"""The time step given to frames without a timestamp (10 Hz, the camera rate of the fleet)."""


def frame_time(frame: FrameScores, seq: int) -> float:
    """``frame.timestamp_s``, or the nominal time of frame ``seq`` when it has none."""
    t = frame.timestamp_s
    return seq * NOMINAL_FRAME_PERIOD_S if t is None else t


@dataclass(frozen=True, slots=True)
class MemoryLayout:
    """What the diversity memory measures, fixed by the first frame it sees."""

    dim: int  # embedding size; 1 (a constant) when frames carry no embedding
    position: bool
    embedding: bool

    def to_json(self) -> dict[str, Any]:
        return {"dim": self.dim, "position": self.position, "embedding": self.embedding}


_ORIGIN = (0.0, 0.0)
_NO_EMBEDDING = np.ones(1, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class DiversityConfig:
    """Parameters of the diversity memory (see :class:`DiversityMemory`).

    ``dim`` of ``None`` (the default) sizes the memory to the first embedding. Frames without
    a position (no GNSS) or without an embedding (a model without one) are measured on what
    they have: the weights of the missing terms are dropped and the others rescaled to sum 1
    (time and features 1/3 and 2/3 without positions, with the default weights).
    """

    capacity: int = 10_000
    """Recent selections the memory keeps to compare new frames against."""
    dim: int | None = None
    time_scale_s: float = 60.0
    """Seconds over which two frames stop counting as the same moment (the time term)."""
    space_scale_m: float = 100.0
    """Metres over which two frames stop counting as the same place (the position term)."""
    weights: tuple[float, float, float] = (0.25, 0.25, 0.5)
    similar_threshold: float = 0.05
    """A frame whose distance to a kept selection is below this is too_similar: not selected."""
    eviction: Eviction = "fifo"

    def __post_init__(self) -> None:
        if self.dim is not None and not (isinstance(self.dim, int) and self.dim >= 1):
            raise InvalidConfigError(
                f"diversity dim: must be an int >= 1 or None, got {self.dim!r}"
            )
        DiversityMemory(  # validates the other parameters (a 1-d memory costs nothing)
            self.capacity,
            1,
            time_scale_s=self.time_scale_s,
            space_scale_m=self.space_scale_m,
            weights=self.weights,
            similar_threshold=self.similar_threshold,
            eviction=self.eviction,
        )

    def layout_for(self, frame: FrameScores) -> MemoryLayout:
        """The layout a memory gets from its first frame."""
        emb = frame.embedding
        dim = self.dim if self.dim is not None else (1 if emb is None else int(np.size(emb)))
        return MemoryLayout(dim, frame.position is not None, emb is not None)

    def weights_for(self, layout: MemoryLayout) -> tuple[float, float, float]:
        """The weights over (time, space, features), without the terms the layout lacks."""
        w_t, w_s, w_f = self.weights
        w_s = w_s if layout.position else 0.0
        w_f = w_f if layout.embedding else 0.0
        total = w_t + w_s + w_f
        if not total > 0.0:
            raise InvalidScoresError(
                f"the diversity weights {self.weights} leave nothing to measure for frames "
                f"with position={layout.position} and embedding={layout.embedding}: give the "
                "frames what the weights use, or set diversity = None"
            )
        return (w_t / total, w_s / total, w_f / total)

    def build(self, seed: int, layout: MemoryLayout) -> DiversityMemory:
        """A fresh, empty memory for frames of ``layout``."""
        return DiversityMemory(
            self.capacity,
            layout.dim,
            time_scale_s=self.time_scale_s,
            space_scale_m=self.space_scale_m,
            weights=self.weights_for(layout),
            similar_threshold=self.similar_threshold,
            eviction=self.eviction,
            seed=seed,
        )


@dataclass(frozen=True, slots=True)
class SelectorConfig:
    """Configuration of a :class:`StreamSelector`; validated on construction."""

    budget: BudgetConfig
    uncertainty_method: str = "margin"
    """How class probabilities become an uncertainty: margin, entropy, least_confidence,
    ratio; or, over a committee's outputs, bald, vote_entropy, mean_kl."""
    logits: bool = False
    """The model outputs logits rather than probabilities (a softmax is applied first)."""
    sensor_fusion: str = "max"
    """How camera and LiDAR uncertainties become one: max, weighted_mean (camera_weight),
    product."""
    camera_weight: float = 0.5
    """With sensor_fusion = weighted_mean: the camera's weight (LiDAR's is 1 - it)."""
    combine_rule: str = "uncertainty"
    """How uncertainty and novelty make the frame score: uncertainty (novelty only vetoes
    near-duplicates), novelty, weighted, product, geometric."""
    alpha: float = 0.5
    """With combine_rule weighted or geometric: the weight of uncertainty against novelty."""
    diversity: DiversityConfig | None = field(default_factory=DiversityConfig)

    def __post_init__(self) -> None:
        check_method(self.uncertainty_method)
        if self.sensor_fusion not in FUSION_RULES:
            raise InvalidConfigError(
                f"sensor_fusion must be one of {FUSION_RULES}; got {self.sensor_fusion!r}"
            )
        if self.combine_rule not in COMBINE_RULES:
            raise InvalidConfigError(
                f"combine_rule must be one of {COMBINE_RULES}; got {self.combine_rule!r}"
            )
        for name in ("camera_weight", "alpha"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise InvalidConfigError(f"{name} must be in [0, 1]; got {value!r}")
        if self.diversity is None:
            if self.combine_rule != "uncertainty":
                raise InvalidConfigError(
                    f"combine_rule {self.combine_rule!r} needs novelty: set diversity"
                )
            if self.budget.cold_start_mode == "diversity":
                raise InvalidConfigError("cold_start_mode 'diversity' needs diversity to be set")

    def to_json(self) -> dict[str, Any]:
        """The configuration as JSON-compatible data (tuples as lists)."""
        data: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        return data


class Selector(Protocol):
    """What every selection strategy offers (the conformance suite checks it)."""

    def decide(self, frame: FrameScores) -> Decision: ...

    def update(self, decision: Decision, frame: FrameScores) -> None: ...

    def state_bytes(self) -> bytes: ...

    def model_changed(self, *, embedding_changed: bool = True) -> None: ...


_KIND = "stream_selector"


def _seeds(seed: int) -> tuple[int, int]:
    a, b = np.random.SeedSequence(seed).generate_state(2)
    return int(a), int(b)


class StreamSelector:
    """Uncertainty + diversity + budget, frame by frame; see the module docstring."""

    def __init__(self, config: SelectorConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        budget_seed, self._memory_seed = _seeds(seed)
        self._budget = BudgetController(config.budget, seed=budget_seed)
        self._diversity = config.diversity
        # Built at the first frame, whose layout (embedding size, position or not) it takes.
        self._memory: DiversityMemory | None = None
        self._layout: MemoryLayout | None = None
        self._novelty_always = config.combine_rule != "uncertainty"
        self._committee = config.uncertainty_method in COMMITTEE_METHODS
        # Constants of the hot path, derived once from the (frozen, validated) config.
        self._method = config.uncertainty_method
        self._logits = config.logits
        self._dims = 2 if self._committee else 1
        self._fusion = config.sensor_fusion
        self._camera_weight = float(config.camera_weight)
        self._diversity_cold_start = config.budget.cold_start_mode == "diversity"
        self._similar = 0.0 if config.diversity is None else config.diversity.similar_threshold

    @property
    def budget(self) -> BudgetController:
        """The budget controller (read it; mutate it only through :meth:`update`)."""
        return self._budget

    @property
    def memory(self) -> DiversityMemory | None:
        """The diversity memory (read only): ``None`` without one, or before the first frame."""
        return self._memory

    @property
    def layout(self) -> MemoryLayout | None:
        """What the memory measures (``None`` until the first frame)."""
        return self._layout

    def ensure_memory(self, layout: MemoryLayout) -> DiversityMemory:
        """The diversity memory, built for ``layout`` if there is none yet (to pre-load it with
        frames selected elsewhere, e.g. earlier drives); :class:`StateError` if the selector
        has no diversity memory or already has one of another layout."""
        div = self._diversity
        if div is None:
            raise StateError("this selector has no diversity memory (diversity = None)")
        if self._memory is None or self._layout is None:
            self._memory, self._layout = div.build(self._memory_seed, layout), layout
        elif self._layout != layout:
            raise StateError(f"the memory's layout is {self._layout}, not {layout}")
        return self._memory

    # -- scoring -----------------------------------------------------------------------------
    def _sensor(self, probs: ArrayLike | None, score: float | None, name: str) -> float | None:
        if probs is None:
            if score is None:
                return None
            if type(score) is float and 0.0 <= score <= 1.0:  # the common case, NaN fails
                return score
            if not (isinstance(score, float | int) and 0 <= score <= 1):
                raise InvalidScoresError(f"{name}_uncertainty must be in [0, 1], got {score!r}")
            return float(score)
        if score is not None:
            raise InvalidScoresError(f"give {name}_probs or {name}_uncertainty, not both")
        p = probs if type(probs) is np.ndarray else np.asarray(probs, dtype=np.float64)
        if p.ndim != self._dims:
            raise InvalidScoresError(
                f"{name}_probs must have {self._dims} dimension(s) for method "
                f"{self._method!r}, got shape {p.shape}"
            )
        return score_one(p, self._method, logits=self._logits)

    def _fuse(self, cam: float | None, lid: float | None) -> float:
        """:func:`fuse_sensors` for scores that :meth:`_sensor` has checked."""
        if lid is None:
            if cam is not None:
                return cam
        elif cam is None:
            return lid
        return fuse_sensors(cam, lid, self._fusion, camera_weight=self._camera_weight)

    def _inputs(
        self, frame: FrameScores
    ) -> tuple[MemoryLayout, tuple[float, ...] | NDArray[np.floating[Any]], ArrayLike]:
        """The memory's layout (from this frame while the memory is empty) and the frame's
        position and embedding as the memory takes them."""
        layout = self._layout
        if layout is None:
            div = self._diversity
            if div is None:  # pragma: no cover - guarded by the callers
                raise StateError("no diversity memory configured")
            layout = div.layout_for(frame)
            div.weights_for(layout)  # raises if the weights leave nothing to measure
        position = frame.position
        if not layout.position:
            position = _ORIGIN
        elif position is None:
            raise InvalidScoresError(
                "frame.position is missing: this selector's diversity memory measures distance "
                "in space (its first frame had a position); give every frame one"
            )
        embedding: ArrayLike | None = frame.embedding
        if not layout.embedding:
            embedding = _NO_EMBEDDING
        elif embedding is None:
            raise InvalidScoresError(
                "frame.embedding is missing: this selector's diversity memory compares "
                f"{layout.dim}-d embeddings (its first frame had one); give every frame one"
            )
        return layout, position, embedding

    def _novelty(self, frame: FrameScores, t: float, cap: float = 1.0) -> Novelty:
        layout, position, embedding = self._inputs(frame)
        memory = self._memory
        if memory is None:  # nothing remembered yet: check the inputs as a memory would
            if not math.isfinite(t):
                raise InvalidScoresError(f"timestamp_s must be finite, got {t!r}")
            DiversityMemory.check_position(position)
            unit_embedding(embedding, layout.dim)
            return EMPTY_NOVELTY
        return memory.novelty(t, position, embedding, cap=cap)

    def decide(self, frame: FrameScores) -> Decision:
        """Decide one frame; changes nothing (commit with :meth:`update`)."""
        cam = self._sensor(frame.camera_probs, frame.camera_uncertainty, "camera")
        lid = self._sensor(frame.lidar_probs, frame.lidar_uncertainty, "lidar")
        u = self._fuse(cam, lid)
        budget = self._budget
        diverse = self._diversity is not None
        nov: Novelty | None = None
        score = u
        t = frame_time(frame, budget.frames_seen)
        if diverse:
            if self._novelty_always:
                nov = self._novelty(frame, t)
                cfg = self.config
                score = combine_uncertainty_novelty(u, nov.value, cfg.combine_rule, alpha=cfg.alpha)
            elif self._diversity_cold_start and budget.in_cold_start:
                nov = self._novelty(frame, t)
        nbytes = frame.nbytes
        if not (
            type(score) is float
            and 0.0 <= score <= 1.0
            and type(nbytes) is int
            and nbytes >= 0
            and math.isfinite(t)
        ):
            check_frame(score, t, nbytes)  # raises, or accepts an unusual but valid type
        selected, threshold, reason, draw = budget.evaluate_checked(
            score, t, nbytes, None if nov is None else nov.value
        )
        if selected and diverse:
            if nov is None:  # veto only: a search bounded by the threshold suffices
                nov = self._novelty(frame, t, cap=self._similar)
            if nov.value < self._similar:  # memory.is_too_similar
                selected, reason = False, Reason.TOO_SIMILAR
        if lid is None and cam is not None:  # one camera: the common case, no list
            components: tuple[tuple[str, float], ...] = (
                (("camera", cam), ("uncertainty", u))
                if nov is None
                else (("camera", cam), ("uncertainty", u), ("novelty", nov.value))
            )
        else:
            parts: list[tuple[str, float]] = []
            if cam is not None:
                parts.append(("camera", cam))
            if lid is not None:
                parts.append(("lidar", lid))
            parts.append(("uncertainty", u))
            if nov is not None:
                parts.append(("novelty", nov.value))
            components = tuple(parts)
        return make_decision(
            selected,
            float(score),
            threshold,
            reason,
            budget.frames_seen,
            float(t),
            int(nbytes),
            draw,
            components,
        )

    def update(self, decision: Decision, frame: FrameScores) -> None:
        """Commit ``decision`` (from :meth:`decide` on ``frame``, the current frame)."""
        if decision.seq != self._budget.frames_seen:
            raise StateError(
                f"decision.seq {decision.seq} does not match the next frame "
                f"{self._budget.frames_seen}; each decision is committed once, in order"
            )
        t = frame_time(frame, decision.seq)
        if decision.timestamp_s != t:
            raise StateError("decision and frame disagree on timestamp_s: not the same frame")
        if decision.selected and self._diversity is not None:
            layout, position, embedding = self._inputs(frame)
            memory = self._memory
            if memory is None:  # the first frame remembered fixes the layout
                memory = self._diversity.build(self._memory_seed, layout)
            memory.add(t, position, embedding)
            self._memory, self._layout = memory, layout
        self._budget.update(decision)

    def model_changed(self, *, embedding_changed: bool = True) -> None:
        """The scoring model changed: refresh the budget's score window (see
        :meth:`BudgetController.model_changed`) and, when the new model's embeddings live in
        another space than the remembered ones (``embedding_changed``, the case of a retrained
        model), empty the diversity memory rather than compare across spaces."""
        self._budget.model_changed()
        if embedding_changed:  # rebuilt at the next frame, sized to the new model's embedding
            self._memory = None
            self._layout = None

    # -- state -------------------------------------------------------------------------------
    def state_bytes(self) -> bytes:
        """Everything needed to continue exactly where this selector is, as bytes."""
        bh, ba = self._budget.get_state()
        header: dict[str, Any] = {"config": self.config.to_json(), "seed": self.seed, "budget": bh}
        arrays = {f"budget.{k}": v for k, v in ba.items()}
        if self._memory is not None and self._layout is not None:
            mh, ma = self._memory.get_state()
            header["memory"] = mh
            header["memory_layout"] = self._layout.to_json()
            arrays.update({f"memory.{k}": v for k, v in ma.items()})
        return pack(_KIND, header, arrays)

    @classmethod
    def from_state(cls, config: SelectorConfig, data: bytes) -> StreamSelector:
        """A selector restored from :meth:`state_bytes`; ``config`` must be the saved one."""
        header, arrays = unpack(data, _KIND)
        if header.get("config") != config.to_json():
            raise StateError("selector state was saved with a different SelectorConfig")
        seed = header.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise StateError("corrupt selector state: seed")
        obj = cls(config, seed)
        obj._budget = BudgetController.from_state(
            config.budget, _sub(header, "budget"), _prefixed(arrays, "budget.")
        )
        if "memory" in header:
            if config.diversity is None:
                raise StateError("corrupt selector state: a memory without a diversity config")
            saved = _sub(header, "memory_layout")
            try:
                layout = MemoryLayout(
                    int(saved["dim"]), bool(saved["position"]), bool(saved["embedding"])
                )
                memory = config.diversity.build(obj._memory_seed, layout)
            except (KeyError, TypeError, ValueError, InvalidConfigError, InvalidScoresError) as exc:
                raise StateError(f"corrupt selector state: memory layout: {exc}") from exc
            memory.restore(_sub(header, "memory"), _prefixed(arrays, "memory."))
            obj._memory, obj._layout = memory, layout
        return obj


def _sub(header: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = header.get(name)
    if not isinstance(value, dict):
        raise StateError(f"corrupt selector state: missing section {name!r}")
    return value


def _prefixed(arrays: Mapping[str, NDArray[Any]], prefix: str) -> dict[str, NDArray[Any]]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
