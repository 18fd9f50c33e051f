"""A driver's statement compiled once to what its DBAPI is handed, for execution
without SQLAlchemy's execution layer (the Worker's direct claim, docs/worker.md).

The statement is the driver's own Core statement — there is no second copy of its
SQL: SQLAlchemy compiles it for the dialect, renders its literal-execute parameters
(the claim's batch size) and applies its bind processors; what comes out is the text
and the parameters the DBAPI cursor is handed, with each returned column's key (as
SQLAlchemy's ``RowMapping`` names it) and result processor (as SQLAlchemy applies
it). No I/O here: :func:`programma_sa._execute.execute_direct` executes it.

Only psycopg 3 (:func:`direct_dialect`) is handed statements this way: the
compiled form depends on the DBAPI's parameter style, and the executor relies on
psycopg 3's ``prepare=True``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

__all__ = ["DirectStatement", "direct_dialect", "direct_form"]

#: The DBAPIs (SQLAlchemy ``dialect.driver`` of a PostgreSQL dialect) a statement is
#: executed directly on: psycopg 3, whose named ``%(name)s`` parameters SQLAlchemy
#: renders and whose cursors prepare a statement on request.
_DIRECT_DRIVERS = frozenset({"psycopg"})


def direct_dialect(dialect: Dialect) -> bool:
    """Whether statements are executed directly on this dialect's DBAPI at all."""
    return dialect.name == "postgresql" and dialect.driver in _DIRECT_DRIVERS


#: A column's result processor (``None``: the DBAPI's value is the value).
Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, eq=False)
class DirectStatement:
    """One statement with one set of parameters, in the DBAPI's terms."""

    #: The SQL text, in the DBAPI's parameter style.
    sql: str
    #: The parameters, bind-processed, keyed as ``sql`` names them.
    params: Mapping[str, Any]
    #: The key of each returned column, in order.
    keys: tuple[str, ...]
    #: The result processor of each returned column, in order.
    processors: tuple[Processor, ...]

    def rows(self, fetched: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
        """The DBAPI's rows as mappings, each value read as SQLAlchemy reads it."""
        keys = self.keys
        rows = [dict(zip(keys, row, strict=True)) for row in fetched]
        processed = [
            (key, process)
            for key, process in zip(keys, self.processors, strict=True)
            if process is not None
        ]
        for row in rows if processed else ():
            for key, process in processed:
                row[key] = process(row[key])
        return rows


@dataclass(frozen=True, eq=False)
class _Compiled:
    """A statement compiled for one dialect, and how its returned columns are read."""

    compiled: SQLCompiler
    keys: tuple[str, ...]
    processors: tuple[Processor, ...]


def direct_form(
    dialect: Dialect, statement: Executable, params: Mapping[str, Any]
) -> DirectStatement:
    """``statement`` with ``params``, as the DBAPI of ``dialect`` is handed it.

    Compiled once per (dialect, statement), expanded once per set of parameters
    (a worker's claims repeat a few: one per topic and batch size).

    :raises ValueError: not a :func:`direct_dialect`.
    """
    if not direct_dialect(dialect):
        raise ValueError(f"no direct execution on {dialect.name}+{dialect.driver}")
    return _expanded(_compiled(dialect, statement), tuple(sorted(params.items())))


@functools.lru_cache(maxsize=64)
def _compiled(dialect: Dialect, statement: Executable) -> _Compiled:
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    assert isinstance(compiled, SQLCompiler)
    columns = list(statement.exported_columns)  # type: ignore[attr-defined]
    return _Compiled(
        compiled,
        tuple(column.key for column in columns),
        tuple(_result_processor(column.type, dialect) for column in columns),
    )


def _result_processor(type_: TypeEngine[Any], dialect: Dialect) -> Processor:
    processor: Processor = type_.dialect_impl(dialect).result_processor(dialect, None)
    return processor


@functools.lru_cache(maxsize=256)
def _expanded(compiled: _Compiled, params: tuple[tuple[str, Any], ...]) -> DirectStatement:
    # The literal-execute parameters (the claim's LIMIT) are rendered into the text
    # here, as SQLAlchemy renders them at each execution.
    state = compiled.compiled.construct_expanded_state(dict(params))
    processors = state.processors
    bound = {
        name: value if processors.get(name) is None else processors[name](value)
        for name, value in state.parameters.items()
    }
    return DirectStatement(state.statement, bound, compiled.keys, compiled.processors)
