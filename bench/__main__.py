"""Run every benchmark in turn: ``python -m bench [NAME ...]``.

Each benchmark prints ratios measured side by side in one run; absolute times on a shared,
noisy machine mean little on their own. What a benchmark prints is also written to
``bench/results/<name>.txt`` (with the date and the commit), where the README's figures come
from.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

RESULTS = Path(__file__).resolve().parent / "results"

BENCHMARKS = (
    "selector",
    "codec",
    "inference",
    "pipeline",
    "kafka_transport",
    "ingest",
    "evaluation",
    "retrain",
)


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        start = time.perf_counter()
        with (RESULTS / f"{name}.txt").open("w", encoding="utf-8") as out:
            out.write(f"# bench.{name}, {_stamp()}\n")
            with contextlib.redirect_stdout(_Tee(sys.stdout, out)):
                module = importlib.import_module(f"bench.{name}")
                rc = int(module.main([]) or 0)
        print(f"=== bench.{name}: {time.perf_counter() - start:.1f} s, exit {rc} ===", flush=True)
        if rc:
            return rc
    return 0


class _Tee:
    """A text stream writing to two."""

    def __init__(self, first: TextIO, second: TextIO) -> None:
        self.streams = (first, second)

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def _stamp() -> str:
    """The date and the commit the figures were measured at."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        commit = ""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{when}, commit {commit or 'unknown'}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
