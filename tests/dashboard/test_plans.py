"""What each page reads, with most rows finished: an index, never the whole table.

The pages read only through the queue's statements; this names the statement(s) of
each page and checks the planner's choice as ``tests/maintenance/test_plans.py``
does (same table of 30,000 finished jobs, right after ANALYZE and after VACUUM).
Each listing is bounded by its LIMIT (the page size plus one).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from programma_sa._drivers import statements_for
from programma_sa._drivers.base import JobsShape
from programma_sa.dashboard.listing import PAGE_SIZE

from ..maintenance.test_plans import STATS, TABLE, _fill, _plan

pytestmark = pytest.mark.postgresql_only("PostgreSQL's planner (EXPLAIN FORMAT JSON)")

JOB = {"p_job_id": "0190a0b2-0000-7000-8000-000000000000"}
LIST = {"p_limit": PAGE_SIZE + 1}
#: page: (statement, parameters, the indexes it reads)
PAGES = [
    ("overview", "stats_all", STATS, {"claim", "processing", "finished", "failed", "cancelled"}),
    (
        "topic",
        "stats_topic",
        {**STATS, "p_topic": "bulk"},
        {"claim", "processing", "finished", "failed", "cancelled"},
    ),
    ("job", "get_by_id", JOB, {"pkey"}),
    # The listing without a filter (JobsShape()): the primary key, backwards.
    ("jobs", "list_jobs", LIST, {"pkey"}),
]


@pytest.mark.parametrize("vacuum", [False, True], ids=["analyzed", "vacuumed"])
@pytest.mark.parametrize(("page", "name", "params", "indexes"), PAGES, ids=[p[0] for p in PAGES])
def test_each_page_reads_indexes_only(
    engine: Engine, vacuum: bool, page: str, name: str, params: dict[str, Any], indexes: set[str]
) -> None:
    _fill(engine, vacuum)
    statements = statements_for("postgresql", TABLE)
    statement = (
        statements.list_jobs(JobsShape()) if name == "list_jobs" else getattr(statements, name)
    )
    nodes = _plan(engine, statement, params)
    scans = {node["Node Type"] for node in nodes if node.get("Relation Name") == TABLE.name}
    assert "Seq Scan" not in scans
    used = {node["Index Name"] for node in nodes if "Index Name" in node}
    assert used == {
        f"{TABLE.name}_pkey" if index == "pkey" else f"ix_{TABLE.name}_{index}" for index in indexes
    }
