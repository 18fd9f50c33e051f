"""The predicates of a listing's (or a re-run's) criteria, and what a re-run writes:
one shape for every driver.

A :class:`~.base.JobsShape` says which criteria a call gives; :func:`shape_filters`
makes each given one a predicate, with the few terms that differ from one database
to another (:class:`ShapeTerms`): how a state is inlined, the bound type of a time,
where the last error's type is kept, and what "the attributes contain" means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Integer,
    Table,
    Text,
    bindparam,
    literal_column,
    null,
)
from sqlalchemy.types import TypeEngine

from ..models import JobState
from .base import JobsShape

__all__ = ["ShapeTerms", "rerun_values", "shape_filters", "states_filter"]


@dataclass(frozen=True)
class ShapeTerms:
    """What the criteria need of one database."""

    #: A job state as an inlined literal (the partial indexes' predicates).
    state: Callable[[JobState], ColumnElement[str]]
    #: The type a time bound is sent as.
    time: TypeEngine[Any]
    #: The type recorded in ``attributes.last_error`` of the table's rows.
    error_type: Callable[[Table], ColumnElement[Any]]
    #: The row's attributes contain the JSON object (text) ``wanted``.
    contains: Callable[[Table, ColumnElement[Any]], ColumnElement[bool]]


def states_filter(
    source: FromClause, states: tuple[str, ...], terms: ShapeTerms
) -> ColumnElement[bool]:
    """``state`` is one of ``states``, inlined so a partial index can match."""
    return source.c.state.in_([terms.state(JobState(state)) for state in states])


def shape_filters(table: Table, shape: JobsShape, terms: ShapeTerms) -> list[ColumnElement[bool]]:
    """The predicates of the criteria a listing (or a re-run by filter) gives."""
    t = table.c
    filters: list[ColumnElement[bool]] = []
    if shape.states is not None:
        filters.append(states_filter(table, shape.states, terms))
    if shape.topic:
        filters.append(t.topic == bindparam("p_topic", type_=Text()))
    bounds = [
        ("created_after", t.created_at, ">="),
        ("created_before", t.created_at, "<"),
        ("finished_after", t.finished_at, ">="),
        ("finished_before", t.finished_at, "<"),
    ]
    for name, moment, operator in bounds:
        if getattr(shape, name):
            filters.append(moment.op(operator)(bindparam(f"p_{name}", type_=terms.time)))
    if shape.error_type:
        filters.append(terms.error_type(table) == bindparam("p_error_type", type_=Text()))
    if shape.attributes:
        filters.append(terms.contains(table, bindparam("p_attributes", type_=Text())))
    return filters


def rerun_values(state: ColumnElement[str], now: ColumnElement[Any]) -> dict[str, Any]:
    """A re-run: a new job as enqueued ``now`` (``state``: CREATED, as the driver
    inlines it), with a fresh attempt budget. Its data and attributes stay
    (``last_error`` tells what happened before)."""
    return {
        "state": state,
        "attempts": literal_column("0", Integer()),
        "start_after": now,
        "started_at": null(),
        "finished_at": null(),
        "result": null(),
    }
