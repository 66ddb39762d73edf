"""Label exports and imports in the formats labeling tools speak: pure functions, no I/O.

* :mod:`~ingest_service.exports.coco`: COCO detection JSON (2D boxes).
* :mod:`~ingest_service.exports.kitti`: KITTI object zip (label_2, image_2, velodyne, calib).
* :mod:`~ingest_service.exports.cvat`: CVAT for images 1.1 XML, both ways.
* :mod:`~ingest_service.exports.labelstudio`: Label Studio tasks, and import of its results.

They all take :class:`~ingest_service.exports.common.LabeledFrame` values; the stored label
payload is described in :mod:`ingest_service.exports.common`.
"""

from ingest_service.exports.common import (
    ImageInfo,
    LabeledFrame,
    boxes_from_payload,
    categories,
    payload_from_boxes,
)

__all__ = ["ImageInfo", "LabeledFrame", "boxes_from_payload", "categories", "payload_from_boxes"]
