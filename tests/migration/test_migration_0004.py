"""Revision programma_0004: priorities and unique jobs on an existing table, up and down,
in the migration's transaction or with CREATE INDEX CONCURRENTLY."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from programma_sa import migrations
from programma_sa.testing import fresh_database

from .projects import Project
from .test_migrations import _DefaultBase, _differences

CLAIM_BEFORE = (
    "CREATE INDEX ix_programma_jobs_claim ON public.programma_jobs USING btree "
    "(topic, start_after, id) WHERE ((state)::text = ANY ((ARRAY['created'::character "
    "varying, 'active'::character varying])::text[]))"
)
CLAIM_AFTER = CLAIM_BEFORE.replace(
    "(topic, start_after, id)", "(topic, priority DESC, start_after, id)"
)
UNIQUE = (
    "CREATE UNIQUE INDEX uq_programma_jobs_unique_key ON public.programma_jobs USING btree "
    "(unique_key) WHERE ((state)::text = ANY (unique_states))"
)


@pytest.fixture
def url(admin_url: str) -> Iterator[str]:
    with fresh_database(admin_url, prefix="programma_0004") as url:
        yield url


@pytest.fixture
def db(url: str) -> Iterator[Engine]:
    engine = create_engine(url)
    yield engine
    engine.dispose()


def _indexes(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'programma_jobs'")
        )
        return {str(name): str(definition) for name, definition in rows}


def _columns(engine: Engine) -> set[str]:
    return {str(column["name"]) for column in inspect(engine).get_columns("programma_jobs")}


def _with_jobs_at_0002(url: str, engine: Engine) -> None:
    migrations.upgrade(url, revision="programma_0002")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO programma_jobs (topic, data, state) "
                "SELECT 't', jsonb_build_object('n', n), "
                "CASE WHEN n % 2 = 0 THEN 'completed' ELSE 'created' END "
                "FROM generate_series(1, 100) AS n"
            )
        )


@pytest.mark.parametrize("concurrently", [False, True], ids=["in-transaction", "concurrently"])
def test_an_existing_table_gains_priorities_and_unique_keys(
    url: str, db: Engine, concurrently: bool
) -> None:
    _with_jobs_at_0002(url, db)
    assert _indexes(db)["ix_programma_jobs_claim"] == CLAIM_BEFORE
    migrations.upgrade(url, concurrent_indexes=concurrently)
    indexes = _indexes(db)
    assert indexes["ix_programma_jobs_claim"] == CLAIM_AFTER
    assert indexes["uq_programma_jobs_unique_key"] == UNIQUE
    assert "ix_programma_jobs_claim_new" not in indexes
    with db.connect() as connection:
        assert connection.execute(
            text("SELECT count(*), min(priority), max(priority) FROM programma_jobs")
        ).one() == (100, 0, 0)
        # Every index valid: a concurrent build that failed would leave one invalid.
        assert connection.scalar(
            text(
                "SELECT bool_and(indisvalid) FROM pg_index "
                "WHERE indrelid = 'programma_jobs'::regclass"
            )
        )
    assert _differences(url, _DefaultBase.metadata) == []


def test_a_concurrent_run_rebuilds_what_a_failed_one_left(url: str, db: Engine) -> None:
    _with_jobs_at_0002(url, db)
    with db.begin() as connection:  # as if a run had failed half-way, leaving a wrong index
        connection.execute(
            text("ALTER TABLE programma_jobs ADD COLUMN priority integer NOT NULL DEFAULT 0")
        )
        connection.execute(text("CREATE INDEX ix_programma_jobs_claim_new ON programma_jobs (id)"))
    migrations.upgrade(url, concurrent_indexes=True)
    assert _indexes(db)["ix_programma_jobs_claim"] == CLAIM_AFTER
    assert _differences(url, _DefaultBase.metadata) == []


def test_downgrade_to_0002_restores_the_fifo_claim_index_and_upgrade_round_trips(
    url: str, db: Engine
) -> None:
    _with_jobs_at_0002(url, db)
    migrations.upgrade(url)
    migrations.downgrade(url, revision="programma_0002")
    indexes = _indexes(db)
    assert indexes["ix_programma_jobs_claim"] == CLAIM_BEFORE
    assert "uq_programma_jobs_unique_key" not in indexes
    assert not {"priority", "unique_key", "unique_states"} & _columns(db)
    migrations.upgrade(url)
    assert _indexes(db)["ix_programma_jobs_claim"] == CLAIM_AFTER
    assert _differences(url, _DefaultBase.metadata) == []
    with db.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM programma_jobs")) == 100


def test_in_the_one_head_way_the_option_is_read_from_the_apps_alembic_ini(
    project: Project,
) -> None:
    """docs/alembic.md: ``programma_concurrent_indexes = true`` in the application's own
    ``alembic.ini`` reaches the revision that ``programma-sa alembic revision`` wrote."""
    assert project.programma("alembic", "revision", "--to", "programma_0002").returncode == 0
    project.ok("upgrade", "head")
    assert project.programma("alembic", "revision", "--to", "programma_0004").returncode == 0
    project.set_ini("programma_concurrent_indexes", "true")

    script = project.ok("upgrade", "head", "--sql")
    assert "CREATE UNIQUE INDEX CONCURRENTLY uq_programma_jobs_unique_key" in script
    assert "DROP INDEX CONCURRENTLY IF EXISTS ix_programma_jobs_claim;" in script

    project.ok("upgrade", "head")
    engine = project.engine()
    try:
        assert _indexes(engine)["ix_programma_jobs_claim"] == CLAIM_AFTER
    finally:
        engine.dispose()
    # The model is the chain's newest step: one more revision takes the table there.
    assert project.programma("alembic", "revision").returncode == 0
    project.ok("upgrade", "head")
    assert project.jobs_table_differences() == []
