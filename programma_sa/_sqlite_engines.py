"""The engines the library builds itself (the ``programma-sa`` commands) on SQLite.

SQLAlchemy's SQLite drivers leave transactions to Python's ``sqlite3`` module (and
aiosqlite, which wraps it), which begins one late — before an INSERT, UPDATE or
DELETE, not before a SELECT or a ``SAVEPOINT`` — and whose ``connect(timeout=5.0)``
gives every connection a busy timeout of 5 seconds: how long a writer waits for
SQLite's single write lock before it fails with ``database is locked``.
:func:`configure_sqlite_engine` gives an engine SQLAlchemy's documented recipe
instead (docs/sqlite.md): the driver's own transaction handling off, a ``BEGIN``
of ours at each transaction's start (so a ``SAVEPOINT`` never begins, nor its
``RELEASE`` commits, a transaction), and a busy timeout of
:data:`SQLITE_BUSY_TIMEOUT_SECONDS`.

Why that long: a worker's writes — its claims, a batch's completion, its lease
renewals, and its handlers' own ``ctx.set_attributes`` — take turns for the write
lock with every other process on the file, and SQLite hands the lock to whichever
waiter polls first, not to the one that waited longest. Four busy worker processes
on a loaded 2-core machine waited up to 3 seconds for one statement (docs/sqlite.md,
"Several worker processes"); a writer that gives up sooner turns contention into
errors — a handler's failed write makes its job run again, failed renewals let a
lease run out. A writer that waits is correct.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event

__all__ = ["SQLITE_BUSY_TIMEOUT_SECONDS", "configure_sqlite_engine"]

#: How long a connection of the library's own engines waits for SQLite's write lock
#: (``PRAGMA busy_timeout``) before ``database is locked``: ten times the longest wait
#: measured (above), as long as a job's default visibility timeout.
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0


def configure_sqlite_engine(
    engine: Engine, busy_timeout: float = SQLITE_BUSY_TIMEOUT_SECONDS
) -> None:
    """Give ``engine`` (a sync engine, or an async engine's ``sync_engine``) on
    SQLite the recipe above; ``busy_timeout`` in seconds. Any other database: nothing."""
    if engine.dialect.name != "sqlite":
        return
    milliseconds = round(busy_timeout * 1000)

    @event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy begins (below)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {milliseconds}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin(connection: Any) -> None:
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            connection.exec_driver_sql("BEGIN")
