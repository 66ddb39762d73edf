"""``make demo``'s whole turn of the loop, on the session's real broker: a replay selects
frames -> the ingest service queues them -> the scripted annotator labels them over the API
-> a retrain (the real fine-tune trainer, quick models) -> MLflow registry -> signed model on
the models topic -> the vehicle swaps -> the second replay runs the new model."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

from deploy.demo.build_drive import build as build_drive
from deploy.demo.run import Topics, demo_agent_config, run_loop
from deploy.kafka.broker import LocalKafka
from edge_agent.models import manifest

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 36  # three scenes, none a holdout image: kitti/000000, kitti/000002, nuscenes/CAM_FRONT
# 26 frames after the cold start: at the demo's 10 % the quick models' selection of so few
# frames can be empty; a quarter leaves the selector room while still gating by score
TARGET_RATE = 0.25


def test_one_turn_of_the_loop_ends_with_the_vehicle_on_the_retrained_model(
    kafka: LocalKafka, topic: str, quick_models: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("camera.onnx", "camera.pt", "lidar.onnx", "lidar.pt"):
        shutil.copy(quick_models / name, models / name)
    out = tmp_path / "demo"
    drive = build_drive(out, FRAMES)
    cfg = demo_agent_config(ROOT / "deploy" / "demo" / "agent.toml", models, out)
    budget = dataclasses.replace(cfg.selector.budget, target_rate=TARGET_RATE)
    cfg = dataclasses.replace(cfg, selector=dataclasses.replace(cfg.selector, budget=budget))
    topics = Topics(frames=topic, models=f"{topic}-models")
    kafka.create_topic(topics.models, partitions=1)

    turn = run_loop(drive, cfg, kafka.bootstrap, out, models, topics=topics, epochs=1, margin=1.0)

    selected = turn.first.summary.frames_selected
    assert selected > 0
    assert sum(turn.queued.values()) == selected  # every selected frame became a task
    done = turn.annotation
    assert done.labeled == selected  # no holdout scene in these frames: all can be labelled
    assert done.skipped == 0, done.skip_reasons
    job = turn.job
    assert job["state"] == "succeeded", job["detail"]
    assert job["labels_used"] == done.labeled
    assert f"{done.labeled} queue images from {done.labeled} tasks" in job["detail"]
    assert turn.camera_version.endswith(f"-ft{job['id']}")
    assert turn.second.summary.model_versions["camera"].endswith(turn.camera_version)
    assert (
        turn.first.summary.model_versions["camera"] != turn.second.summary.model_versions["camera"]
    )
    entry = manifest.read(cfg.manifest_path)["camera"]
    assert entry.current.version == turn.camera_version
    assert hashlib.sha256(entry.current.path.read_bytes()).hexdigest() == entry.current.sha256
    assert entry.previous is not None
    assert entry.previous.path == models / "camera.onnx"
