"""Every ``JobQueue`` method on a Core ``Connection``: the caller's transaction, never ours.

An application without the ORM (or an enqueue that should not pay for a Session)
hands the queue a ``Connection``. The statements are the Session path's; what is
checked here is that each method works on one, that its writes live and die with
the caller's transaction, and that nothing in the library commits, begins or ends it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Connection, Engine, func, insert, select

from programma_sa import (
    TTL,
    DuplicateJob,
    InvalidJobInput,
    JobQueue,
    JobSpec,
    JobState,
    Retention,
)

from ..app import Job, Order

JOBS = Job.__table__
ORDERS = Order.__table__


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction the test ends (``engine`` empties the tables after)."""
    with engine.connect() as connection:
        yield connection


def jobs_committed(engine: Engine) -> int:
    with engine.connect() as other:
        return other.scalar(select(func.count()).select_from(JOBS)) or 0


def test_an_enqueue_beside_a_core_insert_commits_with_it(
    engine: Engine, queue: JobQueue, connection: Connection
) -> None:
    with connection.begin():
        connection.execute(insert(ORDERS).values(id=1, note="paid"))
        job_id = queue.add_job(connection, "send-receipt", {"order": 1})
        assert connection.in_transaction()  # the queue left the caller's transaction open
        assert jobs_committed(engine) == 0  # not visible before the caller commits
    assert jobs_committed(engine) == 1
    job = queue.get_job(connection, job_id)
    assert job is not None and job.data == {"order": 1} and job.state is JobState.CREATED


def test_a_rolled_back_transaction_takes_its_jobs_with_it(
    engine: Engine, queue: JobQueue, connection: Connection
) -> None:
    transaction = connection.begin()
    connection.execute(insert(ORDERS).values(id=2))
    queue.add_job(connection, "send-receipt", {"order": 2})
    queue.add_jobs(connection, "send-receipt", [{"data": 3}, JobSpec(data=4)])
    transaction.rollback()
    assert jobs_committed(engine) == 0
    with engine.connect() as other:
        assert other.scalar(select(func.count()).select_from(ORDERS)) == 0


def test_every_method_on_a_connection(queue: JobQueue, connection: Connection) -> None:
    with connection.begin():
        first, second, third = queue.add_jobs(
            connection, "t", [{"data": 1}, {"data": 2, "priority": 5}, {"data": 3}]
        )
        (claimed,) = queue.claim_jobs(connection, "t", max_jobs=1)
        assert claimed.id == second  # the higher priority first
        assert queue.move_job_to_processing(connection, second) is True
        assert queue.move_job_to_done(connection, second) is True
        assert queue.move_job_to_failed(connection, first) is True
        assert queue.set_attributes(connection, third, {"step": "x"}) is True
        assert queue.set_retry_after_seconds(connection, third, 7) is True
        # To the millisecond: SQLite keeps no finer time (docs/sqlite.md).
        later = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=1000)
        assert queue.set_job_start_date(connection, third, later) is True
        job = queue.get_job(connection, third)
        assert job is not None
        assert (job.attributes, job.retry_after_seconds, job.start_after) == (
            {"step": "x"},
            7,
            later,
        )
        listed = queue.list_jobs(connection, topic="t").jobs
        assert [job.id for job in listed] == [third, second, first]  # newest first
        counts = queue.stats(connection, "t").topic("t")
        assert (counts.created, counts.completed, counts.failed) == (1, 1, 1)
        pruned = queue.prune(connection, Retention(TTL(completed=0, failed=0)))
        assert pruned == 2
        assert queue.delete_job(connection, third) is True
        assert queue.list_jobs(connection).jobs == []


def test_bad_input_is_refused_before_anything_is_sent_and_the_transaction_goes_on(
    engine: Engine, queue: JobQueue, connection: Connection
) -> None:
    with connection.begin():
        with pytest.raises(InvalidJobInput, match=r"^topic must not be empty$"):
            queue.add_job(connection, "", {})
        queue.add_job(connection, "t", {})  # nothing aborted the transaction
    assert jobs_committed(engine) == 1


@pytest.mark.databases(
    "postgresql",
    "mariadb",
    reason="PostgreSQL and MariaDB name the held key; SQLite does not (test_sqlite.py)",
)
def test_a_held_unique_key_raises_duplicate_job(queue: JobQueue, connection: Connection) -> None:
    with connection.begin():
        kept = queue.add_job(connection, "t", {}, unique_key="k")
        assert queue.add_job(connection, "t", {}, unique_key="k") == kept
        with pytest.raises(DuplicateJob) as refused:
            queue.add_job(connection, "t", {}, unique_key="k", on_conflict="raise")
        assert refused.value.unique_key == "k"


def test_commit_as_you_go_the_caller_decides(
    engine: Engine, queue: JobQueue, connection: Connection
) -> None:
    queue.add_job(connection, "t", {"kept": False})  # autobegins the caller's transaction
    assert connection.in_transaction()
    connection.rollback()
    queue.add_job(connection, "t", {"kept": True})
    connection.commit()
    assert [job.data for job in queue.list_jobs(connection).jobs] == [{"kept": True}]
    assert jobs_committed(engine) == 1


def test_on_an_autocommit_connection_a_job_on_its_own_is_committed_by_its_statement(
    engine: Engine, queue: JobQueue
) -> None:
    with engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        job_id = queue.add_job(autocommit, "t", {"alone": True})
        assert jobs_committed(engine) == 1
        (claimed,) = queue.claim_jobs(autocommit, "t")
        assert claimed.id == job_id
        assert queue.move_job_to_done(autocommit, job_id) is True
    with engine.connect() as other:
        job = queue.get_job(other, job_id)
    assert job is not None and job.state is JobState.COMPLETED
