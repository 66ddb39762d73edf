"""Nearest-timestamp sync, pose interpolation and the geodesy underneath."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.sources.geo import (
    ecef_to_enu,
    ecef_to_geodetic,
    geodetic_to_ecef,
    matrix_to_quat,
    quat_multiply,
    quat_to_matrix,
    rpy_to_quat,
)
from edge_agent.sources.sync import PoseTrack, match_nearest, match_streams, poses_at

MS = 1_000_000


def test_match_nearest_rule() -> None:
    lidar = np.array([0, 100, 200, 300, 400]) * MS
    cam = np.array([9, 95, 160, 301]) * MS
    # 0 -> 9 (9 ms); 100 -> 95; 200 -> 160 is 40 ms: out of a 30 ms tolerance;
    # 300 -> 301; 400 -> nothing within tolerance.
    assert match_nearest(lidar, cam, 30 * MS).tolist() == [0, 1, -1, 3, -1]
    assert match_nearest(lidar, cam, 50 * MS).tolist() == [0, 1, 2, 3, -1]
    # A tie goes to the earlier message; the tolerance is inclusive.
    assert match_nearest([100], [90, 110], 10).tolist() == [0]
    assert match_nearest([100], [90, 110], 9).tolist() == [-1]


def test_match_nearest_edges() -> None:
    assert match_nearest([1, 2], [], 5).tolist() == [-1, -1]
    assert match_nearest([], [1, 2], 5).tolist() == []
    with pytest.raises(ValueError, match="sorted"):
        match_nearest([1], [3, 2], 5)
    with pytest.raises(ValueError, match="tolerance"):
        match_nearest([1], [1], -1)
    out = match_streams([0, 100], {"a": [1, 99], "b": [50]}, 10)
    assert {k: v.tolist() for k, v in out.items()} == {"a": [0, 1], "b": [-1, -1]}


@settings(max_examples=200, deadline=None)
@given(
    ref=st.lists(st.integers(0, 10_000), max_size=30),
    other=st.lists(st.integers(0, 10_000), max_size=30),
    tol=st.integers(0, 2_000),
)
def test_match_nearest_agrees_with_brute_force(ref: list[int], other: list[int], tol: int) -> None:
    other.sort()
    got = match_nearest(ref, other, tol)
    for r, g in zip(ref, got.tolist(), strict=True):
        dists = [abs(o - r) for o in other]
        best = min(dists, default=None)
        if best is None or best > tol:
            assert g == -1
        else:
            # the nearest, and of two equally near the earlier one
            assert dists[g] == best
            assert other[g] == min(o for o, d in zip(other, dists, strict=True) if d == best)


def test_match_nearest_is_fast() -> None:
    import time

    ref = np.arange(0, 36_000) * 100 * MS  # an hour of 10 Hz sweeps
    cam = ref + np.random.default_rng(0).integers(-20, 20, ref.size) * MS
    cam.sort()
    t = time.perf_counter()
    idx = match_nearest(ref, cam, 50 * MS)
    assert time.perf_counter() - t < 0.05
    assert np.all(idx >= 0)


def test_pose_track_interpolates_and_clamps() -> None:
    ts = np.array([0, 100, 200]) * MS
    pos = np.array([[0.0, 0, 0], [1, 0, 0], [3, 0, 0]])
    yaw = np.array([0.0, np.pi / 2, np.pi / 2])
    quat = rpy_to_quat(np.zeros(3), np.zeros(3), yaw)
    track = PoseTrack(ts, pos, quat)
    p, q, lla, valid = track.query(np.array([50, 150, 210, 260, -5]) * MS, 20 * MS)
    assert valid.tolist() == [True, True, True, False, True]
    assert p[0] == pytest.approx([0.5, 0, 0])
    assert p[1] == pytest.approx([2, 0, 0])
    assert p[2] == pytest.approx([3, 0, 0])
    assert p[4] == pytest.approx([0, 0, 0])
    assert q is not None
    assert lla is None
    # Half way between yaw 0 and 90 deg: 45 deg.
    assert quat_to_matrix(q[0])[:, 0] == pytest.approx([np.sqrt(0.5), np.sqrt(0.5), 0])
    poses = poses_at(track, np.array([50, 260]) * MS, 20 * MS)
    assert poses[1] is None
    assert poses[0] is not None
    assert poses_at(None, [1, 2], 5) == [None, None]


def test_pose_track_gap_has_no_pose() -> None:
    track = PoseTrack(np.array([0, 5_000]) * MS, np.zeros((2, 3)))
    _, _, _, valid = track.query(np.array([2_500]) * MS, 10 * MS, max_gap_ns=1_000 * MS)
    assert valid.tolist() == [False]


def test_geodesy_round_trip_and_enu() -> None:
    lat = np.array([49.015003823272, 37.721, -33.9, 0.0])
    lon = np.array([8.4342971002335, -122.4723, 151.2, 0.0])
    alt = np.array([116.43, 31.6, 50.0, 0.0])
    ecef = geodetic_to_ecef(lat, lon, alt)
    back = ecef_to_geodetic(ecef)
    assert np.allclose(back[:, 0], lat, atol=1e-9)
    assert np.allclose(back[:, 1], lon, atol=1e-9)
    assert np.allclose(back[:, 2], alt, atol=1e-3)
    # 100 m north and 50 m east of a point are (50, 100, ~0) in its ENU frame.
    north = geodetic_to_ecef(np.array([lat[0] + np.degrees(100 / 6_366_000)]), lon[:1], alt[:1])
    enu = ecef_to_enu(north, ecef[0])[0]
    assert enu[0] == pytest.approx(0.0, abs=0.01)
    assert enu[1] == pytest.approx(100.0, rel=0.01)


def test_quaternion_helpers() -> None:
    rng = np.random.default_rng(1)
    q = rng.normal(size=(50, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    assert np.allclose(matrix_to_quat(quat_to_matrix(q)), q, atol=1e-9)
    m = quat_to_matrix(quat_multiply(q[:-1], q[1:]))
    assert np.allclose(m, quat_to_matrix(q[:-1]) @ quat_to_matrix(q[1:]), atol=1e-9)
