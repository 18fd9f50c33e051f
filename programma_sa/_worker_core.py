"""What :class:`~programma_sa.Worker` and :class:`~programma_sa.AsyncWorker` share: no I/O.

The two workers differ only in how they wait and how they execute — threads and a
``Session`` for one, tasks and an ``AsyncSession`` for the other. Everything they
*decide* is written once, here, in :class:`WorkerCore` (their common base):

* the settings and their checks: the same bad setting raises the same
  :class:`~programma_sa.ConfigurationError` from both;
* the claim of one pass over several topics, starting at a rotating topic, and the
  look-ahead that decides how long an idle worker sleeps — each a generator of
  :class:`~programma_sa._operations.Operation` objects that a worker drives with
  :func:`~programma_sa._maintenance_operations.run_steps` (or ``run_steps_async``),
  the way a prune batch is written;
* the verdict on a handler's exception (retry after a backoff, or FAILED) and what
  writing it meant;
* a claim batch's bookkeeping (:class:`Batch`): which handlers returned, the one
  conditional completion of them, and the :class:`PassResult`;
* the whole of a transaction-mode pass (claim, each handler in turn, the verdicts,
  the completion, the COMMIT) as one generator that yields operations,
  :class:`RunHandler` requests and a final :class:`Commit` — a worker only executes
  them inside its transaction, tells it when a handler left that transaction's
  connection dead (:class:`ConnectionLost`), and hands back a failed COMMIT's error
  for it to judge; after a refused COMMIT, the failed attempts it records in a
  transaction of the worker's own (:class:`OwnTransaction`);
* the backoff after database errors, the schedule of periodic pruning, what a
  shutdown signal means, and the log lines.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import signal
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from . import _validation as check
from ._notify import conninfo_from_url
from ._operations import Operation, Operations
from ._records import ClaimedJob
from ._retention import Retention
from .exceptions import (
    CommitFailed,
    ConfigurationError,
    DatabaseError,
    InvalidJobInput,
    PayloadTooLarge,
    TransactionLost,
)
from .queue import _QueueBase
from .retry import RetryPolicy, describe_error

if TYPE_CHECKING:
    from .maintenance import PruneResult

__all__ = [
    "DB_ERRORS",
    "DEFAULT_PRUNE_INTERVAL",
    "NOTHING_WRITTEN",
    "UNTOUCHED",
    "Backoff",
    "Batch",
    "Commit",
    "ConnectionLost",
    "OwnTransaction",
    "PassResult",
    "PruneSchedule",
    "RunHandler",
    "Step",
    "WorkerCore",
    "WorkerMode",
    "autocommit_allowed",
    "is_async_handler",
    "single",
]

log = logging.getLogger("programma_sa.worker")

T = TypeVar("T")

WorkerMode = Literal["lease", "transaction"]
_MODES: tuple[WorkerMode, ...] = ("lease", "transaction")
#: Errors of an unreachable or failing database, after which a loop backs off.
DB_ERRORS = (DatabaseError, sa_exc.DBAPIError)
#: Seconds between two prune passes of a worker with a ``retention``.
DEFAULT_PRUNE_INTERVAL = 60.0


@dataclass(frozen=True)
class RunHandler:
    """A step of a transaction-mode pass: run the handler on ``job`` inside a
    SAVEPOINT of the pass's transaction; send back the ``Exception`` it raised (or
    its SAVEPOINT's end raised), ``None`` when it returned — or a
    :class:`ConnectionLost` when, after such an exception, the pass's connection is
    invalidated."""

    job: ClaimedJob


@dataclass(frozen=True)
class ConnectionLost:
    """The reply to a :class:`RunHandler` after which the pass's connection is dead.

    The transaction is gone with it (PostgreSQL rolled it back, claim included), so
    nothing more can be written in it: not the failure record a raised error would
    get, nor a completion. ``error`` is what the handler raised — or, when it
    swallowed the database's error, what ending its SAVEPOINT raised.
    """

    error: Exception


@dataclass(frozen=True)
class Commit:
    """The last step of a transaction-mode pass: commit its transaction.

    Send back ``None`` once committed, or the :class:`~sqlalchemy.exc.DBAPIError`
    the commit raised (anything else propagates: the transaction is rolled back).
    The worker ends the transaction here, explicitly, rather than on leaving its
    ``begin()`` block, so that a failed COMMIT is told apart from a failure earlier
    in the pass. A failed COMMIT ends the transaction too: the driver releases its
    connection before it sends the error back (an :class:`OwnTransaction` may follow).
    """


@dataclass(frozen=True)
class OwnTransaction(Generic[T]):
    """A step of a transaction-mode pass after its COMMIT was refused: run ``steps``
    in a fresh, short transaction of a session of the worker's own.

    Send back what ``steps`` returned once that transaction committed, or the
    database error (one of :data:`DB_ERRORS`) that ended it.
    """

    steps: Generator[Operation[Any], Any, T]


#: A step of a pass: an operation to execute, a handler to run, the commit, or the
#: recording transaction after a refused commit.
Step = Operation[Any] | RunHandler | Commit | OwnTransaction[Any]


@dataclass(frozen=True)
class PassResult:
    """What one pass (or, summed, a whole run) did with the jobs it claimed.

    ``left_untouched`` counts claimed jobs the worker wrote no outcome for: the
    handler changed the job itself, ``auto_complete`` was off, the worker stopped
    before running it, or its outcome could not be written — such a job is in the
    hands of the handler or of its visibility timeout.
    """

    claimed: int = 0
    completed: int = 0
    retried: int = 0
    failed: int = 0
    left_untouched: int = 0

    def __str__(self) -> str:
        return ", ".join(
            f"{field.name.replace('_', ' ')} {getattr(self, field.name)}" for field in fields(self)
        )

    def __add__(self, other: PassResult) -> PassResult:
        # Spelled out rather than looped over fields(): a batch adds one per job.
        return PassResult(
            self.claimed + other.claimed,
            self.completed + other.completed,
            self.retried + other.retried,
            self.failed + other.failed,
            self.left_untouched + other.left_untouched,
        )


#: The outcome of a job whose handler returned (its completion is counted per batch).
NOTHING_WRITTEN = PassResult()
#: The outcome of a claimed job the worker wrote nothing for.
UNTOUCHED = PassResult(left_untouched=1)


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
    """Whether a worker may run its one-statement units of work on ``engine`` in autocommit.

    A worker that owns its connections (it was given an engine) runs the statements
    that make a whole transaction on their own — a one-topic lease claim, a batch's
    completion, a failure record, the idle look-ahead — in autocommit: one round trip
    instead of three (psycopg sends ``BEGIN`` and ``COMMIT`` as round trips of their
    own). A single statement is atomic either way and commits as it returns, which
    is what those transactions did. Not when the application set an isolation level
    on the engine: in autocommit the statement would run at the server's default.
    """
    options_level = engine.get_execution_options().get("isolation_level")
    connect_level = getattr(engine.dialect, "_on_connect_isolation_level", None)
    return options_level is None and connect_level is None


def single(operation: Operation[T]) -> Generator[Operation[T], T, T]:
    """One operation as a generator of steps, for the drivers' step runners."""
    return (yield operation)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _error_line(error: BaseException) -> str:
    """``"OperationalError: (psycopg.errors.AdminShutdown) terminating …"``: one line."""
    return f"{type(error).__name__}: {_first_line(error)}"


def _claimed(count: int, *, verb: bool = True) -> str:
    """``"its 1 claimed job is"``, ``"its 3 claimed jobs are"`` (``verb``: with is/are)."""
    noun = "job" if count == 1 else "jobs"
    if verb:
        noun += " is" if count == 1 else " are"
    return f"its {count} claimed {noun}"


#: How many jobs a log line about a whole batch names.
_NAMED_JOBS = 5


def _job_list(jobs: Sequence[ClaimedJob]) -> str:
    """``"jobs: <id> [topic], <id> [topic] and 4 more"``: at most ``_NAMED_JOBS`` named."""
    named = ", ".join(f"{job.id} [{job.topic}]" for job in jobs[:_NAMED_JOBS])
    more = len(jobs) - _NAMED_JOBS
    return f"jobs: {named}" + (f" and {more} more" if more > 0 else "")


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


class PruneSchedule:
    """When a worker prunes next: at once, then at most every ``interval`` seconds.

    The host's monotonic clock is right here: this only spaces out passes of this
    process; which rows are expired is decided by the database's clock.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._next_at = -math.inf

    def due(self) -> bool:
        return self._clock() >= self._next_at

    def ran(self) -> None:
        self._next_at = self._clock() + self.interval

    def seconds_left(self) -> float:
        return max(0.0, self._next_at - self._clock())


class Batch:
    """The jobs of one claim: which handlers returned, the completion, the result.

    Completions are written for the whole batch in ONE conditional UPDATE, once its
    last job is done. Not thread-safe: the sync worker's handler threads record
    under a lock.
    """

    def __init__(self, jobs: list[ClaimedJob]) -> None:
        self.jobs = jobs
        self._remaining = len(jobs)
        self._returned: list[ClaimedJob] = []
        self._result = PassResult(claimed=len(jobs))

    def record(self, outcome: PassResult, returned: ClaimedJob | None = None) -> bool:
        """Count one job's outcome (``returned``: the job whose handler returned);
        True when it was the batch's last job."""
        if outcome is not NOTHING_WRITTEN:
            self._result += outcome
        if returned is not None:
            self._returned.append(returned)
        self._remaining -= 1
        return self._remaining == 0

    def completion(
        self, operations: Operations, auto_complete: bool
    ) -> Operation[list[uuid.UUID]] | None:
        """The UPDATE completing every returned job still as its claim left it
        (``None``: nothing to write)."""
        if not (self._returned and auto_complete):
            return None
        return operations.complete_unchanged(self._returned)

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

    def completion_lost(self) -> PassResult:
        """The result when the completion could not be written (its jobs keep their lease)."""
        log.exception(
            "could not complete %d jobs; they come back after their visibility timeout",
            len(self._returned),
        )
        return self.result(None)


# -- settings checks (ConfigurationError naming the setting) ----------------------------


def _positive_seconds(value: object, what: str, *, allow_zero: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(
            f"{what} must be a finite number of seconds {bound}, got {value!r}"
        )
    return float(value)


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{what} must be an int >= 1, got {value!r}")
    return value


def _topics(value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if isinstance(items, bytes) or not isinstance(items, Sequence) or not items:
        raise ConfigurationError(
            f"topics must be a topic or a non-empty list of topics, got {value!r}"
        )
    try:
        checked = [check.check_topic(topic) for topic in items]
    except InvalidJobInput as error:
        raise ConfigurationError(f"topics: {error}") from error
    return tuple(dict.fromkeys(checked))  # de-duplicated, order kept


def _parse_url(value: str | URL) -> URL:
    try:
        return make_url(value)
    except sa_exc.ArgumentError as error:
        raise ConfigurationError("database_url is not a valid database URL") from error


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
        topics: object,
        *,
        queue_type: type[_QueueBase],
        asynchronous: bool,
        bound_url: URL | None,
        mode: object,
        heartbeat: object,
        max_jobs: object,
        concurrency: object,
        listen: object,
        database_url: str | URL | None,
        retry: object,
        auto_complete: object,
        shutdown_timeout: object,
        retention: object,
        prune_interval: object,
        prune_batch_size: object,
    ) -> None:
        if not isinstance(queue, queue_type):
            raise ConfigurationError(f"queue must be a {queue_type.__name__}, got {queue!r}")
        _check_handler(handler, asynchronous)
        if mode not in _MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy or None, got {retry!r}")
        if retention is not None and not isinstance(retention, Retention):
            raise ConfigurationError(f"retention must be a Retention or None, got {retention!r}")
        for name, flag in (("listen", listen), ("auto_complete", auto_complete)):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{name} must be True or False, got {flag!r}")
        assert isinstance(listen, bool) and isinstance(auto_complete, bool)  # for mypy
        self.topics = _topics(topics)
        self.mode: WorkerMode = mode
        self.heartbeat = _positive_seconds(heartbeat, "heartbeat")
        self.max_jobs = _positive_int(max_jobs, "max_jobs")
        self.concurrency = _positive_int(concurrency, "concurrency")
        self.retry: RetryPolicy | None = retry
        self.auto_complete = auto_complete
        self.shutdown_timeout = _positive_seconds(
            shutdown_timeout, "shutdown_timeout", allow_zero=True
        )
        self.retention: Retention | None = retention
        self.prune_interval = _positive_seconds(prune_interval, "prune_interval")
        self.prune_batch_size = _positive_int(prune_batch_size, "prune_batch_size")
        self.listen = listen
        self._conninfo: str | None = None
        if listen:
            url = bound_url if database_url is None else _parse_url(database_url)
            if url is None:
                raise ConfigurationError(
                    "listen=True needs the database to LISTEN on: pass database_url=..., "
                    "bind an engine (or a session factory bound to one), or set listen=False"
                )
            self._conninfo = conninfo_from_url(url)
        self._operations: Operations = queue._operations
        #: Picks the connection a pass's statements run on from its Session, the way
        #: a statement on the jobs table does (for sessions with several binds).
        self._pass_bind: dict[str, Any] = {"clause": queue.table}
        self._stopping = False
        # Claims start at a rotating topic (fairness); the lock keeps the turn exact
        # when the sync worker's threads claim at once (it is never held across I/O).
        self._turn_lock = threading.Lock()
        self._topic_turn = 0
        self._prune_schedule = None if retention is None else PruneSchedule(self.prune_interval)
        self._pruned = 0

    # -- state shared by both workers ----------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (or a signal asked the loop to stop)."""
        return self._stopping

    @property
    def pruned(self) -> int:
        """Finished jobs this worker's periodic pruning deleted so far."""
        return self._pruned

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

    def _claims(
        self, claim: Callable[[str, int], Operation[list[T]]]
    ) -> Generator[Operation[Any], Any, list[T]]:
        """:meth:`_claim_steps` with ``claim`` building each topic's claim operation."""
        count = len(self.topics)
        with self._turn_lock:
            first = self._topic_turn
            self._topic_turn = (first + 1) % count
        jobs: list[T] = []
        for index in range(count):
            room = self.max_jobs - len(jobs)
            if room == 0:
                break
            topic = self.topics[(first + index) % count]
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
        batch = Batch([job for job, _ in claims])
        if on_claimed is not None:
            on_claimed(len(batch.jobs))
        for job in batch.jobs:
            error: Exception | ConnectionLost | None = yield RunHandler(job)
            if isinstance(error, ConnectionLost):
                # Not the handler's failure to retry: its record could never be
                # written. The jobs are claimable again at once; stop the pass here.
                raise self._transaction_lost(batch, job, error.error) from error.error
            if error is None:
                batch.record(PassResult(), returned=job)
                continue
            operation, outcome = self._failure(job, error)
            changed: bool = yield operation
            batch.record(self._failure_written(job, outcome, changed))
        completion = batch.completion(self._operations, self.auto_complete)
        completed: list[uuid.UUID] | None = None if completion is None else (yield completion)
        result = batch.result(completed)
        failed: sa_exc.DBAPIError | None = yield Commit()
        if failed is None:
            return result
        recorded: PassResult | Exception | None = None
        if batch.jobs and not failed.connection_invalidated:
            # Refused: nothing of the pass was written, its claim included. (When the
            # connection died instead, the pass may have committed: write nothing.)
            recorded = yield OwnTransaction(self._refused_attempts_steps(claims, failed))
        raise self._commit_failed(batch, result, failed, recorded) from failed

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
        self, job: ClaimedJob, error: Exception, *, commit_refused: bool = False
    ) -> tuple[Operation[bool], PassResult]:
        """The retry policy's verdict on a failed attempt: the write, and its outcome.

        ``commit_refused``: the attempt failed because the server refused its pass's
        COMMIT with ``error``; ``last_error`` says so, and the line logged here has
        no traceback (the pass's own ERROR tells the story).
        """
        policy = self.retry
        level = logging.WARNING
        build: Callable[[Mapping[str, Any]], Operation[bool]]
        if policy is not None and policy.exhausted(job.attempts):
            level = logging.ERROR
            verdict = "moving it to FAILED (attempts exhausted)"
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
            what = ("commit refused", _error_line(error))
            message = f"commit refused: {_first_line(error)}"
        operation = _with_error_record(build, error, job.attempts, message)
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
        if changed:
            return outcome
        log.info(
            "job %s [%s] changed by its handler before failing; its state stands",
            job.id,
            job.topic,
            extra=job_log(job),
        )
        return PassResult(left_untouched=1)

    def _transaction_lost(self, batch: Batch, job: ClaimedJob, error: Exception) -> TransactionLost:
        """Log (once, as a WARNING) and build the error of a pass whose connection
        died under ``job``'s handler."""
        if isinstance(error, sa_exc.PendingRollbackError):
            # What any use of a session raises once its connection died: the handler
            # caught the database's error and carried on (or returned).
            cause = "the handler caught the database's error and carried on"
        else:
            cause = _error_line(error)
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
                f"and recording the failed attempts failed too ({_error_line(recorded)}), so "
                f"{_claimed(len(batch.jobs))} claimable again at once (attempt not "
                f"counted); {_job_list(batch.jobs)}"
            )
        message = f"{failure} ({_error_line(error)}); {consequence}"
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

    def _failure_lost(self, job: ClaimedJob) -> PassResult:
        """The outcome when the verdict could not be written (the database is gone)."""
        log.exception(
            "job %s [%s]: could not record the failure; the job comes back after "
            "its visibility timeout",
            job.id,
            job.topic,
            extra=job_log(job),
        )
        return PassResult(left_untouched=1)

    # -- the loop's decisions ------------------------------------------------------------

    def _full_batch(self, claimed: int) -> bool:
        """A full batch suggests more is due: claim again at once instead of idling."""
        return claimed >= self.max_jobs

    def _idle_wait_steps(self) -> Generator[Operation[Any], Any, float]:
        """How long to sleep when drained: until the next scheduled job (or the next
        prune), at most a heartbeat."""
        due: list[float] = []
        for topic in self.topics:
            seconds: float | None = yield self._operations.seconds_until_due(topic)
            if seconds is not None:
                due.append(seconds)
        wait = self.heartbeat if not due else min(self.heartbeat, max(min(due), self.min_idle_wait))
        if self._prune_schedule is not None:
            wait = min(wait, self._prune_schedule.seconds_left())
        return wait

    def _new_backoff(self) -> Backoff:
        return Backoff(self.reconnect_initial, self.reconnect_max)

    def _log_claim_error(self, error: BaseException, delay: float) -> None:
        log.error(
            "claiming from %s failed (%s); retrying in %.1f s",
            ", ".join(self.topics),
            _first_line(error),
            delay,
        )

    def _log_started(self, listening: bool) -> None:
        log.info(
            "worker started: topics %s, mode %s, concurrency %d, max_jobs %d, heartbeat %.1f s, %s",
            ", ".join(self.topics),
            self.mode,
            self.concurrency,
            self.max_jobs,
            self.heartbeat,
            "listening" if listening else "polling only",
        )

    def _log_shutdown_timeout(self, in_flight: int) -> None:
        log.warning(
            "shutdown_timeout (%.1f s) passed with %d %s still running; "
            "leaving them to their visibility timeout",
            self.shutdown_timeout,
            in_flight,
            "jobs" if self.mode == "lease" else "transactions",
        )

    # -- periodic pruning ----------------------------------------------------------------

    def _prune_due(self) -> bool:
        return self._prune_schedule is not None and self._prune_schedule.due()

    def _prune_done(self, result: PruneResult | None, error: BaseException | None = None) -> None:
        """Note a prune pass (``error``: it failed; the next one comes after the interval)."""
        assert self._prune_schedule is not None
        self._prune_schedule.ran()
        if error is not None:
            log.error(
                "pruning finished jobs failed (%s); trying again in %.0f s",
                _first_line(error),
                self._prune_schedule.interval,
            )
        if result is not None:
            self._pruned += result.deleted
            if result.deleted:
                log.info("pruned %d finished jobs in %d batches", result.deleted, result.batches)
