"""Small shared test helpers."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from programma_sa import migrations

from .app import Job


def job_count(session: Session) -> int:
    return session.execute(select(func.count()).select_from(Job.__table__)).scalar_one()


def chain_steps() -> list[str]:
    """The shipped migration steps, oldest first, as Alembic reads the chain's directory
    (not as programma_sa lists them): tests that mean "the newest step" use the last."""
    script = ScriptDirectory.from_config(migrations.standalone_config())
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]
