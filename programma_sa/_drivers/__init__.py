"""The statement layer: one driver per database, each building the same named statements.

:func:`statements_for` is the seam: given the dialect a ``Session`` or
``Connection`` is bound to and a jobs table, it returns that database's
:class:`~.base.Statements` (built once, then cached). PostgreSQL, SQLite and
MariaDB/MySQL have one; a database without one is refused here, at the first call, with
one message naming its dialect — before anything is written.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from sqlalchemy import Table

from ..exceptions import ConfigurationError
from . import mariadb, postgresql, sqlite
from .base import STATS_COUNTS, STATS_TIMES, Script, StatementName, Statements

__all__ = [
    "STATS_COUNTS",
    "STATS_TIMES",
    "SUPPORTED_DIALECTS",
    "Script",
    "StatementName",
    "Statements",
    "statements_for",
]

#: Each supported SQLAlchemy dialect name, and how its driver builds the statements.
_BUILDERS: dict[str, Callable[[Table], Statements]] = {
    "postgresql": postgresql.build_statements,
    "sqlite": sqlite.build_statements,
    # SQLAlchemy names MariaDB "mysql" when the URL does (mysql://), "mariadb" when
    # it says mariadb://: one driver for both (docs/mariadb.md).
    "mariadb": mariadb.build_statements,
    "mysql": mariadb.build_statements,
}
#: The dialect names the queue runs on.
SUPPORTED_DIALECTS = tuple(_BUILDERS)


@functools.cache
def statements_for(dialect: str, table: Table) -> Statements:
    """The statements of ``table`` on the ``dialect`` database (built once per pair)."""
    try:
        build = _BUILDERS[dialect]
    except KeyError:
        raise ConfigurationError(
            f"programma_sa does not run on the {dialect!r} database (SQLAlchemy dialect "
            f"{dialect!r}); it supports: {', '.join(SUPPORTED_DIALECTS)}"
        ) from None
    return build(table)
