"""Everything programma_sa reads from SQLAlchemy that SQLAlchemy does not document.

Each use is covered by ``tests/unit/test_sqla_compat.py``, which fails if a
SQLAlchemy release changes what is read here — instead of the library failing open
silently.
"""

from __future__ import annotations

from sqlalchemy import Engine

__all__ = ["engine_sets_isolation_level"]


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
