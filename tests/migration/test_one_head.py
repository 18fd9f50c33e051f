"""The one-head way in a fresh ``alembic init`` project: the application's own revision
applies programma's steps, and every everyday command works as in any project.

Issue 16, traps 1-3, as a new user met them: with programma's chain as a second head,
``revision --autogenerate`` wrote into the installed package, ``upgrade head`` and
``downgrade -1`` changed meaning. Here the chain stays out of the project's
``version_locations``; ``programma-sa alembic revision`` writes one revision of the
app's own, and ``alembic`` is used exactly as its tutorial says.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, create_engine, inspect, text

from programma_sa import migrations
from programma_sa.models import standalone_jobs_table

from ..helpers import chain_steps
from .projects import Project, alembic_project, chain_files

#: The first step, and the newest: what the command writes up to.
FIRST_STEP, LAST_STEP = "programma_0001", chain_steps()[-1]


def written(result_stdout: str) -> Path:
    match = re.search(r"wrote (\S+\.py): revision", result_stdout)
    assert match, result_stdout
    return Path(match.group(1))


def test_everyday_commands_with_programmas_steps_in_the_apps_own_chain(
    each_style_project: Project,
) -> None:
    project = each_style_project
    before = chain_files()

    generated = project.programma("alembic", "revision")
    assert generated.returncode == 0, generated.stderr
    steps_file = written(generated.stdout)
    assert steps_file.parent == project.versions
    assert f"from nothing to {LAST_STEP}" in generated.stdout
    source = steps_file.read_text()
    assert f"programma_steps = migrations.Steps(start=None, end='{LAST_STEP}')" in source
    assert "migrations.upgrade_steps(op, programma_steps)" in source
    assert "migrations.downgrade_steps(op, programma_steps)" in source
    steps_revision = re.search(r"^revision: str = '(\w+)'", source, re.M)
    assert steps_revision
    steps_id = steps_revision.group(1)

    # upgrade head: one head, the jobs table exactly as the model describes it.
    project.ok("upgrade", "head")
    assert "programma_jobs" in project.tables()
    assert project.jobs_table_differences() == []

    # revision --autogenerate: the app's own table only, in the app's directory, after
    # the app's head — without any include_object in env.py, since the table the
    # steps made is the model's.
    output = project.ok("revision", "--autogenerate", "-m", "customers")
    assert "Detected added table 'customers'" in output
    assert "programma_jobs" not in output
    [customers] = [name for name in project.revision_files() if name.endswith("_customers.py")]
    customers_source = project.revision_files()[customers]
    assert f"down_revision: Union[str, Sequence[str], None] = '{steps_id}'" in customers_source
    assert "programma_jobs" not in customers_source
    project.ok("upgrade", "head")
    assert len(project.versions_in_database()) == 1
    heads = project.ok("heads")
    assert heads.count("(head)") == 1

    # Nothing left to detect: the jobs table is no diff either.
    project.ok("check")

    # history: both revisions, in the app's own chain.
    history = project.ok("history")
    assert f"<base> -> {steps_id}, programma_jobs to {LAST_STEP}" in history
    assert f"{steps_id} -> " in history and "customers" in history

    # downgrade -1: the app's last revision, not the jobs table.
    project.ok("downgrade", "-1")
    tables = project.tables()
    assert "customers" not in tables and "programma_jobs" in tables
    assert project.versions_in_database() == {steps_id}
    project.ok("downgrade", "-1")
    assert "programma_jobs" not in project.tables()
    project.ok("upgrade", "head")
    assert {"customers", "programma_jobs"} <= project.tables()
    assert project.jobs_table_differences() == []

    assert chain_files() == before  # nothing written into the installed package


def test_offline_sql_holds_the_steps(project: Project) -> None:
    assert project.programma("alembic", "revision").returncode == 0
    script = project.ok("upgrade", "head", "--sql")
    assert "CREATE TABLE programma_jobs (" in script
    assert "CREATE INDEX IF NOT EXISTS ix_programma_jobs_processing" in script
    assert "ALTER TABLE programma_jobs SET (fillfactor = 80" in script
    assert project.tables() == set()  # --sql writes nothing to the database


def test_a_later_step_is_one_more_revision_of_the_app(project: Project) -> None:
    """A release with a new step: the command writes the next revision from where the
    app's chain left the table — here, the app first stopped at the first step."""
    first = project.programma("alembic", "revision", "--to", FIRST_STEP)
    assert first.returncode == 0, first.stderr
    project.ok("upgrade", "head")
    assert "ix_programma_jobs_processing" not in _index_names(project)

    second = project.programma("alembic", "revision")
    assert second.returncode == 0, second.stderr
    assert f"from {FIRST_STEP} to {LAST_STEP}" in second.stdout
    source = written(second.stdout).read_text()
    assert f"migrations.Steps(start='{FIRST_STEP}', end='{LAST_STEP}')" in source

    project.ok("upgrade", "head")
    assert project.jobs_table_differences() == []
    project.ok("downgrade", "-1")
    assert "ix_programma_jobs_processing" not in _index_names(project)
    assert "programma_jobs" in project.tables()

    # Each step is applied by one revision only: nothing is left to write.
    project.ok("upgrade", "head")
    again = project.programma("alembic", "revision")
    assert again.returncode == 1
    assert again.stderr.startswith("programma-sa: error: nothing to write: revision ")
    assert f"already takes programma_jobs to {LAST_STEP}" in again.stderr


def test_a_custom_table_and_schema(project: Project) -> None:
    generated = project.programma(
        "alembic", "revision", "--table", "audit_jobs", "--schema", "queue"
    )
    assert generated.returncode == 0, generated.stderr
    source = written(generated.stdout).read_text()
    assert (
        f"migrations.Steps(start=None, end='{LAST_STEP}', table_name='audit_jobs', "
        "schema='queue')" in source
    )
    project.ok("upgrade", "head")
    engine = project.engine()
    try:
        tables = sorted(inspect(engine).get_table_names(schema="queue"))
        assert tables == ["audit_jobs", "audit_jobs_paused"]
    finally:
        engine.dispose()
    # Steps of another table are not this one's: the default table starts from nothing.
    default = project.programma("alembic", "revision")
    assert default.returncode == 0, default.stderr
    assert f"takes programma_jobs from nothing to {LAST_STEP}" in default.stdout


def test_the_command_refuses_a_project_that_uses_the_branch(project: Project) -> None:
    project.use_branch()  # in env.py
    refused = project.programma("alembic", "revision")
    assert refused.returncode == 1
    assert "this project applies programma's chain as a branch (programma: " in refused.stderr
    assert "env.py calls include_branch" in refused.stderr
    # The ini line of earlier releases (with a separator that works).
    project.env_py.write_text(project.env_py.read_text().replace("include_branch(", "print("))
    project.set_ini("path_separator", "space")
    project.set_ini(
        "version_locations", "%(here)s/alembic/versions programma_sa:migrations/versions"
    )
    refused = project.programma("alembic", "revision")
    assert refused.returncode == 1
    assert "(programma: revision programma_000" in refused.stderr
    assert project.revision_files() == {}


def test_the_command_needs_a_head_when_the_app_has_two(project: Project) -> None:
    project.ok("revision", "-m", "one", "--rev-id", "one")
    project.ok("revision", "-m", "two", "--rev-id", "two", "--head", "base")
    refused = project.programma("alembic", "revision")
    assert refused.returncode == 1
    assert "the chain has several heads (" in refused.stderr
    assert "say which one the revision follows with --head" in refused.stderr
    chosen = project.programma("alembic", "revision", "--head", "two")
    assert chosen.returncode == 0, chosen.stderr
    assert "down_revision: Union[str, Sequence[str], None] = 'two'" in (
        written(chosen.stdout).read_text()
    )


def _index_names(project: Project) -> set[str]:
    engine = project.engine()
    try:
        return {str(index["name"]) for index in inspect(engine).get_indexes("programma_jobs")}
    finally:
        engine.dispose()


def test_the_apps_sqlite_development_database_is_migrated_too(tmp_path: Path) -> None:
    """Trap 4's second half: an app whose development database is SQLite runs the same
    chain there — portable types, no storage parameters — and it matches the model."""
    project = alembic_project(tmp_path / "app", f"sqlite:///{tmp_path / 'dev.db'}", "new")
    assert project.programma("alembic", "revision").returncode == 0
    project.ok("upgrade", "head")
    assert "programma_jobs" in project.tables()
    assert project.jobs_table_differences() == []
    # Alembic compares no index predicate: the indexes are the model's, WHERE included.
    assert _sqlite_schema(project.engine(), "index") == _sqlite_schema(
        _the_model_on_sqlite(), "index"
    )
    project.ok("revision", "--autogenerate", "-m", "customers")
    project.ok("upgrade", "head")
    project.ok("check")
    project.ok("downgrade", "base")
    assert project.tables() == {"alembic_version"}


def test_switching_from_programma_sa_migrate_to_one_head(tmp_path: Path, app_url: str) -> None:
    """docs/alembic.md, "Switching ways": a table made by `programma-sa migrate`."""
    project = alembic_project(tmp_path / "app", app_url, "new")
    migrations.upgrade(app_url)
    generated = project.programma("alembic", "revision")
    assert generated.returncode == 0, generated.stderr
    steps_id = written(generated.stdout).name.split("_")[0]
    project.ok("stamp", steps_id)
    project.ok("upgrade", "head")
    assert project.versions_in_database() == {steps_id}
    assert project.jobs_table_differences() == []


def test_a_later_step_on_the_sqlite_development_database(tmp_path: Path) -> None:
    """The newest step on SQLite, as one more revision: up to the model, down to exactly
    the table the step before it left."""
    *_, previous_step, _ = chain_steps()
    project = alembic_project(tmp_path / "app", f"sqlite:///{tmp_path / 'dev.db'}", "new")
    assert project.programma("alembic", "revision", "--to", previous_step).returncode == 0
    project.ok("upgrade", "head")
    before = _sqlite_schema(project.engine(), "table", "index")

    later = project.programma("alembic", "revision")
    assert later.returncode == 0, later.stderr
    assert f"from {previous_step} to {LAST_STEP}" in later.stdout
    # Asking for CREATE INDEX CONCURRENTLY (PostgreSQL's) changes nothing on SQLite.
    project.set_ini("programma_concurrent_indexes", "true")
    project.ok("upgrade", "head")
    assert project.jobs_table_differences() == []
    assert _sqlite_schema(project.engine(), "index") == _sqlite_schema(
        _the_model_on_sqlite(), "index"
    )

    project.ok("downgrade", "-1")
    assert _sqlite_schema(project.engine(), "table", "index") == before


_SQLITE_SCHEMA = text(
    "SELECT type, name, sql FROM sqlite_master "
    "WHERE tbl_name = 'programma_jobs' AND type IN :types AND sql IS NOT NULL ORDER BY name"
).bindparams(bindparam("types", expanding=True))


def _sqlite_schema(engine: Engine, *types: str) -> list[tuple[Any, ...]]:
    """The jobs table's CREATE statements as SQLite keeps them (``types``: table, index)."""
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(_SQLITE_SCHEMA, {"types": types})]
    finally:
        engine.dispose()


def _the_model_on_sqlite() -> Engine:
    """A SQLite database with the table the model's ``create_all`` makes there."""
    engine = create_engine("sqlite://")
    standalone_jobs_table().metadata.create_all(engine)
    return engine
