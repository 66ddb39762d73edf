"""The labeling API over real HTTP (uvicorn on a free port) on SQLite and real PostgreSQL.

Frames are ingested the way the consumer does it (blobs put from a wire envelope, then the
frame in one queue transaction) with real nuScenes camera images and a real LiDAR sweep.
"""

from __future__ import annotations

import io
import json
import threading
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from ingest_service.api import ApiServer, create_app
from ingest_service.blobrefs import BlobRefs
from ingest_service.blobstore import BlobRef, LocalBlobStore
from ingest_service.queue import FrameRecord, LabelQueue, QueueConfig
from schemas.messages import (
    CameraPayload,
    EgoPose,
    FrameEnvelope,
    ModelInfo,
    SelectionRecord,
)
from schemas.pointcloud import decode_points, lidar_payload

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[2] / "data" / "nuscenes_sample"
TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}
ALICE = {"Authorization": "Bearer tok-alice"}
BOB = {"Authorization": "Bearer tok-bob"}
SHA = "0" * 64


def _camera_files() -> dict[str, Path]:
    out = {}
    for path in sorted(DATA.glob("*.jpg")):
        out[path.name.split("__")[1]] = path
    return out


@pytest.fixture(scope="module")
def sensor_data() -> tuple[dict[str, bytes], np.ndarray]:
    cams = {name: path.read_bytes() for name, path in _camera_files().items()}
    (sweep,) = DATA.glob("*LIDAR_TOP*.pcd.bin")
    points = np.fromfile(sweep, dtype="<f4").reshape(-1, 5)
    return cams, points


def envelope(seq: int, score: float, cams: dict[str, bytes], points: np.ndarray) -> FrameEnvelope:
    cameras = []
    for name, data in cams.items():
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
        cameras.append(CameraPayload(name, "jpeg", width, height, data))
    return FrameEnvelope(
        vehicle_id="veh-1",
        drive_id="drive-1",
        frame_seq=seq,
        timestamp_ns=1_532_402_927_612_460_000 + seq,
        pose=EgoPose(position_local=(0.0, 0.0, 0.0)),
        cameras=tuple(cameras),
        lidar=lidar_payload(points),
        selection=SelectionRecord(score, 0.1, "entropy", "uncertain", SHA),
        models=(ModelInfo("detector", "1.0.0", SHA),),
        agent_version="0.1.0",
    )


@pytest.fixture
def target(queue_db: str) -> str:
    """A fresh label-queue database of each backend (``queue_db`` in conftest.py)."""
    return queue_db


@dataclass
class Env:
    client: httpx.Client
    queue: LabelQueue  # a second connection, for setup and checks
    blobs: LocalBlobStore
    refs: dict[int, BlobRefs]  # frame seq -> refs
    cams: dict[str, bytes]
    points: np.ndarray
    calls: list[tuple[str, int, float]]

    def ingest(self, seq: int, score: float) -> None:
        env = envelope(seq, score, self.cams, self.points)
        refs = BlobRefs.put_envelope(self.blobs, env)
        with self.queue.transaction() as tx:
            assert tx.ingest_frame(FrameRecord.from_envelope(env), refs.queue_refs())
        self.refs[seq] = refs

    def claim(self, headers: dict[str, str] = ALICE) -> dict[str, object]:
        resp = self.client.post("/v1/tasks/claim", headers=headers)
        assert resp.status_code == 200, resp.text
        body: dict[str, object] = resp.json()
        return body


@pytest.fixture
def env(
    target: str, tmp_path: Path, sensor_data: tuple[dict[str, bytes], np.ndarray]
) -> Iterator[Env]:
    cams, points = sensor_data
    config = QueueConfig(ageing_per_hour=0.0)
    blobs = LocalBlobStore(tmp_path / "blobs", fsync=False)
    calls: list[tuple[str, int, float]] = []
    with (
        LabelQueue.open(target, config=config) as api_queue,
        LabelQueue.open(target, config=config) as queue,
    ):
        app = create_app(
            api_queue,
            blobs,
            tokens=TOKENS,
            lease_s=60,
            metrics=lambda route, code, s: calls.append((route, code, s)),
        )
        with ApiServer(app, port=0) as server, httpx.Client(base_url=server.url) as client:
            yield Env(client, queue, blobs, {}, cams, points, calls)


def test_claims_come_in_priority_order_with_data_urls(env: Env) -> None:
    for seq, score in [(1, 0.2), (2, 0.9), (3, 0.5)]:
        env.ingest(seq, score)
    claimed = [env.claim() for _ in range(3)]
    assert [c["frame_key"] for c in claimed] == [
        "veh-1/drive-1/000002",
        "veh-1/drive-1/000003",
        "veh-1/drive-1/000001",
    ]
    assert [c["priority"] for c in claimed] == pytest.approx([0.9, 0.5, 0.2])
    data = claimed[0]["data"]
    assert isinstance(data, dict)
    assert sorted(data["cameras"]) == sorted(env.cams)
    assert data["lidar"] == f"{env.client.base_url}/v1/tasks/{claimed[0]['task_id']}/lidar"
    assert env.client.post("/v1/tasks/claim", headers=ALICE).status_code == 204
    assert ("/v1/tasks/claim", 200) in {(r, c) for r, c, _ in env.calls}


def test_sensor_data_is_served_as_stored(env: Env) -> None:
    env.ingest(1, 0.5)
    task = env.claim()
    urls = task["data"]
    assert isinstance(urls, dict)
    for name, data in env.cams.items():
        resp = env.client.get(urls["cameras"][name], headers=ALICE)
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "image/jpeg"
        assert resp.content == data  # byte for byte
    assert (
        env.client.get(f"/v1/tasks/{task['task_id']}/cameras/NOPE", headers=ALICE).status_code
        == 404
    )

    expected = decode_points(env.blobs.get(env.refs[1].lidar.ref)).points  # type: ignore[union-attr]
    resp = env.client.get(urls["lidar"], params={"format": "bin"}, headers=ALICE)
    assert resp.status_code == 200
    assert resp.headers["x-point-fields"] == "x,y,z,intensity,ring"
    got = np.frombuffer(resp.content, dtype="<f4").reshape(-1, 5)
    np.testing.assert_array_equal(got, expected)
    assert np.abs(got[:, :3] - env.points[:, :3]).max() <= 0.0005 + 1e-5  # the codec's quantum

    fal = env.client.get(urls["lidar"], headers=ALICE)
    assert fal.content == env.blobs.get(env.refs[1].lidar.ref)  # type: ignore[union-attr]
    pcd = env.client.get(urls["lidar"], params={"format": "pcd"}, headers=ALICE).content
    header, _, body = pcd.partition(b"DATA binary\n")
    assert b"FIELDS x y z intensity ring" in header
    np.testing.assert_array_equal(np.frombuffer(body, dtype="<f4").reshape(-1, 5), expected)
    ascii_pcd = env.client.get(urls["lidar"], params={"format": "pcd-ascii"}, headers=ALICE)
    assert f"POINTS {len(expected)}".encode() in ascii_pcd.content


def test_submit_label_then_task_shows_it(env: Env) -> None:
    env.ingest(1, 0.5)
    tid = env.claim()["task_id"]
    label = {
        "boxes_2d": [
            {"camera": "CAM_FRONT", "class_name": "car", "x1": 10, "y1": 20, "x2": 300, "y2": 200}
        ],
        "boxes_3d": [
            {
                "class_name": "car",
                "center_xyz": [10.0, -2.0, 0.5],
                "size_lwh": [4.5, 1.9, 1.6],
                "yaw_rad": 0.3,
            }
        ],
    }
    resp = env.client.post(f"/v1/tasks/{tid}/labels", json=label, headers=ALICE)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"task_id": tid, "state": "labeled", "boxes_2d": 1, "boxes_3d": 1}
    task = env.client.get(f"/v1/tasks/{tid}", headers=BOB).json()
    assert task["state"] == "labeled"
    assert task["labels"]["boxes_2d"][0]["x2"] == 300
    assert task["labels"]["boxes_3d"][0]["size_lwh"] == [4.5, 1.9, 1.6]
    assert task["frame"]["model_versions"] == {"detector": "1.0.0"}
    again = env.client.post(f"/v1/tasks/{tid}/labels", json=label, headers=ALICE)
    assert again.status_code == 409
    assert again.json()["detail"].startswith(f"task {tid} is already labeled")


def test_missing_or_unknown_token_is_401(env: Env) -> None:
    resp = env.client.post("/v1/tasks/claim")
    assert resp.status_code == 401
    assert "Authorization: Bearer" in resp.json()["detail"]
    assert resp.headers["www-authenticate"].startswith("Bearer")
    resp = env.client.get("/v1/queue/stats", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401
    assert "unknown API token" in resp.json()["detail"]


def test_another_labeler_gets_409_and_unknown_task_404(env: Env) -> None:
    env.ingest(1, 0.5)
    tid = env.claim(ALICE)["task_id"]
    resp = env.client.post(f"/v1/tasks/{tid}/labels", json={}, headers=BOB)
    assert resp.status_code == 409
    detail = resp.json()["detail"]
    assert detail == (
        f"task {tid} is leased to 'alice', not to you (bob); claim again (POST /v1/tasks/claim)"
    )
    resp = env.client.post(f"/v1/tasks/{tid}/skip", json={"reason": "x"}, headers=BOB)
    assert resp.status_code == 409
    resp = env.client.get("/v1/tasks/9999", headers=ALICE)
    assert resp.status_code == 404
    assert resp.json()["detail"] == "task 9999 does not exist"
    assert env.client.post("/v1/tasks/9999/labels", json={}, headers=ALICE).status_code == 404


def test_invalid_boxes_are_422_naming_the_field(env: Env) -> None:
    env.ingest(1, 0.5)
    tid = env.claim()["task_id"]
    width = Image.open(io.BytesIO(env.cams["CAM_FRONT"])).size[0]
    outside = {"camera": "CAM_FRONT", "class_name": "car", "x1": 10, "y1": 10}
    resp = env.client.post(
        f"/v1/tasks/{tid}/labels",
        json={"boxes_2d": [{**outside, "x2": width + 50, "y2": 100}]},
        headers=ALICE,
    )
    assert resp.status_code == 422
    (err,) = resp.json()["detail"]
    assert err["loc"] == ["body", "boxes_2d", 0, "x2"]
    assert f"width {width}" in err["msg"]

    resp = env.client.post(
        f"/v1/tasks/{tid}/labels",
        json={"boxes_2d": [{**outside, "x2": 5, "y2": 100}]},
        headers=ALICE,
    )
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "boxes_2d", 0, "x2"]

    resp = env.client.post(
        f"/v1/tasks/{tid}/labels",
        json={"boxes_2d": [{**outside, "camera": "CAM_ROOF", "x2": 50, "y2": 100}]},
        headers=ALICE,
    )
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "boxes_2d", 0, "camera"]

    box3d = {"class_name": "car", "center_xyz": [1, 2, 3], "size_lwh": [4, 0, 1], "yaw_rad": 0}
    resp = env.client.post(f"/v1/tasks/{tid}/labels", json={"boxes_3d": [box3d]}, headers=ALICE)
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "boxes_3d", 0, "size_lwh", 1]
    # Nothing was stored: the task is still leased and can be labeled.
    assert env.client.get(f"/v1/tasks/{tid}", headers=ALICE).json()["state"] == "leased"


def test_skip_and_stats(env: Env) -> None:
    for seq in (1, 2, 3):
        env.ingest(seq, 0.1 * seq)
    tid = env.claim()["task_id"]
    resp = env.client.post(f"/v1/tasks/{tid}/skip", json={"reason": "lens covered"}, headers=ALICE)
    assert resp.status_code == 200
    assert resp.json() == {"task_id": tid, "state": "skipped", "reason": "lens covered"}
    assert (
        env.client.post(f"/v1/tasks/{tid}/skip", json={"reason": "  "}, headers=ALICE).status_code
        == 422
    )
    env.claim()
    stats = env.client.get("/v1/queue/stats", headers=ALICE).json()
    assert stats == {"new": 1, "leased": 1, "labeled": 0, "skipped": 1, "expired": 0}


def _label_two(env: Env) -> list[int]:
    env.ingest(1, 0.9)
    env.ingest(2, 0.8)
    ids = []
    for i in range(2):
        tid = env.claim()["task_id"]
        label = {
            "boxes_2d": [
                {
                    "camera": "CAM_FRONT",
                    "class_name": "car",
                    "x1": 10,
                    "y1": 20,
                    "x2": 110,
                    "y2": 80,
                },
                {
                    "camera": "CAM_BACK",
                    "class_name": "pedestrian",
                    "x1": 5,
                    "y1": 5,
                    "x2": 50,
                    "y2": 150,
                },
            ],
            "boxes_3d": [
                {
                    "class_name": "car",
                    "center_xyz": [10.0 + i, -2.0, 0.5],
                    "size_lwh": [4.5, 1.9, 1.6],
                    "yaw_rad": 0.3,
                }
            ],
        }
        assert env.client.post(f"/v1/tasks/{tid}/labels", json=label, headers=ALICE).is_success
        ids.append(int(tid))  # type: ignore[call-overload]
    return ids


def test_exports(env: Env) -> None:
    ids = _label_two(env)
    resp = env.client.get("/v1/export/coco", headers=ALICE)
    assert resp.headers["x-task-count"] == "2"
    assert resp.headers["x-last-task-id"] == str(max(ids))
    coco = resp.json()
    page = env.client.get("/v1/export/coco", params={"after_task_id": ids[0]}, headers=ALICE)
    assert [im["fleetal_task_id"] for im in page.json()["images"]] == [ids[1]] * len(env.cams)
    assert set(coco) >= {"images", "annotations", "categories", "info"}
    assert len(coco["images"]) == 2 * len(env.cams)
    assert len(coco["annotations"]) == 4
    assert [c["name"] for c in coco["categories"]] == ["car", "pedestrian"]
    front = next(a for a in coco["annotations"] if a["category_id"] == 1)
    assert front["bbox"] == [10, 20, 100, 60]
    assert env.client.get(coco["images"][0]["coco_url"], headers=ALICE).status_code == 200

    resp = env.client.get("/v1/export/kitti", headers=ALICE)
    assert resp.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        names = set(zf.namelist())
        fid = f"{ids[0]:06d}"
        assert {f"label_2/{fid}.txt", f"image_2/{fid}.jpg", f"velodyne/{fid}.bin"} <= names
        lines = zf.read(f"label_2/{fid}.txt").decode().splitlines()
        assert len(lines) == 2  # the 3D box and the CAM_FRONT box
        assert all(len(line.split()) == 15 for line in lines)
        assert zf.read(f"image_2/{fid}.jpg") == env.cams["CAM_FRONT"]
        velo = np.frombuffer(zf.read(f"velodyne/{fid}.bin"), dtype="<f4").reshape(-1, 4)
        assert len(velo) == len(env.points)

    xml = env.client.get("/v1/export/cvat", headers=ALICE)
    root = ET.fromstring(xml.content)
    assert len(root.findall("image")) == 2 * len(env.cams)
    assert len(root.findall("image/box")) == 4
    urls = env.client.get("/v1/export/cvat", params={"format": "urls"}, headers=ALICE).text
    assert len(urls.splitlines()) == 2 * len(env.cams)

    ls = env.client.get("/v1/export/labelstudio", headers=ALICE).json()
    assert len(ls) == 2 * len(env.cams)
    assert ls[0]["data"]["image"].startswith(str(env.client.base_url))


def test_import_labelstudio_and_cvat_onto_leased_tasks(env: Env) -> None:
    env.ingest(1, 0.9)
    env.ingest(2, 0.8)
    first, second = env.claim()["task_id"], env.claim()["task_id"]
    tasks = env.client.get(
        "/v1/export/labelstudio", params={"state": "leased"}, headers=ALICE
    ).json()
    assert {t["data"]["fleetal_task_id"] for t in tasks} == {first, second}
    width, height = Image.open(io.BytesIO(env.cams["CAM_FRONT"])).size
    for t in tasks:
        result = []
        if t["data"]["camera"] == "CAM_FRONT" and t["data"]["fleetal_task_id"] == first:
            result.append(
                {
                    "type": "rectanglelabels",
                    "original_width": width,
                    "original_height": height,
                    "value": {
                        "x": 10.0,
                        "y": 20.0,
                        "width": 30.0,
                        "height": 40.0,
                        "rotation": 0,
                        "rectanglelabels": ["car"],
                    },
                }
            )
        t["annotations"] = [{"result": result}]
    ls_tasks = [t for t in tasks if t["data"]["fleetal_task_id"] == first]
    report = env.client.post(
        "/v1/import/labelstudio", content=json.dumps(ls_tasks), headers=ALICE
    ).json()
    assert report["labeled"] == 1
    assert report["failed"] == 0
    labels = env.client.get(f"/v1/tasks/{first}", headers=ALICE).json()["labels"]
    (box,) = labels["boxes_2d"]
    assert box["x1"] == pytest.approx(0.1 * width)
    assert box["y2"] == pytest.approx(0.6 * height)

    xml = env.client.get("/v1/export/cvat", params={"state": "leased"}, headers=ALICE).text
    root = ET.fromstring(xml)
    image = next(i for i in root.iter("image") if i.get("name", "").endswith("CAM_BACK.jpg"))
    ET.SubElement(image, "box", label="truck", xtl="1", ytl="2", xbr="300.5", ybr="400.25")
    # bob holds no lease on it: refused per task, nothing stored
    resp = env.client.post("/v1/import/cvat", content=ET.tostring(root), headers=BOB)
    assert resp.json()["failed"] == 1
    assert "claim" in resp.json()["results"][0]["detail"]
    resp = env.client.post("/v1/import/cvat", content=ET.tostring(root), headers=ALICE)
    assert resp.json()["labeled"] == 1, resp.text
    labels = env.client.get(f"/v1/tasks/{second}", headers=ALICE).json()["labels"]
    assert labels["boxes_2d"] == [
        {
            "camera": "CAM_BACK",
            "class_name": "truck",
            "x1": 1.0,
            "y1": 2.0,
            "x2": 300.5,
            "y2": 400.25,
        }
    ]
    bad = env.client.post("/v1/import/cvat", content=b"<not xml", headers=ALICE)
    assert bad.status_code == 422


def test_oversized_import_is_413(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import ingest_service.api.routes.imports as api_imports

    monkeypatch.setattr(api_imports, "MAX_UPLOAD_BYTES", 1000)
    resp = env.client.post(
        "/v1/import/labelstudio", content=b"[" + b" " * 2000 + b"]", headers=ALICE
    )
    assert resp.status_code == 413
    assert "larger than" in resp.json()["detail"]


def test_missing_blob_is_500_naming_it(env: Env) -> None:
    env.ingest(1, 0.5)
    tid = env.claim()["task_id"]
    ref = env.refs[1].cameras["CAM_FRONT"].ref
    env.blobs.delete(ref)
    resp = env.client.get(f"/v1/tasks/{tid}/cameras/CAM_FRONT", headers=ALICE)
    assert resp.status_code == 500
    assert ref.sha256 in resp.json()["detail"]


def test_openapi_lists_the_endpoints(env: Env) -> None:
    doc = env.client.get("/openapi.json").json()
    paths = doc["paths"]
    for path, method in [
        ("/v1/tasks/claim", "post"),
        ("/v1/tasks/{task_id}", "get"),
        ("/v1/tasks/{task_id}/cameras/{name}", "get"),
        ("/v1/tasks/{task_id}/lidar", "get"),
        ("/v1/tasks/{task_id}/labels", "post"),
        ("/v1/tasks/{task_id}/skip", "post"),
        ("/v1/queue/stats", "get"),
        ("/v1/export/coco", "get"),
        ("/v1/export/kitti", "get"),
        ("/v1/export/cvat", "get"),
        ("/v1/export/labelstudio", "get"),
        ("/v1/import/cvat", "post"),
        ("/v1/import/labelstudio", "post"),
    ]:
        assert method in paths[path], path
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_small_responses_are_not_held_back_by_nagle(env: Env) -> None:
    # Without TCP_NODELAY on accepted sockets, a response written as headers then body waits
    # for the client's delayed ACK (~40 ms); see ApiServer.start.
    times = []
    for _ in range(9):
        resp = env.client.get("/v1/queue/stats", headers=ALICE)
        assert resp.status_code == 200
        times.append(resp.elapsed.total_seconds())
    assert sorted(times)[4] < 0.03


def test_lapsed_lease_is_409_saying_so(
    tmp_path: Path, sensor_data: tuple[dict[str, bytes], np.ndarray]
) -> None:
    cams, points = sensor_data
    blobs = LocalBlobStore(tmp_path / "blobs", fsync=False)
    target = str(tmp_path / "queue.db")
    with LabelQueue.open(target) as api_queue, LabelQueue.open(target) as queue:
        env_ = envelope(1, 0.5, {"CAM_FRONT": cams["CAM_FRONT"]}, points)
        queue.ingest_frame(
            FrameRecord.from_envelope(env_), BlobRefs.put_envelope(blobs, env_).queue_refs()
        )
        app = create_app(api_queue, blobs, tokens=TOKENS, lease_s=0.2)
        with ApiServer(app) as server, httpx.Client(base_url=server.url, headers=ALICE) as client:
            tid = client.post("/v1/tasks/claim").json()["task_id"]
            queue.expire_leases(now_ns=queue.clock() + 10**9)  # as the maintenance loop would
            resp = client.post(f"/v1/tasks/{tid}/labels", json={})
            assert resp.status_code == 409
            assert resp.json()["detail"].startswith(f"your lease on task {tid} expired")
            again = client.post("/v1/tasks/claim").json()
            assert again["task_id"] == tid
            assert again["attempts"] == 2
            assert client.post(f"/v1/tasks/{tid}/labels", json={}).status_code == 200


def test_non_finite_numbers_are_422_naming_the_field(env: Env) -> None:
    # JSON has no NaN or Infinity, but Python's parser (and so FastAPI's) reads them, and
    # 1e999 overflows to inf. Once refused, the 422 must still be writable as JSON.
    env.ingest(1, 0.5)
    tid = env.claim()["task_id"]
    box2d = '{"camera": "CAM_FRONT", "class_name": "car", "x1": 1, "y1": 2, "x2": %s, "y2": 9}'
    box3d = '{"class_name": "car", "center_xyz": [%s, 0, 0], "size_lwh": [4, %s, 1], "yaw_rad": %s}'
    v = "{v}"
    cases = {
        f'{{"boxes_2d": [{box2d % v}]}}': ["body", "boxes_2d", 0, "x2"],
        f'{{"boxes_3d": [{box3d % (v, 2, 0)}]}}': ["body", "boxes_3d", 0, "center_xyz", 0],
        f'{{"boxes_3d": [{box3d % (1, v, 0)}]}}': ["body", "boxes_3d", 0, "size_lwh", 1],
        f'{{"boxes_3d": [{box3d % (1, 2, v)}]}}': ["body", "boxes_3d", 0, "yaw_rad"],
    }
    for value in ("NaN", "Infinity", "-Infinity", "1e999"):
        for template, loc in cases.items():
            body = template.replace("{v}", value)
            resp = env.client.post(
                f"/v1/tasks/{tid}/labels",
                content=body,
                headers={**ALICE, "Content-Type": "application/json"},
            )
            assert resp.status_code == 422, (body, resp.text)
            errors = resp.json()["detail"]
            assert [e["loc"] for e in errors] == [loc], body
            assert "finite" in errors[0]["msg"]
    assert env.client.get(f"/v1/tasks/{tid}", headers=ALICE).json()["state"] == "leased"


def test_submitting_to_a_task_never_leased_says_it_is_not_leased(env: Env) -> None:
    env.ingest(1, 0.5)
    (tid,) = env.queue.db.execute("SELECT id FROM tasks").rows[0]
    for path, body in [("labels", {}), ("skip", {"reason": "x"})]:
        resp = env.client.post(f"/v1/tasks/{tid}/{path}", json=body, headers=ALICE)
        assert resp.status_code == 409
        detail = resp.json()["detail"]
        assert detail.startswith(f"task {tid} is not leased"), detail
        assert "expired" not in detail
        assert "POST /v1/tasks/claim" in detail


class _GatedBlobStore(LocalBlobStore):
    """The real local store, holding back the ``nth`` read of one blob until ``gate`` opens."""

    def __init__(self, root: Path, sha256: str, nth: int) -> None:
        super().__init__(root, fsync=False)
        self.sha256, self.nth, self.reads = sha256, nth, 0
        self.gate = threading.Event()
        self.timed_out = False  # the held-back read gave up waiting for the gate

    def get(self, ref: BlobRef) -> bytes:
        if ref.sha256 == self.sha256:
            self.reads += 1
            if self.reads == self.nth:
                self.timed_out = not self.gate.wait(10)
        return super().get(ref)


def test_kitti_export_streams_before_the_zip_is_built(
    tmp_path: Path, sensor_data: tuple[dict[str, bytes], np.ndarray]
) -> None:
    # The sweep of the second frame is held back: a server that builds the whole zip before
    # answering sends nothing until the gate times out; a streaming one has sent the first
    # frame's entries by then.
    cams, points = sensor_data
    target = str(tmp_path / "queue.db")
    seed = LocalBlobStore(tmp_path / "blobs", fsync=False)
    with LabelQueue.open(target) as api_queue, LabelQueue.open(target) as queue:
        for seq in (1, 2, 3):
            env_ = envelope(seq, 0.5, {"CAM_FRONT": cams["CAM_FRONT"]}, points)
            refs = BlobRefs.put_envelope(seed, env_)
            queue.ingest_frame(FrameRecord.from_envelope(env_), refs.queue_refs())
            task = queue.claim("alice", 60)
            assert task is not None
            queue.submit_label(task.id, "alice", {})
        assert refs.lidar is not None
        blobs = _GatedBlobStore(tmp_path / "blobs", refs.lidar.ref.sha256, nth=2)
        app = create_app(api_queue, blobs, tokens=TOKENS, metrics=lambda *_: None)
        with (
            ApiServer(app) as server,
            httpx.Client(base_url=server.url, headers=ALICE) as client,
            client.stream("GET", "/v1/export/kitti", timeout=60) as resp,
        ):
            assert resp.status_code == 200
            assert resp.headers["x-task-count"] == "3"
            chunks = resp.iter_bytes()
            first = next(chunks)
            assert not blobs.timed_out, "first bytes arrived only after the zip was built"
            assert first.startswith(b"PK\x03\x04")
            blobs.gate.set()
            body = first + b"".join(chunks)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        assert {f"velodyne/{i:06d}.bin" for i in (1, 2, 3)} <= names
        assert zf.read("image_2/000002.jpg") == cams["CAM_FRONT"]
        assert len(zf.read("mapping.txt").decode().splitlines()) == 3
