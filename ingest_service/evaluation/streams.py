"""Labeled streams for the closed loop: features, labels, a clock and a track, plus a holdout.

Sources of images (values in [0, 1]):

* ``fashion-mnist``: the Debian package ``dataset-fashion-mnist`` (IDX files under
  ``/usr/share/datasets/fashion-mnist/``, read here with numpy). Stream, warm-start labels and
  the PCA pool come from disjoint parts of the 60,000 training images; the holdout from the
  10,000 test images.
* ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, no download): fast, for tests.

Kinds of stream built from a source (``STREAM_KINDS``):

* ``iid``: images in random order;
* ``video``: each drawn image repeated as ``video_repeat`` consecutive near-duplicate frames
  (shifted by up to one pixel, light pixel noise), as 10 Hz video of a slowly changing scene;
* ``rare_late``: two classes (drawn by the seed) absent from the first half of the stream, then
  each at ``rare_rate`` of the frames; the holdout keeps every class at its natural share;
* ``day_night``: brightness falls to 35 % and pixel noise rises to sd 0.15 along the stream;
  holdout images get a shift level drawn uniformly over the same range.

Every stream of a seed is the same for every strategy; the holdout is fixed and never trained
on; the warm-start labels come from neither. Frames carry a timestamp (10 Hz) and a position on
a synthetic track (a circle of 1 km radius at 10 m/s), so the diversity memory can run.

Features: ``raw`` (pixels, the default) or ``pca`` (``pca_dim`` components fit on a disjoint
pool of unlabeled images, never the holdout). PCA-50 runs the loop about 3.6 times faster on
Fashion-MNIST but costs logistic regression 2-4 points of accuracy and changes the ranking of
strategies (docs/evaluation.md), so raw pixels are the default.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "FASHION_MNIST_DIR",
    "SOURCES",
    "STREAM_KINDS",
    "LabeledStream",
    "StreamSpec",
    "build_stream",
    "load_source",
    "read_idx",
]

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SOURCES: tuple[str, ...] = ("fashion-mnist", "digits")
STREAM_KINDS: tuple[str, ...] = ("iid", "video", "rare_late", "day_night")
FPS = 10.0
TRACK_RADIUS_M = 1000.0
SPEED_M_S = 10.0
_PCA_POOL = 5000
_NIGHT_BRIGHTNESS = 0.35
_NIGHT_NOISE = 0.15

Features = Literal["raw", "pca"]


class StreamError(ValueError):
    """A stream cannot be built as asked (missing data, too few images, a bad parameter)."""


@dataclass(frozen=True, slots=True)
class LabeledStream:
    """One labeled stream of a seed: what the loop replays and what it scores on."""

    name: str
    features: F32  # (n, d), frames in stream order
    labels: I64  # (n,)
    timestamps_s: F64  # (n,)
    positions: F64  # (n, 2), metres
    holdout_features: F32  # (h, d), never trained on
    holdout_labels: I64
    initial_features: F32  # (i, d), the warm-start labels
    initial_labels: I64
    classes: int
    rare_classes: tuple[int, ...] = ()

    @property
    def frames(self) -> int:
        """Frames in the stream."""
        return int(self.labels.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return int(self.features.shape[1])


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """How to build a stream; validated on construction."""

    source: str = "fashion-mnist"
    kind: str = "iid"
    frames: int = 5000
    holdout: int = 2000
    initial: int = 10
    features: Features = "raw"
    pca_dim: int = 50
    video_repeat: int = 10
    rare_rate: float = 0.02

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise StreamError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.kind not in STREAM_KINDS:
            raise StreamError(f"stream kind must be one of {STREAM_KINDS}, got {self.kind!r}")
        for name in ("frames", "holdout", "initial", "pca_dim", "video_repeat"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise StreamError(f"{name} must be an int >= 1, got {value!r}")
        if self.features not in ("raw", "pca"):
            raise StreamError(f"features must be 'raw' or 'pca', got {self.features!r}")
        if not 0.0 < self.rare_rate < 0.5:
            raise StreamError(f"rare_rate must be in (0, 0.5), got {self.rare_rate!r}")

    @property
    def name(self) -> str:
        """``source`` for iid, else ``source/kind``."""
        return self.source if self.kind == "iid" else f"{self.source}/{self.kind}"


# -- sources ---------------------------------------------------------------------------------
def read_idx(path: Path) -> NDArray[np.uint8]:
    """An IDX file (``.gz`` or plain) of unsigned bytes as an array of its shape."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise StreamError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) - header != math.prod(shape):
        raise StreamError(f"{path}: IDX size does not match its shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


@lru_cache(maxsize=4)
def load_source(source: str) -> tuple[F32, I64, F32, I64]:
    """``(train_images, train_labels, test_images, test_labels)``, images ``(n, h, w)`` in [0, 1].

    ``digits`` has no test split: its "train" and "test" are the same 1,797 images, and
    :func:`build_stream` keeps its holdout disjoint from everything else.
    """
    if source == "fashion-mnist":
        files = {
            "train_x": "train-images-idx3-ubyte.gz",
            "train_y": "train-labels-idx1-ubyte.gz",
            "test_x": "t10k-images-idx3-ubyte.gz",
            "test_y": "t10k-labels-idx1-ubyte.gz",
        }
        paths = {k: FASHION_MNIST_DIR / v for k, v in files.items()}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise StreamError(
                f"Fashion-MNIST not found ({', '.join(missing)}): install the Debian package "
                "dataset-fashion-mnist (`make system-deps`, or apt-get install "
                "dataset-fashion-mnist)"
            )
        tx = read_idx(paths["train_x"]).astype(np.float32) / 255.0
        ty = read_idx(paths["train_y"]).astype(np.int64)
        vx = read_idx(paths["test_x"]).astype(np.float32) / 255.0
        vy = read_idx(paths["test_y"]).astype(np.int64)
        return tx, ty, vx, vy
    if source == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (np.asarray(bunch.images, dtype=np.float32) / 16.0).astype(np.float32)
        y = np.asarray(bunch.target, dtype=np.int64)
        return x, y, x, y
    raise StreamError(f"source must be one of {SOURCES}, got {source!r}")


# -- building ----------------------------------------------------------------------------------
def _track(n: int) -> tuple[F64, F64]:
    t = np.arange(n, dtype=np.float64) / FPS
    theta = SPEED_M_S * t / TRACK_RADIUS_M
    pos = np.stack([TRACK_RADIUS_M * np.cos(theta), TRACK_RADIUS_M * np.sin(theta)], axis=1)
    return t, pos


def _jitter(rng: np.random.Generator, image: F32, copies: int) -> F32:
    """``copies`` near-duplicates of ``image``: shifted by up to a pixel, noise sd 0.03."""
    out = np.empty((copies, *image.shape), dtype=np.float32)
    for j in range(copies):
        dy, dx = (int(v) for v in rng.integers(-1, 2, size=2))
        shifted = np.roll(np.roll(image, dy, axis=0), dx, axis=1)
        noisy = shifted + rng.normal(0.0, 0.03, size=image.shape)
        out[j] = np.clip(noisy, 0.0, 1.0)
    return out


def _night(rng: np.random.Generator, images: F32, level: F64) -> F32:
    """Darken and add noise; ``level`` per image in [0, 1] (0 day, 1 night)."""
    scale = (1.0 - (1.0 - _NIGHT_BRIGHTNESS) * level)[:, None, None]
    noise = rng.normal(0.0, 1.0, size=images.shape) * (_NIGHT_NOISE * level)[:, None, None]
    out: F32 = np.clip(images * scale + noise, 0.0, 1.0).astype(np.float32)
    return out


def _take(pool: I64, count: int, what: str, source: str) -> tuple[I64, I64]:
    if count > pool.shape[0]:
        raise StreamError(
            f"{source}: {what} needs {count} images, only {pool.shape[0]} left; ask for fewer"
        )
    return pool[:count], pool[count:]


def _class_sequence(rng: np.random.Generator, spec: StreamSpec, classes: int) -> tuple[I64, I64]:
    """Class of each frame for ``rare_late``, and the rare classes."""
    rare = np.sort(rng.choice(classes, size=2, replace=False)).astype(np.int64)
    common = np.setdiff1d(np.arange(classes), rare)
    n = spec.frames
    half = n // 2
    first = rng.choice(common, size=half)
    p = np.full(classes, (1.0 - 2 * spec.rare_rate) / common.shape[0])
    p[rare] = spec.rare_rate
    second = rng.choice(classes, size=n - half, p=p)
    return np.concatenate([first, second]).astype(np.int64), rare


def build_stream(spec: StreamSpec, seed: int) -> LabeledStream:
    """The stream of ``spec`` for ``seed`` (deterministic: same seed, same stream)."""
    train_x, train_y, test_x, test_y = load_source(spec.source)
    rng = np.random.default_rng([seed, STREAM_KINDS.index(spec.kind)])
    classes = int(max(train_y.max(), test_y.max())) + 1
    order = rng.permutation(train_y.shape[0]).astype(np.int64)
    if spec.source == "digits":  # one pool: the holdout comes off it first
        hold_idx, order = _take(order, spec.holdout, "the holdout", spec.source)
        hold_x, hold_y = train_x[hold_idx], train_y[hold_idx]
    else:
        hold_idx = rng.permutation(test_y.shape[0])[: spec.holdout].astype(np.int64)
        if hold_idx.shape[0] < spec.holdout:
            raise StreamError(f"{spec.source}: holdout of {spec.holdout} > {test_y.shape[0]}")
        hold_x, hold_y = test_x[hold_idx], test_y[hold_idx]
    pool_idx: I64 = np.empty(0, dtype=np.int64)
    if spec.features == "pca":
        pool_idx, order = _take(
            order, min(_PCA_POOL, order.shape[0] // 3), "the PCA pool", spec.source
        )

    rare: tuple[int, ...] = ()
    if spec.kind == "rare_late":
        seq, rare_arr = _class_sequence(rng, spec, classes)
        rare = tuple(int(c) for c in rare_arr)
        common_mask = ~np.isin(train_y[order], rare_arr)
        init_pool = order[common_mask]
        init_idx, _ = _take(init_pool, spec.initial, "the warm-start labels", spec.source)
        order = order[~np.isin(order, init_idx)]
        by_class = {c: order[train_y[order] == c] for c in range(classes)}
        need = np.bincount(seq, minlength=classes)
        for c in range(classes):
            if need[c] > by_class[c].shape[0]:
                raise StreamError(f"{spec.source}: class {c} has too few images for the stream")
        cursor = dict.fromkeys(range(classes), 0)
        stream_idx = np.empty(spec.frames, dtype=np.int64)
        for i, c in enumerate(seq.tolist()):
            stream_idx[i] = by_class[c][cursor[c]]
            cursor[c] += 1
        images = train_x[stream_idx]
    else:
        init_idx, order = _take(order, spec.initial, "the warm-start labels", spec.source)
        distinct = (
            math.ceil(spec.frames / spec.video_repeat) if spec.kind == "video" else spec.frames
        )
        stream_idx, _ = _take(order, distinct, "the stream", spec.source)
        if spec.kind == "video":
            clips = [_jitter(rng, train_x[i], spec.video_repeat) for i in stream_idx.tolist()]
            images = np.concatenate(clips)[: spec.frames]
            stream_idx = np.repeat(stream_idx, spec.video_repeat)[: spec.frames]
        else:
            images = train_x[stream_idx]
    labels = train_y[stream_idx].astype(np.int64)
    init_x = train_x[init_idx]
    if spec.kind == "day_night":
        images = _night(rng, images, np.linspace(0.0, 1.0, spec.frames))
        hold_x = _night(rng, hold_x, np.asarray(rng.uniform(0.0, 1.0, size=hold_x.shape[0])))

    def flat(a: F32) -> F32:
        return a.reshape(a.shape[0], -1).astype(np.float32)

    feats, hold_f, init_f = flat(images), flat(hold_x), flat(init_x)
    if spec.features == "pca":
        from sklearn.decomposition import PCA

        dim = min(spec.pca_dim, feats.shape[1], pool_idx.shape[0])
        pca = PCA(n_components=dim, random_state=seed).fit(flat(train_x[pool_idx]))
        feats, hold_f, init_f = (
            pca.transform(a).astype(np.float32) for a in (feats, hold_f, init_f)
        )
    times, positions = _track(spec.frames)
    return LabeledStream(
        name=spec.name,
        features=np.ascontiguousarray(feats),
        labels=labels,
        timestamps_s=times,
        positions=positions,
        holdout_features=np.ascontiguousarray(hold_f),
        holdout_labels=hold_y.astype(np.int64),
        initial_features=np.ascontiguousarray(init_f),
        initial_labels=train_y[init_idx].astype(np.int64),
        classes=classes,
        rare_classes=rare,
    )
