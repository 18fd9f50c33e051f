"""The worker: claim jobs, run a handler on each, write the outcome.

::

    from sqlalchemy import create_engine
    from programma_sa import JobQueue, RetryPolicy, Worker

    def send_receipt(ctx):            # ctx: JobContext
        mailer.send(ctx.job.data["order"])

    worker = Worker(
        JobQueue(Job), create_engine(url), "send-receipt", send_receipt,
        concurrency=4, retry=RetryPolicy(max_attempts=5),
    )
    worker.run()                      # blocks; SIGTERM / SIGINT stop it gracefully

Two modes, decided by where the transaction ends:

``lease`` (default, the npm package's way)
    Claim and commit at once; run the handler outside any transaction
    (``ctx.session`` is ``None``). A job the handler leaves ACTIVE comes back after
    its ``retry_after_seconds``; a crash leaves it to that visibility timeout.
``transaction``
    Claim, run the handler with the claim's ``Session`` (``ctx.session``) inside a
    SAVEPOINT, write the outcome, commit: the handler's writes and the job's
    completion commit together or not at all. A crash rolls everything back and the
    job is claimable again at once.

What the worker writes after the handler (see ``docs/worker.md`` for the table):

* the handler **returned** — with ``auto_complete=True`` the job is COMPLETED, but
  only if it is still exactly as the claim left it (a conditional UPDATE), so a
  handler that moved, rescheduled or deleted its job is respected. With
  ``auto_complete=False`` nothing is written.
* the handler **raised** — the :class:`~programma_sa.retry.RetryPolicy` decides: the
  job becomes due again after the backoff, or (attempts exhausted) goes to FAILED;
  either way the error is recorded as ``attributes.last_error``. In transaction
  mode the handler's writes are rolled back to the savepoint first. ``retry=None``
  records the error and leaves the job to its visibility timeout.

:meth:`Worker.run_once` is one claim-and-handle pass that returns a
:class:`PassResult`; :meth:`Worker.run` is the loop around it: it wakes on
LISTEN/NOTIFY (see :mod:`._notify`), on the heartbeat, and when a scheduled job falls
due; it backs off and reconnects when the database is unreachable.
"""

from __future__ import annotations

import functools
import logging
import math
import queue as queue_module
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from types import FrameType
from typing import Any, Literal, TypeVar

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from . import _validation as check
from ._notify import Listener, conninfo_from_url
from ._operations import Operation
from ._records import ClaimedJob
from ._statements import notify_channel
from .exceptions import (
    ConfigurationError,
    DatabaseError,
    InvalidJobInput,
    PayloadTooLarge,
    ProgrammaError,
)
from .queue import JobQueue
from .retry import DEFAULT_RETRY, RetryPolicy, describe_error

__all__ = ["Handler", "JobContext", "PassResult", "Worker", "WorkerMode"]

log = logging.getLogger("programma_sa.worker")

T = TypeVar("T")
WorkerMode = Literal["lease", "transaction"]
_MODES: tuple[WorkerMode, ...] = ("lease", "transaction")
#: What a handler is: it gets a :class:`JobContext`; its return value is ignored.
Handler = Callable[["JobContext"], object]
#: Errors of an unreachable or failing database, after which the loop backs off.
_DB_ERRORS = (DatabaseError, sa_exc.DBAPIError)


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
        return PassResult(
            *(getattr(self, field.name) + getattr(other, field.name) for field in fields(self))
        )


def _job_log(job: ClaimedJob) -> dict[str, Any]:
    return {"job_id": str(job.id), "topic": job.topic}


class JobContext:
    """What a handler receives: the job, and a way to steer it.

    :ivar job: the claimed job (ACTIVE; ``attempts`` counts this delivery).
    :ivar session: in ``transaction`` mode the claim's ``Session`` — write business
        rows with it and they commit with the job's completion; never commit, roll
        back or close it. ``None`` in ``lease`` mode.
    :ivar queue: the worker's :class:`JobQueue`.

    The ``move_*``/``set_*`` methods act on this job: in the claim's transaction in
    transaction mode, in a short transaction of their own (committed) in lease mode.
    """

    def __init__(self, worker: Worker, job: ClaimedJob, session: Session | None) -> None:
        self._worker = worker
        self.job = job
        self.session = session
        self.queue = worker.queue

    @property
    def stopping(self) -> bool:
        """True once the worker is shutting down: a long handler may wrap up early."""
        return self._worker.stopping

    def _apply(self, action: Callable[[Session], T]) -> T:
        if self.session is not None:
            return action(self.session)
        with self._worker.session_factory() as session, session.begin():
            return action(session)

    def move_to_processing(self) -> bool:
        return self._apply(lambda s: self.queue.move_job_to_processing(s, self.job.id))

    def move_to_done(self, delete: bool = False) -> bool:
        return self._apply(lambda s: self.queue.move_job_to_done(s, self.job.id, delete))

    def move_to_failed(self, delete: bool = False) -> bool:
        return self._apply(lambda s: self.queue.move_job_to_failed(s, self.job.id, delete))

    def set_attributes(self, attributes: Mapping[str, Any]) -> bool:
        return self._apply(lambda s: self.queue.set_attributes(s, self.job.id, attributes))

    def set_retry_after_seconds(self, seconds: int | None) -> bool:
        return self._apply(lambda s: self.queue.set_retry_after_seconds(s, self.job.id, seconds))

    def set_job_start_date(self, start_date: datetime | str) -> bool:
        return self._apply(lambda s: self.queue.set_job_start_date(s, self.job.id, start_date))


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


def _session_factory(bind: object) -> Callable[[], Session]:
    if isinstance(bind, Engine):
        return sessionmaker(bind)
    if callable(bind):
        return bind
    raise ConfigurationError(
        f"expected an Engine or a session factory (e.g. a sessionmaker), got {bind!r}"
    )


def _bound_url(bind: object) -> URL | None:
    """The URL behind an Engine or a ``sessionmaker(bind=engine)``, when there is one."""
    if isinstance(bind, sessionmaker):
        bind = bind.kw.get("bind")
    engine = getattr(bind, "engine", bind)  # a Connection has .engine
    return engine.url if isinstance(engine, Engine) else None


class _Backoff:
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


class _ThreadPool:
    """``size`` daemon threads running submitted callables.

    Daemon threads, unlike ``concurrent.futures``' workers, do not keep the process
    alive at exit: a handler still running after ``shutdown_timeout`` cannot stop
    the process from exiting (its job is left to its visibility timeout).
    """

    def __init__(self, size: int, name: str) -> None:
        self._tasks: queue_module.SimpleQueue[Callable[[], None] | None] = (
            queue_module.SimpleQueue()
        )
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True)
            for index in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, task: Callable[[], None]) -> None:
        self._tasks.put(task)

    def shutdown(self, wait: bool = False) -> None:
        for _ in self._threads:
            self._tasks.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            try:
                task()
            except BaseException:  # a thread must survive whatever a task does
                log.exception("unexpected error in a worker thread")


class _LeaseBatch:
    """The jobs of one lease-mode claim: run each, then complete them in ONE statement.

    Whichever thread finishes the batch's last job writes the completions of every
    job whose handler returned (one UPDATE per claim batch), then reports.
    """

    def __init__(
        self, worker: Worker, jobs: list[ClaimedJob], done: Callable[[PassResult], None]
    ) -> None:
        self._worker = worker
        # Handler threads finish the batch's jobs concurrently: the lock makes the
        # count exact, so exactly one of them sees the last job and writes the batch.
        self._lock = threading.Lock()
        self._remaining = len(jobs)
        self._returned: list[ClaimedJob] = []
        self._result = PassResult(claimed=len(jobs))
        self._done = done

    def run(self, job: ClaimedJob) -> None:
        outcome = PassResult(left_untouched=1)
        returned = False
        try:
            if not self._worker.stopping:
                outcome, returned = self._worker._run_leased(job)
        finally:
            # Always counted, even if the handler raised a BaseException, so the
            # worker's count of jobs in flight cannot leak.
            with self._lock:
                self._result += outcome
                if returned:
                    self._returned.append(job)
                self._remaining -= 1
                last = self._remaining == 0
            if last:
                self._finish()

    def _finish(self) -> None:
        result = self._result
        untouched = len(self._returned)
        if self._returned and self._worker.auto_complete:
            try:
                with self._worker.session_factory() as session, session.begin():
                    completed = self._worker._complete(session, self._returned)
                untouched -= completed
                result += PassResult(completed=completed)
            except _DB_ERRORS:
                log.exception(
                    "could not complete %d jobs; they come back after their visibility timeout",
                    len(self._returned),
                )
        self._done(result + PassResult(left_untouched=untouched))


class Worker:
    """Runs a handler on the jobs of one or more topics. See the module docs.

    :param queue: the :class:`JobQueue` of the jobs table.
    :param bind: an ``Engine``, or a factory of ``Session`` objects (a
        ``sessionmaker``); the worker opens, commits and closes its own sessions.
    :param topics: one topic or a list of topics; their jobs are claimed in turn.
    :param handler: called with a :class:`JobContext` for each claimed job.
    :param mode: ``"lease"`` (default) or ``"transaction"``.
    :param heartbeat: seconds between polls when nothing wakes the worker (default
        5.0): the fallback for missed notifications and for ``listen=False``.
    :param max_jobs: jobs claimed per claim statement (default 10).
    :param concurrency: handler threads (default 1). In lease mode the jobs of a
        claim are spread over them; in transaction mode each thread runs its own
        claim batches, each in its own transaction.
    :param listen: wake on LISTEN/NOTIFY (default True). False for PgBouncer in
        transaction-pooling mode.
    :param database_url: where to LISTEN; by default the URL of ``bind``.
    :param retry: what to do after a handler raised (default
        :data:`~programma_sa.retry.DEFAULT_RETRY`); ``None``: record the error and
        leave the job to its visibility timeout.
    :param auto_complete: complete a job whose handler returned without changing it
        (default True). False is the npm package's way: the handler moves its job.
    :param shutdown_timeout: seconds :meth:`run` waits for running handlers once
        stopping (default 30.0).
    """

    #: Backoff after a database error in the loop: first wait and its cap (seconds).
    reconnect_initial = 0.1
    reconnect_max = 10.0
    #: Shortest idle wait when a due job exists that the claim could not take (it is
    #: locked by another transaction): polling faster would only spin on it.
    min_idle_wait = 0.25

    def __init__(
        self,
        queue: JobQueue,
        bind: Engine | Callable[[], Session],
        topics: str | Sequence[str],
        handler: Handler,
        *,
        mode: WorkerMode = "lease",
        heartbeat: float = 5.0,
        max_jobs: int = 10,
        concurrency: int = 1,
        listen: bool = True,
        database_url: str | URL | None = None,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        auto_complete: bool = True,
        shutdown_timeout: float = 30.0,
    ) -> None:
        if not isinstance(queue, JobQueue):
            raise ConfigurationError(f"queue must be a JobQueue, got {queue!r}")
        if not callable(handler):
            raise ConfigurationError(f"handler must be callable, got {handler!r}")
        if mode not in _MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy or None, got {retry!r}")
        for name, flag in (("listen", listen), ("auto_complete", auto_complete)):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{name} must be True or False, got {flag!r}")
        self.queue = queue
        self.session_factory = _session_factory(bind)
        self.topics = _topics(topics)
        self.handler = handler
        self.mode: WorkerMode = mode
        self.heartbeat = _positive_seconds(heartbeat, "heartbeat")
        self.max_jobs = _positive_int(max_jobs, "max_jobs")
        self.concurrency = _positive_int(concurrency, "concurrency")
        self.retry = retry
        self.auto_complete = auto_complete
        self.shutdown_timeout = _positive_seconds(
            shutdown_timeout, "shutdown_timeout", allow_zero=True
        )
        self.listen = listen
        self._conninfo: str | None = None
        if listen:
            url = _bound_url(bind) if database_url is None else _parse_url(database_url)
            if url is None:
                raise ConfigurationError(
                    "listen=True needs the database to LISTEN on: pass database_url=..., "
                    "bind an Engine (or a sessionmaker bound to one), or set listen=False"
                )
            self._conninfo = conninfo_from_url(url)
        self._operations = queue._operations
        # One condition (on an RLock, so a signal handler running on the main thread
        # while it holds the lock cannot deadlock) guards every piece of loop state.
        self._cond = threading.Condition(threading.RLock())
        self._stopping = False
        self._abandoned = False
        self._wakeups = 0  # bumped by every wake(): a waiter compares generations
        self._in_flight = 0  # lease: jobs; transaction: claim batches
        self._totals = PassResult()
        self._topic_turn = 0
        self._running = False
        self._thread: threading.Thread | None = None
        self.listener: Listener | None = None

    # -- public state and control -----------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (or a signal asked the loop to stop)."""
        return self._stopping

    @property
    def totals(self) -> PassResult:
        """Everything done so far by this worker (loop passes and ``run_once`` calls)."""
        with self._cond:
            return self._totals

    def wake(self) -> None:
        """Make an idle loop claim now (what a notification for our topics does)."""
        with self._cond:
            self._wakeups += 1
            self._cond.notify_all()

    def stop(self) -> None:
        """Stop claiming; :meth:`run` returns once running handlers finish.

        Thread-safe and idempotent; safe to call from a signal handler.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def start(self) -> threading.Thread:
        """Run :meth:`run` in a background thread (no signal handlers); returns it.

        The thread is a daemon, so a forgotten worker cannot keep the process from
        exiting; call :meth:`stop` and :meth:`join` first to let running handlers
        finish (a job cut short is safe either way: its lease runs out, or its
        transaction rolls back).
        """
        self._thread = threading.Thread(
            target=self.run,
            kwargs={"install_signal_handlers": False},
            name="programma-worker",
            daemon=True,
        )
        self._thread.start()
        return self._thread

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a :meth:`start`-ed loop to end; True if it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.join(self.shutdown_timeout + 1)

    # -- one pass ------------------------------------------------------------------------

    def run_once(self) -> PassResult:
        """Claim up to ``max_jobs``, run the handler on each, write the outcomes.

        Blocks until every handler of the pass has returned. Database errors
        propagate (the loop of :meth:`run` catches them and backs off).
        """
        if self.mode == "transaction":
            result = self._transaction_pass(on_claimed=None)
            self._add_totals(result)
            return result
        jobs = self._claim_leases()
        results: list[PassResult] = []
        if not jobs:
            return PassResult()
        batch = _LeaseBatch(self, jobs, lambda result: results.append(result))
        if self.concurrency == 1 or len(jobs) == 1:
            for job in jobs:
                batch.run(job)
        else:
            pool = _ThreadPool(min(self.concurrency, len(jobs)), "programma-handler")
            for job in jobs:
                pool.submit(functools.partial(batch.run, job))
            pool.shutdown(wait=True)
        self._add_totals(results[0])
        return results[0]

    def _claim(self, session: Session) -> list[ClaimedJob]:
        """Claim up to ``max_jobs`` across the topics, starting at a rotating one (fairness)."""
        jobs: list[ClaimedJob] = []
        count = len(self.topics)
        with self._cond:
            first = self._topic_turn
            self._topic_turn = (first + 1) % count
        for index in range(count):
            room = self.max_jobs - len(jobs)
            if room == 0:
                break
            jobs.extend(self.queue.claim_jobs(session, self.topics[(first + index) % count], room))
        return jobs

    def _claim_leases(self) -> list[ClaimedJob]:
        # Claim and commit at once: the lease is what makes the job ours.
        with self.session_factory() as session, session.begin():
            return self._claim(session)

    def _run_handler(self, job: ClaimedJob, session: Session | None) -> None:
        log.debug(
            "job %s [%s] attempt %d started", job.id, job.topic, job.attempts, extra=_job_log(job)
        )
        self.handler(JobContext(self, job, session))

    def _failure(self, job: ClaimedJob, error: Exception) -> tuple[Operation[bool], PassResult]:
        """The retry policy's verdict on a failed attempt, as an operation to run."""
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
        operation = _with_error_record(build, error, job.attempts)
        log.log(
            level,
            "job %s [%s] attempt %d failed: %s: %s; %s",
            job.id,
            job.topic,
            job.attempts,
            type(error).__name__,
            error,
            verdict,
            exc_info=error,
            extra=_job_log(job),
        )
        return operation, outcome

    def _record_failure(self, session: Session, job: ClaimedJob, error: Exception) -> PassResult:
        operation, outcome = self._failure(job, error)
        if self.queue._run(session, operation):
            return outcome
        log.info(
            "job %s [%s] changed by its handler before failing; its state stands",
            job.id,
            job.topic,
            extra=_job_log(job),
        )
        return PassResult(left_untouched=1)

    def _complete(self, session: Session, jobs: list[ClaimedJob]) -> int:
        completed_ids = self.queue._run(session, self._operations.complete_unchanged(jobs))
        completed = set(completed_ids)
        if log.isEnabledFor(logging.DEBUG):
            for job in jobs:
                log.debug(
                    "job %s [%s] %s",
                    job.id,
                    job.topic,
                    "completed" if job.id in completed else "changed by its handler: left as is",
                    extra=_job_log(job),
                )
        return len(completed)

    def _run_leased(self, job: ClaimedJob) -> tuple[PassResult, bool]:
        """Run one leased job's handler; ``(outcome, handler returned)``."""
        try:
            self._run_handler(job, None)
        except Exception as error:
            try:
                with self.session_factory() as session, session.begin():
                    return self._record_failure(session, job, error), False
            except _DB_ERRORS:
                log.exception(
                    "job %s [%s]: could not record the failure; the job comes back after "
                    "its visibility timeout",
                    job.id,
                    job.topic,
                    extra=_job_log(job),
                )
                return PassResult(left_untouched=1), False
        return PassResult(), True

    def _transaction_pass(self, on_claimed: Callable[[int], None] | None) -> PassResult:
        """Claim, handle and complete in ONE transaction of a session of our own."""
        result = PassResult()
        with self.session_factory() as session, session.begin():
            jobs = self._claim(session)
            if on_claimed is not None:
                on_claimed(len(jobs))
            returned: list[ClaimedJob] = []
            for job in jobs:
                try:
                    # The SAVEPOINT confines a failing handler's writes: they roll
                    # back, the claim and the recorded failure still commit, so a
                    # poison job waits for its backoff instead of looping hot.
                    with session.begin_nested():
                        self._run_handler(job, session)
                except Exception as error:
                    result += self._record_failure(session, job, error)
                else:
                    returned.append(job)
            completed = self._complete(session, returned) if returned and self.auto_complete else 0
            result += PassResult(
                claimed=len(jobs), completed=completed, left_untouched=len(returned) - completed
            )
        return result

    def _add_totals(self, result: PassResult) -> None:
        with self._cond:
            self._totals += result

    # -- the loop ------------------------------------------------------------------------

    def run(self, *, install_signal_handlers: bool = True) -> PassResult:
        """Process jobs until :meth:`stop` (or SIGTERM / SIGINT); return the totals.

        On stop: no new claims; running handlers get up to ``shutdown_timeout``
        seconds to finish; jobs claimed but not started are left to their visibility
        timeout (lease mode). A second signal stops waiting for running handlers.
        Signal handlers are installed only when called from the main thread.
        """
        with self._cond:
            if self._running:
                raise ProgrammaError("this Worker is already running")
            self._running = True
        restore_signals = (
            self._install_signal_handlers() if install_signal_handlers else (lambda: None)
        )
        pool = _ThreadPool(self.concurrency, "programma-handler")
        if self._conninfo is not None:
            self.listener = Listener(
                self._conninfo, notify_channel(self.queue.table), self.topics, self.wake
            )
            self.listener.start()
        log.info(
            "worker started: topics %s, mode %s, concurrency %d, max_jobs %d, heartbeat %.1f s, %s",
            ", ".join(self.topics),
            self.mode,
            self.concurrency,
            self.max_jobs,
            self.heartbeat,
            "listening" if self.listener is not None else "polling only",
        )
        try:
            self._loop(pool)
        finally:
            if self.listener is not None:
                self.listener.stop()
            self._drain()
            pool.shutdown()
            restore_signals()
            with self._cond:
                self._running = False
            log.info("worker stopped: %s", self.totals)
        return self.totals

    def _loop(self, pool: _ThreadPool) -> None:
        backoff = _Backoff(self.reconnect_initial, self.reconnect_max)
        dispatch = self._dispatch_leases if self.mode == "lease" else self._dispatch_pass
        while self._wait_for_room():
            with self._cond:
                generation = self._wakeups
            try:
                claimed = dispatch(pool)
                idle_for = None if claimed >= self.max_jobs else self._idle_wait()
            except _DB_ERRORS as error:
                delay = backoff.next()
                log.error(
                    "claiming from %s failed (%s); retrying in %.1f s",
                    ", ".join(self.topics),
                    _first_line(error),
                    delay,
                )
                self._sleep(delay)
                continue
            backoff.reset()
            if idle_for is not None:
                self._wait_for_wake(generation, idle_for)

    def _idle_wait(self) -> float:
        """How long to sleep when drained: until the next scheduled job, at most a heartbeat."""
        due = [
            seconds
            for topic in self.topics
            if (seconds := self._seconds_until_due(topic)) is not None
        ]
        if not due:
            return self.heartbeat
        return min(self.heartbeat, max(min(due), self.min_idle_wait))

    def _seconds_until_due(self, topic: str) -> float | None:
        with self.session_factory() as session, session.begin():
            return self.queue._run(session, self._operations.seconds_until_due(topic))

    def _dispatch_leases(self, pool: _ThreadPool) -> int:
        jobs = self._claim_leases()
        if jobs:
            with self._cond:
                self._in_flight += len(jobs)
            batch = _LeaseBatch(self, jobs, self._lease_batch_done)
            for job in jobs:
                pool.submit(functools.partial(batch.run, job))
        return len(jobs)

    def _lease_batch_done(self, result: PassResult) -> None:
        with self._cond:
            self._totals += result
            self._in_flight -= result.claimed
            self._cond.notify_all()

    def _dispatch_pass(self, pool: _ThreadPool) -> int:
        """Start a transaction-mode pass on a pool thread; return once it has claimed."""
        claimed = _Handoff()
        with self._cond:
            self._in_flight += 1

        def pass_() -> None:
            try:
                self._add_totals(self._transaction_pass(on_claimed=claimed.put))
            except BaseException as error:
                if not claimed.put_error(error):
                    log.exception("a transaction-mode pass failed; its jobs were rolled back")
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

        pool.submit(pass_)
        return claimed.get()

    def _wait_for_room(self) -> bool:
        """Block until another claim may start; False once stopping."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self._in_flight < self.concurrency)
            return not self._stopping

    def _wait_for_wake(self, generation: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(
                lambda: self._stopping or self._wakeups != generation, timeout=timeout
            )

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, timeout=seconds)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.shutdown_timeout
        with self._cond:
            while self._in_flight and not self._abandoned:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning(
                        "shutdown_timeout (%.1f s) passed with %d %s still running; "
                        "leaving them to their visibility timeout",
                        self.shutdown_timeout,
                        self._in_flight,
                        "jobs" if self.mode == "lease" else "transactions",
                    )
                    return
                self._cond.wait(remaining)

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {signum: signal.getsignal(signum) for signum in signals}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._stopping:
                log.warning("%s again: not waiting for running handlers", name)
                with self._cond:
                    self._abandoned = True
                    self._cond.notify_all()
            else:
                log.info("%s: stopping (running handlers may finish)", name)
                self.stop()

        for signum in signals:
            signal.signal(signum, on_signal)

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore


class _Handoff:
    """One value (or error) passed from a pool thread to the loop thread."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._value = 0
        self._error: BaseException | None = None

    def put(self, value: int) -> None:
        self._value = value
        self._ready.set()

    def put_error(self, error: BaseException) -> bool:
        """Hand over ``error`` unless a value was handed over already; True if taken."""
        if self._ready.is_set():
            return False
        self._error = error
        self._ready.set()
        return True

    def get(self) -> int:
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self._value


def _with_error_record(
    build: Callable[[Mapping[str, Any]], Operation[bool]], error: Exception, attempt: int
) -> Operation[bool]:
    """``build(attributes)`` with the fullest ``last_error`` the queue's payload limit takes.

    Recording the failure must not fail: a failure that cannot be written would, in
    transaction mode, roll the claim back and make a poison job loop hot.
    """
    full = describe_error(error, attempt)
    short = {"type": full["type"], "message": full["message"][-200:], "attempt": attempt}
    for attributes in ({"last_error": full}, {"last_error": short}):
        try:
            return build(attributes)
        except PayloadTooLarge:
            continue
    return build({})


def _parse_url(value: str | URL) -> URL:
    try:
        return make_url(value)
    except sa_exc.ArgumentError as error:
        raise ConfigurationError("database_url is not a valid database URL") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
