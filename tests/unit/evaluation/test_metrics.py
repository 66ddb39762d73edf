"""The figures of a closed-loop run, on hand-computable curves."""

from __future__ import annotations

import numpy as np
import pytest

from ingest_service.evaluation.loop import Checkpoint, RunResult
from ingest_service.evaluation.metrics import (
    Curve,
    area_under_curve,
    labels_to_reach,
    mean_sd,
    metric_at,
    rare_labels,
    run_figures,
    spend_vs_target,
    stream_mean,
    summarize,
)

CURVE = Curve(labels=(10, 20, 30), values=(0.4, 0.6, 0.8))


def test_metric_at_is_the_latest_checkpoint_with_at_most_that_many_labels() -> None:
    assert metric_at(CURVE, 5) == pytest.approx(0.4)  # before the first: the first
    assert metric_at(CURVE, 10) == pytest.approx(0.4)
    assert metric_at(CURVE, 19.9) == pytest.approx(0.4)
    assert metric_at(CURVE, 20) == pytest.approx(0.6)
    assert metric_at(CURVE, 1000) == pytest.approx(0.8)


def test_area_under_curve_is_the_mean_of_the_step_curve() -> None:
    # [10, 20): 0.4, [20, 30): 0.6, [30, 40]: 0.8 -> (4 + 6 + 8) / 30
    assert area_under_curve(CURVE, 10, 40) == pytest.approx(0.6)
    # an under-spender keeps its last value to the end of the range
    assert area_under_curve(Curve((10,), (0.5,)), 10, 40) == pytest.approx(0.5)
    # the range cuts the curve: [10, 20) 0.4, [20, 25] 0.6 -> (4 + 3) / 15
    assert area_under_curve(CURVE, 10, 25) == pytest.approx(7 / 15)
    with pytest.raises(ValueError, match="end must be > start"):
        area_under_curve(CURVE, 10, 10)


def test_labels_to_reach_is_the_first_count_at_or_above_the_target() -> None:
    assert labels_to_reach(CURVE, 0.6) == 20
    assert labels_to_reach(CURVE, 0.59) == 20
    assert labels_to_reach(CURVE, 0.1) == 10
    assert labels_to_reach(CURVE, 0.81) is None


def test_stream_mean_weights_each_checkpoint_by_the_frames_it_was_in_force() -> None:
    # 0.5 for frames 0-49, 0.7 for frames 50-99
    assert stream_mean([0, 50], [0.5, 0.7], 100) == pytest.approx(0.6)
    # a final checkpoint at frame n (the refit after the last frame) weighs nothing
    assert stream_mean([0, 50, 100], [0.5, 0.7, 0.9], 100) == pytest.approx(0.6)


def test_spend_and_rare_labels() -> None:
    assert spend_vs_target(50, 0.05, 1000) == pytest.approx(0.0)
    assert spend_vs_target(40, 0.05, 1000) == pytest.approx(-0.2)
    assert rare_labels(np.array([1, 3, 3, 7, 2]), (3, 7)) == 3
    assert rare_labels(np.array([1, 2]), (3, 7)) == 0


def test_mean_sd_skips_missing_values_and_counts_them() -> None:
    ms = mean_sd([1.0, 3.0, None])
    assert ms.mean == pytest.approx(2.0)
    assert ms.sd == pytest.approx(np.sqrt(2.0))
    assert (ms.n, ms.of) == (2, 3)
    assert mean_sd([None]).mean is None


def _run(
    strategy: str, seed: int, selected_at: list[int], curve: list[tuple[int, int, float]]
) -> RunResult:
    frames = 200
    mask = np.zeros(frames, dtype=np.bool_)
    mask[selected_at] = True
    labels = np.arange(frames, dtype=np.int64) % 4
    return RunResult(
        stream="s",
        strategy=strategy,
        seed=seed,
        budget=0.05,
        frames=frames,
        initial_labels=10,
        selected=mask,
        selected_labels=labels[mask],
        rare_classes=(3,),
        checkpoints=tuple(Checkpoint(f, n, acc, acc / 2) for f, n, acc in curve),
        prequential_accuracy=0.5,
        seconds=0.0,
    )


def test_run_figures_and_summary_on_a_hand_made_run() -> None:
    # budget 5 % of 200 frames = 10 labels on top of 10 warm-start labels
    fast = _run(
        "ours",
        0,
        [3, 7, 11, 15, 19, 23, 27, 31, 35, 39],
        [(0, 10, 0.5), (20, 15, 0.7), (40, 20, 0.8)],
    )
    slow = _run(
        "random",
        0,
        [1, 2, 5, 6, 9, 10, 13, 14, 17, 18],
        [(0, 10, 0.5), (100, 15, 0.6), (150, 20, 0.7)],
    )
    figs = run_figures(fast, metric="accuracy", target=0.7)
    assert figs["labels_used"] == pytest.approx(20)
    assert figs["spend_vs_target"] == pytest.approx(0.0)
    assert figs["labels_to_reach"] == pytest.approx(15)
    assert figs["at_50"] == pytest.approx(0.7)  # 10 + 5 labels
    assert figs["at_25"] == pytest.approx(0.5)  # 10 + 2.5 labels
    assert figs["rare_labels"] == pytest.approx(10)  # every selected frame index % 4 == 3
    assert figs["final_macro_f1"] == pytest.approx(0.4)
    # [0, 20) 0.5, [20, 40) 0.7, [40, 200) 0.8
    assert figs["stream_mean_accuracy"] == pytest.approx((20 * 0.5 + 20 * 0.7 + 160 * 0.8) / 200)
    table = summarize([slow, fast], metric="accuracy")
    assert list(table) == ["random", "ours"]
    # the target is random's final accuracy, 0.7: ours reaches it at 15 labels, random at 20
    assert table["ours"]["labels_to_reach"].mean == pytest.approx(15)
    assert table["random"]["labels_to_reach"].mean == pytest.approx(20)
    assert table["random"]["rare_labels"].mean == pytest.approx(0)
