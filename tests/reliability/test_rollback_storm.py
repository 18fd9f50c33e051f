"""Rollback storm: many concurrent enqueue transactions, half rolled back.

Exactly the committed jobs (and the business rows beside them) exist, and a LISTEN
connection hears exactly one notification per committed transaction and none from
a rolled-back one — so no worker is ever woken for a job that does not exist.

Each transaction enqueues on a topic of its own, because PostgreSQL folds
identical notifications within one transaction: the notifications are then
counted per transaction, by topic.
"""

from __future__ import annotations

import enum
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from psycopg import Notify
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobSpec

from ..app import Job, Order
from .conftest import Figures
from .connections import listening
from .scale import Scale

pytestmark = pytest.mark.reliability

SENTINEL = "storm-end"


class Ending(enum.Enum):
    COMMIT = "commit"
    ROLLBACK = "explicit rollback()"
    EXCEPTION = "exception inside session.begin()"
    CLOSE = "session closed without commit"


class _Abort(Exception):
    """Raised inside a transaction block to make it roll back."""


def _enqueue(queue: JobQueue, session: Session, index: int) -> list[uuid.UUID]:
    """The writes of transaction ``index``: a business row and one to four jobs."""
    topic = f"storm-{index}"
    session.add(Order(id=index, note=topic))
    shape = index % 3
    if shape == 0:
        return [queue.add_job(session, topic, {"n": index})]
    if shape == 1:  # three NOTIFYs with one payload: PostgreSQL delivers one
        return [queue.add_job(session, topic, {"n": index, "k": k}) for k in range(3)]
    specs = [JobSpec(data={"n": index, "k": k}) for k in range(1 + index % 4)]
    return queue.add_jobs(session, topic, specs)


def _run_transaction(
    queue: JobQueue, engine: Engine, index: int, ending: Ending
) -> list[uuid.UUID]:
    """Run transaction ``index`` to ``ending``; the ids of the jobs it committed."""
    if ending is Ending.EXCEPTION:
        try:
            with Session(engine) as session, session.begin():
                _enqueue(queue, session, index)
                raise _Abort
        except _Abort:
            return []
    with Session(engine) as session:
        job_ids = _enqueue(queue, session, index)
        session.flush()  # the rows and NOTIFYs really reach the server
        if ending is Ending.COMMIT:
            session.commit()
            return job_ids
        if ending is Ending.ROLLBACK:
            session.rollback()
    return []  # Ending.CLOSE: the session closes with its transaction open


def _endings(count: int, rng: random.Random) -> list[Ending]:
    """Exactly half commit; the other half rolls back, in three different ways."""
    failures = [Ending.ROLLBACK, Ending.EXCEPTION, Ending.CLOSE]
    endings = [Ending.COMMIT] * (count - count // 2) + [
        failures[n % len(failures)] for n in range(count // 2)
    ]
    rng.shuffle(endings)
    return endings


def _notified_topics(notifications: Iterator[Notify]) -> Counter[str]:
    """Payloads heard until the sentinel, which commits after every storm transaction
    (PostgreSQL delivers notifications in commit order)."""
    heard: Counter[str] = Counter()
    for notify in notifications:
        if notify.payload == SENTINEL:
            return heard
        heard[notify.payload] += 1
    raise AssertionError(f"the sentinel notification never arrived ({sum(heard.values())} heard)")


@pytest.mark.postgresql_only("LISTEN/NOTIFY")
def test_rollback_storm_leaves_only_committed_jobs_and_notifications(
    engine: Engine, database_url: str, scale: Scale, rng: random.Random, figures: Figures
) -> None:
    queue = JobQueue(Job, notify=True)
    endings = _endings(scale.storm_transactions, rng)
    committed: dict[int, list[uuid.UUID]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    pending = iter(enumerate(endings))
    start = threading.Barrier(scale.storm_connections)

    def connection_thread() -> None:
        try:
            start.wait()
            while True:
                with lock:
                    item = next(pending, None)
                if item is None:
                    return
                index, ending = item
                job_ids = _run_transaction(queue, engine, index, ending)
                if ending is Ending.COMMIT:
                    with lock:
                        committed[index] = job_ids
        except BaseException as error:  # surfaced below
            errors.append(error)

    with listening(database_url, queue.table) as listener:
        began = time.monotonic()
        threads = [
            threading.Thread(target=connection_thread) for _ in range(scale.storm_connections)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        elapsed = time.monotonic() - began
        assert not errors, errors
        with Session(engine) as session, session.begin():
            queue.add_job(session, SENTINEL, {})
        heard = _notified_topics(listener.notifies(timeout=60))

    committed_indices = {i for i, ending in enumerate(endings) if ending is Ending.COMMIT}
    assert set(committed) == committed_indices
    expected_jobs = {job_id for job_ids in committed.values() for job_id in job_ids}
    with Session(engine) as session:
        rows = session.execute(select(Job.id, Job.topic).where(Job.topic != SENTINEL))
        stored = {job_id: topic for job_id, topic in rows}
        orders = set(session.execute(select(Order.id)).scalars())
    # Exactly the committed jobs exist (ids match), each under its transaction's topic.
    assert set(stored) == expected_jobs
    assert all(stored[job_id] == f"storm-{i}" for i in committed for job_id in committed[i])
    assert orders == committed_indices
    # One notification per committed transaction, none from a rolled-back one.
    committed_topics = {f"storm-{i}" for i in committed_indices}
    from_rollbacks = sum(n for topic, n in heard.items() if topic not in committed_topics)
    assert from_rollbacks == 0
    assert heard == Counter(committed_topics)

    figures.add(
        "rollback storm",
        transactions=len(endings),
        connections=scale.storm_connections,
        committed=len(committed_indices),
        rolled_back=len(endings) - len(committed_indices),
        jobs_committed=len(expected_jobs),
        jobs_in_table=len(stored),
        notifications=sum(heard.values()),
        notifications_from_rollbacks=from_rollbacks,
        seconds=round(elapsed, 2),
    )
