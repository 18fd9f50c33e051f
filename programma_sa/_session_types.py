"""The types of what the caller hands the queue to run its statements on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

from sqlalchemy import Connection
from sqlalchemy.orm import Session, scoped_session

if TYPE_CHECKING:
    # Only for annotations: importing sqlalchemy.ext.asyncio raises ImportError when
    # greenlet is missing, and importing programma_sa must not (see async_queue).
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session

__all__ = ["AsyncExecutor", "AsyncSessionLike", "Executor", "SessionLike"]

#: A ``Session``, or a ``scoped_session`` proxying one (Flask-SQLAlchemy's ``db.session``).
SessionLike = Union[Session, "scoped_session[Any]"]

#: An ``AsyncSession``, or an ``async_scoped_session`` proxying one. Both names are
#: forward references, so the alias exists at run time without greenlet.
AsyncSessionLike = Union["AsyncSession", "async_scoped_session[Any]"]

#: What an operation runs on: a session (flushed first) or a Core ``Connection``.
Executor = SessionLike | Connection

#: :data:`Executor` on asyncio.
AsyncExecutor = Union[AsyncSessionLike, "AsyncConnection"]
