"""Retraining scheduled from the label queue: jobs in the queue database and the policies
that queue them (issue 10, first part; the trainer, registry and rollout come next)."""

from ingest_service.retrain.jobs import JobLost, JobState, JobStore, RetrainJob
from ingest_service.retrain.policy import RetrainPolicy, RetrainScheduler, labeled_count

__all__ = [
    "JobLost",
    "JobState",
    "JobStore",
    "RetrainJob",
    "RetrainPolicy",
    "RetrainScheduler",
    "labeled_count",
]
