"""With most rows finished, no maintenance statement (nor the claim) reads the whole table.

The planner's choice is checked with ``EXPLAIN (FORMAT JSON)`` on a table of 30,000
finished jobs of one topic — the case where reading the table is most tempting,
since the topic's finished rows are nearly all of it — right after ANALYZE (no
page all-visible yet) and after VACUUM ANALYZE.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import ClauseElement, Engine, text

from programma_sa import jobs_table
from programma_sa._drivers import statements_for

from ..app import Job

pytestmark = pytest.mark.postgresql_only("PostgreSQL's planner (EXPLAIN FORMAT JSON)")

FINISHED_ROWS = 30_000
TABLE = jobs_table(Job)


def _fill(engine: Engine, vacuum: bool) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO programma_jobs (topic, data, state, start_after, started_at,
                                            finished_at, attempts)
                SELECT 'bulk', jsonb_build_object('n', n),
                       CASE WHEN n % 50 = 0 THEN 'failed' ELSE 'completed' END,
                       NULL, now() - interval '2 days', now() - n * interval '1 second', 1
                FROM generate_series(1, :rows) AS n
                """
            ),
            {"rows": FINISHED_ROWS},
        )
        connection.execute(
            text(
                """
                INSERT INTO programma_jobs (topic, data, state, start_after, started_at)
                SELECT topic, '{}', state, now() - interval '1 minute', now()
                FROM (VALUES ('bulk', 'created'), ('bulk', 'active'), ('bulk', 'processing'),
                             ('small', 'created')) AS live(topic, state)
                """
            )
        )
    with engine.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(text(f"{'VACUUM ' if vacuum else ''}ANALYZE programma_jobs"))


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _plan(engine: Engine, statement: ClauseElement, params: dict[str, Any]) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        compiled = statement.compile(dialect=connection.dialect)
        result = connection.exec_driver_sql(
            f"EXPLAIN (FORMAT JSON) {compiled}", {**compiled.params, **params}
        )
        return list(_nodes(result.scalar_one()[0]["Plan"]))


STATS = {"p_window_seconds": 300.0}
PRUNE = {"p_topic": "bulk", "p_ttl_seconds": 3600.0, "p_limit": 1000}
CASES = [
    ("stats_all", STATS, {"claim", "processing", "finished", "failed"}),
    ("stats_topic", {**STATS, "p_topic": "bulk"}, {"claim", "processing", "finished", "failed"}),
    ("finished_topics", {}, {"finished"}),
    ("prune_completed", PRUNE, {"finished", "pkey"}),
    ("prune_failed", PRUNE, {"failed", "pkey"}),
]


@pytest.mark.parametrize("vacuum", [False, True], ids=["analyzed", "vacuumed"])
@pytest.mark.parametrize(("name", "params", "indexes"), CASES, ids=[c[0] for c in CASES])
def test_no_statement_scans_the_table(
    engine: Engine, vacuum: bool, name: str, params: dict[str, Any], indexes: set[str]
) -> None:
    _fill(engine, vacuum)
    statement = getattr(statements_for("postgresql", TABLE), name)
    nodes = _plan(engine, statement, params)
    scans = {node["Node Type"] for node in nodes if node.get("Relation Name") == TABLE.name}
    assert "Seq Scan" not in scans
    used = {node["Index Name"] for node in nodes if "Index Name" in node}
    assert used == {
        f"{TABLE.name}_pkey" if index == "pkey" else f"ix_{TABLE.name}_{index}" for index in indexes
    }


def test_the_finished_counts_are_index_only(engine: Engine) -> None:
    _fill(engine, vacuum=True)
    statement = statements_for("postgresql", TABLE).stats_topic
    nodes = _plan(engine, statement, {**STATS, "p_topic": "bulk"})
    by_index = {node["Index Name"]: node["Node Type"] for node in nodes if "Index Name" in node}
    assert by_index[f"ix_{TABLE.name}_finished"] == "Index Only Scan"
    assert by_index[f"ix_{TABLE.name}_failed"] == "Index Only Scan"
    assert by_index[f"ix_{TABLE.name}_processing"] == "Index Only Scan"


def test_the_claim_reads_its_index(engine: Engine) -> None:
    _fill(engine, vacuum=False)
    nodes = _plan(
        engine, statements_for("postgresql", TABLE).claim, {"p_topic": "bulk", "p_max_jobs": 10}
    )
    assert f"ix_{TABLE.name}_claim" in {node.get("Index Name") for node in nodes}
    assert "Seq Scan" not in {
        node["Node Type"] for node in nodes if node.get("Relation Name") == TABLE.name
    }


# -- the claim with priorities, at scale ---------------------------------------------------

FINISHED_AT_SCALE = 1_000_000
DUE_AT_SCALE = 100_000
LEVELS = 5  # the due jobs' priorities: 0 … 4
LATER_AT_SCALE = 50_000  # priority 9, due tomorrow: a claim must not step over them


def _fill_at_scale(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO programma_jobs (topic, data, state, start_after, started_at,
                                            finished_at, attempts)
                SELECT 'bulk', jsonb_build_object('n', n), 'completed', NULL,
                       now() - interval '2 days', now() - interval '1 day', 1
                FROM generate_series(1, :rows) AS n
                """
            ),
            {"rows": FINISHED_AT_SCALE},
        )
        connection.execute(
            text(
                """
                INSERT INTO programma_jobs (topic, data, priority, start_after)
                SELECT 'bulk', jsonb_build_object('n', n), n % :levels,
                       now() - interval '1 hour' + n * interval '1 millisecond'
                FROM generate_series(1, :rows) AS n
                """
            ),
            {"rows": DUE_AT_SCALE, "levels": LEVELS},
        )
        connection.execute(
            text(
                """
                INSERT INTO programma_jobs (topic, data, priority, start_after)
                SELECT 'bulk', '{}', 9, now() + interval '1 day'
                FROM generate_series(1, :rows) AS n
                """
            ),
            {"rows": LATER_AT_SCALE},
        )
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("VACUUM ANALYZE programma_jobs")
        )


def _analyzed(
    engine: Engine, statement: ClauseElement, params: dict[str, Any]
) -> tuple[dict[str, Any], list[Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) of ``statement``, run and rolled back: its plan, and
    the rows it returned when run again for real (and rolled back)."""
    with engine.connect() as connection:
        compiled = statement.compile(dialect=connection.dialect)
        bound = {**compiled.params, **params}
        with connection.begin() as transaction:
            plan = connection.exec_driver_sql(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {compiled}", bound
            ).scalar_one()[0]
            transaction.rollback()
        with connection.begin() as transaction:
            rows = list(connection.execute(statement, params).mappings())
            transaction.rollback()
    return plan, rows


def test_the_claim_by_priority_reads_a_batch_among_a_million_finished_jobs(
    engine: Engine,
) -> None:
    _fill_at_scale(engine)
    statements = statements_for("postgresql", TABLE)
    plan, rows = _analyzed(engine, statements.claim, {"p_topic": "bulk", "p_max_jobs": 10})
    nodes = list(_nodes(plan["Plan"]))
    on_table = [node for node in nodes if node.get("Relation Name") == TABLE.name]
    assert "Seq Scan" not in {node["Node Type"] for node in on_table}
    claim_scans = [node for node in on_table if node.get("Index Name") == f"ix_{TABLE.name}_claim"]
    assert claim_scans  # the levels and each level's due jobs come from the claim index
    # The due jobs are read from (topic, priority) in start_after order, so the scans
    # read about a batch: not the 100,000 due jobs, nor the 50,000 later ones of
    # priority 9 (one descent finds that level has nothing due).
    read = sum(node["Actual Rows"] * node["Actual Loops"] for node in claim_scans)
    assert read <= 20, read
    buffers = plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"]
    assert buffers < 300, buffers  # the table is over 15,000 pages
    # The batch: the highest priority with due jobs, oldest first.
    assert [row["priority"] for row in rows] == [LEVELS - 1] * 10
    due = [row["due_at"] for row in sorted(rows, key=lambda row: row["due_at"])]
    assert [row["due_at"] for row in rows] == due


def test_the_idle_look_ahead_reads_one_entry_per_level_at_scale(engine: Engine) -> None:
    _fill_at_scale(engine)
    statement = statements_for("postgresql", TABLE).seconds_until_due
    plan, rows = _analyzed(engine, statement, {"p_topic": "bulk"})
    nodes = list(_nodes(plan["Plan"]))
    assert "Seq Scan" not in {n["Node Type"] for n in nodes if n.get("Relation Name") == TABLE.name}
    buffers = plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"]
    assert buffers < 200, buffers
    (row,) = rows
    assert next(iter(row.values())) < 0  # due jobs exist: the soonest is in the past
