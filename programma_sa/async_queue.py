"""The queue on an :class:`~sqlalchemy.ext.asyncio.AsyncSession`, for asyncio applications.

:class:`AsyncJobQueue` has the methods of :class:`~programma_sa.JobQueue`, each a
coroutine taking the caller's ``AsyncSession`` (or an ``async_scoped_session``
proxying one, or a Core ``AsyncConnection``) first. It executes the very
:class:`~programma_sa._operations.Operation` objects the sync queue executes: the
validation, the SQL and the reading of results exist once, in
:mod:`programma_sa._operations` and :mod:`programma_sa._drivers`. As in the sync
queue nothing here commits, begins, rolls back or closes the session.

The maintenance functions are here too: ``await queue.stats(session)`` and
``await queue.prune(session, retention)``. Jobs are processed by
:class:`~programma_sa.AsyncWorker` (:mod:`programma_sa.worker.async_driver`).

(``programma_sa.aio`` is this module's older name; it still imports.)

Both async drivers work: ``postgresql+psycopg://`` (psycopg 3, which
``create_async_engine`` runs in its async mode) and ``postgresql+asyncpg://``.
``AsyncSession`` needs the ``greenlet`` package, which SQLAlchemy 2.1 no longer
installs by default: install ``programma-sa[asyncio]``. This module itself imports
nothing from ``sqlalchemy.ext.asyncio`` at run time, so ``import programma_sa`` works
without greenlet::

    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
    from programma_sa import AsyncJobQueue

    queue = AsyncJobQueue(Job)
    sessions = async_sessionmaker(create_async_engine("postgresql+psycopg://..."))

    async with sessions() as session, session.begin():
        session.add(Order(id=order_id))
        await queue.add_job(session, "send-receipt", {"order": order_id})
    # both rows commit together, or neither does
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from ._execute import execute_async, run_steps_async
from ._job_records import CancelOutcome, ClaimedJob, JobDetail, JobPage, JobSpec, PausedTopic
from ._operations.control import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_RERUN_LIMIT,
    JobCriteria,
    ListCriteria,
    RerunCriteria,
)
from ._operations.maintenance import DEFAULT_BATCH_SIZE, DEFAULT_WINDOW_SECONDS, prune_steps
from ._queue_base import QueueBase
from ._retention import Retention
from ._session_types import AsyncExecutor
from ._stats import QueueStats
from ._wait import DEFAULT_POLL_INTERVAL, wait_for_job_async
from .models import JobState
from .uniqueness import OnConflict

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["AsyncJobQueue"]


class AsyncJobQueue(QueueBase):
    """:class:`~programma_sa.JobQueue` on the caller's ``AsyncSession``.

    Every method means what the ``JobQueue`` method of the same name means, raises
    the same errors for the same arguments, and returns the same values. Where a
    method takes an ``AsyncSession`` it takes an ``async_scoped_session`` too (it
    proxies ``execute``/``flush`` to the current scope's session), as ``JobQueue``
    takes a ``scoped_session``.
    """

    async def add_job(
        self,
        session: AsyncExecutor,
        topic: str,
        data: Any,
        *,
        attributes: Mapping[str, Any] | None = None,
        run_after_seconds: float | None = None,
        run_after_date: datetime | str | None = None,
        retry_after_seconds: int | None = 30,
        priority: int = 0,
        unique_key: str | None = None,
        unique_states: Iterable[JobState | str] | None = None,
        on_conflict: OnConflict = "keep",
    ) -> uuid.UUID:
        """Enqueue one job in the session's transaction; see :meth:`JobQueue.add_job`."""
        steps = self.operations.add_job(
            topic,
            data,
            attributes=attributes,
            run_after_seconds=run_after_seconds,
            run_after_date=run_after_date,
            retry_after_seconds=retry_after_seconds,
            priority=priority,
            unique_key=unique_key,
            unique_states=unique_states,
            on_conflict=on_conflict,
        )
        return await run_steps_async(session, steps)

    async def add_jobs(
        self,
        session: AsyncExecutor,
        topic: str,
        specs: Iterable[JobSpec | Mapping[str, Any]],
        *,
        on_conflict: OnConflict = "keep",
    ) -> list[uuid.UUID]:
        """Enqueue many jobs in one statement; see :meth:`JobQueue.add_jobs`."""
        return await run_steps_async(session, self.operations.add_jobs(topic, specs, on_conflict))

    async def claim_jobs(
        self, session: AsyncExecutor, topic: str, max_jobs: int = 1
    ) -> list[ClaimedJob]:
        """Claim up to ``max_jobs`` due jobs; see :meth:`JobQueue.claim_jobs`."""
        return await execute_async(session, self.operations.claim_jobs(topic, max_jobs))

    async def move_job_to_processing(self, session: AsyncExecutor, job_id: uuid.UUID | str) -> bool:
        """PROCESSING: out of the visibility timeout, never redelivered."""
        return await execute_async(session, self.operations.move_job_to_processing(job_id))

    async def move_job_to_done(
        self, session: AsyncExecutor, job_id: uuid.UUID | str, delete: bool = False
    ) -> bool:
        """COMPLETED (or deleted, with ``delete=True``)."""
        return await execute_async(session, self.operations.move_job_to_done(job_id, delete))

    async def move_job_to_failed(
        self, session: AsyncExecutor, job_id: uuid.UUID | str, delete: bool = False
    ) -> bool:
        """FAILED (or deleted, with ``delete=True``)."""
        return await execute_async(session, self.operations.move_job_to_failed(job_id, delete))

    async def delete_job(self, session: AsyncExecutor, job_id: uuid.UUID | str) -> bool:
        """Delete the job, whatever its state."""
        return await execute_async(session, self.operations.delete_job(job_id))

    async def set_attributes(
        self, session: AsyncExecutor, job_id: uuid.UUID | str, attributes: Mapping[str, Any]
    ) -> bool:
        """Merge ``attributes`` into the job's attributes (top-level keys replaced)."""
        return await execute_async(session, self.operations.set_attributes(job_id, attributes))

    async def set_retry_after_seconds(
        self, session: AsyncExecutor, job_id: uuid.UUID | str, seconds: int | None
    ) -> bool:
        """Change the visibility timeout; see :meth:`JobQueue.set_retry_after_seconds`."""
        return await execute_async(
            session, self.operations.set_retry_after_seconds(job_id, seconds)
        )

    async def set_job_start_date(
        self, session: AsyncExecutor, job_id: uuid.UUID | str, start_date: datetime | str
    ) -> bool:
        """Set when the job is next claimable (its state is unchanged)."""
        return await execute_async(session, self.operations.set_job_start_date(job_id, start_date))

    async def get_job(self, session: AsyncExecutor, job_id: uuid.UUID | str) -> JobDetail | None:
        """Every column of the job, or ``None`` when no job has that id."""
        return await execute_async(session, self.operations.get_job(job_id))

    # -- control of jobs in flight ----------------------------------------------------

    async def cancel_job(self, session: AsyncExecutor, job_id: uuid.UUID | str) -> CancelOutcome:
        """Cancel a job that has not finished; see :meth:`JobQueue.cancel_job`."""
        return await execute_async(session, self.control_operations.cancel_job(job_id))

    async def retry_job(self, session: AsyncExecutor, job_id: uuid.UUID | str) -> None:
        """Re-run a FAILED or CANCELLED job; see :meth:`JobQueue.retry_job`."""
        await execute_async(session, self.control_operations.retry_job(job_id))

    async def retry_jobs(
        self,
        session: AsyncExecutor,
        *,
        limit: int = DEFAULT_RERUN_LIMIT,
        **criteria: Unpack[RerunCriteria],
    ) -> list[uuid.UUID]:
        """Re-run failed (or cancelled) jobs by filter; see :meth:`JobQueue.retry_jobs`."""
        operation = self.control_operations.retry_jobs(JobCriteria(**criteria), limit=limit)
        return await execute_async(session, operation)

    async def list_jobs(
        self,
        session: AsyncExecutor,
        *,
        cursor: uuid.UUID | str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        **criteria: Unpack[ListCriteria],
    ) -> JobPage:
        """One page of jobs, newest first; see :meth:`JobQueue.list_jobs`."""
        operation = self.control_operations.list_jobs(
            JobCriteria(**criteria), cursor=cursor, limit=limit
        )
        return await execute_async(session, operation)

    async def pause_topic(self, session: AsyncExecutor, topic: str) -> bool:
        """Stop claims from ``topic``; see :meth:`JobQueue.pause_topic`."""
        return await execute_async(session, self.control_operations.pause_topic(topic))

    async def resume_topic(self, session: AsyncExecutor, topic: str) -> bool:
        """Let claims take ``topic`` again; see :meth:`JobQueue.resume_topic`."""
        return await execute_async(session, self.control_operations.resume_topic(topic))

    async def paused_topics(self, session: AsyncExecutor) -> list[PausedTopic]:
        """The paused topics, by name."""
        return await execute_async(session, self.control_operations.paused_topics())

    async def wait_for_job(
        self,
        engine: AsyncEngine,
        job_id: uuid.UUID | str,
        *,
        timeout: float,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> JobDetail:
        """Wait until the job has finished and return it; see :meth:`JobQueue.wait_for_job`
        (here on an ``AsyncEngine``)."""
        return await wait_for_job_async(
            engine, self.operations, job_id, timeout=timeout, poll_interval=poll_interval
        )

    async def stats(
        self,
        session: AsyncExecutor,
        topic: str | None = None,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
    ) -> QueueStats:
        """Per-topic statistics; see :meth:`JobQueue.stats`."""
        operation = self.maintenance_operations.stats(topic, window_seconds)
        return await execute_async(session, operation)

    async def prune(
        self,
        session: AsyncExecutor,
        retention: Retention,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> int:
        """Delete at most ``batch_size`` expired finished jobs; see :meth:`JobQueue.prune`."""
        steps = prune_steps(self.maintenance_operations, retention, batch_size)
        return await run_steps_async(session, steps)
