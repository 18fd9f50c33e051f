"""The one INFO line per finished job, and a PermanentFailure that no retry follows.

Each test runs on the sync Worker and on the AsyncWorker over both asyncio drivers.
"""

from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState, PermanentFailure, RetryPolicy

from .harness import Context, Harness, awaited
from .support import get_job

pytestmark = pytest.mark.asyncio

MODES = ["lease", "transaction"]
LINE = re.compile(r"^job \S+ \[t\] attempt \d+: \w+ in [\d.]+ ms")


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


async def handler(ctx: Context) -> None:
    action = ctx.job.data["do"]
    if action == "fail":
        raise TimeoutError("carrier slow")
    if action == "give up":
        raise PermanentFailure("order cancelled")
    if action == "move":
        await awaited(ctx.move_to_done())


@pytest.mark.parametrize("mode", MODES)
async def test_one_info_line_per_finished_job_with_its_facts(
    engine: Engine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    ok, fail, give_up, move = enqueue_data(
        engine, queue, {"do": "ok"}, {"do": "fail"}, {"do": "give up"}, {"do": "move"}
    )
    worker = harness.worker(handler, mode=mode, retry=RetryPolicy(max_attempts=3))

    with caplog.at_level(logging.INFO, logger="programma_sa.worker"):
        assert (await harness.run_once(worker)).claimed == 4

    lines = {record.job_id: record for record in finished_lines(caplog)}  # type: ignore[attr-defined]
    expected = {
        ok: ("completed", None),
        fail: ("retried", "TimeoutError"),
        give_up: ("failed", "programma_sa.exceptions.PermanentFailure"),
        move: ("untouched", None),
    }
    assert set(lines) == {str(job_id) for job_id in expected}
    for job_id, (outcome, error_type) in expected.items():
        record = lines[str(job_id)]
        message = record.getMessage()
        assert message.startswith(f"job {job_id} [t] attempt 1: {outcome} in ")
        assert message.endswith(" ms" if error_type is None else f" ms ({error_type})")
        assert record.topic == "t"  # type: ignore[attr-defined]
        assert record.attempt == 1  # type: ignore[attr-defined]
        assert record.outcome == outcome  # type: ignore[attr-defined]
        assert record.error_type == error_type  # type: ignore[attr-defined]
        duration = record.duration_ms  # type: ignore[attr-defined]
        assert isinstance(duration, float) and duration >= 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("retry", [RetryPolicy(max_attempts=9), None], ids=["policy", "no-retry"])
async def test_a_permanent_failure_goes_to_failed_at_its_first_attempt(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str, retry: RetryPolicy | None
) -> None:
    (job_id,) = enqueue_data(engine, queue, {"do": "give up"})

    result = await harness.run_once(harness.worker(handler, mode=mode, retry=retry))

    assert result.failed == 1
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.FAILED and job.attempts == 1
    assert job.attributes["last_error"]["message"] == "order cancelled"


async def test_no_line_below_info(
    engine: Engine, queue: JobQueue, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    enqueue_data(engine, queue, {"do": "ok"})
    with caplog.at_level(logging.WARNING, logger="programma_sa.worker"):
        await harness.run_once(harness.worker(handler))
    assert not finished_lines(caplog)
