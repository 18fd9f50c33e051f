"""Standalone migrations (``migrations.upgrade`` / ``programma-sa migrate``) of several
jobs tables in one database: each (schema, table) keeps its own version table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Engine, MetaData, String, Table, create_engine, inspect, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.base import PGInspector
from sqlalchemy.orm import Session

from programma_sa import JobQueue, migrations
from programma_sa._validation import MAX_TABLE_NAME_LENGTH
from programma_sa.cli import main
from programma_sa.exceptions import ConfigurationError
from programma_sa.models import standalone_jobs_table
from programma_sa.testing import fresh_database

Location = tuple[str, str | None]  # (table name, schema)

DEFAULT: Location = ("programma_jobs", None)
LEGACY = migrations.STANDALONE_VERSION_TABLE
SCRIPT = ScriptDirectory.from_config(migrations.standalone_config())
HEAD = SCRIPT.get_revision(f"{migrations.BRANCH_LABEL}@head").revision
FIRST = "programma_0001"
# The longest table name the chain itself can create: revision 0002 names an index
# ix_<table>_processing, which must fit PostgreSQL's 63 bytes.
LONGEST_TABLE_NAME = MAX_TABLE_NAME_LENGTH


@pytest.fixture
def url(admin_url: str) -> Iterator[str]:
    with fresh_database(admin_url, prefix="programma_standalone") as url:
        yield url


@pytest.fixture
def db(url: str) -> Iterator[Engine]:
    engine = create_engine(url)
    yield engine
    engine.dispose()


def _upgrade(url: str, location: Location, revision: str | None = None) -> None:
    name, schema = location
    if revision is None:
        migrations.upgrade(url, table_name=name, schema=schema)
    else:
        migrations.upgrade(url, revision=revision, table_name=name, schema=schema)


def _downgrade(url: str, location: Location) -> None:
    migrations.downgrade(url, table_name=location[0], schema=location[1])


def _versions(db: Engine, name: str, schema: str | None) -> list[str] | None:
    """The revisions a version table records, or ``None`` if it does not exist."""
    if not inspect(db).has_table(name, schema=schema):
        return None
    version = Table(name, MetaData(), Column("version_num", String), schema=schema)
    with db.connect() as connection:
        return list(connection.scalars(select(version.c.version_num)))


def _oid(db: Engine, location: Location) -> int | None:
    name, schema = location
    inspector = inspect(db)
    assert isinstance(inspector, PGInspector)
    if not inspector.has_table(name, schema=schema):
        return None
    return inspector.get_table_oid(name, schema=schema)


def _differences(db: Engine, location: Location) -> list[Any]:
    """How the table (and its companion of paused topics) differs from the model with
    that name and schema (nothing else compared)."""
    name, schema = location

    def only_this_table(object_name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "schema":
            return object_name == schema
        return type_ != "table" or object_name in (name, f"{name}_paused")

    with db.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_schemas": schema is not None,
                "include_name": only_this_table,
            },
        )
        return list(compare_metadata(context, standalone_jobs_table(name, schema).metadata))


def _assert_at_head(db: Engine, location: Location) -> None:
    """The table matches the model, its version table says head, and it takes a job."""
    assert _oid(db, location) is not None, location
    assert _versions(db, *migrations.standalone_version_table(*location)) == [HEAD]
    assert _differences(db, location) == []
    queue = JobQueue(standalone_jobs_table(*location))
    with Session(db) as session, session.begin():
        job_id = queue.add_job(session, "check", {"table": location[0]})
    with Session(db) as session:
        job = queue.get_job(session, job_id)
        assert job is not None and job.topic == "check"


# -- version table names -----------------------------------------------------------


def test_the_default_table_keeps_the_version_table_of_older_releases() -> None:
    assert migrations.standalone_version_table() == ("programma_alembic_version", None)
    assert migrations.standalone_version_table("programma_jobs", None) == (LEGACY, None)


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (("audit_jobs", None), ("programma_alembic_version_audit_jobs", None)),
        (("audit_jobs", "queue"), ("programma_alembic_version_audit_jobs", "queue")),
        # The default name in another schema: the same name, beside that table.
        (("programma_jobs", "queue"), ("programma_alembic_version", "queue")),
        # Not the default's version table, although "programma" + "_alembic_version"
        # would spell it.
        (("programma", None), ("programma_alembic_version_programma", None)),
        (("Jobs$2", "Q"), ("programma_alembic_version_Jobs$2", "Q")),
    ],
)
def test_version_table_names(location: Location, expected: Location) -> None:
    assert migrations.standalone_version_table(*location) == expected


def test_long_table_names_get_a_shortened_version_table_name() -> None:
    at_limit = "t" * 32  # "programma_alembic_version_" + 32 = 58 characters: kept whole
    assert migrations.standalone_version_table(at_limit)[0] == f"{LEGACY}_{at_limit}"
    longest = LONGEST_TABLE_NAME
    names = [
        "t" * 33,
        "t" * longest,
        "t" * (longest - 1) + "u",
        "T" * longest,
        "t" * 40 + "_a",
        "t" * 40 + "_b",
    ]
    shortened = [migrations.standalone_version_table(name)[0] for name in names]
    for name, version in zip(names, shortened, strict=True):
        # 59 characters: Alembic's primary key "<version table>_pkc" fits in 63 bytes.
        assert len(version.encode()) == 59
        assert re.fullmatch(rf"{LEGACY}_{name[:20]}_[0-9a-f]{{12}}", version), version
        assert migrations.standalone_version_table(name, "queue") == (version, "queue")
    assert len(set(shortened)) == len(names)  # distinct, even with a common prefix
    assert migrations.standalone_version_table("t" * longest)[0] == shortened[1]  # deterministic


@pytest.mark.parametrize(
    ("location", "message"),
    [
        (("bad name", None), "table_name must be a PostgreSQL identifier"),
        (("t" * 64, None), "table_name must be a PostgreSQL identifier"),
        (("t" * 50, None), "table_name must be at most 49 characters"),
        (("audit_jobs", "x;drop"), "schema must be a PostgreSQL identifier"),
        (("audit_jobs", ""), "schema must be a PostgreSQL identifier"),
    ],
)
def test_version_table_names_refuse_what_is_not_an_identifier(
    location: Location, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        migrations.standalone_version_table(*location)


# -- several tables in one database ------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(DEFAULT, ("audit_jobs", None), id="default+custom"),
        pytest.param(DEFAULT, ("programma_jobs", "queue"), id="default+default-name-in-schema"),
        pytest.param(("audit_jobs", "queue"), ("mail_jobs", "mail"), id="custom+custom-schema"),
        pytest.param(("audit_jobs", None), ("audit_jobs", "queue"), id="same-name-two-schemas"),
    ],
)
def test_two_tables_in_one_database(
    url: str, db: Engine, first: Location, second: Location
) -> None:
    _upgrade(url, first)
    _assert_at_head(db, first)
    _upgrade(url, second)  # the bug: this did nothing once the first was at head
    _assert_at_head(db, second)
    _assert_at_head(db, first)

    oids = (_oid(db, first), _oid(db, second))
    for location in (first, second):  # idempotent
        _upgrade(url, location)
    assert (_oid(db, first), _oid(db, second)) == oids
    _assert_at_head(db, first)
    _assert_at_head(db, second)

    _downgrade(url, first)
    assert _oid(db, first) is None
    assert _versions(db, *migrations.standalone_version_table(*first)) == []
    _assert_at_head(db, second)
    assert _oid(db, second) == oids[1]

    _upgrade(url, first)
    _downgrade(url, second)
    assert _oid(db, second) is None
    assert _versions(db, *migrations.standalone_version_table(*second)) == []
    _assert_at_head(db, first)


def test_the_default_table_named_with_its_schema_is_the_same_table(url: str, db: Engine) -> None:
    """public.programma_jobs and programma_jobs (search path "$user", public) are one
    table, so they share one version table: the second run changes nothing."""
    _upgrade(url, DEFAULT)
    oid = _oid(db, DEFAULT)
    _upgrade(url, ("programma_jobs", "public"))
    assert _oid(db, DEFAULT) == oid
    assert inspect(db).get_table_names() == sorted(
        ["programma_jobs", "programma_jobs_paused", LEGACY]
    )
    assert migrations.standalone_version_table("programma_jobs", "public") == (LEGACY, "public")
    assert _versions(db, LEGACY, "public") == [HEAD]
    _assert_at_head(db, DEFAULT)


def test_longest_table_names_with_shortened_version_tables(url: str, db: Engine) -> None:
    # Two names that differ only past the part kept in the version table's name.
    first = ("a" * (LONGEST_TABLE_NAME - 1) + "1", "queue")
    second = ("a" * (LONGEST_TABLE_NAME - 1) + "2", "queue")
    for location in (first, second, first):
        _upgrade(url, location)
    versions = {migrations.standalone_version_table(*location) for location in (first, second)}
    assert len(versions) == 2
    assert {len(name) for name, _ in versions} == {59}
    _assert_at_head(db, first)
    _assert_at_head(db, second)
    _downgrade(url, first)
    assert _oid(db, first) is None
    _assert_at_head(db, second)


def test_upgrade_to_a_revision_and_on_moves_one_table_only(url: str, db: Engine) -> None:
    custom: Location = ("audit_jobs", "queue")
    _upgrade(url, DEFAULT, revision=FIRST)
    _upgrade(url, custom, revision=FIRST)
    _upgrade(url, custom)
    assert _versions(db, LEGACY, None) == [FIRST]
    _assert_at_head(db, custom)
    migrations.downgrade(url, revision=FIRST, table_name="audit_jobs", schema="queue")
    assert _versions(db, *migrations.standalone_version_table(*custom)) == [FIRST]
    assert _versions(db, LEGACY, None) == [FIRST]


def test_cli_migrate_names_the_table_and_its_version_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str, db: Engine
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["migrate", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "table programma_jobs on " in out
    assert "(version table programma_alembic_version)" in out
    for _ in range(2):  # a second table, then idempotent
        assert (
            main(["migrate", "--table", "audit_jobs", "--schema", "queue", "--database-url", url])
            == 0
        )
        out = capsys.readouterr().out
        assert "table queue.audit_jobs on " in out
        assert "(version table queue.programma_alembic_version_audit_jobs)" in out
    _assert_at_head(db, DEFAULT)
    _assert_at_head(db, ("audit_jobs", "queue"))


# -- a database migrated by a release with a single version table ------------------


def _migrate_like_an_older_release(url: str, db: Engine, location: Location, revision: str) -> None:
    """The state an older release left: the table migrated, its revision recorded in
    ``programma_alembic_version`` on the search path (whatever the table's schema)."""
    _upgrade(url, location, revision=revision)
    version_name, version_schema = migrations.standalone_version_table(*location)
    if (version_name, version_schema) == (LEGACY, None):
        return
    with db.begin() as connection:
        old = MigrationContext.configure(connection, opts={"version_table": LEGACY})
        old.stamp(SCRIPT, revision)
        Table(version_name, MetaData(), schema=version_schema).drop(connection)
    assert _versions(db, LEGACY, None) == [revision]


@pytest.mark.parametrize(
    "location",
    [("audit_jobs", "queue"), ("audit_jobs", None), ("programma_jobs", "queue")],
    ids=str,
)
@pytest.mark.parametrize("old_revision", [FIRST, HEAD])
def test_a_table_migrated_by_an_older_release_keeps_working(
    url: str, db: Engine, caplog: pytest.LogCaptureFixture, location: Location, old_revision: str
) -> None:
    _migrate_like_an_older_release(url, db, location, old_revision)
    oid = _oid(db, location)

    _upgrade(url, location)  # takes the revision over, then upgrades from it
    assert _oid(db, location) == oid  # the same table, not re-created
    _assert_at_head(db, location)
    assert _versions(db, LEGACY, None) == []
    assert f"took over revision {old_revision}" in caplog.text

    _upgrade(url, DEFAULT)  # programma_alembic_version is the default table's again
    _assert_at_head(db, DEFAULT)
    _assert_at_head(db, location)
    assert _versions(db, LEGACY, None) == [HEAD]


def test_migrating_programma_jobs_first_says_to_migrate_the_older_table_first(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    db: Engine,
) -> None:
    """The old revision in programma_alembic_version is another table's: it must not
    pass for programma_jobs's (which would then never be created)."""
    custom: Location = ("audit_jobs", "queue")
    _migrate_like_an_older_release(url, db, custom, HEAD)
    message = (
        f"programma_alembic_version records revision {HEAD} but table programma_jobs does "
        "not exist: a programma-sa release with one version table for all jobs tables "
        "recorded another jobs table's revision there. Migrate that table first "
        "(programma-sa migrate --table NAME [--schema SCHEMA]"
    )
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        _upgrade(url, DEFAULT)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        _downgrade(url, DEFAULT)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["migrate", "--database-url", url]) == 1
    assert f"programma-sa: error: {message}" in capsys.readouterr().err
    assert _oid(db, DEFAULT) is None  # nothing written
    assert _versions(db, LEGACY, None) == [HEAD]

    _upgrade(url, custom)  # as the message says: the older table first
    _upgrade(url, DEFAULT)
    _assert_at_head(db, custom)
    _assert_at_head(db, DEFAULT)


def test_downgrading_a_table_migrated_by_an_older_release(url: str, db: Engine) -> None:
    custom: Location = ("audit_jobs", "queue")
    _migrate_like_an_older_release(url, db, custom, HEAD)
    _downgrade(url, custom)
    assert _oid(db, custom) is None
    assert _versions(db, LEGACY, None) == []
    assert _versions(db, *migrations.standalone_version_table(*custom)) == []


def test_the_default_tables_revision_is_never_taken_over(url: str, db: Engine) -> None:
    """An older release migrated programma_jobs; audit_jobs was made some other way
    (create_all): the old revision is programma_jobs's and stays there."""
    _upgrade(url, DEFAULT)
    custom = standalone_jobs_table("audit_jobs")
    custom.metadata.create_all(db)
    with pytest.raises(sa_exc.ProgrammingError, match='relation "audit_jobs" already exists'):
        _upgrade(url, ("audit_jobs", None))
    assert _versions(db, LEGACY, None) == [HEAD]
    assert _versions(db, migrations.standalone_version_table("audit_jobs")[0], None) is None
    _assert_at_head(db, DEFAULT)
