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

from collections.abc import Callable, Generator, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Executable, Result, Table

__all__ = [
    "STATS_COUNTS",
    "STATS_TIMES",
    "JobsShape",
    "Runnable",
    "Script",
    "StatementFamily",
    "StatementName",
    "Statements",
    "Step",
]

#: One statement of a :class:`Script` and its parameters.
Step = tuple[Executable, Mapping[str, Any]]


@dataclass(frozen=True)
class Script:
    """Several statements run one after the other in the caller's transaction, where
    a database cannot do the work in one (MariaDB has no ``UPDATE … RETURNING``).

    ``run`` is called with the operation's parameters and yields :data:`Step` objects;
    the execution layer executes each on the caller's session or connection (sync or
    async alike) and sends its ``Result`` back; what ``run`` returns is the result the
    operation's reader reads. Every statement is still SQLAlchemy Core, in its driver.
    """

    run: Callable[[Mapping[str, Any]], Generator[Step, Result[Any], Result[Any]]]


#: What runs as one named statement: one statement, or a :class:`Script` of several.
Runnable = Executable | Script


#: A statement whose shape depends on which optional criteria a call gives (a
#: listing's filters): called with the operation's ``variant`` — a hashable
#: description of that shape — it returns the statement for it (built once per
#: shape). Each criterion given becomes a predicate the planner sees as such, so
#: an index on it can serve the statement; a criterion not given is not in it.
StatementFamily = Callable[[Hashable], "Runnable"]


@dataclass(frozen=True)
class JobsShape:
    """Which criteria a listing or a re-run by filter gives: the ``variant`` of
    ``list_jobs``, ``count_jobs`` and ``rerun_jobs``.

    ``states`` are inlined as literals (so that the partial indexes, whose
    predicates name states, can serve the statement); every other criterion given
    is a bound parameter: ``p_topic``, ``p_created_after``, ``p_created_before``,
    ``p_finished_after``, ``p_finished_before``, ``p_error_type`` (the type in
    ``attributes.last_error``), ``p_attributes`` (a JSON object the job's
    attributes contain), ``p_cursor`` (list: only ids below it) and ``p_limit``.
    """

    states: tuple[str, ...] | None = None
    topic: bool = False
    created_after: bool = False
    created_before: bool = False
    finished_after: bool = False
    finished_before: bool = False
    error_type: bool = False
    attributes: bool = False
    cursor: bool = False


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
    "insert_unique_shared",
    "insert_unique_shared_notify",
    "insert_unique_keep_shared",
    "insert_unique_keep_shared_notify",
    "insert_unique_replace_shared",
    "insert_unique_replace_shared_notify",
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
    "renew_leases",
    "release_unstarted",
    "cancel_unchanged",
    "lease_states",
    "cancel_job",
    "rerun_job",
    "rerun_jobs",
    "list_jobs",
    "count_jobs",
    "pause_topic",
    "resume_topic",
    "paused_topics",
    "stats_all",
    "stats_topic",
    "throughput",
    "finished_topics",
    "prune_completed",
    "prune_failed",
    "cancelled_topics",
    "prune_cancelled",
    "try_prune_lock",
]


@dataclass(frozen=True)
class Statements:
    """Every statement of one jobs table on one database.

    The job's life: ``insert_*`` (one job, many jobs with one or several settings,
    each with or without a wake-up notification; unique jobs by conflict policy,
    with every setting in each row or the ``_shared`` ones sent once, and
    ``unique_key_holders``), ``claim``, the seed's per-id moves and setters,
    ``get_by_id``. The worker's guarded outcome writes (only a job still as its
    claim left it): ``complete_unchanged``, ``retry_unchanged``, ``fail_unchanged``,
    ``snooze_unchanged``, ``reclaim_rolled_back``; ``seconds_until_due`` for its idle
    wait and ``clock`` (the database's time) for its schedules. Control of jobs in
    flight: the worker's ``renew_leases``, ``release_unstarted``, ``cancel_unchanged``
    and ``lease_states``; the caller's ``cancel_job``, ``rerun_job``, ``rerun_jobs``
    ``list_jobs`` and ``count_jobs`` (each a :data:`StatementFamily`), ``pause_topic``,
    ``resume_topic`` and ``paused_topics``. Maintenance: ``stats_*``,
    ``finished_topics``, ``cancelled_topics``, ``prune_*`` and the prune lock.
    """

    table: Table
    insert_one: Runnable
    insert_one_notify: Runnable
    insert_many: Runnable
    insert_many_notify: Runnable
    insert_many_uniform: Runnable
    insert_many_uniform_notify: Runnable
    insert_unique: Runnable
    insert_unique_notify: Runnable
    insert_unique_keep: Runnable
    insert_unique_keep_notify: Runnable
    insert_unique_replace: Runnable
    insert_unique_replace_notify: Runnable
    insert_unique_shared: Runnable
    insert_unique_shared_notify: Runnable
    insert_unique_keep_shared: Runnable
    insert_unique_keep_shared_notify: Runnable
    insert_unique_replace_shared: Runnable
    insert_unique_replace_shared_notify: Runnable
    unique_key_holders: Runnable
    claim: Runnable
    move_to_processing: Runnable
    move_to_completed: Runnable
    move_to_failed: Runnable
    delete_by_id: Runnable
    set_attributes: Runnable
    set_retry_after_seconds: Runnable
    set_start_after: Runnable
    get_by_id: Runnable
    complete_unchanged: Runnable
    retry_unchanged: Runnable
    fail_unchanged: Runnable
    reclaim_rolled_back: Runnable
    seconds_until_due: Runnable
    snooze_unchanged: Runnable
    clock: Runnable
    renew_leases: Runnable
    release_unstarted: Runnable
    cancel_unchanged: Runnable
    lease_states: Runnable
    cancel_job: Runnable
    rerun_job: Runnable
    rerun_jobs: StatementFamily
    list_jobs: StatementFamily
    count_jobs: StatementFamily
    pause_topic: Runnable
    resume_topic: Runnable
    paused_topics: Runnable
    stats_all: Runnable
    stats_topic: Runnable
    #: Jobs finished (COMPLETED or FAILED) and FAILED in each of ``p_buckets``
    #: equal parts of the last ``p_window_seconds``: rows (bucket, finished, failed),
    #: bucket 0 the most recent; buckets with none are absent.
    throughput: Runnable
    finished_topics: Runnable
    prune_completed: Runnable
    prune_failed: Runnable
    cancelled_topics: Runnable
    prune_cancelled: Runnable
    try_prune_lock: Runnable


#: The counts each row of the stats statements has (beside ``measured_at`` and
#: ``topic``). Each branch of its UNION ALL fills the columns it measures and zero /
#: NULL elsewhere; the reader adds a topic's rows up.
STATS_COUNTS = (
    "created",
    "active",
    "processing",
    "finished",
    "failed",
    "cancelled",
    "due",
    "expired_leases",
    "finished_recently",
    "failed_recently",
    "cancelled_recently",
)
#: The times each row of the stats statements has.
STATS_TIMES = ("oldest_due_at", "oldest_processing_at")
