"""Async fixtures over both asyncio drivers, on the session's migrated test database.

Every test module here runs in one session-wide event loop
(``pytestmark = pytest.mark.asyncio(loop_scope="session")``): an ``AsyncEngine``'s
pooled connections belong to the loop that opened them, so the session-scoped
engines and the tests must share it.

* ``async_engine`` — parametrised over ``postgresql+psycopg`` (psycopg 3 in async
  mode) and ``postgresql+asyncpg``, derived from the sync ``database_url`` fixture
  (so a unix-socket URL, ``?host=/path``, from the embedded backend carries over).
* ``async_session`` — an ``AsyncSession`` in an outer transaction rolled back after
  the test (savepoints let code under test "commit").
* ``async_sessions`` — a factory with real commits; the tables are emptied after the
  test by the sync ``engine`` fixture it depends on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
)

from programma_sa import AsyncJobQueue

from ..app import Job
from ..backends import make_async_engine
from .urls import DRIVERS, async_url


@pytest_asyncio.fixture(scope="session", loop_scope="session", params=DRIVERS)
async def async_engine(
    request: pytest.FixtureRequest, database_url: str
) -> AsyncIterator[AsyncEngine]:
    # Room for the 8 concurrent claimers plus the test's own sessions.
    engine = make_async_engine(async_url(database_url, request.param), pool_size=12, max_overflow=4)
    yield engine
    await engine.dispose()


@pytest.fixture
def aqueue() -> AsyncJobQueue:
    return AsyncJobQueue(Job)


@pytest_asyncio.fixture(loop_scope="session")
async def async_session(async_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with async_engine.connect() as connection:
        transaction = await connection.begin()
        async with AsyncSession(
            bind=connection, join_transaction_mode="create_savepoint"
        ) as session:
            yield session
        await transaction.rollback()


@pytest.fixture
def async_sessions(async_engine: AsyncEngine, engine: Engine) -> async_sessionmaker[AsyncSession]:
    """Sessions that really commit; ``engine`` (sync) truncates the tables afterwards."""
    return async_sessionmaker(async_engine, expire_on_commit=False)
