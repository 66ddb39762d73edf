"""The evaluation harness end to end on scikit-learn's bundled digits (no apt data, seconds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from ingest_service.evaluation.cli import main, run_evaluation
from ingest_service.evaluation.learners import LogisticRegressionLearner, TorchLearner
from ingest_service.evaluation.loop import LoopConfig, run_loop
from ingest_service.evaluation.strategies import make_strategy
from ingest_service.evaluation.streams import StreamSpec, build_stream

FRAMES = 600
BUDGET = 0.1
SPEC = StreamSpec(source="digits", frames=FRAMES, holdout=300, features="raw")


class RecordingLearner(LogisticRegressionLearner):
    """The real learner, keeping a copy of every training set it is given."""

    def __init__(self, classes: int) -> None:
        super().__init__(classes, seed=0)
        self.training_sets: list[NDArray[np.floating[Any]]] = []

    def fit(self, features: NDArray[np.floating[Any]], labels: NDArray[np.int64]) -> None:
        self.training_sets.append(np.array(features, copy=True))
        super().fit(features, labels)


def _rows(a: NDArray[np.floating[Any]]) -> set[bytes]:
    return {r.tobytes() for r in np.ascontiguousarray(a, dtype=np.float32)}


@pytest.mark.parametrize("strategy", ["ours", "skactiveml-split"])
def test_the_learner_is_trained_on_warm_start_and_selected_stream_rows_only(strategy: str) -> None:
    stream = build_stream(SPEC, seed=0)
    learner = RecordingLearner(stream.classes)
    run = run_loop(
        stream,
        make_strategy(strategy, BUDGET, 0, stream.dim),
        learner,
        LoopConfig(refit_every_labels=5),
        seed=0,
        budget=BUDGET,
    )
    holdout = _rows(stream.holdout_features)
    allowed = _rows(stream.initial_features) | _rows(stream.features)
    for x in learner.training_sets:
        rows = _rows(x)
        assert not rows & holdout, "a holdout row was trained on"
        assert rows <= allowed
    last = learner.training_sets[-1]
    expected = np.concatenate([stream.initial_features, stream.features[run.selected]])
    np.testing.assert_array_equal(last, expected)  # every label taken, none invented
    assert run.labels_used == last.shape[0]
    assert run.checkpoints[-1].labels == run.labels_used
    # one refit per 5 labels, plus the warm start and the refit of the pending remainder
    selected = int(run.selected.sum())
    assert learner.fits == 1 + selected // 5 + (selected % 5 > 0)


def test_same_seed_same_stream_and_same_run() -> None:
    a = build_stream(SPEC, seed=1)
    b = build_stream(SPEC, seed=1)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, build_stream(SPEC, seed=2).labels)
    names = ["random", "ours", "skactiveml-varunc"]
    loop = LoopConfig()
    first = run_evaluation([SPEC], names, budget=BUDGET, seeds=1, loop=loop)
    second = run_evaluation([SPEC], names, budget=BUDGET, seeds=1, loop=loop)
    for x, y in zip(first, second, strict=True):
        assert x.strategy == y.strategy
        np.testing.assert_array_equal(x.selected, y.selected)
        assert x.checkpoints == y.checkpoints


def test_cli_writes_table_json_and_plots_with_random_always_included(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    rc = main(
        [
            "--stream", "digits,digits/rare_late",
            "--frames", str(FRAMES),
            "--holdout", "300",
            "--seeds", "2",
            "--budget", str(BUDGET),
            "--features", "raw",
            "--strategies", "ours,skactiveml-varunc",
            "--out", str(out),
            "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    doc = json.loads((out / "evaluation.json").read_text())
    md = (out / "evaluation.md").read_text()
    assert set(doc["streams"]) == {"digits", "digits/rare_late"}
    for name, stream in doc["streams"].items():
        assert list(stream["table"]) == ["random", "ours", "skactiveml-varunc"]
        assert len(stream["runs"]) == 2 * 3
        for png in stream["plots"]:
            assert (out / png).stat().st_size > 1000
            assert png in md
        for run in stream["runs"]:
            figs = run["figures"]
            target = BUDGET * FRAMES
            # every strategy spends its budget to within 50 % on this short stream (600
            # frames, a 500-frame cold start for ours); the rate accuracy is bench's job
            assert abs(figs["labels_used"] - 10 - target) <= 0.5 * target, (run["strategy"], figs)
            assert len(run["selected_frames"]) == figs["labels_used"] - 10
            assert 0.0 <= figs["final_accuracy"] <= 1.0
            if name == "digits/rare_late":
                assert figs["rare_labels"] is not None
            else:
                assert figs["rare_labels"] is None
    assert "| random |" in md
    assert "labels to reach random's final accuracy" in md


def test_cli_rejects_an_unknown_strategy_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--strategies", "ours,nope", "--no-progress"]) == 2
    assert "unknown strategies ['nope']" in capsys.readouterr().err


class CountingStrategy:
    """Random at the budget, counting the model swaps the loop announces."""

    name = "counting"

    def __init__(self) -> None:
        self.inner = make_strategy("random", BUDGET, 0, 1)
        self.swaps = 0

    def select(self, frame: Any) -> bool:
        return self.inner.select(frame)

    def model_changed(self) -> None:
        self.swaps += 1


def test_the_loop_announces_every_refit_to_the_strategy() -> None:
    stream = build_stream(SPEC, seed=0)
    strategy = CountingStrategy()
    run = run_loop(
        stream,
        strategy,
        LogisticRegressionLearner(stream.classes),
        LoopConfig(refit_every_labels=5),
        seed=0,
        budget=BUDGET,
    )
    in_loop = [c for c in run.checkpoints[1:] if c.frame < FRAMES]  # the last refit ends it
    assert strategy.swaps == len(in_loop) > 5


def test_the_torch_learner_fine_tunes_and_learns() -> None:
    import torch

    torch.set_num_threads(1)
    stream = build_stream(SPEC, seed=0)
    learner = TorchLearner(stream.classes, seed=0)
    x, y = stream.features[:200], stream.labels[:200]
    learner.fit(x[:20], y[:20])
    first = [p.detach().clone() for p in learner._net.parameters()]
    for _ in range(3):
        learner.fit(x, y)
    probs = learner.predict_proba(stream.holdout_features)
    assert probs.shape == (stream.holdout_features.shape[0], stream.classes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float(np.mean(probs.argmax(axis=1) == stream.holdout_labels))
    assert accuracy > 0.6  # 10 classes: chance is 0.1
    moved = [
        p for p, q in zip(learner._net.parameters(), first, strict=True) if not torch.equal(p, q)
    ]
    assert moved, "fit did not continue from the current weights"
