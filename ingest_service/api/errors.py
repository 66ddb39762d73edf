"""Domain errors become HTTP statuses here and nowhere else (``docs/labeling-api.md``).

TaskNotFound and a missing camera or sweep 404, LeaseLost 409, invalid input 422, a missing
blob 500 and a corrupt one 502 (both name the blob), a database failure 503.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ingest_service.api.backend import API_PREFIX, NoSensorError
from ingest_service.errors import (
    BlobNotFound,
    BlobStoreError,
    DatabaseError,
    IngestError,
    LeaseLost,
    TaskNotFound,
)

__all__ = ["install_error_handlers", "lease_message"]

log = logging.getLogger(__name__)


def lease_message(exc: LeaseLost) -> str:
    """What a labeler should read when the queue says they hold no live lease.

    ``LeaseLost`` carries the task id, labeler and why (queue wording: "it is leased to 'x'",
    "the lease ran out N s ago", "the task is not leased (...)", "the task is <state>").
    """
    why = exc.detail
    tid, claim = exc.task_id, f"POST {API_PREFIX}/tasks/claim"
    if why.startswith("the task is not leased"):
        return (
            f"task {tid} is not leased: nobody holds a lease on it; claim a task first "
            f"({claim}) and label the task it gives you"
        )
    if why.startswith("it is leased to"):
        owner = why.removeprefix("it ")
        return f"task {tid} {owner}, not to you ({exc.labeler}); claim again ({claim})"
    if why.startswith("the lease ran out"):
        return f"your lease on task {tid} expired ({why}); claim again ({claim})"
    if why == "the task is new":
        return (
            f"your lease on task {tid} expired and the task went back to the queue "
            f"({why}); claim again ({claim})"
        )
    if why == "the task is expired":
        return (
            f"the lease on task {tid} expired and the task has used all its leases ({why}): "
            "it is out of the queue until an admin requeues it (ingest-service "
            f"requeue-expired); claim another task ({claim})"
        )
    if why in ("the task is labeled", "the task is skipped"):
        return f"task {tid} is already {why.rsplit(' ', 1)[1]}; claim another task ({claim})"
    return f"{exc}; claim again ({claim})"


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as the string Python spells it ("nan", "inf").

    A refused ``NaN`` / ``Infinity`` / ``1e999`` is echoed in the 422's ``input``; JSON cannot
    hold it, and writing it raised inside the error handler (a 500 instead of the 422).
    """
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def install_error_handlers(app: FastAPI) -> None:
    def error(code: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _json_safe(jsonable_encoder(exc.errors()))
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(TaskNotFound)
    async def _not_found(request: Request, exc: TaskNotFound) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(NoSensorError)
    async def _no_sensor(request: Request, exc: NoSensorError) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(LeaseLost)
    async def _lease_lost(request: Request, exc: LeaseLost) -> JSONResponse:
        return error(409, lease_message(exc))

    @app.exception_handler(BlobStoreError)
    async def _blob(request: Request, exc: BlobStoreError) -> JSONResponse:
        code = 500 if isinstance(exc, BlobNotFound) else 502
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error(code, f"sensor data unavailable: {exc}")

    @app.exception_handler(DatabaseError)
    async def _db(request: Request, exc: DatabaseError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error(503, f"label queue database unavailable: {exc}")

    @app.exception_handler(IngestError)
    async def _ingest(request: Request, exc: IngestError) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error(500, str(exc))
