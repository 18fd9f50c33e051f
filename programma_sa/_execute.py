"""The one I/O seam: run an operation, or a generator of steps, on a session or connection.

Everything above this module builds :class:`~programma_sa._operations.Operation`
objects (or generators that yield them) and hands them here; nothing below it does
I/O. For each operation this module

1. finds the database: the dialect of the ``Connection``, or of the bind the
   ``Session`` uses for the jobs table, and takes the named statement from that
   database's driver (:func:`programma_sa._drivers.statements_for`) — an unsupported
   database is refused here, before anything is sent;
2. applies the flush-first rule: a session's pending rows are flushed *before* the
   statement, outside the error translation, so an error in the caller's own rows
   (a duplicate order, say) stays their own ``IntegrityError`` instead of surfacing
   as our :class:`~programma_sa.DatabaseError` through autoflush;
3. translates driver errors into ours (:func:`translated_errors`, the only place
   that does), keeping the driver's error as ``__cause__``.

Work of several statements is a generator of *steps*: :func:`drive` sends each
step's result back into it (and throws each step's exception into it, so the
generator's own ``try`` blocks decide), whatever a step is — an operation, an
:class:`InTransaction`, or a worker's own step types. :func:`drive_async` is the
same for coroutine executors, so a decision is written once for sync and async.

:func:`execute_direct` is the one exception to "through SQLAlchemy": the Worker's
claim, handed straight to psycopg 3 on a connection the worker keeps, when the
engine has no listener that would miss it (:func:`direct_execution_allowed`). The
statement, its errors and the reading of its rows are the same as :func:`execute`'s.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, Executable, Table
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from ._drivers import Script, statements_for
from ._drivers.direct import direct_dialect, direct_form
from ._operations import Operation
from ._session_types import AsyncExecutor, Executor
from .exceptions import DatabaseError, DuplicateJob, SchemaNotReady

__all__ = [
    "DIRECT_SKIPPED_EVENTS",
    "InTransaction",
    "direct_execution_allowed",
    "drive",
    "drive_async",
    "execute",
    "execute_async",
    "execute_direct",
    "run_in_transactions",
    "run_in_transactions_async",
    "run_steps",
    "run_steps_async",
    "translated_errors",
]

T = TypeVar("T")
S = TypeVar("S")

# SQLSTATE 42P01: undefined_table; 23505: unique_violation.
_UNDEFINED_TABLE = "42P01"
_UNIQUE_VIOLATION = "23505"
# What PostgreSQL says of a unique violation: 'Key (unique_key)=(<key>) already exists.'
_KEY_DETAIL = re.compile(r"Key \(unique_key\)=\((?P<key>.*)\) already exists\.", re.DOTALL)


def _sqlstate(error: sa_exc.DBAPIError) -> str | None:
    original = error.orig
    # psycopg 3 exposes ``sqlstate``; psycopg2 ``pgcode``; asyncpg ``sqlstate``.
    for attribute in ("sqlstate", "pgcode"):
        value = getattr(original, attribute, None)
        if isinstance(value, str):
            return value
    return None


def _diagnostic(error: sa_exc.DBAPIError, name: str) -> str | None:
    """A field of the server's error report: psycopg 3 and psycopg2 keep it in
    ``diag.<name>``; asyncpg's own error (the cause of SQLAlchemy's adapted one) in
    ``constraint_name`` / ``detail``."""
    original = error.orig
    diag = getattr(original, "diag", None)
    if diag is not None:
        value = getattr(diag, name, None)
    else:
        cause = getattr(original, "__cause__", None)
        value = getattr(cause, {"message_detail": "detail"}.get(name, name), None)
    return value if isinstance(value, str) else None


#: SQLITE_BUSY, said with its two causes (docs/sqlite.md).
_SQLITE_BUSY = (
    "database is locked: another connection held SQLite's write lock for longer than "
    "this connection's busy timeout, or this transaction read before writing while "
    "another one committed (begin such transactions with BEGIN IMMEDIATE: docs/sqlite.md)"
)


def _sqlite_message(error: sa_exc.DBAPIError) -> str | None:
    """The message of a SQLite error (the standard library's, which aiosqlite raises
    too); ``None`` for another database's. SQLite has no SQLSTATE: its messages are
    its stable interface ("no such table: …", "UNIQUE constraint failed: …")."""
    return str(error.orig) if isinstance(error.orig, sqlite3.Error) else None


#: MariaDB/MySQL error numbers (``args[0]`` of PyMySQL's errors): no such table,
#: duplicate key.
_MYSQL_NO_SUCH_TABLE = 1146
_MYSQL_DUPLICATE_KEY = 1062
#: What MariaDB says of a duplicate key: "Duplicate entry '<key>' for key '<index>'".
_MYSQL_DUPLICATE = re.compile(
    r"Duplicate entry '(?P<key>.*)' for key '(?P<index>[^']*)'", re.DOTALL
)


def _mysql_error(error: sa_exc.DBAPIError) -> tuple[int, str] | None:
    """The number and message of a MariaDB/MySQL error (PyMySQL's, which aiomysql
    raises too); ``None`` for another database's."""
    arguments: tuple[Any, ...] = getattr(error.orig, "args", ())
    if type(error.orig).__module__.startswith("pymysql") and len(arguments) == 2:
        number, message = arguments
        if isinstance(number, int):
            return number, str(message)
    return None


def _undefined_table(error: sa_exc.DBAPIError) -> bool:
    message = _sqlite_message(error)
    if message is not None:
        return message.startswith("no such table:")
    mysql = _mysql_error(error)
    if mysql is not None:
        return mysql[0] == _MYSQL_NO_SUCH_TABLE
    return _sqlstate(error) == _UNDEFINED_TABLE


def _unique_key_violation(error: sa_exc.DBAPIError, table: Table) -> bool:
    """A unique violation of the ``uq_<table>_unique_key`` index: PostgreSQL names the
    constraint; SQLite names the column (``unique_key`` has no other unique index)."""
    message = _sqlite_message(error)
    if message is not None:
        return message == f"UNIQUE constraint failed: {table.name}.unique_key"
    mysql = _mysql_error(error)
    if mysql is not None:
        match = _MYSQL_DUPLICATE.search(mysql[1])
        return (
            mysql[0] == _MYSQL_DUPLICATE_KEY
            and match is not None
            # MariaDB names the index; MySQL 8 qualifies it with the table.
            and match["index"].rpartition(".")[2] == f"uq_{table.name}_unique_key"
        )
    return (
        _sqlstate(error) == _UNIQUE_VIOLATION
        and _diagnostic(error, "constraint_name") == f"uq_{table.name}_unique_key"
    )


def _duplicate_job(error: sa_exc.DBAPIError, table: Table) -> DuplicateJob:
    text = str(error.orig) if error.orig is not None else str(error)
    # SQLite does not say which key was held; MariaDB says it in its message.
    match = _KEY_DETAIL.fullmatch(_diagnostic(error, "message_detail") or "")
    mysql = _mysql_error(error)
    if mysql is not None:
        match = _MYSQL_DUPLICATE.search(mysql[1])
    key = None if match is None else match["key"]
    return DuplicateJob(
        f"a job with unique key {key!r} is already enqueued in {table.fullname} "
        f"(unique_key held by a job in one of its unique_states): {text.splitlines()[0]}",
        unique_key=key,
    )


@contextmanager
def translated_errors(table: Table | None = None) -> Iterator[None]:
    """Re-raise SQLAlchemy/driver errors as :class:`~programma_sa.DatabaseError` subclasses.

    A lost connection becomes a ``DatabaseError`` too, so a worker catches one type;
    the SQLAlchemy error (with ``connection_invalidated``) stays the ``__cause__``.
    With the jobs ``table`` a statement ran on, a unique violation of that table's
    ``uq_<table>_unique_key`` index — found by the constraint's name, which the
    database reports — is :class:`~programma_sa.DuplicateJob`.
    """
    try:
        yield
    except sa_exc.DBAPIError as error:
        if _undefined_table(error):
            raise SchemaNotReady(
                "the programma jobs table does not exist; run the programma migrations "
                "(`programma-sa alembic revision` then `alembic upgrade head` in an "
                "application with Alembic, else `programma-sa migrate`)"
            ) from error
        if table is not None and _unique_key_violation(error, table):
            raise _duplicate_job(error, table) from error
        if _sqlite_message(error) == "database is locked":
            raise DatabaseError(_SQLITE_BUSY) from error
        raise DatabaseError(str(error.orig) if error.orig is not None else str(error)) from error


def _statement(executor: Any, operation: Operation[Any]) -> Executable:
    """The operation's statement on the executor's database.

    ``executor`` is any of :data:`Executor` / :data:`AsyncExecutor` (an async
    session's ``get_bind`` is a plain attribute), or a :class:`Dialect`.
    """
    # A Dialect is itself; a Connection / AsyncConnection has one; a session a bind.
    dialect = executor if isinstance(executor, Dialect) else getattr(executor, "dialect", None)
    if dialect is None:
        dialect = executor.get_bind(clause=operation.table).dialect
    statement = getattr(statements_for(dialect.name, operation.table), operation.statement)
    if operation.variant is not None:  # a StatementFamily: the statement of this shape
        statement = statement(operation.variant)
    return statement  # type: ignore[no-any-return]


def execute(executor: Executor, operation: Operation[T]) -> T:
    """Execute ``operation`` on a session or connection and read its result."""
    statement = _statement(executor, operation)
    if not isinstance(executor, Connection) and executor.autoflush:
        executor.flush()  # the caller's rows: their errors stay theirs (see module docs)
    with translated_errors(operation.table):
        if isinstance(statement, Script):
            result = drive(statement.run(operation.params), lambda step: executor.execute(*step))
        else:
            result = executor.execute(statement, operation.params)
        return operation.read(result)


#: The engine events (SQLAlchemy ``ConnectionEvents`` and ``DialectEvents``) that
#: fire around each statement SQLAlchemy executes, and that a statement run by
#: :func:`execute_direct` does not fire: while any has a listener on the engine, the
#: worker claims through SQLAlchemy instead, so the application's tracing sees it.
DIRECT_SKIPPED_EVENTS = (
    "before_execute",
    "after_execute",
    "before_cursor_execute",
    "after_cursor_execute",
    "handle_error",
    "do_execute",
    "do_execute_no_params",
    "do_setinputsizes",
)


def direct_execution_allowed(engine: Engine) -> bool:
    """Whether statements may be executed on ``engine``'s DBAPI connections directly
    (:func:`execute_direct`) without an application's hooks missing them: psycopg 3,
    no listener of :data:`DIRECT_SKIPPED_EVENTS`, no statement logging (``echo``),
    no ``schema_translate_map``. Cheap: asked before each direct execution, so a
    listener added while a worker runs turns it off from the next claim on."""
    return (
        direct_dialect(engine.dialect)
        and not _has_skipped_listener(engine)
        and not engine._should_log_info()
        and "schema_translate_map" not in engine.get_execution_options()
    )


def _has_skipped_listener(engine: Engine) -> bool:
    # SQLAlchemy sets _has_events once any engine or dialect event has a listener
    # (what its own execution checks per statement): the common case, no events at
    # all, costs two attribute reads instead of a look at each event's listeners.
    if not (engine._has_events or engine.dialect._has_events):
        return False
    return any(
        getattr(engine.dispatch, name, None) or getattr(engine.dialect.dispatch, name, None)
        for name in DIRECT_SKIPPED_EVENTS
    )


def execute_direct(cursor: Any, dialect: Dialect, operation: Operation[T]) -> T:
    """Execute ``operation`` with a psycopg 3 ``cursor`` itself, as a prepared
    statement, and read its rows with the operation's ``read_rows``.

    The statement is the driver's own, compiled once (:mod:`programma_sa._drivers.direct`);
    a DBAPI error becomes the ``DBAPIError`` SQLAlchemy would have raised
    (``connection_invalidated`` when the dialect calls it a disconnect), translated
    as :func:`execute` translates it. No session is involved: nothing is flushed.
    """
    read_rows = operation.read_rows
    if read_rows is None:
        raise TypeError(f"the {operation.statement!r} operation has no row reader")
    direct = direct_form(dialect, _statement(dialect, operation), operation.params)
    dbapi_error = dialect.loaded_dbapi.Error
    with translated_errors(operation.table):
        try:
            cursor.execute(direct.sql, direct.params, prepare=True)
            fetched = cursor.fetchall()
        except dbapi_error as error:
            raise sa_exc.DBAPIError.instance(
                direct.sql,
                direct.params,
                error,
                dbapi_error,
                connection_invalidated=dialect.is_disconnect(error, cursor.connection, cursor),
                dialect=dialect,
            ) from error
    return read_rows(direct.rows(fetched))


async def execute_async(executor: AsyncExecutor, operation: Operation[T]) -> T:
    """:func:`execute` on asyncio (the async results are buffered: the same readers apply)."""
    statement = _statement(executor, operation)
    if getattr(executor, "autoflush", False):  # an AsyncSession, not an AsyncConnection
        await executor.flush()  # type: ignore[union-attr]
    with translated_errors(operation.table):
        if isinstance(statement, Script):
            result = await drive_async(
                statement.run(operation.params), lambda step: executor.execute(*step)
            )
        else:
            result = await executor.execute(statement, operation.params)
        return operation.read(result)


def drive(steps: Generator[S, Any, T], execute_step: Callable[[S], Any]) -> T:
    """Run ``steps`` to its end: each step's result is sent back into it, each step's
    exception thrown into it; returns what the generator returns."""
    try:
        step = next(steps)
        while True:
            try:
                reply = execute_step(step)
            except Exception as error:
                step = steps.throw(error)
            else:
                step = steps.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result


async def drive_async(
    steps: Generator[S, Any, T], execute_step: Callable[[S], Awaitable[Any]]
) -> T:
    """:func:`drive` with an ``execute_step`` that is a coroutine function."""
    try:
        step = next(steps)
        while True:
            try:
                reply = await execute_step(step)
            except Exception as error:
                step = steps.throw(error)
            else:
                step = steps.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result


def run_steps(executor: Executor, steps: Generator[Operation[Any], Any, T]) -> T:
    """Run a generator of operations, each on ``executor``."""
    return drive(steps, lambda operation: execute(executor, operation))


async def run_steps_async(executor: AsyncExecutor, steps: Generator[Operation[Any], Any, T]) -> T:
    """:func:`run_steps` on asyncio."""
    return await drive_async(steps, lambda operation: execute_async(executor, operation))


@dataclass(frozen=True)
class InTransaction(Generic[T]):
    """A step: run ``steps`` in a short transaction of a fresh session, committed at
    its end; the reply is what ``steps`` returned (a database error is thrown back)."""

    steps: Generator[Operation[Any], Any, T]


def run_in_transactions(
    sessions: Callable[[], Session], steps: Generator[InTransaction[Any], Any, T]
) -> T:
    """Run ``steps``, each :class:`InTransaction` in its own session from ``sessions``."""

    def transaction(step: InTransaction[Any]) -> Any:
        with sessions() as session, session.begin():
            return run_steps(session, step.steps)

    return drive(steps, transaction)


async def run_in_transactions_async(
    sessions: Callable[[], Any], steps: Generator[InTransaction[Any], Any, T]
) -> T:
    """:func:`run_in_transactions` with a factory of ``AsyncSession`` objects."""

    async def transaction(step: InTransaction[Any]) -> Any:
        async with sessions() as session, session.begin():
            return await run_steps_async(session, step.steps)

    return await drive_async(steps, transaction)
