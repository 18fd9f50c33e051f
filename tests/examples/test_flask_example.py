"""The Flask-SQLAlchemy + Flask-Migrate example, against fresh real databases.

* The app's chain has one head: its first revision, then the revisions
  ``programma-sa alembic revision`` wrote, one per programma-sa release with a new
  step (each committed one is what the command writes, and the command has nothing
  newer to add). ``flask db upgrade`` creates the app's table and the jobs table;
  each ``flask db downgrade`` steps back the last revision alone.
* ``POST /signups`` writes the signup and its welcome job in one ``db.session``
  transaction; a refused signup (duplicate address) rolls its job back too.
* ``flask db migrate`` with the app's env.py never touches the jobs table, and its
  new revision follows the app's one head.
* The worker handler (in the app context, through ``db.session``) marks the signup
  welcomed and completes the job together; ``flask programma worker`` runs it.

The Flask CLI runs in subprocesses, as the guide shows it: Flask-Migrate's env.py
calls ``logging.config.fileConfig``, which would disable this process's loggers.
"""

from __future__ import annotations

import ast
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

from ..helpers import chain_steps
from .support import argv, background, documented, environment, run, run_argv, wait_until

FLASK = "flask --app examples.flask_app.app"
#: The example's migrations directory as the guide names it (from the repository root).
MIGRATIONS_ARGUMENT = "examples/flask_app/migrations"
REVISION = f"programma-sa alembic revision --directory {MIGRATIONS_ARGUMENT}"
UPGRADE = f"{FLASK} db upgrade"
MIGRATE = f'{FLASK} db migrate -m "add a table"'
WORKER = (
    f"{FLASK} programma worker examples.flask_app.jobs:send_welcome"
    " --topic send-welcome --mode transaction"
)
#: The shell commands of the guide's Flask section.
COMMANDS = (REVISION, UPGRADE, MIGRATE, WORKER)
#: The app's first revision (examples/flask_app/migrations/versions): the signups table.
APP_REVISION = "3f1c2a9d8e01"
#: The revisions ``programma-sa alembic revision`` wrote after it, oldest first, each
#: with the step it takes the jobs table to: the table, then priorities and unique jobs,
#: then the control of jobs in flight.
STEPS_REVISIONS = (
    ("736c0aa782e4", "programma_0002"),
    ("60a3819a03a1", "programma_0004"),
    ("0e58320e6ad1", "programma_0005"),
)
#: The app's one head: the newest of them.
HEAD_REVISION = STEPS_REVISIONS[-1][0]
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


def versions(url: str) -> set[str]:
    """The rows of the database's ``alembic_version``: one per head it is at."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return set(connection.scalars(text("SELECT version_num FROM alembic_version")))
    finally:
        engine.dispose()


def copy_of_the_migrations(tmp_path: Path) -> Path:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    return migrations


def steps_file(revision: str, step: str) -> Path:
    """A committed revision applying programma's steps, as the command named it."""
    return MIGRATIONS / "versions" / f"{revision}_programma_jobs_to_{step}.py"


def revision_command(migrations: Path) -> str:
    """The guide's ``programma-sa alembic revision`` line, on another migrations directory."""
    return documented(REVISION).replace(MIGRATIONS_ARGUMENT, str(migrations))


#: What a revision does, beyond its id and its formatting.
MEANING = (
    "programma_steps",
    "down_revision",
    "branch_labels",
    "depends_on",
    "upgrade",
    "downgrade",
)


def meaning(source: str) -> dict[str, str]:
    """The revision's statements that say what it does, by name, as syntax trees."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        elif isinstance(node, ast.FunctionDef):
            name = node.name
        else:
            continue
        if name in MEANING:
            found[name] = ast.dump(node)
    assert sorted(found) == sorted(MEANING), source
    return found


@pytest.fixture(scope="module")
def flask_url(admin_url: str) -> Iterator[str]:
    """A fresh database migrated the way the guide says: ``flask db upgrade``."""
    with fresh_database(admin_url, prefix="programma_flask") as url:
        upgraded = run(documented(UPGRADE), environment(DATABASE_URL=url))
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


def test_upgrade_applies_every_revision_at_one_head_and_downgrade_steps_back_one(
    admin_url: str,
) -> None:
    with fresh_database(admin_url, prefix="programma_flask") as url:
        env = environment(DATABASE_URL=url)

        upgraded = run(documented(UPGRADE), env)

        assert upgraded.returncode == 0, upgraded.stderr
        assert {"signups", JOBS} <= tables(url)
        # One head: the database records the newest revision applying programma's steps.
        assert versions(url) == {HEAD_REVISION}

        # `downgrade -1` is the app's last revision: programma's newest steps alone.
        for previous, _ in reversed(STEPS_REVISIONS[:-1]):
            downgraded = run(f"{FLASK} db downgrade", env)
            assert downgraded.returncode == 0, downgraded.stderr
            assert versions(url) == {previous}
            assert {"signups", JOBS} <= tables(url)

        downgraded = run(f"{FLASK} db downgrade", env)

        # Then the revision that made the jobs table: it goes, nothing of the app's.
        assert downgraded.returncode == 0, downgraded.stderr
        assert JOBS not in tables(url)
        assert "signups" in tables(url)
        assert versions(url) == {APP_REVISION}


@pytest.mark.parametrize("index", range(len(STEPS_REVISIONS)), ids=lambda i: STEPS_REVISIONS[i][1])
def test_each_committed_revision_is_what_the_command_writes(tmp_path: Path, index: int) -> None:
    """Back where the chain stood before the command wrote it, the command writes it
    again (with ``--to`` where a later release's command has newer steps)."""
    migrations = copy_of_the_migrations(tmp_path)
    for revision, step in STEPS_REVISIONS[index:]:
        (migrations / "versions" / steps_file(revision, step).name).unlink()
    kept = {path.name for path in (migrations / "versions").glob("*.py")}
    revision, step = STEPS_REVISIONS[index]
    start = "nothing" if index == 0 else STEPS_REVISIONS[index - 1][1]
    newest = index == len(STEPS_REVISIONS) - 1
    command = revision_command(migrations) + ("" if newest else f" --to {step}")

    written = run(command, environment())

    assert written.returncode == 0, written.stderr
    assert f"takes programma_jobs from {start} to {step}" in written.stdout
    [path] = [p for p in (migrations / "versions").glob("*.py") if p.name not in kept]
    # The same steps, after the same revision, run the same way (the committed file is
    # also formatted by ruff, and its revision id is another).
    assert meaning(path.read_text()) == meaning(steps_file(revision, step).read_text())


def test_the_command_has_no_newer_step_to_add(tmp_path: Path) -> None:
    """A programma-sa with a new step fails this: run the command in the example again."""
    migrations = copy_of_the_migrations(tmp_path)

    refused = run(revision_command(migrations), environment())

    assert refused.returncode != 0
    assert (
        f"nothing to write: revision {HEAD_REVISION} already takes programma_jobs to "
        f"{chain_steps()[-1]}, the newest programma_sa migration step"
    ) in refused.stderr
    assert sorted(p.name for p in (migrations / "versions").glob("*.py")) == sorted(
        p.name for p in (MIGRATIONS / "versions").glob("*.py")
    )


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
    """Only the app's first revision applied: the jobs table is missing, yet the filter
    hides it (as before the revision applying programma's steps is written)."""
    with fresh_database(admin_url, prefix="programma_flask") as url:
        upgraded = run(f"{FLASK} db upgrade {APP_REVISION}", environment(DATABASE_URL=url))
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


def test_flask_db_migrate_follows_the_one_head_and_skips_the_jobs_table(
    flask_url: str, tmp_path: Path
) -> None:
    migrations = copy_of_the_migrations(tmp_path)
    revisions = migrations / "versions"
    committed = sorted(path.name for path in revisions.glob("*.py"))
    env = environment(DATABASE_URL=flask_url)
    directory = f" -d {migrations}"

    # No model change: nothing to write (and the jobs table is not "new").
    unchanged = run(documented(MIGRATE) + directory, env)
    assert unchanged.returncode == 0, unchanged.stderr
    assert "No changes in schema detected" in unchanged.stderr
    assert sorted(path.name for path in revisions.glob("*.py")) == committed

    def migrate_a_new_table(command: str) -> subprocess.CompletedProcess[str]:
        return run_argv([sys.executable, "-c", FLASK_WITH_A_NEW_TABLE, *argv(command)[1:]], env)

    # A model change: the new revision follows the one head, no --head needed.
    generated = migrate_a_new_table(documented(MIGRATE) + directory)
    assert generated.returncode == 0, generated.stderr
    [revision] = [path for path in revisions.glob("*.py") if path.name not in committed]
    source = revision.read_text()
    assert f"down_revision = '{HEAD_REVISION}'" in source
    assert "op.create_table('newsletters'" in source
    assert JOBS not in source
