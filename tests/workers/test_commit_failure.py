"""Transaction mode: the pass's COMMIT fails.

Two ways, both real:

* **refused** — the handler's write through ``ctx.session`` breaks a ``DEFERRABLE
  INITIALLY DEFERRED`` foreign key, which PostgreSQL checks only at COMMIT: the
  server answers the COMMIT with an error and rolls the whole pass back (claim,
  outcomes, the handlers' writes). The worker then records the failed attempt of
  every job of the batch in a short transaction of its own, through its retry
  policy — ``attempts`` + 1, ``last_error`` naming the refused commit, a backoff or
  FAILED — only on a job still as it was before the rolled-back claim; so a job
  whose writes are always refused backs off and ends FAILED instead of looping hot.
  ``run_once()`` raises :class:`~programma_sa.CommitFailed` with ``outcome_unknown``
  False, and one ERROR says so (beside the per-job retry lines).
* **lost** — an engine ``commit`` event (it runs just before the driver sends
  COMMIT) terminates the pass's own backend from another connection: the COMMIT
  meets a dead connection, so the worker cannot know whether it was applied and
  writes nothing. ``CommitFailed`` with ``outcome_unknown`` True, one WARNING saying
  the outcome is unknown — never "rolled back". Here the backend is gone before
  COMMIT is sent, so the jobs are in fact claimable again.

Either way the ``run()`` loop logs the failure once and processes the job afterwards.
Each test runs on the sync Worker and on the AsyncWorker over both asyncio drivers.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from programma_sa import (
    CommitFailed,
    DatabaseError,
    JobDetail,
    JobQueue,
    JobState,
    PassResult,
    RetryPolicy,
)

from ..app import Order
from .harness import AnyEngine, Context, Harness, awaited, noop
from .support import enqueue, get_job, order_ids, seconds_from_now, wait_for

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.postgresql_only(
        "a COMMIT refused by PostgreSQL's deferred constraints or a terminated backend"
    ),
]

LOGGER = "programma_sa.worker"
CHILDREN = "commit_check_children"
#: The orphan row a handler writes to break the deferred foreign key at COMMIT.
ORPHAN = text(f"INSERT INTO {CHILDREN} (id, parent_id) VALUES (:id, -1)")
#: A start date long past: what makes a job in its backoff due now.
PAST = "2000-01-01T00:00:00Z"


@contextmanager
def deferred_constraint(engine: Engine) -> Iterator[None]:
    """Tables with a foreign key PostgreSQL checks only at COMMIT; dropped afterwards."""
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE commit_check_parents (id integer PRIMARY KEY)"))
        connection.execute(
            text(
                f"CREATE TABLE {CHILDREN} (id integer PRIMARY KEY, parent_id integer NOT NULL "
                "REFERENCES commit_check_parents DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE {CHILDREN}, commit_check_parents"))


@pytest.fixture(autouse=True)
def _deferred_constraint(engine: Engine) -> Iterator[None]:
    with deferred_constraint(engine):
        yield


@pytest.fixture
def worker_engine(harness: Harness) -> AnyEngine:
    """The worker's own engine: the killed connection invalidates only this pool."""
    return harness.engine()


def children(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {CHILDREN}")).scalar_one())


def backend_pid(connection: Connection) -> int:
    """The server pid behind a connection of any of the test drivers."""
    driver: Any = connection.connection.driver_connection
    info = getattr(driver, "info", None)  # psycopg (sync and async)
    return int(info.backend_pid if info is not None else driver.get_server_pid())  # asyncpg


def terminate(admin: Engine, connection: Connection) -> None:
    """Terminate the backend of ``connection`` from ``admin``, waiting until it is gone."""
    with admin.connect() as other:
        terminated = other.execute(
            select(func.pg_terminate_backend(backend_pid(connection), 5000))
        ).scalar_one()
    assert terminated


class KillAtCommit:
    """An engine ``commit`` hook that, once armed, terminates the committing backend.

    The ``commit`` event runs before the driver sends COMMIT. The backend is
    terminated from another connection (``admin``), waiting until it is gone, so the
    COMMIT then meets a dead connection.
    """

    def __init__(self, engine: Engine, admin: Engine) -> None:
        self.admin = admin
        self.armed = False
        self.kills = 0
        event.listen(engine, "commit", self)

    def __call__(self, connection: Connection) -> None:
        if not self.armed:
            return
        self.armed = False
        terminate(self.admin, connection)
        self.kills += 1


class FailsAtCommit:
    """A transaction-mode handler whose first ``times`` calls make the pass's COMMIT fail.

    Every call writes an Order (id = 100 * call number + the job's ``n``), so what
    committed shows in the orders table. ``how``: ``"refused"`` also writes a row
    breaking the deferred foreign key; ``"lost"`` arms ``kill``.
    """

    def __init__(self, how: str, kill: KillAtCommit | None = None, times: int = 1) -> None:
        self.how = how
        self.kill = kill
        self.times = times
        self.calls: list[int] = []

    async def __call__(self, ctx: Context) -> None:
        assert ctx.session is not None
        n = ctx.job.data["n"]
        self.calls.append(n)
        ctx.session.add(Order(id=100 * len(self.calls) + n))
        if len(self.calls) > self.times:
            return
        if self.how == "refused":
            await awaited(ctx.session.execute(ORPHAN, {"id": len(self.calls)}))
        else:
            assert self.kill is not None
            self.kill.armed = True


class BreaksCommit:
    """A transaction-mode handler whose ``culprits`` (jobs by ``n``) break the deferred
    foreign key on every call, so their pass's COMMIT is refused every time.

    Every call writes an Order (id = 100 * call number + the job's ``n``), so what
    committed shows in the orders table; ``calls`` keeps ``(n, attempts)`` per call.
    """

    def __init__(self, culprits: tuple[int, ...] = (0,)) -> None:
        self.culprits = culprits
        self.calls: list[tuple[int, int]] = []

    async def __call__(self, ctx: Context) -> None:
        assert ctx.session is not None
        n = ctx.job.data["n"]
        self.calls.append((n, ctx.job.attempts))
        ctx.session.add(Order(id=100 * len(self.calls) + n))
        if n in self.culprits:  # the orphan's id: the call
            await awaited(ctx.session.execute(ORPHAN, {"id": len(self.calls)}))


class AtNextBegin:
    """An engine ``begin`` hook that, once armed, runs ``action`` on the next
    transaction begun on ``engine`` — armed by a handler, that is the worker's
    recording transaction after its pass's COMMIT was refused."""

    def __init__(self, engine: Engine, action: Callable[[Connection], None]) -> None:
        self.action = action
        self.armed = False
        self.runs = 0
        event.listen(engine, "begin", self)

    def __call__(self, connection: Connection) -> None:
        if not self.armed:
            return
        self.armed = False
        self.action(connection)
        self.runs += 1


def with_lock_timeout(engine: Engine) -> None:
    """Make every new connection of ``engine`` give up a lock wait after 5 s: a
    statement that should skip a locked row fails instead of hanging the test."""

    def set_lock_timeout(dbapi_connection: Any, record: object) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET lock_timeout = '5s'")
        cursor.close()
        dbapi_connection.commit()  # a SET in a transaction rolled back would not last

    event.listen(engine, "connect", set_lock_timeout)


class ClaimElsewhere(AtNextBegin):
    """Another worker claims the first due job as the recording transaction begins:
    and commits (``commit``), or holds its transaction open until the ``with`` block
    around the pass ends (then rolls back)."""

    def __init__(self, engine: Engine, queue: JobQueue, worker_engine: Engine, commit: bool):
        super().__init__(worker_engine, self._claim)
        self.engine = engine
        self.queue = queue
        self.commit = commit
        self.claimed: list[Any] = []
        self._open: list[Session] = []

    def _claim(self, connection: Connection) -> None:
        session = Session(self.engine)
        session.begin()
        self.claimed = [job.id for job in self.queue.claim_jobs(session, "t", max_jobs=1)]
        if self.commit:
            session.commit()
            session.close()
        else:
            self._open.append(session)

    def __enter__(self) -> ClaimElsewhere:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for session in self._open:
            session.rollback()
            session.close()


def assert_left_alone(
    engine: Engine,
    queue: JobQueue,
    job_ids: list[Any],
    elsewhere: ClaimElsewhere,
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Job 0, claimed elsewhere meanwhile, is as the other worker left it; job 1 recorded."""
    assert elsewhere.runs == 1 and elsewhere.claimed == job_ids[:1]
    assert "(1 to retry, 0 failed, 1 left alone: claimed again meanwhile)" in message
    assert_logged_once(caplog, logging.ERROR, attempts_recorded=1)
    (left,) = [
        r for r in caplog.records if "no longer as before its rolled-back claim" in r.getMessage()
    ]
    assert left.levelno == logging.INFO and str(job_ids[0]) in left.getMessage()
    stolen = get_job(engine, queue, job_ids[0])
    assert "last_error" not in stolen.attributes
    if elsewhere.commit:  # the other worker's lease, untouched
        assert stolen.state is JobState.ACTIVE and stolen.attempts == 1
        assert stolen.start_after == stolen.started_at + timedelta(seconds=30)
    else:  # the other claim rolled back: as before any claim
        assert stolen.state is JobState.CREATED and stolen.attempts == 0
    assert_attempt_recorded(engine, queue, job_ids[1], attempts=1)


def commit_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if "commit failed: " in record.getMessage()]


def recorded_attempt_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The per-job lines of failed attempts recorded after a refused commit."""
    return [
        record for record in caplog.records if " failed: commit refused: " in record.getMessage()
    ]


def assert_logged_once(
    caplog: pytest.LogCaptureFixture, level: int, attempts_recorded: int = 0
) -> logging.LogRecord:
    """One "commit failed" record, at ``level``; besides it, at WARNING or above, only
    the per-job lines of the ``attempts_recorded`` after a refused commit: no "rolled
    back" line from the loop, no traceback."""
    records = [record for record in caplog.records if record.name == LOGGER]
    (record,) = commit_records(caplog)
    recorded = recorded_attempt_records(caplog)
    assert len(recorded) == attempts_recorded
    loud = [other for other in records if other.levelno >= logging.WARNING]
    assert sorted(map(id, loud)) == sorted(map(id, [record, *recorded]))
    assert record.levelno == level
    assert all(each.exc_info is None for each in loud)
    return record


def assert_claimable_again(engine: Engine, queue: JobQueue, job_ids: list[Any]) -> None:
    """The pass rolled back and nothing was recorded: due now, attempt not counted."""
    for job_id in job_ids:
        job = get_job(engine, queue, job_id)
        assert job.state is JobState.CREATED
        assert job.attempts == 0 and job.started_at is None
        assert "last_error" not in job.attributes
        assert seconds_from_now(engine, job.start_after) <= 0
    assert order_ids(engine) == []
    assert children(engine) == 0


def assert_attempt_recorded(
    engine: Engine,
    queue: JobQueue,
    job_id: Any,
    attempts: int,
    state: JobState = JobState.ACTIVE,
) -> JobDetail:
    """The refused pass's attempt is counted and its ``last_error`` is the COMMIT's."""
    job = get_job(engine, queue, job_id)
    assert job.state is state
    assert job.attempts == attempts and job.started_at is not None
    error = job.attributes["last_error"]
    assert error["type"] == "sqlalchemy.exc.IntegrityError"
    assert error["message"].startswith("commit refused: ")
    assert "violates foreign key constraint" in error["message"]
    assert "\n" not in error["message"]  # the first line only
    assert error["attempt"] == attempts
    assert children(engine) == 0
    return job


def make_due(engine: Engine, queue: JobQueue, job_ids: list[Any]) -> None:
    """Skip the backoff of ``job_ids``: due now."""
    with Session(engine) as session, session.begin():
        for job_id in job_ids:
            assert queue.set_job_start_date(session, job_id, PAST)


def claim_statements(engine: Engine) -> list[str]:
    """The claim statements executed on ``engine`` from now on (one per pass and topic)."""
    claims: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if "AS due_at" in statement:  # the claim's RETURNING, and no other statement's
            claims.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    return claims


# -- refused ----------------------------------------------------------------------------------


async def test_a_refused_commit_records_the_failed_attempt_and_raises_commit_failed(
    engine: Engine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (job_id,) = enqueue(engine, queue)
    handler = FailsAtCommit("refused")
    worker = harness.worker(handler, mode="transaction", retry=RetryPolicy.constant(60))

    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(CommitFailed) as raised:
        await harness.run_once(worker)

    error = raised.value
    assert isinstance(error, DatabaseError)  # what the loop backs off on
    assert error.outcome_unknown is False
    assert isinstance(error.__cause__, IntegrityError)  # the driver's error, kept
    message = str(error)
    assert "the database refused the COMMIT of a transaction-mode pass" in message
    assert "violates foreign key constraint" in message
    assert "the transaction rolled back, the handlers' writes and the claim with it" in message
    assert (
        "the failed attempt of its 1 claimed job was then recorded in a transaction of its "
        "own (1 to retry, 0 failed, 0 left alone: claimed again meanwhile)"
    ) in message
    assert f"jobs: {job_id} [t]" in message
    assert "unknown" not in message and "not counted" not in message
    record = assert_logged_once(caplog, logging.ERROR, attempts_recorded=1)
    assert record.getMessage() == f"commit failed: {message}"
    assert getattr(record, "job_ids", None) == [str(job_id)]
    (retry_line,) = recorded_attempt_records(caplog)
    assert retry_line.levelno == logging.WARNING
    assert retry_line.getMessage().startswith(
        f"job {job_id} [t] attempt 1 failed: commit refused: IntegrityError: "
    )
    assert retry_line.getMessage().endswith("; retrying in 60.00 s")
    assert worker.totals == PassResult()

    # Counted, recorded, and due after the backoff: not claimed again at once.
    job = assert_attempt_recorded(engine, queue, job_id, attempts=1)
    assert 50 < seconds_from_now(engine, job.start_after) <= 60
    assert order_ids(engine) == []
    assert await harness.run_once(worker) == PassResult()

    # Nothing of the failed pass lingers: once due, the next pass runs the job normally.
    make_due(engine, queue, [job_id])
    assert await harness.run_once(worker) == PassResult(claimed=1, completed=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.COMPLETED and job.attempts == 2
    assert order_ids(engine) == [200]
    assert handler.calls == [0, 0]


async def test_a_job_whose_commit_is_always_refused_ends_failed_after_max_attempts(
    engine: Engine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The poison job: each pass is refused, each refusal counts, the policy ends it."""
    (job_id,) = enqueue(engine, queue)
    handler = BreaksCommit()
    worker = harness.worker(
        handler, mode="transaction", retry=RetryPolicy.constant(0, max_attempts=3)
    )

    with caplog.at_level(logging.INFO, logger=LOGGER):
        for attempt in (1, 2, 3):
            with pytest.raises(CommitFailed) as raised:
                await harness.run_once(worker)
            counts = "1 to retry, 0 failed" if attempt < 3 else "0 to retry, 1 failed"
            assert f"({counts}, 0 left alone" in str(raised.value)
            state = JobState.ACTIVE if attempt < 3 else JobState.FAILED
            assert_attempt_recorded(engine, queue, job_id, attempt, state)

    assert await harness.run_once(worker) == PassResult()  # FAILED: never claimed again
    job = get_job(engine, queue, job_id)
    assert job.finished_at is not None
    assert handler.calls == [(0, 1), (0, 2), (0, 3)]
    assert order_ids(engine) == []
    assert [record.levelno for record in commit_records(caplog)] == [logging.ERROR] * 3
    lines = [record.getMessage() for record in recorded_attempt_records(caplog)]
    assert [line.rsplit("; ", 1)[1] for line in lines] == [
        "retrying in 0.00 s",
        "retrying in 0.00 s",
        "moving it to FAILED (attempts exhausted)",
    ]


async def test_a_refused_commit_records_an_attempt_for_every_job_of_the_batch(
    engine: Engine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One job's writes are refused; none of the batch's work committed, so all three
    attempts failed and are counted. The innocent jobs complete once due again."""
    job_ids = enqueue(engine, queue, n=3)
    handler = BreaksCommit(culprits=(1,))
    worker = harness.worker(handler, mode="transaction", max_jobs=3, retry=RetryPolicy.constant(60))

    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(CommitFailed) as raised:
        await harness.run_once(worker)

    message = str(raised.value)
    assert "the failed attempt of its 3 claimed jobs was then recorded" in message
    assert "(3 to retry, 0 failed, 0 left alone: claimed again meanwhile)" in message
    assert_logged_once(caplog, logging.ERROR, attempts_recorded=3)
    for job_id in job_ids:
        job = assert_attempt_recorded(engine, queue, job_id, attempts=1)
        assert seconds_from_now(engine, job.start_after) > 50  # due later, all three
    assert order_ids(engine) == []
    assert await harness.run_once(worker) == PassResult()

    innocent = [job_ids[0], job_ids[2]]
    make_due(engine, queue, innocent)
    assert await harness.run_once(worker) == PassResult(claimed=2, completed=2)
    for job_id in innocent:
        job = get_job(engine, queue, job_id)
        assert job.state is JobState.COMPLETED and job.attempts == 2
    assert_attempt_recorded(engine, queue, job_ids[1], attempts=1)  # still backing off
    assert order_ids(engine) == [400, 502]
    assert handler.calls == [(0, 1), (1, 1), (2, 1), (0, 2), (2, 2)]


async def test_a_refused_commit_rolls_back_every_outcome_of_the_batch(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """Never half: the completions, a recorded failure and every handler's write go;
    what is recorded afterwards is the refused commit, for every job."""
    job_ids = enqueue(engine, queue, n=7)
    breaks = FailsAtCommit("refused")

    async def handler(ctx: Context) -> None:
        if ctx.job.data["n"] == 3 and ctx.job.attempts == 1:
            raise ValueError("an ordinary failure, recorded in the same transaction")
        await breaks(ctx)

    worker = harness.worker(handler, mode="transaction", max_jobs=7, retry=RetryPolicy.constant(0))

    with pytest.raises(CommitFailed) as raised:
        await harness.run_once(worker)

    message = str(raised.value)
    assert "the failed attempt of its 7 claimed jobs was then recorded" in message
    assert "(7 to retry, 0 failed, 0 left alone" in message
    assert message.endswith(" and 2 more")  # five named
    assert all(str(job_id) in message for job_id in job_ids[:5])
    for job_id in job_ids:  # job 3's ValueError went with the rest
        assert_attempt_recorded(engine, queue, job_id, attempts=1)
    assert order_ids(engine) == []

    assert await harness.run_once(worker) == PassResult(claimed=7, completed=7)
    assert {get_job(engine, queue, job_id).attempts for job_id in job_ids} == {2}


@pytest.mark.parametrize("other", ["committed", "in progress"])
async def test_a_job_claimed_by_another_worker_meanwhile_is_left_alone(
    engine: Engine,
    worker_engine: AnyEngine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    other: str,
) -> None:
    """Between the refused pass's rollback and the recording, another worker claims
    job 0. Committed: its attempts moved on, the guard does not match. In progress:
    the row is locked, and the recording skips it instead of waiting (a lock_timeout
    would fail it otherwise). Job 1 is recorded either way."""
    job_ids = enqueue(engine, queue, n=2)
    with_lock_timeout(harness.sync_engine(worker_engine))
    elsewhere = ClaimElsewhere(
        engine, queue, harness.sync_engine(worker_engine), commit=other == "committed"
    )
    handler = BreaksCommit()

    async def arming(ctx: Context) -> None:
        elsewhere.armed = True
        await handler(ctx)

    worker = harness.worker(
        arming, bind=worker_engine, mode="transaction", max_jobs=2, retry=RetryPolicy.constant(60)
    )
    with (
        caplog.at_level(logging.INFO, logger=LOGGER),
        elsewhere,
        pytest.raises(CommitFailed) as raised,
    ):
        await harness.run_once(worker)

    assert_left_alone(engine, queue, job_ids, elsewhere, str(raised.value), caplog)


async def test_without_a_retry_policy_the_error_is_recorded_and_the_lease_stands(
    engine: Engine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (job_id,) = enqueue(engine, queue, retry_after_seconds=45)
    worker = harness.worker(BreaksCommit(), mode="transaction", retry=None)

    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(CommitFailed) as raised:
        await harness.run_once(worker)

    assert "(1 to retry, 0 failed, 0 left alone" in str(raised.value)
    (line,) = recorded_attempt_records(caplog)
    assert line.getMessage().endswith("; leaving it to its visibility timeout")
    job = assert_attempt_recorded(engine, queue, job_id, attempts=1)
    assert job.start_after == job.started_at + timedelta(seconds=45)  # as the claim sets it
    assert await harness.run_once(worker) == PassResult()


async def test_a_recording_that_fails_is_logged_and_leaves_the_jobs_claimable(
    engine: Engine,
    worker_engine: AnyEngine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The recording transaction's connection is killed as it begins: one ERROR tells
    both failures, the pass still raises CommitFailed, the job is claimable as before."""
    (job_id,) = enqueue(engine, queue)
    hook = AtNextBegin(
        harness.sync_engine(worker_engine), lambda connection: terminate(engine, connection)
    )
    breaks = FailsAtCommit("refused")

    async def handler(ctx: Context) -> None:
        hook.armed = not breaks.calls  # the first pass's, refused
        await breaks(ctx)

    worker = harness.worker(handler, bind=worker_engine, mode="transaction")

    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(CommitFailed) as raised:
        await harness.run_once(worker)

    assert hook.runs == 1
    assert raised.value.outcome_unknown is False
    message = str(raised.value)
    assert (
        "the transaction rolled back, the handlers' writes and the claim with it, and "
        "recording the failed attempts failed too (DatabaseError: "
    ) in message
    assert "its 1 claimed job is claimable again at once (attempt not counted)" in message
    assert_logged_once(caplog, logging.ERROR)
    assert_claimable_again(engine, queue, [job_id])

    assert await harness.run_once(worker) == PassResult(claimed=1, completed=1)
    assert get_job(engine, queue, job_id).attempts == 1
    assert order_ids(engine) == [200]


async def test_checking_deferred_constraints_in_the_handler_makes_it_an_ordinary_failure(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """The remedy docs/worker.md gives for a handler whose writes are always refused:
    ``SET CONSTRAINTS ALL IMMEDIATE`` checks them inside the handler's SAVEPOINT, so
    the failure is recorded (attempts counted, backoff) instead of looping at once."""
    (job_id,) = enqueue(engine, queue)

    async def handler(ctx: Context) -> None:
        assert ctx.session is not None
        await awaited(ctx.session.execute(ORPHAN, {"id": 1}))
        await awaited(ctx.session.execute(text("SET CONSTRAINTS ALL IMMEDIATE")))

    worker = harness.worker(handler, mode="transaction")
    assert await harness.run_once(worker) == PassResult(claimed=1, retried=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.attempts == 1
    assert job.attributes["last_error"]["type"] == "sqlalchemy.exc.IntegrityError"
    assert children(engine) == 0


# -- lost -------------------------------------------------------------------------------------


async def test_a_connection_lost_at_commit_raises_commit_failed_with_the_outcome_unknown(
    engine: Engine,
    worker_engine: AnyEngine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (job_id,) = enqueue(engine, queue)
    kill = KillAtCommit(harness.sync_engine(worker_engine), engine)
    handler = FailsAtCommit("lost", kill)
    worker = harness.worker(handler, bind=worker_engine, mode="transaction")

    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(CommitFailed) as raised:
        await harness.run_once(worker)

    assert kill.kills == 1
    error = raised.value
    assert error.outcome_unknown is True
    assert isinstance(error.__cause__, DBAPIError)
    assert error.__cause__.connection_invalidated
    message = str(error)
    assert "the database connection of a transaction-mode pass died during its COMMIT" in message
    # The server's notice, or (asyncpg, when the socket closes first) the driver's own.
    assert "terminating connection" in message or "connection was closed" in message
    assert "whether it committed is unknown: either all of the pass did" in message
    assert "claimed 1, completed 1, retried 0, failed 0, left untouched 0" in message
    assert "or none of it did and its 1 claimed job is claimable again at once" in message
    assert f"jobs: {job_id} [t]" in message
    record = assert_logged_once(caplog, logging.WARNING)
    assert "rolled back" not in record.getMessage()
    assert worker.totals == PassResult()
    # Pickles with its verdict (e.g. across a process pool).
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.outcome_unknown) == (message, True)

    # All of the pass or none of it: completed with the handler's write, or claimable.
    job = get_job(engine, queue, job_id)
    if job.state is JobState.COMPLETED:
        assert job.attempts == 1 and order_ids(engine) == [100]
    else:
        # What happens here: the backend was gone before COMMIT was sent.
        assert_claimable_again(engine, queue, [job_id])

    assert await harness.run_once(worker) == PassResult(claimed=1, completed=1)
    assert get_job(engine, queue, job_id).attempts == 1
    assert order_ids(engine) == [200]


async def test_a_connection_lost_at_the_commit_of_an_empty_pass_loses_nothing(
    engine: Engine,
    worker_engine: AnyEngine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kill = KillAtCommit(harness.sync_engine(worker_engine), engine)
    kill.armed = True
    worker = harness.worker(noop, bind=worker_engine, mode="transaction")

    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(CommitFailed) as raised:
        await harness.run_once(worker)

    assert raised.value.outcome_unknown is True
    assert str(raised.value).endswith("the pass had claimed no job, so nothing is lost")
    assert_logged_once(caplog, logging.WARNING)
    assert await harness.run_once(worker) == PassResult()


# -- the loop ---------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 2])
@pytest.mark.parametrize("how", ["refused", "lost"])
async def test_the_loop_logs_a_failed_commit_once_and_runs_the_job_again(
    engine: Engine,
    worker_engine: AnyEngine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    how: str,
    concurrency: int,
) -> None:
    handler = FailsAtCommit(
        how, KillAtCommit(harness.sync_engine(worker_engine), engine) if how == "lost" else None
    )
    worker = harness.worker(
        handler,
        bind=worker_engine,
        mode="transaction",
        heartbeat=0.1,
        concurrency=concurrency,
        retry=RetryPolicy.constant(0.1),
    )
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        worker.start()
        (job_id,) = enqueue(engine, queue)
        await wait_for(lambda: get_job(engine, queue, job_id).state is JobState.COMPLETED)
        worker.stop()
        assert await harness.join(worker, 10)

    refused = how == "refused"
    # Refused: the failed attempt was recorded, so the second claim was attempt 2.
    assert get_job(engine, queue, job_id).attempts == (2 if refused else 1)
    assert handler.calls == [0, 0]
    assert order_ids(engine) == [200]
    assert worker.totals == PassResult(claimed=1, completed=1)
    record = assert_logged_once(
        caplog, logging.ERROR if refused else logging.WARNING, attempts_recorded=int(refused)
    )
    assert ("is unknown" in record.getMessage()) is not refused


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_the_loop_backs_a_poison_job_off_instead_of_claiming_it_again_at_once(
    engine: Engine,
    worker_engine: AnyEngine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    concurrency: int,
) -> None:
    """A job whose COMMIT is always refused, in the loop: with a heartbeat of 0.01 s
    the loop passes about every 0.01 s, and a refusal that left the job due at once
    (as before) would have it claimed on every one of them. Each refusal is counted
    and backed off instead (1 s), so the claims of the job are an order of magnitude
    fewer than the passes, and the third ends it FAILED."""
    (job_id,) = enqueue(engine, queue)
    handler = BreaksCommit()
    claims = claim_statements(harness.sync_engine(worker_engine))
    worker = harness.worker(
        handler,
        bind=worker_engine,
        mode="transaction",
        heartbeat=0.01,
        concurrency=concurrency,
        retry=RetryPolicy.constant(1.0, max_attempts=3),
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        worker.start()
        await wait_for(lambda: get_job(engine, queue, job_id).state is JobState.FAILED)
        worker.stop()
        assert await harness.join(worker, 10)

    assert_attempt_recorded(engine, queue, job_id, attempts=3, state=JobState.FAILED)
    assert len(handler.calls) * 10 <= len(claims), (len(handler.calls), len(claims))
    assert len(commit_records(caplog)) == len(handler.calls)  # one ERROR per refused pass
    assert len(recorded_attempt_records(caplog)) == 3
    if concurrency == 1:
        assert handler.calls == [(0, 1), (0, 2), (0, 3)]
        return
    # With a sibling pass, the job may be claimed again in the moment between a
    # refused COMMIT's rollback and the recording of its attempt — the documented race
    # of a job "claimed again meanwhile" (as another worker process could): that pass
    # runs the same attempt once more, and its own refusal is recorded instead. Never
    # more than once per attempt, and the attempts still only go up.
    attempts = [attempt for _, attempt in handler.calls]
    assert attempts == sorted(attempts) and set(attempts) == {1, 2, 3}, handler.calls
    assert all(attempts.count(attempt) <= 2 for attempt in (1, 2, 3)), handler.calls
