"""Retraining on demand and the list of retrain jobs (docs/loop.md)."""

# No ``from __future__ import annotations``: FastAPI reads the route signatures at run time.

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status

from ingest_service.api.backend import API_PREFIX
from ingest_service.api.deps import ERRORS, BackendDep, Labeler, RetrainPolicies
from ingest_service.api.models import RetrainJobOut, RetrainRequested
from ingest_service.retrain import JobStore, RetrainJob, RetrainScheduler

__all__ = ["router"]

router = APIRouter(prefix=f"{API_PREFIX}/retrain", responses=ERRORS, tags=["retrain"])

Kind = Literal["camera", "lidar"]


def _out(job: RetrainJob) -> RetrainJobOut:
    return RetrainJobOut.model_validate(job.to_json())


@router.post(
    "/{kind}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RetrainRequested,
    summary="Queue a retrain of a model kind now (or return its active job)",
)
def request_retrain(
    kind: Kind,
    be: BackendDep,
    labeler: Labeler,
    policies: RetrainPolicies,
    response: Response,
) -> RetrainRequested:
    if not policies:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "retraining is not configured here")

    def request() -> tuple[RetrainJob, bool]:
        sched = RetrainScheduler(JobStore(be.queue.db), policies)
        return sched.request(kind, reason=f"on demand by {labeler}")

    job, created = be.locked(request)
    if not created:
        response.status_code = status.HTTP_200_OK
    return RetrainRequested(job=_out(job), created=created)


@router.get("/jobs", response_model=list[RetrainJobOut], summary="The latest retrain jobs")
def list_jobs(
    be: BackendDep,
    labeler: Labeler,
    kind: Kind | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[RetrainJobOut]:
    jobs = be.locked(lambda: JobStore(be.queue.db).jobs(kind, limit=limit))
    return [_out(j) for j in jobs]
