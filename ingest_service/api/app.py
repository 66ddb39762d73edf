"""The labeling API: claim, fetch sensor data, label or skip, export and import (FastAPI).

:func:`create_app` builds the ASGI app over one :class:`~ingest_service.queue.LabelQueue` and a
:class:`~ingest_service.blobstore.BlobStore` from routers by concern
(``ingest_service/api/routes/``: tasks, sensor data, exports, imports), the error mapping
(:mod:`~ingest_service.api.errors`) and the request metrics hook. Routes are plain ``def``
functions, so FastAPI runs them in its thread pool; :class:`~ingest_service.api.backend.Backend`
serialises queue calls (one database connection) and leaves blob reads and format
conversions outside its lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi_offline import FastAPIOffline

from ingest_service.api.auth import BearerTokens
from ingest_service.api.backend import API_PREFIX, Backend
from ingest_service.api.deps import ApiState, install_state
from ingest_service.api.errors import install_error_handlers
from ingest_service.api.routes import exports, imports, retrain, sensor_data, tasks
from ingest_service.blobstore import BlobStore
from ingest_service.queue import LabelQueue
from ingest_service.retrain.policy import RetrainPolicy

__all__ = ["API_PREFIX", "DOCS_ASSETS", "MetricsHook", "create_app"]

log = logging.getLogger(__name__)

DOCS_ASSETS = "/docs/assets"
"""Where the Swagger UI and ReDoc files are served from (no CDN)."""

MetricsHook = Callable[[str, int, float], None]
"""Called after every request with (route template, HTTP status, seconds)."""


def create_app(
    queue: LabelQueue,
    blobs: BlobStore,
    *,
    tokens: Mapping[str, str],
    lease_s: float = 900.0,
    metrics: MetricsHook | None = None,
    public_url: str | None = None,
    retrain_policies: Sequence[RetrainPolicy] = (),
) -> FastAPI:
    """The labeling API over ``queue`` and ``blobs``.

    ``tokens`` maps API token -> labeler name. ``lease_s`` is the lease a claim grants.
    ``metrics`` is called after each request with (route template, status, seconds).
    ``public_url`` is the base of the data URLs handed out (default: the request's own base
    URL; set it behind a reverse proxy). ``retrain_policies`` enable ``POST
    /v1/retrain/{kind}`` (on-demand retraining, docs/loop.md); without them it answers 404.
    """
    if not tokens:
        raise ValueError("the labeling API needs at least one token")
    if not lease_s > 0:
        raise ValueError(f"lease_s must be > 0, got {lease_s}")
    # /docs (Swagger UI 5) and /redoc load their JS and CSS from this package's own static
    # files (fastapi-offline), not from a CDN: both work on a machine without internet.
    app = FastAPIOffline(
        title="Fleet Active Learning labeling API",
        version="1.0",
        description="Claim label tasks by priority, fetch their sensor data, submit labels; "
        "export and import COCO, KITTI, CVAT and Label Studio. See docs/labeling-api.md.",
        static_url=DOCS_ASSETS,
    )
    install_state(
        app,
        ApiState(
            Backend(queue, blobs, lease_s),
            BearerTokens(tokens),
            public_url,
            tuple(retrain_policies),
        ),
    )
    for module in (tasks, sensor_data, exports, imports, retrain):
        app.include_router(module.router)
    install_error_handlers(app)
    if metrics is not None:
        _install_metrics(app, metrics)
    return app


def _install_metrics(app: FastAPI, hook: MetricsHook) -> None:
    @app.middleware("http")
    async def _observe(request: Request, call_next: Callable[[Request], Any]) -> Response:
        start = time.perf_counter()
        code = 500
        try:
            response: Response = await call_next(request)
            code = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            try:
                hook(template, code, time.perf_counter() - start)
            except Exception:  # a broken metrics hook must not fail requests
                log.exception("labeling API metrics hook failed")
