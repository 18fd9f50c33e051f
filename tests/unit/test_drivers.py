"""The statement layer: every driver builds the same named statements, and a
database without a driver is refused at the first call, naming its dialect."""

from __future__ import annotations

from dataclasses import fields
from typing import get_args

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from programma_sa import AsyncJobQueue, ConfigurationError, JobQueue
from programma_sa._drivers import SUPPORTED_DIALECTS, StatementName, Statements, statements_for

from ..app import Job


def test_statement_names_are_the_fields_of_statements() -> None:
    assert set(get_args(StatementName)) == {f.name for f in fields(Statements)} - {"table"}


@pytest.mark.parametrize("dialect", SUPPORTED_DIALECTS)
def test_every_driver_builds_every_statement(dialect: str) -> None:
    statements = statements_for(dialect, Job.__table__)
    for name in get_args(StatementName):
        assert getattr(statements, name) is not None, name


def _unsupported_engine() -> Engine:
    """A real (in-memory) SQLite database whose dialect names a database without a driver."""
    engine = create_engine("sqlite://")
    engine.dialect.name = "nodriver"
    return engine


def test_an_unsupported_database_is_refused_before_anything_is_written() -> None:
    engine = _unsupported_engine()
    with Session(engine) as session, session.begin():
        session.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY)"))
        session.execute(text("INSERT INTO orders VALUES (1)"))
        with pytest.raises(ConfigurationError) as refused:
            JobQueue(Job).add_job(session, "emails", {"n": 1})
        # The caller's transaction is untouched and still usable.
        assert session.execute(text("SELECT count(*) FROM orders")).scalar_one() == 1
    assert str(refused.value) == (
        "programma_sa does not run on the 'nodriver' database (SQLAlchemy dialect 'nodriver'); "
        "it supports: postgresql, sqlite, mariadb, mysql"
    )


@pytest.mark.asyncio
async def test_an_unsupported_database_is_refused_on_asyncio_too() -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine = create_async_engine("sqlite+aiosqlite://")
    engine.sync_engine.dialect.name = "nodriver"
    async with AsyncSession(engine) as session:
        with pytest.raises(ConfigurationError, match="'nodriver' database"):
            await AsyncJobQueue(Job).claim_jobs(session, "emails")
    await engine.dispose()
