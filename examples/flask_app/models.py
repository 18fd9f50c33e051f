"""The app's models on Flask-SQLAlchemy's ``db.Model``: a business table and the jobs table.

Both live in ``db.metadata`` and are created by the app's own migrations
(``migrations/versions``): ``signups`` by its first revision, the jobs table by the
revision ``programma-sa alembic revision --directory migrations`` wrote, which
applies programma's migration steps. One chain, one head: ``flask db upgrade``.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, String, Uuid, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from programma_sa import JobMixin, JobQueue
from programma_sa.flask import Programma

#: The topic of the job each signup enqueues.
SEND_WELCOME = "send-welcome"


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Job(JobMixin, db.Model):  # type: ignore[name-defined,misc]  # db.Model is dynamic
    """The jobs table ("programma_jobs"), created by programma's migration steps."""


class Signup(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "signups"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    # The welcome job's id, so the app can show how far the job got.
    welcome_job_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    welcomed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


queue = JobQueue(Job)
# The Flask extension: handlers run in the app context, `flask programma ...` commands.
programma = Programma(db, queue)
