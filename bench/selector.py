"""Stream selection: our selector against scikit-activeml's stream budget managers.

Run from the repository root: ``.venv/bin/python -m bench.selector [--frames N]``.

Three synthetic streams of ``--frames`` frames at 10 Hz (default 20,000), each with class
probabilities (10 classes), a 512-d embedding and an ego position:

* ``independent``: every frame drawn independently;
* ``video``: an AR(1) latent scene (sharpness of the class distribution, class logits, the
  embedding) and a smooth path: consecutive frames look alike;
* ``drift``: day to night: the class distribution gets flatter over the drive, so the
  uncertainty distribution shifts upwards all along.

For each stream and each budget (1 %, 5 %, 10 %) the same per-frame utility, the normalised
entropy of the class probabilities, goes to

* ours: :class:`selector.stream.StreamSelector`, which computes that entropy itself from the
  probabilities (``selector.uncertainty``), checks novelty against a diversity memory pre-filled
  with 10,000 selected frames (512-d), and applies the budget (quantile + integral, the
  default budget: no cold start); entropy rather than the default margin, so that every
  method thresholds the same utility;
* ``ours-nv``: the same without a diversity memory (entropy + budget only), to separate what
  the novelty veto costs and what it does to the rate;
* ``skactiveml.stream.budgetmanager`` ``BalancedIncrementalQuantileFilter`` (BIQF) and
  ``VariableUncertaintyBudgetManager`` (VUBM), defaults, one ``query_by_utility`` and one
  ``update`` per frame (their input arrays are built before timing).

Timing is interleaved: the stream is cut in blocks of 500 frames and every method runs each
block in turn (the order rotating), so machine noise hits all of them alike; ratios are of the
summed times. Quality: realised rate vs target over the whole stream and min/max over
1,000-frame windows, and top-b precision (the share of selected frames that are among the
``b = target * n`` most uncertain frames of the whole stream).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from selector.budget import BudgetConfig
from selector.stream import (
    DiversityConfig,
    FrameScores,
    MemoryLayout,
    SelectorConfig,
    StreamSelector,
)
from selector.uncertainty import entropy

DIM = 512
CLASSES = 10
FPS = 10.0
MEMORY = 10_000
BUDGETS = (0.01, 0.05, 0.10)
BLOCK = 500
WINDOW = 1_000

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


@dataclass(frozen=True)
class Stream:
    name: str
    probs: F64
    utility: F64
    times: F64
    positions: F64
    embeddings: F32


def _softmax(z: F64) -> F64:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: F64 = e / e.sum(axis=1, keepdims=True)
    return out


def _ar1(rng: np.random.Generator, n: int, shape: tuple[int, ...], phi: float) -> F64:
    """Stationary AR(1) with unit variance."""
    out = np.empty((n, *shape))
    x = rng.normal(size=shape)
    noise = rng.normal(size=(n, *shape)) * np.sqrt(1.0 - phi * phi)
    for i in range(n):
        x = phi * x + noise[i]
        out[i] = x
    return out


def _path(rng: np.random.Generator, n: int, start: F64, speed_m: float = 1.0) -> F64:
    heading = np.cumsum(rng.normal(0.0, 0.02, n))
    steps = np.stack([np.cos(heading), np.sin(heading), np.zeros(n)], axis=1) * speed_m
    out: F64 = start + np.cumsum(steps, axis=0)
    return out


def make_streams(n: int, seed: int = 0) -> list[Stream]:
    rng = np.random.default_rng(seed)
    times = np.arange(n) / FPS
    start = np.zeros(3)
    streams = []
    # independent frames: iid sharpness, logits, embeddings; positions anywhere in 5 km.
    sharp = np.exp(rng.normal(1.0, 0.6, n))
    probs = _softmax(rng.normal(size=(n, CLASSES)) * sharp[:, None])
    pos = np.concatenate([rng.uniform(-2500, 2500, (n, 2)), np.zeros((n, 1))], axis=1)
    emb = rng.normal(size=(n, DIM)).astype(np.float32)
    streams.append(Stream("independent", probs, entropy(probs), times, pos, emb))
    # video: slow scene latent, correlated logits and embeddings, a smooth path.
    sharp = np.exp(1.0 + 0.6 * _ar1(rng, n, (), 0.995))
    logits = _ar1(rng, n, (CLASSES,), 0.9)
    probs = _softmax(logits * sharp[:, None])
    emb = _ar1(rng, n, (DIM,), 0.98).astype(np.float32)
    streams.append(Stream("video", probs, entropy(probs), times, _path(rng, n, start), emb))
    # drift: day to night, the classifier grows less sure along the drive.
    mean = np.linspace(1.6, 0.2, n)
    sharp = np.exp(mean + 0.5 * _ar1(rng, n, (), 0.99))
    logits = _ar1(rng, n, (CLASSES,), 0.9)
    probs = _softmax(logits * sharp[:, None])
    emb = _ar1(rng, n, (DIM,), 0.98).astype(np.float32)
    streams.append(Stream("drift", probs, entropy(probs), times, _path(rng, n, start), emb))
    return streams


def prefill(sel: StreamSelector, seed: int) -> None:
    """10,000 selected frames from the hours before the stream: along the road that leads to
    the stream's start, one every 2 s, slowly changing embeddings."""
    memory = sel.ensure_memory(MemoryLayout(DIM, position=True, embedding=True))
    rng = np.random.default_rng(seed)
    path = _path(rng, MEMORY, np.zeros(3), speed_m=20.0)
    path = path - path[-1]  # ends where the stream starts
    emb = _ar1(rng, MEMORY, (DIM,), 0.9).astype(np.float32)
    for i in range(MEMORY):
        memory.add(-2.0 * (MEMORY - i), path[i], emb[i])


def frames_of(stream: Stream) -> list[FrameScores]:
    return [
        FrameScores(
            timestamp_s=float(stream.times[i]),
            nbytes=2_000_000,
            camera_probs=stream.probs[i],
            position=(
                float(stream.positions[i, 0]),
                float(stream.positions[i, 1]),
                float(stream.positions[i, 2]),
            ),
            embedding=stream.embeddings[i],
        )
        for i in range(stream.probs.shape[0])
    ]


def our_config(target: float, *, diversity: bool = True) -> SelectorConfig:
    return SelectorConfig(
        budget=BudgetConfig(target_rate=target),
        uncertainty_method="entropy",
        diversity=DiversityConfig(capacity=MEMORY, dim=DIM) if diversity else None,
    )


@dataclass
class Result:
    seconds: float
    selected: NDArray[np.bool_]


def run_one(stream: Stream, frames: list[FrameScores], target: float) -> dict[str, Result]:
    from skactiveml.stream.budgetmanager import (
        BalancedIncrementalQuantileFilter,
        VariableUncertaintyBudgetManager,
    )

    n = len(frames)
    ours = StreamSelector(our_config(target), seed=1)
    prefill(ours, seed=2)
    ours_nv = StreamSelector(our_config(target, diversity=False), seed=1)
    biqf = BalancedIncrementalQuantileFilter(budget=target)
    vubm = VariableUncertaintyBudgetManager(budget=target)
    util_1d = [stream.utility[i : i + 1] for i in range(n)]
    util_2d = [stream.utility[i : i + 1, None] for i in range(n)]
    results = {
        name: Result(0.0, np.zeros(n, dtype=bool)) for name in ("ours", "ours-nv", "BIQF", "VUBM")
    }

    def ours_block(a: int, b: int) -> None:
        sel = results["ours"].selected
        for i in range(a, b):
            f = frames[i]
            d = ours.decide(f)
            ours.update(d, f)
            sel[i] = d.selected

    def ours_nv_block(a: int, b: int) -> None:
        sel = results["ours-nv"].selected
        for i in range(a, b):
            f = frames[i]
            d = ours_nv.decide(f)
            ours_nv.update(d, f)
            sel[i] = d.selected

    def biqf_block(a: int, b: int) -> None:
        sel = results["BIQF"].selected
        for i in range(a, b):
            q = biqf.query_by_utility(util_1d[i])
            biqf.update(util_2d[i], q, utilities=util_1d[i])
            sel[i] = len(q) > 0

    def vubm_block(a: int, b: int) -> None:
        sel = results["VUBM"].selected
        for i in range(a, b):
            q = vubm.query_by_utility(util_1d[i])
            vubm.update(util_2d[i], q)
            sel[i] = len(q) > 0

    runners: list[tuple[str, Callable[[int, int], None]]] = [
        ("ours", ours_block),
        ("ours-nv", ours_nv_block),
        ("BIQF", biqf_block),
        ("VUBM", vubm_block),
    ]
    for k, a in enumerate(range(0, n, BLOCK)):
        b = min(n, a + BLOCK)
        rot = k % len(runners)
        for name, fn in runners[rot:] + runners[:rot]:
            t0 = time.perf_counter()
            fn(a, b)
            results[name].seconds += time.perf_counter() - t0
    # Cost of the novelty query alone, pruned vs the brute-force full pass, on this stream's
    # frames against the final memory (interleaved too).
    memory = ours.memory
    assert memory is not None
    pruned = brute = 0.0
    for i in range(0, n, max(1, n // 60)):
        f = frames[i]
        assert f.position is not None
        assert f.embedding is not None
        assert f.timestamp_s is not None
        t0 = time.perf_counter()
        memory.novelty(f.timestamp_s, f.position, f.embedding)
        t1 = time.perf_counter()
        memory.brute_force_novelty(f.timestamp_s, f.position, f.embedding)
        t2 = time.perf_counter()
        pruned += t1 - t0
        brute += t2 - t1
    queries = len(range(0, n, max(1, n // 60)))
    results["novelty"] = Result(pruned / queries * n, np.zeros(0, dtype=bool))
    results["brute"] = Result(brute / queries * n, np.zeros(0, dtype=bool))
    return results


def quality(
    selected: NDArray[np.bool_], utility: F64, target: float
) -> tuple[float, float, float, float]:
    n = selected.size
    rate = float(selected.mean()) / target
    windows = selected[: n - n % WINDOW].reshape(-1, WINDOW).mean(axis=1) / target
    b = round(target * n)
    top = np.zeros(n, dtype=bool)
    top[np.argsort(-utility, kind="stable")[:b]] = True
    precision = float(top[selected].mean()) if selected.any() else float("nan")
    return rate, float(windows.min()), float(windows.max()), precision


def default_cost(frames: list[FrameScores], target: float) -> dict[str, float]:
    """Microseconds per decision of the default ``SelectorConfig`` (margin, an empty memory
    that fills as it selects) and of the same with entropy, interleaved by blocks."""
    configs = {
        "default (margin)": SelectorConfig(budget=BudgetConfig(target_rate=target)),
        "entropy": SelectorConfig(
            budget=BudgetConfig(target_rate=target), uncertainty_method="entropy"
        ),
    }
    selectors = {k: StreamSelector(c, seed=0) for k, c in configs.items()}
    seconds = dict.fromkeys(configs, 0.0)
    names = list(configs)
    for k, a in enumerate(range(0, len(frames), BLOCK)):
        for name in names[k % 2 :] + names[: k % 2]:
            sel = selectors[name]
            t0 = time.perf_counter()
            for f in frames[a : a + BLOCK]:
                sel.update(sel.decide(f), f)
            seconds[name] += time.perf_counter() - t0
    return {k: v / len(frames) * 1e6 for k, v in seconds.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.selector", description=__doc__)
    parser.add_argument("--frames", type=int, default=20_000, help="frames per stream")
    args = parser.parse_args(argv)
    n = args.frames
    started = time.perf_counter()
    streams = make_streams(n)
    speed_rows = []
    quality_rows = []
    for stream in streams:
        frames = frames_of(stream)
        for target in BUDGETS:
            res = run_one(stream, frames, target)
            us = {k: v.seconds / n * 1e6 for k, v in res.items()}
            speed_rows.append(
                f"{stream.name:<12} {target:>5.0%} {us['ours']:>8.1f} {us['ours-nv']:>8.1f} "
                f"{us['BIQF']:>8.1f} "
                f"{us['VUBM']:>8.1f} {us['BIQF'] / us['ours']:>8.1f}x "
                f"{us['VUBM'] / us['ours']:>8.1f}x {us['novelty']:>9.1f} {us['brute']:>9.1f} "
                f"{us['brute'] / us['novelty']:>7.1f}x"
            )
            for name in ("ours", "ours-nv", "BIQF", "VUBM"):
                rate, lo, hi, prec = quality(res[name].selected, stream.utility, target)
                quality_rows.append(
                    f"{stream.name:<12} {target:>5.0%} {name:<7} {rate:>9.3f} {lo:>7.2f} "
                    f"{hi:>7.2f} {prec:>10.1%}"
                )
    print(f"{n} frames per stream, memory {MEMORY} x {DIM}, blocks of {BLOCK} interleaved\n")
    print("time per decision, microseconds (ours: entropy + novelty veto + budget; decide+update)")
    print(
        "nov.query / nov.brute: one exact (uncapped) novelty query, pruned / full pass, against "
        "the final memory"
    )
    print(
        f"{'stream':<12} {'budget':>5} {'ours':>8} {'ours-nv':>8} {'BIQF':>8} {'VUBM':>8} "
        f"{'BIQF/ours':>9} "
        f"{'VUBM/ours':>9} {'nov.query':>9} {'nov.brute':>9} {'brute/q':>8}"
    )
    print("\n".join(speed_rows))
    print(
        "\nrealised rate / target (overall, min and max over 1,000-frame windows), top-b precision"
    )
    print(
        f"{'stream':<12} {'budget':>5} {'who':<7} {'rate/tgt':>9} {'win.min':>7} "
        f"{'win.max':>7} {'top-b prec':>10}"
    )
    print("\n".join(quality_rows))
    print("\nthe default SelectorConfig (margin) vs the same with entropy, us per decision:")
    for stream in streams:
        cost = default_cost(frames_of(stream), 0.05)
        shown = ", ".join(f"{k} {v:.1f}" for k, v in cost.items())
        ratio = cost["default (margin)"] / cost["entropy"]
        print(f"{stream.name:<12}    5% {shown}; margin / entropy {ratio:.2f}")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
