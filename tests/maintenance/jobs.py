"""Hand-built jobs for the maintenance tests: any state, any times.

Jobs are enqueued through the queue API and then moved with direct Core updates,
so a test can place ``start_after`` / ``started_at`` / ``finished_at`` exactly,
relative to one reading of the database clock.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState, jobs_table
from programma_sa._execute import execute

from ..app import Job

TABLE = jobs_table(Job)


def db_now(session: Session) -> datetime:
    """The database clock (the tests place every time relative to it)."""
    return execute(session, JobQueue(Job).operations.clock())


def put(
    session: Session,
    queue: JobQueue,
    topic: str,
    state: JobState,
    *,
    start_after: datetime | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
) -> uuid.UUID:
    """One job of ``topic`` in ``state`` with exactly these times (``None`` stays NULL,
    except ``start_after`` of a CREATED job, which keeps its enqueue time)."""
    job_id = queue.add_job(session, topic, {"topic": topic, "state": state.value})
    values: dict[str, Any] = {
        "state": state.value,
        "started_at": started_at,
        "finished_at": finished_at,
    }
    if start_after is not None or state is not JobState.CREATED:
        values["start_after"] = start_after
    session.execute(update(TABLE).where(TABLE.c.id == job_id).values(**values))
    return job_id


def finished(
    session: Session, queue: JobQueue, topic: str, state: JobState, count: int, ago: timedelta
) -> list[uuid.UUID]:
    """``count`` jobs of ``topic`` that reached ``state`` ``ago`` before now."""
    when = db_now(session) - ago
    return [put(session, queue, topic, state, finished_at=when) for _ in range(count)]


def states(session: Session) -> dict[uuid.UUID, str]:
    """Every job's state, by id."""
    return dict(session.execute(select(TABLE.c.id, TABLE.c.state)).all())
