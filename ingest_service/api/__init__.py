"""The labeling API (HTTP, FastAPI): ``create_app`` builds it, ``ApiServer`` runs it.

::

    from ingest_service.api import ApiServer, create_app

    server = ApiServer(create_app(queue, blobs, tokens={"s3cret": "alice"}), port=8080)
    server.start()
    ...
    server.stop()

See ``docs/labeling-api.md`` for the endpoints and a curl walk-through.
"""

from ingest_service.api.app import API_PREFIX, MetricsHook, create_app
from ingest_service.api.server import ApiServer

__all__ = ["API_PREFIX", "ApiServer", "MetricsHook", "create_app"]
