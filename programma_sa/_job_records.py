"""Plain, detached records that the queue returns (never ORM instances)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .models import JobState

__all__ = ["ClaimedJob", "JobDetail", "JobSpec"]


@dataclass(frozen=True)
class JobDetail:
    """Every column of one job, as read from the database."""

    id: uuid.UUID
    topic: str
    data: Any
    attributes: dict[str, Any]
    state: JobState
    start_after: datetime | None
    started_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    retry_after_seconds: int | None
    attempts: int
    #: Claims take higher priorities first (revision programma_0004).
    priority: int = 0
    #: The job's unique key, held while its state is one of ``unique_states``.
    unique_key: str | None = None
    unique_states: tuple[JobState, ...] | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> JobDetail:
        return cls(
            id=row["id"],
            topic=row["topic"],
            data=row["data"],
            attributes=row["attributes"] or {},  # a claim sends {} as NULL
            state=JobState(row["state"]),
            start_after=row["start_after"],
            started_at=row["started_at"],
            created_at=row["created_at"],
            finished_at=row["finished_at"],
            retry_after_seconds=row["retry_after_seconds"],
            attempts=row["attempts"],
            priority=row["priority"],
            unique_key=row["unique_key"],
            unique_states=(
                None
                if row["unique_states"] is None
                else tuple(JobState(state) for state in row["unique_states"])
            ),
        )


#: What a claim returns: the job as it is after the claim (ACTIVE, ``attempts``
#: already counting this delivery, ``start_after`` = when the lease runs out).
ClaimedJob = JobDetail


@dataclass(frozen=True)
class JobSpec:
    """One job for :meth:`JobQueue.add_jobs`; the fields mean what they mean in ``add_job``."""

    data: Any
    attributes: Mapping[str, Any] | None = None
    run_after_seconds: float | None = None
    run_after_date: datetime | str | None = None
    retry_after_seconds: int | None = 30
    priority: int = 0
    unique_key: str | None = None
    #: Default (``None``): the unfinished states, as in ``add_job``.
    unique_states: Collection[JobState | str] | None = None
