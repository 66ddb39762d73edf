"""``ingest-service export``: every format the API has, every labeled task (no page limit)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest_service.blobrefs import BlobRefs
from ingest_service.blobstore import LocalBlobStore
from ingest_service.queue import FrameRecord, LabelQueue
from schemas.messages import (
    CameraPayload,
    EgoPose,
    FrameEnvelope,
    ModelInfo,
    SelectionRecord,
)
from schemas.pointcloud import lidar_payload

pytestmark = pytest.mark.integration

SHA = "0" * 64
TASKS = 1_001  # one more than the API's KITTI page (1 000), which the CLI used to stop at


def _envelope(seq: int, jpeg: bytes, points: np.ndarray) -> FrameEnvelope:
    return FrameEnvelope(
        vehicle_id="veh-1",
        drive_id="drive-1",
        frame_seq=seq,
        timestamp_ns=1_700_000_000_000_000_000 + seq,
        pose=EgoPose(position_local=(0.0, 0.0, 0.0)),
        cameras=(CameraPayload("CAM_FRONT", "jpeg", 32, 24, jpeg),),
        lidar=lidar_payload(points),
        selection=SelectionRecord(0.5, 0.1, "entropy", "uncertain", SHA),
        models=(ModelInfo("detector", "1.0.0", SHA),),
        agent_version="0.1.0",
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A service configuration over a queue of TASKS labeled tasks (SQLite, local blobs)."""
    root = tmp_path_factory.mktemp("export-cli")
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (90, 120, 200)).save(buf, format="JPEG")
    rng = np.random.default_rng(7)
    points = rng.uniform(-20, 20, size=(64, 4)).astype(np.float32)
    blobs = LocalBlobStore(root / "blobs", fsync=False)
    label = {
        "boxes_2d": [
            {"camera": "CAM_FRONT", "class_name": "car", "x1": 1, "y1": 2, "x2": 9, "y2": 8}
        ]
    }
    with LabelQueue.open(str(root / "queue.db")) as queue:
        for seq in range(1, TASKS + 1):
            env = _envelope(seq, buf.getvalue(), points)
            refs = BlobRefs.put_envelope(blobs, env)
            queue.ingest_frame(FrameRecord.from_envelope(env), refs.queue_refs())
            task = queue.claim("alice", 600)
            assert task is not None
            queue.submit_label(task.id, "alice", label)
    path = root / "ingest.toml"
    path.write_text(
        f"""
[kafka]
bootstrap_servers = ["127.0.0.1:9"]
topic = "unused"

[queue]
database = "{root / "queue.db"}"

[blobs]
root = "{root / "blobs"}"
fsync = false

[api]
enabled = false
"""
    )
    return path


def _export(config: Path, fmt: str, out: Path) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ingest_service.cli",
            "export",
            "--config",
            str(config),
            "--format",
            fmt,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"all {TASKS} labeled tasks" in proc.stdout
    return proc.stdout


def test_kitti_export_has_every_labeled_task(config: Path, tmp_path: Path) -> None:
    _export(config, "kitti", tmp_path / "kitti.zip")
    with zipfile.ZipFile(tmp_path / "kitti.zip") as zf:
        assert zf.testzip() is None
        assert len(zf.read("mapping.txt").decode().splitlines()) == TASKS
        names = zf.namelist()
        assert sum(n.startswith("velodyne/") for n in names) == TASKS
        assert sum(n.startswith("image_2/") for n in names) == TASKS
    assert not list(tmp_path.glob(".kitti.zip.*")), "the temporary file was left behind"


def test_every_api_format_is_offered_and_complete(config: Path, tmp_path: Path) -> None:
    _export(config, "coco", tmp_path / "coco.json")
    coco = json.loads((tmp_path / "coco.json").read_text())
    assert len(coco["images"]) == TASKS
    assert len(coco["annotations"]) == TASKS
    _export(config, "cvat", tmp_path / "cvat.xml")
    root = ET.parse(tmp_path / "cvat.xml").getroot()
    assert len(root.findall("image")) == TASKS
    assert len(root.findall("image/box")) == TASKS
    _export(config, "labelstudio", tmp_path / "ls.json")
    tasks = json.loads((tmp_path / "ls.json").read_text())
    assert len(tasks) == TASKS
    assert all(t["data"]["image"].startswith("http://") for t in tasks)
