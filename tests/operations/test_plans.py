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
    ("stats_all", STATS, {"claim", "processing", "finished", "failed", "cancelled"}),
    (
        "stats_topic",
        {**STATS, "p_topic": "bulk"},
        {"claim", "processing", "finished", "failed", "cancelled"},
    ),
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
    assert by_index[f"ix_{TABLE.name}_cancelled"] == "Index Only Scan"


def test_the_claim_reads_its_index(engine: Engine) -> None:
    _fill(engine, vacuum=False)
    nodes = _plan(
        engine, statements_for("postgresql", TABLE).claim, {"p_topic": "bulk", "p_max_jobs": 10}
    )
    assert f"ix_{TABLE.name}_claim" in {node.get("Index Name") for node in nodes}
    assert "Seq Scan" not in {
        node["Node Type"] for node in nodes if node.get("Relation Name") == TABLE.name
    }
