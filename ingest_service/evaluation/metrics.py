"""Figures of a closed-loop run, and their mean and sd over seeds.

A run's learning curve is a step function of labels: the holdout metric of the latest
checkpoint trained on at most ``L`` labels (before the first checkpoint: the first). From it:

* ``metric_at(curve, L)`` -- the metric with ``L`` labels; the table shows it at the
  warm-start labels plus 25 / 50 / 75 / 100 % of the budget (``budget * frames`` labels);
* ``area_under_curve(curve, start, end)`` -- its mean over ``[start, end]`` labels, i.e. the
  area under metric-vs-labels divided by the width; ``end`` is the warm start plus the budget,
  the same for every strategy, so an under-spender keeps its last value to the end and an
  over-spender is cut off there;
* ``labels_to_reach(curve, target)`` -- the first label count whose metric is at least
  ``target`` (random's mean final metric on that stream), ``None`` if never reached.

Over the stream: ``stream_mean(frames, values, n)`` is the mean over frames of the metric of
the model in force at each frame (the checkpoint at ``frames[j]`` holds until the next one).
``spend_vs_target`` is selections / (budget * frames) - 1; ``rare_labels`` counts selected
frames of the stream's rare classes.

>>> curve = Curve(labels=(10, 15, 20), values=(0.5, 0.6, 0.7))
>>> metric_at(curve, 17), labels_to_reach(curve, 0.6), labels_to_reach(curve, 0.9)
(0.6, 15, None)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ingest_service.evaluation.loop import RunResult

__all__ = [
    "BUDGET_POINTS",
    "METRICS",
    "Curve",
    "MeanSd",
    "area_under_curve",
    "curve_of",
    "labels_to_reach",
    "mean_sd",
    "metric_at",
    "rare_labels",
    "run_figures",
    "spend_vs_target",
    "stream_mean",
    "summarize",
]

METRICS: tuple[str, ...] = ("accuracy", "macro_f1")
BUDGET_POINTS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True, slots=True)
class Curve:
    """A learning curve: checkpoint label counts (non-decreasing) and their metric."""

    labels: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.labels or len(self.labels) != len(self.values):
            raise ValueError("a curve needs as many values as label counts, at least one")
        if any(b < a for a, b in zip(self.labels, self.labels[1:], strict=False)):
            raise ValueError("curve label counts must not decrease")


def curve_of(run: RunResult, metric: str) -> Curve:
    """The learning curve of ``run`` for ``metric`` (``"accuracy"`` or ``"macro_f1"``)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    cps = run.checkpoints
    return Curve(tuple(c.labels for c in cps), tuple(float(getattr(c, metric)) for c in cps))


def metric_at(curve: Curve, labels: float) -> float:
    """The metric of the latest checkpoint with at most ``labels`` labels (else the first)."""
    value = curve.values[0]
    for count, v in zip(curve.labels, curve.values, strict=True):
        if count > labels:
            break
        value = v
    return value


def area_under_curve(curve: Curve, start: float, end: float) -> float:
    """Mean of the step curve over ``[start, end]`` labels (``end > start``)."""
    if not end > start:
        raise ValueError(f"end must be > start, got [{start}, {end}]")
    edges = [start] + [float(c) for c in curve.labels if start < c < end] + [end]
    total = 0.0
    for a, b in itertools.pairwise(edges):
        total += metric_at(curve, a) * (b - a)
    return total / (end - start)


def labels_to_reach(curve: Curve, target: float) -> int | None:
    """The first label count whose metric is at least ``target``; ``None`` if none is."""
    for count, v in zip(curve.labels, curve.values, strict=True):
        if v >= target:
            return count
    return None


def stream_mean(frames: Sequence[int], values: Sequence[float], n: int) -> float:
    """Mean over ``n`` frames of the value in force (``values[j]`` from ``frames[j]`` on)."""
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    total = 0.0
    for j, (f, v) in enumerate(zip(frames, values, strict=True)):
        nxt = frames[j + 1] if j + 1 < len(frames) else n
        total += v * (min(nxt, n) - min(f, n))
    return total / n


def spend_vs_target(selected: int, budget: float, frames: int) -> float:
    """Relative overspend: ``selected / (budget * frames) - 1`` (0 is on target)."""
    return selected / (budget * frames) - 1.0


def rare_labels(selected_labels: NDArray[np.int64], rare: Iterable[int]) -> int:
    """How many selected frames belong to the rare classes."""
    return int(np.isin(selected_labels, list(rare)).sum())


def run_figures(run: RunResult, *, metric: str, target: float | None) -> dict[str, float | None]:
    """The figures of one run; ``target`` is random's final ``metric`` (``None``: not known)."""
    curve = curve_of(run, metric)
    budget_labels = run.budget * run.frames
    start = float(run.initial_labels)
    out: dict[str, float | None] = {
        "labels_used": float(run.labels_used),
        "spend_vs_target": spend_vs_target(int(run.selected.sum()), run.budget, run.frames),
        "final_accuracy": run.checkpoints[-1].accuracy,
        "final_macro_f1": run.checkpoints[-1].macro_f1,
        "prequential_accuracy": run.prequential_accuracy,
        "aulc": area_under_curve(curve, start, start + budget_labels),
        "rare_labels": float(rare_labels(run.selected_labels, run.rare_classes))
        if run.rare_classes
        else None,
    }
    for m in METRICS:
        c = curve_of(run, m)
        out[f"stream_mean_{m}"] = stream_mean(
            [cp.frame for cp in run.checkpoints], c.values, run.frames
        )
    for p in BUDGET_POINTS:
        out[f"at_{round(p * 100)}"] = metric_at(curve, start + p * budget_labels)
    reach = None if target is None else labels_to_reach(curve, target)
    out["labels_to_reach"] = None if reach is None else float(reach)
    return out


@dataclass(frozen=True, slots=True)
class MeanSd:
    """Mean and sample sd over the seeds that have a value; ``n`` of ``of`` seeds had one."""

    mean: float | None
    sd: float | None
    n: int
    of: int


def mean_sd(values: Sequence[float | None]) -> MeanSd:
    """Mean and sd (ddof 1; 0 for one value) of the values that are not ``None``."""
    have = [v for v in values if v is not None and math.isfinite(v)]
    if not have:
        return MeanSd(None, None, 0, len(values))
    arr = np.asarray(have, dtype=np.float64)
    sd = float(arr.std(ddof=1)) if arr.shape[0] > 1 else 0.0
    return MeanSd(float(arr.mean()), sd, len(have), len(values))


def summarize(
    runs: Sequence[RunResult], *, metric: str = "accuracy", baseline: str = "random"
) -> dict[str, dict[str, MeanSd]]:
    """Per strategy (in first-seen order), each figure's mean and sd over the seeds.

    ``runs`` are of one stream and one budget; ``baseline``'s mean final ``metric`` is the
    target of ``labels_to_reach``.
    """
    base = [r for r in runs if r.strategy == baseline]
    target = mean_sd([getattr(r.checkpoints[-1], metric) for r in base]).mean if base else None
    by_strategy: dict[str, list[dict[str, float | None]]] = {}
    for r in runs:
        by_strategy.setdefault(r.strategy, []).append(run_figures(r, metric=metric, target=target))
    table: dict[str, dict[str, MeanSd]] = {}
    for name, figs in by_strategy.items():
        table[name] = {key: mean_sd([f[key] for f in figs]) for key in figs[0]}
    return table
