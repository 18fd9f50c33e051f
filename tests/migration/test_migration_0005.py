"""Revision programma_0005: the CANCELLED state, results, paused topics, two indexes —
up from a table with jobs, down, and up again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy import exc as sa_exc

from programma_sa import migrations
from programma_sa.testing import fresh_database

from .test_migrations import _CustomBase, _DefaultBase, _differences


@pytest.fixture
def url(admin_url: str) -> Iterator[str]:
    with fresh_database(admin_url, prefix="programma_0005") as url:
        yield url


@pytest.fixture
def db(url: str) -> Iterator[Engine]:
    engine = create_engine(url)
    yield engine
    engine.dispose()


def _rows(db: Engine) -> list[tuple[object, ...]]:
    with db.connect() as connection:
        return list(
            connection.execute(
                text("SELECT topic, state, attributes FROM programma_jobs ORDER BY topic")
            )
        )


def test_upgrade_keeps_the_jobs_and_admits_cancelled_ones(url: str, db: Engine) -> None:
    migrations.upgrade(url, revision="programma_0004")
    with db.begin() as connection:
        connection.execute(
            text("INSERT INTO programma_jobs (topic, data, state) VALUES ('a', '{}', 'failed')")
        )
        # Not a state before 0003.
        with pytest.raises(sa_exc.IntegrityError), connection.begin_nested():
            connection.execute(
                text(
                    "INSERT INTO programma_jobs (topic, data, state)"
                    " VALUES ('b', '{}', 'cancelled')"
                )
            )
    migrations.upgrade(url)
    assert _differences(url, _DefaultBase.metadata) == []
    with db.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO programma_jobs (topic, data, state, result)"
                " VALUES ('b', '{}', 'cancelled', '[1]')"
            )
        )
        connection.execute(text("INSERT INTO programma_jobs_paused (topic) VALUES ('b')"))
    assert [row[:2] for row in _rows(db)] == [("a", "failed"), ("b", "cancelled")]


def test_downgrade_turns_cancelled_jobs_into_failed_ones_and_round_trips(
    url: str, db: Engine
) -> None:
    migrations.upgrade(url)
    with db.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO programma_jobs (topic, data, state, attributes) VALUES"
                " ('a', '{}', 'cancelled', '{\"tenant\": 7}'), ('b', '{}', 'completed', '{}')"
            )
        )
    migrations.downgrade(url, revision="programma_0004")
    # The older schema has no CANCELLED: such a job finished without completing.
    assert _rows(db) == [
        ("a", "failed", {"tenant": 7, "cancelled": True}),
        ("b", "completed", {}),
    ]
    assert "programma_jobs_paused" not in inspect(db).get_table_names()
    assert "result" not in {column["name"] for column in inspect(db).get_columns("programma_jobs")}
    migrations.upgrade(url)
    assert _differences(url, _DefaultBase.metadata) == []


def test_custom_table_name_and_schema(url: str, db: Engine) -> None:
    migrations.upgrade(url, table_name="audit_jobs", schema="queue")
    assert _differences(url, _CustomBase.metadata) == []
    assert {"audit_jobs", "audit_jobs_paused"} <= set(inspect(db).get_table_names(schema="queue"))
    migrations.downgrade(url, revision="programma_0004", table_name="audit_jobs", schema="queue")
    assert "audit_jobs_paused" not in inspect(db).get_table_names(schema="queue")
    migrations.upgrade(url, table_name="audit_jobs", schema="queue")
    assert _differences(url, _CustomBase.metadata) == []
