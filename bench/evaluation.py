"""Closed-loop evaluation: every strategy on Fashion-MNIST iid and the driving-like streams.

Run from the repository root: ``.venv/bin/python -m bench.evaluation [--seeds N] [--frames N]``
(``make bench`` runs it with the defaults). It is ``fleetal-evaluate`` (see
docs/evaluation.md) on ``fashion-mnist``, ``fashion-mnist/video``, ``fashion-mnist/rare_late``
and ``fashion-mnist/day_night`` at a 5 % budget, 5,000 frames, a 2,000-frame holdout, 10
warm-start labels, raw pixels, logistic regression refit every 5 labels, 3 seeds, with every
strategy (about 18 minutes on one core); it writes ``evaluation.md``, ``evaluation.json`` and
the plots under ``bench/results/evaluation/``. Then the same loop with the torch learner
(a small CNN fine-tuned at every refit, ``--learner torch``) on Fashion-MNIST iid with random,
ours and the two scikit-activeml peers that won there (about 11 minutes), under
``bench/results/evaluation-torch/``; ``--no-torch`` skips it.
Needs the Debian package ``dataset-fashion-mnist`` (``make setup`` installs it).
"""

from __future__ import annotations

import argparse

from ingest_service.evaluation.cli import main as evaluate
from ingest_service.evaluation.strategies import STRATEGIES

STREAMS = "fashion-mnist,fashion-mnist/video,fashion-mnist/rare_late,fashion-mnist/day_night"
TORCH_STRATEGIES = "random,ours,ours-nodiv,skactiveml-varunc,skactiveml-split"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.evaluation", description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--features", choices=["raw", "pca"], default="raw")
    parser.add_argument("--out", default="bench/results/evaluation")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch-learner run")
    args = parser.parse_args(argv)
    rc = evaluate(
        [
            "--stream", STREAMS,
            "--budget", "0.05",
            "--seeds", str(args.seeds),
            "--frames", str(args.frames),
            "--holdout", "2000",
            "--features", args.features,
            "--strategies", ",".join(STRATEGIES),
            "--out", args.out,
        ]
    )  # fmt: skip
    if rc or args.no_torch:
        return rc
    return evaluate(
        [
            "--stream", "fashion-mnist",
            "--budget", "0.05",
            "--seeds", str(args.seeds),
            "--frames", str(args.frames),
            "--holdout", "2000",
            "--features", args.features,
            "--learner", "torch",
            "--strategies", TORCH_STRATEGIES,
            "--out", f"{args.out}-torch",
        ]
    )  # fmt: skip


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
