"""The point-cloud codec on real KITTI and nuScenes sweeps, and its error cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from schemas.errors import DecodeError, SchemaError, ValidationError
from schemas.messages import LidarPayload
from schemas.pointcloud import (
    Compression,
    decode_lidar,
    decode_points,
    encode_points,
    lidar_payload,
)

DATA = Path(__file__).resolve().parents[3] / "data"
SWEEPS = {
    **{
        f"kitti-{p.stem}": (p, 4)
        for p in sorted((DATA / "kitti_object" / "training" / "velodyne").glob("*.bin"))
    },
    "nuscenes": (next((DATA / "nuscenes_sample").glob("*LIDAR_TOP*.pcd.bin")), 5),
}
COMPRESSIONS: tuple[Compression, ...] = ("zstd", "lz4", "none")


def _load(name: str) -> NDArray[np.float32]:
    path, columns = SWEEPS[name]
    return np.fromfile(path, dtype=np.float32).reshape(-1, columns)


def _within_quantum(decoded: NDArray[np.float32], original: NDArray[np.float32], q: float) -> None:
    """|error| <= q/2, plus half a float32 ulp of the value for the final float32 rounding."""
    err = np.abs(decoded.astype(np.float64) - original.astype(np.float64))
    slack = np.spacing(np.abs(original)).astype(np.float64) / 2
    assert (err <= q / 2 + slack).all(), float(err.max())


def test_real_sweeps_are_present() -> None:
    assert len(SWEEPS) == 4
    assert _load("kitti-000000").shape[0] > 100_000
    assert _load("nuscenes").shape == (34_688, 5)


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_real_sweep_round_trip(name: str, compression: Compression) -> None:
    pts = _load(name)
    data = encode_points(pts, compression=compression)
    cloud = decode_points(data)
    assert cloud.points.dtype == np.float32
    assert cloud.points.shape == pts.shape
    assert cloud.compression == compression
    assert cloud.fields[:4] == ("x", "y", "z", "intensity")
    _within_quantum(cloud.points[:, :3], pts[:, :3], 0.001)
    # intensity (KITTI 0.01 steps, nuScenes 0..255) and ring come back bit-identical
    assert np.array_equal(cloud.points[:, 3:], pts[:, 3:])
    assert pts.nbytes / len(data) > 1.0


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_zstd_beats_plain_zstd_of_float32(name: str) -> None:
    pts = _load(name)
    baseline = len(zstandard.ZstdCompressor(level=3).compress(pts.tobytes()))
    ours = len(encode_points(pts, compression="zstd"))
    assert pts.nbytes / ours > 3.0
    assert baseline / ours > 2.0


def test_coarser_quantum_and_tolerance() -> None:
    pts = _load("nuscenes")
    for q in (0.0005, 0.005, 0.02):
        cloud = decode_points(encode_points(pts, quantum_m=q))
        assert cloud.quantum_m == q
        _within_quantum(cloud.points[:, :3], pts[:, :3], q)


def test_three_columns_and_custom_fields() -> None:
    pts = _load("kitti-000001")
    cloud = decode_points(encode_points(pts[:, :3]))
    assert cloud.fields == ("x", "y", "z")
    fields = ("x", "y", "z", "reflectance")
    assert decode_points(encode_points(pts, fields=fields)).fields == fields


def test_non_decimal_intensity_is_float16_and_other_columns_exact_float32() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(-50, 50, size=(5000, 5)).astype(np.float32)
    pts[:, 3] = rng.uniform(0, 1, 5000).astype(np.float32)  # not a decimal
    pts[:, 4] = rng.normal(0, 1e6, 5000).astype(np.float32)  # e.g. a time offset
    cloud = decode_points(encode_points(pts, fields=("x", "y", "z", "intensity", "t")))
    rel = np.abs(cloud.points[:, 3] - pts[:, 3]) / np.maximum(pts[:, 3], 2**-14)
    assert rel.max() <= 2**-11
    assert np.array_equal(cloud.points[:, 4], pts[:, 4])


def test_float64_input_and_empty_cloud() -> None:
    pts = _load("nuscenes")[:100].astype(np.float64)
    cloud = decode_points(encode_points(pts))
    _within_quantum(cloud.points[:, :3], pts[:, :3].astype(np.float32), 0.001)
    empty = decode_points(encode_points(np.zeros((0, 4), dtype=np.float32)))
    assert empty.points.shape == (0, 4)
    assert empty.point_count == 0


@settings(max_examples=60, deadline=None)
@given(
    pts=hnp.arrays(
        np.float32,
        st.tuples(st.integers(0, 200), st.sampled_from([3, 4, 5])),
        elements=st.floats(-1000, 1000, width=32),
    ),
    compression=st.sampled_from(COMPRESSIONS),
)
def test_random_clouds_round_trip(pts: NDArray[np.float32], compression: Compression) -> None:
    fields = ("x", "y", "z", "a", "b")[: pts.shape[1]]
    cloud = decode_points(encode_points(pts, fields=fields, compression=compression))
    _within_quantum(cloud.points[:, :3], pts[:, :3], 0.001)
    assert np.array_equal(cloud.points[:, 3:], pts[:, 3:])  # extra columns are lossless


# --- validation -------------------------------------------------------------------------------


def test_nan_and_inf_points_are_counted() -> None:
    pts = _load("kitti-000000").copy()
    pts[[10, 20], 1] = np.nan
    pts[30, 3] = np.inf
    with pytest.raises(ValidationError, match=r"3 of \d+ points have NaN or inf.*row 10") as info:
        encode_points(pts)
    assert info.value.field == "points"


def test_out_of_range_coordinates_name_the_axis() -> None:
    pts = np.array([[1.0, 2.0, 3.0], [1.0, 3.0e6, 3.0]], dtype=np.float32)
    with pytest.raises(ValidationError, match="coarser quantum") as info:
        encode_points(pts)
    assert info.value.field == "points.y"
    assert decode_points(encode_points(pts, quantum_m=0.01)).points[1, 1] == pytest.approx(3.0e6)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"points": np.zeros((4,), np.float32)}, "points"),
        ({"points": np.zeros((4, 2), np.float32)}, "points"),
        ({"points": np.zeros((4, 3), np.int32)}, "points"),
        ({"points": np.zeros((4, 6), np.float32)}, "fields"),
        ({"fields": ("a", "b", "c", "d")}, "fields"),
        ({"fields": ("x", "y", "z")}, "fields"),
        ({"fields": ("x", "y", "z", "z")}, "fields"),
        ({"quantum_m": 0.0}, "quantum_m"),
        ({"quantum_m": float("nan")}, "quantum_m"),
        ({"compression": "brotli"}, "compression"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"points": np.zeros((4, 4), np.float32), **kwargs}
    with pytest.raises(ValidationError) as info:
        encode_points(**args)
    assert info.value.field == field


# --- corrupt data -----------------------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_truncations_and_bit_flips_are_detected(compression: Compression) -> None:
    data = encode_points(_load("nuscenes")[:2000], compression=compression)
    for cut in (0, 2, 10, 29, 31, 60, len(data) // 2, len(data) - 1):
        with pytest.raises(DecodeError):
            decode_points(data[:cut])
    reference = decode_points(data).points
    rng = np.random.default_rng(1)
    for pos in rng.integers(0, len(data), 300):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            cloud = decode_points(bytes(flipped))
        except SchemaError:
            continue
        # a flip the compressor ignores (frame padding, unused flags) changes nothing;
        # any flip that changes the decoded bytes is caught by the crc32
        assert np.array_equal(cloud.points, reference)
    with pytest.raises(DecodeError):
        decode_points(data + b"\x00")


def test_named_decode_errors() -> None:
    data = encode_points(_load("nuscenes")[:100])
    with pytest.raises(DecodeError, match="bad magic"):
        decode_points(b"XYZ" + data[3:])
    with pytest.raises(DecodeError, match="format version 7"):
        decode_points(data[:3] + b"\x07" + data[4:])
    with pytest.raises(DecodeError, match="unknown compression code 9"):
        decode_points(data[:4] + b"\x09" + data[5:])
    with pytest.raises(DecodeError, match="max_points=10"):
        decode_points(data, max_points=10)
    assert decode_points(bytearray(data)).point_count == 100
    assert decode_points(memoryview(data)).point_count == 100


def test_lidar_payload_glue() -> None:
    pts = _load("nuscenes")
    payload = lidar_payload(pts, compression="lz4")
    assert (payload.point_count, payload.fields, payload.compression) == (
        34_688,
        ("x", "y", "z", "intensity", "ring"),
        "lz4",
    )
    assert decode_lidar(payload).point_count == 34_688
    lying = LidarPayload(5, payload.fields, payload.quantum_m, "lz4", payload.data)
    with pytest.raises(DecodeError, match="says 5 points"):
        decode_lidar(lying)
