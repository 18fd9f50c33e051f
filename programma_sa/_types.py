"""Type aliases shared by the public API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

from sqlalchemy.orm import Session, scoped_session

if TYPE_CHECKING:
    # Only for annotations: importing sqlalchemy.ext.asyncio raises ImportError when
    # greenlet is missing, and importing programma_sa must not (see programma_sa.aio).
    from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session

__all__ = ["AsyncSessionLike", "SessionLike"]

#: A ``Session``, or a ``scoped_session`` proxying one (Flask-SQLAlchemy's ``db.session``).
SessionLike = Union[Session, "scoped_session[Any]"]

#: An ``AsyncSession``, or an ``async_scoped_session`` proxying one. Both names are
#: forward references, so the alias exists at run time without greenlet.
AsyncSessionLike = Union["AsyncSession", "async_scoped_session[Any]"]
