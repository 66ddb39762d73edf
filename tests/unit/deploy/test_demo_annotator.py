"""The demo annotator's truth: each drive frame's boxes are its source image's, moved with
the frame's crop, clipped to the image; holdout and unlabelled scenes are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.demo.annotator import DriveTruth
from deploy.demo.build_drive import IMAGE_SIZE, SCENE_FRAMES

DATA = Path(__file__).resolve().parents[3] / "data"


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
    for i in range(3 * SCENE_FRAMES, 4 * SCENE_FRAMES):  # nuScenes CAM_FRONT, boxes at edges
        boxes = truth.boxes(i)
        assert not isinstance(boxes, str)
        assert len(boxes) > 10
        for box in boxes:
            assert 0.0 <= box.x1 < box.x2 <= width
            assert 0.0 <= box.y1 < box.y2 <= height


def test_holdout_and_unlabelled_scenes_are_not_labelled(truth: DriveTruth) -> None:
    holdout = truth.boxes(SCENE_FRAMES)
    assert isinstance(holdout, str)
    assert "holdout" in holdout
    comma = truth.boxes(4 * SCENE_FRAMES)
    assert isinstance(comma, str)
    assert "no annotations" in comma
    assert truth.view(5 * SCENE_FRAMES).scene == truth.view(0).scene  # the scenes cycle
