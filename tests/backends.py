"""Which database the suite runs on, and how its engines are made there.

``PROGRAMMA_TEST_BACKEND=sqlite`` runs the suite on a fresh SQLite database file,
migrated by the shipped chain, instead of PostgreSQL (any other value: the
PostgreSQL server :func:`programma_sa.testing.postgres_server` picks). Tests of
PostgreSQL-only behaviour are marked ``postgresql_only`` and skipped there, with the
reason; tests that need a PostgreSQL server (``admin_url``) are skipped too.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from programma_sa._sqlite_engines import configure_sqlite_engine
from programma_sa.testing import BACKEND_ENV

#: The suite runs on SQLite.
ON_SQLITE = os.environ.get(BACKEND_ENV) == "sqlite"
#: The asyncio drivers every async test runs on.
ASYNC_DRIVERS = ("aiosqlite",) if ON_SQLITE else ("psycopg", "asyncpg")
#: The sync driver of the tests' own engines.
SYNC_DRIVER = "pysqlite" if ON_SQLITE else "psycopg"
#: How long a SQLite connection waits for the write lock before SQLITE_BUSY (ms).
BUSY_TIMEOUT_MS = 30_000


def async_url(database_url: str, driver: str) -> str:
    """``database_url`` with the async ``driver`` (psycopg 3 in async mode, asyncpg,
    or aiosqlite). Only the driver changes, so the embedded backend's unix-socket URL
    (``?host=/path``) carries over."""
    url = make_url(database_url)
    url = url.set(drivername=f"{url.get_backend_name()}+{driver}")
    return url.render_as_string(hide_password=False)


def _sqlite_transactions(engine: Engine) -> None:
    """SQLAlchemy's recipe for SQLite transactions and the busy timeout, as the
    library's own engines have it (programma_sa._sqlite_engines, docs/sqlite.md)."""
    configure_sqlite_engine(engine, BUSY_TIMEOUT_MS / 1000)


def make_engine(url: str, **pool: Any) -> Engine:
    """An engine on the test database; ``pool`` (sizes) only applies to PostgreSQL
    (``connect_args`` everywhere)."""
    if make_url(url).get_backend_name() != "sqlite":
        return create_engine(url, **pool)
    engine = create_engine(url, connect_args=pool.get("connect_args", {}))
    _sqlite_transactions(engine)
    return engine


def make_async_engine(url: str, **pool: Any) -> AsyncEngine:
    """:func:`make_engine` for asyncio (``url`` already names the async driver)."""
    if make_url(url).get_backend_name() != "sqlite":
        return create_async_engine(url, **pool)
    engine = create_async_engine(url, connect_args=pool.get("connect_args", {}))
    _sqlite_transactions(engine.sync_engine)
    return engine
