"""Real worker processes (``programma-sa worker``): SIGTERM, SIGKILL mid-job, transaction mode.

Each runs with a sync handler (``tests.worker.handlers``, run by a Worker) and with an
``async def`` one (``tests.asyncio_worker.handlers``, run by an AsyncWorker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState

from ..app import Order
from ..backends import DATABASE
from .harness import Context, Harness, awaited, on
from .support import HANDLERS, ROOT, get_job, wait_for

pytestmark = pytest.mark.asyncio


class WorkerProcess(subprocess.Popen[str]):
    """A ``programma-sa worker`` process whose output (stdout and stderr) goes to a
    temporary file, read by :meth:`output` once it has ended.

    Not to a pipe: nobody reads a pipe while the worker runs, and once it holds 64 KiB
    (about 510 of the INFO lines a worker logs per completed job) the worker's next
    log line blocks — and with it the thread that logs it, the handlers and the lease
    keeper, which renews the leases of the jobs it holds. The worker stalls until
    the pipe is read; the leases of its jobs run out meanwhile and other workers run
    them again (tests/workers/test_exactly_once_processes.py did: docs/sqlite.md).
    """

    def __init__(self, arguments: list[str]) -> None:
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by output())
        super().__init__(arguments, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, text=True)

    def output(self, timeout: float | None = None) -> str:
        """What the process wrote, once it has ended (waiting up to ``timeout`` s)."""
        self.wait(timeout)
        self._log.seek(0)
        output = self._log.read()
        self._log.close()
        return output


def start_worker(database_url: str, handler: str, *options: str) -> WorkerProcess:
    return WorkerProcess(
        [
            sys.executable,
            "-m",
            "programma_sa",
            "worker",
            handler,
            "--topic",
            "t",
            "--database-url",
            database_url,
            *options,
        ]
    )


def enqueue(engine: Engine, queue: JobQueue, data: object, **options: Any) -> object:
    with Session(engine) as session, session.begin():
        return queue.add_job(session, "t", data, **options)


@pytest.mark.parametrize("concurrency", ["1", "2"])
@pytest.mark.parametrize("kind", list(HANDLERS))
async def test_sigterm_lets_the_running_job_finish_and_exits_0(
    database_url: str, engine: Engine, queue: JobQueue, kind: str, concurrency: str
) -> None:
    """SIGTERM: no new claims, the running job completes, the totals are logged, exit 0."""
    worker = start_worker(
        database_url, f"{HANDLERS[kind]}:slow", "--heartbeat", "10", "--concurrency", concurrency
    )
    try:
        # Enqueued while the worker starts up: its first claim or a NOTIFY finds it.
        job_id = enqueue(engine, queue, {"sleep": 1.5})
        await wait_for(
            lambda: "started_by" in get_job(engine, queue, job_id).attributes, timeout=20
        )
        worker.send_signal(signal.SIGTERM)
        output = worker.output(timeout=20)
    finally:
        worker.kill()
    assert worker.returncode == 0, output
    assert f"worker started: topics t, mode lease, concurrency {concurrency}" in output
    # On SQLite and MariaDB a worker polls (no LISTEN/NOTIFY there).
    assert ("listening" if DATABASE == "postgresql" else "polling only") in output
    assert "SIGTERM: stopping" in output
    assert "claimed 1, completed 1" in output  # the totals logged on the way out
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.COMPLETED
    assert job.attributes["finished_by"] == worker.pid


@on("sync", "async-psycopg")
async def test_sigkill_mid_job_another_worker_runs_it_after_the_visibility_timeout(
    database_url: str, engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """A killed worker's job is not lost: another worker runs it once its lease ends."""
    job_id = enqueue(engine, queue, {"sleep": 60}, retry_after_seconds=1)
    doomed = start_worker(database_url, f"{HANDLERS[harness.kind]}:slow", "--heartbeat", "10")
    try:
        await wait_for(
            lambda: "started_by" in get_job(engine, queue, job_id).attributes, timeout=20
        )
        assert get_job(engine, queue, job_id).attributes["started_by"] == doomed.pid
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
    finally:
        doomed.kill()
        doomed.output()

    ran: list[int] = []

    async def rescue(ctx: Context) -> None:
        ran.append(ctx.job.attempts)
        await awaited(ctx.set_attributes({"finished_by": os.getpid()}))

    # An idle worker with a long heartbeat: it wakes when the dead worker's lease ends.
    harness.worker(rescue, heartbeat=30.0, listen=True).start()
    await wait_for(lambda: get_job(engine, queue, job_id).state is JobState.COMPLETED, timeout=15)
    job = get_job(engine, queue, job_id)
    assert ran == [2] and job.attempts == 2
    assert job.attributes["finished_by"] == os.getpid()


@pytest.mark.parametrize("kind", list(HANDLERS))
async def test_transaction_mode_through_the_cli(
    database_url: str, engine: Engine, queue: JobQueue, kind: str
) -> None:
    """--mode transaction: each handler's business row commits with its job; SIGINT stops."""
    job_ids = [enqueue(engine, queue, {"order": n}) for n in (1, 2, 3)]
    worker = start_worker(
        database_url,
        f"{HANDLERS[kind]}:confirm",
        "--mode",
        "transaction",
        "--no-listen",
        "--heartbeat",
        "0.2",
    )
    try:
        await wait_for(
            lambda: all(get_job(engine, queue, i).state is JobState.COMPLETED for i in job_ids),
            timeout=20,
        )
        worker.send_signal(signal.SIGINT)
        output = worker.output(timeout=20)
    finally:
        worker.kill()
    assert worker.returncode == 0, output
    assert "SIGINT: stopping" in output and "polling only" in output
    with Session(engine) as session:
        notes = session.execute(select(Order.id, Order.note).order_by(Order.id)).all()
    assert notes == [(n, f"by {worker.pid}") for n in (1, 2, 3)]
