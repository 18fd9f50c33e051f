"""The types of what the caller hands the queue to run its statements on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

from sqlalchemy import Connection
from sqlalchemy.orm import Session, scoped_session

if TYPE_CHECKING:
    # Only for annotations: importing sqlalchemy.ext.asyncio raises ImportError when
    # greenlet is missing, and importing programma_sa must not (see async_queue).
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session

__all__ = [
    "AsyncExecutor",
    "AsyncSessionLike",
    "Executor",
    "SessionLike",
    "current_async_session",
    "current_session",
]

#: A ``Session``, or a ``scoped_session`` proxying one (Flask-SQLAlchemy's ``db.session``).
SessionLike = Union[Session, "scoped_session[Any]"]

#: An ``AsyncSession``, or an ``async_scoped_session`` proxying one. Both names are
#: forward references, so the alias exists at run time without greenlet.
AsyncSessionLike = Union["AsyncSession", "async_scoped_session[Any]"]

#: What an operation runs on: a session (flushed first) or a Core ``Connection``.
Executor = SessionLike | Connection

#: :data:`Executor` on asyncio.
AsyncExecutor = Union[AsyncSessionLike, "AsyncConnection"]


def current_session(session: SessionLike) -> Session:
    """The ``Session`` itself: a ``scoped_session`` gives the one of the current scope
    (which another thread, or another Flask app context, would not see)."""
    return session() if isinstance(session, scoped_session) else session


def current_async_session(session: AsyncSessionLike) -> AsyncSession:
    """:func:`current_session` on asyncio."""
    # Imported here: sqlalchemy.ext.asyncio needs greenlet (see the module's imports).
    from sqlalchemy.ext.asyncio import async_scoped_session

    return session() if isinstance(session, async_scoped_session) else session
