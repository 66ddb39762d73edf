"""Point-cloud helpers: PCD files (PCL's format, what C++ bridges write), range crop and
voxel downsampling (optional preprocessing before the model).

Open3D's tensor I/O reads ASCII, binary and binary_compressed PCD with every field, not
only x, y, z. It is imported on first use: the module costs seconds to import and most
layouts never need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.frame import SourceErrorReason
from edge_agent.sources.base import BadInputError

__all__ = ["crop_range", "read_pcd", "voxel_downsample", "write_pcd"]


def _o3d() -> Any:
    import open3d

    return open3d


def _pcd_declared_points(path: Path) -> int | None:
    """``POINTS`` from a PCD header (``WIDTH * HEIGHT`` if absent); ``None`` if the header
    is not a PCD header or ends before ``DATA``."""
    with path.open("rb") as fh:
        head = fh.read(8192)
    values: dict[str, str] = {}
    for raw in head.split(b"\n"):
        line = raw.decode("ascii", "replace").strip()
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        values[key.upper()] = rest.strip()
        if key.upper() == "DATA":
            break
    else:
        return None
    try:
        if "POINTS" in values:
            return int(values["POINTS"])
        return int(values["WIDTH"]) * int(values.get("HEIGHT", "1"))
    except (KeyError, ValueError):
        return None


def read_pcd(path: Path, sensor: str = "lidar") -> tuple[NDArray[np.float32], tuple[str, ...]]:
    """A ``.pcd`` file -> ``(N, C)`` float32 and field names (``x, y, z`` first, then the
    other scalar fields by name). ``BadInputError`` if it cannot be read: Open3D does
    not raise on a bad file, it returns an empty cloud and prints a warning.
    """
    if not path.is_file():
        raise BadInputError(
            SourceErrorReason.MISSING_FILE, path, "point file is missing; check the copy", sensor
        )
    declared = _pcd_declared_points(path)
    o3d = _o3d()
    cloud = o3d.t.io.read_point_cloud(str(path))
    attrs = cloud.point
    got = attrs["positions"].shape[0] if "positions" in attrs else -1
    if declared is None or got != declared:
        raise BadInputError(
            SourceErrorReason.DECODE_FAILED,
            path,
            f"not a readable PCD file (header declares {declared} points, Open3D read "
            f"{max(got, 0)}): truncated, or a header that does not match the data; "
            "re-copy it or drop this frame",
            sensor,
        )
    xyz = attrs["positions"].numpy().astype(np.float32, copy=False)
    columns: list[NDArray[np.float32]] = [xyz]
    names = ["x", "y", "z"]
    for key in sorted(k for k in attrs if k != "positions"):
        values = attrs[key].numpy()
        if values.ndim == 2 and values.shape[1] == 1 and values.shape[0] == xyz.shape[0]:
            columns.append(values.astype(np.float32, copy=False))
            names.append(str(key))
    return np.ascontiguousarray(np.hstack(columns)), tuple(names)


def write_pcd(path: Path, points: NDArray[np.float32], fields: tuple[str, ...]) -> None:
    """Write ``points`` (``x, y, z`` first) as a binary PCD with the other fields kept."""
    if fields[:3] != ("x", "y", "z"):
        raise ValueError(f"fields must start with x, y, z, got {fields}")
    o3d = _o3d()
    cloud = o3d.t.geometry.PointCloud()
    pts = np.ascontiguousarray(points, dtype=np.float32)
    cloud.point.positions = o3d.core.Tensor(np.ascontiguousarray(pts[:, :3]))
    for i, name in enumerate(fields[3:], start=3):
        cloud.point[name] = o3d.core.Tensor(np.ascontiguousarray(pts[:, i : i + 1]))
    if not o3d.t.io.write_point_cloud(str(path), cloud, write_ascii=False):
        raise OSError(f"{path}: Open3D could not write the PCD file")


def crop_range(
    points: NDArray[np.float32], min_m: float = 0.0, max_m: float = float("inf")
) -> NDArray[np.float32]:
    """Rows whose horizontal range ``hypot(x, y)`` lies in ``[min_m, max_m]``.

    Removes the ego vehicle's own returns (``min_m``) and sparse far points (``max_m``).
    """
    rng = np.hypot(points[:, 0], points[:, 1])
    keep = (rng >= min_m) & (rng <= max_m)
    return np.ascontiguousarray(points[keep])


def voxel_downsample(
    points: NDArray[np.float32], fields: tuple[str, ...], voxel_m: float
) -> NDArray[np.float32]:
    """Open3D voxel-grid downsampling: one point per occupied ``voxel_m`` cube, every
    column averaged over the points in it. Column order and names are kept."""
    if voxel_m <= 0:
        raise ValueError(f"voxel_m must be > 0, got {voxel_m}")
    if fields[:3] != ("x", "y", "z") or points.shape[1] != len(fields):
        raise ValueError(f"points {points.shape} / fields {fields} must start with x, y, z")
    o3d = _o3d()
    cloud = o3d.t.geometry.PointCloud()
    pts = np.ascontiguousarray(points, dtype=np.float32)
    cloud.point.positions = o3d.core.Tensor(np.ascontiguousarray(pts[:, :3]))
    for i in range(3, len(fields)):
        cloud.point[f"c{i}"] = o3d.core.Tensor(np.ascontiguousarray(pts[:, i : i + 1]))
    down = cloud.voxel_down_sample(voxel_m)
    cols = [down.point.positions.numpy()]
    cols += [down.point[f"c{i}"].numpy() for i in range(3, len(fields))]
    return np.ascontiguousarray(np.hstack(cols).astype(np.float32, copy=False))
