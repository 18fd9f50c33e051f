"""The worker on asyncio: ``async def`` handlers, ``AsyncSession``, tasks instead of threads.

::

    from sqlalchemy.ext.asyncio import create_async_engine
    from programma_sa import AsyncJobContext, AsyncJobQueue, AsyncWorker

    async def send_receipt(ctx: AsyncJobContext) -> None:
        await mailer.send(ctx.job.data["order"])

    worker = AsyncWorker(
        AsyncJobQueue(Job), create_async_engine(url), "send-receipt", send_receipt,
        concurrency=8,
    )
    await worker.run()            # until worker.stop(); or: async with worker: ...

:class:`AsyncWorker` is :class:`~programma_sa.Worker` on asyncio: the same settings
(checked by the same code, so a bad one raises the same error), the same two modes,
the same outcome rules, retries, conditional batch completion and periodic pruning —
every decision comes from :mod:`.decisions`, as the same steps the sync worker
executes. What differs is only the driver:

* handlers are coroutines, run as tasks; at most ``concurrency`` run at once (a
  semaphore) — in lease mode the jobs of a claim, in transaction mode the claim
  transactions;
* sessions are ``AsyncSession`` objects from ``bind`` (an ``AsyncEngine`` or an
  ``async_sessionmaker``): ``postgresql+psycopg://`` or ``postgresql+asyncpg://``;
* LISTEN/NOTIFY runs on a ``psycopg.AsyncConnection`` of its own
  (:class:`~.listen.AsyncListener`), whatever the engine's driver, and
  wakes the loop through an :class:`asyncio.Event`;
* :meth:`AsyncWorker.stop` is called on the loop; :meth:`AsyncWorker.run` installs
  SIGTERM/SIGINT handlers with ``loop.add_signal_handler`` only when asked
  (``install_signal_handlers=True``, as the CLI does): inside an application server
  the server owns the signals.

A handler must not block the event loop: run blocking code with
``await asyncio.to_thread(...)``, or use the sync :class:`~programma_sa.Worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from typing_extensions import Unpack

from .._drivers.postgresql import control_channel, notify_channel
from .._execute import InTransaction, drive_async, execute_async, run_steps_async
from .._job_records import ClaimedJob
from .._operations import Operation
from .._session_types import AsyncSessionLike, current_async_session
from ..async_queue import AsyncJobQueue
from ..exceptions import ConfigurationError, JobCancelled, ProgrammaError
from .decisions import DB_ERRORS, ClaimTiming, WorkerCore, autocommit_allowed
from .duties import KeeperPlan
from .leases import Cancellation, Outcome, Tally
from .listen import AsyncListener
from .results import UNTOUCHED, PassResult
from .served import HandlerSource, worker_parts
from .settings import WorkerOptions, WorkerSettings
from .steps import Commit, ConnectionLost, EachCommitted, JobSnoozed, Returned, RunHandler, Step

if TYPE_CHECKING:
    # Only for annotations: sqlalchemy.ext.asyncio needs greenlet (see async_queue).
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, AsyncSessionTransaction

__all__ = ["AsyncHandler", "AsyncJobContext", "AsyncWorker"]

log = logging.getLogger("programma_sa.worker")

T = TypeVar("T")
#: What an async handler is: a coroutine function taking an :class:`AsyncJobContext`.
AsyncHandler = Callable[["AsyncJobContext"], Awaitable[object]]


class AsyncJobContext:
    """What an async handler receives: :class:`~programma_sa.JobContext`, awaited.

    :ivar job: the claimed job (ACTIVE; ``attempts`` counts this delivery).
    :ivar session: in ``transaction`` mode the claim's ``AsyncSession`` — write
        business rows with it and they commit with the job's completion; never
        commit, roll back or close it. ``None`` in ``lease`` mode.
    :ivar queue: the worker's :class:`~programma_sa.AsyncJobQueue`.

    The ``move_*``/``set_*`` coroutines act on this job: in the claim's transaction
    in transaction mode, in a short transaction of their own (committed) in lease
    mode.

    A cancelled job shows ``ctx.cancelled`` (and :meth:`wait_cancelled` returns at
    once); a handler still running ``cancel_grace_period`` seconds after the request
    has its task cancelled (``asyncio.CancelledError`` at its current ``await``).
    Either way the job ends CANCELLED, never retried.
    """

    def __init__(
        self,
        worker: AsyncWorker,
        job: ClaimedJob,
        session: AsyncSession | None,
        cancellation: Cancellation | None = None,
    ) -> None:
        self._worker = worker
        self.job = job
        self.session = session
        self.queue = worker.queue
        self._cancellation = cancellation
        # Made when a handler first waits (most never do), set on the loop when the
        # request arrives.
        self._cancelled: asyncio.Event | None = None

    @property
    def stopping(self) -> bool:
        """True once the worker is shutting down: a long handler may wrap up early."""
        return self._worker.stopping

    @property
    def sessions(self) -> Callable[[], AsyncSession]:
        """The worker's session factory, for a lease-mode handler's own transactions."""
        return self._worker.session_factory

    def snooze(self, seconds: float) -> NoReturn:
        """:meth:`JobContext.snooze <programma_sa.JobContext.snooze>` (not a coroutine:
        it raises :class:`~programma_sa.JobSnoozed` to end the handler)."""
        raise JobSnoozed.checked(seconds)

    @property
    def cancelled(self) -> bool:
        """True once this job's cancellation has reached the worker."""
        return self._cancellation is not None and self._cancellation.requested

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~programma_sa.JobCancelled` if the job was cancelled."""
        if self.cancelled:
            raise JobCancelled(f"job {self.job.id} was cancelled")

    async def wait_cancelled(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking at once if the job is cancelled
        (instead of ``asyncio.sleep``); True if it was."""
        if self.cancelled:
            return True
        if self._cancelled is None:
            self._cancelled = asyncio.Event()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._cancelled.wait(), timeout)
        return self.cancelled

    async def _apply(self, action: Callable[[AsyncSession], Awaitable[T]]) -> T:
        if self.session is not None:
            return await action(self.session)
        async with self._worker.session_factory() as session, session.begin():
            return await action(session)

    async def move_to_processing(self) -> bool:
        """:meth:`JobContext.move_to_processing <programma_sa.JobContext.move_to_processing>`:
        PROCESSING, never delivered again; yours to finish.

        :returns: True if the job exists.
        """
        return await self._apply(lambda s: self.queue.move_job_to_processing(s, self.job.id))

    async def move_to_done(self, delete: bool = False) -> bool:
        """COMPLETED now (``delete=True``: deleted instead).

        :returns: True if the job exists.
        """
        return await self._apply(lambda s: self.queue.move_job_to_done(s, self.job.id, delete))

    async def move_to_failed(self, delete: bool = False) -> bool:
        """FAILED now, for good (``delete=True``: deleted instead); raising instead
        hands the job to the retry policy.

        :returns: True if the job exists.
        """
        return await self._apply(lambda s: self.queue.move_job_to_failed(s, self.job.id, delete))

    async def set_attributes(self, attributes: Mapping[str, Any]) -> bool:
        """Merge ``attributes`` into the job's attributes (the keys given replaced).

        :returns: True if the job exists.
        """
        return await self._apply(lambda s: self.queue.set_attributes(s, self.job.id, attributes))

    async def set_retry_after_seconds(self, seconds: int | None) -> bool:
        """:meth:`JobContext.set_retry_after_seconds
        <programma_sa.JobContext.set_retry_after_seconds>`: a new visibility timeout,
        this lease measured again from its claim; the worker's completion then
        leaves the job as it is.

        :returns: True if the job exists.
        """
        return await self._apply(
            lambda s: self.queue.set_retry_after_seconds(s, self.job.id, seconds)
        )

    async def set_job_start_date(self, start_date: datetime | str) -> bool:
        """Claimable again from ``start_date``, state unchanged (a reschedule); the
        worker's completion then leaves the job as it is.

        :returns: True if the job exists.
        """
        return await self._apply(
            lambda s: self.queue.set_job_start_date(s, self.job.id, start_date)
        )


def _session_factory(bind: object) -> Callable[[], AsyncSession]:
    from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

    if isinstance(bind, AsyncEngine):
        return async_sessionmaker(bind)
    if callable(bind):
        return bind
    raise ConfigurationError(
        "expected an AsyncEngine or an async session factory (e.g. an async_sessionmaker), "
        f"got {bind!r}"
    )


def _autocommit_engine(bind: object) -> AsyncEngine | None:
    """Where the worker runs its one-statement units of work in autocommit
    (:class:`~.steps.EachCommitted`); ``None``: in transactions of the
    session factory.

    Only when the worker was given an AsyncEngine: a session factory of the
    application's may carry settings (binds, events) the worker must not bypass.
    """
    from sqlalchemy.ext.asyncio import AsyncEngine

    if isinstance(bind, AsyncEngine) and autocommit_allowed(bind.sync_engine):
        return bind.execution_options(isolation_level="AUTOCOMMIT")
    return None


def _bound_url(bind: object, queue: object) -> URL | None:
    """The URL behind an AsyncEngine or an ``async_sessionmaker`` bound to one, when
    there is one (asked as the sync Worker asks a sessionmaker)."""
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

    if isinstance(bind, async_sessionmaker):
        try:
            bind = bind().get_bind(clause=getattr(queue, "table", None))  # a sync bind
        except sa_exc.UnboundExecutionError:
            return None
    if isinstance(bind, (AsyncEngine, AsyncConnection)):
        bind = bind.sync_engine
    engine = getattr(bind, "engine", None)  # an Engine's is itself; a Connection has one
    return engine.url if isinstance(engine, Engine) else None


@dataclass(frozen=True)
class _Pass:
    """The session and transaction of one transaction-mode pass (``transaction``:
    ``None`` when the pass runs in the caller's transaction, which the caller ends)."""

    session: AsyncSession
    transaction: AsyncSessionTransaction | None

    async def commit(self) -> sa_exc.DBAPIError | None:
        """:class:`~.steps.Commit`: ``None`` once committed, else the commit's error."""
        if self.transaction is None:
            return None  # the caller's transaction: never ours to commit
        try:
            await self.transaction.commit()
        except sa_exc.DBAPIError as error:
            # As in the sync Worker: the transaction is over either way; its
            # connection goes back before an InTransaction takes one.
            await self.session.close()
            return error
        return None


class _LeaseBatch:
    """The jobs of one lease-mode claim: how many have not finished (see the sync
    Worker's batch; a task's counting needs no lock), and the claim's figures for
    the adaptive claim size."""

    def __init__(self, size: int, timing: ClaimTiming | None) -> None:
        self.unfinished = size
        self.timing = timing


class _Keeper:
    """The lease-mode worker's keeper task: the sync Worker's keeper thread, on the
    event loop (it runs the same :class:`~.duties.KeeperPlan`)."""

    def __init__(self, worker: AsyncWorker) -> None:
        self._worker = worker
        self._plan = KeeperPlan(worker.holdings, worker.lease_duty)
        self._kicked = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="programma-keeper")

    def kick(self) -> None:
        """Look again now: something was queued, held or asked for."""
        self._kicked.set()

    async def close(self, timeout: float) -> None:
        """Write what is queued (giving up on what cannot be), then end."""
        self._closing = True
        self._kicked.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)

    async def _run(self) -> None:
        plan = self._plan
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._kicked.wait(), plan.next_wake(time.monotonic()))
            self._kicked.clear()
            closing = self._closing
            if plan.write_now(time.monotonic(), stopping=self._worker.stopping, closing=closing):
                try:
                    written = await self._worker._write_queued(final=closing)
                except Exception:
                    log.exception("unexpected error in the worker's keeper")
                    written = False
                plan.written(written, time.monotonic())
            if closing and plan.done:
                return


class AsyncWorker(WorkerCore):
    """Runs an ``async def`` handler on the jobs of one or more topics. See the module docs.

    The parameters are those of :class:`~programma_sa.Worker`, with an
    :class:`~programma_sa.AsyncJobQueue`, an ``AsyncEngine`` (or a factory of
    ``AsyncSession`` objects, such as an ``async_sessionmaker``) and a coroutine
    function as the handler; ``concurrency`` bounds the handler tasks running at once.
    In place of ``queue`` a task registry, as for ``Worker``: it serves ``async def``
    and plain tasks side by side.
    """

    #: After ``shutdown_timeout`` the handlers still running are cancelled; this is
    #: how long their clean-up (a rollback, a batch's completion) may take.
    cancel_timeout = 5.0

    def __init__(
        self,
        queue: AsyncJobQueue | HandlerSource,
        bind: AsyncEngine | Callable[[], AsyncSession],
        topics: str | Sequence[str] | None = None,
        handler: AsyncHandler | None = None,
        **options: Unpack[WorkerOptions],
    ) -> None:
        parts = worker_parts(queue, topics, handler, options, asynchronous=True)
        super().__init__(
            parts.queue,
            parts.handler,
            WorkerSettings(parts.topics, **parts.options),
            queue_type=AsyncJobQueue,
            asynchronous=True,
            bound_url=_bound_url(bind, parts.queue),
        )
        self.queue = cast(AsyncJobQueue, parts.queue)  # checked by WorkerCore
        self.handler = cast(AsyncHandler, parts.handler)
        self.session_factory = _session_factory(bind)
        # As in the sync Worker: one-statement units of work in autocommit when the
        # worker owns the engine.
        self._autocommit = _autocommit_engine(bind)
        # The loop's state is touched only on the event loop, so no lock guards it.
        # Asyncio primitives bind to a loop at their first wait (Python >= 3.10), so
        # creating them here, maybe outside any loop, is safe.
        self._semaphore = asyncio.Semaphore(self.settings.concurrency)
        self._woken = asyncio.Event()  # set by wake() and stop(); cleared before a claim
        self._changed = asyncio.Event()  # set when in-flight work ends, and on stop/abandon
        self._stopped = asyncio.Event()  # set by stop()
        self._abandoned = False
        self._in_flight = 0  # lease: jobs; transaction: claim batches
        self._tasks: set[asyncio.Task[Any]] = set()
        self._totals = PassResult()
        self._gave_up = False  # shutdown_timeout passed: late outcomes are not counted
        self._running = False
        self._task: asyncio.Task[PassResult] | None = None
        self._keeper: _Keeper | None = None
        # The task running each job's handler, and the jobs whose task the grace
        # period's end cancelled (their CancelledError is the job's, not ours).
        # (Keyed by the ids' integers, as the Holdings are.)
        self._running_handlers: dict[int, asyncio.Task[Any]] = {}
        self._forced: set[int] = set()
        self.listener: AsyncListener | None = None

    @classmethod
    def from_settings(
        cls,
        queue: AsyncJobQueue,
        bind: AsyncEngine | Callable[[], AsyncSession],
        handler: AsyncHandler,
        settings: WorkerSettings,
    ) -> AsyncWorker:
        """A worker with ``settings`` (its topics included)."""
        return cls(queue, bind, settings.topics, handler, **settings.options())

    # -- public state and control -----------------------------------------------------

    @property
    def totals(self) -> PassResult:
        """Everything done so far by this worker (loop passes and ``run_once`` calls)."""
        return self._totals

    def wake(self) -> None:
        """Make an idle loop claim now (what a notification for our topics does).

        Call it on the worker's event loop (from another thread:
        ``loop.call_soon_threadsafe(worker.wake)``).
        """
        self._woken.set()

    def stop(self) -> None:
        """Stop claiming; :meth:`run` returns once running handlers finish. In lease
        mode the jobs claimed but not started are released at once (claimable again,
        their delivery not counted).

        Idempotent. Call it on the worker's event loop (from another thread:
        ``loop.call_soon_threadsafe(worker.stop)``).
        """
        self._stopping = True
        self._stopped.set()
        self._woken.set()
        self._changed.set()
        if self._keeper is not None:
            self._keeper.kick()

    def _abandon(self) -> None:
        self._abandoned = True
        self._changed.set()

    def start(self) -> asyncio.Task[PassResult]:
        """Run :meth:`run` as a task of the running loop (no signal handlers); returns it."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name="programma-worker")
        return self._task

    async def join(self, timeout: float | None = None) -> bool:
        """Wait for a :meth:`start`-ed loop to end; True if it has."""
        if self._task is None:
            return True
        await asyncio.wait({self._task}, timeout=timeout)
        return self._task.done()

    async def __aenter__(self) -> AsyncWorker:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()
        await self.join(self.settings.shutdown_timeout + self.cancel_timeout + 1)
        task = self._task
        if exc_info[0] is None and task is not None and task.done() and not task.cancelled():
            task.result()  # the loop's own error, if it had one

    # -- one pass ------------------------------------------------------------------------

    async def run_once(self, session: AsyncSessionLike | None = None) -> PassResult:
        """Claim up to ``max_jobs``, run the handler on each, write the outcomes.

        :param session: transaction mode only: run the pass in this session's
            transaction and never commit it, as :meth:`Worker.run_once
            <programma_sa.Worker.run_once>` does (what
            :func:`programma_sa.testing.run_job_async` runs).

        Returns once every handler of the pass has returned. Database errors
        propagate (the loop of :meth:`run` catches them and backs off), as in
        :meth:`Worker.run_once <programma_sa.Worker.run_once>` — in transaction mode
        :class:`~programma_sa.exceptions.TransactionLost` and
        :class:`~programma_sa.exceptions.CommitFailed` among them.
        """
        if self.settings.mode == "transaction":
            if session is None:
                result = await self._transaction_pass(on_claimed=None)
            else:
                unit = _Pass(current_async_session(session), None)
                result = await self._drive(self._transaction_steps(None), unit)
            self._totals += result
            return result
        if session is not None:
            raise ConfigurationError(
                "run_once(session=...) runs a transaction-mode pass: this worker's mode is lease"
            )
        jobs = await self._drive(self._lease_claim_steps())
        if not jobs:
            return PassResult()
        tally = Tally(len(jobs))
        batch = self._held(jobs, tally)
        async with self._keeping():
            await asyncio.gather(*(self._lease_job(batch, job) for job in jobs))
            # Every handler returned: write what is still queued, giving up on what
            # cannot be written (the keeper may hold the writer token: wait for it).
            while not tally.done:
                await self._write_queued(final=True)
                if not tally.done:
                    await asyncio.sleep(0.05)
        return tally.result

    def _held(self, jobs: list[ClaimedJob], tally: Tally | None = None) -> _LeaseBatch:
        """Book newly claimed lease-mode jobs; the batch that runs them."""
        self.holdings.hold(jobs, tally)
        self._in_flight += len(jobs)
        self._totals += PassResult(claimed=len(jobs))
        if self._keeper is not None:
            self._keeper.kick()  # their leases may be due sooner than those held so far
        return _LeaseBatch(len(jobs), self._claim_timing(len(jobs)))

    @contextlib.asynccontextmanager
    async def _keeping(self) -> AsyncIterator[None]:
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
            await keeper.close(self.settings.shutdown_timeout)

    async def _lease_job(self, batch: _LeaseBatch, job: ClaimedJob) -> None:
        """Run one leased job when a slot is free; queue (or write) its outcome."""
        decided: Outcome | PassResult | None = UNTOUCHED
        try:
            async with self._semaphore:
                decided = await self._drive(self._leased_job_steps(job))
        finally:
            # Always settled, even when the task is cancelled (shutdown_timeout
            # passed), so the count of jobs in flight cannot leak; the handlers that
            # did return are still completed.
            batch.unfinished -= 1
            last = batch.unfinished == 0
            await self._settle(job, decided, write_now=last)
            if last:
                self._batch_ended(batch.timing)

    async def _settle(
        self, job: ClaimedJob, decided: Outcome | PassResult | None, write_now: bool
    ) -> None:
        """After a job's handler: as :meth:`Worker._settle <programma_sa.Worker._settle>`."""
        if decided is None:
            return  # released: the release is counted
        if isinstance(decided, PassResult):
            self._record(job, decided)
            return
        first = self.holdings.queue(job.id, decided)
        if decided.kind != "complete" or write_now:
            await self._write_queued()
        elif first and self._keeper is not None:
            self._keeper.kick()

    async def _write_queued(self, *, final: bool = False) -> bool:
        """Write everything queued, if no other writer is (see
        :meth:`~.decisions.WorkerCore._writer_steps`); False if a write failed."""
        return await self._drive(self._writer_steps(final=final))

    def _jobs_done(self, outcome: PassResult, count: int) -> None:
        self._totals += outcome
        self._in_flight -= count
        self._changed.set()

    # -- executing the decisions' steps --------------------------------------------------

    async def _drive(self, steps: Generator[Step, Any, T], unit: _Pass | None = None) -> T:
        """Run a decision's steps (``unit``: the transaction-mode pass they belong to)."""
        return await drive_async(steps, functools.partial(self._step, unit))

    async def _step(self, unit: _Pass | None, step: Step) -> Any:
        if isinstance(step, RunHandler):
            return await self._run_handler(step.job, step.cancellation, unit)
        if isinstance(step, EachCommitted):
            if self._autocommit is None:
                return await self._in_transaction(step.steps)
            async with self._autocommit.connect() as connection:
                return await run_steps_async(connection, step.steps)
        if isinstance(step, InTransaction):
            return await self._in_transaction(step.steps)
        assert unit is not None, f"{step!r} is a step of a transaction-mode pass"
        if isinstance(step, Commit):
            return await unit.commit()
        return await execute_async(unit.session, step)

    async def _in_transaction(self, steps: Generator[Operation[Any], Any, T]) -> T:
        """Run operations in a short transaction of a session of our own."""
        async with self.session_factory() as session, session.begin():
            return await run_steps_async(session, steps)

    async def _run_handler(
        self, job: ClaimedJob, cancellation: Cancellation | None, unit: _Pass | None
    ) -> Returned | Exception | ConnectionLost:
        """:class:`~.steps.RunHandler`: run the handler; what it returned or raised.

        A cancellation that reaches the handler sets ``ctx.cancelled``; if the handler
        is still running ``cancel_grace_period`` seconds later, this task is cancelled
        (:meth:`_force_cancel`), and the ``CancelledError`` that ends the handler is
        the job's :class:`~programma_sa.JobCancelled`, not the worker's.
        """
        self._log_job_started(job)
        context = AsyncJobContext(self, job, unit.session if unit else None, cancellation)
        task = asyncio.current_task()
        assert task is not None
        if cancellation is not None:
            loop = asyncio.get_running_loop()

            def requested() -> None:  # on the loop or not: a listener's, a lease pass's
                loop.call_soon_threadsafe(self._cancel_requested, job, context, task)

            cancellation.on_request = requested
            if cancellation.requested:
                self._cancel_requested(job, context, task)
        self._running_handlers[job.id.int] = task
        try:
            if unit is None:  # lease mode: outside any transaction
                try:
                    value = await self._call_handler(context)
                except Exception as error:
                    return error
                return Returned(value)
            session = unit.session
            try:
                # The SAVEPOINT confines a failing handler's writes (see
                # WorkerCore._transaction_steps).
                async with session.begin_nested():
                    value = await self._call_handler(context)
                    if context.cancelled:
                        # A cancelled job's work is undone: out of the SAVEPOINT.
                        raise JobCancelled(f"job {job.id} was cancelled")
            except Exception as error:
                # As in the sync Worker: a dead connection took the transaction with
                # it, whether the handler raised or swallowed the error.
                connection = await session.connection(bind_arguments=self._pass_bind)
                if connection.invalidated:
                    return ConnectionLost(error)
                return error
            return Returned(value)
        except asyncio.CancelledError:
            if job.id.int not in self._forced:
                raise  # the worker's own cancellation (shutdown_timeout passed)
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()
            return JobCancelled(
                f"job {job.id} was cancelled; its handler's task was cancelled after "
                f"{self.settings.cancel_grace_period:g} s"
            )
        finally:
            self._running_handlers.pop(job.id.int, None)
            self._forced.discard(job.id.int)

    def _cancel_requested(
        self, job: ClaimedJob, context: AsyncJobContext, task: asyncio.Task[Any]
    ) -> None:
        """On the loop: tell the handler, and cancel its task after the grace period."""
        if context._cancelled is not None:
            context._cancelled.set()
        asyncio.get_running_loop().call_later(
            self.settings.cancel_grace_period, self._force_cancel, job, task
        )

    def _force_cancel(self, job: ClaimedJob, task: asyncio.Task[Any]) -> None:
        """The grace period passed: cancel the task if it still runs the handler."""
        if self._running_handlers.get(job.id.int) is task:
            log.info(
                "job %s [%s]: its handler is still running %g s after its cancellation; "
                "cancelling its task",
                job.id,
                job.topic,
                self.settings.cancel_grace_period,
                extra={"job_id": str(job.id), "topic": job.topic},
            )
            self._forced.add(job.id.int)
            task.cancel()

    async def _call_handler(self, context: AsyncJobContext) -> object:
        """Await the handler, inside the ``handler_context`` setting's context if any;
        what it returned."""
        hook = self.settings.handler_context
        if hook is None:
            return await self.handler(context)
        manager = hook(context)
        if not isinstance(manager, AbstractAsyncContextManager):
            raise ConfigurationError(
                "handler_context must return an async context manager for AsyncWorker, "
                f"got {manager!r}"
            )
        async with manager:
            return await self.handler(context)

    async def _transaction_pass(self, on_claimed: Callable[[int], None] | None) -> PassResult:
        """Claim, handle, complete and commit in ONE transaction of a session of our own."""
        # As in the sync Worker: leaving the begin() block rolls the transaction back
        # after an error; the pass's last step commits it explicitly (see Commit).
        async with self.session_factory() as session, session.begin() as transaction:
            steps = self._transaction_steps(on_claimed)
            return await self._drive(steps, _Pass(session, transaction))

    # -- the loop ------------------------------------------------------------------------

    async def run(self, *, install_signal_handlers: bool = False) -> PassResult:
        """Process jobs until :meth:`stop`; return the totals.

        On stop: no new claims; running handlers get up to ``shutdown_timeout``
        seconds to finish, then they are cancelled (a lease-mode job is left to its
        visibility timeout, a transaction-mode batch rolls back). Jobs claimed but
        not started are left to their visibility timeout (lease mode).

        :param install_signal_handlers: stop on SIGTERM/SIGINT (a second signal
            stops waiting for running handlers), through ``loop.add_signal_handler``;
            only on the main thread. Off by default: inside an application server
            the server owns the signals.
        """
        if self._running:
            raise ProgrammaError("this AsyncWorker is already running")
        self._running = True
        self._gave_up = False
        loop = asyncio.get_running_loop()
        restore_signals = (
            self._install_signal_handlers(loop) if install_signal_handlers else (lambda: None)
        )
        if self._conninfo is not None:
            self.listener = AsyncListener(
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
            await self._loop()
        finally:
            # Also when run() itself is cancelled: no job not yet started starts now.
            self.stop()
            if self.listener is not None:
                await self.listener.stop()
            await self._drain()
            keeper, self._keeper = self._keeper, None
            if keeper is not None:
                await keeper.close(self.settings.shutdown_timeout)
            self._gave_up = True
            abandoned = self.holdings.abandon()
            if abandoned:
                self._totals += PassResult(abandoned=abandoned)
            restore_signals()
            self._running = False
            log.info("worker stopped: %s", self.totals)
        return self.totals

    async def _loop(self) -> None:
        backoff = self._new_backoff()
        dispatch = self._dispatch_leases if self.settings.mode == "lease" else self._dispatch_pass
        while await self._wait_for_room():
            await self._drive(self._duty_steps())
            # Cleared before the claim: a notification during it makes the idle
            # wait below return at once (it may announce a job the claim missed).
            self._woken.clear()
            try:
                claimed = await dispatch()
                idle_for = (
                    None
                    if self._full_batch(claimed)
                    else await self._drive(self._idle_wait_steps())
                )
            except DB_ERRORS as error:
                delay = backoff.next()
                self._log_claim_error(error, delay)
                await self._wait(self._stopped, delay)
                continue
            backoff.reset()
            if idle_for is not None:
                await self._wait(self._woken, idle_for)

    def _track(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` as a task that :meth:`_drain` waits for (or cancels)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)

        def ended(task: asyncio.Future[None]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("unexpected error in a worker task", exc_info=task.exception())

        task.add_done_callback(ended)

    def _pass_done(self, result: PassResult) -> None:
        if not self._gave_up:  # a pass that ends after shutdown_timeout was counted
            self._totals += result
        self._in_flight -= 1
        self._changed.set()

    async def _dispatch_leases(self) -> int:
        jobs = await self._drive(self._lease_claim_steps())
        if jobs:
            batch = self._held(jobs)
            for job in jobs:
                self._track(self._lease_job(batch, job))
        return len(jobs)

    async def _dispatch_pass(self) -> int:
        """Start a transaction-mode pass as a task; return once it has claimed."""
        claimed: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def pass_() -> None:
            result = PassResult()
            try:
                result = await self._transaction_pass(on_claimed=claimed.set_result)
            except Exception as error:
                if not claimed.done():
                    claimed.set_exception(error)  # the loop backs off
                else:
                    self._log_pass_failed(error)
            finally:
                if not claimed.done():
                    claimed.cancel()  # cancelled before it could claim
                self._pass_done(result)

        self._in_flight += 1
        self._track(pass_())
        return await claimed

    async def _wait_for_room(self) -> bool:
        """Wait until another claim may start; False once stopping."""
        while not self._stopping and self._in_flight >= self.settings.concurrency:
            self._changed.clear()
            await self._changed.wait()
        return not self._stopping

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while self._in_flight and not self._abandoned:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._log_shutdown_timeout(self._in_flight)
                break
            self._changed.clear()
            await self._wait(self._changed, remaining)
        if self._tasks:
            # Unlike a thread, a task can be stopped: cancel what is still running
            # (a transaction rolls back, a lease is left to run out) and give the
            # clean-up a moment.
            for task in self._tasks:
                task.cancel()
            await asyncio.wait(set(self._tasks), timeout=self.cancel_timeout)

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        signals = (signal.SIGTERM, signal.SIGINT)
        for signum in signals:
            loop.add_signal_handler(signum, self._on_signal, signum)

        def restore() -> None:
            for signum in signals:
                loop.remove_signal_handler(signum)

        return restore
