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
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import ClauseElement, Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from programma_sa import JobQueue, jobs_table
from programma_sa._drivers import statements_for
from programma_sa._drivers.base import JobsShape

from ..app import Job

pytestmark = pytest.mark.postgresql_only("PostgreSQL's planner (EXPLAIN FORMAT JSON)")

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


def _sent(connection: Connection, statement: ClauseElement, params: dict[str, Any]) -> Any:
    """The SQL text and the parameters ``statement`` reaches the driver with — the
    values SQLAlchemy writes into the text (the claim's batch size) written in —
    from a run that is rolled back."""
    sent = []

    def capture(*args: Any) -> None:
        sent.append(args[2:4])  # (conn, cursor, statement, parameters, ...)

    event.listen(connection, "before_cursor_execute", capture)
    try:
        with connection.begin() as transaction:
            connection.execute(statement, params)
            transaction.rollback()
    finally:
        event.remove(connection, "before_cursor_execute", capture)
    return sent[0]


def _plan(engine: Engine, statement: ClauseElement, params: dict[str, Any]) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        sql, bound = _sent(connection, statement, params)
        result = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", bound)
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


def test_the_claim_s_generic_plan_reads_its_index(engine: Engine) -> None:
    """A prepared claim stops being planned anew each time once PostgreSQL takes its
    generic plan (topic unknown, batch size written in): that plan must be as
    index-served as a custom one — no hash join over the whole table."""
    _fill(engine, vacuum=False)
    statement = statements_for("postgresql", TABLE).claim
    with engine.connect() as connection:
        sql, bound = _sent(connection, statement, {"p_topic": "bulk", "p_max_jobs": 10})
        names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql)))
        numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m[1]) + 1}", sql)
        values = ", ".join(repr(bound[name]) for name in names)  # 'bulk' and ints
        connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        connection.exec_driver_sql(f"PREPARE claim_plan AS {numbered}")
        plan = connection.exec_driver_sql(
            f"EXPLAIN (FORMAT JSON) EXECUTE claim_plan({values})"
        ).scalar_one()[0]
        connection.rollback()
    nodes = list(_nodes(plan["Plan"]))
    assert "$1" in numbered and "LIMIT 10" in numbered
    assert f"ix_{TABLE.name}_claim" in {node.get("Index Name") for node in nodes}
    assert not {"Seq Scan", "Hash Join"} & {node["Node Type"] for node in nodes}


def test_a_prepared_claim_runs_its_generic_plan(engine: Engine) -> None:
    """psycopg 3 prepares a statement run five times; PostgreSQL then takes the
    generic plan when it costs no more than the custom ones, so claims skip planning."""
    if engine.dialect.driver != "psycopg":
        pytest.skip("psycopg 3 prepares repeated statements; this driver may not")
    _fill(engine, vacuum=True)
    queue = JobQueue(Job)
    one_connection = create_engine(engine.url, poolclass=StaticPool)
    try:
        with Session(one_connection) as session:
            for _ in range(12):
                queue.claim_jobs(session, "bulk", max_jobs=7)
                session.commit()  # psycopg forgets what it prepared on a rollback
            prepared = session.execute(
                text(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                    "WHERE statement LIKE '%FOR UPDATE SKIP LOCKED%'"
                )
            ).one()
    finally:
        one_connection.dispose()
    assert prepared.generic_plans > 0, prepared


def test_the_claim_probes_the_pause_once_and_reads_nothing_of_a_paused_topic(
    engine: Engine,
) -> None:
    """Main's loose scan by priority and issue #15's pause filter are ONE statement: the
    pause is an uncorrelated probe of <table>_paused, run once; a paused topic's claim
    never reads the claim index (the one-time filter stops it before any level)."""
    _fill(engine, vacuum=True)
    claim = statements_for("postgresql", TABLE).claim
    params = {"p_topic": "bulk", "p_max_jobs": 10}
    paused_table = f"{TABLE.name}_paused"

    def probes(nodes: list[dict[str, Any]]) -> int:
        return sum(
            node["Actual Loops"] for node in nodes if node.get("Relation Name") == paused_table
        )

    def claim_index_reads(nodes: list[dict[str, Any]]) -> int:
        return sum(
            node["Actual Rows"] * node["Actual Loops"]
            for node in nodes
            if node.get("Index Name") == f"ix_{TABLE.name}_claim"
        )

    plan, rows = _analyzed(engine, claim, params)
    nodes = list(_nodes(plan["Plan"]))
    assert rows  # the due jobs of _fill
    assert probes(nodes) == 1
    assert 0 < claim_index_reads(nodes) <= 20
    with engine.begin() as connection:
        connection.execute(text(f"INSERT INTO {paused_table} (topic) VALUES ('bulk')"))
    try:
        plan, rows = _analyzed(engine, claim, params)
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DELETE FROM {paused_table}"))
    nodes = list(_nodes(plan["Plan"]))
    assert rows == []
    assert probes(nodes) == 1
    assert claim_index_reads(nodes) == 0


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
        sql, bound = _sent(connection, statement, params)
        with connection.begin() as transaction:
            plan = connection.exec_driver_sql(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", bound
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
    # The pause filter (issue #15) in the same statement: <table>_paused probed once.
    paused = [node for node in nodes if node.get("Relation Name") == f"{TABLE.name}_paused"]
    assert sum(node["Actual Loops"] for node in paused) == 1
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


COUNT_CASES = [
    (JobsShape(states=("failed",)), {}, {"failed"}),
    (JobsShape(states=("failed", "cancelled"), topic=True), {"p_topic": "bulk"}, None),
    (
        JobsShape(states=("created", "active", "processing"), topic=True),
        {"p_topic": "bulk"},
        {"claim", "processing"},
    ),
    (
        JobsShape(states=("failed",), topic=True, error_type=True),
        {"p_topic": "bulk", "p_error_type": "app.Boom"},
        {"failed"},
    ),
]


@pytest.mark.parametrize("vacuum", [False, True], ids=["analyzed", "vacuumed"])
@pytest.mark.parametrize(
    ("shape", "params", "exactly"),
    COUNT_CASES,
    ids=["failed", "failed+cancelled of a topic", "live of a topic", "failed by type"],
)
def test_a_count_reads_the_index_of_each_state_it_counts(
    engine: Engine,
    vacuum: bool,
    shape: JobsShape,
    params: dict[str, Any],
    exactly: set[str] | None,
) -> None:
    """One branch per state: each state's partial index, never the table."""
    _fill(engine, vacuum)
    nodes = _plan(engine, statements_for("postgresql", TABLE).count_jobs(shape), params)
    _assert_reads(nodes, exactly or {"failed", "cancelled", "history"}, None)
    if exactly is not None:
        used = {node["Index Name"] for node in nodes if "Index Name" in node}
        assert used == {f"ix_{TABLE.name}_{index}" for index in exactly}


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
