"""Transaction mode: the pass's COMMIT fails.

Two ways, both real:

* **refused** — the handler's write through ``ctx.session`` breaks a ``DEFERRABLE
  INITIALLY DEFERRED`` foreign key, which PostgreSQL checks only at COMMIT: the
  server answers the COMMIT with an error and rolls the whole pass back (claim,
  outcomes, the handlers' writes). The jobs are claimable again at once, attempt not
  counted; ``run_once()`` raises :class:`~programma_sa.CommitFailed` with
  ``outcome_unknown`` False, and one ERROR says so.
* **lost** — an engine ``commit`` event (it runs just before the driver sends
  COMMIT) terminates the pass's own backend from another connection: the COMMIT
  meets a dead connection, so the worker cannot know whether it was applied.
  ``CommitFailed`` with ``outcome_unknown`` True, one WARNING saying the outcome is
  unknown — never "rolled back". Here the backend is gone before COMMIT is sent, so
  the jobs are in fact claimable again.

Either way the ``run()`` loop logs the failure once and processes the job afterwards.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, event, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from programma_sa import (
    CommitFailed,
    DatabaseError,
    JobContext,
    JobQueue,
    JobState,
    PassResult,
)

from .conftest import MakeWorker
from .support import get_job, seconds_from_now, wait_for
from .test_outcomes import enqueue, order_ids

LOGGER = "programma_sa.worker"
CHILDREN = "commit_check_children"
#: The orphan row a handler writes to break the deferred foreign key at COMMIT.
ORPHAN = text(f"INSERT INTO {CHILDREN} (id, parent_id) VALUES (:id, -1)")


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
def worker_engine(database_url: str, engine: Engine) -> Iterator[Engine]:
    """The worker's own engine: the killed connection invalidates only this pool."""
    worker_engine = create_engine(database_url)
    yield worker_engine
    worker_engine.dispose()


def children(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {CHILDREN}")).scalar_one())


def backend_pid(connection: Connection) -> int:
    """The server pid behind a connection of any of the test drivers."""
    driver: Any = connection.connection.driver_connection
    info = getattr(driver, "info", None)  # psycopg (sync and async)
    return int(info.backend_pid if info is not None else driver.get_server_pid())  # asyncpg


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
        with self.admin.connect() as admin:
            terminated = admin.execute(
                select(func.pg_terminate_backend(backend_pid(connection), 5000))
            ).scalar_one()
        assert terminated
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

    def __call__(self, ctx: JobContext) -> None:
        from ..app import Order

        assert ctx.session is not None
        n = ctx.job.data["n"]
        self.calls.append(n)
        ctx.session.add(Order(id=100 * len(self.calls) + n))
        if len(self.calls) > self.times:
            return
        if self.how == "refused":
            ctx.session.execute(ORPHAN, {"id": len(self.calls)})
        else:
            assert self.kill is not None
            self.kill.armed = True


def commit_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if "commit failed: " in record.getMessage()]


def assert_logged_once(caplog: pytest.LogCaptureFixture, level: int) -> logging.LogRecord:
    """One record, at ``level``, and nothing else at WARNING or above: no "rolled
    back" line from the loop, no retry, no traceback."""
    records = [record for record in caplog.records if record.name == LOGGER]
    (record,) = commit_records(caplog)
    assert [other for other in records if other.levelno >= logging.WARNING] == [record]
    assert record.levelno == level
    assert record.exc_info is None
    return record


def assert_claimable_again(engine: Engine, queue: JobQueue, job_ids: list[Any]) -> None:
    """The pass rolled back: due now, attempt not counted, no outcome recorded."""
    for job_id in job_ids:
        job = get_job(engine, queue, job_id)
        assert job.state is JobState.CREATED
        assert job.attempts == 0 and job.started_at is None
        assert "last_error" not in job.attributes
        assert seconds_from_now(engine, job.start_after) <= 0
    assert order_ids(engine) == []
    assert children(engine) == 0


# -- refused ----------------------------------------------------------------------------------


def test_a_refused_commit_rolls_the_pass_back_and_raises_commit_failed(
    engine: Engine,
    queue: JobQueue,
    make_worker: MakeWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (job_id,) = enqueue(engine, queue)
    handler = FailsAtCommit("refused")
    worker = make_worker(handler, mode="transaction")

    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(CommitFailed) as raised:
        worker.run_once()

    error = raised.value
    assert isinstance(error, DatabaseError)  # what the loop backs off on
    assert error.outcome_unknown is False
    assert isinstance(error.__cause__, IntegrityError)  # the driver's error, kept
    message = str(error)
    assert "the database refused the COMMIT of a transaction-mode pass" in message
    assert "violates foreign key constraint" in message
    assert "the transaction rolled back, the handlers' writes with it" in message
    assert "its 1 claimed job is claimable again at once (attempt not counted)" in message
    assert f"jobs: {job_id} [t]" in message
    assert "unknown" not in message
    record = assert_logged_once(caplog, logging.ERROR)
    assert record.getMessage() == f"commit failed: {message}"
    assert getattr(record, "job_ids", None) == [str(job_id)]
    assert worker.totals == PassResult()
    assert_claimable_again(engine, queue, [job_id])

    # Nothing of the failed pass lingers: the next one runs the job normally.
    assert worker.run_once() == PassResult(claimed=1, completed=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.COMPLETED and job.attempts == 1
    assert order_ids(engine) == [200]
    assert handler.calls == [0, 0]


def test_a_refused_commit_rolls_back_every_outcome_of_the_batch(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    """Never half: the completions, a recorded failure and every handler's write go."""
    job_ids = enqueue(engine, queue, n=7)
    breaks = FailsAtCommit("refused")

    def handler(ctx: JobContext) -> None:
        if ctx.job.data["n"] == 3 and ctx.job.attempts == 1:
            raise ValueError("an ordinary failure, recorded in the same transaction")
        breaks(ctx)

    worker = make_worker(handler, mode="transaction", max_jobs=7)

    with pytest.raises(CommitFailed) as raised:
        worker.run_once()

    message = str(raised.value)
    assert "its 7 claimed jobs are claimable again at once" in message
    assert message.endswith(" and 2 more")  # five named
    assert all(str(job_id) in message for job_id in job_ids[:5])
    assert_claimable_again(engine, queue, job_ids)

    assert worker.run_once() == PassResult(claimed=7, completed=6, retried=1)


def test_checking_deferred_constraints_in_the_handler_makes_it_an_ordinary_failure(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    """The remedy docs/worker.md gives for a handler whose writes are always refused:
    ``SET CONSTRAINTS ALL IMMEDIATE`` checks them inside the handler's SAVEPOINT, so
    the failure is recorded (attempts counted, backoff) instead of looping at once."""
    (job_id,) = enqueue(engine, queue)

    def handler(ctx: JobContext) -> None:
        assert ctx.session is not None
        ctx.session.execute(ORPHAN, {"id": 1})
        ctx.session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))

    assert make_worker(handler, mode="transaction").run_once() == PassResult(claimed=1, retried=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.attempts == 1
    assert job.attributes["last_error"]["type"] == "sqlalchemy.exc.IntegrityError"
    assert children(engine) == 0


# -- lost -------------------------------------------------------------------------------------


def test_a_connection_lost_at_commit_raises_commit_failed_with_the_outcome_unknown(
    engine: Engine,
    worker_engine: Engine,
    queue: JobQueue,
    make_worker: MakeWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (job_id,) = enqueue(engine, queue)
    kill = KillAtCommit(worker_engine, engine)
    handler = FailsAtCommit("lost", kill)
    worker = make_worker(handler, bind=worker_engine, mode="transaction")

    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(CommitFailed) as raised:
        worker.run_once()

    assert kill.kills == 1
    error = raised.value
    assert error.outcome_unknown is True
    assert isinstance(error.__cause__, DBAPIError)
    assert error.__cause__.connection_invalidated
    message = str(error)
    assert "the database connection of a transaction-mode pass died during its COMMIT" in message
    assert "terminating connection" in message
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

    assert worker.run_once() == PassResult(claimed=1, completed=1)
    assert get_job(engine, queue, job_id).attempts == 1
    assert order_ids(engine) == [200]


def test_a_connection_lost_at_the_commit_of_an_empty_pass_loses_nothing(
    engine: Engine,
    worker_engine: Engine,
    queue: JobQueue,
    make_worker: MakeWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kill = KillAtCommit(worker_engine, engine)
    kill.armed = True
    worker = make_worker(lambda ctx: None, bind=worker_engine, mode="transaction")

    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(CommitFailed) as raised:
        worker.run_once()

    assert raised.value.outcome_unknown is True
    assert str(raised.value).endswith("the pass had claimed no job, so nothing is lost")
    assert_logged_once(caplog, logging.WARNING)
    assert worker.run_once() == PassResult()


# -- the loop ---------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 2])
@pytest.mark.parametrize("how", ["refused", "lost"])
def test_the_loop_logs_a_failed_commit_once_and_runs_the_job_again(
    engine: Engine,
    worker_engine: Engine,
    queue: JobQueue,
    make_worker: MakeWorker,
    caplog: pytest.LogCaptureFixture,
    how: str,
    concurrency: int,
) -> None:
    handler = FailsAtCommit(how, KillAtCommit(worker_engine, engine) if how == "lost" else None)
    worker = make_worker(
        handler, bind=worker_engine, mode="transaction", heartbeat=0.1, concurrency=concurrency
    )
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        worker.start()
        (job_id,) = enqueue(engine, queue)
        wait_for(lambda: get_job(engine, queue, job_id).state is JobState.COMPLETED)
        worker.stop()
        assert worker.join(10)

    assert get_job(engine, queue, job_id).attempts == 1
    assert handler.calls == [0, 0]
    assert order_ids(engine) == [200]
    assert worker.totals == PassResult(claimed=1, completed=1)
    record = assert_logged_once(caplog, logging.WARNING if how == "lost" else logging.ERROR)
    assert ("is unknown" in record.getMessage()) is (how == "lost")
