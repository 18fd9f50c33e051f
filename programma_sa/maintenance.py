"""Operations: queue statistics, and retention of finished jobs (a TTL per topic).

*Statistics* — what every topic's jobs are doing, measured in one statement on the
caller's session (read-only; it neither commits nor begins)::

    from programma_sa.maintenance import render_stats, stats

    with Session(engine) as session:
        snapshot = stats(session, queue)                 # every topic
        print(render_stats(snapshot, "table"))           # or "json", "prometheus"
        lag = stats(session, queue, "emails").topic("emails").lag_seconds

*Retention* — delete COMPLETED and FAILED jobs once their TTL has passed, in
bounded batches::

    retention = Retention(
        default=TTL(completed=timedelta(days=1), failed=timedelta(days=14)),
        topics={"audit": TTL()},                         # keep audit jobs forever
    )
    with Session(engine) as session, session.begin():   # the caller's transaction
        removed = prune(session, queue, retention)       # one batch, <= 1000 rows

    Pruner(engine, queue, retention).run_once()          # all batches, own transactions
    await AsyncPruner(async_engine, queue, retention).run_once()   # the same, on asyncio

Every function takes the queue (a ``JobQueue`` / ``AsyncJobQueue``), the
``JobMixin`` model, or its ``Table``. The async functions run the very operations
the sync ones run, on an ``AsyncSession``. Which index serves each number, and the
cost of each call, are in ``docs/operations.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

from sqlalchemy import Engine, Table
from sqlalchemy.orm import Session, sessionmaker

from ._maintenance_operations import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_WINDOW_SECONDS,
    MaintenanceOperations,
    check_batch_size,
    prune_steps,
    run_steps,
    run_steps_async,
)
from ._operations import Operation
from ._render import render_stats
from ._retention import TTL, Retention
from ._stats import QueueStats, TopicStats
from ._types import AsyncSessionLike, SessionLike
from .exceptions import InvalidJobInput, translated_errors
from .models import JobMixin
from .queue import _QueueBase, jobs_table

if TYPE_CHECKING:
    # Only for annotations: sqlalchemy.ext.asyncio needs greenlet (see programma_sa.aio).
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_WINDOW_SECONDS",
    "TTL",
    "AsyncPruner",
    "PruneResult",
    "Pruner",
    "QueueStats",
    "Retention",
    "TopicStats",
    "prune",
    "prune_async",
    "render_stats",
    "stats",
    "stats_async",
]

logger = logging.getLogger("programma_sa.maintenance")

T = TypeVar("T")

#: What the functions accept as "the queue": a queue, the model, or its table.
QueueLike: TypeAlias = _QueueBase | type[JobMixin] | Table


def _operations(queue: QueueLike) -> MaintenanceOperations:
    table = queue.table if isinstance(queue, _QueueBase) else jobs_table(queue)
    return MaintenanceOperations.for_table(table)


class _Execute(Protocol):
    def __call__(self, operation: Operation[T]) -> T: ...


class _ExecuteAsync(Protocol):
    def __call__(self, operation: Operation[T]) -> Awaitable[T]: ...


def _executor(session: SessionLike) -> _Execute:
    def execute(operation: Operation[T]) -> T:
        with translated_errors():
            return operation.read(session.execute(operation.statement, operation.params))

    return execute


def _async_executor(session: AsyncSessionLike) -> _ExecuteAsync:
    async def execute(operation: Operation[T]) -> T:
        with translated_errors():
            # AsyncSession.execute returns a buffered Result, so the sync readers apply.
            return operation.read(await session.execute(operation.statement, operation.params))

    return execute


def stats(
    session: SessionLike,
    queue: QueueLike,
    topic: str | None = None,
    *,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
) -> QueueStats:
    """Per-topic statistics of the jobs table, in one statement on ``session``.

    :param topic: only this topic (zeros when it has no jobs); ``None``: every topic
        that has jobs.
    :param window_seconds: the window of ``completed_recently`` / ``failed_recently``.
    """
    return _executor(session)(_operations(queue).stats(topic, window_seconds))


async def stats_async(
    session: AsyncSessionLike,
    queue: QueueLike,
    topic: str | None = None,
    *,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
) -> QueueStats:
    """:func:`stats` on an ``AsyncSession``."""
    return await _async_executor(session)(_operations(queue).stats(topic, window_seconds))


def prune(
    session: SessionLike,
    queue: QueueLike,
    retention: Retention,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> int:
    """Delete at most ``batch_size`` finished jobs whose TTL has passed; return how many.

    Runs in the session's transaction and leaves it open: the deleted rows stay
    locked until the caller commits, so keep that transaction short and call again
    (committing in between) while it returns ``batch_size``. Jobs in any other
    state are never touched, and rows another transaction holds locked are skipped,
    not waited for. :class:`Pruner` does the looping in transactions of its own.
    """
    return run_steps(_executor(session), prune_steps(_operations(queue), retention, batch_size))


async def prune_async(
    session: AsyncSessionLike,
    queue: QueueLike,
    retention: Retention,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> int:
    """:func:`prune` on an ``AsyncSession``."""
    steps = prune_steps(_operations(queue), retention, batch_size)
    return await run_steps_async(_async_executor(session), steps)


@dataclass(frozen=True)
class PruneResult:
    """What one :meth:`Pruner.run_once` did."""

    #: Finished jobs deleted.
    deleted: int
    #: Batches committed.
    batches: int
    #: Another process held the prune lock, so this pass stopped (before its first
    #: batch when ``batches == 0``); that process is doing the pruning.
    skipped_because_locked: bool


class _PrunePass:
    """One :meth:`Pruner.run_once`: whether another batch runs, and what they did.

    The sync and the async pruner only open the transactions; every decision of a
    pass is here.
    """

    def __init__(self, pruner: _PrunerBase) -> None:
        self._pruner = pruner
        self._deleted = 0
        self._batches = 0
        self._locked = False
        self._finished = not pruner.retention.prunes_anything

    def more(self) -> bool:
        """Whether another batch should run."""
        limit = self._pruner.max_batches
        return not self._finished and (limit is None or self._batches < limit)

    def batch(self) -> Generator[Operation[Any], Any, int | None]:
        """One batch, in its own transaction: take the prune lock, then delete.

        Returns the rows deleted, or ``None`` when another process holds the lock.
        """
        operations = self._pruner._operations
        locked: bool = yield operations.try_prune_lock()
        if not locked:
            logger.debug(
                "another process is pruning %s; this pass stops after %d batches",
                operations.table.fullname,
                self._batches,
            )
            return None
        pruner = self._pruner
        return (yield from prune_steps(operations, pruner.retention, pruner.batch_size))

    def record(self, deleted: int | None) -> None:
        """Note what a committed batch did (``None``: the lock was taken)."""
        if deleted is None:
            self._locked = self._finished = True
            return
        self._batches += 1
        self._deleted += deleted
        if deleted < self._pruner.batch_size:
            self._finished = True

    @property
    def result(self) -> PruneResult:
        return PruneResult(self._deleted, self._batches, skipped_because_locked=self._locked)


class _PrunerBase:
    """The settings of a pruner, checked once for the sync and the async one."""

    def __init__(
        self,
        queue: QueueLike,
        retention: Retention,
        *,
        batch_size: int,
        max_batches: int | None,
    ) -> None:
        if not isinstance(retention, Retention):
            raise InvalidJobInput(f"retention must be a Retention, got {type(retention).__name__}")
        if max_batches is not None and (
            isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
        ):
            raise InvalidJobInput(f"max_batches must be None or an int >= 1, got {max_batches!r}")
        self._operations = _operations(queue)
        self.retention = retention
        self.batch_size = check_batch_size(batch_size)
        self.max_batches = max_batches

    @property
    def lock_key(self) -> int:
        """The advisory-lock key every pruner of this table takes (``pg_locks.objid`` …)."""
        return self._operations.prune_lock_key


class Pruner(_PrunerBase):
    """Deletes expired finished jobs batch by batch, one process at a time.

    Each batch is its own short transaction on a session from ``sessions`` (an
    ``Engine`` or a session factory), so deleted rows are locked only briefly and
    the work committed so far stays done if the process stops. A pass ends when a
    batch deletes fewer than ``batch_size`` rows, after ``max_batches`` batches
    (``None``: no limit; the next pass continues), or when another process holds the
    prune lock. A worker calls :meth:`run_once` every so often; no sleeping here.

    **One pruner at a time.** Each batch first takes a PostgreSQL advisory lock on a
    key derived from the table's name, with ``pg_try_advisory_xact_lock``: if
    another process's batch holds it, this pass stops at once instead of waiting.
    Without it, every worker's pruner would wake on the same schedule and delete
    from the same oldest rows at once — SKIP LOCKED keeps them from deleting the
    same rows, but they would still multiply the I/O, WAL and dead tuples of each
    burst, and contend on the same index pages. The lock is *transaction*-level: it
    is released by each batch's own commit or rollback, so a crashed process, a
    connection returned to a pool, or a transaction-pooling pgbouncer can never
    leave it held (a session-level lock can outlive its pass on a pooled
    connection and silence every pruner until that connection closes). Between two
    batches another pruner may take over; at no moment do two batches run at once.
    :class:`AsyncPruner` takes the same lock, so sync and async pruners exclude
    each other too.
    """

    def __init__(
        self,
        sessions: Engine | Callable[[], Session],
        queue: QueueLike,
        retention: Retention,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batches: int | None = 100,
    ) -> None:
        super().__init__(queue, retention, batch_size=batch_size, max_batches=max_batches)
        self._sessions = sessionmaker(sessions) if isinstance(sessions, Engine) else sessions

    def run_once(self) -> PruneResult:
        """Prune until nothing expired is left, ``max_batches`` ran, or another pruner runs."""
        pass_ = _PrunePass(self)
        while pass_.more():
            with self._sessions() as session, session.begin():
                deleted = run_steps(_executor(session), pass_.batch())
            pass_.record(deleted)
        return pass_.result


class AsyncPruner(_PrunerBase):
    """:class:`Pruner` on asyncio: the same batches and the same lock, on async sessions.

    :param sessions: an ``AsyncEngine`` or a factory of ``AsyncSession`` objects (an
        ``async_sessionmaker``).
    """

    def __init__(
        self,
        sessions: AsyncEngine | Callable[[], AsyncSession],
        queue: QueueLike,
        retention: Retention,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batches: int | None = 100,
    ) -> None:
        # Imported here: sqlalchemy.ext.asyncio needs greenlet (see programma_sa.aio).
        from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

        super().__init__(queue, retention, batch_size=batch_size, max_batches=max_batches)
        self._sessions: Callable[[], AsyncSession] = (
            async_sessionmaker(sessions) if isinstance(sessions, AsyncEngine) else sessions
        )

    async def run_once(self) -> PruneResult:
        """:meth:`Pruner.run_once`, each batch in an ``AsyncSession`` transaction."""
        pass_ = _PrunePass(self)
        while pass_.more():
            async with self._sessions() as session, session.begin():
                deleted = await run_steps_async(_async_executor(session), pass_.batch())
            pass_.record(deleted)
        return pass_.result
