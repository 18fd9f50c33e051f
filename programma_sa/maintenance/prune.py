"""Retention: delete finished jobs past their TTL, in bounded batches, one pruner at a time."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .._execute import (
    InTransaction,
    run_in_transactions,
    run_in_transactions_async,
    run_steps,
    run_steps_async,
)
from .._operations import Operation
from .._operations.maintenance import (
    DEFAULT_BATCH_SIZE,
    MaintenanceOperations,
    check_batch_size,
    prune_steps,
)
from .._retention import Retention
from .._session_types import AsyncExecutor, Executor
from ..exceptions import InvalidJobInput
from ._target import QueueLike, maintenance_operations

if TYPE_CHECKING:
    # Only for annotations: sqlalchemy.ext.asyncio needs greenlet (see async_queue).
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

__all__ = [
    "DEFAULT_MAX_BATCHES",
    "AsyncPruner",
    "PruneResult",
    "Pruner",
    "prune",
    "prune_async",
    "prune_pass",
]

logger = logging.getLogger("programma_sa.maintenance")

#: The default number of batches one prune pass runs at most (the next pass continues).
DEFAULT_MAX_BATCHES = 100


def prune(
    session: Executor,
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
    return run_steps(session, prune_steps(maintenance_operations(queue), retention, batch_size))


async def prune_async(
    session: AsyncExecutor,
    queue: QueueLike,
    retention: Retention,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> int:
    """:func:`prune` on an ``AsyncSession``."""
    steps = prune_steps(maintenance_operations(queue), retention, batch_size)
    return await run_steps_async(session, steps)


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


def _locked_batch(
    operations: MaintenanceOperations, retention: Retention, batch_size: int, done: int
) -> Generator[Operation[Any], Any, int | None]:
    """One batch: take the prune lock, then delete; ``None`` when another process holds it."""
    locked: bool = yield operations.try_prune_lock()
    if not locked:
        logger.debug(
            "another process is pruning %s; this pass stops after %d batches",
            operations.table.fullname,
            done,
        )
        return None
    return (yield from prune_steps(operations, retention, batch_size))


def prune_pass(
    operations: MaintenanceOperations,
    retention: Retention,
    batch_size: int,
    max_batches: int | None,
) -> Generator[InTransaction[int | None], int | None, PruneResult]:
    """A whole prune pass, each batch a transaction of its own (no I/O: it yields them).

    The pass ends when a batch deletes fewer than ``batch_size`` rows, after
    ``max_batches`` batches, or when another process holds the prune lock.
    """
    deleted = batches = 0
    if not retention.prunes_anything:
        return PruneResult(0, 0, skipped_because_locked=False)
    while max_batches is None or batches < max_batches:
        count = yield InTransaction(_locked_batch(operations, retention, batch_size, batches))
        if count is None:
            return PruneResult(deleted, batches, skipped_because_locked=True)
        batches += 1
        deleted += count
        if count < batch_size:
            break
    return PruneResult(deleted, batches, skipped_because_locked=False)


def check_max_batches(value: object) -> int | None:
    """How many batches a prune pass may run: ``None`` (no limit) or an ``int`` >= 1."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidJobInput(f"max_batches must be None or an int >= 1, got {value!r}")
    return value


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
        self.max_batches = check_max_batches(max_batches)
        self._operations = maintenance_operations(queue)
        self.retention = retention
        self.batch_size = check_batch_size(batch_size)

    @property
    def lock_key(self) -> int:
        """The advisory-lock key every pruner of this table takes (``pg_locks.objid`` …)."""
        return self._operations.prune_lock_key

    def _pass(self) -> Generator[InTransaction[int | None], int | None, PruneResult]:
        return prune_pass(self._operations, self.retention, self.batch_size, self.max_batches)


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
        max_batches: int | None = DEFAULT_MAX_BATCHES,
    ) -> None:
        super().__init__(queue, retention, batch_size=batch_size, max_batches=max_batches)
        self._sessions = sessionmaker(sessions) if isinstance(sessions, Engine) else sessions

    def run_once(self) -> PruneResult:
        """Prune until nothing expired is left, ``max_batches`` ran, or another pruner runs."""
        return run_in_transactions(self._sessions, self._pass())


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
        max_batches: int | None = DEFAULT_MAX_BATCHES,
    ) -> None:
        # Imported here: sqlalchemy.ext.asyncio needs greenlet (see async_queue).
        from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

        super().__init__(queue, retention, batch_size=batch_size, max_batches=max_batches)
        self._sessions: Callable[[], AsyncSession] = (
            async_sessionmaker(sessions) if isinstance(sessions, AsyncEngine) else sessions
        )

    async def run_once(self) -> PruneResult:
        """:meth:`Pruner.run_once`, each batch in an ``AsyncSession`` transaction."""
        return await run_in_transactions_async(self._sessions, self._pass())
