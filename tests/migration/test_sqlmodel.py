"""A SQLModel application: the jobs table in ``SQLModel.metadata`` (docs/sqlmodel.md).

Issue 16, trap 5: ``class Job(JobMixin, SQLModel, table=True)`` failed with a pydantic
schema error. The supported way is a plain declarative base sharing SQLModel's
metadata; the mixed class is refused with a message that shows it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.orm import DeclarativeBase
from sqlmodel import Field, Session, SQLModel, select

from programma_sa import ConfigurationError, JobMixin, JobQueue, JobState

from .projects import alembic_project

#: The application's models module: the first Python block of docs/sqlmodel.md.
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "sqlmodel.md"
_BLOCK = re.search(r"```python\n(.*?)\n```", GUIDE.read_text(), re.S)
assert _BLOCK is not None
MODELS = _BLOCK.group(1)


# The same models in this process, for the queue on a SQLModel Session.
class Hero(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str


class JobsBase(DeclarativeBase):
    metadata = SQLModel.metadata


class Job(JobMixin, JobsBase):
    pass


def test_the_jobs_table_is_in_sqlmodels_metadata() -> None:
    assert SQLModel.metadata.tables["programma_jobs"] is Job.__table__
    assert SQLModel.metadata.tables["hero"] is Hero.__table__  # type: ignore[attr-defined]


def test_mixing_the_mixin_into_a_sqlmodel_class_is_refused_with_the_way_out() -> None:
    with pytest.raises(ConfigurationError) as refused:

        class MixedJob(JobMixin, SQLModel, table=True):  # type: ignore[call-arg]
            pass

    assert str(refused.value).startswith(
        "MixedJob: JobMixin is a SQLAlchemy declarative mixin and cannot be combined with "
        "SQLModel. Put the jobs table in SQLModel.metadata with a plain declarative base "
        "sharing it (docs/sqlmodel.md):\n    class JobsBase(DeclarativeBase):\n"
    )
    assert "MixedJob" not in SQLModel.metadata.tables


def test_create_all_on_sqlite() -> None:
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    assert {"hero", "programma_jobs"} <= set(inspect(engine).get_table_names())


def test_migrate_autogenerate_and_the_queue_on_a_sqlmodel_session(
    tmp_path: Path, app_url: str
) -> None:
    project = alembic_project(
        tmp_path / "app", app_url, "new", models=MODELS, metadata="SQLModel.metadata"
    )
    # Autogenerate writes `sqlmodel.sql.sqltypes.AutoString()` for str columns.
    mako = project.root / "alembic" / "script.py.mako"
    mako.write_text(
        mako.read_text().replace(
            "import sqlalchemy as sa\n", "import sqlalchemy as sa\nimport sqlmodel\n"
        )
    )

    assert "queue = JobQueue(Job)" in MODELS
    generated = project.programma("alembic", "revision")
    assert generated.returncode == 0, generated.stderr
    project.ok("upgrade", "head")

    # The app's autogenerate sees its own table, and no difference in the jobs table.
    output = project.ok("revision", "--autogenerate", "-m", "add heroes")
    assert "Detected added table 'hero'" in output
    assert "programma_jobs" not in output
    project.ok("upgrade", "head")
    project.ok("check")  # "No new upgrade operations detected."
    assert project.jobs_table_differences() == []

    engine = create_engine(app_url)
    queue = JobQueue(Job)
    try:
        with Session(engine) as session:
            session.add(Hero(name="Ada"))
            job_id = queue.add_job(session, "greet-hero", {"name": "Ada"})
            session.commit()
        with Session(engine) as session:
            [claimed] = queue.claim_jobs(session, "greet-hero")
            session.commit()
            assert claimed.id == job_id and claimed.data == {"name": "Ada"}
            assert queue.move_job_to_done(session, job_id)
            session.commit()
            job = session.exec(select(Job).where(Job.id == job_id)).one()
            assert job.state == JobState.COMPLETED.value
            assert session.exec(select(Hero.name)).all() == ["Ada"]
    finally:
        engine.dispose()
