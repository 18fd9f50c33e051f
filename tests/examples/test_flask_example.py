"""The Flask-SQLAlchemy + Flask-Migrate example, against fresh real databases.

* ``flask db upgrade`` (to ``head``) refuses the two heads; ``flask db upgrade
  heads`` creates the app's table and programma's jobs table.
* ``POST /signups`` writes the signup and its welcome job in one ``db.session``
  transaction; a refused signup (duplicate address) rolls its job back too.
* ``flask db migrate`` with the app's env.py never touches the jobs table, and needs
  ``--head app@head`` to place a new revision once there are two heads.
* The worker handler (in the app context, through ``db.session``) marks the signup
  welcomed and completes the job together; ``flask programma worker`` runs it.

The Flask CLI runs in subprocesses, as the guide shows it: Flask-Migrate's env.py
calls ``logging.config.fileConfig``, which would disable this process's loggers.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, event, inspect, select, text

from examples.flask_app.app import MIGRATIONS, create_app
from examples.flask_app.jobs import send_welcome
from examples.flask_app.models import SEND_WELCOME, Job, Signup, db, programma
from programma_sa import JobState, PassResult
from programma_sa.migrations import include_object
from programma_sa.testing import fresh_database

from .support import argv, background, documented, environment, run, run_argv, wait_until

FLASK = "flask --app examples.flask_app.app"
UPGRADE_HEAD = f"{FLASK} db upgrade"
UPGRADE_HEADS = f"{FLASK} db upgrade heads"
MIGRATE = f'{FLASK} db migrate --head app@head -m "add a table"'
WORKER = (
    f"{FLASK} programma worker examples.flask_app.jobs:send_welcome"
    " --topic send-welcome --mode transaction"
)
#: The shell commands of the guide's Flask section.
COMMANDS = (UPGRADE_HEAD, UPGRADE_HEADS, MIGRATE, WORKER)
#: The app's one revision (examples/flask_app/migrations/versions).
APP_REVISION = "3f1c2a9d8e01"
JOBS = Job.__tablename__

#: ``flask`` after adding a table to the app's metadata: a model change to migrate.
FLASK_WITH_A_NEW_TABLE = """
import sqlalchemy as sa
from flask.cli import main
from examples.flask_app.models import db
sa.Table("newsletters", db.metadata, sa.Column("id", sa.Integer, primary_key=True))
main()
"""


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def flask_url(admin_url: str) -> Iterator[str]:
    """A fresh database migrated the way the guide says: ``flask db upgrade heads``."""
    with fresh_database(admin_url, prefix="programma_flask") as url:
        upgraded = run(documented(UPGRADE_HEADS), environment(DATABASE_URL=url))
        assert upgraded.returncode == 0, upgraded.stderr
        yield url


@pytest.fixture(scope="module")
def flask_engine(flask_url: str) -> Iterator[Engine]:
    engine = create_engine(flask_url)
    yield engine
    engine.dispose()


@pytest.fixture
def app(flask_url: str, flask_engine: Engine) -> Iterator[Flask]:
    app = create_app(flask_url)
    yield app
    with app.app_context():
        db.engine.dispose()
    with flask_engine.begin() as connection:
        connection.execute(text(f"TRUNCATE signups, {JOBS}"))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def signups(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        rows = connection.execute(select(Signup.email, Signup.welcome_job_id).order_by(Signup.id))
        return [tuple(row) for row in rows]


def welcome_jobs(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Job.id, Job.state, Job.data).where(Job.topic == SEND_WELCOME)
        )
        return [tuple(row) for row in rows]


def test_upgrade_to_head_refuses_two_heads_and_heads_applies_both(admin_url: str) -> None:
    with fresh_database(admin_url, prefix="programma_flask") as url:
        env = environment(DATABASE_URL=url)

        refused = run(documented(UPGRADE_HEAD), env)

        assert refused.returncode == 1
        assert "Multiple head revisions are present" in refused.stderr
        assert tables(url) & {"signups", JOBS} == set()

        upgraded = run(documented(UPGRADE_HEADS), env)

        assert upgraded.returncode == 0, upgraded.stderr
        assert {"signups", JOBS} <= tables(url)
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                versions = set(connection.scalars(text("SELECT version_num FROM alembic_version")))
        finally:
            engine.dispose()
        # One row per head: the app's revision and the last of programma's chain.
        assert len(versions) == 2
        assert APP_REVISION in versions
        assert any(version.startswith("programma_") for version in versions)


def test_a_signup_and_its_welcome_job_commit_together(
    client: FlaskClient, flask_engine: Engine
) -> None:
    response = client.post("/signups", json={"email": "ada@example.com"})

    assert response.status_code == 201, response.text
    job_id = response.get_json()["welcome_job_id"]
    [(email, welcome_job_id)] = signups(flask_engine)
    assert (email, str(welcome_job_id)) == ("ada@example.com", job_id)
    [(stored_id, state, data)] = welcome_jobs(flask_engine)
    assert (str(stored_id), state, data) == (
        job_id,
        JobState.CREATED.value,
        {"email": "ada@example.com"},
    )
    assert client.get("/signups/ada@example.com").get_json() == {
        "email": "ada@example.com",
        "welcome": "created",
    }


def test_a_refused_signup_rolls_its_job_back(
    app: Flask, client: FlaskClient, flask_engine: Engine
) -> None:
    first = client.post("/signups", json={"email": "bob@example.com"})
    assert first.status_code == 201
    statements: list[str] = []
    with app.app_context():
        event.listen(
            db.engine,
            "before_cursor_execute",
            lambda _conn, _cursor, statement, *_: statements.append(statement),
        )

    again = client.post("/signups", json={"email": "bob@example.com"})

    assert again.status_code == 409
    assert "bob@example.com has signed up already" in again.text
    # The second job's INSERT did reach the server, before the signup's failed...
    assert any(f"INSERT INTO {JOBS}" in statement for statement in statements)
    # ...and the rollback took it away: one signup, one job, the first request's.
    first_job = first.get_json()["welcome_job_id"]
    assert [(email, str(job)) for email, job in signups(flask_engine)] == [
        ("bob@example.com", first_job)
    ]
    assert [str(job_id) for job_id, _, _ in welcome_jobs(flask_engine)] == [first_job]


def test_a_bad_request_writes_nothing(client: FlaskClient, flask_engine: Engine) -> None:
    response = client.post("/signups", json={"name": "no address"})

    assert response.status_code == 400
    assert signups(flask_engine) == []
    assert welcome_jobs(flask_engine) == []


def test_the_worker_welcomes_and_completes_in_one_transaction(
    app: Flask, client: FlaskClient, flask_engine: Engine
) -> None:
    assert client.post("/signups", json={"email": "cy@example.com"}).status_code == 201
    worker = programma.worker(SEND_WELCOME, send_welcome, app=app, mode="transaction", listen=False)

    assert worker.run_once() == PassResult(claimed=1, completed=1)

    with flask_engine.connect() as connection:
        welcomed_at = connection.scalar(
            select(Signup.welcomed_at).where(Signup.email == "cy@example.com")
        )
    assert welcomed_at is not None
    assert client.get("/signups/cy@example.com").get_json()["welcome"] == "completed"


def test_the_worker_command_welcomes_new_signups(
    client: FlaskClient, flask_url: str, flask_engine: Engine, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"

    def welcomed() -> bool:
        with flask_engine.connect() as connection:
            return (
                connection.scalar(
                    select(Signup.welcomed_at).where(Signup.email == "di@example.com")
                )
                is not None
            )

    with background(documented(WORKER), environment(DATABASE_URL=flask_url), log) as worker:
        assert client.post("/signups", json={"email": "di@example.com"}).status_code == 201
        wait_until(welcomed, 30, log.read_text)
    assert worker.returncode == 0, log.read_text()
    assert [state for _, state, _ in welcome_jobs(flask_engine)] == [JobState.COMPLETED.value]
    with flask_engine.connect() as connection:
        attributes = connection.scalar(select(Job.attributes).where(Job.topic == SEND_WELCOME))
    assert attributes == {"sender": "welcome@example.com"}  # written through db.session


def test_autogenerate_leaves_the_jobs_table_to_programma(admin_url: str) -> None:
    """Only the app's chain applied: the jobs table is missing, yet the filter hides it."""
    with fresh_database(admin_url, prefix="programma_flask") as url:
        upgraded = run(f"{FLASK} db upgrade app@head", environment(DATABASE_URL=url))
        assert upgraded.returncode == 0, upgraded.stderr
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                filtered = MigrationContext.configure(
                    connection, opts={"include_object": include_object}
                )
                unfiltered = MigrationContext.configure(connection)
                assert compare_metadata(filtered, db.metadata) == []
                # The control: without the filter autogenerate would create the table.
                added = [diff[1].name for diff in compare_metadata(unfiltered, db.metadata)]
                assert JOBS in added
        finally:
            engine.dispose()


def test_flask_db_migrate_needs_the_app_head_and_skips_the_jobs_table(
    flask_url: str, tmp_path: Path
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    versions = migrations / "versions"
    env = environment(DATABASE_URL=flask_url)
    directory = f" -d {migrations}"

    # No model change: nothing to write (and the jobs table is not "new").
    unchanged = run(documented(MIGRATE) + directory, env)
    assert unchanged.returncode == 0, unchanged.stderr
    assert "No changes in schema detected" in unchanged.stderr
    assert [path.name for path in versions.glob("*.py")] == ["0001_create_signups.py"]

    def migrate_a_new_table(command: str) -> subprocess.CompletedProcess[str]:
        return run_argv([sys.executable, "-c", FLASK_WITH_A_NEW_TABLE, *argv(command)[1:]], env)

    # A model change and two heads: the new revision needs to know which it follows.
    refused = migrate_a_new_table(f"{FLASK} db migrate -m 'add a table'{directory}")
    assert refused.returncode == 1
    assert "Multiple heads are present" in refused.stderr

    generated = migrate_a_new_table(documented(MIGRATE) + directory)
    assert generated.returncode == 0, generated.stderr
    [revision] = [path for path in versions.glob("*.py") if path.name != "0001_create_signups.py"]
    source = revision.read_text()
    assert f"down_revision = '{APP_REVISION}'" in source
    assert "op.create_table('newsletters'" in source
    assert JOBS not in source
