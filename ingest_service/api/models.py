"""Request and response bodies of the labeling API (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = [
    "Box2DIn",
    "Box3DIn",
    "ClaimedTask",
    "DataUrls",
    "ErrorOut",
    "FrameInfo",
    "ImportReport",
    "ImportResult",
    "LabelAccepted",
    "LabelsIn",
    "QueueStats",
    "RetrainJobOut",
    "RetrainRequested",
    "SkipIn",
    "Skipped",
    "TaskOut",
]

ClassName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S(.*\S)?$")]
Positive = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Box2DIn(_Strict):
    """An axis-aligned box in pixels of one camera image: (x1, y1) top-left, (x2, y2) bottom-right.

    Coordinates must lie within the image: 0 <= x1 < x2 <= width, 0 <= y1 < y2 <= height.
    """

    camera: str = Field(min_length=1, examples=["CAM_FRONT"])
    class_name: ClassName = Field(examples=["car"])
    x1: float = Field(ge=0)
    y1: float = Field(ge=0)
    x2: float = Field(gt=0)
    y2: float = Field(gt=0)

    @field_validator("x2")
    @classmethod
    def _x2_right_of_x1(cls, v: float, info: ValidationInfo) -> float:
        x1 = info.data.get("x1")
        if x1 is not None and v <= x1:
            raise ValueError(f"x2 ({v}) must be greater than x1 ({x1})")
        return v

    @field_validator("y2")
    @classmethod
    def _y2_below_y1(cls, v: float, info: ValidationInfo) -> float:
        y1 = info.data.get("y1")
        if y1 is not None and v <= y1:
            raise ValueError(f"y2 ({v}) must be greater than y1 ({y1})")
        return v


class Box3DIn(_Strict):
    """A 3D box in the LiDAR frame: centre (m), length/width/height (m, > 0), yaw (rad)."""

    class_name: ClassName = Field(examples=["car"])
    center_xyz: tuple[float, float, float] = Field(examples=[[12.0, -3.5, 0.8]])
    size_lwh: tuple[Positive, Positive, Positive] = Field(examples=[[4.5, 1.9, 1.6]])
    yaw_rad: float = Field(ge=-7.0, le=7.0, examples=[0.1])


class LabelsIn(_Strict):
    """The label of a task: 2D boxes per camera image and 3D boxes in the sweep."""

    boxes_2d: list[Box2DIn] = Field(default_factory=list, max_length=10_000)
    boxes_3d: list[Box3DIn] = Field(default_factory=list, max_length=10_000)


class SkipIn(_Strict):
    reason: str = Field(
        min_length=1, max_length=1000, pattern=r"\S", examples=["camera covered by rain"]
    )


class DataUrls(BaseModel):
    """Where to fetch the task's sensor data (send the same bearer token)."""

    cameras: dict[str, str]
    lidar: str | None


class ClaimedTask(BaseModel):
    task_id: int
    frame_key: str
    priority: float
    score: float
    attempts: int
    lease_expires_ns: int
    lease_expires_at: datetime
    data: DataUrls


class FrameInfo(BaseModel):
    vehicle_id: str
    drive_id: str
    frame_seq: int
    timestamp_ns: int
    reason: str
    model_versions: dict[str, str]


class TaskOut(BaseModel):
    id: int
    frame_key: str
    state: Literal["new", "leased", "labeled", "skipped", "expired"]
    score: float
    priority: float
    attempts: int
    lease_owner: str | None
    lease_expires_ns: int | None
    labeled_ns: int | None
    skip_reason: str | None
    frame: FrameInfo
    data: DataUrls
    labels: LabelsIn | None = Field(None, description="the stored label, once labeled")


class LabelAccepted(BaseModel):
    task_id: int
    state: Literal["labeled"] = "labeled"
    boxes_2d: int
    boxes_3d: int


class Skipped(BaseModel):
    task_id: int
    state: Literal["skipped"] = "skipped"
    reason: str


class QueueStats(BaseModel):
    new: int
    leased: int
    labeled: int
    skipped: int
    expired: int


class RetrainJobOut(BaseModel):
    """A retrain job (docs/loop.md)."""

    id: int
    kind: str
    state: Literal["queued", "running", "succeeded", "failed", "rejected"]
    trigger: str
    labels_at: int
    attempts: int
    max_attempts: int
    created_ns: int
    started_ns: int | None
    finished_ns: int | None
    labels_used: int | None
    metric: float | None
    model_version: str | None
    detail: str


class RetrainRequested(BaseModel):
    """The answer to an on-demand retrain: the job, and whether this request queued it."""

    job: RetrainJobOut
    created: bool


class ImportResult(BaseModel):
    task_id: int
    status: Literal["labeled", "failed"]
    boxes_2d: int = 0
    detail: str | None = None


class ImportReport(BaseModel):
    labeled: int
    failed: int
    results: list[ImportResult]
    unmatched: list[str] = Field(
        default_factory=list, description="images / tasks of the upload that name no queue task"
    )


class ErrorOut(BaseModel):
    detail: str
