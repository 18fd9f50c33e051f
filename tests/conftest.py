"""Fixtures: one real PostgreSQL server and one fresh, migrated database per test session.

The server comes from :func:`programma_sa.testing.postgres_server` (a URL, Docker,
or an embedded wheel). The jobs table is built by the shipped migration chain, so
every test also exercises the migrations.

* ``session`` — a Session inside an outer transaction that is rolled back after the
  test; code under test may "commit" (savepoints), nothing leaks.
* ``engine`` / ``session_factory`` — real commits, for tests that need several
  transactions or connections; the tables are emptied after each such test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from programma_sa import JobQueue, migrations
from programma_sa.testing import fresh_database, postgres_server, server_report

from .app import Base, Job, Order

#: The server the session's tests ran on, for the summary: URL (no password), version.
_SERVER_USED: list[str] = []


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which PostgreSQL the suite picks, and why (and that $DATABASE_URL is ignored)."""
    return server_report()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _SERVER_USED:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
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


@pytest.fixture(scope="session")
def database_url(admin_url: str) -> Iterator[str]:
    with fresh_database(admin_url) as url:
        migrations.upgrade(url)
        engine = create_engine(url)
        Base.metadata.create_all(engine, tables=[Order.__table__])
        engine.dispose()
        yield url


@pytest.fixture(scope="session")
def shared_engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url, pool_size=20, max_overflow=10)
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
        connection.execute(text(f"TRUNCATE {jobs}, {jobs}_paused, {Order.__table__.name}"))


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine)
