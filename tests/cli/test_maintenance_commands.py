"""``programma-sa stats`` and ``programma-sa prune``, end to end against the test database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from programma_sa import TTL, JobQueue, JobState, Pruner, Retention

from ..maintenance.jobs import db_now, finished, put, states
from .test_cli import run

HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _no_ambient_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.fixture
def jobs(engine: Engine, queue: JobQueue) -> Iterator[dict[str, object]]:
    """mail: 2 scheduled, 1 processing, 3 completed (2 long ago), 1 failed; sms: 1 due."""
    with Session(engine) as session, session.begin():
        now = db_now(session)
        for _ in range(2):
            queue.add_job(session, "mail", {}, run_after_seconds=3600)
        put(session, queue, "mail", JobState.PROCESSING, started_at=now)
        old = finished(session, queue, "mail", JobState.COMPLETED, 2, 2 * HOUR)
        recent = finished(session, queue, "mail", JobState.COMPLETED, 1, timedelta(seconds=1))
        failed = finished(session, queue, "mail", JobState.FAILED, 1, timedelta(days=2))
        due = queue.add_job(session, "sms", {})
    yield {"old": old, "recent": recent, "failed": failed, "due": due}


# -- stats ------------------------------------------------------------------------------------


def test_stats_prints_a_table_per_topic(
    capsys: pytest.CaptureFixture[str], database_url: str, jobs: object
) -> None:
    status, out, _ = run(capsys, "stats", "--database-url", database_url)
    assert status == 0
    title, header, mail, sms = out.splitlines()
    assert title.startswith("programma_jobs at ") and "(*_recently: the last 300.0s)" in title
    assert header.split()[:6] == ["topic", "created", "active", "processing", "completed", "failed"]
    assert mail.split()[:8] == ["mail", "2", "0", "1", "3", "1", "0", "0.0"]
    assert sms.split()[:7] == ["sms", "1", "0", "0", "0", "0", "1"]


def test_stats_json_with_a_window_and_a_topic(
    capsys: pytest.CaptureFixture[str], database_url: str, jobs: object
) -> None:
    status, out, _ = run(
        capsys,
        "stats",
        "--json",
        "--window",
        "60",
        "--topic",
        "mail",
        "--database-url",
        database_url,
    )
    assert status == 0
    document = json.loads(out)
    assert document["table"] == "programma_jobs" and document["window_seconds"] == 60.0
    (mail,) = document["topics"]
    assert {
        key: mail[key] for key in ("topic", "created", "processing", "completed", "failed")
    } == {
        "topic": "mail",
        "created": 2,
        "processing": 1,
        "completed": 3,
        "failed": 1,
    }
    assert (mail["completed_recently"], mail["failed_recently"], mail["due"]) == (1, 0, 0)


def test_stats_of_an_unknown_topic_is_zeros(
    capsys: pytest.CaptureFixture[str], database_url: str, jobs: object
) -> None:
    status, out, _ = run(
        capsys, "stats", "--format", "json", "--topic", "nobody", "--database-url", database_url
    )
    assert status == 0
    (topic,) = json.loads(out)["topics"]
    assert topic["topic"] == "nobody"
    assert all(value == 0 for key, value in topic.items() if key != "topic")


def test_stats_prometheus_output_parses(
    capsys: pytest.CaptureFixture[str], database_url: str, jobs: object
) -> None:
    status, out, _ = run(capsys, "stats", "--format", "prometheus", "--database-url", database_url)
    assert status == 0
    families = {family.name: family for family in text_string_to_metric_families(out)}
    assert {family.type for family in families.values()} == {"gauge"}
    jobs_by_state = {
        (sample.labels["topic"], sample.labels["state"]): sample.value
        for sample in families["programma_jobs"].samples
    }
    assert jobs_by_state[("mail", "created")] == 2
    assert jobs_by_state[("mail", "completed")] == 3
    assert jobs_by_state[("sms", "created")] == 1
    due = {s.labels["topic"]: s.value for s in families["programma_jobs_due"].samples}
    assert due == {"mail": 0, "sms": 1}
    lag = {s.labels["topic"]: s.value for s in families["programma_queue_lag_seconds"].samples}
    assert lag["mail"] == 0 and lag["sms"] >= 0
    (window,) = families["programma_stats_window_seconds"].samples
    assert window.value == 300 and window.labels == {"table": "programma_jobs"}


# -- prune ------------------------------------------------------------------------------------


def test_prune_deletes_exactly_the_expired_finished_jobs(
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    engine: Engine,
    queue: JobQueue,
    jobs: dict[str, list[object]],
) -> None:
    with Session(engine) as session, session.begin():
        finished(session, queue, "audit", JobState.COMPLETED, 2, timedelta(days=400))
        short = finished(session, queue, "short", JobState.COMPLETED, 3, timedelta(seconds=2))
        short_failed = finished(session, queue, "short", JobState.FAILED, 1, timedelta(seconds=2))
    with Session(engine) as session:
        before = states(session)
    expired = {*jobs["old"], *jobs["failed"], *short}

    status, out, _ = run(
        capsys,
        "prune",
        "--completed-ttl",
        "3600",
        "--failed-ttl",
        "86400",
        "--topic-ttl",
        "audit=",
        "--topic-ttl",
        "short=0,60",
        "--batch-size",
        "2",
        "--database-url",
        database_url,
    )

    assert status == 0
    assert out == f"pruned {len(expired)} finished jobs from programma_jobs in 4 batches\n"
    with Session(engine) as session:
        after = states(session)
    assert after == {job_id: state for job_id, state in before.items() if job_id not in expired}
    assert set(short_failed) <= set(after)  # failed jobs of short are kept 60 s


@pytest.mark.postgresql_only("advisory locks")
def test_prune_stops_when_another_process_is_pruning(
    capsys: pytest.CaptureFixture[str],
    database_url: str,
    engine: Engine,
    queue: JobQueue,
    jobs: object,
) -> None:
    key = Pruner(engine, queue, Retention(TTL(completed=1))).lock_key
    with Session(engine) as other, other.begin():
        other.execute(select(func.pg_advisory_xact_lock(key)))  # what a running batch holds
        status, out, _ = run(
            capsys, "prune", "--completed-ttl", "60", "--database-url", database_url
        )
    assert status == 0
    assert out.splitlines() == [
        "pruned 0 finished jobs from programma_jobs in 0 batches",
        "stopped early: another process is pruning programma_jobs",
    ]


# -- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["stats", "--window", "-1"],
            "argument --window: the window must not be negative, got -1.0",
        ),
        (
            ["stats", "--window", "5m"],
            "argument --window: the window must be a number of seconds, got '5m'",
        ),
        (["stats", "--window", "nan"], "the window must be finite, got nan"),
        (["stats", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (["stats", "--json", "--format", "table"], "not allowed with argument --json"),
        (["stats", "--topic", ""], "topic must not be empty"),
        (["prune"], "nothing to prune: give --completed-ttl, --failed-ttl or --topic-ttl"),
        (["prune", "--topic-ttl", "audit="], "nothing to prune"),
        (
            ["prune", "--completed-ttl", "-5"],
            "argument --completed-ttl: a TTL must not be negative",
        ),
        (
            ["prune", "--failed-ttl", "7d"],
            "argument --failed-ttl: a TTL must be a number of seconds, got '7d'",
        ),
        (["prune", "--completed-ttl", "inf"], "a TTL must be finite, got inf"),
        (
            ["prune", "--topic-ttl", "audit"],
            "expected TOPIC=COMPLETED_SECONDS[,FAILED_SECONDS], got 'audit'",
        ),
        (["prune", "--topic-ttl", "=60"], "topic must not be empty (in '=60')"),
        (["prune", "--topic-ttl", "a=60,soon"], "a TTL must be a number of seconds, got 'soon'"),
        (
            ["prune", "--topic-ttl", "a=60", "--topic-ttl", "a=30"],
            "--topic-ttl gives topic 'a' twice",
        ),
        (
            ["prune", "--completed-ttl", "60", "--batch-size", "0"],
            "batch_size must be at least 1, got 0",
        ),
        (["prune", "--completed-ttl", "60", "--batch-size", "x"], "invalid int value: 'x'"),
        (
            ["worker", "tests.worker.handlers:slow", "--topic", "t", "--completed-ttl", "-1"],
            "argument --completed-ttl: a TTL must not be negative",
        ),
        (
            ["worker", "tests.worker.handlers:slow", "--topic", "t", "--prune-interval", "0"],
            "prune_interval must be a finite number of seconds > 0, got 0.0",
        ),
        (
            [
                "worker",
                "tests.asyncio_worker.handlers:slow",
                "--topic",
                "t",
                "--prune-batch-size",
                "0",
            ],
            "prune_batch_size must be an int >= 1, got 0",
        ),
        (
            ["worker", "tests.asyncio_worker.handlers:slow", "--topic", "t", "--heartbeat", "0"],
            "heartbeat must be a finite number of seconds > 0",
        ),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], database_url: str, argv: list[str], message: str
) -> None:
    status, _, err = run(capsys, *argv, "--database-url", database_url)
    assert status == 2
    assert message in err, err
    assert f"usage: programma-sa {argv[0]}" in err
    assert "Traceback" not in err
