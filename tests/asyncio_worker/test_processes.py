"""``programma-sa worker`` with an ``async def`` handler: a real process, a real SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState

from ..app import Order
from ..worker.support import get_job, wait_for

ROOT = Path(__file__).resolve().parents[2]


def start_worker(database_url: str, handler: str, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "programma_sa",
            "worker",
            f"tests.asyncio_worker.handlers:{handler}",
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


def enqueue(engine: Engine, queue: JobQueue, data: object) -> object:
    with Session(engine) as session, session.begin():
        return queue.add_job(session, "t", data)


def test_sigterm_lets_the_running_async_job_finish_and_exits_0(
    database_url: str, engine: Engine, queue: JobQueue
) -> None:
    worker = start_worker(database_url, "slow", "--heartbeat", "10", "--concurrency", "2")
    try:
        # Enqueued while the worker starts up: its first claim or a NOTIFY finds it.
        job_id = enqueue(engine, queue, {"sleep": 1.5})
        wait_for(lambda: "started_by" in get_job(engine, queue, job_id).attributes, timeout=20)
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=20)
    finally:
        worker.kill()
    assert worker.returncode == 0, output
    assert "worker started: topics t, mode lease, concurrency 2" in output
    assert "listening" in output and "SIGTERM: stopping" in output
    assert "claimed 1, completed 1" in output  # the totals logged on the way out
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.COMPLETED
    assert job.attributes["finished_by"] == worker.pid


def test_transaction_mode_through_the_cli(
    database_url: str, engine: Engine, queue: JobQueue
) -> None:
    job_ids = [enqueue(engine, queue, {"order": n}) for n in (1, 2, 3)]
    worker = start_worker(
        database_url, "confirm", "--mode", "transaction", "--no-listen", "--heartbeat", "0.2"
    )
    try:
        wait_for(
            lambda: all(get_job(engine, queue, i).state is JobState.COMPLETED for i in job_ids),
            timeout=20,
        )
        worker.send_signal(signal.SIGINT)
        output, _ = worker.communicate(timeout=20)
    finally:
        worker.kill()
    assert worker.returncode == 0, output
    assert "SIGINT: stopping" in output and "polling only" in output
    with Session(engine) as session:
        notes = session.execute(select(Order.id, Order.note).order_by(Order.id)).all()
    assert notes == [(n, f"by {worker.pid}") for n in (1, 2, 3)]
