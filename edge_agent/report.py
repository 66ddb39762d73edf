"""The replay report: ``summary.json``, ``frames.csv``, ``problems.csv`` and two PNG plots.

Written by ``edge-agent replay --report DIR`` so that data engineers can compare strategies and
budgets on recorded drives before a rollout. Plots are matplotlib PNGs (headless, Agg backend).
``problems.csv`` names every file that was unreadable or failed the quality gate, and every
frame dropped on an error, one line each: the logs are rate-limited, the report is not.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.errors import ReportDirError

log = logging.getLogger(__name__)

FRAME_COLUMNS = (
    "seq",
    "timestamp_ns",
    "x_m",
    "y_m",
    "score",
    "threshold",
    "selected",
    "reason",
    "files",
    "problems",
)
PROBLEM_COLUMNS = ("seq", "timestamp_ns", "outcome", "reason", "sensor", "path", "detail")


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad file or failed frame: what happened to the frame (``outcome``:
    ``frame_dropped``, or ``sensor_dropped`` when the frame went on without that sensor),
    why (``source_<reason>``, ``quality_<reason>``, ``model_error``, ...), and the file."""

    seq: int
    timestamp_ns: int
    outcome: str
    reason: str
    sensor: str
    path: str
    detail: str


@dataclass(frozen=True, slots=True)
class FrameRow:
    """One frame of a replay: what was scored and what was decided."""

    seq: int
    timestamp_ns: int
    x_m: float | None
    y_m: float | None
    score: float | None
    threshold: float | None
    selected: bool
    reason: str
    components: Mapping[str, float] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class Summary:
    drive: str
    frames_total: int
    frames_scored: int
    frames_selected: int
    selection_rate: float
    budget: float
    dropped_by_reason: dict[str, int]
    provider: str
    model_versions: dict[str, str]
    wall_seconds: float
    frames_per_second: float
    strategy: str
    seed: int
    selected_seqs: list[int]
    problems_by_reason: dict[str, int] = field(default_factory=dict)
    """Every line of problems.csv, counted by reason (source, quality gate, model, ...)."""
    quality_by_reason: dict[str, int] = field(default_factory=dict)
    """Quality-gate outcomes: frames that passed the gate untouched (``passed``), went on
    without a failed sensor (``sensor_dropped``) or were rejected (``frame_rejected``), and
    every failed check by its reason (``lidar_out_of_range``, ``image_dark``, ...)."""
    frames_with_problems: int = 0
    notes: list[str] = field(default_factory=list)
    """Plain-language explanations of a surprising result (e.g. nothing selected because
    the replay was shorter than the cold start)."""


def summarise(
    rows: Sequence[FrameRow],
    *,
    drive: str,
    budget: float,
    provider: str,
    model_versions: Mapping[str, str],
    wall_seconds: float,
    strategy: str,
    seed: int,
    notes: Sequence[str] = (),
) -> Summary:
    """Aggregate the rows of one replay."""
    selected = [r.seq for r in rows if r.selected]
    scored = sum(1 for r in rows if r.score is not None)
    dropped = Counter(r.reason for r in rows if not r.selected)
    problems = Counter(p.reason for r in rows for p in r.problems)
    return Summary(
        drive=drive,
        frames_total=len(rows),
        frames_scored=scored,
        frames_selected=len(selected),
        selection_rate=len(selected) / scored if scored else 0.0,
        budget=budget,
        dropped_by_reason=dict(sorted(dropped.items())),
        provider=provider,
        model_versions=dict(model_versions),
        wall_seconds=round(wall_seconds, 3),
        frames_per_second=round(len(rows) / wall_seconds, 2) if wall_seconds > 0 else 0.0,
        strategy=strategy,
        seed=seed,
        selected_seqs=selected,
        problems_by_reason=dict(sorted(problems.items())),
        quality_by_reason=quality_outcomes(rows),
        frames_with_problems=sum(1 for r in rows if r.problems),
        notes=list(notes),
    )


def quality_outcomes(rows: Sequence[FrameRow]) -> dict[str, int]:
    """Quality-gate outcomes per frame and failed checks per reason (see ``Summary``).

    Frames that never reached the gate (unreadable, pose-only) are not counted.
    """
    out: Counter[str] = Counter()
    for r in rows:
        if r.reason.startswith("source_") or r.reason == "no_sensor_data":
            continue
        checks = [p for p in r.problems if p.reason.startswith("quality_")]
        if r.reason.startswith("quality_"):
            out["frame_rejected"] += 1
        elif checks:
            out["sensor_dropped"] += 1
        else:
            out["passed"] += 1
        out.update(p.reason.removeprefix("quality_") for p in checks)
    return dict(sorted(out.items()))


def check_report_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and prove a file can be written there, before a replay starts
    (so a typo or a read-only mount fails in a second, not after the whole drive).

    Raises ``ReportDirError`` naming the directory and the cause.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ReportDirError(
            str(out_dir),
            f"cannot write the report there ({exc.strerror or exc}); give --report a "
            "directory you can write to",
        ) from exc


def write_report(out_dir: Path, rows: Sequence[FrameRow], summary: Summary) -> list[Path]:
    """Write summary.json, frames.csv and the plots into ``out_dir``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [_write_summary(out_dir / "summary.json", summary)]
    written.append(_write_csv(out_dir / "frames.csv", rows))
    written.append(_write_problems(out_dir / "problems.csv", rows))
    if importlib.util.find_spec("matplotlib") is None:
        log.warning(
            "replay report %s: no plots (matplotlib is not installed: install the `report` "
            "extra, pip install 'fleet-active-learning[report]'); summary and CSVs written",
            out_dir,
        )
        return written
    written.append(plot_timeline(out_dir / "score_timeline.png", rows, summary))
    track = plot_track(out_dir / "ego_track.png", rows, summary)
    if track is not None:
        written.append(track)
    return written


def _write_summary(path: Path, summary: Summary) -> Path:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(summary), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def _fmt(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6g}"


def _write_csv(path: Path, rows: Sequence[FrameRow]) -> Path:
    component_names = sorted({name for r in rows for name in r.components})
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*FRAME_COLUMNS, *component_names])
        for r in rows:
            writer.writerow(
                [
                    r.seq,
                    r.timestamp_ns,
                    _fmt(r.x_m),
                    _fmt(r.y_m),
                    _fmt(r.score),
                    _fmt(r.threshold),
                    int(r.selected),
                    r.reason,
                    ";".join(r.files),
                    ";".join(p.reason for p in r.problems),
                    *(_fmt(r.components.get(name)) for name in component_names),
                ]
            )
    return path


def _write_problems(path: Path, rows: Sequence[FrameRow]) -> Path:
    """One line per problem, header always (an empty table says: nothing was wrong)."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(PROBLEM_COLUMNS)
        for r in rows:
            for p in r.problems:
                writer.writerow(
                    [p.seq, p.timestamp_ns, p.outcome, p.reason, p.sensor, p.path, p.detail]
                )
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _is_cold_start(row: FrameRow) -> bool:
    return row.reason.startswith("cold_start")


def score_limits(values: Sequence[float]) -> tuple[float, float]:
    """Axis limits that fit ``values`` (finite ones) with a 5 % margin, inside [0, 1] where
    the values are; a flat series gets a +-0.05 window."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    pad = max((hi - lo) * 0.05, 0.05 if hi == lo else 0.0)
    return max(lo - pad, min(0.0, lo)), min(hi + pad, max(1.0, hi))


def timeline_figure(rows: Sequence[FrameRow], summary: Summary) -> Any:
    """The score timeline as a matplotlib figure (``plot_timeline`` saves it).

    The threshold is drawn only after the cold start: during it the selector's "threshold"
    is an exploration probability or a novelty bar, not on the score scale, and plotting it
    squashed the scores into a sliver. The cold start is a shaded band instead. The y axis
    fits the scores and thresholds; the legend sits outside the axes, above them.
    """
    plt = _pyplot()
    t0 = rows[0].timestamp_ns if rows else 0
    t = [(r.timestamp_ns - t0) / 1e9 for r in rows]
    fig, ax = plt.subplots(figsize=(11, 4.4), dpi=110)
    scored = [(ti, r) for ti, r in zip(t, rows, strict=True) if r.score is not None]
    marker = "." if len(scored) <= 60 else None  # a short drive: show each frame
    ax.plot(
        [ti for ti, _ in scored], [r.score for _, r in scored], lw=0.8, marker=marker, label="score"
    )
    thr = [
        (ti, r.threshold) for ti, r in scored if r.threshold is not None and not _is_cold_start(r)
    ]
    if thr:
        ax.plot([a for a, _ in thr], [b for _, b in thr], lw=1.0, ls="--", label="threshold")
    cold = [ti for ti, r in scored if _is_cold_start(r)]
    if cold:
        ax.axvspan(min(cold), max(cold), color="0.85", alpha=0.6, lw=0, label="cold start")
    sel = [(ti, r.score) for ti, r in scored if r.selected]
    if sel:
        ax.scatter(
            [a for a, _ in sel], [b for _, b in sel], s=18, c="red", label="selected", zorder=3
        )
    values = [r.score for _, r in scored if r.score is not None] + [b for _, b in thr]
    ax.set_ylim(*score_limits(values))
    ax.set_xlabel("time since start of drive (s)")
    ax.set_ylabel("selection score")
    ax.set_title(
        f"{summary.drive}: {summary.frames_selected}/{summary.frames_total} selected "
        f"({summary.selection_rate:.1%}, budget {summary.budget:.1%}, {summary.strategy})",
        pad=26,
    )
    ax.legend(
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=4,
        frameon=False,
        borderaxespad=0.2,
        fontsize="small",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_timeline(path: Path, rows: Sequence[FrameRow], summary: Summary) -> Path:
    """Score over time with the adaptive threshold and the selections marked."""
    fig = timeline_figure(rows, summary)
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def track_figure(rows: Sequence[FrameRow], summary: Summary) -> Any | None:
    """The ego track coloured by score (``plot_track`` saves it); None without poses.

    The colour scale spans the scores of this drive (a fixed 0-1 scale painted every point
    the same green: real scores often sit within 0.2 of each other); frames without a score
    are grey.
    """
    pts = [r for r in rows if r.x_m is not None and r.y_m is not None]
    if not pts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 7), dpi=110)
    scored = [r for r in pts if r.score is not None and math.isfinite(r.score)]
    unscored = [r for r in pts if r not in scored]
    if unscored:
        ax.scatter(
            [r.x_m for r in unscored],
            [r.y_m for r in unscored],
            s=8,
            c="0.7",
            label="not scored",
        )
    if scored:
        scores = [r.score for r in scored if r.score is not None]
        lo, hi = min(scores), max(scores)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.05, hi + 0.05
        sc = ax.scatter(
            [r.x_m for r in scored],
            [r.y_m for r in scored],
            c=scores,
            s=14,
            cmap="viridis",
            vmin=lo,
            vmax=hi,
        )
        fig.colorbar(sc, ax=ax, label="selection score (range of this drive)", shrink=0.85)
    sel = [r for r in pts if r.selected]
    if sel:
        ax.scatter(
            [r.x_m for r in sel],
            [r.y_m for r in sel],
            s=70,
            facecolors="none",
            edgecolors="red",
            linewidths=1.2,
            label="selected",
        )
    if sel or unscored:
        ax.legend(loc="best")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.set_title(f"{summary.drive}: ego track coloured by score")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_track(path: Path, rows: Sequence[FrameRow], summary: Summary) -> Path | None:
    """The ego track coloured by score, selections marked; None if the drive has no poses."""
    fig = track_figure(rows, summary)
    if fig is None:
        return None
    fig.savefig(path)
    _pyplot().close(fig)
    return path
