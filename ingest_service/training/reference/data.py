"""Labelled training examples cut from the real recorded data in ``data/``.

Camera: RGB images with 2D boxes (nuScenes sample: six cameras, ``cam_instances``;
KITTI object: three ``image_2`` PNGs with ``label_2``). LiDAR: sweeps whose points are
labelled by the 3D box they fall in (Argoverse 2: two sweeps with ``annotations.feather``
cuboids in the ego frame; nuScenes ``LIDAR_TOP`` with the info json ``instances`` in the
LiDAR frame; KITTI ``velodyne`` with ``label_2`` 3D boxes in the rectified camera frame,
cropped to the camera's field of view since only objects seen by the camera are labelled).

Licences: KITTI CC BY-NC-SA 3.0, nuScenes and Argoverse 2 CC BY-NC-SA 4.0 (see
``data/README.md`` and ``data/MANIFEST.tsv``): non-commercial, so the models trained on
them are for demos and tests only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow.feather as feather
from numpy.typing import NDArray
from PIL import Image

__all__ = [
    "CAMERA_CLASSES",
    "CAMERA_HOLDOUT",
    "LIDAR_CLASSES",
    "LabelledImage",
    "LabelledSweep",
    "camera_files",
    "lidar_class_index",
    "lidar_files",
    "load_camera_images",
    "load_lidar_sweeps",
    "nuscenes_boxes_3d",
    "nuscenes_sweep_file",
    "points_in_box",
    "rear_left_quadrant",
    "yaw_matrix",
]

CAMERA_CLASSES = ("background", "car", "pedestrian", "two_wheeler", "truck_bus", "other")
LIDAR_CLASSES = ("background", "vehicle", "pedestrian", "two_wheeler", "other")
IGNORE = -1
T = TypeVar("T", dict[str, Any], list[Any])

#: Images kept out of camera training to measure a holdout accuracy.
CAMERA_HOLDOUT = ("nuscenes/CAM_BACK", "kitti/000001")

_NUSC = "nuscenes_sample"
_KITTI = "kitti_object/training"
_AV2 = "av2_sensor/7fab2350-7eaf-3b7e-a39d-6937a4c1bede"

# nuScenes categories (metainfo order) -> camera / lidar class index
_NUSC_NAMES = (
    "car",
    "truck",
    "trailer",
    "bus",
    "construction_vehicle",
    "bicycle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "barrier",
)
_NUSC_CAMERA = {
    "car": 1,
    "truck": 4,
    "trailer": 4,
    "bus": 4,
    "construction_vehicle": 4,
    "bicycle": 3,
    "motorcycle": 3,
    "pedestrian": 2,
    "traffic_cone": 5,
    "barrier": 5,
}
_NUSC_LIDAR = {
    "car": 1,
    "truck": 1,
    "trailer": 1,
    "bus": 1,
    "construction_vehicle": 1,
    "bicycle": 3,
    "motorcycle": 3,
    "pedestrian": 2,
    "traffic_cone": 4,
    "barrier": 4,
}
_KITTI_CAMERA = {
    "Car": 1,
    "Van": 1,
    "Truck": 4,
    "Tram": 4,
    "Pedestrian": 2,
    "Person_sitting": 2,
    "Cyclist": 3,
    "Misc": 5,
    "DontCare": IGNORE,
}
_KITTI_LIDAR = {
    "Car": 1,
    "Van": 1,
    "Truck": 1,
    "Tram": 1,
    "Pedestrian": 2,
    "Person_sitting": 2,
    "Cyclist": 3,
    "Misc": 4,
}
_AV2_VEHICLE = {
    "REGULAR_VEHICLE",
    "LARGE_VEHICLE",
    "BUS",
    "BOX_TRUCK",
    "TRUCK",
    "TRUCK_CAB",
    "VEHICULAR_TRAILER",
    "ARTICULATED_BUS",
    "SCHOOL_BUS",
    "RAILED_VEHICLE",
}
_AV2_PEDESTRIAN = {"PEDESTRIAN", "OFFICIAL_SIGNALER"}
_AV2_TWO_WHEELER = {
    "BICYCLE",
    "MOTORCYCLE",
    "BICYCLIST",
    "MOTORCYCLIST",
    "WHEELED_RIDER",
    "MOPED",
}


@dataclass(frozen=True, slots=True, eq=False)
class LabelledImage:
    """One RGB image; ``boxes`` ``(m, 4)`` x1, y1, x2, y2 px; ``labels`` ``-1`` = ignore region."""

    name: str
    image: NDArray[np.uint8]
    boxes: NDArray[np.float32]
    labels: NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class LabelledSweep:
    """One sweep: ``points`` ``(N, 3)`` x, y, z m; per-point ``labels``; ``holdout`` mask."""

    name: str
    points: NDArray[np.float32]
    labels: NDArray[np.int64]
    holdout: NDArray[np.bool_]


def _nusc_info(root: Path) -> tuple[Path, dict[str, object]]:
    infos = sorted((root / _NUSC).glob("*.info.json"))
    if not infos:
        raise FileNotFoundError(f"{root / _NUSC}: no *.info.json (see data/README.md)")
    info = json.loads(infos[0].read_text(encoding="utf-8"))
    entry: dict[str, object] = info["data_list"][0]
    return infos[0], entry


def _field(entry: dict[str, object], key: str, kind: type[T]) -> T:
    value = entry.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"nuScenes info json: {key!r} is not a {kind.__name__}")
    return value


def camera_files(root: Path) -> list[Path]:
    """Every file the camera model is trained on."""
    info_path, entry = _nusc_info(root)
    images = _field(entry, "images", dict)
    files = [info_path] + [root / _NUSC / str(v["img_path"]) for v in images.values()]
    for stem in ("000000", "000001", "000002"):
        files += [
            root / _KITTI / "image_2" / f"{stem}.png",
            root / _KITTI / "label_2" / f"{stem}.txt",
        ]
    return files


def lidar_files(root: Path) -> list[Path]:
    """Every file the LiDAR model is trained on."""
    info_path, entry = _nusc_info(root)
    lidar = _field(entry, "lidar_points", dict)
    files = [info_path, root / _NUSC / str(lidar["lidar_path"])]
    files += sorted((root / _AV2 / "sensors" / "lidar").glob("*.feather"))
    files.append(root / _AV2 / "annotations.feather")
    for stem in ("000000", "000001", "000002"):
        files += [
            root / _KITTI / "velodyne" / f"{stem}.bin",
            root / _KITTI / "label_2" / f"{stem}.txt",
            root / _KITTI / "calib" / f"{stem}.txt",
        ]
    return files


def _read_rgb(path: Path) -> NDArray[np.uint8]:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _kitti_labels(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def camera_image_files(root: Path) -> dict[str, Path]:
    """The image file of each labelled image, by its name (``nuscenes/CAM_BACK``, ...)."""
    _, entry = _nusc_info(root)
    images = _field(entry, "images", dict)
    out = {f"nuscenes/{cam}": root / _NUSC / str(d["img_path"]) for cam, d in images.items()}
    for stem in ("000000", "000001", "000002"):
        out[f"kitti/{stem}"] = root / _KITTI / "image_2" / f"{stem}.png"
    return out


def load_camera_images(root: Path) -> list[LabelledImage]:
    """The nine labelled images (six nuScenes cameras, three KITTI frames)."""
    out: list[LabelledImage] = []
    _, entry = _nusc_info(root)
    images = _field(entry, "images", dict)
    cam_instances = _field(entry, "cam_instances", dict)
    for cam, desc in sorted(images.items()):
        boxes, labels = [], []
        for inst in cam_instances.get(cam, []):
            label = int(inst["bbox_label"])
            if label < 0:
                continue
            boxes.append(inst["bbox"])
            labels.append(_NUSC_CAMERA[_NUSC_NAMES[label]])
        out.append(
            _labelled(f"nuscenes/{cam}", _read_rgb(root / _NUSC / desc["img_path"]), boxes, labels)
        )
    for stem in ("000000", "000001", "000002"):
        boxes, labels = [], []
        for row in _kitti_labels(root / _KITTI / "label_2" / f"{stem}.txt"):
            if row[0] in _KITTI_CAMERA:
                boxes.append([float(v) for v in row[4:8]])
                labels.append(_KITTI_CAMERA[row[0]])
        out.append(
            _labelled(
                f"kitti/{stem}", _read_rgb(root / _KITTI / "image_2" / f"{stem}.png"), boxes, labels
            )
        )
    return out


def _labelled(
    name: str, image: NDArray[np.uint8], boxes: list[list[float]], labels: list[int]
) -> LabelledImage:
    return LabelledImage(
        name=name,
        image=image,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
    )


def points_in_box(
    points: NDArray[np.float32],
    center: NDArray[np.float64],
    rotation: NDArray[np.float64],
    half_extent: NDArray[np.float64],
) -> NDArray[np.bool_]:
    """Mask of points inside a box: ``rotation`` maps box axes to the points' frame."""
    inside = np.zeros(len(points), dtype=np.bool_)
    radius = float(np.linalg.norm(half_extent))
    near = np.flatnonzero((np.abs(points - center.astype(np.float32)) <= radius).all(axis=1))
    local = (points[near].astype(np.float64) - center) @ rotation
    inside[near[(np.abs(local) <= half_extent).all(axis=1)]] = True
    return inside


def yaw_matrix(yaw: float) -> NDArray[np.float64]:
    """Rotation about z by ``yaw`` (box axes -> LiDAR frame)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _quat_matrix(qw: float, qx: float, qy: float, qz: float) -> NDArray[np.float64]:
    return np.array(
        [
            [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
            [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
            [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)],
        ]
    )


def rear_left_quadrant(points: NDArray[np.float32]) -> NDArray[np.bool_]:
    """The held-out region of a 360-degree sweep (x < 0, y > 0): never trained on."""
    mask: NDArray[np.bool_] = (points[:, 0] < 0) & (points[:, 1] > 0)
    return mask


def load_lidar_sweeps(root: Path) -> list[LabelledSweep]:
    """Six labelled sweeps: two Argoverse 2, one nuScenes, three KITTI (camera FOV).

    The holdout mask marks points never used in the loss: the rear-left quadrant
    (x < 0, y > 0) of the 360-degree sweeps, and the left half (y > 0) of the KITTI ones.
    """
    return [
        *_av2_sweeps(root),
        _nuscenes_sweep(root),
        *(_kitti_sweep(root, s) for s in ("000000", "000001", "000002")),
    ]


def _av2_sweeps(root: Path) -> list[LabelledSweep]:
    table = feather.read_table(root / _AV2 / "annotations.feather")
    ann = {name: table.column(name).to_numpy() for name in table.column_names}
    sweeps = []
    for path in sorted((root / _AV2 / "sensors" / "lidar").glob("*.feather")):
        lidar = feather.read_table(path)
        points = np.stack(
            [lidar.column(c).to_numpy().astype(np.float32) for c in ("x", "y", "z")], axis=1
        )
        labels = np.zeros(len(points), dtype=np.int64)
        for i in np.flatnonzero(ann["timestamp_ns"] == int(path.stem)):
            category = str(ann["category"][i])
            cls = (
                1
                if category in _AV2_VEHICLE
                else 2
                if category in _AV2_PEDESTRIAN
                else 3
                if category in _AV2_TWO_WHEELER
                else 4
            )
            rotation = _quat_matrix(ann["qw"][i], ann["qx"][i], ann["qy"][i], ann["qz"][i])
            center = np.array([ann["tx_m"][i], ann["ty_m"][i], ann["tz_m"][i]])
            half = 0.5 * np.array([ann["length_m"][i], ann["width_m"][i], ann["height_m"][i]])
            labels[points_in_box(points, center, rotation, half)] = cls
        sweeps.append(LabelledSweep(f"av2/{path.stem}", points, labels, rear_left_quadrant(points)))
    return sweeps


def lidar_class_index(name: str) -> int:
    """A 3D box's class name (ours, KITTI's, nuScenes' or a camera class) -> the LiDAR model's
    class index, ``IGNORE`` if unknown."""
    if name in LIDAR_CLASSES:
        return LIDAR_CLASSES.index(name)
    if name in _KITTI_LIDAR:
        return _KITTI_LIDAR[name]
    if name in ("car", "truck_bus"):
        return 1
    return _NUSC_LIDAR.get(name.lower(), IGNORE)


def nuscenes_boxes_3d(root: Path) -> list[tuple[str, tuple[float, ...], tuple[float, ...], float]]:
    """The nuScenes sample sweep's 3D boxes as an annotator gives them: ``(class name, centre
    (x, y, z), size (l, w, h), yaw)`` in the LiDAR frame (boxes without a class left out)."""
    _, entry = _nusc_info(root)
    out: list[tuple[str, tuple[float, ...], tuple[float, ...], float]] = []
    for inst in _field(entry, "instances", list):
        label = int(inst["bbox_label_3d"])
        if label < 0:
            continue
        x, y, z, length, width, height, yaw = (float(v) for v in inst["bbox_3d"])
        out.append((_NUSC_NAMES[label], (x, y, z), (length, width, height), yaw))
    return out


def nuscenes_sweep_file(root: Path) -> Path:
    """The nuScenes sample's LiDAR file (x, y, z, intensity, ring float32)."""
    _, entry = _nusc_info(root)
    return root / _NUSC / str(_field(entry, "lidar_points", dict)["lidar_path"])


def _nuscenes_sweep(root: Path) -> LabelledSweep:
    _, entry = _nusc_info(root)
    lidar = _field(entry, "lidar_points", dict)
    instances = _field(entry, "instances", list)
    raw = np.fromfile(root / _NUSC / str(lidar["lidar_path"]), dtype=np.float32).reshape(-1, 5)
    points = np.ascontiguousarray(raw[:, :3])
    labels = np.zeros(len(points), dtype=np.int64)
    for inst in instances:
        label = int(inst["bbox_label_3d"])
        x, y, z, length, width, height, yaw = (float(v) for v in inst["bbox_3d"])
        # mmdet3d info v1.1 boxes: gravity centre (origin 0.5, 0.5, 0.5), yaw about z.
        mask = points_in_box(
            points, np.array([x, y, z]), yaw_matrix(yaw), 0.5 * np.array([length, width, height])
        )
        labels[mask] = IGNORE if label < 0 else _NUSC_LIDAR[_NUSC_NAMES[label]]
    return LabelledSweep("nuscenes/LIDAR_TOP", points, labels, rear_left_quadrant(points))


def _kitti_calib(path: Path) -> dict[str, NDArray[np.float64]]:
    calib = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if ":" in line:
            key, values = line.split(":", 1)
            calib[key.strip()] = np.array([float(v) for v in values.split()])
    return calib


def _kitti_sweep(root: Path, stem: str) -> LabelledSweep:
    raw = np.fromfile(root / _KITTI / "velodyne" / f"{stem}.bin", dtype=np.float32).reshape(-1, 4)
    calib = _kitti_calib(root / _KITTI / "calib" / f"{stem}.txt")
    velo_to_cam = np.eye(4)
    velo_to_cam[:3] = calib["Tr_velo_to_cam"].reshape(3, 4)
    rect = np.eye(4)
    rect[:3, :3] = calib["R0_rect"].reshape(3, 3)
    homogeneous = np.concatenate([raw[:, :3].astype(np.float64), np.ones((len(raw), 1))], axis=1)
    cam = (homogeneous @ (rect @ velo_to_cam).T)[:, :3]  # rectified camera frame
    with Image.open(root / _KITTI / "image_2" / f"{stem}.png") as img:
        width, height = img.size
    proj = np.concatenate([cam, np.ones((len(cam), 1))], axis=1) @ calib["P2"].reshape(3, 4).T
    depth = proj[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = proj[:, 0] / depth, proj[:, 1] / depth
    in_view = (depth > 0.5) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    points = np.ascontiguousarray(raw[in_view, :3])
    cam = cam[in_view]
    labels = np.zeros(len(points), dtype=np.int64)
    for row in _kitti_labels(root / _KITTI / "label_2" / f"{stem}.txt"):
        if row[0] not in _KITTI_LIDAR:
            continue
        h, w, length = (float(v) for v in row[8:11])
        x, y, z, ry = (float(v) for v in row[11:15])
        c, s = np.cos(ry), np.sin(ry)
        rot_y = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
        # label_2: bottom centre in the rectified camera frame (y down); box spans y - h .. y
        mask = points_in_box(
            cam.astype(np.float32),
            np.array([x, y - h / 2, z]),
            rot_y,
            0.5 * np.array([length, h, w]),
        )
        labels[mask] = _KITTI_LIDAR[row[0]]
    holdout: NDArray[np.bool_] = points[:, 1] > 0
    return LabelledSweep(f"kitti/{stem}", points, labels, holdout)
