"""What differs on MariaDB (docs/mariadb.md), on the MariaDB pass's own database.

The held key MariaDB names, times to the microsecond in UTC, topics compared byte for
byte, the top-level attribute merge made on the locked row, and the refused LISTEN URL.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import ConfigurationError, DuplicateJob, JobContext, JobQueue, Worker

from ..app import Job

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


def test_attributes_merge_at_the_top_level_keeping_nulls(session: Session, queue: JobQueue) -> None:
    job_id = queue.add_job(
        session, "t", 1, attributes={"keep": True, "nested": {"a": 1}, "gone": "x"}
    )
    queue.set_attributes(session, job_id, {"nested": {"b": None}, "gone": None, "n": 1.5})
    job = queue.get_job(session, job_id)
    assert job is not None
    assert job.attributes == {"keep": True, "nested": {"b": None}, "gone": None, "n": 1.5}


def test_a_listen_url_naming_mariadb_is_refused(shared_engine: Engine, database_url: str) -> None:
    def handler(ctx: JobContext) -> None:
        pass

    with pytest.raises(ConfigurationError) as refused:
        Worker(JobQueue(Job), shared_engine, "t", handler, database_url=database_url)
    assert str(refused.value) == (
        "database_url names a MariaDB database, which has no LISTEN/NOTIFY to wake a worker: "
        "on MariaDB workers poll every heartbeat (docs/mariadb.md); leave database_url unset "
        "or set listen=False"
    )
    # Bound to MariaDB without a database_url, a worker polls.
    assert Worker(JobQueue(Job), shared_engine, "t", handler).listener is None
