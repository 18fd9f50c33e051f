"""What :class:`~programma_sa.Worker` and :class:`~programma_sa.AsyncWorker` decide: no I/O.

The two workers differ only in how they wait and how they execute — threads and a
``Session`` for one, tasks and an ``AsyncSession`` for the other. Everything they
*decide* is written once, here, in :class:`WorkerCore` (their common base), as
generators of :mod:`steps <.steps>` that each driver runs with
:func:`~programma_sa._execute.drive` (or ``drive_async``):

* the claim of one pass over several topics, starting at a rotating topic, its
  size (``max_jobs``, or with ``max_jobs=None`` the
  :class:`~.claim_size.AdaptiveClaimSize` fed each batch's figures), and the
  look-ahead that decides how long an idle worker sleeps;
* a lease-mode job: its handler, then what to write for it — its completion (with
  the handler's result), the verdict on its exception (retry after a backoff, or
  FAILED), a snooze, CANCELLED when its cancellation reached it — queued in the
  worker's :class:`~.leases.Holdings`; and the rounds of the *writer* that write what is
  queued (completions finishing at the same moment in one statement), renew the
  leases (:class:`~.duties.LeaseDuty`), release unstarted jobs at shutdown, and
  judge every write that found a job changed;
* the whole of a transaction-mode pass (claim, each handler in turn, the verdicts,
  a cancellation, the completion with the results, the COMMIT) — and after a
  refused COMMIT, the failed attempts it records in a transaction of the worker's
  own; a cancellation notice (:meth:`WorkerCore._on_control`);
* the periodic :mod:`duties <.duties>` (pruning, schedules), the backoff after
  database errors, what a shutdown signal means, and the log lines.

The settings are a :class:`~.settings.WorkerSettings`, checked when built.
"""

from __future__ import annotations

import functools
import inspect
import logging
import signal
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL

from .._error_text import error_line, first_line
from .._job_records import ClaimedJob
from .._operations import Operation
from .._operations.jobs import JobOperations, LeaseState
from .._queue_base import QueueBase
from .._sqla_compat import engine_sets_isolation_level
from ..exceptions import (
    CommitFailed,
    ConfigurationError,
    DatabaseError,
    InvalidJobInput,
    JobCancelled,
    PayloadTooLarge,
    PermanentFailure,
    TransactionLost,
)
from ..models import JobState
from ..retry import describe_error
from .claim_size import AdaptiveClaimSize
from .duties import Duty, LeaseDuty, PruneDuty
from .job_log import JobLog
from .leases import COMPLETE, Cancellation, HeldJob, Holdings, Outcome
from .listen import conninfo_from_url
from .results import (
    CANCELLED,
    COMPLETED,
    LOST,
    NOTHING_WRITTEN,
    RELEASED,
    SNOOZED,
    UNTOUCHED,
    PassResult,
)
from .schedules import ScheduleDuty
from .settings import WorkerSettings
from .steps import (
    Commit,
    ConnectionLost,
    EachCommitted,
    InTransaction,
    JobSnoozed,
    Returned,
    RunHandler,
    Step,
    single,
)

__all__ = [
    "DB_ERRORS",
    "Backoff",
    "Batch",
    "WorkerCore",
    "autocommit_allowed",
    "connection_died",
    "is_async_handler",
]

log = logging.getLogger("programma_sa.worker")

T = TypeVar("T")

#: Errors of an unreachable or failing database, after which a loop backs off.
DB_ERRORS = (DatabaseError, sa_exc.DBAPIError)


def job_log(job: ClaimedJob) -> dict[str, Any]:
    """The ``extra`` of every log line about one job (for structured log handlers)."""
    return {"job_id": str(job.id), "topic": job.topic}


def is_async_handler(handler: object) -> bool:
    """Whether calling ``handler`` returns a coroutine: an ``async def`` function, a
    ``functools.partial`` of one, or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(handler):
        return True
    return callable(handler) and inspect.iscoroutinefunction(type(handler).__call__)


def autocommit_allowed(engine: Engine) -> bool:
    """Whether a worker may run its one-statement units of work
    (:class:`~.steps.EachCommitted`) on ``engine`` in autocommit: not when the
    application set an isolation level on the engine, for in autocommit the
    statement would run at the server's default."""
    return not engine_sets_isolation_level(engine)


def _claimed(count: int, *, verb: bool = True) -> str:
    """``"its 1 claimed job is"``, ``"its 3 claimed jobs are"`` (``verb``: with is/are)."""
    noun = "job" if count == 1 else "jobs"
    if verb:
        noun += " is" if count == 1 else " are"
    return f"its {count} claimed {noun}"


#: What each queued outcome's write is called in a log line.
_WRITES = {
    "complete": "completion",
    "failure": "failure record",
    "cancel": "cancellation",
    "release": "release",
    "snooze": "snooze",
}


def connection_died(error: BaseException) -> bool:
    """Whether a database error came with its connection's death (SQLAlchemy
    invalidated it): a killed backend, a server restart, a broken network."""
    cause = error if isinstance(error, sa_exc.DBAPIError) else error.__cause__
    return isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated


def _landed(outcome: Outcome, job: ClaimedJob, state: LeaseState) -> PassResult | None:
    """What an outcome written again found, when it shows that the earlier write
    (whose reply was lost with its connection) did land; ``None`` otherwise."""
    if outcome.kind == "complete" and state.state is JobState.COMPLETED:
        return COMPLETED
    if outcome.kind == "failure" and state.state is JobState.FAILED:
        return PassResult(failed=1)
    if outcome.kind == "failure" and state.start_after != job.start_after:
        return PassResult(retried=1)  # still ACTIVE, due again after the backoff
    return None


#: How many jobs a log line about a whole batch names.
_NAMED_JOBS = 5


def _job_list(jobs: Sequence[ClaimedJob]) -> str:
    """``"jobs: <id> [topic], <id> [topic] and 4 more"``: at most ``_NAMED_JOBS`` named."""
    named = ", ".join(f"{job.id} [{job.topic}]" for job in jobs[:_NAMED_JOBS])
    more = len(jobs) - _NAMED_JOBS
    return f"jobs: {named}" + (f" and {more} more" if more > 0 else "")


#: The databases without LISTEN/NOTIFY, by SQLAlchemy backend name: how messages name
#: each, and its page in docs/. Workers there poll every heartbeat.
_POLLING_DATABASES = {
    "sqlite": ("SQLite", "sqlite"),
    "mariadb": ("MariaDB", "mariadb"),
    "mysql": ("MariaDB/MySQL", "mariadb"),
}


def polling_database_name(backend: str) -> str | None:
    """How messages name the database of SQLAlchemy backend ``backend`` when it has
    no LISTEN/NOTIFY (its workers poll every heartbeat); None on PostgreSQL."""
    polling = _POLLING_DATABASES.get(backend)
    return None if polling is None else polling[0]


class Backoff:
    """Bounded exponential backoff for reconnecting after database errors."""

    def __init__(self, initial: float, cap: float) -> None:
        self._initial = initial
        self._cap = cap
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._cap)
        return delay

    def reset(self) -> None:
        self._next = self._initial


class Batch:
    """The jobs of one transaction-mode pass: which handlers returned (and what they
    returned), the completion, the result.

    Completions are written for the whole batch in ONE conditional UPDATE, once its
    last job is done.
    """

    def __init__(self, jobs: list[ClaimedJob]) -> None:
        self.jobs = jobs
        self._remaining = len(jobs)
        self._returned: list[ClaimedJob] = []
        self._results: list[str | None] = []
        self._result = PassResult(claimed=len(jobs))

    @property
    def returned(self) -> list[ClaimedJob]:
        """The jobs whose handler returned, so far."""
        return self._returned

    def record(
        self, outcome: PassResult, returned: ClaimedJob | None = None, result: str | None = None
    ) -> bool:
        """Count one job's outcome (``returned``: the job whose handler returned, with
        ``result``, its JSON text); True when it was the batch's last job."""
        if outcome is not NOTHING_WRITTEN:
            self._result += outcome
        if returned is not None:
            self._returned.append(returned)
            self._results.append(result)
        self._remaining -= 1
        return self._remaining == 0

    def completion(
        self, operations: JobOperations, auto_complete: bool
    ) -> Operation[list[uuid.UUID]] | None:
        """The UPDATE completing every returned job still as its claim left it, with
        its result (``None``: nothing to write)."""
        if not (self._returned and auto_complete):
            return None
        return operations.complete_unchanged(self._returned, self._results)

    def result(self, completed_ids: Collection[uuid.UUID] | None = None) -> PassResult:
        """The batch's :class:`PassResult`, given the ids the completion returned
        (``None``: no completion was written)."""
        completed = set(completed_ids or ())
        if completed_ids is not None and log.isEnabledFor(logging.DEBUG):
            for job in self._returned:
                log.debug(
                    "job %s [%s] %s",
                    job.id,
                    job.topic,
                    "completed" if job.id in completed else "changed by its handler: left as is",
                    extra=job_log(job),
                )
        return self._result + PassResult(
            completed=len(completed), left_untouched=len(self._returned) - len(completed)
        )


# -- settings checks (ConfigurationError naming the setting) ----------------------------


def _check_handler(handler: object, asynchronous: bool) -> None:
    if not callable(handler):
        raise ConfigurationError(f"handler must be callable, got {handler!r}")
    if asynchronous and not is_async_handler(handler):
        raise ConfigurationError(
            f"handler must be an async function (async def) for AsyncWorker, got {handler!r}; "
            "run a sync handler with Worker"
        )
    if not asynchronous and is_async_handler(handler):
        # Called by a thread, it would return a coroutine nobody awaits: the job
        # would be completed without its work ever running.
        raise ConfigurationError(
            f"handler {handler!r} is an async function: run it with AsyncWorker"
        )


def _with_error_record(
    build: Callable[[Mapping[str, Any]], Operation[bool]],
    error: Exception,
    attempt: int,
    message: str | None = None,
) -> Operation[bool]:
    """``build(attributes)`` with the fullest ``last_error`` the queue's payload limit takes.

    ``message``: what ``last_error.message`` says instead of the error's own text.
    Recording the failure must not fail: a failure that cannot be written would, in
    transaction mode, roll the claim back and make a poison job loop hot.
    """
    full = describe_error(error, attempt)
    if message is not None:
        full["message"] = message
    short = {"type": full["type"], "message": full["message"][-200:], "attempt": attempt}
    for attributes in ({"last_error": full}, {"last_error": short}):
        try:
            return build(attributes)
        except PayloadTooLarge:
            continue
    return build({})


class ClaimTiming(NamedTuple):
    """One claim's figures for the adaptive claim size: the size it asked for, the
    jobs it got, and when it returned (``time.perf_counter()``)."""

    asked: int
    claimed: int
    started: float


class WorkerCore(ABC):
    """The settings and decisions of a worker, free of I/O (see the module docs).

    The subclasses add the drivers: how a pass's operations are executed, how
    handlers run concurrently, how the loop waits.
    """

    #: Backoff after a database error in the loop: first wait and its cap (seconds).
    reconnect_initial = 0.1
    reconnect_max = 10.0
    #: Shortest idle wait when a due job exists that the claim could not take (it is
    #: locked by another transaction): polling faster would only spin on it.
    min_idle_wait = 0.25

    def __init__(
        self,
        queue: object,
        handler: object,
        settings: WorkerSettings,
        *,
        queue_type: type[QueueBase],
        asynchronous: bool,
        bound_url: URL | None,
    ) -> None:
        if not isinstance(queue, queue_type):
            raise ConfigurationError(f"queue must be a {queue_type.__name__}, got {queue!r}")
        _check_handler(handler, asynchronous)
        if not isinstance(settings, WorkerSettings):
            raise ConfigurationError(f"settings must be a WorkerSettings, got {settings!r}")
        #: Every setting of this worker.
        self.settings = settings
        self._conninfo: str | None = None
        if settings.listen:
            url = settings.database_url if isinstance(settings.database_url, URL) else bound_url
            if url is None:
                raise ConfigurationError(
                    "listen=True needs the database to LISTEN on: pass database_url=..., "
                    "bind an engine (or a session factory bound to one), or set listen=False"
                )
            polling = _POLLING_DATABASES.get(url.get_backend_name())
            if url is settings.database_url and polling is not None:
                name, page = polling
                raise ConfigurationError(
                    f"database_url names a {name} database, which has no LISTEN/NOTIFY to "
                    f"wake a worker: on {name} workers poll every heartbeat "
                    f"(docs/{page}.md); leave database_url unset or set listen=False"
                )
            # SQLite and MariaDB have nothing to LISTEN on: the worker polls.
            if polling is None:
                self._conninfo = conninfo_from_url(url)
        self._operations: JobOperations = queue.operations
        #: Picks the connection a pass's statements run on from its Session, the way
        #: a statement on the jobs table does (for sessions with several binds).
        self._pass_bind: dict[str, Any] = {"clause": queue.table}
        self._stopping = False
        #: The error of the writer's last failed write (for the line that reports it).
        self._last_write_error: BaseException | None = None
        # Claims start at a rotating topic (fairness); the lock keeps the turn exact
        # when the sync worker's threads claim at once (it is never held across I/O).
        self._turn_lock = threading.Lock()
        self._topic_turn = 0
        #: ``max_jobs=None``: the size of the next claim, learnt from the batches
        #: before it (guarded by ``_turn_lock``: batches of several handler threads
        #: end at once, and their figures must not be lost to one another).
        self.claim_size = AdaptiveClaimSize() if settings.max_jobs is None else None
        #: The size the last claim asked for (the loop's "was it full?").
        self._asked = settings.max_jobs or 0
        self._prune_duty = (
            None
            if settings.retention is None
            else PruneDuty(
                queue,
                settings.retention,
                batch_size=settings.prune_batch_size,
                interval=settings.prune_interval,
            )
        )
        #: The periodic duties the loop runs between claims.
        self.duties: list[Duty[Any]] = [] if self._prune_duty is None else [self._prune_duty]
        self._job_log = JobLog()
        if settings.schedules:
            self.duties.append(ScheduleDuty(self._operations, settings.schedules))
        #: The jobs this worker holds, and (lease mode) the outcomes queued for its writer.
        self.holdings = Holdings()
        #: Lease mode: the renewal of the held jobs' leases, run by the keeper.
        self.lease_duty = (
            LeaseDuty(
                self._operations,
                self.holdings,
                heartbeat=settings.heartbeat,
                renew=settings.lease_renewal,
            )
            if settings.mode == "lease"
            else None
        )

    # -- state shared by both workers ----------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (or a signal asked the loop to stop)."""
        return self._stopping

    @property
    def pruned(self) -> int:
        """Finished jobs this worker's periodic pruning deleted so far."""
        return 0 if self._prune_duty is None else self._prune_duty.deleted

    @abstractmethod
    def stop(self) -> None:
        """Stop claiming; running handlers may finish (up to ``shutdown_timeout``)."""

    @abstractmethod
    def _abandon(self) -> None:
        """Stop waiting for running handlers (a second shutdown signal)."""

    def _on_signal(self, signum: int) -> None:
        """SIGTERM/SIGINT: the first stops gracefully, the second stops waiting."""
        name = signal.Signals(signum).name
        if self._stopping:
            log.warning("%s again: not waiting for running handlers", name)
            self._abandon()
        else:
            log.info("%s: stopping (running handlers may finish)", name)
            self.stop()

    # -- one pass: the claim, and the verdict on each handler ----------------------------

    def _claim_steps(self) -> Generator[Operation[Any], Any, list[ClaimedJob]]:
        """Claim up to ``max_jobs`` across the topics, starting at a rotating one (fairness)."""
        return (yield from self._claims(self._operations.claim_jobs))

    def _lease_claim_steps(self) -> Generator[Step, Any, list[ClaimedJob]]:
        """Claim and commit at once: the lease is what makes the job ours. Over
        several topics the claim is several statements: one transaction, so they
        commit (or fail) together."""
        if len(self.settings.topics) == 1:
            jobs: list[ClaimedJob] = yield EachCommitted(self._claim_steps())
        else:
            jobs = yield InTransaction(self._claim_steps())
        return jobs

    def _leased_job_steps(
        self, job: ClaimedJob
    ) -> Generator[Step, Any, Outcome | PassResult | None]:
        """Run one leased job's handler; what to queue for the writer — or the job's
        outcome when nothing is to be written, ``None`` when it must not start (it was
        released at shutdown: its release is counted)."""
        cancellation = self.holdings.start(job.id)
        if cancellation is None:
            return None
        reply: Returned | Exception = yield from self._timed_handler_steps(job, cancellation)
        if cancellation.requested or isinstance(reply, JobCancelled):
            self._log_cancelled(job, reply)
            return Outcome("cancel")
        if isinstance(reply, JobSnoozed):
            return Outcome("snooze", error=reply)
        if isinstance(reply, Exception):
            return Outcome("failure", error=reply)
        if not self.settings.auto_complete:
            return UNTOUCHED
        if reply.value is None:  # most handlers: no result to encode
            return COMPLETE
        return Outcome("complete", result=self._result_text(job, reply.value))

    def _timed_handler_steps(
        self, job: ClaimedJob, cancellation: Cancellation | None
    ) -> Generator[Step, Any, Any]:
        """:class:`RunHandler`, its time kept for the job's line (:class:`JobLog`) when
        job lines are logged."""
        if not self._job_log.wanted:
            return (yield RunHandler(job, cancellation))
        started = time.perf_counter()
        reply = yield RunHandler(job, cancellation)
        self._job_log.ran(job, time.perf_counter() - started)
        return reply

    def _log_returned(self, batch: Batch, completed: Collection[uuid.UUID] | None) -> None:
        """The lines of a transaction-mode batch's jobs whose handler returned, once its
        pass committed (``completed``: the ids it completed; ``None``: none written)."""
        done = set(completed or ())
        for job in batch.returned:
            self._job_log.finished(job, COMPLETED if job.id in done else UNTOUCHED)

    def _result_text(self, job: ClaimedJob, value: object) -> str | None:
        """The handler's return value as the JSON stored with the completion; a value
        that cannot be stored is logged and left out (the job still completes)."""
        try:
            return self._operations.result_text(value)
        except InvalidJobInput as error:
            log.warning(
                "job %s [%s]: its handler's return value is not stored as its result (%s); "
                "the job completes without one",
                job.id,
                job.topic,
                error,
                extra=job_log(job),
            )
            return None

    def _log_cancelled(self, job: ClaimedJob, reply: Returned | Exception) -> None:
        how = "returned" if isinstance(reply, Returned) else f"raised {type(reply).__name__}"
        log.info(
            "job %s [%s] cancelled: its handler %s; the job ends CANCELLED",
            job.id,
            job.topic,
            how,
            extra=job_log(job),
        )

    # -- the lease-mode writer (see .leases) ---------------------------------------------

    def _writer_steps(self, *, final: bool) -> Generator[Step, Any, bool]:
        """Take the writer token if it is free and write everything queued, round after
        round; False if a write failed (queued again, unless ``final``). When another
        writer holds the token, nothing to do: it writes what we queued (see .leases)."""
        if not self.holdings.begin_writing():
            return True
        try:
            while True:
                written = yield from self._writer_round_steps(final=final)
                if written is None:
                    return True  # nothing left: take_work let the token go
                if not written:
                    self.holdings.end_writing()
                    return False
        except BaseException:
            self.holdings.end_writing()
            raise

    def _writer_round_steps(self, *, final: bool) -> Generator[Step, Any, bool | None]:
        """One round of the writer, which holds the writer token: the lease pass if
        it is due, then every queued outcome. ``None`` when there was nothing to do
        (the token is let go); else whether everything was written — an outcome
        whose write failed twice is queued again for a later round, or, ``final``
        (the worker is done: ``run_once`` returning, ``run`` stopping), given up on.
        """
        work = self.holdings.take_work()
        if work is None:
            return None
        written = True
        if work.renew and self.lease_duty is not None:
            try:
                lease_pass = yield from self.lease_duty.steps()
            except DB_ERRORS as error:
                self.lease_duty.finished(None, error)
                written = False
            else:
                self.lease_duty.finished(lease_pass)
        if work.queued:
            written = (yield from self._outcome_steps(work.queued, final)) and written
        return written

    def _outcome_steps(self, queued: list[HeldJob], final: bool) -> Generator[Step, Any, bool]:
        """Write the queued jobs' outcomes, each for its job as held now; False if any
        is left."""
        by_kind: dict[str, list[HeldJob]] = {}
        for held in queued:
            by_kind.setdefault(held.outcome.kind, []).append(held)
        unwritten: list[HeldJob] = []
        for kind in ("complete", "release"):
            group = by_kind.get(kind, [])
            if group:
                unwritten += yield from self._batched_steps(kind, group)
        singles = by_kind.get("failure", []) + by_kind.get("snooze", []) + by_kind.get("cancel", [])
        for held in singles:
            unwritten += yield from self._one_outcome_steps(held)
        if not unwritten:
            return True
        self._unwritten(unwritten, final)
        return False

    def _write_twice_steps(self, operation: Operation[T]) -> Generator[Step, Any, T]:
        """Write ``operation``; after a database error once more, on a fresh
        connection (the pool replaces one a database error showed dead). The write is
        conditional, so writing it again is harmless. Raises the second error."""
        try:
            written: T = yield EachCommitted(single(operation))
        except DB_ERRORS as error:
            log.info(
                "writing outcomes failed (%s); writing them again on a fresh connection",
                first_line(error),
            )
            written = yield EachCommitted(single(operation))
        return written

    def _batched_steps(
        self, kind: str, group: list[HeldJob]
    ) -> Generator[Step, Any, list[HeldJob]]:
        """Complete (or release) every job of ``group`` in one statement; the jobs
        whose outcome is not written."""
        jobs = [held.job for held in group]
        if kind == "complete":
            operation = self._operations.complete_unchanged(
                jobs, [held.outcome.result for held in group]
            )
            done_outcome = COMPLETED
        else:
            operation = self._operations.release_unstarted(jobs)
            done_outcome = RELEASED
        try:
            ids: list[uuid.UUID] = yield from self._write_twice_steps(operation)
        except DB_ERRORS as error:
            self._last_write_error = error
            return group
        written = {job_id.int for job_id in ids}  # ints: see Holdings
        if kind == "complete":
            self._job_log.finished_all((job for job in jobs if job.id.int in written), COMPLETED)
        # One count for the whole statement: a drain's completions come by the thousand.
        self._record_all(written, done_outcome)
        yield from self._missed_steps([held for held in group if held.job.id.int not in written])
        return []

    def _one_outcome_steps(self, held: HeldJob) -> Generator[Step, Any, list[HeldJob]]:
        """Write a failure's verdict, a snooze, or CANCELLED; ``[held]`` if not
        written."""
        outcome, job = held.outcome, held.job
        if outcome.kind == "cancel":
            operation = self._operations.cancel_unchanged(job)
            done_outcome = CANCELLED
        elif isinstance(outcome.error, JobSnoozed):
            operation, done_outcome = self._snooze(job, outcome.error), SNOOZED
        else:
            assert outcome.error is not None
            operation, done_outcome = self._failure(job, outcome.error, quiet=outcome.again)
        try:
            changed: bool = yield from self._write_twice_steps(operation)
        except DB_ERRORS as error:
            self._last_write_error = error
            return [held]
        if changed:
            self._record(job, done_outcome, outcome.error)
        else:
            yield from self._missed_steps([held])
        return []

    def _missed_steps(self, missed: list[HeldJob]) -> Generator[Step, Any, None]:
        """Judge the jobs a guarded write did not match, from what they are now."""
        if not missed:
            return
        states: dict[uuid.UUID, LeaseState] | None
        try:
            states = yield EachCommitted(
                single(self._operations.lease_states([held.job.id for held in missed]))
            )
        except DB_ERRORS:
            states = None
        for held in missed:
            outcome, job = held.outcome, held.job
            state = None if states is None else states.get(job.id)
            judged = self._judge_missed(outcome, job, state, known=states is not None)
            self._record(job, judged, outcome.error)

    def _judge_missed(
        self, outcome: Outcome, job: ClaimedJob, state: LeaseState | None, *, known: bool
    ) -> PassResult:
        """What a write that did not match ``job`` meant, given its state now."""
        extra = job_log(job)
        if known and state is not None and state.state is JobState.CANCELLED:
            log.info("job %s [%s] was cancelled", job.id, job.topic, extra=extra)
            return CANCELLED
        gives_back = outcome.kind in ("release", "snooze")  # both give the delivery back
        if gives_back and state is not None and state.attempts == job.attempts - 1:
            # An earlier write, whose reply was lost, did land.
            return RELEASED if outcome.kind == "release" else SNOOZED
        if known and state is not None and state.attempts != job.attempts:
            log.warning(
                "job %s [%s]: its %s found it no longer ours: another worker claimed it "
                "again (attempt %d) after the lease of attempt %d ran out, so it ran twice",
                job.id,
                job.topic,
                _WRITES[outcome.kind],
                state.attempts,
                job.attempts,
                extra=extra,
            )
            return LOST
        if outcome.again and state is not None:
            landed = _landed(outcome, job, state)
            if landed is not None:
                return landed  # the earlier write, whose reply was lost, did land
        if outcome.kind in ("failure", "snooze"):
            log.info(
                "job %s [%s] changed by its handler before %s; its state stands",
                job.id,
                job.topic,
                "failing" if outcome.kind == "failure" else "snoozing",
                extra=extra,
            )
        elif log.isEnabledFor(logging.DEBUG):
            log.debug(
                "job %s [%s] changed by its handler: left as is", job.id, job.topic, extra=extra
            )
        return UNTOUCHED

    def _unwritten(self, unwritten: list[HeldJob], final: bool) -> None:
        """Jobs whose outcome's write failed twice: queued again, or (``final``) given
        up."""
        error = self._last_write_error
        cause = "" if error is None else f" ({first_line(error)})"
        jobs = [held.job for held in unwritten]
        if final:
            log.error(
                "could not complete %d jobs%s; they come back after their visibility timeout; %s",
                len(jobs),
                cause,
                _job_list(jobs),
            )
            for job in jobs:
                self._record(job, UNTOUCHED)
            return
        log.warning(
            "could not complete %d jobs%s; trying again (their leases are renewed meanwhile); %s",
            len(jobs),
            cause,
            _job_list(jobs),
        )
        self.holdings.write_again(unwritten)

    def _record(self, job: ClaimedJob, outcome: PassResult, error: Exception | None = None) -> None:
        """The job's outcome is settled: count it (see :meth:`_jobs_done`) and, if its
        handler ran to an end (not released, not snoozed), log its line (``error``:
        what the handler raised)."""
        if not (outcome.released or outcome.snoozed):
            self._job_log.finished(job, outcome, None if isinstance(error, JobSnoozed) else error)
        self._record_all([job.id.int], outcome)

    def _record_all(self, job_ids: Collection[int], outcome: PassResult) -> None:
        """Each job of ``job_ids`` (``UUID.int``) has this outcome: count them."""
        if job_ids:
            counted = self.holdings.written(job_ids, outcome)
            if counted:
                self._jobs_done(outcome.times(counted), counted)

    @abstractmethod
    def _jobs_done(self, outcome: PassResult, count: int) -> None:
        """Add ``count`` held jobs' settled outcomes (``outcome`` is their sum) to the
        totals; they are no longer in flight."""

    def _on_control(self, payload: str) -> None:
        """A message on the control channel: ``cancel:<job id>`` (the caller's cancel of
        a job; the handler of a job this worker holds is told)."""
        kind, _, value = payload.partition(":")
        if kind != "cancel":
            return
        try:
            job_id = uuid.UUID(value)
        except ValueError:
            return
        if self.holdings.request_cancel(job_id):
            log.info(
                "job %s: cancellation requested; telling its handler to stop",
                job_id,
                extra={"job_id": str(job_id)},
            )

    def _claims(
        self, claim: Callable[[str, int], Operation[list[T]]]
    ) -> Generator[Operation[Any], Any, list[T]]:
        """:meth:`_claim_steps` with ``claim`` building each topic's claim operation."""
        count = len(self.settings.topics)
        with self._turn_lock:
            first = self._topic_turn
            self._topic_turn = (first + 1) % count
            if self.claim_size is not None:
                size = self.claim_size.size
            else:
                assert self.settings.max_jobs is not None  # no claim_size: a fixed size
                size = self.settings.max_jobs
            self._asked = size
        jobs: list[T] = []
        for index in range(count):
            room = size - len(jobs)
            if room == 0:
                break
            topic = self.settings.topics[(first + index) % count]
            claimed: list[T] = yield claim(topic, room)
            jobs.extend(claimed)
        return jobs

    def _transaction_steps(
        self, on_claimed: Callable[[int], None] | None
    ) -> Generator[Step, Any, PassResult]:
        """One transaction-mode pass: claim, run each handler, write the outcomes.

        Every step runs in ONE transaction: the handlers' writes, the recorded
        failures and the completion commit together with the claim. A failing
        handler's writes are rolled back to its SAVEPOINT (the driver's part), while
        the claim and the recorded failure still commit, so a poison job waits for
        its backoff instead of looping hot. If the connection died under a handler
        (:class:`ConnectionLost`), the transaction is gone, claim included: the pass
        ends there with :class:`~programma_sa.exceptions.TransactionLost`. If the
        COMMIT fails, the pass ends with :class:`~programma_sa.exceptions.CommitFailed`
        — after, when the server refused it, recording the failed attempt of every
        job of the batch in a transaction of the worker's own
        (:meth:`_refused_attempts_steps`): the claim rolled back with the rest, and
        a job whose writes are always refused would otherwise be claimed again at
        once, forever.
        """
        claims = yield from self._claims(self._operations.claim_jobs_due)
        timing = self._claim_timing(len(claims)) if claims else None
        batch = Batch([job for job, _ in claims])
        # Booked so that a cancellation of one of them reaches its handler.
        self.holdings.hold(batch.jobs)
        lines: list[tuple[ClaimedJob, PassResult, Exception | None]] = []
        try:
            result, completed = yield from self._pass_jobs_steps(batch, on_claimed, lines)
        except BaseException:
            self._job_log.forget(batch.jobs)
            raise
        finally:
            self.holdings.forget(job.id for job in batch.jobs)
        failed: sa_exc.DBAPIError | None = yield Commit()
        if failed is None:
            for job, outcome, error in lines:
                self._job_log.finished(job, outcome, error)
            self._log_returned(batch, completed)
            self._batch_ended(timing)
            return result
        self._job_log.forget(batch.jobs)
        recorded: PassResult | Exception | None = None
        if batch.jobs and not failed.connection_invalidated:
            # Refused: nothing of the pass was written, its claim included. (When the
            # connection died instead, the pass may have committed: write nothing.)
            try:
                recorded = yield InTransaction(self._refused_attempts_steps(claims, failed))
            except DB_ERRORS as error:
                recorded = error
        raise self._commit_failed(batch, result, failed, recorded) from failed

    def _pass_jobs_steps(
        self,
        batch: Batch,
        on_claimed: Callable[[int], None] | None,
        lines: list[tuple[ClaimedJob, PassResult, Exception | None]],
    ) -> Generator[Step, Any, tuple[PassResult, list[uuid.UUID] | None]]:
        """A transaction-mode pass after its claim: each handler, its verdict, then
        the completion, all in the pass's transaction (see :meth:`_transaction_steps`).
        Returns the pass's result and the ids its completion completed (``None``:
        none written); the outcomes written for the other jobs, for their lines once
        the pass commits, are added to ``lines``.

        A job whose cancellation reached its handler is written CANCELLED (its
        handler's writes rolled back to its SAVEPOINT by the driver), never retried.
        """
        if on_claimed is not None:
            on_claimed(len(batch.jobs))
        for job in batch.jobs:
            cancellation = self.holdings.start(job.id)
            reply: Returned | Exception | ConnectionLost = yield from self._timed_handler_steps(
                job, cancellation
            )
            if isinstance(reply, ConnectionLost):
                # Not the handler's failure to retry: its record could never be
                # written. The jobs are claimable again at once; stop the pass here.
                raise self._transaction_lost(batch, job, reply.error) from reply.error
            if isinstance(reply, JobCancelled) or (
                cancellation is not None and cancellation.requested
            ):
                self._log_cancelled(job, reply)
                cancelled: bool = yield from self._pass_write_steps(
                    batch, self._operations.cancel_unchanged(job)
                )
                lines.append((job, CANCELLED if cancelled else UNTOUCHED, None))
                batch.record(lines[-1][1])
                continue
            if isinstance(reply, Returned):
                result = (
                    self._result_text(job, reply.value) if self.settings.auto_complete else None
                )
                batch.record(PassResult(), returned=job, result=result)
                continue
            if isinstance(reply, JobSnoozed):
                # The handler's writes were rolled back to its SAVEPOINT, as for any
                # exception; the snooze commits with the pass.
                snoozed: bool = yield from self._pass_write_steps(batch, self._snooze(job, reply))
                batch.record(self._outcome_written(job, SNOOZED, snoozed, "snoozing"))
                continue
            operation, outcome = self._failure(job, reply)
            changed: bool = yield from self._pass_write_steps(batch, operation)
            lines.append((job, self._failure_written(job, outcome, changed), reply))
            batch.record(lines[-1][1])
        completion = batch.completion(self._operations, self.settings.auto_complete)
        completed: list[uuid.UUID] | None = None
        if completion is not None:
            completed = yield from self._pass_write_steps(batch, completion)
        return batch.result(completed), completed

    def _pass_write_steps(self, batch: Batch, operation: Operation[T]) -> Generator[Step, Any, T]:
        """One of the pass's own writes; a connection that died under it took the
        pass's transaction with it: :class:`TransactionLost` (one WARNING)."""
        try:
            written: T = yield operation
        except DB_ERRORS as error:
            if connection_died(error):
                raise self._transaction_lost(batch, None, error) from error
            raise
        return written

    def _refused_attempts_steps(
        self, claims: Sequence[tuple[ClaimedJob, datetime]], error: sa_exc.DBAPIError
    ) -> Generator[Operation[Any], Any, PassResult]:
        """Record the failed attempt of each job of a pass whose COMMIT was refused.

        Every job of the batch failed its attempt — the handlers' writes did not
        commit, whichever job's broke the COMMIT — so each gets the retry policy's
        verdict on ``error``, as a raising handler's job does: its claim done again
        (``attempts`` + 1), then the backoff (or FAILED) with ``last_error``. Only a
        job still exactly as it was before the claim that rolled back: one another
        worker has claimed since is left alone (``left_untouched``).
        """
        result = PassResult()
        for job, due_at in claims:
            reclaimed: ClaimedJob | None = yield self._operations.reclaim_rolled_back(job, due_at)
            if reclaimed is None:
                log.info(
                    "job %s [%s] is no longer as before its rolled-back claim (claimed "
                    "again since, or held by another transaction); its failed attempt "
                    "is not recorded",
                    job.id,
                    job.topic,
                    extra=job_log(job),
                )
                result += UNTOUCHED
                continue
            operation, outcome = self._failure(reclaimed, error, commit_refused=True)
            changed: bool = yield operation
            result += self._failure_written(reclaimed, outcome, changed)
        return result

    def _log_job_started(self, job: ClaimedJob) -> None:
        if log.isEnabledFor(logging.DEBUG):  # job_log() formats the id: not for nothing
            log.debug(
                "job %s [%s] attempt %d started",
                job.id,
                job.topic,
                job.attempts,
                extra=job_log(job),
            )

    def _failure(
        self,
        job: ClaimedJob,
        error: Exception,
        *,
        commit_refused: bool = False,
        quiet: bool = False,
    ) -> tuple[Operation[bool], PassResult]:
        """The retry policy's verdict on a failed attempt: the write, and its outcome.

        ``commit_refused``: the attempt failed because the server refused its pass's
        COMMIT with ``error``; ``last_error`` says so, and the line logged here has
        no traceback (the pass's own ERROR tells the story). ``quiet``: the verdict
        is written again (its first write failed): it was logged then.
        """
        policy = self.settings.retry_for(job.topic)
        level = logging.WARNING
        build: Callable[[Mapping[str, Any]], Operation[bool]]
        permanent = isinstance(error, PermanentFailure)
        if permanent or (policy is not None and policy.exhausted(job.attempts)):
            level = logging.ERROR
            reason = "a permanent failure" if permanent else "attempts exhausted"
            verdict = f"moving it to FAILED ({reason})"
            build = functools.partial(self._operations.fail_unchanged, job)
            outcome = PassResult(failed=1)
        else:
            delay = None if policy is None else policy.delay(job.attempts)
            verdict = (
                "leaving it to its visibility timeout"
                if delay is None
                else f"retrying in {delay:.2f} s"
            )
            build = functools.partial(self._operations.retry_unchanged, job, delay)
            outcome = PassResult(retried=1)
        what: tuple[str, object] = (type(error).__name__, error)
        message = None
        if commit_refused:
            what = ("commit refused", error_line(error))
            message = f"commit refused: {first_line(error)}"
        operation = _with_error_record(build, error, job.attempts, message)
        if quiet:
            return operation, outcome
        log.log(
            level,
            "job %s [%s] attempt %d failed: %s: %s; %s",
            job.id,
            job.topic,
            job.attempts,
            *what,
            verdict,
            exc_info=None if commit_refused else error,
            extra=job_log(job),
        )
        return operation, outcome

    def _failure_written(self, job: ClaimedJob, outcome: PassResult, changed: bool) -> PassResult:
        """What writing the verdict did: ``changed`` is False when the handler had
        moved its job first (the conditional UPDATE matched nothing)."""
        return self._outcome_written(job, outcome, changed, "failing")

    def _outcome_written(
        self, job: ClaimedJob, outcome: PassResult, changed: bool, before: str
    ) -> PassResult:
        """What writing an outcome did: ``changed`` is False when the handler had moved
        its job first (the conditional UPDATE matched nothing)."""
        if changed:
            return outcome
        log.info(
            "job %s [%s] changed by its handler before %s; its state stands",
            job.id,
            job.topic,
            before,
            extra=job_log(job),
        )
        return PassResult(left_untouched=1)

    def _snooze(self, job: ClaimedJob, request: JobSnoozed) -> Operation[bool]:
        """The guarded write of a snooze: due again in ``request.seconds``, attempt given back."""
        log.debug(
            "job %s [%s] attempt %d snoozed for %g s",
            job.id,
            job.topic,
            job.attempts,
            request.seconds,
            extra=job_log(job),
        )
        return self._operations.snooze_unchanged(job, request.seconds)

    def _transaction_lost(
        self, batch: Batch, job: ClaimedJob | None, error: Exception
    ) -> TransactionLost:
        """Log (once, as a WARNING) and build the error of a pass whose connection
        died under ``job``'s handler (``None``: during the pass's own writes — a
        failure record, a cancellation, the completion)."""
        if job is None:
            consequence = (
                f"the pass's transaction rolled back, so {_claimed(len(batch.jobs))} "
                "claimable again at once (attempt not counted)"
            )
            log.warning(
                "transaction lost: the database connection of a transaction-mode pass "
                "died while the worker wrote its outcomes (%s); %s; %s",
                error_line(error),
                consequence,
                _job_list(batch.jobs),
                extra={"job_ids": [str(held.id) for held in batch.jobs]},
            )
            return TransactionLost(
                "the database connection of a transaction-mode pass died while the worker "
                f"wrote its outcomes ({error_line(error)}); {consequence}"
            )
        if isinstance(error, sa_exc.PendingRollbackError):
            # What any use of a session raises once its connection died: the handler
            # caught the database's error and carried on (or returned).
            cause = "the handler caught the database's error and carried on"
        else:
            cause = error_line(error)
        consequence = (
            f"the pass's transaction rolled back, so {_claimed(len(batch.jobs))} "
            "claimable again at once (attempt not counted)"
        )
        log.warning(
            "job %s [%s]: transaction lost: the database connection of its "
            "transaction-mode pass died while the handler ran (%s); %s",
            job.id,
            job.topic,
            cause,
            consequence,
            extra=job_log(job),
        )
        return TransactionLost(
            f"the database connection of a transaction-mode pass died while the handler "
            f"of job {job.id} [{job.topic}] ran ({cause}); {consequence}"
        )

    def _commit_failed(
        self,
        batch: Batch,
        result: PassResult,
        error: sa_exc.DBAPIError,
        recorded: PassResult | Exception | None,
    ) -> CommitFailed:
        """Log (once) and build the error of a pass whose COMMIT raised ``error``.

        A COMMIT the server answered with an error (a deferred constraint, a
        serialization failure) rolled the whole transaction back, claim included: an
        ERROR, since a handler whose writes the database refuses will be refused
        again. ``recorded`` is what recording the batch's failed attempts did
        afterwards (:meth:`_refused_attempts_steps`), or the error that stopped it.
        A connection that died during the COMMIT (SQLAlchemy invalidated it) leaves
        its outcome unknown — the server may have committed before the connection
        went — but a transaction is atomic: all of the pass, or none.
        """
        unknown = error.connection_invalidated
        if unknown:
            failure = "the database connection of a transaction-mode pass died during its COMMIT"
        else:
            failure = "the database refused the COMMIT of a transaction-mode pass"
        if not batch.jobs:
            consequence = "the pass had claimed no job, so nothing is lost"
        elif unknown:
            consequence = (
                "whether it committed is unknown: either all of the pass did (the "
                f"handlers' writes and its outcomes: {result}), or none of it did and "
                f"{_claimed(len(batch.jobs))} claimable again at once (attempt not "
                f"counted); {_job_list(batch.jobs)}"
            )
        elif isinstance(recorded, PassResult):
            consequence = (
                "the transaction rolled back, the handlers' writes and the claim with it; "
                f"the failed attempt of {_claimed(len(batch.jobs), verb=False)} was then "
                f"recorded in a transaction of its own ({recorded.retried} to retry, "
                f"{recorded.failed} failed, {recorded.left_untouched} left alone: claimed "
                f"again meanwhile); {_job_list(batch.jobs)}"
            )
        else:
            assert recorded is not None  # refused, with jobs: their recording was tried
            consequence = (
                "the transaction rolled back, the handlers' writes and the claim with it, "
                f"and recording the failed attempts failed too ({error_line(recorded)}), so "
                f"{_claimed(len(batch.jobs))} claimable again at once (attempt not "
                f"counted); {_job_list(batch.jobs)}"
            )
        message = f"{failure} ({error_line(error)}); {consequence}"
        log.log(
            logging.WARNING if unknown else logging.ERROR,
            "commit failed: %s",
            message,
            extra={"job_ids": [str(job.id) for job in batch.jobs]},
        )
        return CommitFailed(message, outcome_unknown=unknown)

    def _log_pass_failed(self, error: BaseException) -> None:
        """A loop's transaction-mode pass failed after its claim and before its COMMIT
        (its jobs rolled back with the transaction)."""
        if isinstance(error, (TransactionLost, CommitFailed)):
            return  # logged where it was detected (_transaction_lost, _commit_failed)
        log.error("a transaction-mode pass failed; its jobs were rolled back", exc_info=error)

    def _failure_lost(self, job: ClaimedJob, what: str = "the failure") -> PassResult:
        """The outcome when the verdict could not be written (the database is gone)."""
        log.exception(
            "job %s [%s]: could not record %s; the job comes back after its visibility timeout",
            job.id,
            job.topic,
            what,
            extra=job_log(job),
        )
        return PassResult(left_untouched=1)

    # -- the loop's decisions ------------------------------------------------------------

    def _full_batch(self, claimed: int) -> bool:
        """A full batch suggests more is due: claim again at once instead of idling.
        (The loop asks right after its claim: ``_asked`` is that claim's size.)"""
        return claimed >= self._asked

    def _claim_timing(self, claimed: int) -> ClaimTiming | None:
        """Right after a claim of ``claimed`` jobs: its figures, for
        :meth:`_batch_ended` (``None`` with a fixed ``max_jobs``)."""
        if self.claim_size is None:
            return None
        return ClaimTiming(self._asked, claimed, time.perf_counter())

    def _batch_ended(self, timing: ClaimTiming | None) -> None:
        """The last job of a claim's batch has its outcome: the adaptive size learns
        the batch's throughput (its handlers and their writes, from the claim on)."""
        if timing is None or self.claim_size is None:
            return
        seconds = time.perf_counter() - timing.started
        with self._turn_lock:
            self.claim_size.record(timing.asked, timing.claimed, seconds)

    def _idle_wait_steps(self) -> Generator[Step, Any, float]:
        """How long to sleep when drained: until the next scheduled job (or the next
        duty), at most a heartbeat."""
        seconds: float = yield EachCommitted(self._seconds_until_due_steps())
        return seconds

    def _seconds_until_due_steps(self) -> Generator[Operation[Any], Any, float]:
        heartbeat = self.settings.heartbeat
        due: list[float] = []
        for topic in self.settings.topics:
            seconds: float | None = yield self._operations.seconds_until_due(topic)
            if seconds is not None:
                due.append(seconds)
        wait = heartbeat if not due else min(heartbeat, max(min(due), self.min_idle_wait))
        return min([wait, *(duty.schedule.seconds_left() for duty in self.duties)])

    def _duty_steps(self) -> Generator[Step, Any, None]:
        """Run every duty that is due (between claims); a failed one waits its interval."""
        for duty in self.duties:
            if not duty.schedule.due():
                continue
            try:
                result = yield from duty.steps()
            except DB_ERRORS as error:
                duty.finished(None, error)
            else:
                duty.finished(result)

    def _new_backoff(self) -> Backoff:
        return Backoff(self.reconnect_initial, self.reconnect_max)

    def _log_claim_error(self, error: BaseException, delay: float) -> None:
        log.error(
            "claiming from %s failed (%s); retrying in %.1f s",
            ", ".join(self.settings.topics),
            first_line(error),
            delay,
        )

    def _log_started(self, listening: bool) -> None:
        log.info(
            "worker started: topics %s, mode %s, concurrency %d, max_jobs %s, heartbeat %.1f s, %s",
            ", ".join(self.settings.topics),
            self.settings.mode,
            self.settings.concurrency,
            "adaptive" if self.settings.max_jobs is None else self.settings.max_jobs,
            self.settings.heartbeat,
            "listening" if listening else "polling only",
        )

    def _log_shutdown_timeout(self, in_flight: int) -> None:
        log.warning(
            "shutdown_timeout (%.1f s) passed with %d %s still running; "
            "leaving them to their visibility timeout",
            self.settings.shutdown_timeout,
            in_flight,
            "jobs" if self.settings.mode == "lease" else "transactions",
        )
