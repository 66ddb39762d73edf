"""Run every benchmark in turn: ``python -m bench [NAME ...]``.

Each benchmark prints ratios measured side by side in one run; absolute times on a shared,
noisy machine mean little on their own.
"""

from __future__ import annotations

import importlib
import sys
import time

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
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        start = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        rc = int(module.main([]) or 0)
        print(f"=== bench.{name}: {time.perf_counter() - start:.1f} s, exit {rc} ===", flush=True)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
