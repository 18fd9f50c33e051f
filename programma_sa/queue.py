"""The queue, on the caller's :class:`~sqlalchemy.orm.Session` (or Core ``Connection``).

Every method takes the session first and runs its statement in that session's
transaction. Nothing here commits, begins, rolls back or closes the session: the
caller's transaction boundary decides what a claim means. Where this module says
session, a Core ``Connection`` does as well (an application without the ORM, or
an enqueue that should not pay for a Session): its transaction is the caller's in
the same way, and there is nothing to flush first.

*Enqueue beside business writes*::

    with Session(engine) as session, session.begin():
        session.add(Order(id=order_id))
        queue.add_job(session, "send-receipt", {"order": order_id})
    # both rows commit together, or neither does

*Lease* (the npm package's way) — claim, commit at once, work outside a
transaction; a job not moved out of ACTIVE comes back after ``retry_after_seconds``::

    with Session(engine) as session, session.begin():
        jobs = queue.claim_jobs(session, "send-receipt", max_jobs=10)
    for job in jobs:
        send(job.data)
        with Session(engine) as session, session.begin():
            queue.move_job_to_done(session, job.id)

*Transactional* — the claim, the handler's writes and the completion commit together
or not at all; a rollback (or a crash) makes the job claimable again at once::

    with Session(engine) as session, session.begin():
        for job in queue.claim_jobs(session, "send-receipt"):
            session.add(Receipt(order_id=job.data["order"]))
            queue.move_job_to_done(session, job.id)

The queue issues Core statements; ORM instances of the job model already loaded in
a session are not refreshed by them (call ``session.refresh`` or use :meth:`get_job`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session
from typing_extensions import Unpack

from ._execute import execute, run_steps
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
from ._session_types import Executor
from ._stats import QueueStats
from ._wait import DEFAULT_POLL_INTERVAL, wait_for_job
from .models import JobState, jobs_table
from .uniqueness import OnConflict

__all__ = ["BackgroundWorker", "JobQueue", "jobs_table", "set_worker_starter"]


class BackgroundWorker(Protocol):
    """What :meth:`JobQueue.process_jobs` returns: the started
    :class:`~programma_sa.Worker` (typed by what the queue, a layer below the
    worker, can name)."""

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> bool: ...

    @property
    def totals(self) -> Any: ...


#: What starts a background worker for :meth:`JobQueue.process_jobs`.
WorkerStarter = Callable[..., BackgroundWorker]
_worker_starter: WorkerStarter | None = None


def set_worker_starter(starter: WorkerStarter) -> None:
    """Called once by :mod:`programma_sa.worker` as it is imported (``import
    programma_sa`` imports it): how :meth:`JobQueue.process_jobs` starts a worker.

    The worker is a layer above the queue and imports it; this hands the queue the
    one function it needs without an import back up (no import cycle).
    """
    global _worker_starter
    _worker_starter = starter


class JobQueue(QueueBase):
    """Enqueue, claim and steer jobs inside the caller's ``Session`` (or ``Connection``)
    transaction."""

    def add_job(
        self,
        session: Executor,
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
        """Enqueue one job in the session's transaction and return its id.

        :param data: any JSON-serialisable value (stored as ``jsonb``).
        :param attributes: a JSON object of metadata (merged by :meth:`set_attributes`).
        :param run_after_seconds: not claimable before this many seconds from now.
        :param run_after_date: not claimable before this moment (an aware datetime or
            an ISO-8601 string with an offset); wins over ``run_after_seconds``.
        :param retry_after_seconds: the visibility timeout: a claimed job still ACTIVE
            after this many seconds is delivered again. ``None``: never redelivered.
        :param priority: claims take jobs of a higher priority first (then by
            ``start_after``, then by id); default 0, any ``int`` of PostgreSQL's
            ``integer`` range.
        :param unique_key: at most one job holds this key while its state is one of
            ``unique_states``; an enqueue of a held key does what ``on_conflict``
            says (see :func:`programma_sa.unique_key` to derive one from the data).
        :param unique_states: the states in which the job holds its key (default
            :data:`programma_sa.uniqueness.UNFINISHED`: created, active, processing):
            ``created`` and, with each state, the one before it.
        :param on_conflict: when the key is held: ``"keep"`` (default) the holder and
            return its id; ``"replace"`` the holder's data, attributes, start time,
            priority and visibility timeout with these if it is still CREATED (a
            claimed or finished holder is kept) and return its id; ``"raise"``
            :class:`~programma_sa.DuplicateJob` (the database refuses the INSERT,
            which aborts the transaction, as any refused statement does).
        :returns: the id of the new job — or, with a unique key that was held, of
            the job holding it.
        """
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
        return run_steps(session, steps)

    def add_jobs(
        self,
        session: Executor,
        topic: str,
        specs: Iterable[JobSpec | Mapping[str, Any]],
        *,
        on_conflict: OnConflict = "keep",
    ) -> list[uuid.UUID]:
        """Enqueue many jobs in one statement; ids in the order of ``specs``.

        Each spec is a :class:`JobSpec` or a mapping with its field names. Every
        spec is checked before the statement is sent: one bad spec adds nothing.

        With unique keys (``JobSpec.unique_key``), ``on_conflict`` applies to each
        held key as in :meth:`add_job`, and specs of the batch that share a key are
        one job: ``"keep"`` enqueues the first of them, ``"replace"`` the last (the
        latest settings win), and each of them gets the id of the job that holds
        the key afterwards (so an id may appear several times); ``"raise"`` refuses
        the whole batch with :class:`~programma_sa.DuplicateJob`, nothing inserted.
        """
        return run_steps(session, self.operations.add_jobs(topic, specs, on_conflict))

    def claim_jobs(self, session: Executor, topic: str, max_jobs: int = 1) -> list[ClaimedJob]:
        """Claim up to ``max_jobs`` due jobs of ``topic``, oldest ``start_after`` first.

        The claimed rows are ACTIVE, their ``attempts`` counts this delivery, and
        they stay locked until the session's transaction ends.
        """
        return execute(session, self.operations.claim_jobs(topic, max_jobs))

    def move_job_to_processing(self, session: Executor, job_id: uuid.UUID | str) -> bool:
        """PROCESSING: out of the visibility timeout, never redelivered."""
        return execute(session, self.operations.move_job_to_processing(job_id))

    def move_job_to_done(
        self, session: Executor, job_id: uuid.UUID | str, delete: bool = False
    ) -> bool:
        """COMPLETED (or deleted, with ``delete=True``)."""
        return execute(session, self.operations.move_job_to_done(job_id, delete))

    def move_job_to_failed(
        self, session: Executor, job_id: uuid.UUID | str, delete: bool = False
    ) -> bool:
        """FAILED (or deleted, with ``delete=True``)."""
        return execute(session, self.operations.move_job_to_failed(job_id, delete))

    def delete_job(self, session: Executor, job_id: uuid.UUID | str) -> bool:
        """Delete the job, whatever its state."""
        return execute(session, self.operations.delete_job(job_id))

    def set_attributes(
        self, session: Executor, job_id: uuid.UUID | str, attributes: Mapping[str, Any]
    ) -> bool:
        """Merge ``attributes`` into the job's attributes (top-level keys replaced)."""
        return execute(session, self.operations.set_attributes(job_id, attributes))

    def set_retry_after_seconds(
        self, session: Executor, job_id: uuid.UUID | str, seconds: int | None
    ) -> bool:
        """Change the visibility timeout; an ACTIVE job's lease is re-measured from its claim."""
        return execute(session, self.operations.set_retry_after_seconds(job_id, seconds))

    def set_job_start_date(
        self, session: Executor, job_id: uuid.UUID | str, start_date: datetime | str
    ) -> bool:
        """Set when the job is next claimable (its state is unchanged)."""
        return execute(session, self.operations.set_job_start_date(job_id, start_date))

    def get_job(self, session: Executor, job_id: uuid.UUID | str) -> JobDetail | None:
        """Every column of the job, or ``None`` when no job has that id."""
        return execute(session, self.operations.get_job(job_id))

    # -- control of jobs in flight ----------------------------------------------------

    def cancel_job(self, session: Executor, job_id: uuid.UUID | str) -> CancelOutcome:
        """Cancel a job that has not finished; it is never claimed again (nor retried).

        A waiting job (CREATED, or ACTIVE waiting for its retry) is CANCELLED at once
        and never runs. A job a lease-mode worker holds is CANCELLED at once too, and
        that worker is told (a notification, delivered when the session commits, with
        its lease renewal as the fallback): its handler sees ``ctx.cancelled``, and an
        async handler's task is cancelled after ``cancel_grace_period``. A job a
        transaction-mode pass is running is locked by that pass: nothing waits for
        it — the outcome is :attr:`CancelOutcome.REQUESTED`, and the worker ends it
        CANCELLED, its handler's writes rolled back. A finished job is left as it is
        (:attr:`CancelOutcome.ALREADY_FINISHED`).

        :raises JobNotFound: no job has that id.
        """
        return execute(session, self.control_operations.cancel_job(job_id))

    def retry_job(self, session: Executor, job_id: uuid.UUID | str) -> None:
        """Re-run a FAILED or CANCELLED job: CREATED and due now, with a fresh attempt
        budget (``attempts`` 0); its data and attributes stay (``last_error`` too).

        :raises JobNotFound: no job has that id.
        :raises InvalidJobInput: the job is not FAILED or CANCELLED (nothing changed).
        """
        execute(session, self.control_operations.retry_job(job_id))

    def retry_jobs(
        self,
        session: Executor,
        *,
        limit: int = DEFAULT_RERUN_LIMIT,
        **criteria: Unpack[RerunCriteria],
    ) -> list[uuid.UUID]:
        """Re-run up to ``limit`` FAILED jobs (``state``: or CANCELLED ones) that match
        every criterion given, oldest finished first, as :meth:`retry_job` does; returns
        their ids. Call again while it returns ``limit`` ids.

        :param topic: only this topic.
        :param state: ``"failed"`` (the default), ``"cancelled"``, or both.
        :param finished_after: finished at or after this moment (an aware datetime or
            an ISO-8601 string with an offset); ``finished_before``: before it.
        :param error_type: the type recorded in ``attributes.last_error``, e.g.
            ``"myapp.errors.PushError"``.
        :param attributes: a JSON object the job's attributes contain.
        """
        operation = self.control_operations.retry_jobs(JobCriteria(**criteria), limit=limit)
        return execute(session, operation)

    def list_jobs(
        self,
        session: Executor,
        *,
        cursor: uuid.UUID | str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        **criteria: Unpack[ListCriteria],
    ) -> JobPage:
        """One page of the jobs matching every criterion given, newest first.

        Pass the page's ``next_cursor`` as ``cursor`` for the next one (``None``: it
        was the last). Pages are keyed by id — UUIDv7, so creation order — and stay
        stable while jobs are added: a new job sorts before the first page.

        :param topic: only this topic.
        :param state: one state or several.
        :param created_after: created at or after this moment (``created_before``:
            before it); ``finished_after`` / ``finished_before`` likewise.
        :param error_type: the type recorded in ``attributes.last_error``.
        :param attributes: a JSON object the job's attributes contain.
        :param limit: jobs per page, 1 to 1000.
        """
        operation = self.control_operations.list_jobs(
            JobCriteria(**criteria), cursor=cursor, limit=limit
        )
        return execute(session, operation)

    def pause_topic(self, session: Executor, topic: str) -> bool:
        """Stop every worker claiming jobs of ``topic`` (from each one's next claim, once
        the session commits); enqueues go on. False if it was paused already."""
        return execute(session, self.control_operations.pause_topic(topic))

    def resume_topic(self, session: Executor, topic: str) -> bool:
        """Let workers claim jobs of ``topic`` again (idle ones are woken at once, when
        the session commits). False if it was not paused."""
        return execute(session, self.control_operations.resume_topic(topic))

    def paused_topics(self, session: Executor) -> list[PausedTopic]:
        """The paused topics, by name."""
        return execute(session, self.control_operations.paused_topics())

    def wait_for_job(
        self,
        engine: Engine,
        job_id: uuid.UUID | str,
        *,
        timeout: float,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> JobDetail:
        """Block until the job has finished (COMPLETED, FAILED or CANCELLED) and
        return it — with its ``result``.

        Woken by the worker's announcement of the finished job (LISTEN on a
        connection of its own to the engine's database); it also reads the job
        every ``poll_interval`` seconds, so a job finished any other way is seen
        too. Not in a transaction of yours: it reads on the engine's connections.

        :raises WaitTimeout: (a ``TimeoutError``) it had not finished in ``timeout`` s.
        :raises JobNotFound: no job has that id (or it was deleted meanwhile).
        """
        return wait_for_job(
            engine, self.operations, job_id, timeout=timeout, poll_interval=poll_interval
        )

    def stats(
        self,
        session: Executor,
        topic: str | None = None,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
    ) -> QueueStats:
        """Per-topic statistics of the jobs table, in one statement on ``session``:
        :func:`programma_sa.maintenance.stats` (see ``docs/maintenance.md``)."""
        return execute(session, self.maintenance_operations.stats(topic, window_seconds))

    def prune(
        self, session: Executor, retention: Retention, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> int:
        """Delete at most ``batch_size`` finished jobs past their TTL, in the session's
        transaction; return how many: :func:`programma_sa.maintenance.prune`."""
        return run_steps(session, prune_steps(self.maintenance_operations, retention, batch_size))

    def process_jobs(
        self,
        bind: Engine | Callable[[], Session],
        handler: Callable[[Any], object],
        *,
        topic_name: str | Sequence[str],
        heart_beat: float = 5.0,
        max_jobs: int = 10,
        **options: Any,
    ) -> BackgroundWorker:
        """The npm package's ``processJobs``: start a :class:`~programma_sa.Worker`
        in a background thread and return it (``worker.stop()`` ends it). The
        handler gets a :class:`~programma_sa.JobContext`.

        As in the npm package the handler steers its own job (``ctx.move_to_done()``
        …): by default nothing is written after it returns or raises, and a job it
        leaves ACTIVE comes back after ``retry_after_seconds``. ``options`` are
        further :class:`~programma_sa.Worker` settings (``auto_complete=True``,
        ``retry=RetryPolicy(...)``, ``concurrency``, ``mode`` …).
        """
        assert _worker_starter is not None, "programma_sa.worker registers it when imported"
        return _worker_starter(
            self,
            bind,
            handler,
            topic_name=topic_name,
            heart_beat=heart_beat,
            max_jobs=max_jobs,
            **options,
        )
