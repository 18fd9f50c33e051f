"""With most rows finished, no maintenance statement (nor the claim, a listing, a
re-run or a cancel) reads the whole table.

The planner's choice is checked with ``EXPLAIN (FORMAT JSON)`` on a table of 30,000
finished jobs of one topic — the case where reading the table is most tempting,
since the topic's finished rows are nearly all of it — right after ANALYZE (no
page all-visible yet) and after VACUUM ANALYZE. ``PROGRAMMA_PLAN_ROWS=1000000``
checks the same with a million finished rows (by hand: it takes a minute or two).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import ClauseElement, Engine, text

from programma_sa import jobs_table
from programma_sa._drivers import statements_for
from programma_sa._drivers.base import JobsShape

from ..app import Job

FINISHED_ROWS = int(os.environ.get("PROGRAMMA_PLAN_ROWS", "30000"))
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


# -- control of jobs in flight (issue #15) ----------------------------------------------

LIMIT = {"p_limit": 101}
CURSOR = {"p_cursor": uuid.UUID(int=2**127)}  # ids below it: every UUIDv7 of this century
LIST_CASES = [
    # (shape, params, indexes the plan may use, one index it must use)
    (JobsShape(), LIMIT, {"pkey"}, "pkey"),
    (JobsShape(cursor=True), {**LIMIT, **CURSOR}, {"pkey"}, "pkey"),
    (
        JobsShape(topic=True),
        {**LIMIT, "p_topic": "bulk"},
        {"history", "claim", "processing"},
        "history",
    ),
    (
        JobsShape(topic=True, cursor=True),
        {**LIMIT, **CURSOR, "p_topic": "bulk"},
        {"history", "claim", "processing"},
        "history",
    ),
    (
        JobsShape(states=("completed",), topic=True),
        {**LIMIT, "p_topic": "bulk"},
        {"history"},
        "history",
    ),
    (
        JobsShape(states=("failed",), topic=True),
        {**LIMIT, "p_topic": "bulk"},
        {"history", "failed"},
        None,
    ),
    (
        JobsShape(states=("created", "active"), topic=True),
        {**LIMIT, "p_topic": "bulk"},
        {"claim"},
        "claim",
    ),
    (JobsShape(states=("failed",)), LIMIT, {"failed", "pkey", "history"}, None),
    (
        JobsShape(states=("cancelled",), topic=True),
        {**LIMIT, "p_topic": "bulk"},
        {"cancelled", "history"},
        None,
    ),
]


@pytest.mark.parametrize("vacuum", [False, True], ids=["analyzed", "vacuumed"])
@pytest.mark.parametrize(
    ("shape", "params", "allowed", "required"),
    LIST_CASES,
    ids=[f"list-{index}" for index in range(len(LIST_CASES))],
)
def test_a_listing_page_reads_an_index(
    engine: Engine,
    vacuum: bool,
    shape: JobsShape,
    params: dict[str, Any],
    allowed: set[str],
    required: str | None,
) -> None:
    _fill(engine, vacuum)
    nodes = _plan(engine, statements_for("postgresql", TABLE).list_jobs(shape), params)
    _assert_reads(nodes, allowed, required)


RERUN = {"p_limit": 1000, "p_topic": "bulk"}
CONTROL_CASES = [
    ("rerun by topic", "rerun_jobs", JobsShape(states=("failed",), topic=True), RERUN),
    (
        "rerun by topic and type",
        "rerun_jobs",
        JobsShape(states=("failed", "cancelled"), topic=True, error_type=True),
        {**RERUN, "p_error_type": "app.Boom"},
    ),
    ("rerun failed anywhere", "rerun_jobs", JobsShape(states=("failed",)), {"p_limit": 1000}),
]


@pytest.mark.parametrize("vacuum", [False, True], ids=["analyzed", "vacuumed"])
@pytest.mark.parametrize(
    ("statement", "shape", "params"),
    [case[1:] for case in CONTROL_CASES],
    ids=[case[0] for case in CONTROL_CASES],
)
def test_a_rerun_by_filter_reads_the_failed_rows_by_index(
    engine: Engine, vacuum: bool, statement: str, shape: JobsShape, params: dict[str, Any]
) -> None:
    _fill(engine, vacuum)
    nodes = _plan(engine, getattr(statements_for("postgresql", TABLE), statement)(shape), params)
    _assert_reads(nodes, {"failed", "cancelled", "pkey", "history"}, None)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("cancel_job", {"p_job_id": uuid.uuid4()}),
        ("rerun_job", {"p_job_id": uuid.uuid4()}),
        ("lease_states", {"p_ids": [uuid.uuid4()]}),
    ],
)
def test_one_job_is_found_by_its_key(engine: Engine, name: str, params: dict[str, Any]) -> None:
    _fill(engine, vacuum=False)
    nodes = _plan(engine, getattr(statements_for("postgresql", TABLE), name), params)
    _assert_reads(nodes, {"pkey"}, "pkey")


def test_the_lease_writes_never_read_the_finished_rows(engine: Engine) -> None:
    """By key, or — while few jobs are live — from the claim index, which holds only
    the live ones (the completion's plans alike)."""
    _fill(engine, vacuum=False)
    held = json.dumps([{"id": str(uuid.uuid4()), "attempts": 1, "start_after": None}])
    for name in ("renew_leases", "release_unstarted"):
        nodes = _plan(engine, getattr(statements_for("postgresql", TABLE), name), {"p_held": held})
        _assert_reads(nodes, {"pkey", "claim"}, None)


def _assert_reads(nodes: list[dict[str, Any]], allowed: set[str], required: str | None) -> None:
    scans = {node["Node Type"] for node in nodes if node.get("Relation Name") == TABLE.name}
    assert "Seq Scan" not in scans, nodes
    used = {node["Index Name"] for node in nodes if "Index Name" in node}
    names = {f"{TABLE.name}_pkey" if i == "pkey" else f"ix_{TABLE.name}_{i}" for i in allowed}
    assert used and used <= names, used
    if required is not None:
        assert (f"{TABLE.name}_pkey" if required == "pkey" else f"ix_{TABLE.name}_{required}") in (
            used
        )
