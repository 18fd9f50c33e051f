"""What a worker holds: its claimed jobs, their leases, their cancellations, and the
outcomes waiting to be written (no I/O).

:class:`Holdings` is the worker's book of the jobs it claimed and has not finished
with. For each it keeps the job *as held* — ``start_after`` is the end of the lease
the worker last wrote, by the claim or a renewal, which every guarded write compares
— whether its handler started, and its cancellation: one :class:`HeldJob` per job,
which is the job's :class:`Cancellation` too.

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
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple

from .._job_records import ClaimedJob
from .results import PassResult

#: The outcome of a job given up on at shutdown.
ABANDONED = PassResult(abandoned=1)

__all__ = ["COMPLETE", "Cancellation", "HeldJob", "Holdings", "Outcome", "Tally", "Work"]

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


class Outcome(NamedTuple):
    """What to write for a held job, queued for the writer with the job (see
    :meth:`Holdings.queue`). ``error``: what the handler raised (a retry or FAILED,
    decided by the retry policy when written; a snooze's request); ``result``: the
    JSON text stored with a completion; ``again``: an earlier write of it failed.

    It does not name its job, so the commonest outcome is one shared constant
    (:data:`COMPLETE`): nothing is made per job for it."""

    kind: OutcomeKind
    error: Exception | None = None
    result: str | None = None
    again: bool = False


#: The outcome of a job whose handler returned nothing (a drain's every job).
COMPLETE = Outcome("complete")
#: The outcome of a job released at shutdown before its handler started.
_RELEASE = Outcome("release")


class HeldJob(Cancellation):
    """A held job's entry in the book: the job as held now (``job``), and, once
    queued, its ``outcome``. It is also the job's :class:`Cancellation`, and what the
    writer is handed (:class:`Work`).

    One object per job, and none more while it is queued and written, because what
    a drain keeps alive per job — a claim's jobs live until their batch is written —
    sets how often the cyclic garbage collector runs, and what it walks: a
    Cancellation, an outcome and an (outcome, job) pair more per job made a
    20,000-job drain run it a third more often, and walk the whole heap three times
    instead of two (docs/benchmarks.md, "the lease drain after #15").
    """

    __slots__ = ("finished", "job", "leased_at", "outcome", "renewable", "started", "tally")

    #: What to write for it: set when it is queued (not before).
    outcome: Outcome

    def __init__(self, job: ClaimedJob, tally: Tally | None, leased_at: float) -> None:
        super().__init__()
        self.job = job
        self.tally = tally
        #: When its lease was last written (claim or renewal) or checked: the host's
        #: monotonic clock, which only spaces out the renewals of this process.
        self.leased_at = leased_at
        self.started = False
        #: Its handler ended: an outcome is queued or written; no more renewals.
        self.finished = False
        #: False once the job is not as held any more (a handler's own change, another
        #: claim after a lease that ran out): not renewed again.
        self.renewable = True


@dataclass(frozen=True)
class Work:
    """What a writer round writes: the queued jobs, each with its outcome and the job
    as held now (only the writer renews a lease, and a queued job is not renewed),
    and whether the leases are due for renewal."""

    queued: list[HeldJob]
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
        self._held: dict[int, HeldJob] = {}
        self._early_cancels: dict[int, float] = {}
        self._queued: list[HeldJob] = []
        self._oldest_queued: float | None = None
        self._writing = False
        self._renewal_wanted = False

    # -- booking jobs -------------------------------------------------------------------

    def hold(self, jobs: Iterable[ClaimedJob], tally: Tally | None = None) -> None:
        """Book newly claimed jobs (``tally``: where their outcomes are counted)."""
        with self._lock:
            now = self._clock()
            for job in jobs:
                held = HeldJob(job, tally, now)
                self._held[job.id.int] = held
                if not self._early_cancels:
                    continue
                asked = self._early_cancels.pop(job.id.int, None)
                if asked is not None and now - asked < self.remember_cancels:
                    held.request()

    def start(self, job_id: uuid.UUID) -> Cancellation | None:
        """Mark the job's handler started; ``None`` if it must not start (released at
        shutdown, or the worker gave up on it)."""
        with self._lock:
            held = self._held.get(job_id.int)
            if held is None or held.finished:
                return None
            held.started = True
            return held

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
        held.request()  # outside the lock: its hook may schedule work
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

    def lease_due_at(self, interval: Callable[[int | None, bool], float]) -> float | None:
        """When the next lease pass is due (monotonic; ``None``: nothing held):
        ``interval(retry_after_seconds, renewable)`` after the job's lease was last
        written or checked."""
        with self._lock:
            # The distinct leases, each worked out once: a claim's jobs share when
            # they were booked (and a renewal's, when they were renewed), and the
            # keeper asks after every claim, with a claim's jobs all held.
            leases = {
                (held.leased_at, held.job.retry_after_seconds, held.renewable)
                for held in self._held.values()
                if not held.finished
            }
        return min(
            (at + interval(seconds, renewable) for at, seconds, renewable in leases),
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

    def queue(self, job_id: uuid.UUID, outcome: Outcome) -> bool:
        """Queue a held job's outcome (its handler ended); True when it is the only
        one queued (whoever flushes late ones should know). The outcome of a job no
        longer held (given up on at shutdown) is dropped."""
        with self._lock:
            held = self._held.get(job_id.int)
            if held is None:
                return False
            return self._queue(held, outcome)

    def _queue(self, held: HeldJob, outcome: Outcome) -> bool:
        """:meth:`queue`, the lock held."""
        held.finished = True
        held.outcome = outcome
        self._queued.append(held)
        if self._oldest_queued is None:
            self._oldest_queued = self._clock()
            return True
        return False

    def release_unstarted(self) -> int:
        """Queue the release of every held job whose handler has not started (the
        worker is stopping); returns how many. They will not start."""
        count = 0
        # One lock for the look and the queueing: a handler thread's start() sees
        # each job either started (then it is not released) or released (then it
        # does not start), never released while it runs.
        with self._lock:
            for held in self._held.values():
                if not held.started and not held.finished:
                    self._queue(held, _RELEASE)
                    count += 1
        return count

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
            # Every queued job is held: written() and abandon() drop a job only once
            # it is not queued any more.
            queued, self._queued = self._queued, []
            self._oldest_queued = None
            return Work(queued, renew)

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
        tallies: dict[Tally | None, int] = {}  # a Tally hashes by identity
        with self._lock:
            for job_id in job_ids:
                held = self._held.pop(job_id, None)
                if held is None:  # given up on at shutdown (abandon): counted then
                    continue
                counted += 1
                tallies[held.tally] = tallies.get(held.tally, 0) + 1
            for tally, count in tallies.items():
                if tally is not None:
                    tally.add(outcome, count)
        return counted

    def write_again(self, queued: Iterable[HeldJob]) -> None:
        """Queue jobs again after the write of their outcome failed (written on a
        later round); those no longer held (given up on at shutdown) are dropped."""
        with self._lock:
            again: list[HeldJob] = []
            for held in queued:
                if self._held.get(held.job.id.int) is held:
                    held.outcome = held.outcome._replace(again=True)
                    again.append(held)
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
