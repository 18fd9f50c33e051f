"""Periodic pruning by workers — the sync Worker and the AsyncWorker alike.

Workers with a ``retention`` prune between their passes, at most every
``prune_interval`` seconds, through ``Pruner`` / ``AsyncPruner`` and their shared
advisory lock: however many workers prune a table, every expired row is deleted
exactly once (the deletions the workers report add up to the rows that were
there), and live or unexpired rows are never touched.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, update
from sqlalchemy.orm import Session

from programma_sa import TTL, ConfigurationError, JobQueue, JobSpec, JobState, Retention

from ..maintenance.jobs import TABLE, db_now, put, states
from .harness import FLAVOURS, AnyEngine, AnyWorker, Harness, noop
from .support import HANDLERS, ROOT, wait_for

pytestmark = pytest.mark.asyncio

HOUR = timedelta(hours=1)
RETENTION = Retention(default=TTL(completed=HOUR, failed=timedelta(days=1)))


def expired_rows(engine: Engine, queue: JobQueue, count: int) -> set[uuid.UUID]:
    """``count`` COMPLETED jobs that finished two hours ago (past RETENTION's TTL)."""
    with Session(engine) as session, session.begin():
        ids = queue.add_jobs(session, "mail", [JobSpec(data=n) for n in range(count)])
        session.execute(
            update(TABLE)
            .where(TABLE.c.id.in_(ids))
            .values(state="completed", finished_at=db_now(session) - 2 * HOUR)
        )
    return set(ids)


def kept_rows(engine: Engine, queue: JobQueue) -> dict[uuid.UUID, str]:
    """Jobs no prune may touch: live ones (as old as can be) and unexpired finished ones."""
    with Session(engine) as session, session.begin():
        now = db_now(session)
        old = now - timedelta(days=365)
        ids = [
            put(session, queue, "mail", state, start_after=old, started_at=old, finished_at=old)
            for state in (JobState.CREATED, JobState.ACTIVE, JobState.PROCESSING)
        ]
        ids.append(
            put(session, queue, "mail", JobState.COMPLETED, finished_at=now - timedelta(minutes=10))
        )
        ids.append(put(session, queue, "mail", JobState.FAILED, finished_at=now - 2 * HOUR))
        every = states(session)
    return {job_id: every[job_id] for job_id in ids}


def remaining(engine: Engine) -> dict[uuid.UUID, str]:
    with Session(engine) as session:
        return states(session)


def start(harness: Harness, bind: AnyEngine | None = None, **settings: Any) -> AnyWorker:
    """A worker of ``harness`` started on the topic ``other`` (nothing to claim there),
    on ``bind`` or an engine of its own (its own connections)."""
    bind = harness.engine() if bind is None else bind
    worker = harness.worker(noop, "other", bind=bind, heartbeat=0.05, **settings)
    worker.start()
    return worker


async def stop(harness: Harness, worker: AnyWorker) -> None:
    worker.stop()
    assert await harness.join(worker, 10)


@pytest.mark.parametrize(
    "flavours",
    [(flavour, flavour) for flavour in FLAVOURS] + [("sync", FLAVOURS[1])],
    ids=lambda flavours: "+".join(flavours),
)
async def test_two_workers_prune_every_expired_row_exactly_once(
    engine: Engine,
    queue: JobQueue,
    make_harness: Callable[[str], Harness],
    flavours: tuple[str, str],
) -> None:
    """Two workers of a kind, or one of each, share the pruning: each row deleted once."""
    expired = expired_rows(engine, queue, 600)
    kept = kept_rows(engine, queue)
    settings: dict[str, Any] = {
        "retention": RETENTION,
        "prune_interval": 0.05,
        "prune_batch_size": 40,
    }
    running = [(harness, start(harness, **settings)) for harness in map(make_harness, flavours)]

    await wait_for(lambda: not expired & set(remaining(engine)), timeout=30)
    for harness, worker in running:
        await stop(harness, worker)

    assert remaining(engine) == kept  # live and unexpired jobs untouched, states unchanged
    assert sum(worker.pruned for _, worker in running) == len(expired)


async def test_a_worker_prunes_at_most_every_prune_interval(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    first = expired_rows(engine, queue, 5)
    worker = start(harness, retention=RETENTION, prune_interval=3600.0)
    await wait_for(lambda: worker.pruned == 5)  # the first pass comes at once
    assert not first & set(remaining(engine))

    later = expired_rows(engine, queue, 3)
    await asyncio.sleep(0.5)  # ten heartbeats
    assert later <= set(remaining(engine))  # the next prune is an hour away
    assert worker.pruned == 5


@pytest.mark.postgresql_only("watches for the prune's FOR UPDATE SKIP LOCKED")
async def test_without_retention_a_worker_never_prunes(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    expired = expired_rows(engine, queue, 5)
    statements: list[str] = []
    worker_engine = harness.engine()
    worker = start(harness, worker_engine, prune_interval=0.01)
    sync_target = harness.sync_engine(worker_engine)

    def note(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(sync_target, "before_cursor_execute", note)
    try:
        # Many passes of the loop: claims and look-aheads, every 50 ms.
        await wait_for(lambda: sum("FOR UPDATE SKIP LOCKED" in s for s in statements) >= 10)
    finally:
        event.remove(sync_target, "before_cursor_execute", note)
    assert not [s for s in statements if "advisory" in s or s.lstrip().startswith("DELETE")]
    assert worker.pruned == 0
    assert expired <= set(remaining(engine))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"retention": {"mail": 60}}, "retention must be a Retention or None, got {'mail': 60}"),
        ({"retention": TTL(completed=1)}, "retention must be a Retention or None"),
        ({"prune_interval": 0}, "prune_interval must be a finite number of seconds > 0, got 0"),
        ({"prune_interval": "1m"}, "prune_interval must be a finite number of seconds > 0"),
        ({"prune_batch_size": 0}, "prune_batch_size must be an int >= 1, got 0"),
    ],
)
async def test_bad_pruning_settings_are_refused_by_both_workers(
    harness: Harness, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        harness.worker(noop, **settings)


async def test_two_worker_processes_prune_every_expired_row_exactly_once(
    database_url: str, engine: Engine, queue: JobQueue, tmp_path: Path
) -> None:
    """``programma-sa worker --completed-ttl``: a sync and an async worker process."""
    options = [
        "--topic",
        "other",
        "--no-listen",
        "--heartbeat",
        "0.1",
        "--completed-ttl",
        "3600",
        "--failed-ttl",
        "86400",
        "--prune-interval",
        "0.1",
        "--prune-batch-size",
        "50",
        "--database-url",
        database_url,
    ]
    handlers = [f"{module}:slow" for module in HANDLERS.values()]
    logs = [tmp_path / f"worker-{index}.log" for index in range(len(handlers))]
    processes = []
    for handler, log in zip(handlers, logs, strict=True):
        with log.open("w") as output:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "programma_sa", "worker", handler, *options],
                    cwd=ROOT,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        # Both loops run (and prune every 0.1 s) before there is anything to prune.
        await wait_for(lambda: all("worker started" in log.read_text() for log in logs), 30)
        expired = expired_rows(engine, queue, 1000)
        kept = kept_rows(engine, queue)
        await wait_for(lambda: not expired & set(remaining(engine)), timeout=60)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=20) for process in processes]
    finally:
        for process in processes:
            process.kill()
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], outputs
    reported = [
        int(count) for output in outputs for count in re.findall(r"pruned (\d+) finished", output)
    ]
    assert sum(reported) == len(expired), outputs
    assert remaining(engine) == kept
