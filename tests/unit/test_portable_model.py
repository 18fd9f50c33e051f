"""The model on SQLite (an application's test suite) and on PostgreSQL (its DDL, unchanged).

Trap 4 of issue 16: an application that added ``class Job(JobMixin, db.Model)`` could no
longer ``create_all`` its metadata on ``sqlite://`` ("Compiler <SQLiteTypeCompiler>
can't render element of type UUID", then JSONB). The model now uses portable types with
PostgreSQL variants; the PostgreSQL DDL is byte-for-byte what it was (the expected text
below is what the model rendered before the change; the columns and indexes of revision
programma_0004 as the model of the scheduling work rendered them, before ``unique_states``
got its portable type; those of revision programma_0005 as the control work's model
rendered them), so the shipped migrations and the model still agree there
(tests/migration compares them on a real server).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime

import pytest
from sqlalchemy import Engine, create_engine, inspect, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.schema import CreateIndex, CreateTable

from programma_sa import JobMixin, JobQueue
from programma_sa.models import standalone_jobs_table

POSTGRESQL_DDL = """\
CREATE TABLE programma_jobs (
\tid UUID DEFAULT gen_random_uuid() NOT NULL, 
\ttopic TEXT NOT NULL, 
\tdata JSONB NOT NULL, 
\tattributes JSONB DEFAULT '{}'::jsonb NOT NULL, 
\tstate VARCHAR(16) DEFAULT 'created' NOT NULL, 
\tstart_after TIMESTAMP WITH TIME ZONE DEFAULT now(), 
\tstarted_at TIMESTAMP WITH TIME ZONE, 
\tcreated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
\tfinished_at TIMESTAMP WITH TIME ZONE, 
\tretry_after_seconds INTEGER DEFAULT 30, 
\tattempts INTEGER DEFAULT 0 NOT NULL, 
\tpriority INTEGER DEFAULT 0 NOT NULL, 
\tunique_key TEXT, 
\tunique_states TEXT[], 
\tresult JSONB, 
\tPRIMARY KEY (id), 
\tCONSTRAINT ck_programma_jobs_state CHECK (state IN ('created', 'active', 'processing', 'completed', 'failed', 'cancelled'))
)
CREATE INDEX ix_programma_jobs_cancelled ON programma_jobs (topic, finished_at) WHERE state = 'cancelled'
CREATE INDEX ix_programma_jobs_claim ON programma_jobs (topic, priority DESC, start_after, id) WHERE state IN ('created', 'active')
CREATE INDEX ix_programma_jobs_failed ON programma_jobs (topic, finished_at) WHERE state = 'failed'
CREATE INDEX ix_programma_jobs_finished ON programma_jobs (topic, finished_at) WHERE state IN ('completed', 'failed')
CREATE INDEX ix_programma_jobs_history ON programma_jobs (topic, id) WHERE state IN ('completed', 'failed', 'cancelled')
CREATE INDEX ix_programma_jobs_processing ON programma_jobs (topic, started_at) WHERE state = 'processing'
CREATE UNIQUE INDEX uq_programma_jobs_unique_key ON programma_jobs (unique_key) WHERE state = ANY (unique_states)"""  # noqa: E501, W291


class Base(DeclarativeBase):
    pass


class Job(JobMixin, Base):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)


@pytest.fixture
def sqlite() -> Engine:
    """An application's SQLite test database, made by ``create_all``."""
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    return engine


def test_the_postgresql_ddl_is_unchanged() -> None:
    table = standalone_jobs_table()
    dialect = postgresql.dialect()
    statements = [CreateTable(table)] + [
        CreateIndex(index) for index in sorted(table.indexes, key=lambda index: str(index.name))
    ]
    rendered = "\n".join(str(stmt.compile(dialect=dialect)).strip() for stmt in statements)
    assert rendered == POSTGRESQL_DDL


def test_create_all_on_sqlite_makes_the_table_and_its_partial_indexes(sqlite: Engine) -> None:
    inspector = inspect(sqlite)
    # The jobs table, its companion of paused topics (programma_0005), the app's own.
    assert set(inspector.get_table_names()) == {"programma_jobs", "programma_jobs_paused", "orders"}
    with sqlite.connect() as connection:
        indexes = dict(
            connection.execute(
                text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            ).all()
        )
    assert indexes["ix_programma_jobs_claim"].endswith("WHERE state IN ('created', 'active')")
    assert indexes["ix_programma_jobs_failed"].endswith("WHERE state = 'failed'")
    assert "(topic, priority DESC, start_after, id)" in indexes["ix_programma_jobs_claim"]
    assert indexes["uq_programma_jobs_unique_key"].endswith(
        "WHERE instr(unique_states, '\"' || state || '\"') > 0"
    )
    assert indexes["ix_programma_jobs_history"].endswith(
        "WHERE state IN ('completed', 'failed', 'cancelled')"
    )
    assert len(indexes) == 7


def test_a_unique_key_is_held_only_in_its_unique_states_on_sqlite(sqlite: Engine) -> None:
    """The unique index means on SQLite what it means on PostgreSQL, over a JSON array."""

    def add(state: str, key: str | None, states: list[str] | None) -> None:
        with Session(sqlite) as session, session.begin():
            session.add(Job(topic="t", data={}, state=state, unique_key=key, unique_states=states))

    unfinished = ["created", "active", "processing"]
    add("completed", "k", unfinished)
    add("failed", "k", unfinished)  # finished jobs hold no key
    add("created", "k", unfinished)
    with pytest.raises(IntegrityError, match="UNIQUE constraint failed"):
        add("processing", "k", unfinished)
    add("processing", "other", unfinished)
    add("created", None, None)  # jobs without a key
    add("created", None, None)
    add("active", "k", ["created"])  # each job's own states
    add("active", "k", ["created", "inactive"])  # whole names: "active" is not "inactive"
    with Session(sqlite) as session:
        assert session.scalars(select(Job.unique_states).where(Job.state == "completed")).all() == [
            unfinished
        ]


def test_a_job_row_round_trips_on_sqlite(sqlite: Engine) -> None:
    job_id = uuid.uuid4()
    with Session(sqlite) as session, session.begin():
        session.add(Job(id=job_id, topic="emails", data={"to": ["ada"], "n": 1}))
    with Session(sqlite) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.topic, job.data, job.attributes, job.state) == (
            "emails",
            {"to": ["ada"], "n": 1},
            {},
            "created",
        )
        assert (job.retry_after_seconds, job.attempts) == (30, 0)
        assert isinstance(job.created_at, datetime) and isinstance(job.start_after, datetime)
        # JSON null, not SQL NULL, as on PostgreSQL (none_as_null=False).
        job.data = None
        session.commit()
        assert session.scalar(select(Job.data).where(Job.id == job_id)) is None
        assert session.scalar(text("SELECT data FROM programma_jobs")) == "null"


def test_the_server_default_id_is_a_random_version_4_uuid_on_sqlite(sqlite: Engine) -> None:
    with sqlite.begin() as connection:
        for _ in range(20):
            connection.execute(text("INSERT INTO programma_jobs (topic, data) VALUES ('t', '1')"))
        raw = connection.scalars(text("SELECT id FROM programma_jobs")).all()
    # Stored as SQLAlchemy's Uuid stores a UUID there: 32 hex digits, so lookups match.
    assert all(re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", value) for value in raw)
    assert len(set(raw)) == 20
    with Session(sqlite) as session:
        ids = session.scalars(select(Job.id)).all()
        assert {uuid.UUID(value) for value in raw} == set(ids)
        assert all(job_id.version == 4 for job_id in ids)
        assert session.get(Job, ids[0]) is not None


def test_the_queue_runs_on_the_table_create_all_made_on_sqlite(sqlite: Engine) -> None:
    """The queue runs on SQLite (docs/sqlite.md), on the model's own table too."""
    queue = JobQueue(Job)
    with Session(sqlite) as session, session.begin():
        session.add(Order(id=1))
        job_id = queue.add_job(session, "emails", {"n": 1})
    with Session(sqlite) as session, session.begin():
        [job] = queue.claim_jobs(session, "emails")
        assert (job.id, job.data, job.attempts) == (job_id, {"n": 1}, 1)
        assert session.scalar(select(Order.id)) == 1
