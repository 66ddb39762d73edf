"""The labeling API's routers, one module per concern, all under ``/v1``.

* :mod:`.tasks`: claim, read, label, skip; queue stats.
* :mod:`.sensor_data`: a task's camera images and LiDAR sweep.
* :mod:`.exports`: COCO, KITTI (streamed zip), CVAT, Label Studio.
* :mod:`.imports`: CVAT and Label Studio files onto the caller's leased tasks.
"""

from ingest_service.api.routes import exports, imports, sensor_data, tasks

__all__ = ["exports", "imports", "sensor_data", "tasks"]
