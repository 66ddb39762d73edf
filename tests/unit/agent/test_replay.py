"""``edge-agent replay`` on every kind of bundled real data, and on an MCAP file we write."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deploy.demo.build_drive import build as build_demo_drive
from edge_agent.cli import main
from edge_agent.config import AgentConfig, load_agent_config
from edge_agent.replay import paced, parse_speed, replay
from tests.support.tiny_models import build_camera, build_lidar
from tests.unit.edge_agent.test_mcap import write_recording

DATA = Path(__file__).resolve().parents[3] / "data"


def _config(tmp_path: Path) -> AgentConfig:
    cam = build_camera(tmp_path / "camera.onnx")
    lid = build_lidar(tmp_path / "lidar.onnx")
    return load_agent_config(
        data={
            "agent": {"vehicle_id": "veh-r", "seed": 11},
            "models": {"camera": str(cam), "lidar": str(lid)},
            "selector": {"budget": {"target_rate": 0.5, "cold_start_frames": 0, "window": 10}},
        }
    )


@pytest.fixture(scope="module")
def demo_drive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_drive(tmp_path_factory.mktemp("demo"), frames=24)


@pytest.mark.parametrize(
    ("name", "frames", "scored", "poses"),
    [
        ("kitti_object", 3, 3, False),
        ("kitti_raw", 24, 24, True),
        ("nuscenes", 1, 1, True),
        ("av2", 2, 2, True),
        ("comma2k19", 1200, 0, True),  # poses only, no video in the bundled copy: nothing to label
        ("mcap", 4, 4, True),
    ],
)
def test_replay_every_layout(
    name: str, frames: int, scored: int, poses: bool, tmp_path: Path, demo_drive: Path
) -> None:
    drives = {
        "kitti_object": DATA / "kitti_object",
        "kitti_raw": demo_drive,
        "nuscenes": DATA / "nuscenes_sample",
        "av2": next((DATA / "av2_sensor").iterdir()),
        "comma2k19": DATA / "comma2k19_segment",
    }
    if name == "mcap":
        drive = tmp_path / "drive.mcap"
        write_recording(drive, n=frames)
    else:
        drive = drives[name]
    result = replay(drive, _config(tmp_path), report_dir=tmp_path / "report")
    s = result.summary
    assert s.frames_total == frames
    assert s.frames_scored == scored  # all real data passes the gate
    assert s.frames_selected <= scored
    if scored >= 3:
        assert s.frames_selected > 0
    if scored == 0:
        assert s.dropped_by_reason == {"no_sensor_data": frames}
    assert s.provider == "CPUExecutionProvider"
    names = {p.name for p in result.report_files}
    assert {"summary.json", "frames.csv", "score_timeline.png"} <= names
    assert ("ego_track.png" in names) == poses
    on_disk = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert on_disk["frames_selected"] == s.frames_selected


def test_same_drive_config_models_seed_same_selection(tmp_path: Path, demo_drive: Path) -> None:
    cfg = _config(tmp_path)
    first = replay(demo_drive, cfg, report_dir=tmp_path / "a")
    second = replay(demo_drive, cfg, report_dir=tmp_path / "b")
    assert first.summary.selected_seqs == second.summary.selected_seqs
    assert (tmp_path / "a" / "frames.csv").read_bytes() == (
        tmp_path / "b" / "frames.csv"
    ).read_bytes()
    rand = replay(demo_drive, cfg, strategy="random")
    assert rand.summary.strategy == "random"
    assert rand.summary.frames_total == first.summary.frames_total


def test_cli_replay_prints_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file = tmp_path / "agent.toml"
    cam = build_camera(tmp_path / "camera.onnx")
    cfg_file.write_text(
        f'[models]\ncamera = "{cam}"\n[selector.budget]\ntarget_rate = 0.5\ncold_start_frames = 0\n'
    )
    rc = main(
        [
            "replay",
            str(DATA / "kitti_object"),
            "--config",
            str(cfg_file),
            "--report",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "frames selected" in out
    assert "report: " in out
    assert "problems.csv" in out
    assert "note:" not in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[selector.budget]\ntarget_rat = 0.5\n")
    assert main(["replay", str(DATA / "kitti_object"), "--config", str(bad)]) == 2
    assert "unknown key 'selector.budget.target_rat'" in capsys.readouterr().err


def test_cli_replay_without_models_is_refused_unless_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --config (or one without [models]) used to replay with no model at all, every
    score 0, and say nothing; now it is refused, and --no-models says it on the way."""
    drive = str(DATA / "kitti_object")
    assert main(["replay", drive, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no model configured" in err
    assert "--no-models" in err
    assert "--config deploy/demo/agent.toml" in err
    cfg_file = tmp_path / "agent.toml"
    cfg_file.write_text("[selector.budget]\ncold_start_frames = 0\n")
    assert main(["replay", drive, "--config", str(cfg_file), "--no-progress"]) == 2
    assert str(cfg_file) in capsys.readouterr().err
    assert main(["replay", drive, "--config", str(cfg_file), "--no-models", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "without models (--no-models)" in out
    assert "note: no models" in out


def test_cli_replay_checks_the_report_dir_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    started: list[Path] = []
    monkeypatch.setattr("edge_agent.replay.open_source", lambda p, **_: started.append(p))
    rc = main(["replay", str(DATA / "kitti_object"), "--no-models", "--report", str(blocker / "r")])
    captured = capsys.readouterr()
    assert rc == 2
    assert started == []  # refused before a single frame was read
    assert f"--report {blocker / 'r'}: cannot write the report there" in captured.err
    assert "Traceback" not in captured.err
    assert "frames selected" not in captured.out


def test_replay_inside_the_cold_start_says_why_nothing_was_selected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cam = build_camera(tmp_path / "camera.onnx")
    cfg_file = tmp_path / "agent.toml"
    cfg_file.write_text(
        f'[models]\ncamera = "{cam}"\n[selector.budget]\ntarget_rate = 0.1\n'
        "cold_start_frames = 10\n"
    )
    rc = main(
        [
            "replay",
            str(DATA / "kitti_object"),
            "--config",
            str(cfg_file),
            "--report",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    (note,) = summary["notes"]
    assert "shorter than the cold start" in note
    assert "cold_start_frames = 10" in note
    # inside the cold start frames are only explored (at random, at the target rate)
    if summary["frames_selected"] == 0:
        assert "nothing was selected" in note
    else:
        assert "cold-start exploration, not model scores" in note
    assert f"note: {note}" in out


def test_speed_parsing_and_pacing() -> None:
    assert parse_speed("max") is None
    assert parse_speed("realtime") == 1.0
    assert parse_speed("2") == 2.0
    with pytest.raises(ValueError, match="--speed must be"):
        parse_speed("fast")
    with pytest.raises(ValueError, match="--speed must be"):
        parse_speed("0")

    class Item:
        def __init__(self, ts: int) -> None:
            self.timestamp_ns = ts

    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(round(s, 6))
        now[0] += s

    items = [Item(t * 100_000_000) for t in range(4)]  # 10 Hz
    out = list(paced(iter(items), 2.0, clock=lambda: now[0], sleep=sleep))  # type: ignore[arg-type]
    assert len(out) == 4
    assert slept == [0.05, 0.05, 0.05]  # twice real time: 50 ms between 100 ms frames


def _bad_kitti_object(root: Path) -> dict[str, str]:
    """A copy of the real KITTI object frames spoiled in three ways; path -> expected reason."""
    src = DATA / "kitti_object" / "training"
    train = root / "training"
    for sub in ("image_2", "velodyne"):
        shutil.copytree(src / sub, train / sub)
    for stem in ("000000", "000001", "000002"):  # 9 frames: the 3 real ones, three times
        for k in (1, 2):
            new = f"{k}{stem[1:]}"
            shutil.copy(src / "image_2" / f"{stem}.png", train / "image_2" / f"{new}.png")
            shutil.copy(src / "velodyne" / f"{stem}.bin", train / "velodyne" / f"{new}.bin")
    random_bin = train / "velodyne" / "100001.bin"
    random_bin.write_bytes(np.random.default_rng(1).bytes(16 * 100_000))
    dark = train / "image_2" / "200002.png"
    Image.new("RGB", (1242, 375)).save(dark)
    cut = train / "velodyne" / "100002.bin"
    cut.write_bytes(cut.read_bytes()[:-6])
    gone = train / "image_2" / "200000.png"
    gone.unlink()
    both_bad = (train / "image_2" / "200001.png", train / "velodyne" / "200001.bin")
    for path in both_bad:
        path.write_bytes(b"")
    return {
        str(random_bin): "quality_lidar_out_of_range",
        str(dark): "quality_image_dark",
        str(cut): "source_bad_size",
        str(gone): "source_missing_file",
        str(both_bad[0]): "source_truncated",
        str(both_bad[1]): "source_truncated",
    }


def test_report_names_every_bad_file_with_its_reason(tmp_path: Path) -> None:
    bad = _bad_kitti_object(tmp_path / "kitti_object")
    result = replay(tmp_path / "kitti_object", _config(tmp_path), report_dir=tmp_path / "r")
    with (tmp_path / "r" / "problems.csv").open() as fh:
        problems = list(csv.DictReader(fh))
    named = {p["path"]: p["reason"] for p in problems}
    for path, reason in bad.items():
        assert named.get(path) == reason, (path, problems)
    outcome = {p["path"]: p["outcome"] for p in problems}
    # every frame with one readable sensor is scored on it; the one with none is dropped
    assert [outcome[p] for p in bad] == ["sensor_dropped"] * 4 + ["frame_dropped"] * 2
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["frames_total"] == 9
    assert s["problems_by_reason"] == {
        "quality_image_dark": 1,
        "quality_lidar_out_of_range": 1,
        "source_bad_size": 1,
        "source_missing_file": 1,
        "source_truncated": 2,
    }
    assert s["dropped_by_reason"]["source_truncated"] == 1
    assert s["quality_by_reason"]["lidar_out_of_range"] == 1
    assert s["quality_by_reason"]["image_dark"] == 1
    assert s["quality_by_reason"]["sensor_dropped"] == 2
    assert s["quality_by_reason"]["passed"] == 6  # 8 frames reached the gate
    assert s["frames_with_problems"] == 5
    assert result.summary.frames_scored == 8
    with (tmp_path / "r" / "frames.csv").open() as fh:
        frames = list(csv.DictReader(fh))
    files = [f["files"] for f in frames]
    assert all(files)
    assert any(str(next(iter(bad))) in f for f in files)
