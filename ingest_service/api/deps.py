"""The dependencies every router declares: the backend, the caller, the base of data URLs.

:func:`~ingest_service.api.app.create_app` puts an :class:`ApiState` on ``app.state``; the
routers (``ingest_service/api/routes/``) are module-level and reach it through these.
"""

# No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` aliases at run time.

import dataclasses
from typing import Annotated, Any, cast

from fastapi import Depends, FastAPI, Path, Request
from fastapi.security import HTTPAuthorizationCredentials

from ingest_service.api.auth import BearerTokens, bearer_scheme
from ingest_service.api.backend import Backend
from ingest_service.api.models import ErrorOut
from ingest_service.retrain.policy import RetrainPolicy

__all__ = [
    "ERRORS",
    "ApiState",
    "BackendDep",
    "BaseUrl",
    "Labeler",
    "RetrainPolicies",
    "TaskId",
    "install_state",
]


@dataclasses.dataclass(frozen=True, slots=True)
class ApiState:
    backend: Backend
    tokens: BearerTokens
    public_url: str | None
    retrain_policies: tuple[RetrainPolicy, ...] = ()


def install_state(app: FastAPI, state: ApiState) -> None:
    app.state.fleetal = state


def _state(request: Request) -> ApiState:
    return cast(ApiState, request.app.state.fleetal)


def _backend(request: Request) -> Backend:
    return _state(request).backend


def _labeler(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> str:
    return _state(request).tokens.labeler(creds)


def _retrain_policies(request: Request) -> tuple[RetrainPolicy, ...]:
    return _state(request).retrain_policies


def _base_url(request: Request) -> str:
    """The base of the data URLs handed out: ``public_url``, else the request's own."""
    return (_state(request).public_url or str(request.base_url)).rstrip("/")


BackendDep = Annotated[Backend, Depends(_backend)]
Labeler = Annotated[str, Depends(_labeler)]
BaseUrl = Annotated[str, Depends(_base_url)]
RetrainPolicies = Annotated[tuple[RetrainPolicy, ...], Depends(_retrain_policies)]
TaskId = Annotated[int, Path(ge=1, description="task id")]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or unknown bearer token"},
    404: {"model": ErrorOut, "description": "no such task (or camera / sweep)"},
    409: {"model": ErrorOut, "description": "the caller holds no live lease on the task"},
}
"""The error responses the OpenAPI document lists on every task route."""
