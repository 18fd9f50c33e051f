"""Concurrent claimers on separate connections: every job delivered exactly once."""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from programma_sa import JobQueue, JobSpec, JobState

from ..app import Job

JOBS = 2_000
CLAIMERS = 8


def test_eight_claimers_deliver_each_of_2000_jobs_exactly_once(
    queue: JobQueue, engine: Engine
) -> None:
    factory = sessionmaker(engine)
    with factory.begin() as session:
        expected = set(queue.add_jobs(session, "race", [JobSpec(data=n) for n in range(JOBS)]))

    delivered: list[list[object]] = [[] for _ in range(CLAIMERS)]
    errors: list[BaseException] = []
    start = threading.Barrier(CLAIMERS)

    def claimer(slot: int) -> None:
        try:
            start.wait()
            while True:
                # Each claimer holds its own connection and transaction; the rows it
                # claims stay locked until it commits the completions.
                with factory.begin() as session:
                    jobs = queue.claim_jobs(session, "race", max_jobs=7)
                    if not jobs:
                        return
                    for job in jobs:
                        delivered[slot].append(job.id)
                        queue.move_job_to_done(session, job.id)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=claimer, args=(slot,)) for slot in range(CLAIMERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors
    counts = Counter(job_id for ids in delivered for job_id in ids)
    assert set(counts) == expected  # none lost
    assert max(counts.values()) == 1  # none twice
    assert sum(1 for ids in delivered if ids) > 1  # the work really was shared
    with Session(engine) as session:
        states = Counter(session.execute(select(Job.state)).scalars())
    assert states == {JobState.COMPLETED.value: JOBS}
