"""What a worker holds: its claimed jobs, their leases, their cancellations, and the
outcomes waiting to be written (no I/O).

:class:`Holdings` is the worker's book of the jobs it claimed and has not finished
with. For each it keeps the job *as held* — ``start_after`` is the end of the lease
the worker last wrote, by the claim or a renewal, which every guarded write compares
— whether its handler started, and its :class:`Cancellation`.

In lease mode the outcome of a job (its completion, a retry, FAILED, CANCELLED, a
release at shutdown) is not written by the thread or task that ran its handler but
*queued* here, and written by whoever holds the **writer token**: one writer at a
time, never waiting for one another. A handler thread that finishes takes the token
if it is free and writes everything queued (its own outcome and whatever others
queued meanwhile: the completions finishing at the same moment share one
statement); if another writer holds it, the outcome is left queued and that writer
writes it before it lets the token go. A lease renewal is written by the token's
holder too, so a renewal and a job's outcome are never written at once — the
outcome is always built from the lease as the last renewal left it.

Every method takes the lock only to read or change this book, never across I/O, so
the sync worker's threads and the asyncio worker's tasks share it alike.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from .._job_records import ClaimedJob
from .results import PassResult

__all__ = ["Cancellation", "Holdings", "Outcome", "Tally", "Work"]

#: What is written for a job whose handler ended (or never started).
OutcomeKind = Literal["complete", "failure", "cancel", "release"]


class Cancellation:
    """A held job's cancellation, as its handler sees it (``ctx.cancelled``).

    ``on_request`` is the driver's hook, called once when the request arrives (the
    asyncio worker schedules the task's cancellation after the grace period).
    """

    def __init__(self) -> None:
        self._requested = threading.Event()
        self.on_request: Callable[[], None] | None = None

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the cancellation is requested (or ``timeout`` passes)."""
        return self._requested.wait(timeout)

    def request(self) -> bool:
        """Mark it requested; False if it was already."""
        if self._requested.is_set():
            return False
        self._requested.set()
        if self.on_request is not None:
            self.on_request()
        return True


class Tally:
    """Adds up the outcomes of some jobs (those of one ``run_once`` pass)."""

    def __init__(self, claimed: int) -> None:
        self.result = PassResult(claimed=claimed)
        self._remaining = claimed
        self._done = threading.Event()

    def add(self, outcome: PassResult) -> None:
        """Called under the book's lock."""
        self.result += outcome
        self._remaining -= 1
        if self._remaining == 0:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> bool:
        """Block until every job is counted (or ``timeout`` passes)."""
        return self._done.wait(timeout)


@dataclass
class _Held:
    job: ClaimedJob
    tally: Tally | None
    #: When its lease was last written (claim or renewal) or checked: the host's
    #: monotonic clock, which only spaces out the renewals of this process.
    leased_at: float
    cancellation: Cancellation = field(default_factory=Cancellation)
    started: bool = False
    #: Its handler ended: an outcome is queued or written; no more renewals.
    finished: bool = False
    #: False once the job is not as held any more (a handler's own change, another
    #: claim after a lease that ran out): not renewed again.
    renewable: bool = True


@dataclass(frozen=True)
class Outcome:
    """An outcome queued for the writer. ``error``: what the handler raised (a retry
    or FAILED, decided by the retry policy when written); ``result``: the JSON text
    stored with a completion; ``again``: an earlier write of it failed."""

    job_id: uuid.UUID
    kind: OutcomeKind
    error: Exception | None = None
    result: str | None = None
    again: bool = False


@dataclass(frozen=True)
class Work:
    """What a writer round writes: the queued outcomes, each with its job as held
    now, and whether the leases are due for renewal."""

    outcomes: list[tuple[Outcome, ClaimedJob]]
    renew: bool


class Holdings:
    """The jobs a worker holds and the outcomes queued for its writer (see the module)."""

    #: How long a cancellation of a job not (yet) held is remembered: the caller's
    #: cancel may find the job locked by the very claim that is giving it to us, and
    #: its notification may arrive before the claim's jobs are booked here.
    remember_cancels = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        # Guards everything below; never held across I/O (see the module docs).
        self._lock = threading.Lock()
        self._clock = clock
        self._held: dict[uuid.UUID, _Held] = {}
        self._early_cancels: dict[uuid.UUID, float] = {}
        self._queued: list[Outcome] = []
        self._oldest_queued: float | None = None
        self._writing = False
        self._renewal_wanted = False
        self._abandoned = False

    # -- booking jobs -------------------------------------------------------------------

    def hold(self, jobs: Iterable[ClaimedJob], tally: Tally | None = None) -> None:
        """Book newly claimed jobs (``tally``: where their outcomes are counted)."""
        with self._lock:
            now = self._clock()
            for job in jobs:
                held = _Held(job, tally, now)
                self._held[job.id] = held
                asked = self._early_cancels.pop(job.id, None)
                if asked is not None and now - asked < self.remember_cancels:
                    held.cancellation.request()

    def start(self, job_id: uuid.UUID) -> Cancellation | None:
        """Mark the job's handler started; ``None`` if it must not start (released at
        shutdown, or the worker gave up on it)."""
        with self._lock:
            held = self._held.get(job_id)
            if held is None or held.finished or self._abandoned:
                return None
            held.started = True
            return held.cancellation

    def cancellation(self, job_id: uuid.UUID) -> Cancellation | None:
        with self._lock:
            held = self._held.get(job_id)
            return None if held is None else held.cancellation

    def request_cancel(self, job_id: uuid.UUID) -> bool:
        """A cancellation arrived for ``job_id``; True if we hold that job."""
        with self._lock:
            held = self._held.get(job_id)
            if held is None:
                now = self._clock()
                self._early_cancels = {
                    known: at
                    for known, at in self._early_cancels.items()
                    if now - at < self.remember_cancels
                }
                self._early_cancels[job_id] = now
                return False
            cancellation = held.cancellation
        cancellation.request()  # outside the lock: its hook may schedule work
        return True

    def forget(self, job_ids: Iterable[uuid.UUID]) -> None:
        """Drop jobs from the book (a transaction-mode pass that ended)."""
        with self._lock:
            for job_id in job_ids:
                self._held.pop(job_id, None)

    # -- what is held --------------------------------------------------------------------

    def held_jobs(self) -> list[ClaimedJob]:
        with self._lock:
            return [held.job for held in self._held.values()]

    def lease_due_at(self, interval: Callable[[ClaimedJob, bool], float]) -> float | None:
        """When the next lease pass is due (monotonic; ``None``: nothing held):
        ``interval(job, renewable)`` after the job's lease was last written or checked."""
        with self._lock:
            return min(
                (
                    held.leased_at + interval(held.job, held.renewable)
                    for held in self._held.values()
                    if not held.finished
                ),
                default=None,
            )

    def lease_pass(self) -> tuple[list[ClaimedJob], list[ClaimedJob]]:
        """The jobs of a lease pass: those whose lease to renew (renewable, with a
        lease), and the others still held, whose state is only read (a
        cancellation)."""
        renew: list[ClaimedJob] = []
        check: list[ClaimedJob] = []
        with self._lock:
            for held in self._held.values():
                if held.finished:
                    continue
                if held.renewable and held.job.start_after is not None:
                    renew.append(held.job)
                else:
                    check.append(held.job)
        return renew, check

    def renewed(self, leases: dict[uuid.UUID, datetime], checked: Iterable[uuid.UUID]) -> None:
        """A lease pass wrote these lease ends (the jobs are held so from now on) and
        read the ``checked`` jobs."""
        with self._lock:
            now = self._clock()
            for job_id, start_after in leases.items():
                held = self._held.get(job_id)
                if held is not None:
                    held.job = dataclasses.replace(held.job, start_after=start_after)
                    held.leased_at = now
            for job_id in checked:
                held = self._held.get(job_id)
                if held is not None:
                    held.leased_at = now

    def not_renewable(self, job_ids: Iterable[uuid.UUID]) -> None:
        with self._lock:
            for job_id in job_ids:
                held = self._held.get(job_id)
                if held is not None:
                    held.renewable = False

    @property
    def running(self) -> int:
        """Jobs whose handler started and has not ended."""
        with self._lock:
            return sum(held.started and not held.finished for held in self._held.values())

    # -- outcomes and the writer token ---------------------------------------------------

    def queue(self, outcome: Outcome) -> bool:
        """Queue an outcome (its job's handler ended, or it is released); True when
        it is the only one queued (whoever flushes late ones should know)."""
        with self._lock:
            held = self._held.get(outcome.job_id)
            if held is not None:
                held.finished = True
            self._queued.append(outcome)
            if self._oldest_queued is None:
                self._oldest_queued = self._clock()
                return True
            return False

    def release_unstarted(self) -> int:
        """Queue the release of every held job whose handler has not started (the
        worker is stopping); returns how many. They will not start."""
        with self._lock:
            unstarted = [
                held.job.id
                for held in self._held.values()
                if not held.started and not held.finished
            ]
        for job_id in unstarted:
            self.queue(Outcome(job_id, "release"))
        return len(unstarted)

    def queued_since(self) -> float | None:
        """When the oldest queued outcome was queued (``None``: nothing is)."""
        with self._lock:
            return self._oldest_queued

    def want_renewal(self) -> None:
        with self._lock:
            self._renewal_wanted = True

    def begin_writing(self) -> bool:
        """Take the writer token; False if another writer holds it (it will write
        what is queued now before it lets the token go)."""
        with self._lock:
            if self._writing:
                return False
            self._writing = True
            return True

    def take_work(self) -> Work | None:
        """The token holder's next round; ``None`` — and the token is let go, in the
        same step, so nothing queued meanwhile is left behind — when there is none."""
        with self._lock:
            assert self._writing, "take_work() needs the writer token"
            renew, self._renewal_wanted = self._renewal_wanted, False
            if not self._queued and not renew:
                self._writing = False
                return None
            outcomes = [
                (outcome, self._held[outcome.job_id].job)
                for outcome in self._queued
                if outcome.job_id in self._held
            ]
            self._queued = []
            self._oldest_queued = None
            return Work(outcomes, renew)

    def end_writing(self) -> None:
        """Let the token go after a round that ended in an error (normally
        :meth:`take_work` lets it go)."""
        with self._lock:
            self._writing = False

    def written(self, job_id: uuid.UUID, outcome: PassResult) -> PassResult | None:
        """The job's outcome is written (or given up on): count it and drop the job.
        Returns what to add to the worker's totals (``None``: nothing, the worker
        gave up on it at shutdown and counted it then)."""
        with self._lock:
            held = self._held.pop(job_id, None)
            if held is None or self._abandoned:
                return None
            if held.tally is not None:
                held.tally.add(outcome)
            return outcome

    def write_again(self, outcomes: Iterable[Outcome]) -> None:
        """Queue outcomes again after their write failed (written on a later round)."""
        with self._lock:
            again = [dataclasses.replace(outcome, again=True) for outcome in outcomes]
            self._queued[:0] = again
            if again and self._oldest_queued is None:
                self._oldest_queued = self._clock()

    def abandon(self) -> int:
        """Give up on every job still held (shutdown_timeout passed): nothing more is
        written or counted for them; returns how many."""
        with self._lock:
            self._abandoned = True
            count = len(self._held)
            for held in self._held.values():
                if held.tally is not None:
                    held.tally.add(PassResult(abandoned=1))
            self._held.clear()
            self._queued = []
            self._oldest_queued = None
            return count

    @property
    def empty(self) -> bool:
        with self._lock:
            return not self._held and not self._queued
