"""A Flask-SQLAlchemy + Flask-Migrate app, made with ``flask db init``: its test suite on
SQLite, its runtime on PostgreSQL with the one-head migration, and the ``flask db``
commands with the ``alembic.ini`` of older Flask-Migrate releases.

Issue 16, traps 3 and 4: ``flask db upgrade`` / ``migrate`` exited 1 with no message
at all (an ``alembic.ini`` without a ``flask_migrate`` logger: ``env.py``'s
``fileConfig`` disables the logger Flask-Migrate reports errors with);
``flask db downgrade`` moved programma's branch; ``create_all`` on ``sqlite://``
failed once the jobs model joined ``db.Model``.
"""

from __future__ import annotations

import importlib
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, select

from programma_sa import migrations
from programma_sa.testing import fresh_database

from ..backends import MARIADB_ADMIN_URL
from ..helpers import chain_steps
from .projects import CHAIN, Project, chain_files, command_path, run

#: The newest step: what the command writes up to.
LAST_STEP = chain_steps()[-1]

APP = """
import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from programma_sa import JobMixin, JobQueue


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Job(JobMixin, db.Model):
    pass


class Signup(db.Model):
    __tablename__ = "signups"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)


queue = JobQueue(Job)


def create_app(database_url=None):
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url or os.environ["DATABASE_URL"]
    db.init_app(app)
    Migrate(app, db)
    return app
"""

NEWSLETTERS = """

class Newsletter(db.Model):
    __tablename__ = "newsletters"
    id: Mapped[int] = mapped_column(primary_key=True)
"""

#: The ``[loggers]`` keys of ``flask db init``'s alembic.ini before Flask-Migrate 2.6.
OLD_LOGGER_KEYS = "keys = root,sqlalchemy,alembic"


class FlaskProject:
    """A directory holding ``signups_app.py`` and the ``migrations/`` of ``flask db init``."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        root.mkdir(parents=True)
        (root / "signups_app.py").write_text(APP)
        self.ok("init")

    @property
    def migrations(self) -> Path:
        return self.root / "migrations"

    @property
    def versions(self) -> Path:
        return self.migrations / "versions"

    def flask(self, *args: str) -> Any:
        return run(
            [command_path("flask"), "--app", "signups_app", "db", *args],
            self.root,
            DATABASE_URL=self.url,
        )

    def ok(self, *args: str) -> str:
        result = self.flask(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return str(result.stdout + result.stderr)

    def programma(self, *args: str) -> Any:
        return run([command_path("programma-sa"), *args], self.root)

    def revision_files(self) -> dict[str, str]:
        return {path.name: path.read_text() for path in sorted(self.versions.glob("*.py"))}

    def database(self) -> Project:
        """The database side (tables, versions) of an Alembic project."""
        return Project(self.root, self.url)

    def pass_the_filter(self) -> None:
        """``Migrate(app, db, include_object=...)``: what docs/mariadb.md asks for."""
        app = self.root / "signups_app.py"
        source = app.read_text()
        assert "    Migrate(app, db)\n" in source
        app.write_text(
            "from programma_sa.migrations import include_object\n"
            + source.replace(
                "    Migrate(app, db)\n", "    Migrate(app, db, include_object=include_object)\n"
            )
        )

    def drop_the_flask_migrate_logger(self) -> None:
        """The alembic.ini of an app made before Flask-Migrate had that logger."""
        ini = self.migrations / "alembic.ini"
        source = ini.read_text()
        assert "keys = root,sqlalchemy,alembic,flask_migrate" in source
        source = source.replace("keys = root,sqlalchemy,alembic,flask_migrate", OLD_LOGGER_KEYS)
        source = re.sub(r"\[logger_flask_migrate\][^\[]*", "", source)
        ini.write_text(source)

    def keep_existing_loggers(self) -> None:
        """The documented fix in env.py: fileConfig no longer disables Flask-Migrate's logger."""
        env = self.migrations / "env.py"
        source = env.read_text()
        assert "fileConfig(config.config_file_name)\n" in source
        env.write_text(
            source.replace(
                "fileConfig(config.config_file_name)\n",
                "fileConfig(config.config_file_name, disable_existing_loggers=False)\n",
            )
        )


@pytest.fixture
def app_module(tmp_path: Path) -> Iterator[ModuleType]:
    """The app imported in this process, as its own test suite imports it."""
    (tmp_path / "signups_app.py").write_text(APP)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("signups_app")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("signups_app", None)


def test_the_apps_test_suite_runs_on_sqlite(app_module: Any) -> None:
    app = app_module.create_app("sqlite://")
    db, job_model, signup_model = app_module.db, app_module.Job, app_module.Signup
    with app.app_context():
        db.create_all()  # the trap: "can't render element of type UUID"
        job_id = uuid.uuid4()
        db.session.add(signup_model(email="ada@example.com"))
        db.session.add(job_model(id=job_id, topic="send-welcome", data={"email": "ada"}))
        db.session.commit()
        assert db.session.scalar(select(job_model.data).where(job_model.id == job_id)) == {
            "email": "ada"
        }
        # The queue runs there too (docs/sqlite.md), in the app's own transaction.
        queued = app_module.queue.add_job(db.session, "send-welcome", {"email": "bob"})
        db.session.rollback()
        assert db.session.scalar(select(signup_model.email)) == "ada@example.com"
        assert app_module.queue.get_job(db.session, queued) is None


def test_the_one_head_way_with_flask_db(tmp_path: Path, app_url: str) -> None:
    project = FlaskProject(tmp_path / "app", app_url)
    before = chain_files()

    generated = project.programma("alembic", "revision", "--directory", "migrations")
    assert generated.returncode == 0, generated.stderr
    [steps_file] = project.revision_files()
    assert steps_file.endswith(f"_programma_jobs_to_{LAST_STEP}.py")

    project.ok("upgrade")  # to head: the one head
    database = project.database()
    assert "programma_jobs" in database.tables()
    assert database.jobs_table_differences() == []

    migrated = project.ok("migrate", "-m", "signups")
    assert "Detected added table 'signups'" in migrated
    assert "programma_jobs" not in migrated
    project.ok("upgrade")
    assert {"signups", "programma_jobs"} <= database.tables()

    # Nothing changed: Flask-Migrate's env.py writes no revision, the jobs table included.
    unchanged = project.ok("migrate", "-m", "nothing")
    assert "No changes in schema detected" in unchanged
    assert len(project.revision_files()) == 2

    history = project.ok("history")
    assert f"programma_jobs to {LAST_STEP}" in history and "signups" in history

    project.ok("downgrade")  # -1: the app's last revision
    tables = database.tables()
    assert "signups" not in tables and "programma_jobs" in tables
    assert chain_files() == before


@pytest.mark.databases("mariadb", reason="MariaDB's generated columns (docs/mariadb.md)")
def test_the_one_head_way_with_flask_db_on_mariadb(tmp_path: Path) -> None:
    """Without the filter, ``flask db migrate`` wrote a revision dropping the jobs
    table's generated columns there; with it (docs/mariadb.md), nothing of the table."""
    with fresh_database(MARIADB_ADMIN_URL, prefix="programma_test_app") as url:
        project = FlaskProject(tmp_path / "app", url)
        project.pass_the_filter()
        generated = project.programma("alembic", "revision", "--directory", "migrations")
        assert generated.returncode == 0, generated.stderr
        project.ok("upgrade")
        migrated = project.ok("migrate", "-m", "signups")
        assert "Detected added table 'signups'" in migrated
        assert "programma_jobs" not in migrated
        project.ok("upgrade")
        unchanged = project.ok("migrate", "-m", "nothing")
        assert "No changes in schema detected" in unchanged
        engine = create_engine(url)
        try:
            columns = {column["name"] for column in inspect(engine).get_columns("programma_jobs")}
        finally:
            engine.dispose()
        assert {migrations.UNIQUE_HOLDER_COLUMN, migrations.CLAIM_TOPIC_COLUMN} <= columns


def test_flask_db_with_an_old_ini_exited_1_without_a_message(tmp_path: Path, app_url: str) -> None:
    project = FlaskProject(tmp_path / "app", app_url)
    project.drop_the_flask_migrate_logger()
    project.ok("upgrade")
    (project.root / "signups_app.py").write_text(APP + NEWSLETTERS)
    project.ok("migrate", "-m", "first")  # the database is now behind the new revision

    silent = project.flask("migrate", "-m", "second")
    assert silent.returncode == 1
    assert "Target database is not up to date" not in silent.stderr  # the trap: no word

    project.keep_existing_loggers()
    said = project.flask("migrate", "-m", "second")
    assert said.returncode == 1
    assert "ERROR [flask_migrate] Error: Target database is not up to date." in said.stderr


def test_flask_db_downgrade_in_the_branch_way(tmp_path: Path, app_url: str) -> None:
    """The branch way with the env.py helpers, in Flask-Migrate's env.py."""
    project = FlaskProject(tmp_path / "app", app_url)
    env = project.migrations / "env.py"
    source = env.read_text()
    source = source.replace(
        "config = context.config\n",
        "config = context.config\n"
        "from programma_sa import migrations\n"
        "migrations.include_branch(context)\n",
    )
    source = source.replace(
        "    def process_revision_directives(context, revision, directives):\n",
        "    def process_revision_directives(context, revision, directives):\n"
        "        migrations.process_revision_directives(context, revision, directives)\n",
    )
    source = source.replace(
        "    conf_args = current_app.extensions['migrate'].configure_args\n",
        "    conf_args = current_app.extensions['migrate'].configure_args\n"
        "    conf_args.setdefault('include_object', migrations.include_object)\n",
    )
    env.write_text(source)
    before = chain_files()

    project.ok("upgrade", "heads")
    project.ok("migrate", "-m", "signups")  # no --head: it follows the app's chain
    [signups] = project.revision_files().values()
    assert "down_revision = None" in signups and "branch_labels = ('app',)" in signups
    project.ok("upgrade", "heads")
    database = project.database()
    assert {"signups", "programma_jobs"} <= database.tables()

    history = project.ok("history")
    assert "signups" in history

    refused = project.flask("downgrade")  # -1
    assert refused.returncode == 1
    assert "downgrade -1 is ambiguous beside programma's branch" in refused.stderr
    project.ok("downgrade", "app@-1")
    tables = database.tables()
    assert "signups" not in tables and "programma_jobs" in tables
    assert chain_files() == before
    assert not any(CHAIN.glob("*signups*"))
