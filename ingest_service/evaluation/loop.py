"""The closed loop: stream in order, label what the strategy selects, refit, score what follows.

For one (stream, strategy, seed):

1. the learner is fit on the stream's warm-start labels;
2. frame by frame, in stream order, the strategy sees ``predict_proba`` of the model in force
   (computed in blocks for speed, discarded at every refit, so each frame is scored by the
   model a vehicle would have run on it);
3. a selected frame's ground-truth label joins the labeled set; after every
   ``refit_every_labels`` new labels (or ``refit_every_frames`` frames with at least one new
   label) the learner is refit on the whole labeled set and scored on the holdout (a
   checkpoint); after the last frame it is refit on whatever labels are still pending;
4. the model is trained only on warm-start rows and stream rows, never on the holdout.

The result keeps what the metrics need: the per-frame selection mask, the checkpoints (frame,
labels, accuracy, macro-F1) and the prequential accuracy on the stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ingest_service.evaluation.learners import Learner
from ingest_service.evaluation.strategies import Frame, Strategy
from ingest_service.evaluation.streams import LabeledStream

__all__ = ["Checkpoint", "LoopConfig", "RunResult", "holdout_scores", "run_loop"]

_PROBA_BLOCK = 256


@dataclass(frozen=True, slots=True)
class LoopConfig:
    """Refit policy of the loop; validated on construction."""

    refit_every_labels: int = 5
    refit_every_frames: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.refit_every_labels, int) and self.refit_every_labels >= 1):
            raise ValueError(
                f"refit_every_labels must be an int >= 1, got {self.refit_every_labels!r}"
            )
        t = self.refit_every_frames
        if t is not None and not (isinstance(t, int) and t >= 1):
            raise ValueError(f"refit_every_frames must be an int >= 1 or None, got {t!r}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The model after a refit: in force from frame ``frame`` on, trained on ``labels`` labels."""

    frame: int
    labels: int
    accuracy: float
    macro_f1: float


@dataclass(frozen=True, slots=True)
class RunResult:
    """One strategy on one stream for one seed."""

    stream: str
    strategy: str
    seed: int
    budget: float
    frames: int
    initial_labels: int
    selected: NDArray[np.bool_]  # (frames,)
    selected_labels: NDArray[np.int64]  # class of each selected frame, in order
    rare_classes: tuple[int, ...]
    checkpoints: tuple[Checkpoint, ...]
    prequential_accuracy: float
    seconds: float

    @property
    def labels_used(self) -> int:
        """Warm-start labels plus the labels the strategy selected."""
        return self.initial_labels + int(self.selected.sum())


def holdout_scores(learner: Learner, stream: LabeledStream) -> tuple[float, float]:
    """``(accuracy, macro-F1)`` of ``learner`` on the stream's holdout (all classes)."""
    from sklearn.metrics import f1_score

    pred = learner.predict_proba(stream.holdout_features).argmax(axis=1)
    y = stream.holdout_labels
    accuracy = float(np.mean(pred == y))
    f1 = float(
        f1_score(y, pred, labels=np.arange(stream.classes), average="macro", zero_division=0)
    )
    return accuracy, f1


def run_loop(
    stream: LabeledStream,
    strategy: Strategy,
    learner: Learner,
    config: LoopConfig,
    *,
    seed: int,
    budget: float,
    progress: Callable[[int], object] | None = None,
) -> RunResult:
    """Run the closed loop once; ``progress(n)`` is called with frames done since the last call."""
    import time

    start = time.perf_counter()
    n = stream.frames
    feats = stream.features
    labels = stream.labels
    train_rows: list[int] = []  # stream rows labeled so far
    init_x, init_y = stream.initial_features, stream.initial_labels

    def refit() -> None:
        rows = np.asarray(train_rows, dtype=np.int64)
        x = np.concatenate([init_x, feats[rows]]) if rows.size else init_x
        y = np.concatenate([init_y, labels[rows]]) if rows.size else init_y
        learner.fit(x, y)

    refit()
    acc, f1 = holdout_scores(learner, stream)
    checkpoints = [Checkpoint(0, int(init_y.shape[0]), acc, f1)]
    selected = np.zeros(n, dtype=np.bool_)
    pending = 0
    since_refit = 0
    correct = 0
    block: NDArray[np.float64] | None = None
    block_start = 0
    times, positions = stream.timestamps_s, stream.positions
    reported = 0
    for i in range(n):
        if block is None or i >= block_start + block.shape[0]:
            block_start = i
            block = learner.predict_proba(feats[i : i + _PROBA_BLOCK])
        probs = block[i - block_start]
        correct += int(probs.argmax() == labels[i])
        frame = Frame(
            probs=probs,
            features=feats[i],
            timestamp_s=float(times[i]),
            position=(float(positions[i, 0]), float(positions[i, 1])),
        )
        since_refit += 1
        if strategy.select(frame):
            selected[i] = True
            train_rows.append(i)
            pending += 1
        due_frames = config.refit_every_frames is not None and (
            since_refit >= config.refit_every_frames and pending > 0
        )
        if pending >= config.refit_every_labels or due_frames:
            refit()
            strategy.model_changed()
            pending = 0
            since_refit = 0
            block = None
            acc, f1 = holdout_scores(learner, stream)
            checkpoints.append(Checkpoint(i + 1, int(init_y.shape[0]) + len(train_rows), acc, f1))
        if progress is not None and (i + 1 - reported >= 100 or i + 1 == n):
            progress(i + 1 - reported)
            reported = i + 1
    if pending:
        refit()
        acc, f1 = holdout_scores(learner, stream)
        checkpoints.append(Checkpoint(n, int(init_y.shape[0]) + len(train_rows), acc, f1))
    return RunResult(
        stream=stream.name,
        strategy=strategy.name,
        seed=seed,
        budget=budget,
        frames=n,
        initial_labels=int(init_y.shape[0]),
        selected=selected,
        selected_labels=labels[selected],
        rare_classes=stream.rare_classes,
        checkpoints=tuple(checkpoints),
        prequential_accuracy=correct / n if n else 0.0,
        seconds=time.perf_counter() - start,
    )
