"""The engines the library makes itself — the CLI's commands, the demo, the served
dashboard — on any database it runs on.

Each gets what its database needs beyond the URL, in one place: READ COMMITTED on
MariaDB/MySQL (:func:`._urls.engine_options`) and SQLite's transaction recipe with a
busy timeout (:func:`._sqlite_engines.configure_sqlite_engine`). An application's own
engines are the application's: the library never changes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL

from ._sqlite_engines import configure_sqlite_engine
from ._urls import engine_options

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["create_library_async_engine", "create_library_engine"]


def create_library_engine(url: URL, **options: Any) -> Engine:
    """A sync engine on ``url`` (a sync driver's) with ``options`` (pool sizes …)."""
    engine = create_engine(url, **engine_options(url), **options)
    configure_sqlite_engine(engine)
    return engine


def create_library_async_engine(url: URL, **options: Any) -> AsyncEngine:
    """An asyncio engine on ``url`` (an asyncio driver's) with ``options``."""
    # Imported here: sqlalchemy.ext.asyncio needs greenlet (programma-sa[asyncio]).
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, **engine_options(url), **options)
    configure_sqlite_engine(engine.sync_engine)
    return engine
