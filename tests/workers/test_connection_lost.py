"""Transaction mode: the pass's database connection dies while a handler runs.

The handler terminates its own backend (``pg_terminate_backend(pg_backend_pid())``
on ``ctx.session``), so the transaction that holds the claim is gone. The job must
come back claimable at once with its attempt not counted, ``run_once()`` must raise
:class:`~programma_sa.exceptions.TransactionLost` (a :class:`DatabaseError`), and the
log must say so once — never the "retrying in …" of a handler failure, whose record
could not be written anyway. Each test runs on the sync Worker and on the AsyncWorker
over both asyncio drivers.
"""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError

from programma_sa import DatabaseError, JobQueue, JobState, PassResult
from programma_sa.exceptions import TransactionLost

from ..app import Order
from .harness import AnyEngine, Context, Harness, awaited, on
from .support import enqueue, get_job, order_ids, seconds_from_now, wait_for

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.postgresql_only("a backend terminated with pg_terminate_backend"),
]

KILL = text("SELECT pg_terminate_backend(pg_backend_pid())")
#: The error SQLAlchemy raises, by driver, on a connection whose backend was terminated.
KILLED_ERROR = {
    "psycopg": "sqlalchemy.exc.OperationalError",
    "asyncpg": "sqlalchemy.exc.DBAPIError",
}
LOGGER = "programma_sa.worker"


@pytest.fixture
def worker_engine(harness: Harness) -> AnyEngine:
    """The worker's own engine: the killed connection invalidates only this pool."""
    return harness.engine()


class KillsOnce:
    """A transaction-mode handler whose first call kills the pass's connection.

    ``swallow``: catch the database's error and return normally. Every call writes
    an Order (id = job's ``n``), so a rolled-back pass shows in the orders table.
    """

    def __init__(self, kill_n: int = 0, *, swallow: bool = False) -> None:
        self.kill_n = kill_n
        self.swallow = swallow
        self.calls: list[int] = []
        self.killed = False

    async def __call__(self, ctx: Context) -> None:
        assert ctx.session is not None
        n = ctx.job.data["n"]
        self.calls.append(n)
        ctx.session.add(Order(id=100 * len(self.calls) + n))
        await awaited(ctx.session.flush())
        if n == self.kill_n and not self.killed:
            self.killed = True
            try:
                await awaited(ctx.session.execute(KILL))
            except DBAPIError:
                if not self.swallow:
                    raise


def lost_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if "transaction lost" in record.getMessage()]


def assert_logged_once_as_lost(
    caplog: pytest.LogCaptureFixture, job_id: object, claimed: int
) -> None:
    records = [record for record in caplog.records if record.name == LOGGER]
    (warning,) = lost_warnings(caplog)
    # Not a handler failure: no "attempt 1 failed …; retrying in …" line, nothing else
    # at WARNING or above (the loop does not log the pass a second time).
    assert [record for record in records if record.levelno >= logging.WARNING] == [warning]
    assert not [record for record in records if "retrying in" in record.getMessage()]
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert str(job_id) in message
    assert f"its {claimed} claimed job" in message
    assert "claimable again at once" in message
    assert getattr(warning, "job_id", None) == str(job_id)


@pytest.mark.parametrize("swallow", [False, True], ids=["raises", "swallows"])
async def test_a_killed_connection_rolls_the_pass_back_and_raises_transaction_lost(
    engine: Engine,
    worker_engine: AnyEngine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    swallow: bool,
) -> None:
    (job_id,) = enqueue(engine, queue)
    handler = KillsOnce(swallow=swallow)
    worker = harness.worker(handler, bind=worker_engine, mode="transaction")

    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(TransactionLost) as raised:
        await harness.run_once(worker)

    assert isinstance(raised.value, DatabaseError)  # what the loop backs off on
    message = str(raised.value)
    assert str(job_id) in message and "claimable again at once" in message
    if swallow:
        assert "the handler caught the database's error and carried on" in message
    else:
        assert "terminating connection" in message
        assert isinstance(raised.value.__cause__, DBAPIError)  # the handler's error, kept
    assert_logged_once_as_lost(caplog, job_id, claimed=1)
    assert worker.totals == PassResult()
    # The claim rolled back: due now, attempt not counted; the handler's write is gone.
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.CREATED
    assert job.attempts == 0 and job.started_at is None
    assert seconds_from_now(engine, job.start_after) <= 0
    assert order_ids(engine) == []

    # The next pass (a fresh connection from the pool) runs it normally.
    assert await harness.run_once(worker) == PassResult(claimed=1, completed=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.COMPLETED and job.attempts == 1
    assert order_ids(engine) == [200]
    assert handler.calls == [0, 0]


async def test_the_whole_batch_rolls_back_and_its_remaining_handlers_do_not_run(
    engine: Engine,
    worker_engine: AnyEngine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job_ids = enqueue(engine, queue, n=3)
    handler = KillsOnce(kill_n=1)  # the second job of the batch
    worker = harness.worker(handler, bind=worker_engine, mode="transaction", max_jobs=3)

    with (
        caplog.at_level(logging.DEBUG, logger=LOGGER),
        pytest.raises(TransactionLost, match="its 3 claimed jobs are claimable"),
    ):
        await harness.run_once(worker)

    assert handler.calls == [0, 1]  # the third handler never ran on the dead transaction
    assert_logged_once_as_lost(caplog, job_ids[1], claimed=3)
    for job_id in job_ids:
        job = get_job(engine, queue, job_id)
        assert job.state is JobState.CREATED and job.attempts == 0
    assert order_ids(engine) == []  # the first handler's write rolled back too

    assert await harness.run_once(worker) == PassResult(claimed=3, completed=3)
    assert all(get_job(engine, queue, job_id).attempts == 1 for job_id in job_ids)
    assert handler.calls == [0, 1, 0, 1, 2]


async def test_a_handler_losing_a_connection_of_its_own_is_an_ordinary_failure(
    engine: Engine,
    worker_engine: AnyEngine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only the pass's own connection counts: a handler's other database is its business."""
    (job_id,) = enqueue(engine, queue)
    other = harness.engine()

    async def handler(ctx: Context) -> None:
        await awaited(harness.execute(other, KILL))

    worker = harness.worker(handler, bind=worker_engine, mode="transaction")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert await harness.run_once(worker) == PassResult(claimed=1, retried=1)

    assert lost_warnings(caplog) == []
    assert any("retrying in" in record.getMessage() for record in caplog.records)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.attempts == 1
    assert job.attributes["last_error"]["type"] == KILLED_ERROR[harness.driver]


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_the_loop_logs_the_lost_pass_once_and_runs_the_job_again(
    engine: Engine,
    worker_engine: AnyEngine,
    queue: JobQueue,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    concurrency: int,
) -> None:
    handler = KillsOnce()
    worker = harness.worker(
        handler, bind=worker_engine, mode="transaction", heartbeat=0.1, concurrency=concurrency
    )
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        worker.start()
        (job_id,) = enqueue(engine, queue)
        await wait_for(lambda: get_job(engine, queue, job_id).state is JobState.COMPLETED)
        worker.stop()
        assert await harness.join(worker, 10)

    assert get_job(engine, queue, job_id).attempts == 1
    assert handler.calls == [0, 0]
    assert worker.totals == PassResult(claimed=1, completed=1)
    assert_logged_once_as_lost(caplog, job_id, claimed=1)


@on("sync")
async def test_a_connection_killed_during_the_passs_own_completion_is_one_warning(
    engine: Engine,
    queue: JobQueue,
    harness: Harness,
    worker_engine: AnyEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue #15: the connection dies as the worker writes the pass's completion (not
    under a handler): one WARNING "transaction lost", no ERROR with a traceback, and
    the job is claimable at once, its attempt not counted."""
    assert isinstance(worker_engine, Engine)
    (job_id,) = enqueue(engine, queue)

    def kill_before_the_completion(  # type: ignore[no-untyped-def]
        conn, cursor, statement, parameters, context, executemany
    ) -> None:
        if "SET state='completed'" in statement.replace(" = ", "="):
            with engine.connect() as other:
                other.execute(
                    text("SELECT pg_terminate_backend(:pid)"),
                    {"pid": conn.connection.dbapi_connection.info.backend_pid},
                )

    async def handler(ctx: Context) -> None:
        return None

    event.listen(worker_engine, "before_cursor_execute", kill_before_the_completion)
    try:
        worker = harness.worker(handler, mode="transaction", bind=worker_engine)
        with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(TransactionLost):
            await harness.run_once(worker)
    finally:
        event.remove(worker_engine, "before_cursor_execute", kill_before_the_completion)
    records = [record for record in caplog.records if record.name == LOGGER]
    (warning,) = lost_warnings(caplog)
    assert [r for r in records if r.levelno >= logging.WARNING] == [warning]
    assert warning.levelno == logging.WARNING and warning.exc_info is None
    assert "while the worker wrote its outcomes" in warning.getMessage()
    assert f"jobs: {job_id} [t]" in warning.getMessage()
    job = get_job(engine, queue, job_id)
    assert (job.state, job.attempts) == (JobState.CREATED, 0)
    assert seconds_from_now(engine, job.start_after) <= 0
