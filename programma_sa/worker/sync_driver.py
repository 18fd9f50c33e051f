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
LISTEN/NOTIFY (see :mod:`.listen`), on the heartbeat, and when a scheduled job falls
due; it backs off and reconnects when the database is unreachable. With a
``retention`` it also prunes expired finished jobs between passes, at most every
``prune_interval`` seconds, one worker at a time across processes.

Every decision here — the claim over several topics, the verdict on a failed
handler, a batch's completion and counts, the duties, backoff — lives in
:mod:`.decisions` and is shared with :class:`~programma_sa.AsyncWorker`; the settings
are a :class:`~.settings.WorkerSettings`. This module is the threaded driver: it
executes the decisions' steps on sessions, runs handlers on threads, and waits on
a condition variable (idle: on a queue, see :meth:`Worker._wait_for_wake`). Its
one-topic lease claims run directly on psycopg when they may (:class:`_DirectClaims`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue as queue_module
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any, NoReturn, TypeVar, cast

from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker
from typing_extensions import Unpack

from .._drivers.direct import direct_dialect
from .._drivers.postgresql import control_channel, notify_channel
from .._execute import (
    InTransaction,
    direct_execution_allowed,
    drive,
    execute,
    execute_direct,
    run_steps,
)
from .._job_records import ClaimedJob
from .._operations import Operation
from .._session_types import SessionLike, current_session
from ..exceptions import ConfigurationError, JobCancelled, ProgrammaError
from ..queue import JobQueue
from .decisions import DB_ERRORS, WorkerCore, autocommit_allowed, connection_died
from .duties import KeeperPlan
from .leases import Cancellation, Outcome, Tally
from .listen import Listener
from .results import UNTOUCHED, PassResult
from .served import HandlerSource, worker_parts
from .settings import WorkerOptions, WorkerSettings
from .steps import Commit, ConnectionLost, EachCommitted, JobSnoozed, Returned, RunHandler, Step

__all__ = ["Handler", "JobContext", "Worker"]

log = logging.getLogger("programma_sa.worker")

T = TypeVar("T")
#: What a handler is: it gets a :class:`JobContext`; its return value is ignored.
Handler = Callable[["JobContext"], object]


class JobContext:
    """What a handler receives: the job, and a way to steer it.

    :ivar job: the claimed job (ACTIVE; ``attempts`` counts this delivery).
    :ivar session: in ``transaction`` mode the claim's ``Session`` — write business
        rows with it and they commit with the job's completion; never commit, roll
        back or close it. ``None`` in ``lease`` mode.
    :ivar queue: the worker's :class:`JobQueue`.

    The ``move_*``/``set_*`` methods act on this job: in the claim's transaction in
    transaction mode, in a short transaction of their own (committed) in lease mode.

    A cancelled job (:meth:`JobQueue.cancel_job <programma_sa.JobQueue.cancel_job>`)
    shows ``ctx.cancelled``: a long handler looks at it (or calls
    :meth:`raise_if_cancelled`) and stops; whatever it then returns or raises, the
    job ends CANCELLED and is never retried. A thread cannot be stopped from
    outside, so a handler that never looks runs to its end.
    """

    def __init__(
        self,
        worker: Worker,
        job: ClaimedJob,
        session: Session | None,
        cancellation: Cancellation | None = None,
    ) -> None:
        self._worker = worker
        self.job = job
        self.session = session
        self.queue = worker.queue
        self._cancellation = cancellation

    @property
    def stopping(self) -> bool:
        """True once the worker is shutting down: a long handler may wrap up early."""
        return self._worker.stopping

    @property
    def sessions(self) -> Callable[[], Session]:
        """The worker's session factory, for a lease-mode handler's own transactions."""
        return self._worker.session_factory

    def snooze(self, seconds: float) -> NoReturn:
        """End the handler here and run this job again in ``seconds``, without
        spending an attempt (unlike a retry, ``attempts`` is given back).

        It raises :class:`~programma_sa.JobSnoozed` (let it through, do not catch
        it); the worker then writes the snooze under the same guard as its other
        outcomes: only if the job is still as its claim left it. In transaction mode
        the handler's writes roll back to its SAVEPOINT, as when it raises.

        :raises InvalidJobInput: ``seconds`` is not a finite number >= 0.
        """
        raise JobSnoozed.checked(seconds)

    @property
    def cancelled(self) -> bool:
        """True once this job's cancellation has reached the worker."""
        return self._cancellation is not None and self._cancellation.requested

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~programma_sa.JobCancelled` if the job was cancelled."""
        if self.cancelled:
            raise JobCancelled(f"job {self.job.id} was cancelled")

    def wait_cancelled(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking at once if the job is cancelled
        (instead of ``time.sleep``); True if it was."""
        if self._cancellation is None:
            time.sleep(timeout)
            return False
        return self._cancellation.wait(timeout)

    def _apply(self, action: Callable[[Session], T]) -> T:
        if self.session is not None:
            return action(self.session)
        with self._worker.session_factory() as session, session.begin():
            return action(session)

    def move_to_processing(self) -> bool:
        """Move this job to PROCESSING: out of the visibility timeout, never delivered
        again. The job is now yours to finish, here or later
        (:meth:`JobQueue.move_job_to_done <programma_sa.JobQueue.move_job_to_done>`);
        the worker's completion leaves it as it is.

        :returns: True if the job exists.
        """
        return self._apply(lambda s: self.queue.move_job_to_processing(s, self.job.id))

    def move_to_done(self, delete: bool = False) -> bool:
        """Move this job to COMPLETED now (``delete=True``: delete it instead).

        :returns: True if the job exists.
        """
        return self._apply(lambda s: self.queue.move_job_to_done(s, self.job.id, delete))

    def move_to_failed(self, delete: bool = False) -> bool:
        """Move this job to FAILED now, for good (``delete=True``: delete it instead).
        Raising instead hands the job to the worker's retry policy.

        :returns: True if the job exists.
        """
        return self._apply(lambda s: self.queue.move_job_to_failed(s, self.job.id, delete))

    def set_attributes(self, attributes: Mapping[str, Any]) -> bool:
        """Merge ``attributes`` into the job's attributes: the keys given are
        replaced, the others kept. The job's state is unchanged.

        :returns: True if the job exists.
        """
        return self._apply(lambda s: self.queue.set_attributes(s, self.job.id, attributes))

    def set_retry_after_seconds(self, seconds: int | None) -> bool:
        """Change the job's visibility timeout (``None``: never delivered again). This
        ACTIVE job's lease is measured again from its claim, so a long handler
        lengthens its own lease — and, having changed its job, finishes it too: the
        worker's completion leaves it as it is.

        :returns: True if the job exists.
        """
        return self._apply(lambda s: self.queue.set_retry_after_seconds(s, self.job.id, seconds))

    def set_job_start_date(self, start_date: datetime | str) -> bool:
        """Make the job claimable again from ``start_date`` (an aware ``datetime``, or
        ISO-8601 text with an offset), its state unchanged: how a handler reschedules
        its job. The worker's completion leaves the rescheduled job as it is.

        :returns: True if the job exists.
        """
        return self._apply(lambda s: self.queue.set_job_start_date(s, self.job.id, start_date))


def _session_factory(bind: object) -> Callable[[], Session]:
    if isinstance(bind, Engine):
        return sessionmaker(bind)
    if callable(bind):
        return bind
    raise ConfigurationError(
        f"expected an Engine or a session factory (e.g. a sessionmaker), got {bind!r}"
    )


def _autocommit_engine(bind: object) -> Engine | None:
    """Where the worker runs its one-statement units of work in autocommit
    (:class:`~.steps.EachCommitted`); ``None``: in transactions of the session factory.

    Only when the worker was given an Engine: a session factory of the
    application's may carry settings (binds, events) the worker must not bypass.
    """
    if isinstance(bind, Engine) and autocommit_allowed(bind):
        return bind.execution_options(isolation_level="AUTOCOMMIT")
    return None


def _bound_url(bind: object, queue: object) -> URL | None:
    """The URL behind an Engine or a ``sessionmaker`` bound to one, when there is one.

    A sessionmaker is asked through a session of its own (no connection is opened);
    any other factory is not called: it may need a context (an application's) that
    the worker's constructor does not have.
    """
    if isinstance(bind, sessionmaker):
        try:
            bind = bind().get_bind(clause=getattr(queue, "table", None))
        except sa_exc.UnboundExecutionError:
            return None
    engine = getattr(bind, "engine", None)  # an Engine's is itself; a Connection has one
    return engine.url if isinstance(engine, Engine) else None


@dataclass(frozen=True)
class _Pass:
    """The session and transaction of one transaction-mode pass (``transaction``:
    ``None`` when the pass runs in the caller's transaction, which the caller ends)."""

    session: Session
    transaction: SessionTransaction | None

    def commit(self) -> sa_exc.DBAPIError | None:
        """:class:`~.steps.Commit`: ``None`` once committed, else the commit's error."""
        if self.transaction is None:
            return None  # the caller's transaction: never ours to commit
        try:
            self.transaction.commit()
        except sa_exc.DBAPIError as error:
            # Refused, or the connection died: the decision judges. The transaction
            # is over either way: release its connection before an InTransaction
            # takes one.
            self.session.close()
            return error
        return None


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
            _run_task(task)


def _run_task(task: Callable[[], None]) -> None:
    """Run ``task`` on a thread that must survive whatever it does."""
    try:
        task()
    except BaseException:
        log.exception("unexpected error in a worker thread")


class _LeaseBatch:
    """The jobs of one lease-mode claim, run on handler threads.

    Each job's outcome is queued for the worker's writer as its handler ends (see
    :mod:`.leases`). A completion is written at once by the thread that finishes
    the batch's last job (with every other completion queued by then: one
    statement); one whose batch still has jobs to run is left queued for those
    finishing after it — the keeper writes it ``_Keeper.completion_delay`` seconds
    later at the latest, so a long handler never holds its batch-mates ACTIVE.
    """

    def __init__(self, worker: Worker, jobs: list[ClaimedJob]) -> None:
        self._worker = worker
        self._timing = worker._claim_timing(len(jobs))
        # Handler threads finish the batch's jobs concurrently: the lock keeps the
        # count of unfinished jobs exact, so exactly one thread sees the last one.
        self._lock = threading.Lock()
        self._unfinished = len(jobs)
        #: Set when a handler thread has taken up the batch's first job.
        self.started = threading.Event()

    def run(self, job: ClaimedJob) -> None:
        if not self.started.is_set():
            self.started.set()
        worker = self._worker
        decided: Outcome | PassResult | None = UNTOUCHED
        try:
            decided = worker._drive(worker._leased_job_steps(job))
        finally:
            # Always settled, even if the handler raised a BaseException, so the
            # worker's count of jobs in flight cannot leak.
            with self._lock:
                self._unfinished -= 1
                last = self._unfinished == 0
            worker._settle(job, decided, write_now=last)
            if last:
                worker._batch_ended(self._timing)


class _DirectClaims:
    """The loop's direct claims (the ``direct_claim`` setting, docs/worker.md).

    A one-topic lease claim is handed to psycopg itself (:func:`execute_direct`) on
    a connection of the engine's pool that the loop keeps checked out — in
    autocommit, as the worker's other one-statement units of work — from its first
    claim until the loop ends: no pool checkout, no autocommit switch, no SQLAlchemy
    execution per pickup. Only the loop's thread uses it. Whenever the engine has a
    listener the claim would bypass, the claim goes through SQLAlchemy instead and
    the kept connection goes back to the pool.
    """

    def __init__(self, engine: Engine, autocommit: Engine) -> None:
        # The application's engine, whose listeners are looked at (the worker's
        # autocommit engine, which the application never sees, shares them and
        # adds only its own engine_connect hook): cheap while it has none at all.
        self._engine = engine
        self._autocommit = autocommit
        self._connection: Connection | None = None
        self._cursor: Any = None  # a psycopg cursor of the kept connection

    def allowed(self) -> bool:
        """Whether claims may run directly now; if not, the kept connection is returned."""
        if direct_execution_allowed(self._engine):
            return True
        self.close()
        return False

    def run(self, steps: Generator[Operation[Any], Any, T]) -> T:
        """Run a one-topic claim's operations on the kept connection."""
        return drive(steps, self._execute)

    def _execute(self, operation: Operation[Any]) -> Any:
        reused = self._connection is not None
        try:
            return self._execute_once(operation)
        except DB_ERRORS as error:
            # A kept connection can die while it waits between claims (a server
            # restart, an idle timeout), which a pooled one would not have shown a
            # pre-ping engine: claim again once on a fresh one. Safe: in autocommit a
            # claim whose reply was lost either never ran or committed jobs no
            # handler will see, which come back when their leases run out (as after
            # any lost claim) — neither is run twice.
            if not (reused and connection_died(error)):
                raise
        return self._execute_once(operation)

    def _execute_once(self, operation: Operation[Any]) -> Any:
        if self._connection is None:
            connection = self._autocommit.connect()
            self._cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            self._connection = connection
        try:
            if operation.read_rows is None:  # no row reader: through SQLAlchemy
                return execute(self._connection, operation)
            return execute_direct(self._cursor, self._engine.dialect, operation)
        except BaseException:
            # Whatever failed, the next claim starts on a fresh connection.
            self._connection.invalidate()
            self.close()
            raise

    def close(self) -> None:
        """Give the kept connection back to the pool (an invalidated one is discarded)."""
        connection, self._connection, self._cursor = self._connection, None, None
        if connection is not None:
            connection.close()


class _Keeper:
    """The lease-mode worker's keeper thread: it runs the :class:`~.duties.KeeperPlan`
    (renewals, completions left queued, the release at stop, writes again after a
    failure), each write through the writer token (:mod:`.leases`)."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._plan = KeeperPlan(worker.holdings, worker.lease_duty)
        # Guards the two flags below; the thread waits on it.
        self._cond = threading.Condition()
        self._kicked = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="programma-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> None:
        """Look again now: something was queued, held or asked for."""
        with self._cond:
            self._kicked = True
            self._cond.notify()

    def close(self, timeout: float) -> None:
        """Write what is queued (giving up on what cannot be), then end."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        plan = self._plan
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._kicked or self._closing, plan.next_wake(time.monotonic())
                )
                self._kicked = False
                closing = self._closing
            if plan.write_now(time.monotonic(), stopping=self._worker.stopping, closing=closing):
                _run_task(functools.partial(self._write, closing))
            if closing and plan.done:
                return

    def _write(self, final: bool) -> None:
        self._plan.written(self._worker._write_queued(final=final), time.monotonic())


class Worker(WorkerCore):
    """Runs a handler on the jobs of one or more topics. See the module docs.

    :param queue: the :class:`JobQueue` of the jobs table.
    :param bind: an ``Engine``, or a factory of ``Session`` objects (a
        ``sessionmaker``); the worker opens, commits and closes its own sessions.
    :param topics: one topic or a list of topics; their jobs are claimed in turn.
    :param handler: called with a :class:`JobContext` for each claimed job.
    :param options: the other settings, by keyword — ``mode``, ``heartbeat``,
        ``max_jobs``, ``concurrency`` (handler threads; with 1, the loop's own
        thread runs the handlers and :meth:`run` still returns after
        ``shutdown_timeout``), ``listen``, ``database_url``, ``retry``,
        ``auto_complete``, ``shutdown_timeout``, ``retention``, ``prune_interval``,
        ``prune_batch_size``, ``handler_context``, ``topic_retry``, ``schedules``: see
        :class:`~programma_sa.WorkerSettings` for each.

    In place of ``queue`` a task registry (:class:`~programma_sa.TaskRegistry`): no
    ``handler`` then, and ``topics`` optional (default: every task the mode serves).
    """

    #: Longest the loop waits, after handing a partial batch to the handler
    #: threads, for one of them to take it up before it looks ahead (seconds).
    handoff_wait = 0.05

    def __init__(
        self,
        queue: JobQueue | HandlerSource,
        bind: Engine | Callable[[], Session],
        topics: str | Sequence[str] | None = None,
        handler: Handler | None = None,
        **options: Unpack[WorkerOptions],
    ) -> None:
        parts = worker_parts(queue, topics, handler, options, asynchronous=False)
        super().__init__(
            parts.queue,
            parts.handler,
            WorkerSettings(parts.topics, **parts.options),
            queue_type=JobQueue,
            asynchronous=False,
            bound_url=_bound_url(bind, parts.queue),
        )
        self.queue = cast(JobQueue, parts.queue)  # checked by WorkerCore
        self.handler = cast(Handler, parts.handler)
        self.session_factory = _session_factory(bind)
        # The worker's own one-statement units of work (a one-topic lease claim, a
        # batch's completion, a failure record, the idle look-ahead) run in
        # autocommit when it owns the engine: one round trip instead of three.
        self._autocommit = _autocommit_engine(bind)
        self._engine = bind if isinstance(bind, Engine) else None
        # One condition (on an RLock, so a signal handler running on the main thread
        # while it holds the lock cannot deadlock) guards every piece of loop state.
        self._cond = threading.Condition(threading.RLock())
        self._abandoned = False
        self._wakeups = 0  # bumped by every wake(): a waiter compares generations
        # The idle wait's wake-up (see _wait_for_wake), and whether the loop is in it.
        self._idle_signal: queue_module.SimpleQueue[None] = queue_module.SimpleQueue()
        self._idle_waiting = False
        self._in_flight = 0  # lease: jobs; transaction: claim batches
        self._loop_running = False  # concurrency 1: the loop's own thread is alive
        self._totals = PassResult()
        self._gave_up = False  # shutdown_timeout passed: late outcomes are not counted
        self._running = False
        self._thread: threading.Thread | None = None
        self._keeper: _Keeper | None = None
        self.listener: Listener | None = None
        #: The loop's direct claims while it runs (``None``: every claim goes
        #: through SQLAlchemy).
        self.direct_claims: _DirectClaims | None = None

    @classmethod
    def from_settings(
        cls,
        queue: JobQueue,
        bind: Engine | Callable[[], Session],
        handler: Handler,
        settings: WorkerSettings,
    ) -> Worker:
        """A worker with ``settings`` (its topics included)."""
        return cls(queue, bind, settings.topics, handler, **settings.options())

    # -- public state and control -----------------------------------------------------

    @property
    def totals(self) -> PassResult:
        """Everything done so far by this worker (loop passes and ``run_once`` calls)."""
        with self._cond:
            return self._totals

    def wake(self) -> None:
        """Make an idle loop claim now (what a notification for our topics does)."""
        with self._cond:
            self._wakeups += 1
            self._signal_idle_loop()

    def stop(self) -> None:
        """Stop claiming; :meth:`run` returns once running handlers finish. In lease
        mode the jobs claimed but not started are released at once (claimable again,
        their delivery not counted).

        Thread-safe and idempotent; safe to call from a signal handler (the keeper
        thread does the release).
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            self._signal_idle_loop()
            keeper = self._keeper
        if keeper is not None:
            keeper.kick()

    def _abandon(self) -> None:
        with self._cond:
            self._abandoned = True
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
        self.join(self.settings.shutdown_timeout + 1)

    # -- one pass ------------------------------------------------------------------------

    def run_once(self, session: SessionLike | None = None) -> PassResult:
        """Claim up to ``max_jobs``, run the handler on each, write the outcomes.

        :param session: transaction mode only: run the pass in this session's
            transaction instead of one of the worker's own — the claim, each
            handler (``ctx.session`` is this session, each call in a SAVEPOINT) and
            the outcomes — and never commit it: the caller commits or rolls back.
            What :func:`programma_sa.testing.run_job` runs in a test's transaction.

        Blocks until every handler of the pass has returned. Database errors
        propagate (the loop of :meth:`run` catches them and backs off) — in
        transaction mode, :class:`~programma_sa.exceptions.TransactionLost` when the
        connection died under a handler: the pass rolled back, its jobs are
        claimable again at once; :class:`~programma_sa.exceptions.CommitFailed` when
        its COMMIT failed: refused (rolled back, after which the failed attempt of
        each of its jobs was recorded through ``retry``, in a transaction of the
        worker's own), or its connection died (``outcome_unknown``: all of the pass
        committed, or none of it; nothing more is written).
        """
        if self.settings.mode == "transaction":
            if session is None:
                result = self._transaction_pass(on_claimed=None)
            else:
                # The proxied session itself: handlers may run in another scope.
                unit = _Pass(current_session(session), None)
                result = self._drive(self._transaction_steps(None), unit)
            self._add_totals(result)
            return result
        if session is not None:
            raise ConfigurationError(
                "run_once(session=...) runs a transaction-mode pass: this worker's mode is lease"
            )
        jobs = self._drive(self._lease_claim_steps())
        if not jobs:
            return PassResult()
        tally = Tally(len(jobs))
        batch = self._held(jobs, tally)
        with self._keeping():
            if self.settings.concurrency == 1 or len(jobs) == 1:
                for job in jobs:
                    batch.run(job)
            else:
                pool = _ThreadPool(min(self.settings.concurrency, len(jobs)), "programma-handler")
                for job in jobs:
                    pool.submit(functools.partial(batch.run, job))
                pool.shutdown(wait=True)
            # Every handler returned: write what is still queued, and give up on what
            # cannot be written (the keeper may hold the writer token: wait for it).
            while not tally.done:
                self._write_queued(final=True)
                tally.wait(0.05)
        return tally.result

    # -- executing the decisions' steps --------------------------------------------------

    def _held(self, jobs: list[ClaimedJob], tally: Tally | None = None) -> _LeaseBatch:
        """Book newly claimed lease-mode jobs; the batch that runs them."""
        self.holdings.hold(jobs, tally)
        with self._cond:
            self._in_flight += len(jobs)
            self._totals += PassResult(claimed=len(jobs))
        if self._keeper is not None:
            self._keeper.kick()  # their leases may be due sooner than those held so far
        return _LeaseBatch(self, jobs)

    @contextlib.contextmanager
    def _keeping(self) -> Iterator[None]:
        """A keeper for the duration (``run_once``), unless the loop's is running."""
        if self._keeper is not None:
            yield
            return
        keeper = self._keeper = _Keeper(self)
        keeper.start()
        try:
            yield
        finally:
            self._keeper = None
            keeper.close(self.settings.shutdown_timeout)

    def _settle(
        self, job: ClaimedJob, decided: Outcome | PassResult | None, write_now: bool
    ) -> None:
        """After a job's handler: count its outcome, or queue its write — written now
        (a failure, a cancellation, or the batch's last job to start), or left for
        the completions finishing after it (the keeper writes it soon)."""
        if decided is None:
            return  # released: the release is counted
        if isinstance(decided, PassResult):
            self._record(job, decided)
            return
        first = self.holdings.queue(job.id, decided)
        if decided.kind != "complete" or write_now:
            self._write_queued()
        elif first and self._keeper is not None:
            self._keeper.kick()

    def _write_queued(self, *, final: bool = False) -> bool:
        """Write everything queued, if no other writer is (see
        :meth:`~.decisions.WorkerCore._writer_steps`); False if a write failed."""
        return self._drive(self._writer_steps(final=final))

    def _jobs_done(self, outcome: PassResult, count: int) -> None:
        with self._cond:
            self._totals += outcome
            self._in_flight -= count
            self._cond.notify_all()

    def _drive(self, steps: Generator[Step, Any, T], unit: _Pass | None = None) -> T:
        """Run a decision's steps (``unit``: the transaction-mode pass they belong to)."""
        return drive(steps, functools.partial(self._step, unit))

    def _step(self, unit: _Pass | None, step: Step) -> Any:
        if isinstance(step, RunHandler):
            return self._run_handler(step.job, step.cancellation, unit)
        if isinstance(step, EachCommitted):
            if self._autocommit is None:
                return self._in_transaction(step.steps)
            with self._autocommit.connect() as connection:
                return run_steps(connection, step.steps)
        if isinstance(step, InTransaction):
            return self._in_transaction(step.steps)
        assert unit is not None, f"{step!r} is a step of a transaction-mode pass"
        if isinstance(step, Commit):
            return unit.commit()
        return execute(unit.session, step)

    def _claim_step(self, step: Step) -> Any:
        """A step of the loop's lease claim: a one-topic claim runs directly when it may."""
        direct = self.direct_claims
        if isinstance(step, EachCommitted) and direct is not None and direct.allowed():
            return direct.run(step.steps)
        return self._step(None, step)

    def _in_transaction(self, steps: Generator[Operation[Any], Any, T]) -> T:
        """Run operations in a short transaction of a session of our own."""
        with self.session_factory() as session, session.begin():
            return run_steps(session, steps)

    def _run_handler(
        self, job: ClaimedJob, cancellation: Cancellation | None, unit: _Pass | None
    ) -> Returned | Exception | ConnectionLost:
        """:class:`~.steps.RunHandler`: run the handler; what it returned or raised."""
        self._log_job_started(job)
        if unit is None:  # lease mode: outside any transaction
            try:
                value = self._call_handler(JobContext(self, job, None, cancellation))
            except Exception as error:
                return error
            return Returned(value)
        session = unit.session
        try:
            # The SAVEPOINT confines a failing handler's writes (see
            # WorkerCore._transaction_steps).
            with session.begin_nested():
                value = self._call_handler(JobContext(self, job, session, cancellation))
                if cancellation is not None and cancellation.requested:
                    # A cancelled job's work is undone: out of the SAVEPOINT.
                    raise JobCancelled(f"job {job.id} was cancelled")
        except Exception as error:
            # Whatever the handler raised or swallowed (then the RELEASE fails): a
            # dead connection took the whole transaction with it. No I/O: the
            # session's connection is looked up, not opened.
            if session.connection(bind_arguments=self._pass_bind).invalidated:
                return ConnectionLost(error)
            return error
        return Returned(value)

    def _call_handler(self, context: JobContext) -> object:
        """Call the handler, inside the ``handler_context`` setting's context if any;
        what it returned."""
        hook = self.settings.handler_context
        if hook is None:
            return self.handler(context)
        manager = hook(context)
        if not isinstance(manager, AbstractContextManager):
            raise ConfigurationError(
                f"handler_context must return a context manager for Worker, got {manager!r}"
            )
        with manager:
            return self.handler(context)

    def _transaction_pass(self, on_claimed: Callable[[int], None] | None) -> PassResult:
        """Claim, handle, complete and commit in ONE transaction of a session of our own."""
        # Leaving the begin() block rolls the transaction back after an error; the
        # pass's last step commits it explicitly (see Commit).
        with self.session_factory() as session, session.begin() as transaction:
            return self._drive(self._transaction_steps(on_claimed), _Pass(session, transaction))

    def _add_totals(self, result: PassResult) -> None:
        with self._cond:
            if not self._gave_up:  # a pass that ends after shutdown_timeout was counted
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
            self._gave_up = False
        restore_signals = (
            self._install_signal_handlers() if install_signal_handlers else (lambda: None)
        )
        pool = (
            None
            if self.settings.concurrency == 1
            else _ThreadPool(self.settings.concurrency, "programma-handler")
        )
        failure: list[BaseException] = []
        if self._conninfo is not None:
            self.listener = Listener(
                self._conninfo,
                notify_channel(self.queue.table),
                self.settings.topics,
                self.wake,
                control_channel=control_channel(self.queue.table),
                on_control=self._on_control,
            )
            self.listener.start()
        if self.settings.mode == "lease":
            self._keeper = _Keeper(self)
            self._keeper.start()
        self._log_started(listening=self.listener is not None)
        try:
            if pool is None:
                self._loop_on_own_thread(failure)
            else:
                self._loop(pool)
        finally:
            if self.listener is not None:
                self.listener.stop()
            self._drain()
            self._close_keeper()
            self._give_up()
            if pool is not None:
                pool.shutdown()
            restore_signals()
            with self._cond:
                self._running = False
            log.info("worker stopped: %s", self.totals)
        if failure:
            raise failure[0]
        return self.totals

    def _loop_on_own_thread(self, failure: list[BaseException]) -> None:
        """Concurrency 1: run the loop on a daemon thread that also runs the handlers.

        No hand-off between a claim and its handlers, nor between a batch's end and
        the next claim (each costs a thread wake-up). This thread — the caller of
        :meth:`run`, where the signals arrive — only waits for the stop: a handler
        still running after ``shutdown_timeout`` cannot keep :meth:`run` from
        returning. The loop's own error, if any, goes to ``failure``.
        """

        def loop() -> None:
            try:
                self._loop(None)
            except BaseException as error:
                failure.append(error)
            finally:
                with self._cond:
                    self._loop_running = False
                    self._cond.notify_all()

        with self._cond:
            self._loop_running = True
        threading.Thread(target=loop, name="programma-loop", daemon=True).start()
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or not self._loop_running)

    def _loop(self, pool: _ThreadPool | None) -> None:
        if self._direct_claims_possible():
            assert self._engine is not None and self._autocommit is not None
            self.direct_claims = _DirectClaims(self._engine, self._autocommit)
        try:
            self._loop_passes(pool)
        finally:
            direct, self.direct_claims = self.direct_claims, None
            if direct is not None:
                direct.close()

    def _direct_claims_possible(self) -> bool:
        """Whether the loop's claims may run directly (:class:`_DirectClaims`): a
        lease-mode worker that owns its engine, on PostgreSQL with psycopg 3."""
        engine = self._autocommit
        return (
            self.settings.direct_claim
            and self.settings.mode == "lease"
            and engine is not None
            and direct_dialect(engine.dialect)
        )

    def _loop_passes(self, pool: _ThreadPool | None) -> None:
        backoff = self._new_backoff()
        dispatch = self._dispatch_leases if self.settings.mode == "lease" else self._dispatch_pass
        while self._wait_for_room():
            self._drive(self._duty_steps())
            with self._cond:
                generation = self._wakeups
            try:
                claimed = dispatch(pool)
                idle_for = (
                    None if self._full_batch(claimed) else self._drive(self._idle_wait_steps())
                )
            except DB_ERRORS as error:
                delay = backoff.next()
                self._log_claim_error(error, delay)
                self._sleep(delay)
                continue
            backoff.reset()
            if idle_for is not None:
                self._wait_for_wake(generation, idle_for)

    def _dispatch_leases(self, pool: _ThreadPool | None) -> int:
        jobs = drive(self._lease_claim_steps(), self._claim_step)
        if jobs:
            batch = self._held(jobs)
            if pool is None:  # concurrency 1: the loop's own thread runs them
                for job in jobs:  # each guarded, as a pool thread runs its tasks
                    _run_task(functools.partial(batch.run, job))
                return len(jobs)
            for job in jobs:
                pool.submit(functools.partial(batch.run, job))
            if not self._full_batch(len(jobs)):
                # The loop looks ahead next (a query): let a handler thread take up
                # the batch first, or the two compete for the GIL and the job waits
                # for the look-ahead. Bounded: the loop never stalls on it.
                batch.started.wait(self.handoff_wait)
        return len(jobs)

    def _dispatch_pass(self, pool: _ThreadPool | None) -> int:
        """Start a transaction-mode pass on a pool thread (concurrency 1: run it on
        this one); return once it has claimed."""
        claimed = _Handoff()
        with self._cond:
            self._in_flight += 1

        def pass_() -> None:
            try:
                self._add_totals(self._transaction_pass(on_claimed=claimed.put))
            except BaseException as error:
                if not claimed.put_error(error):
                    self._log_pass_failed(error)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

        if pool is None:
            pass_()
        else:
            pool.submit(pass_)
        return claimed.get()

    def _wait_for_room(self) -> bool:
        """Block until another claim may start; False once stopping."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._stopping or self._in_flight < self.settings.concurrency
            )
            return not self._stopping

    def _wait_for_wake(self, generation: int, timeout: float) -> None:
        """The idle wait: until :meth:`wake` (a notification) or :meth:`stop`, at most
        ``timeout`` seconds.

        It blocks on a queue, not on the condition: a notification's wake-up is then
        one thread switch, where a condition's waiter, woken while the waker still
        holds the condition's lock, has to wait for that lock too — a pickup's
        latency either way.
        """
        deadline = time.monotonic() + timeout
        while True:
            # Under the condition's lock, as wake() and stop() look at _idle_waiting:
            # a wake-up after this check finds it set and leaves a token in the queue,
            # so it cannot be missed between the check and the get().
            with self._cond:
                remaining = deadline - time.monotonic()
                if self._stopping or self._wakeups != generation or remaining <= 0:
                    self._idle_waiting = False
                    return
                self._idle_waiting = True
            # A token left by a wake-up already seen returns at once: checked again.
            with contextlib.suppress(queue_module.Empty):
                self._idle_signal.get(timeout=remaining)

    def _signal_idle_loop(self) -> None:
        """Wake the idle wait, if the loop is in it (called under the condition's lock):
        at most one token is ever left in the queue."""
        if self._idle_waiting:
            self._idle_waiting = False
            self._idle_signal.put(None)

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, timeout=seconds)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.shutdown_timeout
        with self._cond:
            while (self._in_flight or self._loop_running) and not self._abandoned:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._log_shutdown_timeout(self._in_flight)
                    return
                self._cond.wait(remaining)

    def _close_keeper(self) -> None:
        """Lease mode: the keeper writes what is still queued (or gives up), then ends."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.close(self.settings.shutdown_timeout)

    def _give_up(self) -> None:
        """Count the jobs still held (their handlers outlived shutdown_timeout) as
        abandoned; whatever they do later is neither written nor counted."""
        with self._cond:
            self._gave_up = True
            abandoned = self.holdings.abandon()
            if abandoned:
                self._totals += PassResult(abandoned=abandoned)

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {signum: signal.getsignal(signum) for signum in signals}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._on_signal(signum)

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
