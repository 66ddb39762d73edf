"""Synthetic frame streams shared by the selector tests."""

from __future__ import annotations

import numpy as np

from selector.stream import FrameScores


def video_stream(
    n: int,
    *,
    seed: int = 0,
    dim: int = 16,
    classes: int = 5,
    fps: float = 10.0,
    stop_every: int = 400,
) -> list[FrameScores]:
    """A drive: AR(1) embeddings, a car that stops now and then, Dirichlet class probs."""
    rng = np.random.default_rng(seed)
    frames = []
    z = rng.normal(size=dim)
    xy = np.zeros(2)
    heading = 0.0
    for i in range(n):
        stopped = (i // stop_every) % 3 == 2
        if not stopped:
            heading += rng.normal(0.0, 0.05)
            xy = xy + 1.5 * np.array([np.cos(heading), np.sin(heading)])
            z = 0.95 * z + 0.3 * rng.normal(size=dim)
        concentration = rng.uniform(0.1, 3.0)
        frames.append(
            FrameScores(
                timestamp_s=i / fps,
                nbytes=int(rng.integers(1_000, 5_000)),
                camera_probs=rng.dirichlet(np.full(classes, concentration)),
                lidar_probs=rng.dirichlet(np.full(classes, concentration)),
                position=(float(xy[0]), float(xy[1]), 0.0),
                embedding=(z + 0.05 * rng.normal(size=dim)).astype(np.float32),
            )
        )
    return frames
