"""The one INFO line per finished job, and a PermanentFailure that no retry follows."""

from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import JobContext, JobQueue, JobState, PermanentFailure, RetryPolicy

from .conftest import MakeWorker
from .support import get_job

MODES = ["lease", "transaction"]
LINE = re.compile(r"^job (?P<id>\S+) \[t\] attempt (?P<attempt>\d+): (?P<outcome>\w+) in [\d.]+ ms")


def finished_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "programma_sa.worker"
        and record.levelno == logging.INFO
        and LINE.match(record.getMessage())
    ]


def enqueue_data(engine: Engine, queue: JobQueue, *datas: object) -> list[object]:
    with Session(engine) as session, session.begin():
        return [queue.add_job(session, "t", data) for data in datas]


def _handler(ctx: JobContext) -> None:
    action = ctx.job.data["do"]
    if action == "fail":
        raise TimeoutError("carrier slow")
    if action == "give up":
        raise PermanentFailure("order cancelled")
    if action == "move":
        ctx.move_to_done()


@pytest.mark.parametrize("mode", MODES)
def test_one_info_line_per_finished_job_with_its_facts(
    engine: Engine,
    queue: JobQueue,
    make_worker: MakeWorker,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    ok, fail, give_up, move = enqueue_data(
        engine, queue, {"do": "ok"}, {"do": "fail"}, {"do": "give up"}, {"do": "move"}
    )
    worker = make_worker(_handler, mode=mode, retry=RetryPolicy(max_attempts=3))

    with caplog.at_level(logging.INFO, logger="programma_sa.worker"):
        assert worker.run_once().claimed == 4

    lines = {record.job_id: record for record in finished_lines(caplog)}  # type: ignore[attr-defined]
    assert set(lines) == {str(ok), str(fail), str(give_up), str(move)}
    expected = {
        ok: ("completed", None),
        fail: ("retried", "TimeoutError"),
        give_up: ("failed", "programma_sa.exceptions.PermanentFailure"),
        move: ("untouched", None),
    }
    for job_id, (outcome, error_type) in expected.items():
        record = lines[str(job_id)]
        message = record.getMessage()
        assert message.startswith(f"job {job_id} [t] attempt 1: {outcome} in ")
        assert message.endswith(" ms" if error_type is None else f" ms ({error_type})")
        assert record.topic == "t"  # type: ignore[attr-defined]
        assert record.attempt == 1  # type: ignore[attr-defined]
        assert record.outcome == outcome  # type: ignore[attr-defined]
        assert record.error_type == error_type  # type: ignore[attr-defined]
        assert isinstance(record.duration_ms, float) and record.duration_ms >= 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", MODES)
def test_a_permanent_failure_goes_to_failed_at_its_first_attempt(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker, mode: str
) -> None:
    (job_id,) = enqueue_data(engine, queue, {"do": "give up"})

    result = make_worker(_handler, mode=mode, retry=RetryPolicy(max_attempts=9)).run_once()

    assert result.failed == 1
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.FAILED and job.attempts == 1
    assert job.attributes["last_error"]["message"] == "order cancelled"


def test_a_permanent_failure_fails_even_without_a_retry_policy(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    (job_id,) = enqueue_data(engine, queue, {"do": "give up"})

    assert make_worker(_handler, retry=None).run_once().failed == 1
    assert get_job(engine, queue, job_id).state is JobState.FAILED


def test_no_line_below_info(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker, caplog: pytest.LogCaptureFixture
) -> None:
    enqueue_data(engine, queue, {"do": "ok"})
    with caplog.at_level(logging.WARNING, logger="programma_sa.worker"):
        make_worker(_handler).run_once()
    assert not finished_lines(caplog)
