"""The demo annotator's truth: each drive frame's boxes are its source image's, moved with
the frame's crop, clipped to the image; holdout and unlabelled scenes are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.demo.annotator import DriveTruth
from deploy.demo.build_drive import IMAGE_SIZE, SCENE_FRAMES, scene_sources
from ingest_service.training.reference.data import CAMERA_HOLDOUT

DATA = Path(__file__).resolve().parents[3] / "data"


def first_frame(scene: str) -> int:
    """The first frame of the drive's scene ``scene``."""
    names = [name for name, _ in scene_sources()]
    return names.index(scene) * SCENE_FRAMES


@pytest.fixture(scope="module")
def truth() -> DriveTruth:
    return DriveTruth(DATA)


def test_the_boxes_slide_with_the_crop_and_stay_inside_the_image(truth: DriveTruth) -> None:
    first, later = truth.boxes(0), truth.boxes(5)
    assert not isinstance(first, str)
    assert not isinstance(later, str)
    assert [b.class_name for b in first] == ["pedestrian"]  # KITTI 000000's one pedestrian
    (a,), (b,) = first, later
    assert b.x1 == pytest.approx(a.x1 - 5 * 8)  # the crop moved 8 px per frame
    assert (b.y1, b.y2) == pytest.approx((a.y1, a.y2))
    width, height = IMAGE_SIZE
    front = first_frame("nuscenes/CAM_FRONT")
    for i in range(front, front + SCENE_FRAMES):  # boxes at the image's edges
        boxes = truth.boxes(i)
        assert not isinstance(boxes, str)
        assert len(boxes) > 10
        for box in boxes:
            assert 0.0 <= box.x1 < box.x2 <= width
            assert 0.0 <= box.y1 < box.y2 <= height


def test_holdout_and_unlabelled_scenes_are_not_labelled(truth: DriveTruth) -> None:
    holdout = truth.boxes(first_frame("kitti/000001"))
    assert isinstance(holdout, str)
    assert "holdout" in holdout
    comma = truth.boxes(first_frame("comma2k19/preview"))
    assert isinstance(comma, str)
    assert "no annotations" in comma
    scenes = len(scene_sources())
    assert truth.view(scenes * SCENE_FRAMES).scene == truth.view(0).scene  # the scenes cycle


def test_a_short_drive_passes_no_holdout_scene() -> None:
    """The holdout images come last in the drive, so the first scenes (the tests' short
    drives) hold only frames an annotator may label; the whole drive (9 scenes) still
    passes the holdout."""
    names = [name for name, _ in scene_sources()]
    holdout_at = [i for i, name in enumerate(names) if name in CAMERA_HOLDOUT]
    assert holdout_at == [len(names) - 1]
    assert len(names) < 108 // SCENE_FRAMES
