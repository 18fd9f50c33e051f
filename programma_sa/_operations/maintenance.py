"""Statistics and pruning as checked operations, shared by the sync and async APIs (no I/O).

Like :mod:`.jobs`, this module checks arguments (raising before anything is sent),
pairs each maintenance statement of the driver with its parameters and the function
that reads its result, and leaves executing them to :mod:`programma_sa._execute`. A
prune batch takes several statements (the topics first, then one bounded DELETE per
topic and state), so it is written once as a generator of operations —
:func:`prune_steps` — that a sync or an async driver runs by executing each
operation it yields and sending the result back.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Generator
from typing import Any

from sqlalchemy import Result, Table

from .. import _validation as check
from .._drivers import StatementName
from .._retention import Retention
from .._stats import QueueStats, Throughput, read_stats, read_throughput
from ..exceptions import InvalidJobInput
from ..models import JobState
from . import Operation

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_WINDOW_SECONDS",
    "MaintenanceOperations",
    "PruneSteps",
    "check_batch_size",
    "prune_steps",
]

logger = logging.getLogger("programma_sa.maintenance")

#: The default window of the "recently completed / failed" counts.
DEFAULT_WINDOW_SECONDS = 300.0
#: The default number of rows one prune batch deletes at most.
DEFAULT_BATCH_SIZE = 1000

#: A prune batch: yields operations, receives each one's result, returns the count.
PruneSteps = Generator[Operation[Any], Any, int]


def check_batch_size(value: object) -> int:
    """How many rows one prune batch may delete: an ``int`` >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobInput(f"batch_size must be an int, got {value!r}")
    if value < 1:
        raise InvalidJobInput(f"batch_size must be at least 1, got {value}")
    return value


def _window(value: object) -> float:
    seconds = check.optional_seconds(value, "window_seconds")
    if seconds is None:
        raise InvalidJobInput("window_seconds must be a number of seconds, got None")
    return seconds


def _prune_lock_key(table: Table) -> int:
    """A stable 64-bit advisory-lock key for pruning ``table`` (same in every process)."""
    name = f"programma_sa.prune:{table.fullname}".encode()
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)


def _deleted(result: Result[Any]) -> int:
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult


def _topics(result: Result[Any]) -> list[str]:
    return list(result.scalars())


def _taken(result: Result[Any]) -> bool:
    """Whether the prune lock was taken. No row: SQLite's lock statement on an empty
    table, which took the database's write lock all the same (programma_sa._drivers.sqlite)."""
    taken = result.scalar()
    return True if taken is None else bool(taken)


class MaintenanceOperations:
    """Builds the maintenance :class:`Operation` objects of one jobs table."""

    def __init__(self, table: Table) -> None:
        self.table = table
        #: The key of the advisory lock that keeps prunes of this table one at a time.
        self.prune_lock_key = _prune_lock_key(table)

    @classmethod
    @functools.cache
    def for_table(cls, table: Table) -> MaintenanceOperations:
        """The (cached) operations of ``table``."""
        return cls(table)

    def stats(self, topic: str | None, window_seconds: object) -> Operation[QueueStats]:
        window = _window(window_seconds)
        params: dict[str, Any] = {"p_window_seconds": window}
        statement: StatementName = "stats_all"
        if topic is not None:
            params["p_topic"] = check.check_topic(topic)
            statement = "stats_topic"

        def read(result: Result[Any]) -> QueueStats:
            return read_stats(result.mappings(), self.table.fullname, window, topic)

        return Operation(self.table, statement, params, read)

    def throughput(self, window_seconds: object, buckets: object) -> Operation[Throughput]:
        window = _window(window_seconds)
        if window <= 0:
            raise InvalidJobInput(f"window_seconds must be positive, got {window_seconds!r}")
        if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= 240:
            raise InvalidJobInput(f"buckets must be an int from 1 to 240, got {buckets!r}")
        params = {"p_window_seconds": window, "p_buckets": buckets}

        def read(result: Result[Any]) -> Throughput:
            return read_throughput(result.mappings(), window, buckets)

        return Operation(self.table, "throughput", params, read)

    def finished_topics(self, state: JobState = JobState.COMPLETED) -> Operation[list[str]]:
        """The topics that have jobs finished in ``state``: COMPLETED and FAILED ones
        come from one index (``finished_topics``), CANCELLED ones from their own."""
        statement: StatementName = (
            "cancelled_topics" if state is JobState.CANCELLED else "finished_topics"
        )
        return Operation(self.table, statement, {}, _topics)

    def prune_batch(
        self, topic: str, state: JobState, ttl_seconds: float, limit: int
    ) -> Operation[int]:
        statement = _PRUNE_STATEMENTS[state]
        params = {"p_topic": topic, "p_ttl_seconds": ttl_seconds, "p_limit": limit}
        return Operation(self.table, statement, params, _deleted)

    def try_prune_lock(self) -> Operation[bool]:
        return Operation(self.table, "try_prune_lock", {"p_key": self.prune_lock_key}, _taken)


_PRUNE_STATEMENTS: dict[JobState, StatementName] = {
    JobState.COMPLETED: "prune_completed",
    JobState.FAILED: "prune_failed",
    JobState.CANCELLED: "prune_cancelled",
}


def prune_steps(
    operations: MaintenanceOperations, retention: Retention, batch_size: object
) -> PruneSteps:
    """One prune batch: delete at most ``batch_size`` expired finished jobs.

    Topics are visited in order, COMPLETED then FAILED, each oldest first, then
    (with a TTL for them) the topics of CANCELLED jobs, until the batch is full. A
    batch that deletes fewer than ``batch_size`` rows has found nothing more to
    delete (rows other transactions hold locked excepted).
    """
    limit = check_batch_size(batch_size)
    if not isinstance(retention, Retention):
        raise InvalidJobInput(f"retention must be a Retention, got {type(retention).__name__}")
    if not retention.prunes_anything:
        return 0
    deleted = 0
    # COMPLETED and FAILED topics come from one index, CANCELLED ones from their own:
    # one pass over the topics of each, the states of the pass in order.
    for states in ((JobState.COMPLETED, JobState.FAILED), (JobState.CANCELLED,)):
        if not retention.prunes(states):
            continue
        topics: list[str] = yield operations.finished_topics(states[0])
        for topic in topics:
            ttl = retention.ttl(topic)
            for state in states:
                seconds = ttl.seconds(state)
                if seconds is None:
                    continue
                count: int = yield operations.prune_batch(topic, state, seconds, limit - deleted)
                if count:
                    logger.info(
                        "pruned %d %s jobs of topic %r finished more than %gs ago from %s",
                        count,
                        state.value,
                        topic,
                        seconds,
                        operations.table.fullname,
                    )
                deleted += count
                if deleted >= limit:
                    return deleted
    return deleted
