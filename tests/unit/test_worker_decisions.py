"""The worker's decisions, driven by scripted replies: no database, no mocks.

Each test drives one decision of :class:`~programma_sa.worker.decisions.WorkerCore`
(a generator of steps that does no I/O) with :class:`~.scripted.Script`, which
answers every step from the test's replies and records the steps, and asserts the
steps handed out and what the decision returned or raised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from programma_sa import (
    TTL,
    ClaimedJob,
    CommitFailed,
    DatabaseError,
    JobState,
    PassResult,
    Retention,
    RetryPolicy,
    TransactionLost,
    Worker,
)
from programma_sa._operations import Operation
from programma_sa._operations.jobs import LeaseState
from programma_sa.worker.decisions import Backoff, WorkerCore
from programma_sa.worker.duties import DutySchedule, PruneDuty
from programma_sa.worker.leases import COMPLETE, Tally
from programma_sa.worker.steps import ConnectionLost, EachCommitted, Returned, RunHandler

from .scripted import Computed, Each, Raise, Script, async_worker, db_error, job, worker

WORKER_LOG = "programma_sa.worker"

#: Retry after exactly 7 s (no jitter), FAILED on the third delivery.
SEVEN_SECONDS = RetryPolicy.constant(7.0, max_attempts=3)


# -- helpers ---------------------------------------------------------------------------


def last_error(operation: Operation[Any]) -> dict[str, Any]:
    """The ``last_error`` an outcome write merges into the job's attributes."""
    record: dict[str, Any] = json.loads(operation.params["p_attributes"])["last_error"]
    return record


def logged_about(caplog: pytest.LogCaptureFixture, level: int, claimed: ClaimedJob) -> bool:
    """Whether a line of ``level`` names the job's id (text and ``extra``), as documented."""
    return any(
        record.levelno == level
        and str(claimed.id) in record.getMessage()
        and getattr(record, "job_id", None) == str(claimed.id)
        for record in caplog.records
        if record.name == WORKER_LOG
    )


def run_lease_batch(core: WorkerCore, jobs: list[ClaimedJob], script: Script) -> PassResult:
    """What a driver does with one lease-mode claim: book the jobs, run each one's
    steps and queue its outcome, then a final writer (what ``run_once`` does)."""
    tally = Tally(len(jobs))
    core.holdings.hold(jobs, tally)
    for claimed in jobs:
        decided = script.run(core._leased_job_steps(claimed))
        if isinstance(decided, PassResult):
            core._record(claimed, decided)
        else:
            core.holdings.queue(claimed.id, decided)
    script.run(core._writer_steps(final=True))
    assert tally.done
    return tally.result


def due_claims(jobs: list[ClaimedJob]) -> list[tuple[ClaimedJob, Any]]:
    """A transaction-mode claim's reply: each job with its ``due_at`` before the claim."""
    assert all(claimed.started_at is not None for claimed in jobs)
    return [(claimed, claimed.started_at) for claimed in jobs]


def reclaimed(claimed: ClaimedJob) -> ClaimedJob:
    """The job as ``reclaim_rolled_back`` returns it: claimed again, a new lease."""
    assert claimed.start_after is not None
    return dataclasses.replace(claimed, start_after=claimed.start_after.replace(year=2031))


# -- claims ----------------------------------------------------------------------------


def test_claims_start_at_a_rotating_topic() -> None:
    """Each pass asks every topic once, starting one topic further than the pass before."""
    core = worker(["a", "b", "c"], max_jobs=10)
    orders = []
    for _ in range(4):
        script = Script({"claim": []})
        assert script.run(core._claim_steps()) == []
        orders.append([claim.params["p_topic"] for claim in script.steps("claim")])
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_claims_ask_each_topic_for_the_room_left_and_stop_when_max_jobs_is_filled() -> None:
    """A topic is asked for max_jobs minus what earlier topics gave; a full pass stops."""
    core = worker(["a", "b", "c"], max_jobs=5)
    from_a = [job("a"), job("a")]
    from_b = [job("b"), job("b"), job("b")]
    script = Script({"claim": Each(from_a, from_b)})
    assert script.run(core._claim_steps()) == from_a + from_b
    asked = [
        (claim.params["p_topic"], claim.params["p_max_jobs"]) for claim in script.steps("claim")
    ]
    assert asked == [("a", 5), ("b", 3)]  # "c" not asked: the pass is full


def test_claims_of_a_short_pass_ask_every_topic() -> None:
    """Topics that give less than their room leave room for the next ones, all asked."""
    core = worker(["a", "b"], max_jobs=4)
    script = Script({"claim": Each([job("a")], [job("b")])})
    assert len(script.run(core._claim_steps())) == 2
    asked = [claim.params["p_max_jobs"] for claim in script.steps("claim")]
    assert asked == [4, 3]


def test_one_topic_lease_claim_is_each_committed() -> None:
    """A one-topic lease claim is one statement, a unit of work of its own."""
    claimed = [job()]
    script = Script({"claim": claimed})
    assert script.run(worker("emails")._lease_claim_steps()) == claimed
    assert script.trace() == ["EachCommitted", "EachCommitted/claim"]


def test_multi_topic_lease_claim_is_one_transaction() -> None:
    """The claims of several topics share one transaction: they commit together."""
    script = Script({"claim": Each([job("a")], [job("b")])})
    assert len(script.run(worker(["a", "b"])._lease_claim_steps())) == 2
    assert script.trace() == ["InTransaction", "InTransaction/claim", "InTransaction/claim"]


def test_lease_claim_database_error_reaches_the_loop() -> None:
    """A failed claim is not swallowed: the loop's backoff handles it."""
    script = Script({"claim": Raise(db_error())})
    with pytest.raises(sa_exc.OperationalError):
        script.run(worker("emails")._lease_claim_steps())


# -- a leased job ----------------------------------------------------------------------


def test_leased_job_whose_handler_returned_queues_its_completion() -> None:
    """A returned handler's job gets no write of its own: its completion is queued for
    the writer (batched with the others finishing at that moment)."""
    claimed = job()
    core = worker()
    core.holdings.hold([claimed])
    script = Script({"RunHandler": Returned()})
    assert script.run(core._leased_job_steps(claimed)) is COMPLETE
    assert script.trace() == ["RunHandler"]
    assert script.step("RunHandler") == RunHandler(claimed, script.step("RunHandler").cancellation)


def test_leased_job_whose_handler_raised_is_retried_after_the_policy_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """retry_unchanged, guarded by the claim, with the policy's delay and last_error."""
    claimed = job(attempts=1)
    error = ValueError("bad payload")
    script = Script({"RunHandler": error, "retry_unchanged": True})
    with caplog.at_level(logging.WARNING, WORKER_LOG):
        outcome = run_lease_batch(worker(retry=SEVEN_SECONDS), [claimed], script)
    assert outcome == PassResult(claimed=1, retried=1)
    assert script.trace() == ["RunHandler", "EachCommitted", "EachCommitted/retry_unchanged"]
    retry = script.step("retry_unchanged")
    assert retry.params["p_delay"] == 7.0
    assert retry.params["p_job_id"] == claimed.id
    assert retry.params["p_attempts"] == claimed.attempts
    assert retry.params["p_start_after"] == claimed.start_after
    recorded = last_error(retry)
    assert (recorded["type"], recorded["message"], recorded["attempt"]) == (
        "ValueError",
        "bad payload",
        1,
    )
    assert logged_about(caplog, logging.WARNING, claimed)


def test_leased_job_whose_attempts_are_exhausted_is_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On the policy's last delivery the raised error moves the job to FAILED."""
    claimed = job(attempts=3)
    script = Script({"RunHandler": RuntimeError("again"), "fail_unchanged": True})
    with caplog.at_level(logging.WARNING, WORKER_LOG):
        outcome = run_lease_batch(worker(retry=SEVEN_SECONDS), [claimed], script)
    assert outcome == PassResult(claimed=1, failed=1)
    assert script.trace() == ["RunHandler", "EachCommitted", "EachCommitted/fail_unchanged"]
    failed = script.step("fail_unchanged")
    assert failed.params["p_attempts"] == 3
    assert last_error(failed)["message"] == "again"
    assert logged_about(caplog, logging.ERROR, claimed)


def test_leased_job_one_attempt_before_exhaustion_is_still_retried() -> None:
    """max_attempts=3 retries the second delivery (the boundary is the last one only)."""
    script = Script({"RunHandler": RuntimeError("x"), "retry_unchanged": True})
    outcome = run_lease_batch(worker(retry=SEVEN_SECONDS), [job(attempts=2)], script)
    assert outcome == PassResult(claimed=1, retried=1)


def test_leased_job_without_retry_policy_is_left_to_its_visibility_timeout() -> None:
    """retry=None records last_error and keeps the claim's lease (no delay)."""
    script = Script({"RunHandler": RuntimeError("x"), "retry_unchanged": True})
    outcome = run_lease_batch(worker(retry=None), [job(attempts=50)], script)
    assert outcome == PassResult(claimed=1, retried=1)
    retry = script.step("retry_unchanged")
    assert retry.params["p_delay"] is None
    assert last_error(retry)["message"] == "x"


def test_leased_job_failure_write_matching_no_row_leaves_it_untouched() -> None:
    """A handler that moved its job first wins: the guarded write matched nothing
    (the job's state, read back, shows the handler's own move)."""
    claimed = job()
    moved = {claimed.id: LeaseState(JobState.COMPLETED, claimed.attempts, claimed.start_after)}
    script = Script(
        {"RunHandler": RuntimeError("x"), "retry_unchanged": False, "lease_states": moved}
    )
    outcome = run_lease_batch(worker(), [claimed], script)
    assert outcome == PassResult(claimed=1, left_untouched=1)


@pytest.mark.parametrize(
    "error",
    [db_error(), DatabaseError("server closed the connection")],
    ids=["driver-error", "programma-error"],
)
def test_leased_job_failure_write_database_error_leaves_it_untouched_and_is_logged(
    caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    """A failure record the database refused twice (the second time on a fresh
    connection): the job waits for its lease, an ERROR names it."""
    claimed = job()
    script = Script({"RunHandler": RuntimeError("x"), "retry_unchanged": Raise(error)})
    with caplog.at_level(logging.WARNING, WORKER_LOG):
        outcome = run_lease_batch(worker(), [claimed], script)
    assert outcome == PassResult(claimed=1, left_untouched=1)
    assert script.trace() == [
        "RunHandler",
        "EachCommitted",
        "EachCommitted/retry_unchanged",
        "EachCommitted",
        "EachCommitted/retry_unchanged",
    ]
    lost = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert lost and str(claimed.id) in lost[-1].getMessage()


# -- a lease batch's completion ----------------------------------------------------------


def test_batch_completion_completes_the_returned_jobs_unchanged_since_their_claim() -> None:
    """One complete_unchanged with each returned job's id, attempts and lease end."""
    jobs = [job(attempts=1), job(attempts=2, lease=60)]
    completed = [claimed.id for claimed in jobs]
    script = Script({"RunHandler": Returned(), "complete_unchanged": completed})
    result = run_lease_batch(worker(), jobs, script)
    assert result == PassResult(claimed=2, completed=2)
    assert script.trace() == [
        "RunHandler",
        "RunHandler",
        "EachCommitted",
        "EachCommitted/complete_unchanged",
    ]
    sent = json.loads(script.step("complete_unchanged").params["p_claimed"])
    assert sent == [
        {
            "id": claimed.id.hex,
            "attempts": claimed.attempts,
            "start_after": claimed.start_after.isoformat() if claimed.start_after else None,
        }
        for claimed in jobs
    ]


def test_batch_completion_leaves_out_the_jobs_whose_handler_raised() -> None:
    """Only returned handlers' jobs are completed; the raised one's retry is counted too."""
    jobs = [job(), job(), job()]
    returned = [jobs[0], jobs[2]]
    script = Script(
        {
            "RunHandler": Each(Returned(), RuntimeError("x"), Returned()),
            "retry_unchanged": True,
            "complete_unchanged": [claimed.id for claimed in returned],
        }
    )
    result = run_lease_batch(worker(), jobs, script)
    assert result == PassResult(claimed=3, completed=2, retried=1)
    sent = json.loads(script.step("complete_unchanged").params["p_claimed"])
    assert [entry["id"] for entry in sent] == [claimed.id.hex for claimed in returned]


def test_batch_completion_matching_fewer_jobs_leaves_the_rest_untouched() -> None:
    """A returned job its handler changed is not completed: counted left_untouched."""
    jobs = [job(), job(), job()]
    moved = {
        claimed.id: LeaseState(JobState.PROCESSING, claimed.attempts, claimed.start_after)
        for claimed in (jobs[0], jobs[2])
    }
    script = Script(
        {"RunHandler": Returned(), "complete_unchanged": [jobs[1].id], "lease_states": moved}
    )
    result = run_lease_batch(worker(), jobs, script)
    assert result == PassResult(claimed=3, completed=1, left_untouched=2)


@pytest.mark.parametrize(
    "error", [db_error(), DatabaseError("gone")], ids=["driver-error", "programma-error"]
)
def test_batch_completion_database_error_gives_a_result_without_completions(
    caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    """A completion that could not be written twice (the second time on a fresh
    connection) completes nothing; the final writer logs it as an ERROR naming the jobs."""
    jobs = [job(), job()]
    script = Script({"RunHandler": Returned(), "complete_unchanged": Raise(error)})
    with caplog.at_level(logging.WARNING, WORKER_LOG):
        result = run_lease_batch(worker(), jobs, script)
    assert result == PassResult(claimed=2, completed=0, left_untouched=2)
    assert len(script.steps("complete_unchanged")) == 2
    (logged,) = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert "could not complete 2 jobs" in logged.getMessage()
    assert all(str(claimed.id) in logged.getMessage() for claimed in jobs)


def test_batch_without_auto_complete_writes_no_completion() -> None:
    """auto_complete=False: the handler steers its job; nothing is written for it."""
    jobs = [job(), job()]
    script = Script({"RunHandler": Returned()})
    result = run_lease_batch(worker(auto_complete=False), jobs, script)
    assert result == PassResult(claimed=2, left_untouched=2)
    assert script.trace() == ["RunHandler", "RunHandler"]


def test_batch_whose_handlers_all_raised_writes_no_completion() -> None:
    """No returned job, no completion statement."""
    script = Script({"RunHandler": RuntimeError("x"), "retry_unchanged": True})
    result = run_lease_batch(worker(), [job(), job()], script)
    assert result == PassResult(claimed=2, retried=2)
    assert "complete_unchanged" not in [handed.name for handed in script.handed]


# -- a transaction-mode pass -------------------------------------------------------------


def test_transaction_pass_claims_runs_handlers_records_failure_completes_then_commits() -> None:
    """Claim, each handler in order, the failure record in the pass, completion, COMMIT."""
    core = worker("emails", mode="transaction", max_jobs=3, retry=SEVEN_SECONDS)
    jobs = [job(), job(), job()]
    counted: list[int] = []
    script = Script(
        {
            "claim": due_claims(jobs),
            "RunHandler": Each(Returned(), RuntimeError("x"), Returned()),
            "retry_unchanged": True,
            "complete_unchanged": [jobs[0].id, jobs[2].id],
            "Commit": None,
        }
    )
    result = script.run(core._transaction_steps(counted.append))
    assert result == PassResult(claimed=3, completed=2, retried=1)
    assert counted == [3]
    assert script.trace() == [
        "claim",
        "RunHandler",
        "RunHandler",
        "retry_unchanged",
        "RunHandler",
        "complete_unchanged",
        "Commit",
    ]
    # The claim that returns each job's due_at, on the pass's own transaction.
    assert script.step("claim") == core._operations.claim_jobs_due("emails", 3)
    assert script.step("claim") != core._operations.claim_jobs("emails", 3)
    assert [step.job for step in script.steps("RunHandler")] == jobs
    assert script.step("retry_unchanged").params["p_job_id"] == jobs[1].id
    assert script.step("retry_unchanged").params["p_delay"] == 7.0


def test_transaction_pass_that_claimed_nothing_still_commits() -> None:
    """No job: no handler, no completion, and the empty transaction is committed."""
    script = Script({"claim": [], "Commit": None})
    result = script.run(worker(mode="transaction")._transaction_steps(None))
    assert result == PassResult()
    assert script.trace() == ["claim", "Commit"]


def test_transaction_pass_without_auto_complete_commits_without_completion() -> None:
    """auto_complete=False in a pass: the returned jobs are left to their handler."""
    jobs = [job()]
    script = Script({"claim": due_claims(jobs), "RunHandler": Returned(), "Commit": None})
    result = script.run(worker(mode="transaction", auto_complete=False)._transaction_steps(None))
    assert result == PassResult(claimed=1, left_untouched=1)
    assert script.trace() == ["claim", "RunHandler", "Commit"]


def test_transaction_pass_connection_lost_under_a_handler_raises_transaction_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dead connection ends the pass at once: no record, no completion, no COMMIT."""
    jobs = [job(), job()]
    cause = db_error(connection_invalidated=True, text="terminating connection")
    script = Script({"claim": due_claims(jobs), "RunHandler": ConnectionLost(cause)})
    with caplog.at_level(logging.WARNING, WORKER_LOG), pytest.raises(TransactionLost) as raised:
        script.run(worker(mode="transaction")._transaction_steps(None))
    assert raised.value.__cause__ is cause
    assert script.trace() == ["claim", "RunHandler"]
    assert logged_about(caplog, logging.WARNING, jobs[0])


def test_transaction_pass_refused_commit_records_each_jobs_failed_attempt() -> None:
    """A refused COMMIT: one transaction reclaims each job as it was and writes its retry."""
    core = worker(mode="transaction", retry=SEVEN_SECONDS)
    jobs = [job(attempts=1), job(attempts=2)]
    again = {claimed.id: reclaimed(claimed) for claimed in jobs}
    refused = db_error(text="deferred constraint violated")
    script = Script(
        {
            "claim": due_claims(jobs),
            "RunHandler": Returned(),
            "complete_unchanged": [claimed.id for claimed in jobs],
            "Commit": refused,
            "reclaim_rolled_back": Computed(lambda step: again[step.params["p_job_id"]]),
            "retry_unchanged": True,
        }
    )
    with pytest.raises(CommitFailed) as raised:
        script.run(core._transaction_steps(None))
    assert raised.value.outcome_unknown is False
    assert raised.value.__cause__ is refused
    assert script.trace()[-6:] == [
        "Commit",
        "InTransaction",
        "InTransaction/reclaim_rolled_back",
        "InTransaction/retry_unchanged",
        "InTransaction/reclaim_rolled_back",
        "InTransaction/retry_unchanged",
    ]
    # Each job is reclaimed only if still as before the rolled-back claim ...
    for reclaim, claimed in zip(script.steps("reclaim_rolled_back"), jobs, strict=True):
        assert reclaim.params == {
            "p_job_id": claimed.id,
            "p_attempts": claimed.attempts - 1,
            "p_start_after": claimed.started_at,
        }
    # ... and its retry is guarded by the new claim, recording the refused COMMIT.
    for retry, claimed in zip(script.steps("retry_unchanged"), jobs, strict=True):
        assert retry.params["p_start_after"] == again[claimed.id].start_after
        assert retry.params["p_delay"] == 7.0
        message = last_error(retry)["message"]
        assert message.startswith("commit refused: ")
        assert message.endswith("deferred constraint violated")
    assert "recorded" in str(raised.value)
    assert "2 to retry, 0 failed, 0 left alone" in str(raised.value)


def test_transaction_pass_refused_commit_fails_a_job_whose_attempts_are_exhausted() -> None:
    """The recorded attempt gets the policy's verdict: FAILED on the last delivery."""
    jobs = [job(attempts=3)]
    script = Script(
        {
            "claim": due_claims(jobs),
            "RunHandler": Returned(),
            "complete_unchanged": [jobs[0].id],
            "Commit": db_error(),
            "reclaim_rolled_back": reclaimed(jobs[0]),
            "fail_unchanged": True,
        }
    )
    with pytest.raises(CommitFailed) as raised:
        script.run(worker(mode="transaction", retry=SEVEN_SECONDS)._transaction_steps(None))
    assert script.trace()[-3:] == [
        "InTransaction",
        "InTransaction/reclaim_rolled_back",
        "InTransaction/fail_unchanged",
    ]
    assert "0 to retry, 1 failed, 0 left alone" in str(raised.value)


def test_transaction_pass_refused_commit_leaves_alone_a_job_claimed_again_since() -> None:
    """A reclaim that matches nothing (None) writes nothing for that job."""
    jobs = [job(), job()]
    script = Script(
        {
            "claim": due_claims(jobs),
            "RunHandler": Returned(),
            "complete_unchanged": [claimed.id for claimed in jobs],
            "Commit": db_error(),
            "reclaim_rolled_back": Each(None, reclaimed(jobs[1])),
            "retry_unchanged": True,
        }
    )
    with pytest.raises(CommitFailed) as raised:
        script.run(worker(mode="transaction")._transaction_steps(None))
    assert script.trace()[-4:] == [
        "InTransaction",
        "InTransaction/reclaim_rolled_back",
        "InTransaction/reclaim_rolled_back",
        "InTransaction/retry_unchanged",
    ]
    assert script.step("retry_unchanged").params["p_job_id"] == jobs[1].id
    assert "1 to retry, 0 failed, 1 left alone" in str(raised.value)


@pytest.mark.parametrize(
    "error", [db_error(text="gone too"), DatabaseError("gone too")], ids=["driver", "programma"]
)
def test_transaction_pass_refused_commit_whose_recording_fails_says_so(error: Exception) -> None:
    """Recording failed too: CommitFailed says the attempts were not recorded."""
    jobs = [job()]
    script = Script(
        {
            "claim": due_claims(jobs),
            "RunHandler": Returned(),
            "complete_unchanged": [jobs[0].id],
            "Commit": db_error(),
            "reclaim_rolled_back": Raise(error),
        }
    )
    with pytest.raises(CommitFailed) as raised:
        script.run(worker(mode="transaction")._transaction_steps(None))
    assert raised.value.outcome_unknown is False
    assert "recording the failed attempts failed" in str(raised.value)
    assert "gone too" in str(raised.value)
    assert script.trace()[-2:] == ["InTransaction", "InTransaction/reclaim_rolled_back"]


def test_transaction_pass_commit_on_a_dead_connection_is_outcome_unknown() -> None:
    """connection_invalidated: the pass may have committed, so nothing more is written."""
    jobs = [job()]
    lost = db_error(connection_invalidated=True)
    script = Script(
        {
            "claim": due_claims(jobs),
            "RunHandler": Returned(),
            "complete_unchanged": [jobs[0].id],
            "Commit": lost,
        }
    )
    with pytest.raises(CommitFailed) as raised:
        script.run(worker(mode="transaction")._transaction_steps(None))
    assert raised.value.outcome_unknown is True
    assert raised.value.__cause__ is lost
    assert script.trace() == ["claim", "RunHandler", "complete_unchanged", "Commit"]


def test_transaction_pass_refused_commit_of_an_empty_pass_records_nothing() -> None:
    """No job claimed: nothing to record after the refused COMMIT."""
    script = Script({"claim": [], "Commit": db_error()})
    with pytest.raises(CommitFailed) as raised:
        script.run(worker(mode="transaction")._transaction_steps(None))
    assert raised.value.outcome_unknown is False
    assert script.trace() == ["claim", "Commit"]


def test_async_worker_drives_the_same_transaction_pass() -> None:
    """AsyncWorker's pass, run with drive_async, hands out the very same steps."""
    jobs = [job(), job()]

    def replies() -> dict[str, Any]:
        return {
            "claim": due_claims(jobs),
            "RunHandler": Each(RuntimeError("x"), Returned()),
            "retry_unchanged": True,
            "complete_unchanged": [jobs[1].id],
            "Commit": None,
        }

    sync_script, async_script = Script(replies()), Script(replies())
    sync_result = sync_script.run(worker(mode="transaction")._transaction_steps(None))
    steps = async_worker(mode="transaction")._transaction_steps(None)
    async_result = asyncio.run(async_script.run_async(steps))
    assert async_result == sync_result == PassResult(claimed=2, completed=1, retried=1)
    assert async_script.trace() == sync_script.trace()


# -- the idle wait -----------------------------------------------------------------------


def idle_wait(core: Worker, *due: float | None) -> tuple[float, Script]:
    script = Script({"seconds_until_due": Each(*due)})
    return script.run(core._idle_wait_steps()), script


def test_idle_wait_is_the_heartbeat_when_nothing_is_due() -> None:
    """No scheduled job on any topic: sleep a heartbeat; each topic asked in one unit."""
    seconds, script = idle_wait(worker(["a", "b"], heartbeat=5.0), None, None)
    assert seconds == 5.0
    assert script.trace() == [
        "EachCommitted",
        "EachCommitted/seconds_until_due",
        "EachCommitted/seconds_until_due",
    ]
    topics = [step.params["p_topic"] for step in script.steps("seconds_until_due")]
    assert topics == ["a", "b"]


def test_idle_wait_is_the_soonest_due_time_over_the_topics() -> None:
    """The soonest scheduled job of any topic decides."""
    seconds, _ = idle_wait(worker(["a", "b", "c"], heartbeat=5.0), 3.0, None, 1.5)
    assert seconds == 1.5


def test_idle_wait_is_never_below_min_idle_wait() -> None:
    """A job due now but not claimable (locked elsewhere) must not make the loop spin."""
    core = worker(["a"], heartbeat=5.0)
    seconds, _ = idle_wait(core, 0.0)
    assert seconds == core.min_idle_wait == 0.25


def test_idle_wait_is_at_most_the_heartbeat() -> None:
    """A job due later than a heartbeat away: wake at the heartbeat anyway."""
    seconds, _ = idle_wait(worker(["a"], heartbeat=5.0), 120.0)
    assert seconds == 5.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def prune_worker(clock: Clock, **options: Any) -> tuple[Worker, PruneDuty]:
    """A worker pruning COMPLETED jobs after a minute, its duty on ``clock``."""
    core = worker(
        retention=Retention(default=TTL(completed=60)),
        prune_interval=30.0,
        prune_batch_size=10,
        **options,
    )
    [duty] = core.duties
    assert isinstance(duty, PruneDuty)
    duty.schedule = DutySchedule(duty.schedule.interval, clock=clock)
    return core, duty


def test_idle_wait_is_capped_by_a_duty_due_sooner() -> None:
    """A duty due before the next job shortens the sleep to the time it has left."""
    clock = Clock()
    core, duty = prune_worker(clock, heartbeat=5.0)
    duty.schedule.ran()  # next pass at +30 s
    clock.now += 28.0
    seconds, _ = idle_wait(core, 4.0)
    assert seconds == pytest.approx(2.0)
    clock.now += 1.0
    assert idle_wait(core, None)[0] == pytest.approx(1.0)


def test_idle_wait_is_not_capped_by_a_duty_due_later() -> None:
    """A duty due after the next job leaves the job's time."""
    clock = Clock()
    core, duty = prune_worker(clock, heartbeat=5.0)
    duty.schedule.ran()
    seconds, _ = idle_wait(core, 4.0)
    assert seconds == 4.0


# -- duties ------------------------------------------------------------------------------


def prune_replies(*counts: int) -> dict[str, Any]:
    return {
        "try_prune_lock": True,
        "finished_topics": ["emails"],
        "prune_completed": Each(*counts),
    }


def test_due_prune_duty_runs_a_prune_pass() -> None:
    """A due duty's prune_pass: each batch takes the lock, lists topics, deletes."""
    clock = Clock()
    core, duty = prune_worker(clock)
    script = Script(prune_replies(10, 3))
    script.run(core._duty_steps())
    batch = [
        "InTransaction",
        "InTransaction/try_prune_lock",
        "InTransaction/finished_topics",
        "InTransaction/prune_completed",
    ]
    assert script.trace() == batch + batch
    delete = script.steps("prune_completed")[0]
    assert delete.params == {"p_topic": "emails", "p_ttl_seconds": 60.0, "p_limit": 10}
    assert core.pruned == 13
    assert not duty.schedule.due()


def test_prune_duty_not_due_yields_no_step() -> None:
    """Between two passes the duty hands out nothing; at its interval it runs again."""
    clock = Clock()
    core, duty = prune_worker(clock)
    duty.schedule.ran()
    clock.now += 29.9
    script = Script({})
    script.run(core._duty_steps())
    assert script.trace() == []
    clock.now += 0.1
    script = Script(prune_replies(0))
    script.run(core._duty_steps())
    assert "InTransaction/prune_completed" in script.trace()


def test_worker_without_retention_has_no_duty() -> None:
    """No retention: no duty, no step, nothing pruned."""
    core = worker()
    script = Script({})
    script.run(core._duty_steps())
    assert core.duties == []
    assert script.trace() == []
    assert core.pruned == 0


@pytest.mark.parametrize(
    "error", [db_error(), DatabaseError("gone")], ids=["driver-error", "programma-error"]
)
def test_failed_prune_pass_is_logged_and_waits_its_interval(
    caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    """A database error ends the pass without stopping the loop; retried after the interval."""
    clock = Clock()
    core, duty = prune_worker(clock)
    script = Script({**prune_replies(10), "prune_completed": Each(10, Raise(error))})
    with caplog.at_level(logging.WARNING, WORKER_LOG):
        script.run(core._duty_steps())  # does not raise
    assert script.trace()[-1] == "InTransaction/prune_completed"
    assert len(script.steps("prune_completed")) == 2
    assert any(record.levelno == logging.ERROR for record in caplog.records)
    assert core.pruned == 0  # the pass's result is lost with it
    clock.now += 29.9
    assert not duty.schedule.due()
    assert duty.schedule.seconds_left() == pytest.approx(0.1)
    clock.now += 0.1
    assert duty.schedule.due()


def test_prune_duty_error_other_than_a_database_error_propagates() -> None:
    """Only database errors are the duty's to swallow; a bug is not hidden."""
    core, _ = prune_worker(Clock())
    script = Script({**prune_replies(), "finished_topics": Raise(KeyError("bug"))})
    with pytest.raises(KeyError):
        script.run(core._duty_steps())


def test_pruned_counts_deleted_rows_across_passes() -> None:
    """worker.pruned adds up every pass's deleted rows; a skipped pass adds none."""
    clock = Clock()
    core, _ = prune_worker(clock)
    Script(prune_replies(4)).run(core._duty_steps())
    clock.now += 30.0
    Script({"try_prune_lock": False}).run(core._duty_steps())
    clock.now += 30.0
    Script(prune_replies(10, 10, 1)).run(core._duty_steps())
    assert core.pruned == 25


# -- backoff -----------------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    """0.1, 0.2, 0.4 … capped, and back to the first delay after reset()."""
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next() for _ in range(6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    backoff.reset()
    assert backoff.next() == pytest.approx(0.1)
    assert backoff.next() == pytest.approx(0.2)


def test_worker_backoff_uses_the_reconnect_settings() -> None:
    """The loop's backoff starts at reconnect_initial and stops growing at reconnect_max."""
    core = worker()
    backoff = core._new_backoff()
    delays = [backoff.next() for _ in range(12)]
    assert delays[0] == core.reconnect_initial
    assert max(delays) == delays[-1] == core.reconnect_max


def test_scripted_driver_records_operations_inside_their_unit() -> None:
    """Sanity of the scripted driver: a unit's operations are recorded inside it."""
    script = Script({"claim": []})
    script.run(worker()._lease_claim_steps())
    [unit] = script.steps("EachCommitted")
    assert isinstance(unit, EachCommitted)
    assert script.units_of("claim") == [script.handed[0]]
