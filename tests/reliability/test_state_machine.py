"""Any sequence of queue calls leaves the table matching a simple in-memory model.

A hypothesis ``RuleBasedStateMachine`` drives every public call of the sync queue
on one connection, inside one transaction per example that is rolled back at
teardown. After each step the jobs of the machine's topics are read back and
compared, column by column, with the model — including which jobs a claim could
take right now, according to the database's own clock.

Time is kept decidable without sleeping: a job is due now (enqueued now, or a
lease of 0 s), at a date in the past, or far in the future (a date in year 3000,
a delay or visibility timeout of 10^6 s) — never "in a moment".

The claim order is FIFO by ``(start_after, id)``. The model orders due jobs by a
key: ``(0, date)`` for a past date, ``(1, tick)`` for "the database clock at the
tick-th time-stamping call" (every enqueue and claim advances the tick, and the
database clock only moves forward between statements), then by id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from programma_sa import JobDetail, JobQueue, JobSpec, JobState

from ..app import Job
from .scale import Scale

pytestmark = pytest.mark.reliability

UTC = timezone.utc
LONG = 10**6  # seconds: a delay or lease that never ends within a test
FAR_FUTURE = datetime(3000, 1, 1, tzinfo=UTC)
CLAIMABLE = (JobState.CREATED, JobState.ACTIVE)
FINISHED = (JobState.COMPLETED, JobState.FAILED)

DueKey = tuple[int, Any]

# -- strategies ------------------------------------------------------------------------

# Storable text: no NUL and no lone surrogate (both refused, see test_hostile_input).
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    # Within +-1e15 a float's repr always carries a "." or a negative exponent, so
    # jsonb's numeric hands back the same float (1e23 would come back as an int).
    | st.floats(-1e15, 1e15, allow_nan=False)
    | _text
)
_json = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=6,
)
_attributes = st.dictionaries(_text, _json, max_size=3)
_past_dates = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2020, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)
_retry = st.sampled_from([None, 0, LONG])


@dataclass(frozen=True)
class Schedule:
    """When a new job is first due, as add_job/JobSpec arguments."""

    run_after_seconds: float | None = None
    run_after_date: datetime | None = None

    def due(self, tick: int) -> DueKey | None:
        if self.run_after_date is not None:  # the date wins over the seconds
            return None if self.run_after_date == FAR_FUTURE else (0, self.run_after_date)
        if self.run_after_seconds:
            return None
        return (1, tick)


_schedules = st.one_of(
    st.just(Schedule()),
    st.just(Schedule(run_after_seconds=0)),
    st.just(Schedule(run_after_seconds=LONG)),
    st.just(Schedule(run_after_date=FAR_FUTURE)),
    st.builds(Schedule, run_after_date=_past_dates),
    st.builds(Schedule, run_after_date=_past_dates, run_after_seconds=st.just(LONG)),
)


# -- the model -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelJob:
    id: uuid.UUID
    topic: str
    data: Any
    attributes: dict[str, Any]
    state: JobState
    retry_after_seconds: int | None
    attempts: int = 0
    #: Claim-order key while ``start_after`` is in the past; None when it is NULL or
    #: far in the future.
    due: DueKey | None = None
    #: The tick of the last claim (``started_at``), for leases re-measured from it.
    claimed_tick: int | None = None

    @property
    def claimable(self) -> bool:
        return self.state in CLAIMABLE and self.due is not None

    def claim_order(self) -> tuple[DueKey, uuid.UUID]:
        assert self.due is not None
        return (self.due, self.id)


def _lease_due(retry: int | None, claimed_tick: int) -> DueKey | None:
    """``start_after`` after a claim: the claim's clock plus the visibility timeout."""
    return (1, claimed_tick) if retry == 0 else None


class QueueMachine(RuleBasedStateMachine):
    """The queue against the model, on one rolled-back connection per example."""

    jobs = Bundle("jobs")
    #: Set on a subclass by the test (hypothesis instantiates the class itself).
    engine: ClassVar[Engine]

    def __init__(self) -> None:
        super().__init__()
        self.connection = self.engine.connect()
        self.transaction = self.connection.begin()
        self.session = Session(bind=self.connection, join_transaction_mode="create_savepoint")
        self.queue = JobQueue(Job)
        prefix = uuid.uuid4().hex[:8]
        # One plain topic and one that would break naive SQL or LISTEN quoting.
        self.topics = (f"sm-{prefix}-plain", f"sm-{prefix}-'; DELETE FROM orders; --\"ü")
        self.model: dict[uuid.UUID, ModelJob] = {}
        self.tick = 0

    def teardown(self) -> None:
        self.session.close()
        self.transaction.rollback()
        self.connection.close()

    def _next_tick(self) -> int:
        self.tick += 1
        return self.tick

    def _set(self, job: ModelJob, **changes: Any) -> None:
        self.model[job.id] = replace(job, **changes)

    # -- enqueue -----------------------------------------------------------------------

    @rule(
        target=jobs,
        topic_index=st.integers(0, 1),
        data=_json,
        attributes=_attributes,
        schedule=_schedules,
        retry=_retry,
    )
    def add_job(
        self,
        topic_index: int,
        data: Any,
        attributes: dict[str, Any],
        schedule: Schedule,
        retry: int | None,
    ) -> uuid.UUID:
        topic = self.topics[topic_index]
        job_id = self.queue.add_job(
            self.session,
            topic,
            data,
            attributes=attributes,
            run_after_seconds=schedule.run_after_seconds,
            run_after_date=schedule.run_after_date,
            retry_after_seconds=retry,
        )
        self.model[job_id] = ModelJob(
            job_id,
            topic,
            data,
            attributes,
            JobState.CREATED,
            retry,
            due=schedule.due(self._next_tick()),
        )
        return job_id

    @rule(
        target=jobs,
        topic_index=st.integers(0, 1),
        specs=st.lists(st.tuples(_json, _attributes, _schedules, _retry), min_size=1, max_size=4),
        as_mappings=st.booleans(),
    )
    def add_jobs(
        self,
        topic_index: int,
        specs: list[tuple[Any, dict[str, Any], Schedule, int | None]],
        as_mappings: bool,
    ) -> object:
        topic = self.topics[topic_index]
        built = [
            JobSpec(
                data=data,
                attributes=attributes,
                run_after_seconds=schedule.run_after_seconds,
                run_after_date=schedule.run_after_date,
                retry_after_seconds=retry,
            )
            for data, attributes, schedule, retry in specs
        ]
        given: list[Any] = [dict(vars(spec)) for spec in built] if as_mappings else built
        job_ids = self.queue.add_jobs(self.session, topic, given)
        assert len(job_ids) == len(specs)
        tick = self._next_tick()  # one statement: one clock for the whole batch
        for job_id, (data, attributes, schedule, retry) in zip(job_ids, specs, strict=True):
            self.model[job_id] = ModelJob(
                job_id, topic, data, attributes, JobState.CREATED, retry, due=schedule.due(tick)
            )
        return multiple(*job_ids)

    # -- claim -------------------------------------------------------------------------

    @rule(topic_index=st.integers(0, 1), max_jobs=st.integers(1, 4))
    def claim_jobs(self, topic_index: int, max_jobs: int) -> None:
        topic = self.topics[topic_index]
        candidates = sorted(
            (job for job in self.model.values() if job.topic == topic and job.claimable),
            key=ModelJob.claim_order,
        )
        expected = candidates[:max_jobs]
        claimed = self.queue.claim_jobs(self.session, topic, max_jobs=max_jobs)
        assert [job.id for job in claimed] == [job.id for job in expected]
        tick = self._next_tick()
        for job in expected:
            self._set(
                job,
                state=JobState.ACTIVE,
                attempts=job.attempts + 1,
                claimed_tick=tick,
                due=_lease_due(job.retry_after_seconds, tick),
            )
        for detail in claimed:
            self._assert_matches(detail)

    # -- moves and setters, on any id ever issued (deleted ones must be no-ops) ----------

    def _existing(self, job_id: uuid.UUID, changed: bool) -> ModelJob | None:
        job = self.model.get(job_id)
        assert changed == (job is not None)
        return job

    @rule(job_id=jobs)
    def move_job_to_processing(self, job_id: uuid.UUID) -> None:
        job = self._existing(job_id, self.queue.move_job_to_processing(self.session, job_id))
        if job is not None:
            self._set(job, state=JobState.PROCESSING)

    @rule(job_id=jobs, delete=st.booleans())
    def move_job_to_done(self, job_id: uuid.UUID, delete: bool) -> None:
        job = self._existing(job_id, self.queue.move_job_to_done(self.session, job_id, delete))
        self._finish(job, JobState.COMPLETED, delete)

    @rule(job_id=jobs, delete=st.booleans())
    def move_job_to_failed(self, job_id: uuid.UUID, delete: bool) -> None:
        job = self._existing(job_id, self.queue.move_job_to_failed(self.session, job_id, delete))
        self._finish(job, JobState.FAILED, delete)

    def _finish(self, job: ModelJob | None, state: JobState, delete: bool) -> None:
        if job is None:
            return
        if delete:
            del self.model[job.id]
        else:
            self._set(job, state=state)

    @rule(job_id=jobs)
    def delete_job(self, job_id: uuid.UUID) -> None:
        job = self._existing(job_id, self.queue.delete_job(self.session, job_id))
        if job is not None:
            del self.model[job.id]

    @rule(job_id=jobs, attributes=_attributes)
    def set_attributes(self, job_id: uuid.UUID, attributes: dict[str, Any]) -> None:
        job = self._existing(job_id, self.queue.set_attributes(self.session, job_id, attributes))
        if job is not None:
            self._set(job, attributes={**job.attributes, **attributes})

    @rule(job_id=jobs, seconds=_retry)
    def set_retry_after_seconds(self, job_id: uuid.UUID, seconds: int | None) -> None:
        changed = self.queue.set_retry_after_seconds(self.session, job_id, seconds)
        job = self._existing(job_id, changed)
        if job is None:
            return
        if job.state is JobState.ACTIVE:  # the lease is re-measured from the claim
            assert job.claimed_tick is not None
            self._set(job, retry_after_seconds=seconds, due=_lease_due(seconds, job.claimed_tick))
        else:
            self._set(job, retry_after_seconds=seconds)

    @rule(job_id=jobs, date=_past_dates | st.just(FAR_FUTURE), as_text=st.booleans())
    def set_job_start_date(self, job_id: uuid.UUID, date: datetime, as_text: bool) -> None:
        given: datetime | str = date.isoformat() if as_text else date
        job = self._existing(job_id, self.queue.set_job_start_date(self.session, job_id, given))
        if job is not None:
            self._set(job, due=None if date == FAR_FUTURE else (0, date))

    # -- reads -------------------------------------------------------------------------

    @rule(job_id=jobs)
    def get_job(self, job_id: uuid.UUID) -> None:
        detail = self.queue.get_job(self.session, job_id)
        if job_id in self.model:
            assert detail is not None
            self._assert_matches(detail)
        else:
            assert detail is None

    @rule(job_id=st.uuids())
    def get_unknown_job(self, job_id: uuid.UUID) -> None:
        assert self.queue.get_job(self.session, job_id) is None

    @invariant()
    def table_matches_model(self) -> None:
        rows = self.session.execute(
            select(
                Job.__table__, (Job.start_after <= func.statement_timestamp()).label("due_now")
            ).where(Job.topic.in_(self.topics))
        ).mappings()
        stored = {row["id"]: row for row in rows}
        assert set(stored) == set(self.model)
        for job_id, row in stored.items():
            job = self.model[job_id]
            self._assert_matches(JobDetail.from_row(row))
            claimable_now = row["state"] in {s.value for s in CLAIMABLE} and bool(row["due_now"])
            assert claimable_now == job.claimable, (job, dict(row))

    def _assert_matches(self, detail: JobDetail) -> None:
        job = self.model[detail.id]
        assert detail.topic == job.topic
        assert detail.data == job.data
        assert detail.attributes == job.attributes
        assert detail.state is job.state
        assert detail.attempts == job.attempts
        assert detail.retry_after_seconds == job.retry_after_seconds
        # started_at is stamped by a claim; finished_at by a move to a final state.
        assert (detail.started_at is not None) == (job.attempts > 0)
        assert (detail.finished_at is not None) == (job.state in FINISHED)
        if job.due is not None and job.due[0] == 0:
            assert detail.start_after == job.due[1]


@pytest.mark.postgresql_only("its model reads PostgreSQL's statement_timestamp()")
def test_any_sequence_of_calls_matches_the_model(shared_engine: Engine, scale: Scale) -> None:
    class Machine(QueueMachine):
        engine = shared_engine

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=scale.state_machine_examples,
            stateful_step_count=scale.state_machine_steps,
            deadline=None,
            # No example database: nothing is written into the source tree; a
            # failure prints the steps (and a @reproduce_failure blob) to replay it.
            database=None,
            print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
