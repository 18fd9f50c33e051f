"""Queue statistics on the caller's session: what every topic's jobs are doing."""

from __future__ import annotations

from .._execute import execute, execute_async
from .._operations.maintenance import DEFAULT_WINDOW_SECONDS
from .._session_types import AsyncExecutor, Executor
from .._stats import QueueStats
from ._target import QueueLike, maintenance_operations

__all__ = ["stats", "stats_async"]


def stats(
    session: Executor,
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
    return execute(session, maintenance_operations(queue).stats(topic, window_seconds))


async def stats_async(
    session: AsyncExecutor,
    queue: QueueLike,
    topic: str | None = None,
    *,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
) -> QueueStats:
    """:func:`stats` on an ``AsyncSession``."""
    return await execute_async(session, maintenance_operations(queue).stats(topic, window_seconds))
