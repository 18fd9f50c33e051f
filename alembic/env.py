"""Alembic environment for *authoring* revisions of the shipped programma chain.

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/scratch \
        alembic revision --autogenerate -m "what changed"

compares a database migrated to the chain's head with :class:`JobMixin` and writes
the difference as a new revision into ``programma_sa/migrations/versions`` (set in
``alembic.ini``). Check the generated revision by hand: it must read the table name
and schema with ``programma_sa.migrations.table_location`` like the others.
"""

import os

from alembic import context
from sqlalchemy.orm import DeclarativeBase

from programma_sa import JobMixin
from programma_sa.migrations import run_env


class _Base(DeclarativeBase):
    pass


class _Job(JobMixin, _Base):
    pass


if os.environ.get("DATABASE_URL"):
    context.config.set_main_option("sqlalchemy.url", os.environ["DATABASE_URL"].replace("%", "%%"))
run_env(context, target_metadata=_Base.metadata)  # type: ignore[arg-type]
