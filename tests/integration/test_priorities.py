"""Priorities: claims take higher priorities first, then start_after, then id (FIFO)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from programma_sa import InvalidJobInput, JobQueue, JobSpec, jobs_table
from programma_sa._execute import execute

from ..app import Job

TABLE = jobs_table(Job)


def _db_now(session: Session) -> datetime:
    return execute(session, JobQueue(Job).operations.clock())


def _claimed_data(queue: JobQueue, session: Session, topic: str, max_jobs: int) -> list[object]:
    return [job.data for job in queue.claim_jobs(session, topic, max_jobs=max_jobs)]


def test_higher_priority_first_then_start_after_then_enqueue_order(
    queue: JobQueue, session: Session
) -> None:
    now = _db_now(session)
    # Enqueued in an order that is none of the claim's: the claim must sort them.
    queue.add_job(session, "t", "low-old", priority=0, run_after_date=now - timedelta(hours=2))
    queue.add_job(session, "t", "high-new", priority=5, run_after_date=now - timedelta(minutes=1))
    queue.add_job(session, "t", "mid", priority=1, run_after_date=now - timedelta(hours=1))
    queue.add_job(session, "t", "high-old", priority=5, run_after_date=now - timedelta(hours=3))
    queue.add_job(session, "t", "negative", priority=-3, run_after_date=now - timedelta(days=1))
    same = now - timedelta(minutes=30)
    # Same priority and start_after: enqueue order (ids are UUIDv7).
    for name in ("same-1", "same-2", "same-3"):
        queue.add_job(session, "t", name, priority=1, run_after_date=same)
    assert _claimed_data(queue, session, "t", 3) == ["high-old", "high-new", "mid"]
    assert _claimed_data(queue, session, "t", 10) == [
        "same-1",
        "same-2",
        "same-3",
        "low-old",
        "negative",
    ]


def test_a_job_not_yet_due_never_overtakes_however_high_its_priority(
    queue: JobQueue, session: Session
) -> None:
    queue.add_job(session, "t", "urgent-later", priority=100, run_after_seconds=3600)
    queue.add_job(session, "t", "normal-now", priority=0)
    assert _claimed_data(queue, session, "t", 10) == ["normal-now"]


def test_priorities_are_per_topic(queue: JobQueue, session: Session) -> None:
    queue.add_job(session, "a", "a-high", priority=9)
    queue.add_job(session, "b", "b-low", priority=0)
    queue.add_job(session, "a", "a-low", priority=0)
    assert _claimed_data(queue, session, "b", 10) == ["b-low"]
    assert _claimed_data(queue, session, "a", 10) == ["a-high", "a-low"]


def test_a_batch_fills_across_levels_and_locks_only_what_it_takes(
    queue: JobQueue, session: Session
) -> None:
    for level in (3, 2, 1):
        queue.add_jobs(session, "t", [JobSpec(f"{level}-{n}", priority=level) for n in range(3)])
    claimed = _claimed_data(queue, session, "t", 5)
    assert claimed == ["3-0", "3-1", "3-2", "2-0", "2-1"]
    # Rows the claim passed over but did not take are not claimed (nor left locked).
    active = session.execute(
        select(func.count()).select_from(TABLE).where(TABLE.c.state == "active")
    ).scalar_one()
    assert active == 5


def test_a_leased_job_of_a_higher_priority_does_not_hide_due_ones_below(
    queue: JobQueue, session: Session
) -> None:
    queue.add_job(session, "t", "high", priority=7)
    assert _claimed_data(queue, session, "t", 1) == ["high"]  # now ACTIVE, leased 30 s
    queue.add_job(session, "t", "low", priority=0)
    assert _claimed_data(queue, session, "t", 10) == ["low"]


def test_bulk_jobs_keep_each_their_priority(queue: JobQueue, session: Session) -> None:
    ids = queue.add_jobs(
        session, "t", [JobSpec("a"), {"data": "b", "priority": 4}, JobSpec("c", priority=-1)]
    )
    assert [queue.get_job(session, job_id).priority for job_id in ids] == [0, 4, -1]  # type: ignore[union-attr]
    assert _claimed_data(queue, session, "t", 3) == ["b", "a", "c"]


def test_the_idle_look_ahead_sees_the_soonest_job_of_every_level(
    queue: JobQueue, session: Session
) -> None:
    queue.add_job(session, "t", "high-later", priority=5, run_after_seconds=600)
    queue.add_job(session, "t", "low-sooner", priority=0, run_after_seconds=60)
    seconds = execute(session, queue.operations.seconds_until_due("t"))
    assert seconds is not None and 55 < seconds <= 60
    session.execute(update(TABLE).values(start_after=None))  # as if leased with no timeout
    assert execute(session, queue.operations.seconds_until_due("t")) is None


@pytest.mark.parametrize(
    ("priority", "message"),
    [
        ("1", "priority must be an int, got '1'"),
        (True, "priority must be an int, got True"),
        (1.0, "priority must be an int, got 1.0"),
        (2**31, "priority must be between -2147483648 and 2147483647, got 2147483648"),
    ],
)
def test_a_bad_priority_is_refused_before_anything_is_written(
    queue: JobQueue, session: Session, priority: object, message: str
) -> None:
    with pytest.raises(InvalidJobInput, match=f"^{message}$"):
        queue.add_job(session, "t", {}, priority=priority)  # type: ignore[arg-type]
    with pytest.raises(InvalidJobInput, match=f"^job spec #1: {message}$"):
        queue.add_jobs(session, "t", [JobSpec(1), JobSpec(2, priority=priority)])  # type: ignore[arg-type]
    assert queue.claim_jobs(session, "t") == []
