"""Which database the suite runs on, and how its engines are made there.

``PROGRAMMA_TEST_BACKEND=sqlite`` runs the suite on a fresh SQLite database file,
migrated by the shipped chain, instead of PostgreSQL (any other value: the
PostgreSQL server :func:`programma_sa.testing.postgres_server` picks). Tests of
PostgreSQL-only behaviour are marked ``postgresql_only`` and skipped there, with the
reason; tests that need a PostgreSQL server (``admin_url``) are skipped too.

``PROGRAMMA_TEST_BACKEND=mariadb`` runs it on a fresh MariaDB database per session,
made with the account of ``PROGRAMMA_TEST_MARIADB_URL`` (default: user
``programma``, password ``programma``, on the local socket; ``.ci/run`` creates it).
Tests of behaviour only some databases have say which with the ``databases``
marker (``postgresql_only`` is ``databases("postgresql")``).
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from programma_sa._sqlite_engines import configure_sqlite_engine
from programma_sa._urls import engine_options
from programma_sa.testing import BACKEND_ENV

#: The suite runs on SQLite.
ON_SQLITE = os.environ.get(BACKEND_ENV) == "sqlite"
#: The suite runs on MariaDB.
ON_MARIADB = os.environ.get(BACKEND_ENV) == "mariadb"
#: The database the suite runs on: "postgresql", "sqlite" or "mariadb".
DATABASE = "sqlite" if ON_SQLITE else "mariadb" if ON_MARIADB else "postgresql"
#: The asyncio drivers every async test runs on.
ASYNC_DRIVERS = {
    "sqlite": ("aiosqlite",),
    "mariadb": ("aiomysql",),
    "postgresql": ("psycopg", "asyncpg"),
}[DATABASE]
#: The sync driver of the tests' own engines.
SYNC_DRIVER = {"sqlite": "pysqlite", "mariadb": "pymysql", "postgresql": "psycopg"}[DATABASE]
#: SQL that makes the current transaction wait at most 1 s for a row lock (on
#: MariaDB for the rest of the connection's session: it has no per-transaction one).
LOCK_TIMEOUT_1S = (
    "SET SESSION innodb_lock_wait_timeout = 1" if ON_MARIADB else "SET LOCAL lock_timeout = '1s'"
)
#: The MariaDB account that creates the session's database (see the module docs).
MARIADB_URL_ENV = "PROGRAMMA_TEST_MARIADB_URL"
MARIADB_ADMIN_URL = os.environ.get(
    MARIADB_URL_ENV,
    "mariadb+pymysql://programma:programma@localhost/programma_test"
    "?unix_socket=/run/mysqld/mysqld.sock",
)
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


def _isolation(url: str) -> dict[str, Any]:
    """READ COMMITTED on MariaDB, as the library's own engines (docs/mariadb.md)."""
    return engine_options(make_url(url))


def _mariadb_lock_wait_reset(engine: Engine) -> Engine:
    """A connection back in the pool waits for locks as long as a new one again: a
    test's :data:`LOCK_TIMEOUT_1S` is the session's on MariaDB, not its transaction's."""
    if engine.dialect.name in ("mariadb", "mysql"):

        @event.listens_for(engine, "reset")
        def reset(dbapi_connection: Any, record: Any, state: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("SET SESSION innodb_lock_wait_timeout = DEFAULT")
            cursor.close()

    return engine


def make_engine(url: str, **pool: Any) -> Engine:
    """An engine on the test database; ``pool`` (sizes) only applies to PostgreSQL
    and MariaDB (``connect_args`` everywhere)."""
    if make_url(url).get_backend_name() != "sqlite":
        return _mariadb_lock_wait_reset(create_engine(url, **_isolation(url), **pool))
    engine = create_engine(url, connect_args=pool.get("connect_args", {}))
    _sqlite_transactions(engine)
    return engine


def make_async_engine(url: str, **pool: Any) -> AsyncEngine:
    """:func:`make_engine` for asyncio (``url`` already names the async driver)."""
    if make_url(url).get_backend_name() != "sqlite":
        engine = create_async_engine(url, **_isolation(url), **pool)
        _mariadb_lock_wait_reset(engine.sync_engine)
        return engine
    engine = create_async_engine(url, connect_args=pool.get("connect_args", {}))
    _sqlite_transactions(engine.sync_engine)
    return engine
