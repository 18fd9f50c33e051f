"""The SQLite driver (3.35+): the statements of :mod:`.postgresql`, for SQLite.

:func:`build_statements` builds the same :class:`~.base.Statements`, with the same
``p_*`` parameters and result columns, so nothing above this package knows which
database it runs on. What SQLite lacks, and what takes its place:

* **No row locks, one writer.** SQLite runs one write transaction at a time on a
  database file. A claim is ONE statement, ``UPDATE … WHERE id IN (SELECT … LIMIT
  n) RETURNING …``: a write statement takes the database's write lock *before* it
  reads a row, so its sub-select sees every claim committed before it and no claim
  can commit between its read and its write. Two claims therefore never take the
  same job — which is what ``FOR UPDATE SKIP LOCKED`` gives on PostgreSQL — they
  wait for each other instead (the connection's busy timeout: see docs/sqlite.md).
  In a transaction that read before it claims (a deferred transaction in WAL mode),
  SQLite refuses the write with ``SQLITE_BUSY`` when another writer committed since
  that read, rather than letting it act on an old snapshot: an error, never a
  double claim.
* **No LISTEN/NOTIFY.** The ``*_notify`` enqueues are the plain ones: workers poll.
  Nothing is announced: a cancelled job's worker learns of it from its next lease
  renewal, a caller waiting for a job polls it (docs/sqlite.md).
* **No data-modifying CTEs.** A statement that must return a row's state from
  before it wrote (``cancel_job``, ``rerun_job``) reads it in a ``MATERIALIZED``
  CTE, computed before the ``UPDATE`` changes the row, and names it in
  ``RETURNING``; the ``UPDATE`` itself writes the row's own values back when
  there is nothing to change.
* **No advisory locks.** ``try_prune_lock`` takes the database's write lock for
  the prune batch instead (see its comment).
* **Time.** SQLite has no time type: SQLAlchemy's ``DateTime`` keeps
  ``YYYY-MM-DD HH:MM:SS.ffffff`` text, and SQLite's clock (``'now'``, UTC, the same
  value throughout one statement) has millisecond resolution. Every time this
  driver writes is UTC text in that format, to the millisecond, so text order is
  time order; times the caller passes are converted to UTC and cut to the
  millisecond (:class:`UtcDateTime`), and times are read back as aware UTC
  datetimes, as on PostgreSQL.
* **JSON** is text, handled by the JSON1 functions; a job's unique states are a
  JSON array (see :data:`~programma_sa.models.UNIQUE_PREDICATE_IN_JSON`).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    DateTime,
    Delete,
    Executable,
    Float,
    FromClause,
    Integer,
    Select,
    Table,
    Text,
    Update,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    true,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, Uuid

from ..models import (
    CLAIMABLE_STATES,
    FINISHED_STATES,
    RERUNNABLE_STATES,
    TERMINAL_STATES,
    UNIQUE_PREDICATE_IN_JSON,
    JobState,
    paused_topics_table,
)
from .base import JobsShape, Statements
from .shapes import ShapeTerms, rerun_values, shape_filters
from .stats import StatsClock, stats_statement

__all__ = ["UtcDateTime", "build_statements"]

#: SQLAlchemy's DateTime text on SQLite, with SQLite's millisecond clock: ``%f`` is
#: ``SS.SSS``, the zeros make it the six digits SQLAlchemy writes and reads.
_TIME_FORMAT = "%Y-%m-%d %H:%M:%f000"


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime kept as UTC text to the millisecond; read back aware (UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.replace(microsecond=value.microsecond // 1000 * 1000)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


_UTC = UtcDateTime()


def _time(*arguments: Any) -> ColumnElement[Any]:
    """``strftime(<the format>, <arguments>)``: a time as this driver writes it."""
    return func.strftime(_TIME_FORMAT, *arguments, type_=_UTC)


def _db_now() -> ColumnElement[Any]:
    return _time("now")


def _after_seconds(seconds: ColumnElement[Any], start: Any = "now") -> ColumnElement[Any]:
    """``start`` (default: now) plus ``seconds`` (NULL when ``seconds`` is NULL).

    The shift is a ``'<n> seconds'`` modifier, printed to the millisecond (a REAL
    printed as text may be ``1e-05``, which SQLite does not read as a number).
    """
    shifted = _time(start, func.printf("%.3f seconds", seconds))
    return case((seconds.is_(None), null()), else_=shifted)


def _same_time(left: ColumnElement[Any], right: ColumnElement[Any]) -> ColumnElement[bool]:
    """Two times are the same instant (NULL is NULL), whatever text form each has."""
    return func.julianday(left).is_not_distinct_from(func.julianday(right))


def _state(state: JobState) -> ColumnElement[str]:
    return literal_column(f"'{state.value}'", Text())


def _claimable(table: FromClause) -> ColumnElement[bool]:
    """The claim index's predicate, as literals (so SQLite can use the partial index)."""
    return table.c.state.in_([_state(JobState(state)) for state in CLAIMABLE_STATES])


def _finished(table: FromClause) -> ColumnElement[bool]:
    """The finished index's predicate, as literals."""
    return table.c.state.in_([_state(JobState(state)) for state in FINISHED_STATES])


def _returned(table: Table) -> list[ColumnElement[Any]]:
    """Every column of ``table``, times read as aware UTC datetimes."""
    return [
        type_coerce(c, _UTC).label(c.key) if isinstance(c.type, DateTime) else c for c in table.c
    ]


def _json_element(document: ColumnElement[Any], index: int) -> ColumnElement[Any]:
    """The JSON text of element ``index`` of the JSON array ``document`` (SQL NULL when
    absent). ``json_extract`` alone turns ``true`` into 1 and a string into its bare
    text; ``->`` would not, but needs SQLite 3.38."""
    return _json_at(document, f"$[{index}]")


def _json_at(document: ColumnElement[Any], path: str | ColumnElement[str]) -> ColumnElement[Any]:
    """The JSON text at ``path`` in ``document`` (SQL NULL when absent)."""
    kind = func.json_type(document, path)
    value = func.json_extract(document, path)
    return case(
        (kind.in_(["true", "false", "null"]), kind),
        (kind == "text", func.json_quote(value)),
        else_=value,
    )


def _scalar(document: ColumnElement[Any], index: int) -> ColumnElement[Any]:
    """Element ``index`` of a JSON array as an SQL value (a JSON null: NULL)."""
    return func.json_extract(document, f"$[{index}]")


def _uuid_text(value: ColumnElement[Any]) -> ColumnElement[Any]:
    """A UUID's text (with or without dashes) as SQLAlchemy's ``Uuid`` keeps it on
    SQLite: 32 lower-case hex digits."""
    return func.lower(func.replace(value, "-", ""))


def _merged_attributes(table: Table) -> ColumnElement[Any]:
    """The job's attributes with the JSON object ``p_attributes`` merged in (top
    level: a key of ``p_attributes`` replaces the job's, as PostgreSQL's ``||``).

    ``json_patch`` would merge nested objects and drop keys set to null, so the
    object is rebuilt from both objects' members. ``json_each`` gives a member's
    value as SQL (``true`` as 1, an object as plain text); its ``type`` turns it
    back into JSON inside the aggregate."""
    new = bindparam("p_attributes", type_=Text())
    old = func.json_each(func.coalesce(table.c.attributes, "{}")).table_valued(
        "key", "type", "value"
    )
    added = func.json_each(new).table_valued("key", "type", "value")
    kept = select(old.c.key, old.c.type, old.c.value).where(
        old.c.key.not_in(select(func.json_each(new).table_valued("key").c.key))
    )
    members = union_all(kept, select(added.c.key, added.c.type, added.c.value)).subquery("members")
    kind, value = members.c.type, members.c.value
    as_json = case(
        (kind.in_(["true", "false", "null"]), func.json(kind)),
        (kind.in_(["object", "array"]), func.json(value)),
        else_=value,
    )
    return select(func.json_group_object(members.c.key, as_json)).scalar_subquery()


def _not_paused(table: Table) -> ColumnElement[bool]:
    """``p_topic`` is not paused: one primary-key probe of ``<table>_paused``."""
    paused = paused_topics_table(table)
    return ~exists().where(paused.c.topic == bindparam("p_topic", type_=Text()))


def _unchanged_since_claim(
    table: Table, attempts: ColumnElement[Any], start_after: ColumnElement[Any]
) -> ColumnElement[bool]:
    """The job is still exactly as the claim that returned it left it (see the
    PostgreSQL driver: the guard of every worker outcome write)."""
    t = table.c
    return and_(
        t.state == _state(JobState.ACTIVE),
        t.attempts == attempts,
        _same_time(t.start_after, start_after),
    )


def _claimed(table: Table) -> dict[str, ColumnElement[Any]]:
    """What a claim sets on each job it takes: ACTIVE, one more attempt, and the
    visibility timeout (NULL retry_after_seconds: never redelivered)."""
    t = table.c
    return {
        "state": _state(JobState.ACTIVE),
        "started_at": _db_now(),
        "attempts": t.attempts + 1,
        "start_after": _after_seconds(t.retry_after_seconds),
    }


def build_statements(table: Table) -> Statements:
    """Every statement of ``table`` on SQLite."""
    return Statements(
        table=table,
        **_job_statements(table),
        **_control_statements(table),
        **_maintenance_statements(table),
    )


def _job_statements(table: Table) -> dict[str, Any]:
    t = table.c
    run_after = func.coalesce(
        bindparam("p_run_after_date", type_=_UTC),
        _after_seconds(bindparam("p_run_after_seconds", type_=Float())),
    )
    insert_one = insert(table).values(
        id=bindparam("p_id", type_=Uuid(as_uuid=True)),
        topic=bindparam("p_topic", type_=Text()),
        data=func.json(bindparam("p_data", type_=Text())),
        attributes=func.json(bindparam("p_attributes", type_=Text())),
        start_after=run_after,
        retry_after_seconds=bindparam("p_retry_after_seconds", type_=Integer()),
        priority=bindparam("p_priority", type_=Integer()),
        # The server default (CURRENT_TIMESTAMP) has whole seconds only.
        created_at=_db_now(),
    )
    # Bulk enqueue: one INSERT … SELECT FROM json_each(document), the document as
    # the PostgreSQL driver describes it (a row per job).
    job = func.json_each(bindparam("p_jobs", type_=Text())).table_valued("value").alias("job")
    row = job.c.value
    columns = [
        "id",
        "topic",
        "data",
        "attributes",
        "start_after",
        "retry_after_seconds",
        "priority",
        "created_at",
    ]
    insert_many_uniform = insert(table).from_select(
        columns,
        select(
            _uuid_text(_scalar(row, 0)),
            bindparam("p_topic", type_=Text()),
            _json_element(row, 1),
            func.json(bindparam("p_attributes", type_=Text())),
            run_after,
            bindparam("p_retry_after_seconds", type_=Integer()),
            bindparam("p_priority", type_=Integer()),
            _db_now(),
        ).select_from(job),
    )
    each_row = [
        _uuid_text(_scalar(row, 0)),
        bindparam("p_topic", type_=Text()),
        _json_element(row, 1),
        _json_element(row, 2),
        func.coalesce(
            # An ISO 8601 text with its offset: strftime reads it and writes UTC.
            _time(_scalar(row, 3)),
            _after_seconds(_scalar(row, 4)),
        ),
        _scalar(row, 5),
        _scalar(row, 6),
        _db_now(),
    ]
    insert_many = insert(table).from_select(columns, select(*each_row).select_from(job))

    # The claim, in ONE write statement (see the module docstring for why no two
    # claims take the same job: the statement holds SQLite's write lock from before
    # its sub-select reads until it ends). The sub-select reads the claim index
    # (topic, priority DESC, start_after, id) in claim order: higher priority
    # first, FIFO within a priority. MATERIALIZED: the picked rows, with their
    # start_after before the claim (due_at), are computed once, before the UPDATE
    # changes them, so RETURNING reads the old start_after from there (RETURNING
    # itself sees only the new row).
    picked = (
        # picked_id, not id: RETURNING names the claimed table's columns unqualified,
        # so in its sub-select below a bare ``id`` must be the claimed row's.
        select(t.id.label("picked_id"), t.start_after.label("due_at"))
        .where(
            t.topic == bindparam("p_topic", type_=Text()),
            _claimable(table),
            t.start_after <= _db_now(),
            _not_paused(table),
        )
        .order_by(t.priority.desc(), t.start_after, t.id)
        .limit(bindparam("p_max_jobs", type_=Integer()))
        .cte("picked")
        .prefix_with("MATERIALIZED")
    )
    due_at = (
        select(type_coerce(picked.c.due_at, _UTC))
        .where(picked.c.picked_id == t.id)
        .scalar_subquery()
    )
    claim = (
        update(table)
        .where(t.id.in_(select(picked.c.picked_id)))
        .values(**_claimed(table))
        .returning(*_returned(table), due_at.label("due_at"))
    )

    by_id = t.id == bindparam("p_job_id", type_=Uuid(as_uuid=True))

    def move_to(state: JobState) -> Update:
        finished_at = _db_now() if state in (JobState.COMPLETED, JobState.FAILED) else None
        return update(table).where(by_id).values(state=_state(state), finished_at=finished_at)

    retry = bindparam("p_retry_after_seconds", type_=Integer())
    return {
        "insert_one": insert_one,
        "insert_one_notify": insert_one,
        "insert_many": insert_many,
        "insert_many_notify": insert_many,
        "insert_many_uniform": insert_many_uniform,
        "insert_many_uniform_notify": insert_many_uniform,
        **_unique_statements(table, columns, _unique_row_values(each_row, row), job, ""),
        **_unique_statements(
            table, columns, _shared_unique_row_values(row, run_after), job, "_shared"
        ),
        "unique_key_holders": _unique_key_holders(table),
        "claim": claim,
        "move_to_processing": move_to(JobState.PROCESSING),
        "move_to_completed": move_to(JobState.COMPLETED),
        "move_to_failed": move_to(JobState.FAILED),
        "delete_by_id": delete(table).where(by_id),
        "set_attributes": update(table).where(by_id).values(attributes=_merged_attributes(table)),
        # A leased job's lease is re-measured from its claim with the new timeout.
        "set_retry_after_seconds": update(table)
        .where(by_id)
        .values(
            retry_after_seconds=retry,
            start_after=case(
                (t.state == _state(JobState.ACTIVE), _after_seconds(retry, t.started_at)),
                else_=t.start_after,
            ),
        ),
        "set_start_after": update(table)
        .where(by_id)
        .values(start_after=bindparam("p_start_after", type_=_UTC)),
        "get_by_id": select(*_returned(table)).where(by_id),
        **_worker_statements(table, by_id),
    }


def _worker_statements(table: Table, by_id: ColumnElement[bool]) -> dict[str, Any]:
    """The worker's guarded outcome writes, the redo of a rolled-back claim, and
    its idle-time look-ahead."""
    t = table.c
    # The batch (id, attempts, start_after per job) as one JSON text.
    batch = func.json_each(bindparam("p_claimed", type_=Text())).table_valued("value")
    entry = batch.c.value
    claimed = select(
        _uuid_text(func.json_extract(entry, "$.id")).label("id"),
        func.json_extract(entry, "$.attempts").label("attempts"),
        func.json_extract(entry, "$.start_after").label("start_after"),
        # The handler's result as JSON text (a JSON null or none: NULL).
        func.json(_json_at(entry, "$.result")).label("result"),
    ).subquery("claimed")
    complete_unchanged = (
        update(table)
        .where(
            t.id == claimed.c.id,
            _unchanged_since_claim(table, claimed.c.attempts, claimed.c.start_after),
        )
        .values(
            state=_state(JobState.COMPLETED),
            finished_at=_db_now(),
            result=type_coerce(claimed.c.result, Text()),
        )
        .returning(t.id)
    )
    one_unchanged = and_(
        by_id,
        _unchanged_since_claim(
            table,
            bindparam("p_attempts", type_=Integer()),
            bindparam("p_start_after", type_=_UTC),
        ),
    )
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
    fail_unchanged = (
        update(table)
        .where(one_unchanged)
        .values(
            attributes=_merged_attributes(table),
            state=_state(JobState.FAILED),
            finished_at=_db_now(),
        )
        .returning(t.id)
    )
    # A held job whose cancellation reached its worker: the worker ends it CANCELLED.
    cancel_unchanged = (
        update(table)
        .where(one_unchanged)
        .values(state=_state(JobState.CANCELLED), finished_at=_db_now())
        .returning(t.id)
    )
    # A claim whose transaction rolled back, done again if the row is still exactly
    # as it was before that claim. One statement: the single writer keeps the row
    # as the WHERE clause saw it until the write (no row lock to take).
    reclaim_rolled_back = (
        update(table)
        .where(
            by_id,
            _claimable(table),
            t.attempts == bindparam("p_attempts", type_=Integer()),
            _same_time(t.start_after, bindparam("p_start_after", type_=_UTC)),
        )
        .values(**_claimed(table))
        .returning(*_returned(table))
    )
    # Seconds until the topic's next claimable job is due (negative: due now; NULL: none).
    soonest = (
        select(func.min(t.start_after))
        .where(t.topic == bindparam("p_topic", type_=Text()), _claimable(table))
        .scalar_subquery()
    )
    # A paused topic has nothing due (NULL), so an idle worker does not poll it.
    seconds_until_due = select(
        case(
            (
                _not_paused(table),
                (func.julianday(soonest) - func.julianday("now")) * literal(86400.0, Float()),
            ),
            else_=null(),
        )
    )
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


def _held_update(table: Table, values: dict[str, Any]) -> Update:
    """UPDATE each job of ``p_held`` (one JSON text: id, attempts and the
    start_after the worker knows for each) still exactly as the worker holds it."""
    t = table.c
    entry = func.json_each(bindparam("p_held", type_=Text())).table_valued("value").c.value
    held = select(
        _uuid_text(func.json_extract(entry, "$.id")).label("id"),
        func.json_extract(entry, "$.attempts").label("attempts"),
        func.json_extract(entry, "$.start_after").label("start_after"),
    ).subquery("held")
    return (
        update(table)
        .where(
            t.id == held.c.id,
            _unchanged_since_claim(table, held.c.attempts, held.c.start_after),
        )
        .values(**values)
    )


def _lease_statements(table: Table) -> dict[str, Any]:
    """Lease renewal, release of unstarted jobs, and reading back the jobs a guarded
    write did not match (as in the PostgreSQL driver)."""
    t = table.c
    renew_leases = _held_update(
        table, {"start_after": _after_seconds(t.retry_after_seconds)}
    ).returning(t.id, type_coerce(t.start_after, _UTC).label("start_after"))
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
    lease_states = select(
        t.id, t.state, t.attempts, type_coerce(t.start_after, _UTC).label("start_after")
    ).where(t.id.in_(bindparam("p_ids", type_=Uuid(as_uuid=True), expanding=True)))
    return {
        "renew_leases": renew_leases,
        "release_unstarted": release_unstarted,
        "lease_states": lease_states,
    }


def _unique_row_values(
    each_row: list[ColumnElement[Any]], row: ColumnElement[Any]
) -> list[ColumnElement[Any]]:
    """A unique job's values from a row with every setting of its own, as in the
    PostgreSQL driver: the bulk row plus ``<unique_key>, <unique_states>`` (the
    states as a PostgreSQL array literal such as ``{created,active}``, stored here as
    the JSON array ``["created","active"]``)."""
    return [*each_row, _scalar(row, 7), _states_json(_scalar(row, 8))]


def _shared_unique_row_values(
    row: ColumnElement[Any], run_after: ColumnElement[Any]
) -> list[ColumnElement[Any]]:
    """A unique job's values from a short row, ``[<id>, <data>, <unique_key>,
    <priority>]``, the settings the batch shares sent once as scalars (as in the
    PostgreSQL driver)."""
    return [
        _uuid_text(_scalar(row, 0)),
        bindparam("p_topic", type_=Text()),
        _json_element(row, 1),
        func.json(bindparam("p_attributes", type_=Text())),
        run_after,
        bindparam("p_retry_after_seconds", type_=Integer()),
        _scalar(row, 3),
        _db_now(),
        _scalar(row, 2),
        _states_json(bindparam("p_unique_states", type_=Text())),
    ]


def _states_json(states: ColumnElement[Any]) -> ColumnElement[Any]:
    """A PostgreSQL array literal of states, ``{a,b}``, as the JSON array
    ``["a","b"]`` (state names need no JSON escaping); NULL stays NULL."""
    return case(
        (states.is_(None), null()),
        else_=literal('["')
        + func.replace(func.substr(states, 2, func.length(states) - 2), ",", '","')
        + literal('"]'),
    )


def _unique_statements(
    table: Table, columns: list[str], values: list[ColumnElement[Any]], job: Any, layout: str
) -> dict[str, Any]:
    """Enqueues of unique jobs, the values of each read from its row by ``values``
    (the row ``layout``: ``""`` every setting in the row, ``"_shared"`` the settings
    the batch shares as scalars). The arbiter of ON CONFLICT is the partial unique
    index, named by its column and predicate; there is no NOTIFY, so the ``_notify``
    statements are the plain ones."""
    t = table.c
    # WHERE true: SQLite cannot parse INSERT … SELECT … ON CONFLICT without a WHERE
    # (it would read ON as a join's).
    plain = sqlite_insert(table).from_select(
        [*columns, "unique_key", "unique_states"],
        select(*values).select_from(job).where(true()),
    )
    arbiter: dict[str, Any] = {
        "index_elements": [t.unique_key],
        "index_where": literal_column(UNIQUE_PREDICATE_IN_JSON),
    }
    keep = plain.on_conflict_do_nothing(**arbiter)
    replace = plain.on_conflict_do_update(
        **arbiter,
        set_={
            name: plain.excluded[name]
            for name in ("data", "attributes", "start_after", "retry_after_seconds", "priority")
        },
        where=t.state == _state(JobState.CREATED),
    ).returning(t.unique_key, t.id)
    return {
        f"insert_unique{layout}": plain,
        f"insert_unique{layout}_notify": plain,
        f"insert_unique_keep{layout}": keep,
        f"insert_unique_keep{layout}_notify": keep,
        f"insert_unique_replace{layout}": replace,
        f"insert_unique_replace{layout}_notify": replace,
    }


def _unique_key_holders(table: Table) -> Select[tuple[object, ...]]:
    """The job that holds each of some keys (a JSON array), through the unique index."""
    t = table.c
    return select(t.unique_key, t.id).where(
        t.unique_key.in_(
            select(func.json_each(bindparam("p_keys", type_=JSON())).table_valued("value").c.value)
        ),
        literal_column(UNIQUE_PREDICATE_IN_JSON),
    )


# -- control of jobs in flight: cancel, re-run, list, pause -----------------------------


def _contains(attributes: ColumnElement[Any], wanted: ColumnElement[Any]) -> ColumnElement[bool]:
    """Every top-level member of the JSON object ``wanted`` is a member of
    ``attributes`` with an equal value (PostgreSQL's ``@>`` on the top level; a
    nested object must be equal, not merely contain the one given)."""
    member = func.json_each(wanted).table_valued("key", "type", "value").alias("wanted")
    path = literal("$.") + func.json_quote(member.c.key)
    matches = and_(
        func.json_type(attributes, path) == member.c.type,
        _json_at(attributes, path).is_not_distinct_from(_json_at(wanted, path)),
    )
    return ~exists().select_from(member).where(~func.coalesce(matches, False))


#: The criteria's terms on SQLite (programma_sa._drivers.shapes): times as UTC text to
#: the millisecond on both sides (text order is time order), attributes as JSON text.
_SHAPE_TERMS = ShapeTerms(
    state=lambda state: _state(state),
    time=_UTC,
    error_type=lambda table: func.json_extract(table.c.attributes, "$.last_error.type"),
    contains=lambda table, wanted: _contains(func.coalesce(table.c.attributes, "{}"), wanted),
)


def _list_jobs(table: Table) -> Any:
    """The listing family: jobs newest first (ids are UUIDv7: creation order),
    keyset-paginated by id (``id < p_cursor``), ``p_limit`` rows; one statement per
    shape, holding exactly the criteria given."""
    t = table.c

    @functools.lru_cache(maxsize=256)
    def build(shape: Hashable) -> Executable:
        assert isinstance(shape, JobsShape)
        filters = shape_filters(table, shape, _SHAPE_TERMS)
        if shape.cursor:
            filters.append(t.id < bindparam("p_cursor", type_=Uuid(as_uuid=True)))
        return (
            select(*_returned(table))
            .where(*filters)
            .order_by(t.id.desc())
            .limit(bindparam("p_limit", type_=Integer()))
        )

    return build


def _count_jobs(table: Table) -> Any:
    """The counting family: how many jobs match a filter; one statement per shape,
    holding exactly the criteria given (the states inlined, as the partial indexes'
    predicates name them)."""

    @functools.lru_cache(maxsize=256)
    def build(shape: Hashable) -> Executable:
        assert isinstance(shape, JobsShape)
        filters = shape_filters(table, shape, _SHAPE_TERMS)
        return select(func.count()).select_from(table).where(*filters)

    return build


def _rerun_values(table: Table) -> dict[str, Any]:
    return rerun_values(_state(JobState.CREATED), _db_now())


def _rerun_jobs(table: Table) -> Any:
    """The re-run family: up to ``p_limit`` FAILED (or CANCELLED) jobs matching a
    filter, oldest finished first, each made a new job; returns their ids. One write
    statement: the single writer keeps the rows as its sub-select read them."""
    t = table.c

    @functools.lru_cache(maxsize=256)
    def build(shape: Hashable) -> Executable:
        assert isinstance(shape, JobsShape) and shape.states is not None
        picked = (
            select(t.id)
            .where(*shape_filters(table, shape, _SHAPE_TERMS))
            .order_by(t.finished_at)
            .limit(bindparam("p_limit", type_=Integer()))
        )
        return update(table).where(t.id.in_(picked)).values(**_rerun_values(table)).returning(t.id)

    return build


def _if(condition: ColumnElement[bool], new: Any, old: ColumnElement[Any]) -> ColumnElement[Any]:
    """``new`` when ``condition`` holds, else the row's own value ``old``."""
    return case((condition, new), else_=old)


def _control_statements(table: Table) -> dict[str, Any]:
    """Cancel, re-run, list, pause and resume.

    Cancel and re-run one job return its state from before the statement wrote
    (see the module docstring: a ``MATERIALIZED`` CTE). The statement is one write,
    so under the single writer no claim commits between its read and its write: a
    job is never found "held by another transaction", and a running job is
    CANCELLED at once; its worker notices at its next lease renewal (no NOTIFY).
    """
    t = table.c
    by_id = t.id == bindparam("p_job_id", type_=Uuid(as_uuid=True))

    def before(name: str) -> Any:
        return select(t.state.label("old_state")).where(by_id).cte(name).prefix_with("MATERIALIZED")

    current = before("current")
    old_state = select(current.c.old_state).scalar_subquery()
    live = old_state.in_(
        [_state(state) for state in JobState if state.value not in TERMINAL_STATES]
    )
    cancel_job = (
        update(table)
        .where(by_id)
        .values(
            state=_if(live, _state(JobState.CANCELLED), t.state),
            finished_at=_if(live, _db_now(), t.finished_at),
        )
        .returning(
            old_state.label("state"),
            live.label("cancelled"),
            null().label("worker_notified"),
            null().label("announced"),
        )
    )
    locked = before("locked")
    locked_state = select(locked.c.old_state).scalar_subquery()
    rerunnable = locked_state.in_([_state(JobState(state)) for state in RERUNNABLE_STATES])
    rerun_job = (
        update(table)
        .where(by_id)
        .values(
            **{
                name: _if(rerunnable, value, t[name])
                for name, value in _rerun_values(table).items()
            }
        )
        .returning(
            locked_state.label("state"),
            case((rerunnable, t.id), else_=null()).label("id"),
            null().label("announced"),
        )
    )
    paused = paused_topics_table(table)
    topic = bindparam("p_topic", type_=Text())
    pause_topic = (
        sqlite_insert(paused)
        .values(topic=topic, paused_at=_db_now())
        .on_conflict_do_nothing()
        .returning(paused.c.topic)
    )
    resume_topic = delete(paused).where(paused.c.topic == topic).returning(paused.c.topic)
    return {
        "cancel_job": cancel_job,
        "rerun_job": rerun_job,
        "rerun_jobs": _rerun_jobs(table),
        "list_jobs": _list_jobs(table),
        "count_jobs": _count_jobs(table),
        "pause_topic": pause_topic,
        "resume_topic": resume_topic,
        "paused_topics": select(
            paused.c.topic, type_coerce(paused.c.paused_at, _UTC).label("paused_at")
        ).order_by(paused.c.topic),
    }


# -- maintenance: statistics and retention --------------------------------------------


#: The statistics (programma_sa._drivers.stats) on SQLite's clock.
_STATS_CLOCK = StatsClock(
    now=lambda: _db_now(),
    seconds_ago=lambda seconds: _after_seconds(-seconds),
    no_time=lambda: type_coerce(null(), _UTC),
    as_time=lambda time: type_coerce(time, _UTC),
    state=lambda state: _state(state),
    claimable=lambda table: _claimable(table),
    finished=lambda table: _finished(table),
)


def _throughput(table: Table) -> Executable:
    """Finished and failed jobs per bucket of the last ``p_window_seconds``: rows
    (bucket, finished, failed), bucket 0 the most recent, empty buckets absent.

    One range of ``ix_<table>_finished`` (its predicate, then ``finished_at`` from
    the window's start; the topic is not given, so SQLite may as well scan the
    finished rows: a development database's). A job's age is measured in days by
    ``julianday`` (its text to the millisecond) and its bucket clamped to
    ``0 .. p_buckets - 1``: a job finished after this statement's ``'now'`` is in
    bucket 0."""
    t = table.c
    window = bindparam("p_window_seconds", type_=Float())
    buckets = bindparam("p_buckets", type_=Integer())
    age = (func.julianday("now") - func.julianday(t.finished_at)) * 86400.0
    bucket = func.max(0, func.min(buckets - 1, cast(age * buckets / window, Integer())))
    failed = case((t.state == _state(JobState.FAILED), 1), else_=0)
    in_bucket = literal_column("bucket", Integer())
    return (
        select(
            bucket.label("bucket"),
            func.count().label("finished"),
            func.sum(failed).label("failed"),
        )
        .where(_finished(table), t.finished_at >= _after_seconds(-window))
        .group_by(in_bucket)
        .order_by(in_bucket)
    )


def _prune(table: Table, state: JobState) -> Delete:
    """Delete one bounded batch of ``state`` jobs of one topic, finished before the
    TTL, oldest first (read from ``ix_<table>_finished`` / ``ix_<table>_failed``).
    One statement: nothing else writes while it runs, so no row lock is needed."""
    t = table.c
    cutoff = _after_seconds(-bindparam("p_ttl_seconds", type_=Float()))
    expired = (
        select(t.id)
        .where(
            t.topic == bindparam("p_topic", type_=Text()),
            t.state == _state(state),
            t.finished_at < cutoff,
        )
        .order_by(t.finished_at)
        .limit(bindparam("p_limit", type_=Integer()))
    )
    return delete(table).where(t.id.in_(expired))


def _maintenance_statements(table: Table) -> dict[str, Any]:
    t = table.c
    return {
        "stats_all": stats_statement(table, _STATS_CLOCK, one_topic=False),
        "stats_topic": stats_statement(table, _STATS_CLOCK, one_topic=True),
        "throughput": _throughput(table),
        "finished_topics": select(t.topic).where(_finished(table)).distinct().order_by(t.topic),
        "prune_completed": _prune(table, JobState.COMPLETED),
        "prune_failed": _prune(table, JobState.FAILED),
        "cancelled_topics": select(t.topic)
        .where(t.state == _state(JobState.CANCELLED))
        .distinct()
        .order_by(t.topic),
        "prune_cancelled": _prune(table, JobState.CANCELLED),
        # No advisory locks on SQLite: the prune lock is the database's write lock.
        # A prune batch runs this first in its transaction: a write of one row that
        # changes nothing, so the batch holds the write lock from its start (waiting
        # the busy timeout for it) and its DELETE never finds the snapshot its reads
        # saw outdated (SQLITE_BUSY_SNAPSHOT). Batches of several pruners thus run one
        # after the other and delete disjoint rows. On an empty table it returns no
        # row, yet took the write lock all the same (read as "taken").
        "try_prune_lock": update(table)
        .where(t.id == select(t.id).limit(1).scalar_subquery())
        .values(id=t.id)
        .returning(literal(True)),
    }
