"""2D boxes checked against their camera's image (labels and imports)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from fastapi.exceptions import RequestValidationError

from ingest_service.api.models import Box2DIn
from schemas.messages import Box2D

__all__ = ["ROUNDING_PX", "BoxError", "check_2d"]

ROUNDING_PX = 0.5
"""Imported boxes may overshoot the image by this much (format rounding)."""


class BoxError(ValueError):
    """A box that does not fit its image; ``loc`` is the field, as in a 422."""

    def __init__(self, loc: tuple[str | int, ...], msg: str, value: object) -> None:
        super().__init__(msg)
        self.loc, self.msg, self.value = loc, msg, value

    def as_validation_error(self) -> RequestValidationError:
        return RequestValidationError(
            [{"type": "value_error", "loc": self.loc, "msg": self.msg, "input": self.value}]
        )


def check_2d(
    boxes: Sequence[Box2DIn | Box2D],
    size_of: Callable[[str], tuple[int, int] | None],
    cameras: Iterable[str],
    *,
    tolerance: float = 0.0,
) -> list[Box2D]:
    """Boxes within their camera's image; clamped when within ``tolerance`` px of the edge.

    ``size_of(camera)`` is (width, height), None for a camera the frame does not have.
    """
    out: list[Box2D] = []
    for i, b in enumerate(boxes):
        loc: tuple[str, int] = ("boxes_2d", i)
        size = size_of(b.camera)
        if size is None:
            raise BoxError(
                ("body", *loc, "camera"),
                f"camera {b.camera!r} is not in this frame (it has {sorted(cameras)})",
                b.camera,
            )
        w, h = size
        coords = {"x1": b.x1, "y1": b.y1, "x2": b.x2, "y2": b.y2}
        for name, value in coords.items():
            limit = w if name[0] == "x" else h
            if -tolerance <= value < 0:
                coords[name] = 0.0
            elif limit < value <= limit + tolerance:
                coords[name] = float(limit)
            elif not 0 <= value <= limit:
                axis = "width" if name[0] == "x" else "height"
                raise BoxError(
                    ("body", *loc, name),
                    f"{name}={value} is outside the image of {b.camera} "
                    f"({axis} {limit}: 0 <= {name} <= {limit})",
                    value,
                )
        if coords["x2"] <= coords["x1"] or coords["y2"] <= coords["y1"]:
            raise BoxError(("body", *loc), "the box is empty after clipping to the image", None)
        out.append(Box2D(b.camera, b.class_name, **coords))
    return out
