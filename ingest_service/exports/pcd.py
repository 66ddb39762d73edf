"""PCD (Point Cloud Library) v0.7 files of a decoded sweep: binary or ASCII, float32 fields."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["to_pcd"]


def to_pcd(points: NDArray[np.float32], fields: Sequence[str], *, binary: bool = True) -> bytes:
    """An unorganised PCD (``HEIGHT 1``) of ``points`` ``(N, C)`` with one F4 field per column."""
    pts = np.ascontiguousarray(points, dtype="<f4")
    if pts.ndim != 2 or pts.shape[1] != len(fields):
        raise ValueError(f"points {pts.shape} do not match fields {list(fields)}")
    n, c = pts.shape
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\n"
        "VERSION 0.7\n"
        f"FIELDS {' '.join(fields)}\n"
        f"SIZE {' '.join(['4'] * c)}\n"
        f"TYPE {' '.join(['F'] * c)}\n"
        f"COUNT {' '.join(['1'] * c)}\n"
        f"WIDTH {n}\n"
        "HEIGHT 1\n"
        "VIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {n}\n"
        f"DATA {'binary' if binary else 'ascii'}\n"
    ).encode("ascii")
    if binary:
        return header + pts.tobytes()
    lines = "\n".join(" ".join(f"{v:.9g}" for v in row) for row in pts.tolist())
    return header + lines.encode("ascii") + (b"\n" if n else b"")
