"""ModelMetadata: parsed from metadata_props and sidecars, validated, errors name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.models import ModelMetadataError, metadata_from_mapping, read_metadata
from edge_agent.models.errors import ModelLoadError
from tests.support.tiny_models import build_lidar, camera_props, lidar_props


def test_lidar_props_parse_and_round_trip() -> None:
    meta = metadata_from_mapping(lidar_props(points=64, training_data="x"), "m.onnx")
    assert meta.kind == "lidar"
    assert meta.point_count == 64
    assert meta.point_features == ("x", "y", "z")
    assert meta.probs_are_logits is True
    assert meta.committee_axis is False
    assert meta.extra == {"training_data": "x"}
    assert metadata_from_mapping(meta.to_props(), "again") == meta


def test_camera_props_parse_and_round_trip() -> None:
    meta = metadata_from_mapping(camera_props(height=96, width=160), "m.onnx")
    assert meta.image_size == (96, 160)
    assert meta.mean == (0.5, 0.5, 0.5)
    assert meta.num_classes == 3
    assert metadata_from_mapping(meta.to_props(), "again") == meta
    with pytest.raises(ValueError, match="no point count"):
        _ = meta.point_count


def test_read_metadata_from_onnx_props(tmp_path: Path) -> None:
    path = build_lidar(tmp_path / "m.onnx", points=8)
    meta = read_metadata(path)
    assert (meta.name, meta.version, meta.point_count) == ("tiny-lidar", "tiny-lidar-1", 8)


def test_sidecar_describes_a_model_without_props(tmp_path: Path) -> None:
    path = build_lidar(tmp_path / "m.onnx", points=8, embed_props=False)
    with pytest.raises(ModelMetadataError, match="'kind': missing"):
        read_metadata(path)
    sidecar = {
        k: json.loads(v) if v[:1] in "[0123456789-" or v in ("true", "false") else v
        for k, v in lidar_props(points=8).items()
    }
    (tmp_path / "m.json").write_text(json.dumps(sidecar))
    meta = read_metadata(path)
    assert meta.point_count == 8
    assert meta.range_m == 40.0


def test_sidecar_keys_override_embedded_props(tmp_path: Path) -> None:
    path = build_lidar(tmp_path / "m.onnx", points=8)
    (tmp_path / "m.json").write_text(json.dumps({"version": "patched-2", "range_m": 25}))
    meta = read_metadata(path)
    assert (meta.version, meta.range_m) == ("patched-2", 25.0)


def test_missing_key_error_names_key_file_and_fix(tmp_path: Path) -> None:
    props = lidar_props(points=8)
    del props["embedding_output"]
    path = build_lidar(tmp_path / "nokey.onnx", points=8, props=props)
    with pytest.raises(ModelMetadataError) as info:
        read_metadata(path)
    message = str(info.value)
    assert "'embedding_output'" in message
    assert str(path) in message
    assert "metadata_props" in message
    assert "sidecar" in message
    assert info.value.key == "embedding_output"


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("kind", "radar", "'camera' or 'lidar'"),
        ("input_shape", "[2, 16, 3]", "batch dimension must be 1"),
        ("input_shape", "[1, 16, 4]", "expected (1, points, 3)"),
        ("input_shape", "[1, -1, 3]", "static shape"),
        ("input_layout", "NCHW", "'NPC'"),
        ("class_names", '["a", "a"]', "unique"),
        ("class_names", '["a"]', "at least 2"),
        ("probs_are_logits", "maybe", "not valid JSON"),
        ("committee_axis", "2", "true or false"),
        ("point_features", '["x", "y", "speed"]', "unknown field"),
        ("point_std", "[1, 0, 1]", "> 0"),
        ("point_mean", "[0, 0]", "list of 3"),
        ("range_m", "NaN", "finite number"),
        ("range_m", "-5", "> 0"),
        ("z_max", "-4", "greater than z_min"),
        ("embedding_output", "scores", "different output"),
    ],
)
def test_bad_lidar_values_are_rejected_with_the_key(key: str, value: str, fragment: str) -> None:
    with pytest.raises(ModelMetadataError, match=f"'{key}'") as info:
        metadata_from_mapping(lidar_props(**{key: value}), "bad.onnx")
    assert fragment in str(info.value)
    assert "bad.onnx" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("input_layout", "NPC", "'NCHW' or 'NHWC'"),
        ("input_shape", "[1, 4, 8, 16]", "3 colour channels"),
        ("std", "[1, 1, 0]", "> 0"),
        ("mean", "[0.5]", "list of 3"),
        ("scale", '"x"', "a number"),
    ],
)
def test_bad_camera_values_are_rejected_with_the_key(key: str, value: str, fragment: str) -> None:
    with pytest.raises(ModelMetadataError, match=f"'{key}'") as info:
        metadata_from_mapping(camera_props(**{key: value}), "bad.onnx")
    assert fragment in str(info.value)


def test_nhwc_camera_layout() -> None:
    meta = metadata_from_mapping(
        camera_props(input_layout="NHWC", input_shape="[1, 8, 16, 3]"), "m.onnx"
    )
    assert meta.image_size == (8, 16)


def test_unreadable_sidecar_is_a_metadata_error(tmp_path: Path) -> None:
    path = build_lidar(tmp_path / "m.onnx", points=8)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ModelMetadataError, match=r"m\.json"):
        read_metadata(path)


def test_read_metadata_of_a_corrupt_file_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00\x01 definitely not protobuf" * 10)
    with pytest.raises(ModelLoadError, match=r"junk\.onnx"):
        read_metadata(path)
