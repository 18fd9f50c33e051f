"""``programma-sa worker module:registry``: one process serving a registry's topics."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState

from ..app import Order
from ..tasks.app_tasks import note_async, note_plain
from ..workers.support import all_completed
from ..workers.support import blocking_wait_for as wait_for
from .test_cli import run

ROOT = Path(__file__).resolve().parents[2]


def _serve(database_url: str, *options: str) -> subprocess.Popen[str]:
    script = shutil.which("programma-sa", path=str(Path(sys.executable).parent))
    assert script is not None
    return subprocess.Popen(
        [script, "worker", "tests.tasks.app_tasks:registry", "--heartbeat", "0.2", *options],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(worker: subprocess.Popen[str]) -> str:
    worker.terminate()
    output, _ = worker.communicate(timeout=20)
    assert worker.returncode == 0, output
    return output


@pytest.mark.parametrize(
    ("options", "served", "runner"),
    [
        ((), "notes.plain, notes.async", "AsyncWorker"),
        (("--topic", "notes.plain", "--mode", "transaction"), "notes.plain", "Worker"),
    ],
    ids=["all-tasks-async-worker", "one-topic-sync-worker"],
)
def test_the_worker_command_serves_a_registry(
    database_url: str,
    engine: Engine,
    queue: JobQueue,
    options: tuple[str, ...],
    served: str,
    runner: str,
) -> None:
    with Session(engine) as session, session.begin():
        session.add_all([Order(id=1), Order(id=2)])
        session.flush()
        plain_id = note_plain.enqueue(session, session.get(Order, 1), "plain")  # type: ignore[arg-type]
        async_id = note_async.enqueue(session, session.get(Order, 2), "async")  # type: ignore[arg-type]
    expected = [plain_id] if runner == "Worker" else [plain_id, async_id]

    worker = _serve(database_url, *options)
    try:
        wait_for(lambda: all_completed(engine, queue, expected), timeout=30)
        output = _stop(worker)
    finally:
        worker.kill()

    with Session(engine) as session:
        notes = {order.id: order.note for order in session.query(Order)}
        waiting = queue.get_job(session, async_id)
    assert notes[1] == "plain"
    assert notes[2] == ("async" if runner == "AsyncWorker" else "")
    assert waiting is not None
    assert waiting.state is (JobState.COMPLETED if runner == "AsyncWorker" else JobState.CREATED)
    assert f"worker started: topics {served}" in output
    assert "[notes.plain] attempt 1: completed in" in output


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tests.tasks.app_tasks:registry", "--topic", "nope"], "topic 'nope' is not the topic"),
        (["tests.worker.handlers:slow"], "required: --topic"),
    ],
)
def test_the_worker_command_refuses_bad_registry_arguments(
    capsys: pytest.CaptureFixture[str], database_url: str, argv: list[str], message: str
) -> None:
    status, _, err = run(capsys, "worker", *argv, "--database-url", database_url)
    assert status == 2
    assert message in err
