"""``programma-sa jobs list|show|cancel|retry`` and ``programma-sa topics
pause|resume|list``, end to end against the test database."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState

from ..maintenance.jobs import TABLE, db_now, finished
from .test_cli import run


@pytest.fixture(autouse=True)
def _no_ambient_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)


def test_jobs_list_pages_newest_first(
    capsys: pytest.CaptureFixture[str], database_url: str, engine: Engine, queue: JobQueue
) -> None:
    with Session(engine) as session, session.begin():
        ids = queue.add_jobs(session, "mail", [{"data": n} for n in range(3)])
        queue.add_job(session, "sms", {})
    status, out, _ = run(
        capsys, "jobs", "list", "--topic", "mail", "--limit", "2", "--database-url", database_url
    )
    assert status == 0
    header, first, second, more = out.splitlines()
    assert header.split() == ["id", "topic", "state", "attempts", "created_at", "finished_at"]
    assert [first.split()[:4], second.split()[:4]] == [
        [str(ids[2]), "mail", "created", "0"],
        [str(ids[1]), "mail", "created", "0"],
    ]
    assert more == f"more: --cursor {ids[1]}"
    status, out, _ = run(
        capsys,
        "jobs",
        "list",
        "--topic",
        "mail",
        "--cursor",
        str(ids[1]),
        "--json",
        "--database-url",
        database_url,
    )
    assert status == 0
    page = json.loads(out)
    assert [job["id"] for job in page["jobs"]] == [str(ids[0])]
    assert page["next_cursor"] is None and page["jobs"][0]["state"] == "created"


def test_jobs_cancel_show_and_retry(
    capsys: pytest.CaptureFixture[str], database_url: str, engine: Engine, queue: JobQueue
) -> None:
    with Session(engine) as session, session.begin():
        waiting = queue.add_job(session, "mail", {})
        (done,) = finished(session, queue, "mail", JobState.COMPLETED, 1, timedelta(hours=1))
    status, out, _ = run(
        capsys, "jobs", "cancel", str(waiting), str(done), "--database-url", database_url
    )
    assert status == 0
    assert out.splitlines() == [f"{waiting} cancelled", f"{done} already_finished"]
    status, out, _ = run(capsys, "jobs", "show", str(waiting), "--database-url", database_url)
    assert status == 0 and json.loads(out)["state"] == "cancelled"
    status, out, _ = run(capsys, "jobs", "retry", str(waiting), "--database-url", database_url)
    assert (status, out) == (0, f"{waiting} re-run\n")
    with Session(engine) as session:
        job = queue.get_job(session, waiting)
    assert job is not None and job.state is JobState.CREATED


def test_jobs_retry_by_filter_in_batches(
    capsys: pytest.CaptureFixture[str], database_url: str, engine: Engine, queue: JobQueue
) -> None:
    with Session(engine) as session, session.begin():
        ids = [queue.add_job(session, "mail", {}) for _ in range(5)]
        other = queue.add_job(session, "mail", {})
        session.execute(
            update(TABLE)
            .where(TABLE.c.id.in_(ids))
            .values(
                state="failed",
                finished_at=db_now(session),
                attributes={"last_error": {"type": "app.Boom"}},
            )
        )
        session.execute(
            update(TABLE)
            .where(TABLE.c.id == other)
            .values(state="failed", attributes={"last_error": {"type": "app.Other"}})
        )
    status, out, _ = run(
        capsys,
        "jobs",
        "retry",
        "--failed",
        "--topic",
        "mail",
        "--error-type",
        "app.Boom",
        "--batch-size",
        "2",
        "--database-url",
        database_url,
    )
    assert (status, out) == (0, "re-ran 5 jobs\n")
    with Session(engine) as session:
        assert {queue.get_job(session, job_id).state for job_id in ids} == {JobState.CREATED}  # type: ignore[union-attr]
        assert queue.get_job(session, other).state is JobState.FAILED  # type: ignore[union-attr]


def test_topics_pause_list_and_resume(
    capsys: pytest.CaptureFixture[str], database_url: str, engine: Engine, queue: JobQueue
) -> None:
    url = ("--database-url", database_url)
    assert run(capsys, "topics", "pause", "mail", *url)[:2] == (0, "topic 'mail' paused\n")
    assert run(capsys, "topics", "pause", "mail", *url)[:2] == (0, "topic 'mail' already paused\n")
    status, out, _ = run(capsys, "topics", "list", *url)
    assert status == 0 and out.startswith("mail\tpaused since ")
    with Session(engine) as session, session.begin():
        queue.add_job(session, "mail", {})  # jobs keep being enqueued
        assert queue.claim_jobs(session, "mail") == []
    assert run(capsys, "topics", "resume", "mail", *url)[:2] == (0, "topic 'mail' resumed\n")
    assert run(capsys, "topics", "resume", "mail", *url)[:2] == (0, "topic 'mail' not paused\n")
    assert run(capsys, "topics", "list", *url)[:2] == (0, "")


def test_an_unknown_job_exits_1(capsys: pytest.CaptureFixture[str], database_url: str) -> None:
    missing = uuid.uuid4()
    status, out, err = run(capsys, "jobs", "cancel", str(missing), "--database-url", database_url)
    assert (status, out) == (1, "")
    assert err == f"programma-sa: error: no job with id {missing}\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["jobs", "list", "--state", "bogus"], "argument --state: invalid choice: 'bogus'"),
        (["jobs", "list", "--limit", "0"], "limit must be an int from 1 to 1000; got 0"),
        (["jobs", "list", "--cursor", "next"], "cursor must be a job id; got 'next'"),
        (
            ["jobs", "list", "--created-after", "yesterday"],
            "argument --created-after: --created-after is not an ISO-8601 date: 'yesterday'",
        ),
        (["jobs", "list", "--attributes", "{"], "--attributes is not valid JSON"),
        (["jobs", "cancel", "42"], "job id is not a UUID: '42'"),
        (["jobs", "retry"], "nothing to re-run: give job ids, or --failed (with filters)"),
        (
            ["jobs", "retry", str(uuid.UUID(int=1)), "--failed"],
            "give job ids, or --failed with filters, not both",
        ),
        (["jobs", "retry", "--failed", "--state", "completed"], "invalid choice: 'completed'"),
        (["topics", "pause", ""], "topic must not be empty"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], database_url: str, argv: list[str], message: str
) -> None:
    status, _, err = run(capsys, *argv, "--database-url", database_url)
    assert status == 2
    assert message in err, err
    assert f"usage: programma-sa {argv[0]} {argv[1]}" in err
    assert "Traceback" not in err


def test_prune_takes_a_ttl_for_cancelled_jobs(
    capsys: pytest.CaptureFixture[str], database_url: str, engine: Engine, queue: JobQueue
) -> None:
    with Session(engine) as session, session.begin():
        finished(session, queue, "mail", JobState.CANCELLED, 2, timedelta(hours=2))
        finished(session, queue, "audit", JobState.CANCELLED, 1, timedelta(hours=2))
        kept = finished(session, queue, "mail", JobState.FAILED, 1, timedelta(hours=2))
    status, out, _ = run(
        capsys,
        "prune",
        "--cancelled-ttl",
        "3600",
        "--topic-ttl",
        "audit=,,7200.5",
        "--database-url",
        database_url,
    )
    assert (status, out) == (0, "pruned 2 finished jobs from programma_jobs in 1 batches\n")
    with Session(engine) as session:
        assert queue.get_job(session, kept[0]) is not None
