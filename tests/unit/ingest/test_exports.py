"""Exports and imports: COCO, KITTI, CVAT for images 1.1, Label Studio, PCD (pure functions)."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import tracemalloc
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from ingest_service.exports import (
    ImageInfo,
    LabeledFrame,
    boxes_from_payload,
    categories,
    payload_from_boxes,
)
from ingest_service.exports.coco import to_coco
from ingest_service.exports.cvat import from_cvat_xml, parse_image_name, to_cvat_urls, to_cvat_xml
from ingest_service.exports.kitti import (
    KittiItem,
    box3d_from_kitti,
    iter_kitti_zip,
    label_lines,
    to_kitti_zip,
)
from ingest_service.exports.labelstudio import from_labelstudio, to_labelstudio
from ingest_service.exports.pcd import to_pcd
from schemas.messages import Box2D, Box3D

FIELDS5 = ("x", "y", "z", "intensity", "ring")
BASE = "http://api.example:8080/v1/tasks"


def image(task_id: int, camera: str, width: int = 1600, height: int = 900) -> ImageInfo:
    return ImageInfo(camera, width, height, "jpeg", f"{BASE}/{task_id}/cameras/{camera}")


def frame(
    task_id: int, boxes_2d: tuple[Box2D, ...] = (), boxes_3d: tuple[Box3D, ...] = ()
) -> LabeledFrame:
    return LabeledFrame(
        task_id=task_id,
        frame_key=f"veh-1/d1/{task_id:06d}",
        images=(image(task_id, "CAM_FRONT"), image(task_id, "CAM_BACK", 800, 600)),
        boxes_2d=boxes_2d,
        boxes_3d=boxes_3d,
        lidar_url=f"{BASE}/{task_id}/lidar",
    )


FRAMES = [
    frame(
        7,
        (
            Box2D("CAM_FRONT", "car", 10.0, 20.0, 110.5, 80.25),
            Box2D("CAM_BACK", "pedestrian", 0.0, 0.0, 800.0, 600.0),
        ),
        (Box3D("car", (12.0, -3.5, 0.8), (4.5, 1.9, 1.6), 0.3),),
    ),
    frame(9, (Box2D("CAM_FRONT", "bus", 1.2345, 2.5, 1599.0, 899.9),)),
    frame(12),  # labeled "nothing here": a negative example
]


def test_payload_round_trip_and_errors() -> None:
    f = FRAMES[0]
    payload = json.loads(json.dumps(payload_from_boxes(f.boxes_2d, f.boxes_3d)))
    assert boxes_from_payload(payload) == (f.boxes_2d, f.boxes_3d)
    assert boxes_from_payload({}) == ((), ())
    with pytest.raises(ValueError, match=r"boxes_2d\[0\]\.x2"):
        boxes_from_payload(
            {
                "boxes_2d": [
                    {"camera": "C", "class_name": "car", "x1": 0, "y1": 0, "x2": "1", "y2": 1}
                ]
            }
        )
    with pytest.raises(ValueError, match=r"boxes_3d\[0\]\.size_lwh"):
        boxes_from_payload(
            {
                "boxes_3d": [
                    {"class_name": "car", "center_xyz": [0, 0, 0], "size_lwh": [1, 1], "yaw_rad": 0}
                ]
            }
        )
    assert categories(FRAMES) == ["bus", "car", "pedestrian"]


def test_coco() -> None:
    coco = to_coco(FRAMES)
    assert [c["name"] for c in coco["categories"]] == ["bus", "car", "pedestrian"]
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    assert len(coco["images"]) == 6  # every camera of every labeled frame
    assert len({im["id"] for im in coco["images"]}) == 6
    first = coco["images"][0]
    assert first["file_name"] == "000007_CAM_FRONT.jpg"
    assert (first["width"], first["height"]) == (1600, 900)
    assert first["coco_url"] == f"{BASE}/7/cameras/CAM_FRONT"
    ann = coco["annotations"][0]
    assert ann["image_id"] == first["id"]
    assert ann["category_id"] == 2
    assert ann["bbox"] == [10.0, 20.0, 100.5, 60.25]
    assert ann["area"] == pytest.approx(100.5 * 60.25)
    back = coco["annotations"][1]
    assert next(im for im in coco["images"] if im["id"] == back["image_id"])["camera"] == "CAM_BACK"
    json.dumps(coco)  # serialisable
    with pytest.raises(ValueError, match="CAM_LEFT"):
        to_coco([frame(1, (Box2D("CAM_LEFT", "car", 0, 0, 1, 1),))])


@pytest.mark.parametrize(
    ("center", "size", "yaw"),
    list(
        itertools.product(
            [(12.0, -3.5, 0.8), (-5.25, 20.0, -1.5), (0.0, 0.0, 0.0)],
            [(4.5, 1.9, 1.6), (0.8, 0.6, 1.8)],
            [0.0, 0.3, -2.9, math.pi / 2, 3.0],
        )
    ),
)
def test_kitti_3d_box_round_trips_through_the_label_line(
    center: tuple[float, float, float], size: tuple[float, float, float], yaw: float
) -> None:
    box = Box3D("car", center, size, yaw)
    (line,) = label_lines(LabeledFrame(1, "v/d/000001", (), (), (box,)), None)
    back = box3d_from_kitti(line)
    assert back.class_name == "car"
    assert back.center_xyz == pytest.approx(center, abs=1e-5)
    assert back.size_lwh == pytest.approx(size, abs=1e-5)
    dyaw = (back.yaw_rad - yaw + math.pi) % (2 * math.pi) - math.pi
    assert abs(dyaw) < 1e-5


def test_kitti_line_conventions() -> None:
    # A car 10 m straight ahead, heading forward: KITTI camera frame z=10, rotation_y=-pi/2.
    f = LabeledFrame(
        1,
        "v/d/000001",
        (image(1, "CAM_FRONT"),),
        (Box2D("CAM_FRONT", "traffic cone", 1, 2, 3, 4), Box2D("CAM_BACK", "car", 1, 2, 3, 4)),
        (Box3D("car", (10.0, 0.0, 0.8), (4.0, 2.0, 1.6), 0.0),),
    )
    line3d, line2d = label_lines(f, "CAM_FRONT")
    cols = line3d.split()
    assert cols[0] == "car"
    assert [float(v) for v in cols[8:11]] == [1.6, 2.0, 4.0]  # h w l
    assert [float(v) for v in cols[11:14]] == pytest.approx([0.0, 0.0, 10.0])  # bottom centre
    assert float(cols[14]) == pytest.approx(-math.pi / 2)
    assert float(cols[3]) == pytest.approx(-math.pi / 2)  # alpha: straight ahead
    assert line2d.split() == [
        "traffic_cone",
        "0.00",
        "0",
        "-10.00",
        "1.00",
        "2.00",
        "3.00",
        "4.00",
        "-1.00",
        "-1.00",
        "-1.00",
        "-1000.00",
        "-1000.00",
        "-1000.00",
        "-10.00",
    ]
    with pytest.raises(ValueError, match="not a 3D box"):
        box3d_from_kitti(line2d)


def test_kitti_zip() -> None:
    points = np.array([[1, 2, 3, 200, 5], [4, 5, 6, 7, 8]], dtype=np.float32)
    raw = bytes(range(6)) * 2  # a 2 x 2 raw RGB8 image
    raw_frame = LabeledFrame(9, "v/d/000009", (ImageInfo("CAM_FRONT", 2, 2, "raw", "u"),))
    data = to_kitti_zip(
        [
            KittiItem(FRAMES[0], "CAM_FRONT", b"jpeg bytes", points, FIELDS5),
            KittiItem(raw_frame, "CAM_FRONT", raw, None),
        ]
    )
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert set(zf.namelist()) == {
            "label_2/000007.txt",
            "calib/000007.txt",
            "image_2/000007.jpg",
            "velodyne/000007.bin",
            "label_2/000009.txt",
            "calib/000009.txt",
            "image_2/000009.png",
            "mapping.txt",
        }
        assert len(zf.read("label_2/000007.txt").decode().splitlines()) == 2
        assert zf.read("image_2/000007.jpg") == b"jpeg bytes"
        velo = np.frombuffer(zf.read("velodyne/000007.bin"), dtype="<f4").reshape(-1, 4)
        np.testing.assert_array_equal(velo, points[:, :4])
        assert "Tr_velo_to_cam: 0 -1 0 0 0 0 -1 0 1 0 0 0" in zf.read("calib/000007.txt").decode()
        png = Image.open(io.BytesIO(zf.read("image_2/000009.png")))
        assert png.size == (2, 2)
        assert png.tobytes() == raw
        assert zf.read("mapping.txt").decode().splitlines()[0] == "000007 veh-1/d1/000007 CAM_FRONT"
    same = [KittiItem(FRAMES[0], "CAM_FRONT", b"jpeg bytes", points, FIELDS5)]
    assert to_kitti_zip(same) == to_kitti_zip(same)  # deterministic bytes


def test_kitti_zip_streams_frame_by_frame_in_bounded_memory() -> None:
    # 64 frames with a 1 MiB image each: the archive is > 64 MiB, streaming holds one frame
    # (its image, the zipfile copy, the chunk: ~4 MiB), whatever the number of frames.
    n, size = 64, 1 << 20
    pulled: list[int] = []

    def items() -> Iterator[KittiItem]:
        rng = np.random.default_rng(0)
        for i in range(1, n + 1):
            pulled.append(i)
            f = LabeledFrame(i, f"v/d/{i:06d}", (ImageInfo("CAM_FRONT", 8, 8, "jpeg", "u"),))
            yield KittiItem(f, "CAM_FRONT", rng.bytes(size), None)

    chunks = iter_kitti_zip(items())
    first = next(chunks)
    assert pulled == [1]  # the first bytes are out before the second frame is read
    assert first.startswith(b"PK\x03\x04")
    total, crc = len(first), zlib.crc32(first)
    tracemalloc.start()
    try:
        for chunk in chunks:
            total += len(chunk)
            crc = zlib.crc32(chunk, crc)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > n * size
    assert peak < 6 * size, f"peak {peak / size:.1f} MiB while streaming {total / size:.0f} MiB"
    assert crc == zlib.crc32(to_kitti_zip(items()))  # the same bytes as the joined archive
    with zipfile.ZipFile(io.BytesIO(to_kitti_zip(items()))) as zf:
        assert zf.testzip() is None
        assert len(zf.namelist()) == 3 * n + 1  # label_2, calib, image_2; mapping.txt


def _boxes_by_task(frames: list[LabeledFrame]) -> dict[int, tuple[Box2D, ...]]:
    return {f.task_id: f.boxes_2d for f in frames}


def _close(a: tuple[Box2D, ...], b: tuple[Box2D, ...], tol: float) -> None:
    key = lambda x: (x.camera, x.class_name, x.x1)  # noqa: E731
    assert len(a) == len(b)
    for x, y in zip(sorted(a, key=key), sorted(b, key=key), strict=True):
        assert (x.camera, x.class_name) == (y.camera, y.class_name)
        assert (x.x1, x.y1, x.x2, x.y2) == pytest.approx((y.x1, y.y1, y.x2, y.y2), abs=tol)


def test_cvat_round_trip() -> None:
    xml = to_cvat_xml(FRAMES, task_name="batch 1")
    assert xml.startswith('<?xml version="1.0" encoding="utf-8"?>')
    parsed = from_cvat_xml(xml)
    assert parsed.unmatched_images == ()
    assert sorted(parsed.boxes) == [7, 9, 12]
    for task_id, boxes in _boxes_by_task(FRAMES).items():
        _close(parsed.boxes[task_id], boxes, tol=0.005)  # two decimals in the XML
    assert parsed.boxes[12] == ()
    assert to_cvat_urls(FRAMES).splitlines()[0] == f"{BASE}/7/cameras/CAM_FRONT"


def test_cvat_import_edge_cases() -> None:
    xml = """<annotations><version>1.1</version>
      <image id="0" name="https://x/v1/tasks/5/cameras/CAM_FRONT" width="10" height="10">
        <box label="car" xtl="1" ytl="2" xbr="3" ybr="4" occluded="0"/>
        <polygon label="car" points="1,2;3,4;5,6"/>
      </image>
      <image id="1" name="holiday.jpg" width="10" height="10"/>
    </annotations>"""
    parsed = from_cvat_xml(xml)
    assert parsed.boxes == {5: (Box2D("CAM_FRONT", "car", 1, 2, 3, 4),)}
    assert parsed.unmatched_images == ("holiday.jpg",)
    assert parsed.ignored_shapes == 1
    with pytest.raises(ValueError, match="not CVAT XML"):
        from_cvat_xml("<annotations>")
    with pytest.raises(ValueError, match="root element"):
        from_cvat_xml("<dataset/>")
    with pytest.raises(ValueError, match="xbr"):
        from_cvat_xml(
            '<annotations><image name="000001_C.jpg">'
            '<box label="a" xtl="1" ytl="1" ybr="2"/></image></annotations>'
        )
    assert parse_image_name("000042_CAM_FRONT_LEFT.png") == (42, "CAM_FRONT_LEFT")


def test_labelstudio_round_trip() -> None:
    tasks = json.loads(json.dumps(to_labelstudio(FRAMES)))
    assert len(tasks) == 6
    first = tasks[0]
    assert first["data"] == {
        "image": f"{BASE}/7/cameras/CAM_FRONT",
        "fleetal_task_id": 7,
        "camera": "CAM_FRONT",
        "frame_key": "veh-1/d1/000007",
    }
    value = first["annotations"][0]["result"][0]["value"]
    assert value["x"] == pytest.approx(10 / 1600 * 100)
    assert value["rectanglelabels"] == ["car"]
    parsed = from_labelstudio(tasks)
    for task_id, boxes in _boxes_by_task(FRAMES).items():
        _close(parsed.boxes[task_id], boxes, tol=1e-9)
    assert parsed.boxes[12] == ()
    unlabeled = to_labelstudio([dataclasses.replace(frame(3), labeled=False)])
    assert "annotations" not in unlabeled[0]


def test_labelstudio_import_edge_cases() -> None:
    result = {
        "type": "rectanglelabels",
        "original_width": 200,
        "original_height": 100,
        "value": {
            "x": 50,
            "y": 10,
            "width": 25,
            "height": 50,
            "rotation": 0,
            "rectanglelabels": ["car"],
        },
    }
    task = {
        "id": 1,
        "data": {"image": "https://x/v1/tasks/4/cameras/CAM_BACK"},  # matched by URL
        "annotations": [
            {"result": [result]},
            {"result": [], "was_cancelled": True},  # the latest live one wins
        ],
    }
    parsed = from_labelstudio(json.dumps(task))
    assert parsed.boxes == {4: (Box2D("CAM_BACK", "car", 100, 10, 150, 60),)}
    assert from_labelstudio([{"id": 8, "data": {"image": "s3://x.jpg"}}]).unmatched_tasks == ("8",)
    rotated = {**result, "value": {**result["value"], "rotation": 15}}
    with pytest.raises(ValueError, match=r"\[0\]\.annotations\[0\]\.result\[0\]: rotated"):
        from_labelstudio([{**task, "annotations": [{"result": [rotated]}]}])
    with pytest.raises(ValueError, match="list of tasks"):
        from_labelstudio("3")


def test_pcd() -> None:
    pts = np.array([[1.5, 2, 3, 0.25], [-1, 0, 1e-3, 7]], dtype=np.float32)
    binary = to_pcd(pts, ("x", "y", "z", "intensity"))
    header, _, body = binary.partition(b"DATA binary\n")
    assert b"FIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\n" in header
    assert b"POINTS 2\n" in header
    np.testing.assert_array_equal(np.frombuffer(body, dtype="<f4").reshape(-1, 4), pts)
    text = to_pcd(pts, ("x", "y", "z", "intensity"), binary=False).decode()
    rows = text.split("DATA ascii\n")[1].split()
    np.testing.assert_array_equal(np.array(rows, dtype=np.float32).reshape(-1, 4), pts)
    with pytest.raises(ValueError, match="do not match"):
        to_pcd(pts, ("x", "y", "z"))
