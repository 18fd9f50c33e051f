"""``programma_sa.flask``: the traps of a Flask-SQLAlchemy app's handlers, reproduced,
then gone with the extension (issue #16, trap 6).

The app is ``examples/flask_app``: its handler uses ``current_app`` and
``db.session``, and notes the sender on its own job through ``db.session``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from examples.flask_app.app import create_app
from examples.flask_app.jobs import send_welcome
from examples.flask_app.models import SEND_WELCOME, Signup, db, programma, queue
from programma_sa import (
    AsyncWorker,
    ConfigurationError,
    JobContext,
    JobDetail,
    JobQueue,
    JobState,
    PassResult,
    RetryPolicy,
    Worker,
    migrations,
)
from programma_sa.flask import Programma
from programma_sa.testing import fresh_database, run_job

from ..workers.support import blocking_wait_for

ONE_ATTEMPT = RetryPolicy(max_attempts=1)


@pytest.fixture
def flask_engine(flask_url: str) -> Iterator[Engine]:
    engine = create_engine(flask_url)
    yield engine
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE signups, {queue.table.name}"))
    engine.dispose()


def with_lock_timeout(url: str, milliseconds: int) -> str:
    """``url`` whose connections give up waiting for a lock after ``milliseconds``."""
    bounded = make_url(url).update_query_dict({"options": f"-c lock_timeout={milliseconds}"})
    return bounded.render_as_string(hide_password=False)


@pytest.fixture
def app(flask_url: str, flask_engine: Engine) -> Iterator[Flask]:
    # The app's connections wait 5 s at most for a lock: should db.session ever wait
    # for the claim's lock again, the tests fail instead of hanging.
    app = create_app(with_lock_timeout(flask_url, 5000))
    yield app
    with app.app_context():
        db.engine.dispose()


def sign_up(app: Flask, email: str = "ada@example.com") -> str:
    response = app.test_client().post("/signups", json={"email": email})
    assert response.status_code == 201, response.text
    job_id: str = response.get_json()["welcome_job_id"]
    return job_id


def job(engine: Engine, job_id: object) -> JobDetail:
    with Session(engine) as session:
        found = queue.get_job(session, job_id)  # type: ignore[arg-type]
    assert found is not None
    return found


def welcomed(engine: Engine, email: str = "ada@example.com") -> bool:
    with Session(engine) as session:
        at = session.scalar(select(Signup.welcomed_at).where(Signup.email == email))
    return at is not None


# -- the app context -----------------------------------------------------------------------


def test_without_the_extension_an_app_context_pushed_at_import_is_not_the_handlers(
    app: Flask, flask_engine: Engine
) -> None:
    """The trap: RQ users push the app context when their jobs module is imported; the
    worker runs handlers on threads of its own, where no app context is pushed."""
    job_id = sign_up(app)
    pushed = app.app_context()
    pushed.push()  # what the RQ habit does, on this (the main) thread
    try:
        worker = Worker(
            queue, flask_engine, SEND_WELCOME, send_welcome, listen=False, heartbeat=0.05,
            retry=ONE_ATTEMPT,
        )  # fmt: skip
        with worker:
            worker.start()
            blocking_wait_for(lambda: job(flask_engine, job_id).state is JobState.FAILED)
    finally:
        pushed.pop()
    error = job(flask_engine, job_id).attributes["last_error"]
    assert error["type"] == "RuntimeError"
    assert error["message"].startswith("Working outside of application context.")
    assert not welcomed(flask_engine)


@pytest.mark.parametrize("mode", ["lease", "transaction"])
def test_with_the_extension_each_handler_runs_in_the_app_context(
    app: Flask, flask_engine: Engine, mode: str
) -> None:
    job_id = sign_up(app)
    worker = programma.worker(
        SEND_WELCOME, send_welcome, app=app, mode=mode, listen=False, heartbeat=0.05
    )
    with worker:
        worker.start()
        blocking_wait_for(lambda: job(flask_engine, job_id).state is JobState.COMPLETED)
    assert welcomed(flask_engine)
    assert job(flask_engine, job_id).attributes == {"sender": "welcome@example.com"}


# -- db.session in transaction mode ----------------------------------------------------------


def test_without_binding_db_session_waits_for_the_claims_row_lock(
    flask_url: str, flask_engine: Engine
) -> None:
    """The trap: in transaction mode the claim holds the job's row lock until the pass
    commits; ``db.session`` on a connection of its own waits for it — forever, but for
    the lock_timeout this app's connections carry here."""
    app = create_app(with_lock_timeout(flask_url, 1000))
    try:
        job_id = sign_up(app)
        worker = Worker(
            queue, flask_engine, SEND_WELCOME, send_welcome, mode="transaction", listen=False,
            retry=ONE_ATTEMPT, handler_context=lambda ctx: app.app_context(),  # context only
        )  # fmt: skip
        assert worker.run_once() == PassResult(claimed=1, failed=1)
    finally:
        with app.app_context():
            db.engine.dispose()
    message = job(flask_engine, job_id).attributes["last_error"]["message"]
    assert "canceling statement due to lock timeout" in message
    assert not welcomed(flask_engine)


def test_db_session_joins_the_claims_transaction(app: Flask, flask_engine: Engine) -> None:
    job_id = sign_up(app)
    connections: list[tuple[object, object]] = []

    def handler(ctx: JobContext) -> None:
        assert ctx.session is not None
        claim = ctx.session.connection()
        send_welcome(ctx)
        connections.append((db.session.connection(), claim))

    worker = programma.worker(SEND_WELCOME, handler, app=app, mode="transaction", listen=False)

    assert worker.run_once() == PassResult(claimed=1, completed=1)
    [(used, claim)] = connections
    assert used is claim  # the claim's connection, so its locks are db.session's own
    assert welcomed(flask_engine)
    assert job(flask_engine, job_id).attributes == {"sender": "welcome@example.com"}


def test_a_failing_handler_takes_its_db_session_writes_back_with_it(
    app: Flask, flask_engine: Engine
) -> None:
    job_id = sign_up(app)

    def handler(ctx: JobContext) -> None:
        send_welcome(ctx)  # writes and "commits" (a SAVEPOINT) through db.session
        raise RuntimeError("the mailer is down")

    worker = programma.worker(
        SEND_WELCOME, handler, app=app, mode="transaction", listen=False, retry=ONE_ATTEMPT
    )
    assert worker.run_once() == PassResult(claimed=1, failed=1)

    assert not welcomed(flask_engine)
    attributes = job(flask_engine, job_id).attributes
    assert "sender" not in attributes
    assert attributes["last_error"]["message"] == "the mailer is down"


def test_db_session_writes_commit_with_the_job_without_a_commit_call(
    app: Flask, flask_engine: Engine
) -> None:
    """As with ``ctx.session``: in transaction mode the handler commits nothing itself."""
    job_id = sign_up(app)

    def handler(ctx: JobContext) -> None:
        signup = db.session.scalars(select(Signup)).one()
        signup.email = "ada@example.org"

    worker = programma.worker(SEND_WELCOME, handler, app=app, mode="transaction", listen=False)
    assert worker.run_once() == PassResult(claimed=1, completed=1)

    with Session(flask_engine) as session:
        assert session.scalars(select(Signup.email)).all() == ["ada@example.org"]
    assert job(flask_engine, job_id).state is JobState.COMPLETED


def test_jobs_in_another_database_leave_db_session_as_flask_sqlalchemy_makes_it(
    admin_url: str, app: Flask, flask_engine: Engine
) -> None:
    """The worker's jobs live in another database than the app's: no lock to wait
    for, no transaction to join; db.session is the app's usual session."""
    binds: list[object] = []

    def handler(ctx: JobContext) -> None:
        binds.append(db.session.get_bind())

    with fresh_database(admin_url, prefix="programma_flask_other") as other_url:
        migrations.upgrade(other_url)
        other = create_engine(other_url)
        try:
            with Session(other) as session, session.begin():
                queue.add_job(session, SEND_WELCOME, {"email": "bob@example.com"})
            worker = Worker(
                queue, other, SEND_WELCOME, handler, mode="transaction", listen=False,
                handler_context=programma.handler_context(app),
            )  # fmt: skip
            assert worker.run_once() == PassResult(claimed=1, completed=1)
        finally:
            other.dispose()
    with app.app_context():
        assert binds == [db.engine]


def test_an_async_worker_cannot_use_the_flask_handler_context(
    app: Flask, flask_engine: Engine, flask_url: str
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from programma_sa import AsyncJobContext, AsyncJobQueue

    async def handler(ctx: AsyncJobContext) -> None:
        pass

    engine = create_async_engine(flask_url)
    worker = AsyncWorker(
        AsyncJobQueue(queue.table), engine, SEND_WELCOME, handler, listen=False,
        handler_context=programma.handler_context(app),
    )  # fmt: skip
    job_id = sign_up(app)

    import asyncio

    async def run() -> PassResult:
        try:
            return await worker.run_once()
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == PassResult(claimed=1, retried=1)
    message = job(flask_engine, job_id).attributes["last_error"]["message"]
    assert message.startswith("handler_context must return an async context manager")


def test_the_extension_needs_a_job_queue() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Programma(db, queue.table)  # type: ignore[arg-type]
    assert str(refused.value).startswith("queue must be a JobQueue, got Table('programma_jobs'")
    assert isinstance(queue, JobQueue)


def test_run_job_runs_a_flask_handler_in_the_tests_own_transaction(
    app: Flask, flask_engine: Engine
) -> None:
    """What an app's test suite does: enqueue through db.session, run the job, roll back."""
    with app.app_context():
        job_id = queue.add_job(db.session, SEND_WELCOME, {"email": "eve@example.com"})
        db.session.add(Signup(email="eve@example.com", welcome_job_id=job_id))

        run = run_job(
            db.session, queue, send_welcome, SEND_WELCOME,
            handler_context=programma.handler_context(app),
        )  # fmt: skip

        assert run.error is None and run.job is not None
        assert run.job.state is JobState.COMPLETED
        assert run.job.attributes == {"sender": "welcome@example.com"}
        welcomed_at = db.session.scalar(select(Signup.welcomed_at))
        assert welcomed_at is not None
        db.session.rollback()
    assert not welcomed(flask_engine, "eve@example.com")
    with Session(flask_engine) as session:
        assert queue.list_jobs(session).jobs == []
