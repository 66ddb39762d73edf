"""Per-frame inference time of the reference models on real frames, 1 vs 2 intra-op threads.

``python -m bench.inference [--models models/] [--rounds 5]``

The camera model scores the nine real images in ``data/`` (six nuScenes cameras, three
KITTI frames), the LiDAR model the six real sweeps (nuScenes, three KITTI, two Argoverse
2), with onnxruntime's CPU provider. Sessions with 1 and 2 intra-op threads are timed
in interleaved rounds in one run; the ratio is what to read, absolute milliseconds on a
shared machine mean little. Preprocessing (resize / crop + subsample) is timed apart.
If the models directory lacks the reference models, tiny ``--quick`` ones are built in a
temporary directory and the numbers are labelled as such.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from edge_agent.models import RunnerConfig, load_model
from edge_agent.models.preprocess import prepare_image, prepare_points
from edge_agent.models.runner import CameraModel, LidarModel

DATA = Path(__file__).resolve().parents[1] / "data"
FIELDS = ("x", "y", "z", "intensity")


def _images() -> list[NDArray[np.uint8]]:
    paths = sorted((DATA / "nuscenes_sample").glob("*.jpg"))
    paths += sorted((DATA / "kitti_object/training/image_2").glob("*.png"))
    images = []
    for path in paths:
        with Image.open(path) as img:
            images.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
    return images


def _sweeps() -> list[NDArray[np.float32]]:
    import pyarrow.feather as feather

    sweeps = [
        np.fromfile(p, np.float32).reshape(-1, 5)[:, :4]
        for p in (DATA / "nuscenes_sample").glob("*.pcd.bin")
    ]
    sweeps += [
        np.fromfile(p, np.float32).reshape(-1, 4)
        for p in sorted((DATA / "kitti_object/training/velodyne").glob("*.bin"))
    ]
    for path in sorted(DATA.glob("av2_sensor/*/sensors/lidar/*.feather")):
        table = feather.read_table(path)
        sweeps.append(
            np.stack([table.column(c).to_numpy().astype(np.float32) for c in FIELDS], axis=1)
        )
    return [np.ascontiguousarray(s) for s in sweeps]


def _median_ms(fn: Callable[[Any], object], frames: Sequence[Any]) -> float:
    times = []
    for frame in frames:
        start = time.perf_counter()
        fn(frame)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _models_dir(requested: Path, scratch: Path) -> tuple[Path, str]:
    if (requested / "camera.onnx").is_file() and (requested / "lidar.onnx").is_file():
        return requested, "reference"
    from ingest_service.training.reference.train import build_reference_models

    print(f"{requested} has no reference models; building --quick ones (tiny, not representative)")
    build_reference_models(scratch, DATA, quick=True)
    return scratch, "quick"


def _score(model: CameraModel | LidarModel, frame: Any) -> object:
    if isinstance(model, CameraModel):
        return model.score(frame)
    return model.score(frame, FIELDS)


def _prepare(model: CameraModel | LidarModel, frame: Any) -> object:
    if isinstance(model, CameraModel):
        return prepare_image(frame, model.metadata)
    return prepare_points(frame, model.metadata, FIELDS)


def _bench(path: Path, frames: Sequence[Any], rounds: int) -> tuple[str, float, float, float]:
    """(version, preprocessing ms, score ms with 1 thread, score ms with 2 threads)."""
    models = {
        t: load_model(path, config=RunnerConfig(providers=("cpu",), intra_op_threads=t))
        for t in (1, 2)
    }
    for model in models.values():  # warm-up: the first runs allocate
        _score(model, frames[0])
    samples: dict[int, list[float]] = {1: [], 2: []}
    prep: list[float] = []
    for _ in range(rounds):  # interleaved, so both see the same machine load
        for threads, model in models.items():
            samples[threads].append(_median_ms(partial(_score, model), frames))
        prep.append(_median_ms(partial(_prepare, models[1]), frames))
    med = statistics.median
    return models[1].metadata.version, med(prep), med(samples[1]), med(samples[2])


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        models, label = _models_dir(args.models, Path(scratch))
        frames: dict[str, Sequence[Any]] = {"camera": _images(), "lidar": _sweeps()}
        rows = [
            (kind, len(f), *_bench(models / f"{kind}.onnx", f, args.rounds))
            for kind, f in frames.items()
        ]
    print(f"\nper-frame time, onnxruntime CPU, {label} models, median of {args.rounds} rounds")
    header = ("model", "version", "frames", "prep ms", "1 thr ms", "2 thr ms", "2/1")
    print("{:8} {:24} {:>6} {:>8} {:>9} {:>9} {:>6}".format(*header))
    for kind, n, version, prep, one, two in rows:
        print(f"{kind:8} {version:24} {n:6d} {prep:8.2f} {one:9.2f} {two:9.2f} {two / one:6.2f}")
    print("score = preprocessing + inference; 2/1 < 1 means the second thread helps")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
