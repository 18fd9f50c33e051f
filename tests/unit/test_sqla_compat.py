"""What programma_sa reads from SQLAlchemy that SQLAlchemy does not document.

Each test fails if a SQLAlchemy release changes what ``programma_sa._sqla_compat``
reads, rather than letting the library fail open silently. Creating an engine
opens no connection, so no database is needed here.
"""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from programma_sa._sqla_compat import engine_sets_isolation_level, scoped_registry, session_options

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


def test_session_options_are_what_the_sessionmaker_passes_on() -> None:
    # sessionmaker keeps them as `kw`: if SQLAlchemy renames it, this fails (the
    # Flask extension would otherwise lose the app's session options).
    factory = sessionmaker(create_engine(URL), expire_on_commit=False, info={"app": 1})
    factory.configure(autoflush=False)
    options = session_options(factory)
    assert options == {
        "autoflush": False,
        "expire_on_commit": False,
        "info": {"app": 1},
    }
    assert "bind" in factory.kw  # kept on the factory, left out of the copy


def test_the_scoped_registry_sets_the_session_of_the_current_scope() -> None:
    scoped = scoped_session(sessionmaker())
    mine = Session()
    scoped_registry(scoped).set(mine)
    assert scoped() is mine
    scoped_registry(scoped).clear()
    assert scoped() is not mine
