"""What each page reads, with most rows finished: an index, never the whole table.

The pages read only through the queue's statements; this names the statement(s) of
each page and checks the planner's choice as ``tests/maintenance/test_plans.py``
does (same table of 30,000 finished jobs, right after ANALYZE and after VACUUM).
Each listing is bounded by its LIMIT (the page size plus one). The job list's
filters give ``list_jobs`` statements of other shapes: the ones a filter form
most often produces are checked here, every shape in ``tests/maintenance``.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from programma_sa._drivers import statements_for
from programma_sa._drivers.base import JobsShape
from programma_sa.dashboard.bulk import BULK_LIMIT
from programma_sa.dashboard.listing import PAGE_SIZE

from ..maintenance.test_plans import STATS, TABLE, _assert_reads, _fill, _plan

pytestmark = pytest.mark.postgresql_only("PostgreSQL's planner (EXPLAIN FORMAT JSON)")

JOB = {"p_job_id": "0190a0b2-0000-7000-8000-000000000000"}
LIST = {"p_limit": PAGE_SIZE + 1}
NEXT = {**LIST, "p_cursor": JOB["p_job_id"]}
#: page: (statement or listing shape, parameters, the indexes it reads)
PAGES = [
    ("overview", "stats_all", STATS, {"claim", "processing", "finished", "failed", "cancelled"}),
    (
        "topic",
        "stats_topic",
        {**STATS, "p_topic": "bulk"},
        {"claim", "processing", "finished", "failed", "cancelled"},
    ),
    (
        "overview-throughput",
        "throughput",
        {"p_window_seconds": 3600.0, "p_buckets": 12},
        {"finished", "failed"},
    ),
    ("job", "get_by_id", JOB, {"pkey"}),
    # The listing without a filter (JobsShape()): the primary key, backwards.
    ("jobs", JobsShape(), LIST, {"pkey"}),
    ("jobs-next", JobsShape(cursor=True), NEXT, {"pkey"}),
    # A topic's jobs, any state: a branch per index its states fall in.
    (
        "jobs-topic",
        JobsShape(topic=True, cursor=True),
        {**NEXT, "p_topic": "bulk"},
        {"claim", "history", "processing"},
    ),
    (
        "jobs-completed",
        JobsShape(states=("completed",), topic=True),
        {**LIST, "p_topic": "bulk"},
        {"history"},
    ),
]


@pytest.mark.parametrize("vacuum", [False, True], ids=["analyzed", "vacuumed"])
@pytest.mark.parametrize(("page", "name", "params", "indexes"), PAGES, ids=[p[0] for p in PAGES])
def test_each_page_reads_indexes_only(
    engine: Engine,
    vacuum: bool,
    page: str,
    name: str | JobsShape,
    params: dict[str, Any],
    indexes: set[str],
) -> None:
    _fill(engine, vacuum)
    statements = statements_for("postgresql", TABLE)
    statement = (
        statements.list_jobs(name) if isinstance(name, JobsShape) else getattr(statements, name)
    )
    nodes = _plan(engine, statement, params)
    scans = {node["Node Type"] for node in nodes if node.get("Relation Name") == TABLE.name}
    assert "Seq Scan" not in scans
    used = {node["Index Name"] for node in nodes if "Index Name" in node}
    assert used == {
        f"{TABLE.name}_pkey" if index == "pkey" else f"ix_{TABLE.name}_{index}" for index in indexes
    }


BULK_PARAMS = {"p_limit": BULK_LIMIT + 1, "p_topic": "bulk"}
#: A bulk action by a topic: (statement, shape, the indexes it may read)
BULK = [
    # The counts (count_jobs): the indexes of the states taken, never the table.
    (
        "count retry",
        "count_jobs",
        JobsShape(states=("failed", "cancelled"), topic=True),
        {"failed", "cancelled", "history"},
    ),
    (
        "count cancel",
        "count_jobs",
        JobsShape(states=("created", "active", "processing"), topic=True),
        {"claim", "processing"},
    ),
    # What a cancel by filter lists, and what a retry by filter runs.
    (
        "cancel",
        "list_jobs",
        JobsShape(states=("created", "active", "processing"), topic=True),
        {"claim", "processing"},
    ),
    (
        "retry",
        "rerun_jobs",
        JobsShape(states=("failed", "cancelled"), topic=True),
        {"failed", "cancelled", "history", "pkey"},
    ),
]


@pytest.mark.parametrize("vacuum", [False, True], ids=["analyzed", "vacuumed"])
@pytest.mark.parametrize(
    ("statement", "shape", "allowed"), [b[1:] for b in BULK], ids=[b[0] for b in BULK]
)
def test_a_bulk_action_reads_its_states_indexes(
    engine: Engine, vacuum: bool, statement: str, shape: JobsShape, allowed: set[str]
) -> None:
    """Bounded by BULK_LIMIT, through the indexes of the states it takes."""
    _fill(engine, vacuum)
    built = getattr(statements_for("postgresql", TABLE), statement)(shape)
    _assert_reads(_plan(engine, built, BULK_PARAMS), allowed, None)
