"""Revision programma_0002: statistics indexes and storage parameters, up and down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from programma_sa import migrations
from programma_sa.testing import fresh_database

from ..migration.test_migrations import _CustomBase, _DefaultBase, _differences

RELOPTIONS = [
    "fillfactor=80",
    "autovacuum_vacuum_scale_factor=0.02",
    "autovacuum_vacuum_threshold=1000",
    "autovacuum_analyze_scale_factor=0.02",
]


@pytest.fixture
def url(admin_url: str) -> Iterator[str]:
    with fresh_database(admin_url, prefix="programma_0002") as url:
        yield url


@pytest.fixture
def db(url: str) -> Iterator[Engine]:
    engine = create_engine(url)
    yield engine
    engine.dispose()


def _reloptions(engine: Engine, table: str = "programma_jobs", schema: str = "public") -> object:
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relname = :table AND n.nspname = :schema"
            ),
            {"table": table, "schema": schema},
        ).scalar_one()


def _indexes(engine: Engine, table: str = "programma_jobs", schema: str | None = None) -> set[str]:
    return {str(index["name"]) for index in inspect(engine).get_indexes(table, schema=schema)}


def _predicates(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT indexrelid::regclass::text, pg_get_expr(indpred, indrelid) FROM pg_index"
                " WHERE indrelid = 'programma_jobs'::regclass AND indpred IS NOT NULL"
            )
        )
        return dict(rows.all())


def test_upgrade_sets_the_storage_parameters_and_indexes(url: str, db: Engine) -> None:
    migrations.upgrade(url, revision="programma_0001")
    assert _reloptions(db) is None
    migrations.upgrade(url)
    assert _reloptions(db) == RELOPTIONS
    predicates = _predicates(db)
    assert predicates["ix_programma_jobs_processing"] == "((state)::text = 'processing'::text)"
    assert predicates["ix_programma_jobs_failed"] == "((state)::text = 'failed'::text)"
    assert _differences(url, _DefaultBase.metadata) == []


def test_downgrade_to_0001_resets_them_and_upgrade_round_trips(url: str, db: Engine) -> None:
    migrations.upgrade(url)
    migrations.downgrade(url, revision="programma_0001")
    assert _reloptions(db) is None
    assert _indexes(db) == {"ix_programma_jobs_claim", "ix_programma_jobs_finished"}
    assert "programma_jobs" in inspect(db).get_table_names()
    migrations.upgrade(url)
    assert _reloptions(db) == RELOPTIONS
    assert _differences(url, _DefaultBase.metadata) == []


def test_custom_table_name_and_schema(url: str, db: Engine) -> None:
    migrations.upgrade(url, table_name="audit_jobs", schema="queue")
    assert _reloptions(db, "audit_jobs", "queue") == RELOPTIONS
    assert {"ix_audit_jobs_processing", "ix_audit_jobs_failed"} <= _indexes(
        db, "audit_jobs", "queue"
    )
    assert _differences(url, _CustomBase.metadata) == []
    migrations.downgrade(url, revision="programma_0001", table_name="audit_jobs", schema="queue")
    assert _reloptions(db, "audit_jobs", "queue") is None


def test_indexes_built_concurrently_beforehand_are_kept(url: str, db: Engine) -> None:
    """The documented path for a large live table: build the indexes first, without
    blocking writes; the revision then only sets the storage parameters."""
    migrations.upgrade(url, revision="programma_0001")
    with db.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(
            text(
                "CREATE INDEX CONCURRENTLY ix_programma_jobs_processing"
                " ON programma_jobs (topic, started_at) WHERE state = 'processing'"
            )
        )
        oid = connection.execute(text("SELECT 'ix_programma_jobs_processing'::regclass::oid"))
        before = oid.scalar_one()
    migrations.upgrade(url)
    with db.connect() as connection:
        after = connection.execute(
            text("SELECT 'ix_programma_jobs_processing'::regclass::oid")
        ).scalar_one()
    assert after == before
    assert _reloptions(db) == RELOPTIONS
    assert _differences(url, _DefaultBase.metadata) == []
