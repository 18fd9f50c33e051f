"""What differs on MariaDB (docs/mariadb.md), on the MariaDB pass's own database.

The held key MariaDB names, times to the microsecond in UTC, topics compared byte for
byte, and JSON nested deeper than MariaDB stores refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.orm import Session

from programma_sa import (
    DuplicateJob,
    InvalidJobInput,
    JobQueue,
    JobSpec,
)
from programma_sa._drivers.mariadb import MAX_JSON_DEPTH

from ..helpers import job_count

pytestmark = pytest.mark.databases("mariadb", reason="MariaDB's own behaviour")


def test_a_held_key_is_duplicate_job_naming_the_key(session: Session, queue: JobQueue) -> None:
    queue.add_job(session, "t", 1, unique_key="order-42")
    with pytest.raises(DuplicateJob) as refused:
        queue.add_job(session, "t", 2, unique_key="order-42", on_conflict="raise")
    assert refused.value.unique_key == "order-42"
    assert str(refused.value) == (
        "a job with unique key 'order-42' is already enqueued in programma_jobs "
        '(unique_key held by a job in one of its unique_states): (1062, "Duplicate entry '
        "'order-42' for key 'uq_programma_jobs_unique_key'\")"
    )


def test_times_keep_microseconds_and_come_back_in_utc(session: Session, queue: JobQueue) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    job_id = queue.add_job(session, "t", 1, run_after_date=when)
    job = queue.get_job(session, job_id)
    assert job is not None and job.start_after == when
    assert job.start_after.tzinfo == timezone.utc
    assert job.start_after.hour == 1


def test_topics_are_compared_byte_for_byte(session: Session, queue: JobQueue) -> None:
    queue.add_job(session, "Orders", 1)
    queue.add_job(session, "orders", 2)
    assert [job.data for job in queue.claim_jobs(session, "orders")] == [2]
    assert [job.data for job in queue.claim_jobs(session, "Orders")] == [1]


def _nested(depth: int) -> Any:
    """A JSON value ``depth`` levels deep: a scalar in ``depth - 1`` arrays and objects."""
    value: Any = "bottom"
    for level in range(depth - 1):
        value = [value] if level % 2 else {"level": value}
    return value


#: Ways a job's JSON reaches the database: one job, a bulk batch (rows with every
#: setting), a unique batch (short rows, the settings shared), a merge of attributes.
_WRITES: dict[str, Callable[[JobQueue, Session, Any], object]] = {
    "add_job data": lambda q, s, v: q.add_job(s, "t", v),
    "add_job attributes": lambda q, s, v: q.add_job(s, "t", 1, attributes={"a": v}),
    "add_jobs": lambda q, s, v: q.add_jobs(s, "t", [JobSpec(1), JobSpec(v, priority=2)]),
    "add_jobs unique": lambda q, s, v: q.add_jobs(
        s, "t", [JobSpec(1, unique_key="a"), JobSpec(v, unique_key="b")]
    ),
}
_WHAT = {
    "add_job data": "data",
    "add_job attributes": "attributes",
    "add_jobs": "a job's data or attributes",
    "add_jobs unique": "a job's data or attributes",
}


@pytest.mark.parametrize("write", list(_WRITES))
def test_json_as_deep_as_mariadb_stores_round_trips(
    session: Session, queue: JobQueue, write: str
) -> None:
    # The attributes hold the value one level down, in {"a": ...}.
    deepest = MAX_JSON_DEPTH - (write == "add_job attributes")
    _WRITES[write](queue, session, _nested(deepest))
    stored = [job.data for job in queue.list_jobs(session, topic="t").jobs]
    attributes = [job.attributes for job in queue.list_jobs(session, topic="t").jobs]
    assert _nested(deepest) in stored or {"a": _nested(deepest)} in attributes


@pytest.mark.parametrize("write", list(_WRITES))
def test_json_nested_deeper_is_refused_before_anything_is_written(
    session: Session, queue: JobQueue, write: str
) -> None:
    deeper = MAX_JSON_DEPTH + 1 - (write == "add_job attributes")
    with pytest.raises(InvalidJobInput) as refused:
        _WRITES[write](queue, session, _nested(deeper))
    assert str(refused.value) == (
        f"{_WHAT[write]}: JSON nested 31 levels deep; MariaDB stores a job's data and "
        "attributes nested at most 30 levels deep"
    )
    assert job_count(session) == 0


def test_attributes_set_deeper_are_refused(session: Session, queue: JobQueue) -> None:
    job_id = queue.add_job(session, "t", 1)
    with pytest.raises(InvalidJobInput) as refused:
        queue.set_attributes(session, job_id, {"a": _nested(MAX_JSON_DEPTH)})
    assert str(refused.value) == (
        "attributes: JSON nested 31 levels deep; MariaDB stores a job's data and "
        "attributes nested at most 30 levels deep"
    )
