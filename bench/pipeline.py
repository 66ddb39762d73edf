"""Whole edge pipeline vs bare onnxruntime inference, on the same real frames.

``python -m bench.pipeline [--frames N] [--rounds R]``. On the demo drive (KITTI raw layout,
assembled from the bundled real data by ``deploy/demo/build_drive.py``) with the reference
models in ``models/``, three ways, interleaved round by round (the machine is shared and noisy:
compare the ratios, not the absolute numbers):

* ``bare``: camera + LiDAR ``score()`` of frames already in memory (preprocessing + ORT);
* ``pipeline``: ``Pipeline.process`` of the same in-memory frames: gate, inference, selector,
  encoder (selected frames JPEG/PNG as recorded + point-cloud codec), no spool;
* ``replay``: ``edge-agent replay`` from disk: reading and decoding PNGs and sweeps too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from deploy.demo.build_drive import build as build_drive
from edge_agent.agent import build_pipeline
from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.frame import Frame
from edge_agent.replay import replay
from edge_agent.sources import open_source

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "deploy" / "demo" / "agent.toml"


def _load_frames(drive: Path) -> list[Frame]:
    src = open_source(drive, vehicle_id="bench")
    try:
        return [f for f in src.frames() if isinstance(f, Frame)]
    finally:
        src.close()


def _bare(cfg: AgentConfig, frames: list[Frame]) -> float:
    parts = build_pipeline(cfg, registry=CollectorRegistry(), spool=None)
    cam, lid = parts.pipeline.scorer.camera, parts.pipeline.scorer.lidar
    start = time.perf_counter()
    for f in frames:
        if cam is not None and f.cameras:
            cam.score(f.cameras[0].image)
        if lid is not None and f.lidar is not None:
            lid.score(f.lidar.points)
    return time.perf_counter() - start


def _pipeline(cfg: AgentConfig, frames: list[Frame]) -> float:
    parts = build_pipeline(cfg, registry=CollectorRegistry(), spool=None)
    start = time.perf_counter()
    for f in frames:
        parts.pipeline.process(f)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=108)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if not (ROOT / "models" / "camera.onnx").is_file():
        print("models/ is empty: `make models` trains the reference models", file=sys.stderr)
        return 1
    import os

    os.chdir(ROOT)  # the demo config names models/ relative to the repo
    cfg = load_agent_config(CONFIG)
    with tempfile.TemporaryDirectory(prefix="fleetal-bench-") as tmp:
        drive = build_drive(Path(tmp), frames=args.frames)
        frames = _load_frames(drive)
        n = len(frames)
        times: dict[str, list[float]] = {"bare": [], "pipeline": [], "replay": []}
        for _ in range(args.rounds):
            times["bare"].append(_bare(cfg, frames))
            times["pipeline"].append(_pipeline(cfg, frames))
            t0 = time.perf_counter()
            replay(drive, cfg)
            times["replay"].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{n} frames of the demo drive (camera 1242x375 + sweep ~100k points), "
        f"{args.rounds} interleaved rounds, median"
    )
    print(f"{'path':<10} {'frames/s':>9} {'ms/frame':>9} {'vs bare':>8}")
    for k in ("bare", "pipeline", "replay"):
        fps = n / med[k]
        print(f"{k:<10} {fps:9.1f} {1000 * med[k] / n:9.1f} {med['bare'] / med[k]:8.2f}")
    print("vs bare = bare inference time / this path's time (1.0: the pipeline adds nothing)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
