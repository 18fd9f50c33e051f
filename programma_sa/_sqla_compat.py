"""Everything programma_sa reads from SQLAlchemy that SQLAlchemy does not document.

Each use is covered by ``tests/unit/test_sqla_compat.py``, which fails if a
SQLAlchemy release changes what is read here — instead of the library failing open
silently.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import scoped_session, sessionmaker
from sqlalchemy.util import ScopedRegistry

__all__ = ["engine_sets_isolation_level", "scoped_registry", "session_options"]


def engine_sets_isolation_level(engine: Engine) -> bool:
    """Whether the application asked ``engine`` for an isolation level of its own.

    ``create_engine(url, isolation_level=...)`` keeps the level on the dialect as
    ``_on_connect_isolation_level`` (applied to every new connection) — SQLAlchemy
    has no public accessor for it; ``engine.execution_options(isolation_level=...)``
    is public.
    """
    options_level = engine.get_execution_options().get("isolation_level")
    connect_level = getattr(engine.dialect, "_on_connect_isolation_level", None)
    return options_level is not None or connect_level is not None


def session_options(factory: sessionmaker[Any]) -> dict[str, Any]:
    """The keyword arguments ``factory`` passes to each session it makes.

    A ``sessionmaker`` keeps them as ``kw`` (what ``configure()`` updates), which
    SQLAlchemy does not document; a copy, without ``bind``, for building a session
    of another class with the same options.
    """
    options = dict(factory.kw)
    options.pop("bind", None)
    return options


def scoped_registry(scoped: scoped_session[Any]) -> ScopedRegistry[Any]:
    """The registry holding the session of each scope of ``scoped``.

    ``ScopedRegistry`` (``set``, ``clear``) is documented; the ``registry`` attribute
    of ``scoped_session`` that holds it has no documentation of its own.
    """
    registry: ScopedRegistry[Any] = scoped.registry
    return registry
