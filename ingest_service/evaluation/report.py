"""Write an evaluation: a Markdown table per stream, one JSON file, PNG plots.

Files under ``out``: ``evaluation.md``, ``evaluation.json`` and, per stream,
``<stream>-metric.png`` (metric vs labels: the mean over seeds up to the fewest labels any
seed used, a min-max band over the seeds up to the most) and
``<stream>-spend.png`` (selections so far / budget target so far, over the stream).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ingest_service.evaluation.loop import RunResult
from ingest_service.evaluation.metrics import (
    BUDGET_POINTS,
    MeanSd,
    curve_of,
    metric_at,
    run_figures,
    summarize,
)

__all__ = ["COLUMNS", "markdown_table", "slug", "write_report"]

# (figure key, column heading, format): percentages for spend, plain counts for labels.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("labels_used", "labels used", "count"),
    ("spend_vs_target", "spend vs target", "pct"),
    ("final_accuracy", "final accuracy", "metric"),
    ("final_macro_f1", "final macro-F1", "metric"),
    ("stream_mean_accuracy", "mean accuracy over the stream", "metric"),
    ("aulc", "area under {metric}-vs-labels", "metric"),
    ("labels_to_reach", "labels to reach random's final {metric}", "reach"),
    *(
        (f"at_{round(p * 100)}", f"{{metric}} at {round(p * 100)} % of budget", "metric")
        for p in BUDGET_POINTS
    ),
    ("rare_labels", "rare-class labels", "count"),
)


def slug(name: str) -> str:
    """A file-name-safe stream name: ``fashion-mnist/video`` -> ``fashion-mnist-video``."""
    return name.replace("/", "-")


def _cell(ms: MeanSd, kind: str) -> str:
    if ms.mean is None or ms.sd is None:
        return "not reached" if kind == "reach" else "—"
    if kind == "pct":
        text = f"{100 * ms.mean:+.1f} % ± {100 * ms.sd:.1f}"
    elif kind in ("count", "reach"):
        text = f"{ms.mean:.0f} ± {ms.sd:.0f}"
    else:
        text = f"{ms.mean:.3f} ± {ms.sd:.3f}"
    if kind == "reach" and ms.n < ms.of:
        text += f" ({ms.n}/{ms.of} seeds)"
    return text


def markdown_table(table: Mapping[str, Mapping[str, MeanSd]], metric: str) -> str:
    """The table of one stream as Markdown (mean ± sd over seeds)."""
    label = "macro-F1" if metric == "macro_f1" else metric
    heads = ["strategy", *(h.format(metric=label) for _, h, _ in COLUMNS)]
    lines = ["| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
    for name, figs in table.items():
        cells = [name, *(_cell(figs[key], kind) for key, _, kind in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ms_json(ms: MeanSd) -> dict[str, Any]:
    return {"mean": ms.mean, "sd": ms.sd, "n": ms.n, "of": ms.of}


def _plot_stream(out: Path, stream: str, runs: Sequence[RunResult], metric: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r.strategy for r in runs))
    files: list[str] = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        mine = [r for r in runs if r.strategy == name]
        top = max(r.labels_used for r in mine)
        grid = np.arange(mine[0].initial_labels, top + 1)
        curves = np.full((len(mine), grid.shape[0]), np.nan)
        for j, r in enumerate(mine):
            c = curve_of(r, metric)
            for k, count in enumerate(grid):
                if count <= r.labels_used:
                    curves[j, k] = metric_at(c, float(count))
        # the mean where every seed has the label count, the band where any has it
        mean = curves.mean(axis=0)  # NaN where a seed has fewer labels
        (line,) = ax.plot(grid, mean, label=name, lw=1.4)
        ax.fill_between(
            grid,
            np.nanmin(curves, axis=0),
            np.nanmax(curves, axis=0),
            color=line.get_color(),
            alpha=0.18,
        )
    ax.set_xlabel("labels")
    ax.set_ylabel(f"holdout {metric}")
    ax.set_title(f"{stream}: {metric} vs labels (mean, min-max over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    path = out / f"{slug(stream)}-metric.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path.name)

    fig, ax = plt.subplots(figsize=(7, 4.0))
    for name in names:
        mine = [r for r in runs if r.strategy == name]
        ratios = []
        for r in mine:
            frames = np.arange(1, r.frames + 1)
            ratios.append(np.cumsum(r.selected) / (r.budget * frames))
        ax.plot(np.arange(1, mine[0].frames + 1), np.mean(ratios, axis=0), label=name, lw=1.2)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_ylim(0.0, 2.0)
    ax.set_xlabel("frame")
    ax.set_ylabel("selections so far / budget so far")
    ax.set_title(f"{stream}: spend over the stream (mean over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    path = out / f"{slug(stream)}-spend.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path.name)
    return files


def write_report(
    out: Path, runs: Sequence[RunResult], *, metric: str, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``evaluation.md``, ``evaluation.json`` and the plots; return the JSON document."""
    out.mkdir(parents=True, exist_ok=True)
    streams = list(dict.fromkeys(r.stream for r in runs))
    doc: dict[str, Any] = {"settings": dict(settings), "metric": metric, "streams": {}}
    md = [
        "# Closed-loop evaluation",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
        "",
    ]
    for stream in streams:
        mine = [r for r in runs if r.stream == stream]
        table = summarize(mine, metric=metric)
        files = _plot_stream(out, stream, mine, metric)
        base = table.get("random", {}).get("final_" + metric)
        target = None if base is None else base.mean
        doc["streams"][stream] = {
            "table": {s: {k: _ms_json(v) for k, v in figs.items()} for s, figs in table.items()},
            "plots": files,
            "runs": [
                {
                    "strategy": r.strategy,
                    "seed": r.seed,
                    "seconds": r.seconds,
                    "figures": run_figures(r, metric=metric, target=target),
                    "checkpoints": [
                        [c.frame, c.labels, c.accuracy, c.macro_f1] for c in r.checkpoints
                    ],
                    "selected_frames": np.flatnonzero(r.selected).tolist(),
                }
                for r in mine
            ],
        }
        md += [f"## {stream}", "", markdown_table(table, metric), ""]
        md += [f"![{stream} metric]({files[0]})", f"![{stream} spend]({files[1]})", ""]
    (out / "evaluation.md").write_text("\n".join(md), encoding="utf-8")
    (out / "evaluation.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return doc
