"""The labeled streams: what each kind promises, on the bundled digits."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest_service.evaluation.streams import StreamError, StreamSpec, build_stream, read_idx


def _spec(kind: str, **kw: Any) -> StreamSpec:
    return StreamSpec(source="digits", kind=kind, frames=600, holdout=300, features="raw", **kw)


def test_holdout_and_warm_start_are_disjoint_from_the_stream() -> None:
    s = build_stream(_spec("iid"), seed=0)
    rows = {r.tobytes() for r in s.features}
    assert not rows & {r.tobytes() for r in s.holdout_features}
    assert not rows & {r.tobytes() for r in s.initial_features}
    assert s.features.shape == (600, 64)
    assert s.holdout_features.shape == (300, 64)
    assert s.initial_labels.shape == (10,)
    # 10 Hz clock and a track that moves 1 m per frame
    np.testing.assert_allclose(np.diff(s.timestamps_s), 0.1)
    step = np.linalg.norm(np.diff(s.positions, axis=0), axis=1)
    np.testing.assert_allclose(step, 1.0, rtol=1e-3)


def test_video_frames_come_in_runs_of_near_duplicates() -> None:
    s = build_stream(_spec("video", video_repeat=10), seed=0)
    runs = s.labels.reshape(60, 10)
    assert (runs == runs[:, :1]).all()  # one label per clip of 10 frames
    clip = s.features[:10]
    other = s.features[10:20]
    within = np.linalg.norm(clip - clip.mean(axis=0), axis=1).mean()
    across = np.linalg.norm(other - clip.mean(axis=0), axis=1).mean()
    assert within < across


def test_rare_late_classes_are_absent_first_then_rare() -> None:
    s = build_stream(_spec("rare_late", rare_rate=0.04), seed=3)
    assert len(s.rare_classes) == 2
    rare = np.isin(s.labels, s.rare_classes)
    assert not rare[:300].any()
    assert 0 < rare[300:].sum() < 0.2 * 300
    assert not np.isin(s.initial_labels, s.rare_classes).any()
    assert np.isin(s.holdout_labels, s.rare_classes).any()  # the holdout keeps every class


def test_day_night_gets_darker_and_noisier_along_the_stream() -> None:
    day = build_stream(_spec("day_night"), seed=0)
    plain = build_stream(_spec("iid"), seed=0)
    assert day.features[-100:].mean() < 0.75 * plain.features[-100:].mean()
    assert day.features[:50].mean() == pytest.approx(plain.features[:50].mean(), rel=0.1)


def test_bad_specs_and_missing_data_are_named() -> None:
    with pytest.raises(StreamError, match="stream kind must be one of"):
        StreamSpec(kind="rain")
    with pytest.raises(StreamError, match="the stream needs 5000 images, only 1487 left"):
        build_stream(StreamSpec(source="digits", frames=5000, holdout=300, features="raw"), 0)


def test_read_idx_reads_the_header_shape(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(int(n).to_bytes(4, "big") for n in data.shape)
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + data.tobytes()))
    np.testing.assert_array_equal(read_idx(path), data)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01abcd"))
    with pytest.raises(StreamError, match="not an IDX file of unsigned bytes"):
        read_idx(tmp_path / "bad.gz")
