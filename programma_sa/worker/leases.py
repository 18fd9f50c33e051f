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
from typing import Literal, NamedTuple

from .._job_records import ClaimedJob
from .results import PassResult

#: The outcome of a job given up on at shutdown.
ABANDONED = PassResult(abandoned=1)

__all__ = ["Cancellation", "Holdings", "Outcome", "Tally", "Work"]

#: What is written for a job whose handler ended (or never started).
OutcomeKind = Literal["complete", "failure", "snooze", "cancel", "release"]


#: Guards every Cancellation's flag and event. Shared: a request and a wait are rare,
#: while a Cancellation is made for every job (an Event each would cost more than the
#: rest of a drained job's bookkeeping).
_CANCELLATION_LOCK = threading.Lock()


class Cancellation:
    """A held job's cancellation, as its handler sees it (``ctx.cancelled``).

    ``on_request`` is the driver's hook, called once when the request arrives (the
    asyncio worker schedules the task's cancellation after the grace period). The
    event a waiting handler blocks on is made only when one waits.
    """

    __slots__ = ("_event", "_requested", "on_request")

    def __init__(self) -> None:
        self._requested = False
        self._event: threading.Event | None = None
        self.on_request: Callable[[], None] | None = None

    @property
    def requested(self) -> bool:
        return self._requested

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the cancellation is requested (or ``timeout`` passes)."""
        with _CANCELLATION_LOCK:  # one event, set if the request came first
            if self._event is None:
                self._event = threading.Event()
                if self._requested:
                    self._event.set()
            event = self._event
        return event.wait(timeout)

    def request(self) -> bool:
        """Mark it requested; False if it was already."""
        with _CANCELLATION_LOCK:  # exactly one request wins, and wakes the waiter
            if self._requested:
                return False
            self._requested = True
            event = self._event
        if event is not None:
            event.set()
        if self.on_request is not None:
            self.on_request()
        return True


class Tally:
    """Adds up the outcomes of some jobs (those of one ``run_once`` pass)."""

    def __init__(self, claimed: int) -> None:
        self.result = PassResult(claimed=claimed)
        self._remaining = claimed
        self._done = threading.Event()

    def add(self, outcome: PassResult, count: int = 1) -> None:
        """``count`` jobs had ``outcome`` each (called under the book's lock)."""
        self.result += outcome if count == 1 else outcome.times(count)
        self._remaining -= count
        if self._remaining == 0:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> bool:
        """Block until every job is counted (or ``timeout`` passes)."""
        return self._done.wait(timeout)


@dataclass(slots=True)
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


class Outcome(NamedTuple):
    """An outcome queued for the writer. ``error``: what the handler raised (a retry
    or FAILED, decided by the retry policy when written; a snooze's request);
    ``result``: the JSON text
    stored with a completion; ``again``: an earlier write of it failed.

    A tuple, not a frozen dataclass: one is made for every job, and a tuple is made
    several times faster."""

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
        # Keyed by the ids' integers: a UUID hashes in Python, an int in C, and a
        # drained job is looked up here half a dozen times.
        self._held: dict[int, _Held] = {}
        self._early_cancels: dict[int, float] = {}
        self._queued: list[Outcome] = []
        self._oldest_queued: float | None = None
        self._writing = False
        self._renewal_wanted = False

    # -- booking jobs -------------------------------------------------------------------

    def hold(self, jobs: Iterable[ClaimedJob], tally: Tally | None = None) -> None:
        """Book newly claimed jobs (``tally``: where their outcomes are counted)."""
        with self._lock:
            now = self._clock()
            for job in jobs:
                held = _Held(job, tally, now)
                self._held[job.id.int] = held
                if not self._early_cancels:
                    continue
                asked = self._early_cancels.pop(job.id.int, None)
                if asked is not None and now - asked < self.remember_cancels:
                    held.cancellation.request()

    def start(self, job_id: uuid.UUID) -> Cancellation | None:
        """Mark the job's handler started; ``None`` if it must not start (released at
        shutdown, or the worker gave up on it)."""
        with self._lock:
            held = self._held.get(job_id.int)
            if held is None or held.finished:
                return None
            held.started = True
            return held.cancellation

    def request_cancel(self, job_id: uuid.UUID) -> bool:
        """A cancellation arrived for ``job_id``; True if we hold that job."""
        with self._lock:
            held = self._held.get(job_id.int)
            if held is None:
                now = self._clock()
                self._early_cancels = {
                    known: at
                    for known, at in self._early_cancels.items()
                    if now - at < self.remember_cancels
                }
                self._early_cancels[job_id.int] = now
                return False
            cancellation = held.cancellation
        cancellation.request()  # outside the lock: its hook may schedule work
        return True

    def forget(self, job_ids: Iterable[uuid.UUID]) -> None:
        """Drop jobs from the book (a transaction-mode pass that ended)."""
        with self._lock:
            for job_id in job_ids:
                self._held.pop(job_id.int, None)

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
                held = self._held.get(job_id.int)
                if held is not None:
                    held.job = dataclasses.replace(held.job, start_after=start_after)
                    held.leased_at = now
            for job_id in checked:
                held = self._held.get(job_id.int)
                if held is not None:
                    held.leased_at = now

    def not_renewable(self, job_ids: Iterable[uuid.UUID]) -> None:
        with self._lock:
            for job_id in job_ids:
                held = self._held.get(job_id.int)
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
            held = self._held.get(outcome.job_id.int)
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
                (outcome, held.job)
                for outcome in self._queued
                if (held := self._held.get(outcome.job_id.int)) is not None
            ]
            self._queued = []
            self._oldest_queued = None
            return Work(outcomes, renew)

    def end_writing(self) -> None:
        """Let the token go after a round that ended in an error (normally
        :meth:`take_work` lets it go)."""
        with self._lock:
            self._writing = False

    def written(self, job_ids: Iterable[int], outcome: PassResult) -> int:
        """The jobs' outcome (the same for each) is written, or given up on: count it
        and drop the jobs (``job_ids``: their ids' integers, ``UUID.int``). Returns how
        many to add to the worker's totals (a job the worker gave up on at shutdown
        was counted then)."""
        counted = 0
        tallies: dict[int, tuple[Tally, int]] = {}
        with self._lock:
            for job_id in job_ids:
                held = self._held.pop(job_id, None)
                if held is None:  # given up on at shutdown (abandon): counted then
                    continue
                counted += 1
                if held.tally is not None:
                    tally, count = tallies.get(id(held.tally), (held.tally, 0))
                    tallies[id(tally)] = (tally, count + 1)
            for tally, count in tallies.values():
                tally.add(outcome, count)
        return counted

    def write_again(self, outcomes: Iterable[Outcome]) -> None:
        """Queue outcomes again after their write failed (written on a later round)."""
        with self._lock:
            again = [outcome._replace(again=True) for outcome in outcomes]
            self._queued[:0] = again
            if again and self._oldest_queued is None:
                self._oldest_queued = self._clock()

    def abandon(self) -> int:
        """Give up on every job still held (shutdown_timeout passed): nothing more is
        written or counted for them; returns how many."""
        with self._lock:
            count = len(self._held)
            for held in self._held.values():
                if held.tally is not None:
                    held.tally.add(ABANDONED)
            self._held.clear()
            self._queued = []
            self._oldest_queued = None
            return count

    @property
    def empty(self) -> bool:
        with self._lock:
            return not self._held and not self._queued
