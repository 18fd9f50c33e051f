"""Real worker processes: graceful SIGTERM, and SIGKILL mid-job (nothing is lost)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import JobContext, JobQueue, JobState

from .conftest import MakeWorker
from .support import get_job, wait_for

ROOT = Path(__file__).resolve().parents[2]


def start_worker(database_url: str, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "programma_sa",
            "worker",
            "tests.worker.handlers:slow",
            "--topic",
            "t",
            "--database-url",
            database_url,
            *options,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def enqueue(engine: Engine, queue: JobQueue, **options: object) -> object:
    with Session(engine) as session, session.begin():
        return queue.add_job(session, "t", **options)  # type: ignore[arg-type]


def test_sigterm_lets_the_running_job_finish_and_exits_0(
    database_url: str, engine: Engine, queue: JobQueue
) -> None:
    job_id = enqueue(engine, queue, data={"sleep": 1.5})
    worker = start_worker(database_url, "--heartbeat", "10")
    try:
        wait_for(lambda: "started_by" in get_job(engine, queue, job_id).attributes, timeout=20)
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=20)
    finally:
        worker.kill()
    assert worker.returncode == 0, output
    assert "SIGTERM: stopping" in output
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.COMPLETED
    assert job.attributes["finished_by"] == worker.pid


def test_sigkill_mid_job_another_worker_runs_it_after_the_visibility_timeout(
    database_url: str, engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    job_id = enqueue(engine, queue, data={"sleep": 60}, retry_after_seconds=1)
    doomed = start_worker(database_url, "--heartbeat", "10")
    try:
        wait_for(lambda: "started_by" in get_job(engine, queue, job_id).attributes, timeout=20)
        assert get_job(engine, queue, job_id).attributes["started_by"] == doomed.pid
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
    finally:
        doomed.kill()
        doomed.communicate()

    ran: list[int] = []

    def rescue(ctx: JobContext) -> None:
        ran.append(ctx.job.attempts)
        ctx.set_attributes({"finished_by": os.getpid()})

    # An idle worker with a long heartbeat: it wakes when the dead worker's lease ends.
    make_worker(rescue, heartbeat=30.0, listen=True).start()
    wait_for(lambda: get_job(engine, queue, job_id).state is JobState.COMPLETED, timeout=15)
    job = get_job(engine, queue, job_id)
    assert ran == [2] and job.attempts == 2
    assert job.attributes["finished_by"] == os.getpid()
