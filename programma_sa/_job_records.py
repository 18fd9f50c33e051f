"""Plain, detached records that the queue returns (never ORM instances)."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .models import JobState

__all__ = ["CancelOutcome", "ClaimedJob", "JobDetail", "JobPage", "JobSpec", "PausedTopic"]


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
    #: What the handler returned (any JSON value), stored with the completion;
    #: ``None`` when it returned nothing, or the job has not completed.
    result: Any = None

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
            result=row["result"],
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


class CancelOutcome(str, enum.Enum):
    """What :meth:`JobQueue.cancel_job <programma_sa.JobQueue.cancel_job>` did."""

    #: The job is CANCELLED now: it was waiting (never runs), or held by a lease-mode
    #: worker, whose handler is told to stop (``ctx.cancelled``).
    CANCELLED = "cancelled"
    #: The job is held by another transaction right now — a transaction-mode pass
    #: running its handler (or a claim committing at this very moment): nothing was
    #: waited for; the worker holding it is notified and ends it CANCELLED, its
    #: handler's writes rolled back, when the handler returns or raises.
    REQUESTED = "requested"
    #: The job had finished already (COMPLETED, FAILED or CANCELLED): unchanged.
    ALREADY_FINISHED = "already_finished"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class JobPage:
    """One page of :meth:`JobQueue.list_jobs <programma_sa.JobQueue.list_jobs>`:
    jobs newest first, and the cursor of the next page (``None``: this is the last)."""

    jobs: list[JobDetail] = field(default_factory=list)
    next_cursor: uuid.UUID | None = None


@dataclass(frozen=True)
class PausedTopic:
    """A topic no claim takes jobs from, and since when (database clock)."""

    topic: str
    paused_at: datetime
