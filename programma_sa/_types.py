"""Type aliases shared by the public API."""

from __future__ import annotations

from typing import Any, Union

from sqlalchemy.orm import Session, scoped_session

__all__ = ["SessionLike"]

#: A ``Session``, or a ``scoped_session`` proxying one (Flask-SQLAlchemy's ``db.session``).
SessionLike = Union[Session, "scoped_session[Any]"]
