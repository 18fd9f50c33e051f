"""The statistics statement: one shape for every driver, built from its own clock.

Per-topic statistics in one statement (one snapshot, one round trip). Each branch
reads only the rows of the states it counts, through the partial index whose
predicate matches them, so finished rows never cost a table scan:

* CREATED/ACTIVE — ``ix_<table>_claim`` (the claim's own index);
* PROCESSING — ``ix_<table>_processing`` (index-only: topic, started_at);
* COMPLETED+FAILED — ``ix_<table>_finished`` (index-only: topic, finished_at);
* FAILED — ``ix_<table>_failed`` (index-only); COMPLETED = finished - failed;
* CANCELLED — ``ix_<table>_cancelled`` (index-only).

The finished branches read their rows ``ORDER BY topic, finished_at``, the order of
those indexes: counting most of a table, PostgreSQL's cost model (random_page_cost
4) would otherwise prefer reading the whole table over an index-only scan of an index
a fraction of its size; with the order asked for, the table path needs a sort of
every finished row and loses. The index-only scan reads the index and the visibility
map, and the heap only for pages changed since the last VACUUM.
(tests/maintenance/test_plans.py checks the plans.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Select,
    Table,
    Text,
    bindparam,
    func,
    literal_column,
    select,
    true,
    union_all,
)

from ..models import JobState
from .base import STATS_COUNTS, STATS_TIMES

__all__ = ["StatsClock", "stats_statement"]


@dataclass(frozen=True)
class StatsClock:
    """What the statistics need of one database: its time, in its own terms."""

    #: The database's time now (the type reads it as an aware datetime).
    now: Callable[[], ColumnElement[Any]]
    #: ``seconds`` before now.
    seconds_ago: Callable[[ColumnElement[Any]], ColumnElement[Any]]
    #: A NULL of the time type (a branch that measures no time).
    no_time: Callable[[], ColumnElement[Any]]
    #: A time measured from the table, read as an aware datetime.
    as_time: Callable[[ColumnElement[Any]], ColumnElement[Any]]
    #: A job state as an inlined literal (the partial indexes' predicates).
    state: Callable[[JobState], ColumnElement[str]]
    #: The claim index's and the finished index's predicates.
    claimable: Callable[[Table], ColumnElement[bool]]
    finished: Callable[[Table], ColumnElement[bool]]


def _branch(
    clock: StatsClock, topic: ColumnElement[Any], **measured: ColumnElement[Any]
) -> list[Any]:
    """One UNION ALL branch's select list: ``topic``, :data:`STATS_COUNTS`, :data:`STATS_TIMES`."""
    columns: list[Any] = [topic.label("topic")]
    for name in STATS_COUNTS:
        columns.append(measured.get(name, literal_column("0", BigInteger())).label(name))
    for name in STATS_TIMES:
        time = measured.get(name)
        columns.append((clock.no_time() if time is None else clock.as_time(time)).label(name))
    return columns


def stats_statement(
    table: Table, clock: StatsClock, *, one_topic: bool
) -> Select[tuple[object, ...]]:
    """The statistics of ``table`` (of the topic ``p_topic`` when ``one_topic``)."""
    t = table.c
    state = clock.state
    now = clock.now()
    topic_filter = [t.topic == bindparam("p_topic", type_=Text())] if one_topic else []
    due = t.start_after <= now
    live = (
        select(
            *_branch(
                clock,
                t.topic,
                created=func.count().filter(t.state == state(JobState.CREATED)),
                active=func.count().filter(t.state == state(JobState.ACTIVE)),
                due=func.count().filter(due),
                # ACTIVE and due again: its lease ran out before the handler moved it on.
                expired_leases=func.count().filter(t.state == state(JobState.ACTIVE), due),
                oldest_due_at=func.min(t.start_after).filter(due),
            )
        )
        .where(clock.claimable(table), *topic_filter)
        .group_by(t.topic)
    )
    processing = (
        select(
            *_branch(
                clock,
                t.topic,
                processing=func.count(),
                oldest_processing_at=func.min(t.started_at),
            )
        )
        .where(t.state == state(JobState.PROCESSING), *topic_filter)
        .group_by(t.topic)
    )
    window_start = clock.seconds_ago(bindparam("p_window_seconds", type_=Float()))

    def finished_branch(states: ColumnElement[bool], total: str, recent: str) -> Select[Any]:
        rows = (
            select(t.topic, t.finished_at)
            .where(states, *topic_filter)
            .order_by(t.topic, t.finished_at)  # the index's order, see the module docs
            .subquery()
        )
        return select(
            *_branch(
                clock,
                rows.c.topic,
                **{
                    total: func.count(),
                    recent: func.count().filter(rows.c.finished_at >= window_start),
                },
            )
        ).group_by(rows.c.topic)

    counts = union_all(
        live,
        processing,
        finished_branch(clock.finished(table), "finished", "finished_recently"),
        finished_branch(t.state == state(JobState.FAILED), "failed", "failed_recently"),
        finished_branch(t.state == state(JobState.CANCELLED), "cancelled", "cancelled_recently"),
    ).subquery("counts")
    # The clock row makes the statement return the database time even when no
    # topic has a job (an unknown topic reads as zeros measured at that time).
    measured = select(now.label("measured_at")).subquery("clock")
    return select(measured.c.measured_at, *(c for c in counts.c)).select_from(
        measured.outerjoin(counts, true())
    )
