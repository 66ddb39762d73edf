"""BlobRefs: the nested JSON layout, the flat layout LabelQueue stores, and bad input."""

from __future__ import annotations

import json

import pytest

from ingest_service.blobrefs import BlobRefs, CameraBlob, LidarBlob
from ingest_service.blobstore import BlobRef

CAM = BlobRef.of(b"jpeg")
PTS = BlobRef.of(b"sweep")
ENV = BlobRef.of(b"envelope")
FULL = BlobRefs(
    {"CAM_FRONT": CameraBlob(CAM, "jpeg", 1600, 900)},
    LidarBlob(PTS, 34688, ("x", "y", "z", "intensity", "ring")),
    ENV,
)


def test_nested_layout_round_trip() -> None:
    doc = json.loads(json.dumps(FULL.to_json()))
    assert doc == {
        "cameras": {
            "CAM_FRONT": {"sha256": CAM.sha256, "size": 4, "encoding": "jpeg",
                          "width": 1600, "height": 900},
        },
        "lidar": {"sha256": PTS.sha256, "size": 5, "point_count": 34688,
                  "fields": ["x", "y", "z", "intensity", "ring"], "encoding": "fal-pointcloud"},
        "envelope": {"sha256": ENV.sha256, "size": 8},
    }  # fmt: skip
    assert BlobRefs.from_json(doc) == FULL
    assert BlobRefs.from_json({"cameras": {}, "lidar": None, "envelope": None}) == BlobRefs()


def test_flat_layout_is_what_the_queue_takes() -> None:
    flat = FULL.queue_refs()
    assert flat == {"camera/CAM_FRONT": CAM, "lidar": PTS, "envelope": ENV}
    back = BlobRefs.from_queue_refs(flat)
    assert back.cameras["CAM_FRONT"] == CameraBlob(CAM)  # metadata does not survive
    assert back.lidar == LidarBlob(PTS)
    assert back.envelope == ENV
    assert BlobRefs.from_json({k: v.to_json() for k, v in flat.items()}) == back


def test_bad_input_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"cameras\.CAM_FRONT\.width"):
        BlobRefs.from_json({"cameras": {"CAM_FRONT": {**CAM.to_json(), "width": "wide"}}})
    with pytest.raises(ValueError, match="unknown keys"):
        BlobRefs.from_json({"cameras": {}, "radar": None})
    with pytest.raises(ValueError, match="unknown key 'radar'"):
        BlobRefs.from_queue_refs({"radar": CAM})
    with pytest.raises(ValueError, match="encoding"):
        CameraBlob(CAM, "webp")
    with pytest.raises(ValueError, match="lidar: a blob ref"):
        BlobRefs.from_json({"cameras": {}, "lidar": {"size": 3}})
