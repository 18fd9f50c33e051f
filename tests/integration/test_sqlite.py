"""What differs on SQLite (docs/sqlite.md), each on a SQLite database file of the test's own.

These run in every pass of the suite, whatever its test database: the held key
SQLite does not name, times to the millisecond, the refused LISTEN URL (and MariaDB's,
in the MariaDB pass), and a claim in a transaction that read before another writer
committed (refused at once, unless the transaction began IMMEDIATE).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.orm import Session

from programma_sa import (
    ConfigurationError,
    DatabaseError,
    DuplicateJob,
    JobContext,
    JobQueue,
    Worker,
    migrations,
)
from programma_sa.cli import build_parser, engine_for

from ..app import Job


def _transactions(engine: Engine, begin: str) -> Engine:
    """docs/sqlite.md's engine recipe: our own ``begin`` statement, WAL, a busy timeout."""

    @event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        for pragma in ("journal_mode = WAL", "busy_timeout = 5000"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def do_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrations.upgrade(url)
    return url


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = _transactions(create_engine(sqlite_url), "BEGIN")
    yield engine
    engine.dispose()


def test_a_held_key_is_duplicate_job_without_the_key(sqlite_engine: Engine) -> None:
    queue = JobQueue(Job)
    with Session(sqlite_engine) as session, session.begin():
        queue.add_job(session, "t", 1, unique_key="order-42")
        with pytest.raises(DuplicateJob) as refused:
            queue.add_job(session, "t", 2, unique_key="order-42", on_conflict="raise")
    assert refused.value.unique_key is None  # SQLite's error does not say which
    assert str(refused.value) == (
        "a job with unique key None is already enqueued in programma_jobs (unique_key held by "
        "a job in one of its unique_states): UNIQUE constraint failed: programma_jobs.unique_key"
    )


def test_times_are_utc_to_the_millisecond(sqlite_engine: Engine) -> None:
    queue = JobQueue(Job)
    paris = timezone(timedelta(hours=1))
    when = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=paris)
    with Session(sqlite_engine) as session, session.begin():
        job_id = queue.add_job(session, "t", 1, run_after_date=when)
        job = queue.get_job(session, job_id)
    assert job is not None
    assert job.start_after == datetime(2031, 5, 6, 6, 8, 9, 123000, tzinfo=timezone.utc)
    assert job.created_at.tzinfo is timezone.utc


#: The databases without LISTEN/NOTIFY: their names in the refusal, and their docs.
_POLLING = {"sqlite": ("SQLite", "docs/sqlite.md"), "mariadb": ("MariaDB", "docs/mariadb.md")}
#: Each one's engine and URL: SQLite's a file of the test's own, MariaDB's the pass's.
_POLLING_FIXTURES = {
    "sqlite": ("sqlite_engine", "sqlite_url"),
    "mariadb": ("shared_engine", "database_url"),
}


@pytest.mark.parametrize(
    "database",
    [
        "sqlite",  # a SQLite file of the test's own, in every pass
        pytest.param(
            "mariadb",
            marks=pytest.mark.databases("mariadb", reason="the MariaDB pass's database"),
        ),
    ],
)
def test_a_listen_url_naming_a_database_without_notify_is_refused(
    request: pytest.FixtureRequest, database_url: str, database: str
) -> None:
    # database_url, the pass's database (MariaDB's in the MariaDB pass), named in the
    # signature: a test using no test database runs in the PostgreSQL passes only.
    engine_fixture, url_fixture = _POLLING_FIXTURES[database]
    engine: Engine = request.getfixturevalue(engine_fixture)
    url: str = request.getfixturevalue(url_fixture)
    name, docs = _POLLING[database]

    def handler(ctx: JobContext) -> None:
        pass

    with pytest.raises(ConfigurationError) as refused:
        Worker(JobQueue(Job), engine, "t", handler, database_url=url)
    assert str(refused.value) == (
        f"database_url names a {name} database, which has no LISTEN/NOTIFY to wake a worker: "
        f"on {name} workers poll every heartbeat ({docs}); leave database_url unset "
        "or set listen=False"
    )
    # Bound to that database without a database_url, a worker polls.
    assert Worker(JobQueue(Job), engine, "t", handler).listener is None


def _claim_after_another_writer(engine: Engine, other: Engine) -> list[Any]:
    """Read, let ``other`` enqueue and commit, then claim — in one transaction of ``engine``."""
    queue = JobQueue(Job)
    with Session(engine) as session, session.begin():
        session.execute(select(Job.id)).all()  # the transaction's snapshot
        with Session(other) as writer, writer.begin():
            queue.add_job(writer, "t", 1)
        return queue.claim_jobs(session, "t")


def test_a_deferred_transaction_that_read_first_cannot_claim_after_another_commit(
    sqlite_url: str,
) -> None:
    """BEGIN (deferred): the claim would act on an outdated snapshot, and SQLite refuses
    it at once (SQLITE_BUSY_SNAPSHOT), whatever the busy timeout — never a double claim."""
    engine = _transactions(create_engine(sqlite_url), "BEGIN")
    # The writer may not wait on the reader's transaction: WAL lets it commit.
    other = _transactions(create_engine(sqlite_url), "BEGIN")
    try:
        with pytest.raises(DatabaseError) as refused:
            _claim_after_another_writer(engine, other)
        assert str(refused.value) == (
            "database is locked: another connection held SQLite's write lock for longer than "
            "this connection's busy timeout, or this transaction read before writing while "
            "another one committed (begin such transactions with BEGIN IMMEDIATE: "
            "docs/sqlite.md)"
        )
    finally:
        engine.dispose()
        other.dispose()


def test_begin_immediate_makes_the_writer_wait_instead(sqlite_url: str) -> None:
    """BEGIN IMMEDIATE takes the write lock first: the other writer waits (here: it
    times out, as the transaction holding the lock is its own caller's)."""
    engine = _transactions(create_engine(sqlite_url), "BEGIN IMMEDIATE")
    other = _transactions(create_engine(sqlite_url, connect_args={"timeout": 0.1}), "BEGIN")

    @event.listens_for(other, "connect")
    def short_wait(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout = 100")

    try:
        with pytest.raises(Exception, match="database is locked"):
            _claim_after_another_writer(engine, other)
        with Session(engine) as session, session.begin():
            JobQueue(Job).add_job(session, "t", 1)
        with Session(engine) as session, session.begin():
            assert len(JobQueue(Job).claim_jobs(session, "t")) == 1
    finally:
        engine.dispose()
        other.dispose()


@pytest.mark.parametrize("command", ["worker", "stats"])
def test_the_commands_engines_begin_themselves_and_wait_for_the_write_lock(
    sqlite_url: str, command: str
) -> None:
    """``programma-sa``'s own engine on SQLite: the recipe above, and a busy timeout
    of 30 s rather than the driver's 5 s (a worker's write that gives up on the lock
    makes a job run again: docs/sqlite.md, "Several worker processes")."""
    extra = ["tests.worker.handlers:slow", "--topic", "t"] if command == "worker" else []
    args = build_parser().parse_args([command, *extra, "--database-url", sqlite_url])
    engine = engine_for(args)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        with Session(engine) as session:
            session.begin()
            # A SAVEPOINT inside our BEGIN: its RELEASE commits nothing (the driver's
            # own handling would have begun the transaction at the SAVEPOINT, and
            # committed it at the RELEASE).
            with session.begin_nested():
                JobQueue(Job).add_job(session, "t", 1)
            session.rollback()
        with Session(engine) as session:
            assert JobQueue(Job).list_jobs(session).jobs == []
    finally:
        engine.dispose()
