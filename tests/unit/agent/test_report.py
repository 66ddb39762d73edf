"""The replay report: summary.json, frames.csv and the two plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from edge_agent.report import FrameRow, plot_timeline, plot_track, summarise, write_report


def _rows(n: int) -> list[FrameRow]:
    rows = []
    for i in range(n):
        score = 0.5 + 0.5 * math.sin(i / 7.0)
        selected = score > 0.95
        rows.append(
            FrameRow(
                seq=i,
                timestamp_ns=1_000_000_000 + i * 100_000_000,
                x_m=float(i),
                y_m=float(i % 10),
                score=None if i == 3 else score,
                threshold=0.95,
                selected=selected and i != 3,
                reason="quality_black"
                if i == 3
                else ("selected" if selected else "below_threshold"),
                components={"uncertainty": score, "novelty": 1.0},
            )
        )
    return rows


def test_report_files_agree_with_the_rows(tmp_path: Path) -> None:
    rows = _rows(200)
    summary = summarise(
        rows,
        drive="kitti/0001",
        budget=0.05,
        provider="CPUExecutionProvider",
        model_versions={"camera": "ref-camera-1.0.0"},
        wall_seconds=2.0,
        strategy="entropy+diversity",
        seed=7,
    )
    paths = write_report(tmp_path, rows, summary)
    assert {p.name for p in paths} == {
        "summary.json",
        "frames.csv",
        "problems.csv",
        "score_timeline.png",
        "ego_track.png",
    }
    data = json.loads((tmp_path / "summary.json").read_text())
    n_sel = sum(r.selected for r in rows)
    assert data["frames_total"] == 200
    assert data["frames_scored"] == 199
    assert data["frames_selected"] == n_sel > 0
    assert data["selection_rate"] == n_sel / 199
    assert data["frames_per_second"] == 100.0
    assert data["dropped_by_reason"]["quality_black"] == 1
    assert sum(data["dropped_by_reason"].values()) == 200 - n_sel
    with (tmp_path / "frames.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 200
    assert table[3]["score"] == ""
    assert [int(r["seq"]) for r in table if r["selected"] == "1"] == data["selected_seqs"]
    for name in ("score_timeline.png", "ego_track.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_track_plot_without_poses(tmp_path: Path) -> None:
    rows = [FrameRow(i, i * 10, None, None, 0.5, 0.4, True, "selected") for i in range(5)]
    summary = summarise(
        rows,
        drive="d",
        budget=1.0,
        provider="cpu",
        model_versions={},
        wall_seconds=0.0,
        strategy="s",
        seed=0,
    )
    names = {p.name for p in write_report(tmp_path, rows, summary)}
    assert "ego_track.png" not in names
    assert summary.frames_per_second == 0.0


def _cold_start_rows(n: int = 120, cold: int = 10) -> list[FrameRow]:
    """Scores within 0.7-0.9 (as real models give); during the cold start the selector's
    "threshold" is its exploration probability (0.1), not on the score scale."""
    rows = []
    for i in range(n):
        score = 0.8 + 0.1 * math.sin(i / 5.0)
        in_cold = i < cold
        rows.append(
            FrameRow(
                seq=i,
                timestamp_ns=i * 100_000_000,
                x_m=0.1 * i,
                y_m=1.5 * i,
                score=score,
                threshold=0.1 if in_cold else 0.88,
                selected=not in_cold and score > 0.88,
                reason="cold_start_skip" if in_cold else "below_threshold",
            )
        )
    return rows


def _summary(rows: list[FrameRow]) -> object:
    return summarise(
        rows,
        drive="d",
        budget=0.1,
        provider="cpu",
        model_versions={},
        wall_seconds=1.0,
        strategy="s",
        seed=0,
    )


def _figure_of(plot: Any, rows: list[FrameRow], tmp_path: Path, monkeypatch: Any) -> Any:
    """Run a plot function as the report does and keep the figure it closes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept: list[Any] = []
    monkeypatch.setattr(plt, "close", kept.append)
    assert plot(tmp_path / "plot.png", rows, _summary(rows)) is not None
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    monkeypatch.undo()
    return kept[0]


def test_timeline_legend_is_off_the_data_and_the_axis_fits_the_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.transforms import Bbox

    rows = _cold_start_rows()
    fig = _figure_of(plot_timeline, rows, tmp_path, monkeypatch)
    try:
        fig.canvas.draw()
        (ax,) = fig.axes
        legend = ax.get_legend()
        assert legend is not None
        box = legend.get_window_extent(fig.canvas.get_renderer())
        plot = ax.get_window_extent()
        assert Bbox.intersection(box, plot) is None or box.y0 >= plot.y1 - 1
        lo, hi = ax.get_ylim()
        scores = [r.score for r in rows if r.score is not None]
        assert lo <= min(scores)
        assert max(scores) <= hi
        assert hi - lo < 2 * (max(scores) - min(scores))  # not squashed by the 0.1 cold start
    finally:
        plt.close(fig)


def test_track_colour_scale_spans_the_drive_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.pyplot as plt

    rows = _cold_start_rows()
    fig = _figure_of(plot_track, rows, tmp_path, monkeypatch)
    try:
        coloured = [c for c in fig.axes[0].collections if c.get_array() is not None]
        assert len(coloured) == 1
        scores = [r.score for r in rows if r.score is not None]
        assert coloured[0].norm.vmin == pytest.approx(min(scores))
        assert coloured[0].norm.vmax == pytest.approx(max(scores))
    finally:
        plt.close(fig)
