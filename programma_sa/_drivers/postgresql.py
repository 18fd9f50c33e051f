"""The PostgreSQL driver: every SQL statement of the queue, as SQLAlchemy Core.

:func:`build_statements` builds the :class:`~.base.Statements` of one jobs table
(the package caches them per table). The sync and asyncio faces, the workers and
the maintenance functions execute these very objects with bound parameters, so each
statement is compiled once and then served from SQLAlchemy's compiled cache.

Rules kept here:

* Every time is PostgreSQL's clock — ``statement_timestamp()``, the start of the
  current statement — never the host's. (``now()`` would be the *transaction's*
  start, which in the transactional mode may be long past when the claim runs.)
* Job states in predicates are inlined as SQL literals, never bound parameters: the
  claim's partial index is defined on ``state IN ('created', 'active')`` and the
  planner can only match it when it sees those literals, including in the generic
  plans psycopg's automatic prepared statements get.
* Values are always bound parameters, named ``p_*`` (SQLAlchemy reserves column
  names for the VALUES/SET clauses); identifiers come from the validated model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any

from sqlalchemy import (
    CTE,
    BigInteger,
    Boolean,
    ColumnElement,
    DateTime,
    Delete,
    Executable,
    Float,
    FromClause,
    Integer,
    Interval,
    ScalarSelect,
    Select,
    Table,
    Text,
    Update,
    and_,
    any_,
    bindparam,
    case,
    cast,
    column,
    delete,
    exists,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql.dml import Insert

from ..models import (
    CLAIMABLE_STATES,
    FINISHED_STATES,
    RERUNNABLE_STATES,
    TERMINAL_STATES,
    UNIQUE_PREDICATE,
    JobState,
    paused_topics_table,
)
from .base import JobsShape, Statements
from .shapes import ShapeTerms, rerun_values, shape_filters, states_filter
from .stats import StatsClock, stats_statement

__all__ = ["build_statements", "control_channel", "finished_channel", "notify_channel"]

_TIMESTAMPTZ = DateTime(timezone=True)
#: ``LIMIT 1`` written as such: a parameter (what ``.limit(1)`` sends) makes a
#: prepared statement's generic plan guess a tenth of the rows instead.
_ONE = literal_column("1", Integer())


def _empty_as_null(attributes: ColumnElement[Any]) -> ColumnElement[Any]:
    """``attributes`` with ``{}`` sent back as NULL (read as ``{}``: JobDetail.from_row).

    Most jobs carry no attributes, and decoding ``{}`` costs the driver a whole JSON
    parse per claimed job: about a tenth of a lease-mode drain's client CPU.
    """
    # type_: the column's own, so drivers that hand back JSON text (asyncpg) still
    # have it decoded by SQLAlchemy.
    empty: ColumnElement[Any] = literal_column("'{}'::jsonb")
    return func.nullif(attributes, empty, type_=attributes.type).label(attributes.key)


_ONE_SECOND = literal_column("INTERVAL '1 second'", Interval())


def _db_now() -> ColumnElement[Any]:
    return func.statement_timestamp(type_=_TIMESTAMPTZ)


def _state(state: JobState) -> ColumnElement[str]:
    # Inlined literal, see the module docstring (partial index matching).
    return literal_column(f"'{state.value}'", Text())


def _after_seconds(seconds: ColumnElement[Any]) -> ColumnElement[Any]:
    """``statement_timestamp() + seconds`` (NULL when ``seconds`` is NULL)."""
    return _db_now() + _interval_seconds(seconds)


def _interval_seconds(seconds: ColumnElement[Any]) -> ColumnElement[Any]:
    """``INTERVAL '1 second' * seconds``."""
    return _ONE_SECOND.op("*", return_type=Interval())(seconds)


def _element(
    document: ColumnElement[Any], index: int, *, as_text: bool = False
) -> ColumnElement[Any]:
    """``document -> index`` (a jsonb value), or ``document ->> index`` (as text)."""
    operator, result_type = ("->>", Text()) if as_text else ("->", JSONB())
    return document.op(operator, return_type=result_type)(literal_column(str(index), Integer()))


def _merged_attributes(table: Table) -> ColumnElement[Any]:
    """The job's attributes with the JSON object ``p_attributes`` merged in (top level)."""
    return func.coalesce(table.c.attributes, cast("{}", JSONB)).op("||")(
        cast(bindparam("p_attributes", type_=Text()), JSONB)
    )


def _unchanged_since_claim(
    table: Table, attempts: ColumnElement[Any], start_after: ColumnElement[Any]
) -> ColumnElement[bool]:
    """The job is still exactly as the claim that returned it left it.

    A worker writes a job's outcome only under this guard, so it never overrides
    what the handler did (moved, rescheduled or deleted the job), and never touches
    a job whose lease ran out and that another worker has claimed since (its
    ``attempts`` moved on).
    """
    t = table.c
    return and_(
        t.state == _state(JobState.ACTIVE),
        t.attempts == attempts,
        t.start_after.is_not_distinct_from(start_after),
    )


def _not_paused(table: Table) -> ColumnElement[bool]:
    """``p_topic`` is not paused: one primary-key probe of ``<table>_paused``, made
    once per statement (it does not depend on the row)."""
    paused = paused_topics_table(table)
    return ~exists().where(paused.c.topic == bindparam("p_topic", type_=Text()))


def _announced(changed: CTE, channel: str) -> ScalarSelect[Any]:
    """A scalar that, evaluated once, announces each distinct topic of the rows
    ``changed`` returned on ``channel``. The notification goes out when the writing
    transaction commits (and is dropped if it rolls back)."""
    topics = select(changed.c.topic).distinct().subquery("announced_topics")
    return (
        select(func.count(func.pg_notify(channel, topics.c.topic)))
        .select_from(topics)
        .scalar_subquery()
    )


def _returning_announced(changed: CTE, channel: str) -> Select[tuple[Any]]:
    """The ids of the rows ``changed`` returned, their topics announced on ``channel``.

    The announcement is in the WHERE clause so that PostgreSQL evaluates it (an
    unreferenced CTE that only SELECTs would never run); it is always true.
    """
    return select(changed.c.id).where(_announced(changed, channel) >= 0)


def _claimed(table: Table) -> dict[str, ColumnElement[Any]]:
    """What a claim sets on each job it takes (the SET clause of the claim)."""
    t = table.c
    return {
        "state": _state(JobState.ACTIVE),
        "started_at": _db_now(),
        "attempts": t.attempts + 1,
        # The visibility timeout: the job is claimable again after
        # retry_after_seconds unless it is moved out of ACTIVE first.
        # NULL retry_after_seconds gives NULL: never redelivered.
        "start_after": _after_seconds(t.retry_after_seconds),
    }


def notify_channel(table: Table) -> str:
    """The LISTEN/NOTIFY channel on which enqueues into ``table`` are announced.

    The payload of each notification is the job's topic.
    """
    return f"programma:{table.fullname}"[:63]


def control_channel(table: Table) -> str:
    """The channel on which a job's cancellation is announced to the workers.

    The payload is ``cancel:<job id>``. A channel of its own, not the enqueue
    channel: a topic may be any text, so no payload there could be told apart from
    one. Workers LISTEN on both, on the same connection.
    """
    return f"programma-control:{table.fullname}"[:63]


def finished_channel(table: Table) -> str:
    """The channel on which the worker announces jobs that finished (completed,
    failed, cancelled); the payload is the topic. Callers waiting for a job listen
    here (:meth:`~programma_sa.JobQueue.wait_for_job`); workers do not."""
    return f"programma-finished:{table.fullname}"[:63]


def build_statements(table: Table) -> Statements:
    """Every statement of ``table`` on PostgreSQL."""
    return Statements(
        table=table,
        **_job_statements(table),
        **_control_statements(table),
        **_maintenance_statements(table),
    )


def _job_statements(table: Table) -> dict[str, Any]:
    """The statements of a job's life: enqueue, claim, the seed's moves and setters."""
    t = table.c
    one_job: dict[str, ColumnElement[Any]] = {
        "id": bindparam("p_id", type_=UUID(as_uuid=True)),
        "topic": bindparam("p_topic", type_=Text()),
        "data": cast(bindparam("p_data", type_=Text()), JSONB),
        "attributes": cast(bindparam("p_attributes", type_=Text()), JSONB),
        # run_after_date wins over run_after_seconds (the seed's precedence).
        "start_after": func.coalesce(
            bindparam("p_run_after_date", type_=_TIMESTAMPTZ),
            _after_seconds(bindparam("p_run_after_seconds", type_=Float())),
        ),
        "retry_after_seconds": bindparam("p_retry_after_seconds", type_=Integer()),
        "priority": bindparam("p_priority", type_=Integer()),
    }
    insert_one = insert(table).values(**one_job)
    # The same row selected FROM the one row of (SELECT pg_notify(...)): still an
    # INSERT, so no result row comes back to read, and the notification is
    # queued in the same statement (see _with_notify for why that is safe).
    # Measured: 0.04 ms of client CPU less per enqueue than the CTE form.
    notified = select(
        func.pg_notify(notify_channel(table), bindparam("p_topic", type_=Text())).label("notified")
    ).subquery("notification")
    insert_one_notify = insert(table).from_select(
        list(one_job), select(*one_job.values()).select_from(notified)
    )

    # Bulk enqueue: one INSERT … SELECT FROM jsonb_array_elements(document), one
    # round trip and one statement however many jobs. The jobs come as ONE JSON
    # text, a row per job: ["<id>", <data>] when every job has the same settings
    # (sent once, as scalars: insert_many_uniform), else ["<id>", <data>,
    # <attributes>, <run_after_date>, <run_after_seconds>, <retry_after_seconds>,
    # <priority>] (insert_many; unique jobs add <unique_key>, <unique_states>).
    # Each job's data is JSON text already, so the document is joined, not
    # escaped: psycopg dumps a text[] parameter element by element in Python,
    # escaping every quote of every payload with a regex, which cost more than the
    # INSERT itself. The document is an argument of the function in
    # FROM, so PostgreSQL parses it once per statement.
    job = (
        func.jsonb_array_elements(cast(bindparam("p_jobs", type_=Text()), JSONB))
        .table_valued(column("value", JSONB()))
        .render_derived(name="job")
    )
    row = job.c.value
    columns = [
        "id",
        "topic",
        "data",
        "attributes",
        "start_after",
        "retry_after_seconds",
        "priority",
    ]
    insert_many_uniform = insert(table).from_select(
        columns,
        select(
            cast(_element(row, 0, as_text=True), UUID(as_uuid=True)),
            bindparam("p_topic", type_=Text()),
            _element(row, 1),
            *_shared_settings(),
            bindparam("p_priority", type_=Integer()),
        ),
    )
    each_row = _bulk_row_columns(row)
    insert_many = insert(table).from_select(columns, select(*each_row).select_from(job))

    # The claim: pick due jobs, higher priority first, FIFO within a priority, and
    # lease them, in one round trip. The priority levels the topic's claimable jobs
    # have are walked from the highest down (_priority_levels: one descent of the
    # claim index per level), and each level's due jobs are read in (start_after,
    # id) order from the index position (topic, priority) — so a claim reads about
    # as many index entries as it takes, plus a descent per level it passes, and
    # never steps over the not-yet-due jobs (scheduled, or leased: ACTIVE with a
    # start_after in the future) of a higher level one by one. The outer LIMIT
    # stops the nested loop as soon as the batch is full: levels below are not
    # read, and no row is locked beyond the batch (each level's LockRows locks the
    # rows it hands out, and only as many are pulled as the batch needs).
    # FOR UPDATE SKIP LOCKED: concurrent claimers skip rows another transaction
    # has locked instead of waiting, so no two claims take the same job while a
    # claim's transaction is open. Under READ COMMITTED a row updated by a claim
    # that committed meanwhile is re-checked against the WHERE clause (its new
    # state/start_after) before it is locked, so a freshly leased job is not
    # taken again.
    topic = bindparam("p_topic", type_=Text())
    # The batch size is written into the statement's text (a checked int, rendered
    # by SQLAlchemy at execution), not sent as a parameter: a prepared claim (psycopg
    # 3 prepares a statement run five times; asyncpg prepares every one) then gets a
    # generic plan as good as a custom one and PostgreSQL stops planning it on every
    # claim. With LIMIT $n the generic plan guesses a tenth of the table for the
    # batch — a hash join over a sequential scan — so every claim was planned anew,
    # which cost more than running it. One prepared statement per batch size in use.
    max_jobs = bindparam("p_max_jobs", type_=Integer(), literal_execute=True)
    levels = _priority_levels(table, topic, "levels")
    due = (
        select(t.id, t.start_after)
        .where(
            t.topic == topic,
            _claimable(table),
            t.priority == levels.c.priority,
            t.start_after <= _db_now(),
        )
        .order_by(t.start_after, t.id)
        .limit(max_jobs)
        .with_for_update(skip_locked=True)
        .lateral("due")
    )
    # No ORDER BY here: the rows come level by level, highest first, each level in
    # (start_after, id) order — the claim order — and sorting would read every
    # level's batch (and lock it) before the LIMIT. A paused topic (issue #15): one
    # primary-key probe of <table>_paused, uncorrelated, so PostgreSQL runs it once
    # as a one-time filter before any level is read — nothing is scanned or locked.
    picked = (
        select(due.c.id, due.c.start_after)
        .select_from(levels)
        .join(due, true())
        .where(levels.c.priority.is_not(None), _not_paused(table))
        .limit(max_jobs)
        .cte("picked")
    )
    claim = (
        update(table)
        .where(t.id == picked.c.id)
        .values(**_claimed(table))
        .returning(
            *[_empty_as_null(column) if column is t.attributes else column for column in table.c],
            picked.c.start_after.label("due_at"),
        )
    )

    by_id = t.id == bindparam("p_job_id", type_=UUID(as_uuid=True))

    def move_to(state: JobState) -> Update:
        finished_at = _db_now() if state in (JobState.COMPLETED, JobState.FAILED) else None
        return update(table).where(by_id).values(state=_state(state), finished_at=finished_at)

    retry = bindparam("p_retry_after_seconds", type_=Integer())
    return {
        "insert_one": insert_one,
        "insert_one_notify": insert_one_notify,
        "insert_many": insert_many,
        "insert_many_notify": _with_notify(insert_many, table),
        "insert_many_uniform": insert_many_uniform,
        "insert_many_uniform_notify": _with_notify(insert_many_uniform, table),
        **_unique_statements(table, columns, _unique_row_columns(each_row, row), job, ""),
        **_unique_statements(table, columns, _shared_unique_row_columns(row), job, "_shared"),
        "unique_key_holders": _unique_key_holders(table),
        "claim": claim,
        "move_to_processing": move_to(JobState.PROCESSING),
        "move_to_completed": move_to(JobState.COMPLETED),
        "move_to_failed": move_to(JobState.FAILED),
        "delete_by_id": delete(table).where(by_id),
        "set_attributes": update(table).where(by_id).values(attributes=_merged_attributes(table)),
        # A leased (ACTIVE) job's lease is re-measured from its claim with the
        # new timeout, so a handler can lengthen or shorten its own backoff.
        "set_retry_after_seconds": update(table)
        .where(by_id)
        .values(
            retry_after_seconds=retry,
            start_after=case(
                (
                    t.state == _state(JobState.ACTIVE),
                    t.started_at + _interval_seconds(retry),
                ),
                else_=t.start_after,
            ),
        ),
        "set_start_after": update(table)
        .where(by_id)
        .values(start_after=bindparam("p_start_after", type_=_TIMESTAMPTZ)),
        "get_by_id": select(*table.c).where(by_id),
        **_worker_statements(table, by_id),
    }


def _worker_statements(table: Table, by_id: ColumnElement[bool]) -> dict[str, Any]:
    """The worker's outcome writes (each guarded by :func:`_unchanged_since_claim`),
    the redo of a claim that rolled back, and its idle-time look-ahead."""
    t = table.c
    # The jobs of one claim batch a handler returned for, completed in ONE statement
    # (UPDATE … FROM jsonb_to_recordset(…)): one round trip per batch. The batch
    # comes as one JSON text (id, attempts, start_after per job) rather than three
    # arrays: psycopg dumps an array parameter element by element in Python (a regex
    # per element), which cost more than the rest of the completion together.
    batch = (
        func.jsonb_to_recordset(cast(bindparam("p_claimed", type_=Text()), JSONB))
        .table_valued(
            column("id", UUID(as_uuid=True)),
            column("attempts", Integer()),
            column("start_after", _TIMESTAMPTZ),
            column("result", JSONB()),
        )
        .render_derived(name="batch", with_types=True)
    )
    claimed = select(batch.c.id, batch.c.attempts, batch.c.start_after, batch.c.result).cte(
        "claimed"
    )
    # The rows are found by primary key: ``id = ANY(ARRAY(SELECT id FROM claimed))``.
    # Joined to the batch alone, the planner may read the whole table instead: the
    # statistics rarely see an ACTIVE row, so it takes the table side for one row
    # and scans it (seen: 20 ms per completion on 20,000 rows, 1 ms by key).
    claimed_ids = func.array(
        select(claimed.c.id).scalar_subquery(), type_=ARRAY(UUID(as_uuid=True))
    )
    # Each job's result (the handler's return value, JSON null when none) is stored
    # with its completion; the topics completed are announced to waiting callers.
    completed = (
        update(table)
        .where(
            t.id == any_(claimed_ids),
            t.id == claimed.c.id,
            _unchanged_since_claim(table, claimed.c.attempts, claimed.c.start_after),
        )
        .values(
            state=_state(JobState.COMPLETED),
            finished_at=_db_now(),
            result=func.nullif(claimed.c.result, literal_column("'null'::jsonb")),
        )
        .returning(t.id, t.topic)
        .cte("completed")
    )
    complete_unchanged = _returning_announced(completed, finished_channel(table))
    one_unchanged = and_(
        by_id,
        _unchanged_since_claim(
            table,
            bindparam("p_attempts", type_=Integer()),
            bindparam("p_start_after", type_=_TIMESTAMPTZ),
        ),
    )
    # A failed attempt: the error goes into attributes; the job stays ACTIVE and is
    # claimable again after p_delay seconds (NULL: its lease stands as the claim set it).
    retry_unchanged = (
        update(table)
        .where(one_unchanged)
        .values(
            attributes=_merged_attributes(table),
            start_after=func.coalesce(
                _after_seconds(bindparam("p_delay", type_=Float())), t.start_after
            ),
        )
    )
    fail_unchanged = _returning_announced(
        update(table)
        .where(one_unchanged)
        .values(
            attributes=_merged_attributes(table),
            state=_state(JobState.FAILED),
            finished_at=_db_now(),
        )
        .returning(t.id, t.topic)
        .cte("failed"),
        finished_channel(table),
    )
    # A held job whose cancellation reached its worker (the caller's cancel found
    # it locked, by a transaction-mode pass or a claim committing at that moment):
    # the worker ends it CANCELLED itself.
    cancel_unchanged = _returning_announced(
        update(table)
        .where(one_unchanged)
        .values(state=_state(JobState.CANCELLED), finished_at=_db_now())
        .returning(t.id, t.topic)
        .cte("cancelled"),
        finished_channel(table),
    )
    # A claim whose transaction rolled back (a transaction-mode pass whose COMMIT the
    # server refused), done again on one job in a transaction of the worker's own, so
    # that its failed attempt is counted: only if the row is still exactly as it was
    # before that claim — claimable, the attempts and start_after the claim saw
    # (p_start_after: the claim's due_at). Another worker's claim since moved
    # attempts on, so its job is not touched. SKIP LOCKED: a row another
    # transaction holds (another worker's transaction-mode pass has claimed it, its
    # handler running) is skipped rather than waited for — whatever that
    # transaction does, the row is no longer as it was. The row is then locked
    # until the recording transaction ends, so the verdict written next in it
    # (retry_unchanged / fail_unchanged) meets the row this statement returned.
    rolled_back = (
        select(t.id)
        .where(
            by_id,
            _claimable(table),
            t.attempts == bindparam("p_attempts", type_=Integer()),
            t.start_after == bindparam("p_start_after", type_=_TIMESTAMPTZ),
        )
        .with_for_update(skip_locked=True)
        .cte("rolled_back")
    )
    reclaim_rolled_back = (
        update(table)
        # by_id here too: the row is found by primary key, never by a join alone.
        .where(by_id, t.id == rolled_back.c.id)
        .values(**_claimed(table))
        .returning(*table.c)
    )
    # Seconds until the topic's next claimable job is due (negative: due now but
    # locked by another claim; NULL: none): the soonest start_after of each priority
    # level, each read from the first claim-index entry at (topic, priority).
    # A paused topic has nothing due (NULL), so an idle worker does not poll it.
    topic = bindparam("p_topic", type_=Text())
    levels = _priority_levels(table, topic, "levels")
    soonest = (
        select(func.min(t.start_after))
        .where(t.topic == topic, _claimable(table), t.priority == levels.c.priority)
        .scalar_subquery()
    )
    per_level = (
        select(soonest.label("soonest")).where(levels.c.priority.is_not(None)).subquery("per_level")
    )
    seconds_until_due = (
        select(func.extract("epoch", func.min(per_level.c.soonest) - _db_now()))
        .select_from(per_level)
        .where(_not_paused(table))
    )
    # Snooze: the job is due again after p_delay seconds and its attempt is given
    # back (the claim counted one): a snoozed job has not failed.
    snooze_unchanged = (
        update(table)
        .where(one_unchanged)
        .values(
            start_after=_after_seconds(bindparam("p_delay", type_=Float())), attempts=t.attempts - 1
        )
    )
    return {
        "complete_unchanged": complete_unchanged,
        "retry_unchanged": retry_unchanged,
        "fail_unchanged": fail_unchanged,
        "cancel_unchanged": cancel_unchanged,
        "reclaim_rolled_back": reclaim_rolled_back,
        "seconds_until_due": seconds_until_due,
        "snooze_unchanged": snooze_unchanged,
        "clock": select(_db_now()),
        **_lease_statements(table),
    }


def _held_batch(table: Table) -> CTE:
    """The jobs a worker holds, as ONE JSON text ``p_held`` (id, attempts and the
    start_after it knows for each), like the completion's batch."""
    held = (
        func.jsonb_to_recordset(cast(bindparam("p_held", type_=Text()), JSONB))
        .table_valued(
            column("id", UUID(as_uuid=True)),
            column("attempts", Integer()),
            column("start_after", _TIMESTAMPTZ),
        )
        .render_derived(name="held_rows", with_types=True)
    )
    return select(held.c.id, held.c.attempts, held.c.start_after).cte("held")


def _held_update(table: Table, values: dict[str, Any]) -> Update:
    """UPDATE each job of ``p_held`` still exactly as the worker holds it, by key."""
    t = table.c
    held = _held_batch(table)
    # By primary key (id = ANY(ARRAY(...))), as the completion: see there.
    held_ids = func.array(select(held.c.id).scalar_subquery(), type_=ARRAY(UUID(as_uuid=True)))
    return (
        update(table)
        .where(
            t.id == any_(held_ids),
            t.id == held.c.id,
            _unchanged_since_claim(table, held.c.attempts, held.c.start_after),
        )
        .values(**values)
    )


def _lease_statements(table: Table) -> dict[str, Any]:
    """The worker's lease bookkeeping in lease mode: renewal, release, and reading
    back the jobs a guarded write did not match."""
    t = table.c
    # Renewal: the lease of each job the worker holds (waiting for a handler or
    # running one) starts again from now, for the job's own visibility timeout —
    # only while the job is exactly as the worker holds it, so a handler's own
    # reschedule or move, a cancellation, or another worker's claim (after a lease
    # that ran out) is never overwritten. Returns each renewed job's new lease end.
    renew_leases = _held_update(
        table, {"start_after": _after_seconds(t.retry_after_seconds)}
    ).returning(t.id, t.start_after)
    # Release: jobs claimed but never started (the worker is stopping) are made
    # claimable at once, their delivery uncounted: attempts back by one, and a job
    # claimed for the first time back to CREATED.
    release_unstarted = _held_update(
        table,
        {
            "start_after": _db_now(),
            "attempts": t.attempts - 1,
            "state": case(
                (t.attempts == 1, _state(JobState.CREATED)), else_=_state(JobState.ACTIVE)
            ),
        },
    ).returning(t.id)
    # What became of jobs a guarded write did not match (rare: read only then).
    lease_states = select(t.id, t.state, t.attempts, t.start_after).where(
        t.id == any_(bindparam("p_ids", type_=ARRAY(UUID(as_uuid=True))))
    )
    return {
        "renew_leases": renew_leases,
        "release_unstarted": release_unstarted,
        "lease_states": lease_states,
    }


# -- control of jobs in flight: cancel, re-run, list, pause -----------------------------


def _live(source: FromClause) -> ColumnElement[bool]:
    """Not finished: CREATED, ACTIVE or PROCESSING (as literals)."""
    return source.c.state.in_(
        [_state(state) for state in JobState if state.value not in TERMINAL_STATES]
    )


def _last_error_type(table: Table) -> ColumnElement[Any]:
    """``attributes->'last_error'->>'type'``."""
    return table.c.attributes.op("->", return_type=JSONB())(literal_column("'last_error'")).op(
        "->>", return_type=Text()
    )(literal_column("'type'"))


#: The criteria's terms on PostgreSQL (programma_sa._drivers.shapes).
_SHAPE_TERMS = ShapeTerms(
    state=lambda state: _state(state),
    time=_TIMESTAMPTZ,
    error_type=_last_error_type,
    contains=lambda table, wanted: table.c.attributes.op("@>", return_type=Boolean())(
        cast(wanted, JSONB)
    ),
)


def _states(source: FromClause, states: tuple[str, ...]) -> ColumnElement[bool]:
    return states_filter(source, states, _SHAPE_TERMS)


def _shape_filters(table: Table, shape: JobsShape) -> list[ColumnElement[bool]]:
    return shape_filters(table, shape, _SHAPE_TERMS)


#: The states of each partial index a topic's listing reads: the claim index, the
#: processing index, ``ix_<table>_history``.
_STATE_GROUPS = (
    CLAIMABLE_STATES,
    (JobState.PROCESSING.value,),
    TERMINAL_STATES,
)


def _list_jobs(table: Table) -> Any:
    """The listing family: jobs newest first (ids are UUIDv7: creation order),
    keyset-paginated by id (``id < p_cursor``), ``p_limit`` rows.

    Each shape is its own statement, so the planner sees exactly the criteria given.
    Without a topic a page is read backwards along the primary key. A topic's page
    is one branch per partial index its states fall in — finished jobs from
    ``ix_<table>_history`` (read backwards, in id order), live ones from the
    claim and processing indexes (which hold just those) — merged in id order; so a
    page never reads the topic's finished rows one by one
    (tests/maintenance/test_plans.py checks it with a million finished rows).
    """
    t = table.c

    @functools.lru_cache(maxsize=256)
    def build(shape: Hashable) -> Executable:
        assert isinstance(shape, JobsShape)
        filters = _shape_filters(table, replace(shape, states=None))
        if shape.cursor:
            filters.append(t.id < bindparam("p_cursor", type_=UUID(as_uuid=True)))
        limit = bindparam("p_limit", type_=Integer())

        def page(states: tuple[str, ...] | None) -> Select[Any]:
            where = filters if states is None else [_states(table, states), *filters]
            return select(*table.c).where(*where).order_by(t.id.desc()).limit(limit)

        if not shape.topic:
            return page(shape.states)
        wanted = shape.states or tuple(state.value for state in JobState)
        groups = [
            states
            for group in _STATE_GROUPS
            if (states := tuple(state for state in group if state in wanted))
        ]
        if len(groups) == 1:
            return page(groups[0])
        merged = union_all(*(page(states) for states in groups)).subquery("branches")
        return select(*merged.c).order_by(merged.c.id.desc()).limit(limit)

    return build


def _count_jobs(table: Table) -> Any:
    """The counting family: how many jobs match a filter.

    One branch per state, its state a literal, so the partial index of each —
    ``ix_<table>_failed`` / ``_cancelled`` (topic, finished_at), the claim or the
    processing index — serves it (index-only when no other criterion needs the
    row): a count reads the entries of the states it counts, never the other rows.
    (States of two indexes in one ``IN`` match neither index's predicate, and a
    LIMIT to cap the count makes the planner expect the matching rows spread through
    the table: both were planned as a scan of the whole table.) Count the small
    states — failed, cancelled, live — or give a topic and a window."""

    @functools.lru_cache(maxsize=256)
    def build(shape: Hashable) -> Executable:
        assert isinstance(shape, JobsShape)
        filters = _shape_filters(table, replace(shape, states=None))
        states = shape.states or tuple(state.value for state in JobState)
        branches = union_all(
            *(
                select(func.count().label("jobs")).where(_states(table, (state,)), *filters)
                for state in states
            )
        ).subquery("per_state")
        return select(func.coalesce(func.sum(branches.c.jobs), 0))

    return build


def _rerun_values(table: Table) -> dict[str, Any]:
    return rerun_values(_state(JobState.CREATED), _db_now())


def _rerun_jobs(table: Table) -> Any:
    """The re-run family: up to ``p_limit`` FAILED (or CANCELLED) jobs matching a
    filter, oldest finished first, each made a new job; returns their ids.

    ``FOR UPDATE SKIP LOCKED``: a finished row someone else holds (a prune, another
    re-run, the caller's own change) is left out rather than waited for. The rows are
    then updated by primary key, as the prune deletes them. The topics re-run are
    announced on the enqueue channel, so idle workers claim them at once.
    """
    t = table.c

    @functools.lru_cache(maxsize=256)
    def build(shape: Hashable) -> Executable:
        assert isinstance(shape, JobsShape) and shape.states is not None
        limit = bindparam("p_limit", type_=Integer())
        filters = _shape_filters(table, replace(shape, states=None))

        def oldest(state: str) -> Select[Any]:
            # One state: its partial index (ix_<table>_failed, _cancelled) hands out
            # the rows in finished_at order.
            return (
                select(t.id, t.finished_at)
                .where(_states(table, (state,)), *filters)
                .order_by(t.finished_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )

        if len(shape.states) == 1:
            (state,) = shape.states
            picked = oldest(state).with_only_columns(t.id).scalar_subquery()
        else:
            # FOR UPDATE is not allowed in a UNION's own branches, so each is a
            # subquery of its own (the rows a branch locks beyond the outer LIMIT
            # stay locked, unchanged, until the caller's transaction ends).
            branches = union_all(
                *(select(*oldest(state).subquery().c) for state in shape.states)
            ).subquery("oldest")
            picked = (
                select(branches.c.id)
                .order_by(branches.c.finished_at)
                .limit(limit)
                .scalar_subquery()
            )
        rerun = (
            update(table)
            .where(t.id == any_(func.array(picked, type_=ARRAY(UUID(as_uuid=True)))))
            .values(**_rerun_values(table))
            .returning(t.id, t.topic)
            .cte("rerun")
        )
        return _returning_announced(rerun, notify_channel(table))

    return build


def _control_statements(table: Table) -> dict[str, Any]:
    """Cancel, re-run, list, pause and resume."""
    t = table.c
    by_id = t.id == bindparam("p_job_id", type_=UUID(as_uuid=True))
    # Cancel one job. ``target`` tells whether it exists at all; ``current`` locks it
    # with SKIP LOCKED and reads its latest state: a row another transaction holds
    # (a transaction-mode pass running its handler, or a claim committing at this
    # moment) is not waited for — waiting could deadlock with that pass — and comes
    # back NULL (the outcome is then "requested"). An unlocked job that is not
    # finished is CANCELLED at once.
    target = select(t.id).where(by_id).cte("target")
    current = select(t.id, t.state, t.topic).where(by_id).with_for_update(skip_locked=True)
    current_cte = current.cte("current")
    cancelled = (
        update(table)
        .where(by_id, t.id == current_cte.c.id, _live(current_cte))
        .values(state=_state(JobState.CANCELLED), finished_at=_db_now())
        .returning(t.id, t.topic)
        .cte("cancelled")
    )
    held = or_(
        current_cte.c.state.is_(None),
        current_cte.c.state.in_([_state(JobState.ACTIVE), _state(JobState.PROCESSING)]),
    )
    cancel_job = select(
        current_cte.c.state.label("state"),
        cancelled.c.id.is_not(None).label("cancelled"),
        # The worker that holds the job (if any) learns of it from this notification,
        # delivered when the caller commits.
        case(
            (
                held,
                func.pg_notify(
                    control_channel(table),
                    literal_column("'cancel:'") + cast(target.c.id, Text()),
                ),
            )
        ).label("worker_notified"),
        _announced(cancelled, finished_channel(table)).label("announced"),
    ).select_from(target.outerjoin(current_cte, true()).outerjoin(cancelled, true()))
    # Re-run one job: locked (FOR UPDATE; finished rows are held only briefly, and a
    # claim never locks one), then made a new job if it is FAILED or CANCELLED; its
    # state is returned either way, so a refusal can say why.
    locked = select(t.id, t.state).where(by_id).with_for_update().cte("locked")
    rerun = (
        update(table)
        .where(by_id, t.id == locked.c.id, _states(locked, RERUNNABLE_STATES))
        .values(**_rerun_values(table))
        .returning(t.id, t.topic)
        .cte("rerun")
    )
    rerun_job = select(
        locked.c.state, rerun.c.id, _announced(rerun, notify_channel(table)).label("announced")
    ).select_from(locked.outerjoin(rerun, true()))
    paused = paused_topics_table(table)
    topic = bindparam("p_topic", type_=Text())
    pause_topic = (
        pg_insert(paused).values(topic=topic).on_conflict_do_nothing().returning(paused.c.topic)
    )
    # Resumed: idle workers of the topic are woken on the enqueue channel, as by an
    # enqueue, so its due jobs are claimed at once.
    resumed = delete(paused).where(paused.c.topic == topic).returning(paused.c.topic).cte("resumed")
    resume_topic = select(resumed.c.topic).where(_announced(resumed, notify_channel(table)) >= 0)
    return {
        "cancel_job": cancel_job,
        "rerun_job": rerun_job,
        "rerun_jobs": _rerun_jobs(table),
        "list_jobs": _list_jobs(table),
        "count_jobs": _count_jobs(table),
        "pause_topic": pause_topic,
        "resume_topic": resume_topic,
        "paused_topics": select(paused.c.topic, paused.c.paused_at).order_by(paused.c.topic),
    }


def _priority_levels(table: Table, topic: ColumnElement[Any], name: str) -> Any:
    """The distinct priorities of ``topic``'s claimable jobs, highest first, then a NULL
    row: a recursive CTE that jumps from one level to the next lower one (a loose
    index scan of the claim index: one descent per level, however many jobs each
    level has). It is read lazily: a claim whose batch fills on the first levels
    never looks for the others. Its LIMITs are literals, not parameters, for the
    claim's generic plan (see the claim)."""
    t = table.c
    first = (
        select(t.priority)
        .where(t.topic == topic, _claimable(table))
        .order_by(t.priority.desc())
        .limit(_ONE)
    )
    levels = first.cte(name, recursive=True)
    lower = table.alias(f"{name}_lower")
    next_level = (
        select(lower.c.priority)
        .where(lower.c.topic == topic, _claimable(lower), lower.c.priority < levels.c.priority)
        .order_by(lower.c.priority.desc())
        .limit(_ONE)
        .scalar_subquery()
    )
    return levels.union_all(select(next_level).where(levels.c.priority.is_not(None)))


def _bulk_row_columns(row: ColumnElement[Any]) -> list[ColumnElement[Any]]:
    """The values of one job of a bulk document row with every setting of its own."""
    return [
        cast(_element(row, 0, as_text=True), UUID(as_uuid=True)),
        bindparam("p_topic", type_=Text()),
        _element(row, 1),
        _element(row, 2),
        func.coalesce(
            cast(_element(row, 3, as_text=True), _TIMESTAMPTZ),
            _after_seconds(cast(_element(row, 4, as_text=True), Float())),
        ),
        cast(_element(row, 5, as_text=True), Integer()),
        cast(_element(row, 6, as_text=True), Integer()),
    ]


def _unique_row_columns(
    each_row: list[ColumnElement[Any]], row: ColumnElement[Any]
) -> list[ColumnElement[Any]]:
    """A unique job's values from a row with every setting of its own:
    ``[<id>, <data>, <attributes>, <run_after_date>, <run_after_seconds>,
    <retry_after_seconds>, <priority>, <unique_key>, <unique_states>]``."""
    return [
        *each_row,
        _element(row, 7, as_text=True),
        cast(_element(row, 8, as_text=True), ARRAY(Text())),
    ]


def _shared_settings() -> list[ColumnElement[Any]]:
    """The attributes, start and visibility timeout every job of a batch shares, sent
    once as scalars: ``p_attributes``, ``p_run_after_date`` (else now plus
    ``p_run_after_seconds``), ``p_retry_after_seconds``."""
    return [
        cast(bindparam("p_attributes", type_=Text()), JSONB),
        func.coalesce(
            bindparam("p_run_after_date", type_=_TIMESTAMPTZ),
            _after_seconds(bindparam("p_run_after_seconds", type_=Float())),
        ),
        bindparam("p_retry_after_seconds", type_=Integer()),
    ]


def _shared_unique_row_columns(row: ColumnElement[Any]) -> list[ColumnElement[Any]]:
    """A unique job's values from a short row, ``[<id>, <data>, <unique_key>,
    <priority>]``, the settings every job of the batch shares sent once, as scalars
    (the usual unique batch: a key per job, defaults or one priority per job). Each
    setting a row carries is one more JSON element to extract and cast per row."""
    return [
        cast(_element(row, 0, as_text=True), UUID(as_uuid=True)),
        bindparam("p_topic", type_=Text()),
        _element(row, 1),
        *_shared_settings(),
        cast(_element(row, 3, as_text=True), Integer()),
        _element(row, 2, as_text=True),
        cast(bindparam("p_unique_states", type_=Text()), ARRAY(Text())),
    ]


def _unique_statements(
    table: Table, columns: list[str], values: list[ColumnElement[Any]], job: Any, layout: str
) -> dict[str, Any]:
    """Enqueues of unique jobs, the values of each read from its row by ``values``
    (the row ``layout``: ``""`` every setting in the row, ``"_shared"`` the settings
    the batch shares as scalars), one statement per conflict policy, each with and
    without the wake-up notification.

    * ``insert_unique`` — a plain INSERT: a key already held makes the database
      refuse the statement (unique violation on ``uq_<table>_unique_key``, raised
      as :class:`~programma_sa.DuplicateJob`), the whole batch with it;
    * ``insert_unique_keep`` — ``ON CONFLICT … DO NOTHING``: a job whose key is held
      is not inserted (the row count says how many were). DO NOTHING takes no row
      lock: it never waits for a transaction holding the existing job (a
      transaction-mode worker's pass running it);
    * ``insert_unique_replace`` — ``ON CONFLICT … DO UPDATE … WHERE state =
      'created'``: a job still waiting takes the new data, attributes, start time,
      priority and visibility timeout; returns (unique_key, id) of the rows
      inserted or replaced. A claimed or finished holder is left as it is.

    The arbiter of ON CONFLICT is the partial unique index, named by its column and
    predicate.
    """
    t = table.c
    notified = select(
        func.pg_notify(notify_channel(table), bindparam("p_topic", type_=Text())).label("notified")
    ).subquery("notification")
    targets = [*columns, "unique_key", "unique_states"]
    arbiter: dict[str, Any] = {
        "index_elements": [t.unique_key],
        "index_where": literal_column(UNIQUE_PREDICATE),
    }
    statements: dict[str, Any] = {}
    for notify in (False, True):
        # The notification as in insert_one_notify: the rows selected FROM the one
        # row of (SELECT pg_notify(...)), in the same statement.
        source = (
            select(*values).select_from(notified).join(job, true())
            if notify
            else select(*values).select_from(job)
        )
        plain = pg_insert(table).from_select(targets, source)
        suffix = layout + ("_notify" if notify else "")
        excluded = plain.excluded
        statements[f"insert_unique{suffix}"] = plain
        # preserve_rowcount: SQLAlchemy reports an INSERT's row count only when asked
        # (since 2.0.28; before, or elsewhere, -1: the holders are then read).
        statements[f"insert_unique_keep{suffix}"] = plain.on_conflict_do_nothing(
            **arbiter
        ).execution_options(preserve_rowcount=True)
        statements[f"insert_unique_replace{suffix}"] = plain.on_conflict_do_update(
            **arbiter,
            set_={
                name: excluded[name]
                for name in ("data", "attributes", "start_after", "retry_after_seconds", "priority")
            },
            where=t.state == _state(JobState.CREATED),
        ).returning(t.unique_key, t.id)
    return statements


def _unique_key_holders(table: Table) -> Select[tuple[object, ...]]:
    """The job that holds each of some keys, read through the partial unique index."""
    t = table.c
    return select(t.unique_key, t.id).where(
        t.unique_key == any_(bindparam("p_keys", type_=ARRAY(Text()))),
        literal_column(UNIQUE_PREDICATE, Boolean()),
    )


def _with_notify(enqueue: Insert, table: Table) -> Select[tuple[object]]:
    """``enqueue`` followed, in the same statement, by one NOTIFY per distinct topic.

    The notification is queued inside the enqueuing transaction: PostgreSQL
    delivers it on commit and drops it on rollback, so a worker is never woken for
    a job that does not exist.
    """
    inserted = enqueue.returning(table.c.topic).cte("inserted")
    topics = select(inserted.c.topic).distinct().subquery("topics")
    return select(func.pg_notify(notify_channel(table), topics.c.topic))


# -- maintenance: statistics and retention --------------------------------------------


_STATS_CLOCK = StatsClock(
    now=lambda: _db_now(),
    seconds_ago=lambda seconds: _db_now() - _interval_seconds(seconds),
    no_time=lambda: cast(null(), _TIMESTAMPTZ),
    as_time=lambda time: time,  # timestamptz: aware already
    state=lambda state: _state(state),
    claimable=lambda table: _claimable(table),
    finished=lambda table: _finished(table),
)


def _throughput(table: Table) -> Select[tuple[object, ...]]:
    """Finished and failed jobs per bucket of the last ``p_window_seconds``.

    Bounded by the window, not the table: the topics come from a loose index scan
    of ``ix_<table>_finished`` (one descent per topic), and each topic's recent
    rows from a range scan of ``ix_<table>_finished`` (COMPLETED and FAILED) and of
    ``ix_<table>_failed`` on (topic, finished_at) — index-only, reading only the
    entries finished inside the window. COMPLETED = finished - failed, as in stats.
    Each topic's rows are counted inside their LATERAL subquery: a subquery with an
    aggregate is not flattened into a join, which the planner (expecting a large
    share of the table to be recent) would serve with a scan of the whole table.
    """
    t = table.c
    now = _db_now()
    window = bindparam("p_window_seconds", type_=Float())
    buckets = bindparam("p_buckets", type_=Integer())
    topics = _finished_topics(table).subquery("topics")
    age = func.extract("epoch", now - t.finished_at)
    # A job finished after this transaction's now() has a negative age: bucket 0.
    bucket = func.greatest(
        0, func.least(buckets - 1, cast(func.floor(age * buckets / window), Integer()))
    )

    def branch(states: ColumnElement[bool], kind: str) -> Select[Any]:
        counted = (
            select(bucket.label("bucket"), func.count().label("jobs"))
            .where(
                states, t.topic == topics.c.topic, t.finished_at >= now - _interval_seconds(window)
            )
            .group_by(bucket)
            .lateral(f"recent_{kind}")
        )
        return select(
            counted.c.bucket,
            counted.c.jobs,
            literal_column(f"'{kind}'", Text()).label("kind"),
        ).select_from(topics.join(counted, true()))

    rows = union_all(
        branch(_finished(table), "finished"), branch(t.state == _state(JobState.FAILED), "failed")
    ).subquery("rows")
    return (
        select(
            rows.c.bucket,
            func.coalesce(func.sum(rows.c.jobs).filter(rows.c.kind == "finished"), 0).label(
                "finished"
            ),
            func.coalesce(func.sum(rows.c.jobs).filter(rows.c.kind == "failed"), 0).label("failed"),
        )
        .group_by(rows.c.bucket)
        .order_by(rows.c.bucket)
    )


def _claimable(table: FromClause) -> ColumnElement[bool]:
    """The claim index's predicate, as literals the planner can match to it."""
    return table.c.state.in_([_state(JobState(state)) for state in CLAIMABLE_STATES])


def _finished(source: FromClause) -> ColumnElement[bool]:
    """The finished index's predicate, as literals the planner can match to it."""
    return source.c.state.in_([_state(JobState(state)) for state in FINISHED_STATES])


def _finished_topics(
    table: Table, finished: Callable[[FromClause], ColumnElement[bool]] = _finished
) -> Select[tuple[object]]:
    """Every topic that has ``finished`` jobs, by a loose index scan of the partial
    index of those states (``ix_<table>_finished``, ``ix_<table>_cancelled``).

    A recursive query jumps from one topic to the next greater one: one index
    descent per topic, however many finished rows each has (``SELECT DISTINCT``
    would read them all).
    """
    t = table.c
    # Ordered by (topic, finished_at), the order of those indexes and of no other
    # index with topic first (such as ix_<table>_history), so the planner reads
    # one of them.
    first = select(t.topic).where(finished(table)).order_by(t.topic, t.finished_at).limit(1)
    topics = first.cte("finished_topics", recursive=True)
    jobs = table.alias("later")
    following = (
        select(jobs.c.topic)
        .where(finished(jobs), jobs.c.topic > topics.c.topic)
        .order_by(jobs.c.topic, jobs.c.finished_at)
        .limit(1)
        .scalar_subquery()
    )
    topics = topics.union_all(select(following).where(topics.c.topic.is_not(None)))
    return select(topics.c.topic).where(topics.c.topic.is_not(None))


def _prune(table: Table, state: JobState) -> Delete:
    """Delete one bounded batch of ``state`` jobs of one topic, finished before the TTL.

    ``ix_<table>_finished`` (``ix_<table>_failed`` for FAILED) hands out the topic's
    oldest finished rows in ``finished_at`` order, so a batch reads about as many
    index entries as it deletes and never scans the table. ``FOR UPDATE SKIP
    LOCKED``: a finished row some other transaction holds locked (a caller still
    inspecting or changing it) is left for a later batch instead of making the prune
    wait on it — and nothing a claim locks is a finished row, so pruning and claiming
    never wait on each other.

    The ids are collected into an array and deleted with ``id = ANY(ARRAY(…))``, a
    primary-key lookup per id. (Joined to the table instead — ``USING`` a CTE, or
    ``id IN (subquery)`` — the planner may hash-join a sequential scan of the whole
    table when the batch is large next to the table.)
    """
    t = table.c
    cutoff = _db_now() - _interval_seconds(bindparam("p_ttl_seconds", type_=Float()))
    expired = (
        select(t.id)
        .where(
            t.topic == bindparam("p_topic", type_=Text()),
            t.state == _state(state),
            t.finished_at < cutoff,
        )
        .order_by(t.finished_at)
        .limit(bindparam("p_limit", type_=Integer()))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return delete(table).where(t.id == any_(func.array(expired, type_=ARRAY(UUID(as_uuid=True)))))


def _maintenance_statements(table: Table) -> dict[str, Any]:
    """Statistics and retention statements."""
    return {
        "stats_all": stats_statement(table, _STATS_CLOCK, one_topic=False),
        "stats_topic": stats_statement(table, _STATS_CLOCK, one_topic=True),
        "throughput": _throughput(table),
        "finished_topics": _finished_topics(table),
        "prune_completed": _prune(table, JobState.COMPLETED),
        "prune_failed": _prune(table, JobState.FAILED),
        "cancelled_topics": _finished_topics(
            table, lambda source: source.c.state == _state(JobState.CANCELLED)
        ),
        "prune_cancelled": _prune(table, JobState.CANCELLED),
        # A transaction-level advisory lock: released by the batch's own commit or
        # rollback, so no crash, pool or pgbouncer (transaction pooling) can leave it
        # held. See programma_sa.maintenance.Pruner for why pruning takes it.
        "try_prune_lock": select(
            func.pg_try_advisory_xact_lock(bindparam("p_key", type_=BigInteger()))
        ),
    }
