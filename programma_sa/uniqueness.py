"""Unique jobs: the states a key is held in, the conflict policies, and derived keys.

A job enqueued with a ``unique_key`` holds that key while its state is one of its
``unique_states`` (default: :data:`UNFINISHED` — created, active, processing). At
most one job holds a key at a time: the database enforces it with the partial
unique index ``uq_<table>_unique_key``, so two enqueues racing for one key cannot
both succeed. What an enqueue of a held key does is its ``on_conflict``
(:data:`OnConflict`): ``"keep"`` the holder and return its id, ``"replace"`` the
holder's data and start time (while it is still waiting), or ``"raise"``
:class:`~programma_sa.DuplicateJob`. See ``docs/unique-jobs.md``.

:func:`unique_key` derives a key from chosen fields of a job's data and an optional
time period: the key of "one job per order per hour" is
``unique_key("send-receipt", data, fields=["order"], period=3600)``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from . import _validation as check
from .exceptions import InvalidJobInput
from .models import JobState

__all__ = [
    "ALL_STATES",
    "CONFLICT_POLICIES",
    "UNFINISHED",
    "OnConflict",
    "check_on_conflict",
    "check_period",
    "check_unique_states",
    "states_literal",
    "unique_key",
]

#: What an enqueue does when its unique key is held: keep the holder (and return its
#: id), replace the holder's settings while it waits, or raise DuplicateJob.
OnConflict = Literal["keep", "replace", "raise"]
CONFLICT_POLICIES: tuple[OnConflict, ...] = ("keep", "replace", "raise")

#: The default ``unique_states``: a key is free again once its job finished.
UNFINISHED: tuple[JobState, ...] = (JobState.CREATED, JobState.ACTIVE, JobState.PROCESSING)
#: Every state: a key is never free again while its job exists (until it is pruned).
ALL_STATES: tuple[JobState, ...] = tuple(JobState)

# The state a job passes through right before each state (the lifecycle's order).
_BEFORE = {
    JobState.ACTIVE: JobState.CREATED,
    JobState.PROCESSING: JobState.ACTIVE,
    JobState.COMPLETED: JobState.PROCESSING,
    JobState.FAILED: JobState.PROCESSING,
    # Cancelled from any unfinished state: it needs the last of them (and so all).
    JobState.CANCELLED: JobState.PROCESSING,
}


def check_on_conflict(value: object) -> OnConflict:
    """One of :data:`CONFLICT_POLICIES`."""
    if value not in CONFLICT_POLICIES:
        raise InvalidJobInput(
            f"on_conflict must be one of {', '.join(CONFLICT_POLICIES)}, got {value!r}"
        )
    return value


def check_unique_states(value: object) -> tuple[JobState, ...]:
    """The states a unique job holds its key in, in lifecycle order.

    They must include ``created`` (a job holds its key from its enqueue) and, with
    each state, the one before it (created → active → processing → completed |
    failed | cancelled; cancelled needs processing, as a job is cancelled from any
    unfinished state): a job that left its states never enters them again, so no state change
    of the worker can collide with a job enqueued meanwhile under the same key.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        raise InvalidJobInput(f"unique_states must be a collection of job states, got {value!r}")
    states: set[JobState] = set()
    for item in value:
        try:
            states.add(JobState(item))
        except ValueError:
            raise InvalidJobInput(
                f"unique_states: {item!r} is not a job state; the states are "
                f"{', '.join(state.value for state in JobState)}"
            ) from None
    missing = [
        f"{_BEFORE[state].value} (before {state.value})"
        for state in JobState
        if state in states and state in _BEFORE and _BEFORE[state] not in states
    ]
    if JobState.CREATED not in states or missing:
        raise InvalidJobInput(
            "unique_states must include created and, with each state, the one before it "
            "(created → active → processing → completed | failed | cancelled), so that a "
            f"job never takes its key back once it left them; got {sorted(s.value for s in states)}"
            + (f", missing {', '.join(missing)}" if missing else "")
        )
    return tuple(state for state in JobState if state in states)


def states_literal(states: Sequence[JobState]) -> str:
    """``states`` as a PostgreSQL array literal (plain words: no quoting needed)."""
    return "{" + ",".join(state.value for state in states) + "}"


_CANONICAL = json.JSONEncoder(
    sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":")
)


def unique_key(
    name: str,
    data: Any = None,
    *,
    fields: Sequence[str] | None = None,
    period: timedelta | float | None = None,
    at: datetime | None = None,
) -> str:
    """A unique key derived from ``data`` (or chosen ``fields`` of it) and a time period.

    The key is ``"<name>:<digest>"``, the digest a SHA-256 of the canonical JSON of
    the chosen data (keys sorted) and of the period the moment ``at`` falls in. Equal
    inputs give equal keys in any process; the same data in another ``name`` (a
    topic, a task) gives another key.

    :param name: what the key is scoped to (a topic or a task name); non-empty.
    :param data: a job's data: any JSON value, or a mapping when ``fields`` is given.
    :param fields: the top-level fields of ``data`` the key depends on (each must be
        present); ``None``: all of ``data``.
    :param period: with it, the key changes from one period to the next: periods are
        this many seconds (or this ``timedelta``) long, counted from the Unix epoch
        in UTC — ``period=3600`` gives one key per clock hour.
    :param at: the moment whose period counts (an aware ``datetime``); default: now,
        by this host's clock.
    :raises InvalidJobInput: a bad argument, named.
    """
    if not isinstance(name, str) or not name:
        raise InvalidJobInput(f"unique_key: name must be a non-empty string, got {name!r}")
    chosen: Any = data
    if fields is not None:
        if isinstance(fields, str) or not isinstance(fields, Sequence):
            raise InvalidJobInput(f"unique_key: fields must be a list of names, got {fields!r}")
        if not isinstance(data, Mapping):
            raise InvalidJobInput(
                f"unique_key: fields need data to be a mapping, got {type(data).__name__}"
            )
        missing = [field for field in fields if field not in data]
        if missing:
            raise InvalidJobInput(f"unique_key: data has no field {missing[0]!r}")
        chosen = {field: data[field] for field in fields}
    document: dict[str, Any] = {"data": chosen}
    if period is not None:
        document["period"] = _period_index(period, at)
    elif at is not None:
        raise InvalidJobInput("unique_key: at is only meaningful with a period")
    try:
        text = _CANONICAL.encode(document)
    except (TypeError, ValueError) as error:
        raise InvalidJobInput(f"unique_key: data is not JSON-serialisable: {error}") from error
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
    return check.check_unique_key(f"{name}:{digest}")


def check_period(period: object, where: str) -> float:
    """A key's time period in seconds: a positive number of seconds or a ``timedelta``
    (``where``: how an error names it)."""
    seconds = period.total_seconds() if isinstance(period, timedelta) else period
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise InvalidJobInput(
            f"{where}: period must be a positive number of seconds or a timedelta, got {period!r}"
        )
    return seconds


def _period_index(period: timedelta | float, at: datetime | None) -> int:
    seconds = check_period(period, "unique_key")
    moment = datetime.now(timezone.utc) if at is None else check.start_date(at, "unique_key: at")
    # Whole microseconds since the epoch, so the period boundaries are exact.
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return micros // round(seconds * 1_000_000)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
