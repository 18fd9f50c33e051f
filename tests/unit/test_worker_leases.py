"""The worker's book of held jobs and its keeper's schedule, without a database:
the writer token, the release at stop, the lease schedule, abandonment."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from programma_sa import JobDetail, JobState, PassResult
from programma_sa._operations.jobs import JobOperations
from programma_sa.worker.duties import KeeperPlan, LeaseDuty
from programma_sa.worker.leases import COMPLETE, Holdings, Tally

from ..app import Job


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def job(retry_after_seconds: int | None = 30) -> JobDetail:
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return JobDetail(
        id=uuid.uuid4(),
        topic="t",
        data={},
        attributes={},
        state=JobState.ACTIVE,
        start_after=moment if retry_after_seconds is not None else None,
        started_at=moment,
        created_at=moment,
        finished_at=None,
        retry_after_seconds=retry_after_seconds,
        attempts=1,
    )


def test_one_writer_at_a_time_and_nothing_queued_is_left_behind() -> None:
    holdings = Holdings()
    first, second = job(), job()
    holdings.hold([first, second])
    assert holdings.queue(first.id, COMPLETE) is True  # the first queued
    assert holdings.begin_writing() is True
    assert holdings.begin_writing() is False  # another writer: it leaves its work queued
    work = holdings.take_work()
    assert work is not None and [held.job.id for held in work.queued] == [first.id]
    assert holdings.queue(second.id, COMPLETE) is True  # queued meanwhile
    work = holdings.take_work()  # the holder writes it before it lets the token go
    assert work is not None and [held.job.id for held in work.queued] == [second.id]
    assert holdings.take_work() is None  # and lets the token go in the same step
    assert holdings.begin_writing() is True


def test_jobs_not_started_are_released_and_then_never_start() -> None:
    holdings = Holdings()
    running, waiting = job(), job()
    holdings.hold([running, waiting])
    assert holdings.start(running.id) is not None
    assert holdings.release_unstarted() == 1
    assert holdings.start(waiting.id) is None
    assert holdings.begin_writing()
    work = holdings.take_work()
    assert work is not None
    assert [(held.job.id, held.outcome.kind) for held in work.queued] == [(waiting.id, "release")]


def test_a_cancellation_that_arrives_before_its_job_is_held_is_kept() -> None:
    holdings = Holdings()
    early = job()
    assert holdings.request_cancel(early.id) is False  # not held (yet)
    holdings.hold([early])
    cancellation = holdings.start(early.id)
    assert cancellation is not None and cancellation.requested


def test_the_outcome_of_a_job_given_up_on_is_dropped_not_queued_again() -> None:
    holdings = Holdings()
    held = job()
    holdings.hold([held])
    entry = holdings.start(held.id)
    assert holdings.queue(held.id, COMPLETE) is True
    assert holdings.begin_writing()
    work = holdings.take_work()
    # The writer is handed the book's own entry: nothing more is made per job.
    assert work is not None and work.queued == [entry] and work.queued[0].outcome is COMPLETE
    assert holdings.abandon() == 1  # shutdown_timeout passed while it was written
    holdings.write_again(work.queued)  # its write failed: not queued again
    assert holdings.take_work() is None
    assert holdings.queue(held.id, COMPLETE) is False  # nor is a late outcome
    assert holdings.empty


def test_a_tally_counts_each_job_once_and_abandonment_ends_it() -> None:
    holdings = Holdings()
    done, stuck = job(), job()
    tally = Tally(2)
    holdings.hold([done, stuck], tally)
    assert holdings.written([done.id.int], PassResult(completed=1)) == 1
    assert not tally.done
    assert holdings.abandon() == 1
    assert tally.done and tally.result == PassResult(claimed=2, completed=1, abandoned=1)
    # What the abandoned job's handler does later is not counted again.
    assert holdings.written([stuck.id.int], PassResult(completed=1)) == 0


@pytest.mark.parametrize(
    ("lease", "heartbeat", "due_after"),
    [(30, 5.0, 5.0), (30, 20.0, 10.0), (1, 5.0, 0.5), (None, 5.0, 5.0)],
    ids=["heartbeat-bound", "third-of-lease", "floor", "no-lease-read-only"],
)
def test_a_lease_is_renewed_when_a_third_has_passed_at_least_every_heartbeat(
    lease: int | None, heartbeat: float, due_after: float
) -> None:
    clock = Clock()
    holdings = Holdings(clock)
    held = job(lease)
    holdings.hold([held])
    operations = JobOperations(Job.__table__, notify=True, max_payload_bytes=1024)
    duty = LeaseDuty(operations, holdings, heartbeat=heartbeat, renew=True)
    assert duty.due_at() == pytest.approx(clock.now + due_after)
    renew, check = holdings.lease_pass()
    assert (len(renew), len(check)) == ((1, 0) if lease else (0, 1))


def test_the_keeper_writes_a_queued_completion_after_its_delay_and_backs_off() -> None:
    clock = Clock()
    holdings = Holdings(clock)
    plan = KeeperPlan(holdings, None)
    held = job()
    holdings.hold([held])
    assert plan.next_wake(clock.now) is None
    holdings.queue(held.id, COMPLETE)
    assert plan.next_wake(clock.now) == pytest.approx(plan.completion_delay)
    assert not plan.write_now(clock.now, stopping=False, closing=False)
    clock.now += plan.completion_delay
    assert plan.write_now(clock.now, stopping=False, closing=False)
    plan.written(False, clock.now)  # the write failed: not again before the backoff
    assert not plan.write_now(clock.now, stopping=False, closing=False)
    assert plan.write_now(clock.now, stopping=False, closing=True)  # closing: once more
    clock.now += 0.1
    assert plan.write_now(clock.now, stopping=False, closing=False)
