"""Turn a decoded camera image or LiDAR sweep into the tensor a model takes.

Pure functions of (array, metadata): no state, no clock, deterministic. Inputs are never
modified (the frame's arrays are read-only).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from edge_agent.models.errors import ModelInputError
from edge_agent.models.metadata import LIDAR_FIELDS, ModelMetadata

__all__ = ["DEFAULT_POINT_SEED", "prepare_image", "prepare_points", "select_points"]

#: Seed of the generator that subsamples a sweep; fixed so a sweep always maps to the same
#: points (the same frame scores the same on every vehicle and in replay).
DEFAULT_POINT_SEED = 0


def prepare_image(image: NDArray[np.uint8], meta: ModelMetadata) -> NDArray[np.float32]:
    """``(H, W, 3)`` uint8 RGB -> ``(1, 3, h, w)`` (or NHWC) float32, resized and normalised."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ModelInputError(
            f"model {meta.name} takes an (H, W, 3) uint8 RGB image, "
            f"got {image.dtype} {tuple(image.shape)}"
        )
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ModelInputError(
            f"model {meta.name}: image {tuple(image.shape)} is too small to resize"
        )
    height, width = meta.image_size
    if image.shape[0] != height or image.shape[1] != width:
        # reducing_gap: a cheap box reduction first when shrinking a lot (1600x900 -> 320x192)
        resized = Image.fromarray(np.ascontiguousarray(image)).resize(
            (width, height), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
        pixels = np.asarray(resized, dtype=np.float32)
    else:
        pixels = image.astype(np.float32)
    scale = np.float32(meta.scale)
    mean = np.asarray(meta.mean, dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(meta.std, dtype=np.float32)
    normalised = (pixels * scale - mean) * inv_std  # (h, w, 3)
    if meta.input_layout == "NCHW":
        normalised = normalised.transpose(2, 0, 1)
    return np.ascontiguousarray(normalised[np.newaxis], dtype=np.float32)


def select_points(
    points: NDArray[np.float32], meta: ModelMetadata, seed: int = DEFAULT_POINT_SEED
) -> NDArray[np.int64]:
    """Indices of the sweep rows the model sees: range crop, then a seeded subsample or pad.

    Rows with a non-finite coordinate are dropped; ``|x|, |y| <= range_m`` and
    ``z_min <= z <= z_max`` are kept. More points than the model takes: a seeded sample
    without replacement, returned in ascending order. Fewer: every point once, then a
    seeded sample with replacement fills up (repeats leave a max-pooled feature unchanged).
    """
    if points.ndim != 2 or points.shape[1] < 3:
        raise ModelInputError(
            f"model {meta.name} takes an (N, C >= 3) point array, got {tuple(points.shape)}"
        )
    xyz = points[:, :3]
    with np.errstate(invalid="ignore"):
        keep = (
            np.isfinite(xyz).all(axis=1)
            & (np.abs(xyz[:, 0]) <= meta.range_m)
            & (np.abs(xyz[:, 1]) <= meta.range_m)
            & (xyz[:, 2] >= meta.z_min)
            & (xyz[:, 2] <= meta.z_max)
        )
    inside = np.flatnonzero(keep).astype(np.int64)
    if inside.size == 0:
        raise ModelInputError(
            f"model {meta.name}: no finite point of {points.shape[0]} within "
            f"|x|,|y| <= {meta.range_m} m and {meta.z_min} <= z <= {meta.z_max} m"
        )
    wanted = meta.point_count
    rng = np.random.default_rng(seed)
    if inside.size >= wanted:
        picked = rng.choice(inside.size, size=wanted, replace=False)
        return inside[np.sort(picked)]
    extra = rng.choice(inside.size, size=wanted - inside.size, replace=True)
    return np.concatenate([inside, inside[np.sort(extra)]])


def prepare_points(
    points: NDArray[np.float32],
    meta: ModelMetadata,
    fields: tuple[str, ...] = LIDAR_FIELDS,
    seed: int = DEFAULT_POINT_SEED,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """``(N, C)`` sweep -> ``(1, P, F)`` float32 model input and the ``(P,)`` row indices used.

    ``fields`` names the sweep's columns (``LidarSweep.fields``); the model's
    ``point_features`` are taken from it by name, then ``(v - point_mean) / point_std``.
    """
    columns = []
    present = list(fields[: points.shape[1]]) if points.ndim == 2 else []
    for feature in meta.point_features:
        if feature not in present:
            raise ModelInputError(
                f"model {meta.name} needs point field {feature!r}; the sweep has {present}"
            )
        columns.append(fields.index(feature))
    index = select_points(points, meta, seed)
    chosen = points[index][:, columns].astype(np.float32)
    mean = np.asarray(meta.point_mean, dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(meta.point_std, dtype=np.float32)
    normalised = (chosen - mean) * inv_std
    return np.ascontiguousarray(normalised[np.newaxis], dtype=np.float32), index
