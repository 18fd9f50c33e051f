"""What programma_sa reads from SQLAlchemy that SQLAlchemy does not document.

Each test fails if a SQLAlchemy release changes what ``programma_sa._sqla_compat``
reads, rather than letting the library fail open silently. Creating an engine
opens no connection, so no database is needed here.
"""

from __future__ import annotations

from sqlalchemy import create_engine

from programma_sa._sqla_compat import engine_sets_isolation_level

URL = "postgresql+psycopg://user@localhost/db"


def test_a_plain_engine_sets_no_isolation_level() -> None:
    assert not engine_sets_isolation_level(create_engine(URL))


def test_create_engine_isolation_level_is_seen() -> None:
    # Kept on the dialect as _on_connect_isolation_level: if SQLAlchemy renames it,
    # this fails (the worker would otherwise run its units in autocommit, silently
    # dropping the application's isolation level).
    assert engine_sets_isolation_level(create_engine(URL, isolation_level="SERIALIZABLE"))


def test_execution_options_isolation_level_is_seen() -> None:
    engine = create_engine(URL).execution_options(isolation_level="REPEATABLE READ")
    assert engine_sets_isolation_level(engine)
