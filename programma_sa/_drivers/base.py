"""What every database driver provides: the same named statements, for one jobs table.

A driver is one implementation of :class:`Statements` — every SQL statement the
queue, the worker and the maintenance functions run, built once per jobs table as
SQLAlchemy Core. The layers above never hold a statement: an
:class:`~programma_sa._operations.Operation` names one (:data:`StatementName`) and
the execution layer (:mod:`programma_sa._execute`) takes it from the driver of the
database the caller's ``Session`` or ``Connection`` is bound to. A new database is a
new module beside :mod:`.postgresql` that builds the same :class:`Statements`;
nothing above this package changes.

Each statement's bound parameters are named ``p_*`` and mean the same in every
driver; what a statement returns is read by the operation's reader, so its columns
are part of this contract too (the stats statement's are :data:`STATS_COUNTS` and
:data:`STATS_TIMES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Executable, Table

__all__ = ["STATS_COUNTS", "STATS_TIMES", "StatementName", "Statements"]

#: The name of one statement of :class:`Statements` (a field other than ``table``).
StatementName = Literal[
    "insert_one",
    "insert_one_notify",
    "insert_many",
    "insert_many_notify",
    "insert_many_uniform",
    "insert_many_uniform_notify",
    "insert_unique",
    "insert_unique_notify",
    "insert_unique_keep",
    "insert_unique_keep_notify",
    "insert_unique_replace",
    "insert_unique_replace_notify",
    "unique_key_holders",
    "claim",
    "move_to_processing",
    "move_to_completed",
    "move_to_failed",
    "delete_by_id",
    "set_attributes",
    "set_retry_after_seconds",
    "set_start_after",
    "get_by_id",
    "complete_unchanged",
    "retry_unchanged",
    "fail_unchanged",
    "reclaim_rolled_back",
    "seconds_until_due",
    "snooze_unchanged",
    "clock",
    "stats_all",
    "stats_topic",
    "finished_topics",
    "prune_completed",
    "prune_failed",
    "try_prune_lock",
]


@dataclass(frozen=True)
class Statements:
    """Every statement of one jobs table on one database.

    The job's life: ``insert_*`` (one job, many jobs with one or several settings,
    each with or without a wake-up notification; unique jobs by conflict policy,
    and ``unique_key_holders``), ``claim``, the seed's per-id moves and setters,
    ``get_by_id``. The worker's guarded outcome writes (only a job still as its
    claim left it): ``complete_unchanged``, ``retry_unchanged``, ``fail_unchanged``,
    ``snooze_unchanged``, ``reclaim_rolled_back``; ``seconds_until_due`` for its
    idle wait and ``clock`` (the database's time) for its schedules. Maintenance:
    ``stats_*``, ``finished_topics``, ``prune_*`` and the prune lock.
    """

    table: Table
    insert_one: Executable
    insert_one_notify: Executable
    insert_many: Executable
    insert_many_notify: Executable
    insert_many_uniform: Executable
    insert_many_uniform_notify: Executable
    insert_unique: Executable
    insert_unique_notify: Executable
    insert_unique_keep: Executable
    insert_unique_keep_notify: Executable
    insert_unique_replace: Executable
    insert_unique_replace_notify: Executable
    unique_key_holders: Executable
    claim: Executable
    move_to_processing: Executable
    move_to_completed: Executable
    move_to_failed: Executable
    delete_by_id: Executable
    set_attributes: Executable
    set_retry_after_seconds: Executable
    set_start_after: Executable
    get_by_id: Executable
    complete_unchanged: Executable
    retry_unchanged: Executable
    fail_unchanged: Executable
    reclaim_rolled_back: Executable
    seconds_until_due: Executable
    snooze_unchanged: Executable
    clock: Executable
    stats_all: Executable
    stats_topic: Executable
    finished_topics: Executable
    prune_completed: Executable
    prune_failed: Executable
    try_prune_lock: Executable


#: The counts each row of the stats statements has (beside ``measured_at`` and
#: ``topic``). Each branch of its UNION ALL fills the columns it measures and zero /
#: NULL elsewhere; the reader adds a topic's rows up.
STATS_COUNTS = (
    "created",
    "active",
    "processing",
    "finished",
    "failed",
    "due",
    "expired_leases",
    "finished_recently",
    "failed_recently",
)
#: The times each row of the stats statements has.
STATS_TIMES = ("oldest_due_at", "oldest_processing_at")
