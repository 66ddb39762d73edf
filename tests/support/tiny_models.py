"""Tiny ONNX models built with onnx.helper (no torch needed), for the model and agent tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
KITTI_PNG = DATA / "kitti_object/training/image_2/000000.png"
NUSC_BIN = next((DATA / "nuscenes_sample").glob("*__LIDAR_TOP__*.pcd.bin"))


def lidar_props(points: int = 16, classes: int = 3, **overrides: object) -> dict[str, str]:
    props = {
        "name": "tiny-lidar",
        "version": "tiny-lidar-1",
        "kind": "lidar",
        "input_name": "points",
        "input_shape": json.dumps([1, points, 3]),
        "input_layout": "NPC",
        "class_names": json.dumps([f"c{k}" for k in range(classes)]),
        "probs_output": "scores",
        "probs_are_logits": "true",
        "embedding_output": "embedding",
        "committee_axis": "false",
        "dense": "true",
        "point_features": json.dumps(["x", "y", "z"]),
        "point_mean": "[0, 0, 0]",
        "point_std": "[10, 10, 2]",
        "range_m": "40",
        "z_min": "-3",
        "z_max": "4",
    }
    props.update({k: str(v) for k, v in overrides.items()})
    return props


def camera_props(
    height: int = 8, width: int = 16, classes: int = 3, **overrides: object
) -> dict[str, str]:
    props = {
        "name": "tiny-camera",
        "version": "tiny-camera-1",
        "kind": "camera",
        "input_name": "image",
        "input_shape": json.dumps([1, 3, height, width]),
        "input_layout": "NCHW",
        "class_names": json.dumps([f"c{k}" for k in range(classes)]),
        "probs_output": "scores",
        "probs_are_logits": "true",
        "embedding_output": "embedding",
        "committee_axis": "false",
        "dense": "true",
        "mean": "[0.5, 0.5, 0.5]",
        "std": "[0.25, 0.25, 0.25]",
        "scale": str(1 / 255),
    }
    props.update({k: str(v) for k, v in overrides.items()})
    return props


def _save(graph: onnx.GraphProto, path: Path, props: dict[str, str] | None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    if props is not None:
        helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_lidar(
    path: Path,
    *,
    points: int = 16,
    classes: int = 3,
    members: int | None = None,
    logits: bool = True,
    weight: NDArray[np.float32] | None = None,
    props: dict[str, str] | None = None,
    embed_props: bool = True,
) -> Path:
    """``scores = x @ W`` ((n, K), or (T, n, K) with ``members``); embedding = max over points."""
    shape = (3, classes) if members is None else (members, 3, classes)
    if weight is None:
        weight = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["points", "W"], ["raw"])]
    if logits:
        nodes.append(helper.make_node("Identity", ["raw"], ["scores"]))
    else:
        nodes.append(helper.make_node("Softmax", ["raw"], ["scores"], axis=-1))
    nodes.append(helper.make_node("ReduceMax", ["points"], ["embedding"], keepdims=0, axes=[1]))
    out_shape = [1, points, classes] if members is None else [members, points, classes]
    graph = helper.make_graph(
        nodes,
        "tiny_lidar",
        [helper.make_tensor_value_info("points", TensorProto.FLOAT, [1, points, 3])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, out_shape),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 3]),
        ],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    if props is None:
        props = lidar_props(
            points,
            classes,
            committee_axis="true" if members else "false",
            probs_are_logits="true" if logits else "false",
        )
    return _save(graph, path, props if embed_props else None)


def build_camera(
    path: Path, *, height: int = 8, width: int = 16, classes: int = 3, **props: object
) -> Path:
    """1x1 conv logits per pixel ``(1, H*W, K)``; embedding = per-channel mean ``(1, 3)``;
    ``props`` override the metadata (e.g. ``version``)."""
    weight = np.random.default_rng(1).normal(size=(classes, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "W"], ["conv"]),
        helper.make_node("Reshape", ["conv", "shape"], ["flat"]),
        helper.make_node("Transpose", ["flat"], ["scores"], perm=[0, 2, 1]),
        helper.make_node("ReduceMean", ["image"], ["embedding"], keepdims=0, axes=[2, 3]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_camera",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, height, width])],
        [
            helper.make_tensor_value_info(
                "scores", TensorProto.FLOAT, [1, height * width, classes]
            ),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 3]),
        ],
        initializer=[
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(
                np.array([1, classes, height * width], dtype=np.int64), "shape"
            ),
        ],
    )
    return _save(graph, path, camera_props(height, width, classes, **props))
