"""``fleetal-evaluate``: selection strategies in a closed loop on labeled streams, side by side.

Example (the issue's set-up, Fashion-MNIST at 5 %)::

    fleetal-evaluate --stream fashion-mnist --budget 0.05 --seeds 3 --frames 5000 \\
        --holdout 2000 --strategies random,ours,ours-nodiv,skactiveml-random,\\
    skactiveml-varunc,skactiveml-split --out bench/results/evaluation/

``--stream`` takes a comma-separated list of ``SOURCE`` (iid) or ``SOURCE/KIND``, e.g.
``fashion-mnist/video,fashion-mnist/rare_late,fashion-mnist/day_night`` (see
:mod:`ingest_service.evaluation.streams`). ``random`` (our RandomSelector) is always run.
Exit codes: 0 ok, 2 bad usage or missing data.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ingest_service.evaluation.learners import LEARNERS, make_learner
from ingest_service.evaluation.loop import LoopConfig, RunResult, run_loop
from ingest_service.evaluation.metrics import METRICS
from ingest_service.evaluation.report import write_report
from ingest_service.evaluation.strategies import STRATEGIES, make_strategy
from ingest_service.evaluation.streams import (
    SOURCES,
    STREAM_KINDS,
    StreamError,
    StreamSpec,
    build_stream,
)

__all__ = ["main", "parse_streams", "run_evaluation"]

DEFAULT_STRATEGIES = (
    "random",
    "ours",
    "ours-nodiv",
    "skactiveml-random",
    "skactiveml-varunc",
    "skactiveml-split",
)


def parse_streams(text: str, **spec: Any) -> list[StreamSpec]:
    """``"fashion-mnist,fashion-mnist/video"`` -> stream specs (``spec``: the other fields)."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        source, _, kind = item.partition("/")
        out.append(StreamSpec(source=source, kind=kind or "iid", **spec))
    if not out:
        raise StreamError("--stream names no stream")
    return out


def strategy_names(text: str) -> list[str]:
    """The strategies asked for, ``random`` first whether asked for or not."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(names) - set(STRATEGIES))
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {sorted(STRATEGIES)}")
    return ["random", *dict.fromkeys(n for n in names if n != "random")]


def run_evaluation(
    specs: Sequence[StreamSpec],
    strategies: Sequence[str],
    *,
    budget: float,
    seeds: int,
    loop: LoopConfig,
    learner: str = "logreg",
    progress: Callable[[int], object] | None = None,
) -> list[RunResult]:
    """Every (stream, seed, strategy) in that order; the stream of a seed is built once."""
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"budget must be in (0, 1], got {budget!r}")
    runs = []
    for spec in specs:
        for seed in range(seeds):
            stream = build_stream(spec, seed)
            for name in strategies:
                strategy = make_strategy(name, budget, seed, stream.dim)
                model = make_learner(learner, stream.classes, seed)
                runs.append(
                    run_loop(
                        stream, strategy, model, loop, seed=seed, budget=budget, progress=progress
                    )
                )
    return runs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fleetal-evaluate",
        description="Run selection strategies in a closed loop (label when selected, refit every "
        "N labels, score the following frames with the refitted model) and write a table, "
        "JSON and plots.",
    )
    kinds = ", ".join(STREAM_KINDS)
    p.add_argument(
        "--stream",
        default="fashion-mnist",
        help=f"comma-separated SOURCE[/KIND]; sources {', '.join(SOURCES)}; kinds {kinds} "
        "(default: fashion-mnist, iid)",
    )
    p.add_argument("--budget", type=float, default=0.05, help="label budget, share of frames")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--holdout", type=int, default=2000)
    p.add_argument("--initial", type=int, default=10, help="warm-start labels")
    p.add_argument(
        "--features",
        choices=["raw", "pca"],
        default="raw",
        help="raw pixels (default) or PCA components fit on a disjoint unlabeled pool",
    )
    p.add_argument("--pca-dim", type=int, default=50)
    p.add_argument("--refit-labels", type=int, default=5, help="refit every N new labels")
    p.add_argument("--refit-frames", type=int, default=None, help="also refit every T frames")
    p.add_argument(
        "--strategies", default=",".join(DEFAULT_STRATEGIES), help=f"of {sorted(STRATEGIES)}"
    )
    p.add_argument("--learner", choices=sorted(LEARNERS), default="logreg")
    p.add_argument("--metric", choices=METRICS, default="accuracy", help="metric of the curves")
    p.add_argument("--out", type=Path, default=Path("bench/results/evaluation"))
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fleetal-evaluate``."""
    args = _parser().parse_args(argv)
    try:
        specs = parse_streams(
            args.stream,
            frames=args.frames,
            holdout=args.holdout,
            initial=args.initial,
            features=args.features,
            pca_dim=args.pca_dim,
        )
        names = strategy_names(args.strategies)
        loop = LoopConfig(
            refit_every_labels=args.refit_labels, refit_every_frames=args.refit_frames
        )
        if args.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    except (StreamError, ValueError) as exc:
        print(f"fleetal-evaluate: {exc}", file=sys.stderr)
        return 2
    # threadpoolctl limits only the thread pools of libraries already loaded: load
    # scikit-learn's (its OpenMP runtime, scipy's BLAS) before entering the limit.
    import sklearn.decomposition
    import sklearn.linear_model
    import sklearn.metrics  # noqa: F401
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    from tqdm import tqdm

    if args.learner == "torch":
        import torch

        torch.set_num_threads(1)  # the same one-core rule for torch's own pool

    total = len(specs) * args.seeds * len(names) * args.frames
    start = time.perf_counter()
    with (
        threadpool_limits(limits=1),
        tqdm(total=total, unit="frame", disable=args.no_progress, desc="evaluate") as bar,
    ):
        try:
            runs = run_evaluation(
                specs,
                names,
                budget=args.budget,
                seeds=args.seeds,
                loop=loop,
                learner=args.learner,
                progress=lambda n: bar.update(n),
            )
        except (StreamError, ValueError) as exc:
            print(f"fleetal-evaluate: {exc}", file=sys.stderr)
            return 2
    seconds = time.perf_counter() - start
    settings = {
        "streams": ",".join(s.name for s in specs),
        "budget": args.budget,
        "seeds": args.seeds,
        "frames": args.frames,
        "holdout": args.holdout,
        "initial": args.initial,
        "features": args.features if args.features == "raw" else f"pca{args.pca_dim}",
        "refit_labels": args.refit_labels,
        "refit_frames": args.refit_frames,
        "learner": args.learner,
        "seconds": round(seconds, 1),
    }
    write_report(args.out, runs, metric=args.metric, settings=settings)
    print((args.out / "evaluation.md").read_text(encoding="utf-8"))
    print(f"wrote {args.out}/evaluation.md, evaluation.json and plots in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
