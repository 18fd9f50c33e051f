"""The jobs model and a lazily built session factory, shared by both sides.

The engine is created on first use, in the process that uses it: a Celery worker
(with its prefork pool, in each child) or the programma worker, from
``DATABASE_URL``.
"""

from __future__ import annotations

import functools
import os

from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from programma_sa import JobMixin, JobQueue

#: The topic scheduled in PostgreSQL and fanned out to Celery.
SEND_EMAIL = "send-email"


class Base(DeclarativeBase):
    pass


class Job(JobMixin, Base):
    """The jobs table ("programma_jobs"), created by ``programma-sa migrate``."""


queue = JobQueue(Job)


@functools.cache
def sessions() -> sessionmaker[Session]:
    """Sessions on ``DATABASE_URL``, one engine per process."""
    return sessionmaker(create_engine(os.environ["DATABASE_URL"]))
