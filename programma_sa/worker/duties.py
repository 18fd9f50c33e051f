"""Duties: periodic work the worker loop runs between its claims.

A duty is a schedule, a pass written as no-I/O steps (:meth:`Duty.steps`), and
what to note once a pass ran (:meth:`Duty.finished`). The loop asks each duty
whether it is due, drives its steps with the same driver that runs the claims, and
wakes from its idle wait in time for the next one; a failed pass is logged and
retried at the next interval, never stopping the loop.

Pruning (:class:`PruneDuty`) and periodic schedules
(:class:`~.schedules.ScheduleDuty`) run between claims. :class:`LeaseDuty` — the
renewal of a lease-mode worker's leases — cannot wait for a claim (the loop may be
running a long handler itself): the worker's *keeper* (a thread, or a task) runs it
when it is due, as a round of the writer (see :mod:`.leases`).
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import exc as sa_exc

from .._error_text import first_line
from .._job_records import ClaimedJob
from .._operations.jobs import JobOperations, LeaseState
from .._retention import Retention
from ..exceptions import DatabaseError
from ..maintenance._target import QueueLike, maintenance_operations
from ..maintenance.prune import DEFAULT_MAX_BATCHES, PruneResult, prune_pass
from ..models import JobState
from .leases import Holdings
from .steps import EachCommitted, Step, single

__all__ = ["Duty", "DutySchedule", "KeeperPlan", "LeaseDuty", "LeasePass", "PruneDuty"]

log = logging.getLogger("programma_sa.worker")

R = TypeVar("R")


class DutySchedule:
    """When a duty runs next: at once, then at most every ``interval`` seconds.

    The host's monotonic clock is right here: this only spaces out passes of this
    process; what a pass does (which rows are expired …) is decided by the
    database's clock.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._next_at = -math.inf

    def due(self) -> bool:
        return self._clock() >= self._next_at

    def ran(self, next_in: float | None = None) -> None:
        """A pass ran: the next one in ``next_in`` seconds (default: ``interval``)."""
        self._next_at = self._clock() + (self.interval if next_in is None else next_in)

    def seconds_left(self) -> float:
        return max(0.0, self._next_at - self._clock())


class Duty(ABC, Generic[R]):
    """Periodic work of a worker: a schedule, a pass as steps, and its bookkeeping."""

    def __init__(self, interval: float) -> None:
        self.schedule = DutySchedule(interval)

    @abstractmethod
    def steps(self) -> Generator[Step, Any, R]:
        """One pass, as steps for the worker's driver (no I/O here)."""

    @abstractmethod
    def finished(self, result: R | None, error: BaseException | None = None) -> None:
        """Note a pass: its ``result``, or the database ``error`` that ended it."""


class PruneDuty(Duty[PruneResult]):
    """Deletes expired finished jobs by a :class:`~programma_sa.Retention`: a
    :meth:`Pruner.run_once <programma_sa.Pruner.run_once>` every ``interval``
    seconds, so one worker at a time prunes across processes (the prune lock)."""

    def __init__(
        self, queue: QueueLike, retention: Retention, *, batch_size: int, interval: float
    ) -> None:
        super().__init__(interval)
        self._operations = maintenance_operations(queue)
        self.retention = retention
        self.batch_size = batch_size
        #: Finished jobs deleted so far.
        self.deleted = 0

    def steps(self) -> Generator[Step, Any, PruneResult]:
        return (
            yield from prune_pass(
                self._operations, self.retention, self.batch_size, DEFAULT_MAX_BATCHES
            )
        )

    def finished(self, result: PruneResult | None, error: BaseException | None = None) -> None:
        self.schedule.ran()
        if error is not None:
            log.error(
                "pruning finished jobs failed (%s); trying again in %.0f s",
                first_line(error),
                self.schedule.interval,
            )
        if result is not None:
            self.deleted += result.deleted
            if result.deleted:
                log.info("pruned %d finished jobs in %d batches", result.deleted, result.batches)


@dataclass(frozen=True)
class LeasePass:
    """What one :class:`LeaseDuty` pass did."""

    renewed: int = 0
    #: Held jobs found cancelled (their handlers are told now).
    cancelled: int = 0
    #: Held jobs another worker has claimed since (their lease ran out).
    lost: int = 0


def _named(jobs: list[ClaimedJob]) -> str:
    shown = ", ".join(f"{job.id} [{job.topic}]" for job in jobs[:5])
    return shown + (f" and {len(jobs) - 5} more" if len(jobs) > 5 else "")


class LeaseDuty(Duty[LeasePass]):
    """Renews the lease of every job a lease-mode worker holds (waiting for a
    handler, or running one), and reads what became of the others — the fallback by
    which a cancellation whose notification was lost still reaches the handler.

    A job's lease (its visibility timeout, ``retry_after_seconds``) is written again
    when a third of it has passed since it was last written — at least every
    ``heartbeat`` seconds, never more often than every ``min_interval`` — so a
    renewal that fails once still leaves two thirds of the lease for the next. The
    lease stays the crash-recovery window: a worker that dies stops renewing, and
    its jobs come back when their last lease runs out.

    Only a job still exactly as the worker holds it is renewed. One that is not was
    changed by its handler (moved, rescheduled), cancelled, deleted — or claimed by
    another worker after its lease ran out (a WARNING: it may run twice).
    """

    #: The shortest time between two passes for one job (seconds).
    min_interval = 0.5
    #: After a failed pass, the next is tried this soon (seconds).
    retry_interval = 1.0

    def __init__(
        self, operations: JobOperations, holdings: Holdings, *, heartbeat: float, renew: bool
    ) -> None:
        super().__init__(heartbeat)
        self._operations = operations
        self._holdings = holdings
        self._renew = renew
        self._failed_at: float | None = None

    def _interval(self, retry_after_seconds: int | None, renewable: bool) -> float:
        """Between two passes for a job with this lease (``retry_after_seconds``)."""
        heartbeat = self.schedule.interval
        if not (self._renew and renewable and retry_after_seconds):
            return heartbeat  # only read (cancellation): every heartbeat
        return min(heartbeat, max(self.min_interval, retry_after_seconds / 3))

    def due_at(self) -> float | None:
        """When the next pass is due (``time.monotonic``); ``None``: nothing held."""
        due = self._holdings.lease_due_at(self._interval)
        if due is not None and self._failed_at is not None:
            return self._failed_at + self.retry_interval  # not at once: the database is down
        return due

    def steps(self) -> Generator[Step, Any, LeasePass]:
        renew, check = self._holdings.lease_pass()
        if not self._renew:
            renew, check = [], renew + check
        leases: dict[Any, Any] = {}
        if renew:
            try:
                leases = yield EachCommitted(single(self._operations.renew_leases(renew)))
            except (DatabaseError, sa_exc.DBAPIError) as error:
                self._failed(renew, error, "renew the leases of")
                raise
            # At once: every outcome written from now on compares the new lease end.
            self._holdings.renewed(leases, ())
        checked = [job for job in renew if job.id not in leases] + check
        states: dict[Any, LeaseState] = {}
        if checked:
            try:
                states = yield EachCommitted(
                    single(self._operations.lease_states([job.id for job in checked]))
                )
            except (DatabaseError, sa_exc.DBAPIError) as error:
                self._failed(checked, error, "read the state of")
                raise
            self._holdings.renewed({}, [job.id for job in checked])
        self._failed_at = None
        return self._judge(checked, states, renewed=len(leases))

    def _failed(self, jobs: list[ClaimedJob], error: BaseException, what: str) -> None:
        self._failed_at = time.monotonic()
        log.warning(
            "could not %s %d held jobs (%s); trying again in %.1f s; jobs: %s",
            what,
            len(jobs),
            first_line(error),
            self.retry_interval,
            _named(jobs),
        )

    def _judge(
        self, jobs: list[ClaimedJob], states: dict[Any, LeaseState], renewed: int
    ) -> LeasePass:
        """What became of each held job its pass did not renew."""
        cancelled = lost = 0
        changed: list[Any] = []
        for job in jobs:
            state = states.get(job.id)
            extra = {"job_id": str(job.id), "topic": job.topic}
            if state is not None and state.state is JobState.CANCELLED:
                if self._holdings.request_cancel(job.id):
                    cancelled += 1
                    log.info(
                        "job %s [%s] was cancelled; telling its handler to stop",
                        job.id,
                        job.topic,
                        extra=extra,
                    )
                changed.append(job.id)
            elif state is not None and state.attempts != job.attempts:
                lost += 1
                changed.append(job.id)
                log.warning(
                    "job %s [%s]: its lease could not be renewed: another worker claimed "
                    "it again (attempt %d) after the lease of attempt %d ran out; its "
                    "handler here may still run — the job runs twice",
                    job.id,
                    job.topic,
                    state.attempts,
                    job.attempts,
                    extra=extra,
                )
            elif (
                state is None
                or state.state is not JobState.ACTIVE
                or (state.start_after != job.start_after)
            ):
                # Deleted, moved or rescheduled (by its handler, most likely): the
                # lease is the handler's business now.
                changed.append(job.id)
        self._holdings.not_renewable(changed)
        return LeasePass(renewed, cancelled, lost)

    def finished(self, result: LeasePass | None, error: BaseException | None = None) -> None:
        # Scheduled by the held jobs' leases (due_at), not by the schedule's interval.
        if result is not None and result.renewed and log.isEnabledFor(logging.DEBUG):
            log.debug("renewed the leases of %d held jobs", result.renewed)


class KeeperPlan:
    """What a lease-mode worker's keeper (a thread, or a task: the drivers) does, and
    when (no I/O): it writes the completions left queued ``completion_delay``
    seconds, runs the :class:`LeaseDuty` when it is due, releases the jobs not
    started once the worker stops, and after a failed write waits out a backoff
    (0.1 s doubling to 5 s) before it writes again — but not when closing, where it
    writes what is left once more and gives up on what fails.
    """

    #: The longest a queued completion waits for others to share its statement.
    completion_delay = 0.25

    def __init__(self, holdings: Holdings, duty: LeaseDuty | None) -> None:
        self._holdings = holdings
        self._duty = duty
        self._released = False
        self._retry_at = 0.0
        self._delay = self._first_delay = 0.1
        self._max_delay = 5.0

    def next_wake(self, now: float) -> float | None:
        """Seconds until there may be something to do (``None``: nothing is due)."""
        moments = [self._duty.due_at() if self._duty is not None else None]
        queued = self._holdings.queued_since()
        if queued is not None:
            moments.append(max(queued + self.completion_delay, self._retry_at))
        due = [moment for moment in moments if moment is not None]
        return None if not due else max(0.0, min(due) - now)

    def write_now(self, now: float, *, stopping: bool, closing: bool) -> bool:
        """Whether the keeper should write now (a renewal is wanted if one is due)."""
        urgent = closing
        if stopping and not self._released:
            self._released = True
            urgent = self._holdings.release_unstarted() > 0 or urgent
        if self._duty is not None and (due := self._duty.due_at()) is not None and due <= now:
            self._holdings.want_renewal()
            urgent = True
        queued = self._holdings.queued_since()
        if queued is not None and queued + self.completion_delay <= now:
            urgent = True
        return urgent and (closing or now >= self._retry_at)

    def written(self, ok: bool, now: float) -> None:
        """What the keeper's write did: on failure, back off before the next."""
        if ok:
            self._delay, self._retry_at = self._first_delay, 0.0
            return
        self._retry_at = now + self._delay
        self._delay = min(self._delay * 2, self._max_delay)

    @property
    def done(self) -> bool:
        """Nothing is queued any more (a closing keeper may end)."""
        return self._holdings.queued_since() is None
