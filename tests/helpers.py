"""Small shared test helpers."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .app import Job


def job_count(session: Session) -> int:
    return session.execute(select(func.count()).select_from(Job.__table__)).scalar_one()
