"""Every SQL statement of the queue, as SQLAlchemy Core, built once per jobs table.

This is the only module that writes SQL. The sync :class:`~programma_sa.JobQueue`
and the asyncio :class:`~programma_sa.aio.AsyncJobQueue` execute these very objects
with bound parameters, so each statement is compiled once and then served from
SQLAlchemy's compiled cache.

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
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Delete,
    Float,
    Integer,
    Interval,
    Select,
    Table,
    Text,
    Update,
    bindparam,
    case,
    cast,
    column,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.sql.dml import Insert

from .models import CLAIMABLE_STATES, JobState

__all__ = ["Statements", "notify_channel"]

_TIMESTAMPTZ = DateTime(timezone=True)
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


def notify_channel(table: Table) -> str:
    """The LISTEN/NOTIFY channel on which enqueues into ``table`` are announced.

    The payload of each notification is the job's topic.
    """
    return f"programma:{table.fullname}"[:63]


@dataclass(frozen=True)
class Statements:
    """The statements for one jobs table. Get them with :meth:`for_table`."""

    table: Table
    insert_one: Insert
    insert_one_notify: Select[tuple[object]]
    insert_many: Insert
    insert_many_notify: Select[tuple[object]]
    claim: Update
    move_to_processing: Update
    move_to_completed: Update
    move_to_failed: Update
    delete_by_id: Delete
    set_attributes: Update
    set_retry_after_seconds: Update
    set_start_after: Update
    get_by_id: Select[tuple[object, ...]]

    @classmethod
    @functools.cache
    def for_table(cls, table: Table) -> Statements:
        """Build (once per table, then cached) every statement for ``table``."""
        t = table.c
        insert_one = insert(table).values(
            id=bindparam("p_id", type_=UUID(as_uuid=True)),
            topic=bindparam("p_topic", type_=Text()),
            data=cast(bindparam("p_data", type_=Text()), JSONB),
            attributes=cast(bindparam("p_attributes", type_=Text()), JSONB),
            # run_after_date wins over run_after_seconds (the seed's precedence).
            start_after=func.coalesce(
                bindparam("p_run_after_date", type_=_TIMESTAMPTZ),
                _after_seconds(bindparam("p_run_after_seconds", type_=Float())),
            ),
            retry_after_seconds=bindparam("p_retry_after_seconds", type_=Integer()),
        )

        # Bulk enqueue: one INSERT … SELECT FROM unnest(arrays), one round trip and
        # one statement however many jobs. The casts give PostgreSQL the array
        # types even when every element is NULL.
        rows = (
            func.unnest(
                cast(bindparam("p_ids"), ARRAY(UUID(as_uuid=True))),
                cast(bindparam("p_datas"), ARRAY(Text())),
                cast(bindparam("p_attributes"), ARRAY(Text())),
                cast(bindparam("p_run_after_dates"), ARRAY(_TIMESTAMPTZ)),
                cast(bindparam("p_run_after_seconds"), ARRAY(Float())),
                cast(bindparam("p_retry_after_seconds"), ARRAY(Integer())),
            )
            .table_valued(
                column("id", UUID(as_uuid=True)),
                column("data", Text()),
                column("attributes", Text()),
                column("run_after_date", _TIMESTAMPTZ),
                column("run_after_seconds", Float()),
                column("retry_after_seconds", Integer()),
            )
            .render_derived(name="job")
        )
        insert_many = insert(table).from_select(
            ["id", "topic", "data", "attributes", "start_after", "retry_after_seconds"],
            select(
                rows.c.id,
                bindparam("p_topic", type_=Text()),
                cast(rows.c.data, JSONB),
                cast(rows.c.attributes, JSONB),
                func.coalesce(rows.c.run_after_date, _after_seconds(rows.c.run_after_seconds)),
                rows.c.retry_after_seconds,
            ),
        )

        # The claim: pick due jobs FIFO and lease them, in one round trip.
        # FOR UPDATE SKIP LOCKED: concurrent claimers skip rows another transaction
        # has locked instead of waiting, so no two claims take the same job while a
        # claim's transaction is open. Under READ COMMITTED a row updated by a claim
        # that committed meanwhile is re-checked against the WHERE clause (its new
        # state/start_after) before it is locked, so a freshly leased job is not
        # taken again.
        picked = (
            select(t.id, t.start_after)
            .where(
                t.topic == bindparam("p_topic", type_=Text()),
                t.state.in_([_state(JobState(state)) for state in CLAIMABLE_STATES]),
                t.start_after <= _db_now(),
            )
            .order_by(t.start_after, t.id)
            .limit(bindparam("p_max_jobs", type_=Integer()))
            .with_for_update(skip_locked=True)
            .cte("picked")
        )
        claim = (
            update(table)
            .where(t.id == picked.c.id)
            .values(
                state=_state(JobState.ACTIVE),
                started_at=_db_now(),
                attempts=t.attempts + 1,
                # The visibility timeout: the job is claimable again after
                # retry_after_seconds unless it is moved out of ACTIVE first.
                # NULL retry_after_seconds gives NULL: never redelivered.
                start_after=_after_seconds(t.retry_after_seconds),
            )
            .returning(*table.c, picked.c.start_after.label("due_at"))
        )

        by_id = t.id == bindparam("p_job_id", type_=UUID(as_uuid=True))

        def move_to(state: JobState) -> Update:
            finished_at = _db_now() if state in (JobState.COMPLETED, JobState.FAILED) else None
            return update(table).where(by_id).values(state=_state(state), finished_at=finished_at)

        retry = bindparam("p_retry_after_seconds", type_=Integer())
        return cls(
            table=table,
            insert_one=insert_one,
            insert_one_notify=_with_notify(insert_one, table),
            insert_many=insert_many,
            insert_many_notify=_with_notify(insert_many, table),
            claim=claim,
            move_to_processing=move_to(JobState.PROCESSING),
            move_to_completed=move_to(JobState.COMPLETED),
            move_to_failed=move_to(JobState.FAILED),
            delete_by_id=delete(table).where(by_id),
            set_attributes=update(table)
            .where(by_id)
            .values(
                attributes=func.coalesce(t.attributes, cast("{}", JSONB)).op("||")(
                    cast(bindparam("p_attributes", type_=Text()), JSONB)
                )
            ),
            # A leased (ACTIVE) job's lease is re-measured from its claim with the
            # new timeout, so a handler can lengthen or shorten its own backoff.
            set_retry_after_seconds=update(table)
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
            set_start_after=update(table)
            .where(by_id)
            .values(start_after=bindparam("p_start_after", type_=_TIMESTAMPTZ)),
            get_by_id=select(*table.c).where(by_id),
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
