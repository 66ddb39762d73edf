"""Frame sources: recorded-drive readers, the live spool-directory source, ``open_source``.

Every source has one main method, ``frames() -> Iterator[Frame | SourceError]``, plus
``close()`` (and works as a context manager). Bad input inside a recording is yielded as
a ``SourceError`` value and the iteration carries on; only a recording that cannot be
opened at all raises (``edge_agent.errors.SourceOpenError``), at construction.
See docs/sources.md for every layout, the sync rule and the live-source contract.
"""

from __future__ import annotations

from pathlib import Path

from edge_agent.errors import LayoutNotRecognisedError
from edge_agent.sources.argoverse import Av2Source
from edge_agent.sources.base import (
    DEFAULT_SYNC_TOLERANCE_NS,
    FrameSource,
    LiveSource,
    SourceBase,
    SourceOptions,
)
from edge_agent.sources.comma2k19 import Comma2k19Source
from edge_agent.sources.kitti import KittiObjectSource, KittiRawSource, object_splits
from edge_agent.sources.mcap_source import McapSource
from edge_agent.sources.nuscenes import NuScenesSource
from edge_agent.sources.spool_dir import SpoolDirSource, write_spool_frame
from edge_agent.sources.sync import match_nearest

__all__ = [
    "DEFAULT_SYNC_TOLERANCE_NS",
    "Av2Source",
    "Comma2k19Source",
    "FrameSource",
    "KittiObjectSource",
    "KittiRawSource",
    "LiveSource",
    "McapSource",
    "NuScenesSource",
    "SourceBase",
    "SourceOptions",
    "SpoolDirSource",
    "detect_layout",
    "match_nearest",
    "open_source",
    "write_spool_frame",
]

LAYOUTS = ("mcap", "nuscenes", "av2", "comma2k19", "kitti_raw", "kitti_object")


def detect_layout(path: str | Path) -> str:
    """The layout name of the recording at ``path`` (one of ``LAYOUTS``).

    Raises ``LayoutNotRecognisedError`` naming what was looked for.
    """
    p = Path(path)
    if p.is_file():
        if p.suffix == ".mcap":
            return "mcap"
        if p.name.endswith(".json"):
            return "nuscenes"
    elif p.is_dir():
        if any(p.glob("*.info.json")):
            return "nuscenes"
        if (p / "city_SE3_egovehicle.feather").is_file() or (p / "sensors" / "lidar").is_dir():
            return "av2"
        if (p / "global_pose" / "frame_times").is_file():
            return "comma2k19"
        if (p / "velodyne_points" / "timestamps.txt").is_file() or any(
            (p / f"image_0{i}" / "timestamps.txt").is_file() for i in range(4)
        ):
            return "kitti_raw"
        if object_splits(p):
            return "kitti_object"
        mcaps = sorted(p.glob("*.mcap"))
        if len(mcaps) == 1:
            return "mcap"
    raise LayoutNotRecognisedError(
        str(p),
        "no known recording layout: expected a .mcap file, a nuScenes *.info.json, an "
        "Argoverse 2 log (city_SE3_egovehicle.feather), a comma2k19 segment "
        "(global_pose/frame_times), a KITTI raw drive (velodyne_points/timestamps.txt) or "
        "KITTI object (training/ or testing/ with image_2, velodyne or velodyne_reduced)",
    )


def open_source(
    path: str | Path,
    *,
    vehicle_id: str = "replay",
    drive_id: str | None = None,
    cameras: tuple[str, ...] | None = None,
    sync_tolerance_ns: int = DEFAULT_SYNC_TOLERANCE_NS,
) -> FrameSource:
    """Open the recorded drive at ``path`` with the reader its layout needs."""
    options = SourceOptions(
        vehicle_id=vehicle_id,
        drive_id=drive_id,
        cameras=cameras,
        sync_tolerance_ns=sync_tolerance_ns,
    )
    p = Path(path)
    layout = detect_layout(p)
    if layout == "mcap":
        return McapSource(p if p.is_file() else sorted(p.glob("*.mcap"))[0], options)
    if layout == "nuscenes":
        return NuScenesSource(p, options)
    if layout == "av2":
        return Av2Source(p, options)
    if layout == "comma2k19":
        return Comma2k19Source(p, options)
    if layout == "kitti_raw":
        return KittiRawSource(p, options)
    return KittiObjectSource(p, options)
