"""The replay report: summary.json, frames.csv and the two plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from edge_agent.report import FrameRow, summarise, write_report


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
