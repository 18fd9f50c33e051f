"""Fixtures: one real PostgreSQL server and one fresh, migrated database per test session.

The server comes from :func:`programma_sa.testing.postgres_server` (a URL, Docker,
or an embedded wheel). The jobs table is built by the shipped migration chain, so
every test also exercises the migrations. With ``PROGRAMMA_TEST_BACKEND=sqlite`` the
database is a fresh SQLite file instead (see :mod:`tests.backends`): tests marked
``postgresql_only``, and those that need a PostgreSQL server of their own
(``admin_url``), are skipped with the reason, and so are the tests that use no test
database at all (the PostgreSQL passes run them).

* ``session`` — a Session inside an outer transaction that is rolled back after the
  test; code under test may "commit" (savepoints), nothing leaks.
* ``engine`` / ``session_factory`` — real commits, for tests that need several
  transactions or connections; the tables are emptied after each such test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from programma_sa import JobQueue, migrations
from programma_sa.testing import fresh_database, postgres_server, server_report

from .app import Base, Job, Order
from .backends import DATABASE, MARIADB_ADMIN_URL, ON_MARIADB, ON_SQLITE, make_engine

#: The fixtures through which a test uses the session's test database.
_DATABASE_FIXTURES = frozenset(
    {
        "database_url",
        "shared_engine",
        "session",
        "engine",
        "session_factory",
        "async_engine",
        "async_session",
        "async_sessions",
        "make_harness",
        "harness",
        "async_harness",
    }
)

#: The server the session's tests ran on, for the summary: URL (no password), version.
_SERVER_USED: list[str] = []


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which PostgreSQL the suite picks, and why (and that $DATABASE_URL is ignored)."""
    if ON_SQLITE:
        return ["programma_sa tests run on SQLite (a fresh database file)"]
    if ON_MARIADB:
        shown = make_url(MARIADB_ADMIN_URL).render_as_string(hide_password=True)
        return [f"programma_sa tests run on MariaDB (a fresh database, as {shown})"]
    return server_report()


def _needed(item: pytest.Item) -> tuple[tuple[str, ...], str] | None:
    """The databases a test says it needs (``databases`` or ``postgresql_only``), and why."""
    marker = item.get_closest_marker("databases")
    if marker is not None:
        return tuple(marker.args), marker.kwargs.get("reason", "")
    marker = item.get_closest_marker("postgresql_only")
    if marker is not None:
        return ("postgresql",), marker.args[0] if marker.args else "PostgreSQL-only behaviour"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip what the database of this run does not have (the ``databases`` and
    ``postgresql_only`` markers) and, off PostgreSQL, what uses no test database
    unless a ``databases`` marker names this run's database."""
    for item in items:
        needed = _needed(item)
        if needed is not None and DATABASE not in needed[0]:
            databases, reason = needed
            item.add_marker(pytest.mark.skip(reason=f"{' and '.join(databases)} only: {reason}"))
        elif (
            needed is None
            and DATABASE != "postgresql"
            and not _DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        ):
            item.add_marker(
                pytest.mark.skip(reason="uses no test database: the PostgreSQL passes run it")
            )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _SERVER_USED:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    if DATABASE != "postgresql":
        pytest.skip(f"needs a PostgreSQL server of its own (PROGRAMMA_TEST_BACKEND={DATABASE})")
    with postgres_server() as url:
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                version = connection.scalar(text("SHOW server_version"))
        finally:
            engine.dispose()
        shown = make_url(url).render_as_string(hide_password=True)
        _SERVER_USED.append(f"programma_sa tests ran on PostgreSQL {version} at {shown}")
        yield url


def _prepared(url: str) -> None:
    """The jobs table by the shipped chain, and the tests' business table."""
    migrations.upgrade(url)
    engine = create_engine(url)
    Base.metadata.create_all(engine, tables=[Order.__table__])
    engine.dispose()


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if ON_SQLITE:
        directory: Path = request.getfixturevalue("tmp_path_factory").mktemp("sqlite")
        url = f"sqlite:///{directory / 'programma_tests.db'}"
        _prepared(url)
        engine = create_engine(url)
        with engine.connect() as connection:
            # WAL: readers never wait for the writer, nor it for them.
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        engine.dispose()
        yield url
        return
    if ON_MARIADB:
        with fresh_database(MARIADB_ADMIN_URL) as url:
            _prepared(url)
            yield url
        return
    admin_url: str = request.getfixturevalue("admin_url")
    with fresh_database(admin_url) as url:
        _prepared(url)
        yield url


@pytest.fixture(scope="session")
def shared_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=20, max_overflow=10)
    yield engine
    engine.dispose()


@pytest.fixture
def queue() -> JobQueue:
    return JobQueue(Job)


@pytest.fixture
def session(shared_engine: Engine) -> Iterator[Session]:
    with shared_engine.connect() as connection:
        transaction = connection.begin()
        with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
            yield session
        transaction.rollback()


@pytest.fixture
def engine(shared_engine: Engine) -> Iterator[Engine]:
    yield shared_engine
    with shared_engine.begin() as connection:
        jobs = Job.__table__.name
        if ON_SQLITE:  # no TRUNCATE on SQLite
            for name in (jobs, f"{jobs}_paused", Order.__table__.name):
                connection.execute(text(f"DELETE FROM {name}"))
        elif ON_MARIADB:  # one table per TRUNCATE on MariaDB
            for name in (jobs, f"{jobs}_paused", Order.__table__.name):
                connection.execute(text(f"TRUNCATE TABLE {name}"))
        else:
            connection.execute(text(f"TRUNCATE {jobs}, {jobs}_paused, {Order.__table__.name}"))


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine)
