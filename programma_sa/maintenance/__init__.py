"""Maintenance: queue statistics, and retention of finished jobs (a TTL per topic).

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
cost of each call, are in ``docs/maintenance.md``.

The modules: :mod:`.stats`, :mod:`.prune` (with :class:`Pruner`), :mod:`.formats`
(the stats as a table, JSON or Prometheus text) and :mod:`.metric_families` (the
Prometheus metrics themselves).
"""

from __future__ import annotations

from .._operations.maintenance import DEFAULT_BATCH_SIZE, DEFAULT_WINDOW_SECONDS
from .._retention import TTL, Retention
from .._stats import QueueStats, TopicStats
from ._target import QueueLike
from .formats import render_stats
from .prune import AsyncPruner, Pruner, PruneResult, prune, prune_async
from .stats import stats, stats_async

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_WINDOW_SECONDS",
    "TTL",
    "AsyncPruner",
    "PruneResult",
    "Pruner",
    "QueueLike",
    "QueueStats",
    "Retention",
    "TopicStats",
    "prune",
    "prune_async",
    "render_stats",
    "stats",
    "stats_async",
]
