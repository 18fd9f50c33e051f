"""Unique keys under concurrency: 8 processes enqueue one key, each on its own connection.

The database's unique index decides, never a look-then-insert: however the enqueues
interleave, exactly one unfinished job holds the key.
"""

from __future__ import annotations

import multiprocessing
import uuid
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session

from programma_sa import DuplicateJob, JobQueue, jobs_table
from programma_sa.uniqueness import OnConflict

from ..app import Job

TABLE = jobs_table(Job)
PROCESSES = 8
KEY = "the-one-key"
#: Enqueues per process, per policy: the issue's 1,000 for the default policy; fewer
#: for the others, whose interleavings are the same (the time is what differs).
ENQUEUES: dict[str, int] = {"keep": 1000, "replace": 250, "raise": 250}


def _enqueue(url: str, policy: OnConflict, count: int, start: Event, results: Queue) -> None:
    """One process: ``count`` enqueues of KEY, each in its own committed transaction."""
    engine = create_engine(url)
    queue = JobQueue(Job)
    ids: set[str] = set()
    refused = 0
    start.wait()
    try:
        for n in range(count):
            try:
                with Session(engine) as session, session.begin():
                    job_id = queue.add_job(
                        session, "unique", {"n": n}, unique_key=KEY, on_conflict=policy
                    )
                    ids.add(str(job_id))
            except DuplicateJob:
                refused += 1
    finally:
        engine.dispose()
    results.put((sorted(ids), refused))


def _enqueue_from_processes(database_url: str, policy: OnConflict) -> tuple[set[str], int]:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results: Queue = context.Queue()
    count = ENQUEUES[policy]
    processes = [
        context.Process(target=_enqueue, args=(database_url, policy, count, start, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    start.set()  # all at once, so that the enqueues interleave
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    ids = {job_id for returned, _ in outcomes for job_id in returned}
    return ids, sum(refused for _, refused in outcomes)


def _unfinished(engine: Engine) -> list[uuid.UUID]:
    with engine.connect() as connection:
        return list(
            connection.scalars(
                select(TABLE.c.id).where(
                    TABLE.c.unique_key == KEY,
                    TABLE.c.state.in_(["created", "active", "processing"]),
                )
            )
        )


def _count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(TABLE)) or 0


@pytest.mark.parametrize("policy", ["keep", "replace", "raise"])
def test_exactly_one_unfinished_job_holds_the_key(
    database_url: str, engine: Engine, queue: JobQueue, policy: OnConflict
) -> None:
    ids, refused = _enqueue_from_processes(database_url, policy)
    (holder,) = _unfinished(engine)
    assert _count(engine) == 1
    assert ids == {str(holder)}  # every enqueue was told the holder's id (or refused)
    total = PROCESSES * ENQUEUES[policy]
    assert refused == (total - 1 if policy == "raise" else 0)

    # Once it finished (outside the default unique_states) the key is free again.
    with Session(engine) as session, session.begin():
        queue.move_job_to_done(session, holder)
    with Session(engine) as session, session.begin():
        again = queue.add_job(session, "unique", {}, unique_key=KEY, on_conflict=policy)
    assert again != holder
    assert _unfinished(engine) == [again]
