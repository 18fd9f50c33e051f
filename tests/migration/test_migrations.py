"""The shipped chain against the model, and inside an application's own Alembic setup."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase

from programma_sa import JobMixin, migrations
from programma_sa.testing import fresh_database

from ..backends import MARIADB_ADMIN_URL


class _DefaultBase(DeclarativeBase):
    pass


class DefaultJob(JobMixin, _DefaultBase):
    pass


class _CustomBase(DeclarativeBase):
    pass


class CustomJob(JobMixin, _CustomBase):
    __tablename__ = "audit_jobs"
    programma_schema = "queue"


@pytest.fixture(params=["postgresql", "sqlite", "mariadb"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a fresh PostgreSQL or MariaDB one, or a SQLite file (the
    chain runs on each, and autogenerate finds the model on each)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if request.param == "mariadb":
        with fresh_database(MARIADB_ADMIN_URL, prefix="programma_test_migration") as url:
            yield url
        return
    admin_url: str = request.getfixturevalue("admin_url")
    with fresh_database(admin_url, prefix="programma_migration") as url:
        yield url


def _differences(url: str, metadata: MetaData) -> list[Any]:
    def only_model_tables(name: str | None, type_: str, parent_names: Any) -> bool:
        # Not the version tables: programma_alembic_version and those of other tables.
        if type_ == "table":
            return not str(name).startswith(migrations.STANDALONE_VERSION_TABLE)
        # MariaDB's unique-key holder, which the model does not declare (checked on
        # its own below: migrations.UNIQUE_HOLDER_COLUMN).
        return not (type_ == "column" and name in _GENERATED)

    def not_the_holders_index(obj: Any, name: str | None, type_: str, *_: Any) -> bool:
        # Those indexes are over the generated columns on MariaDB, not in the model.
        generated = str(name).startswith("uq_") or str(name).endswith("_claim")
        return not (type_ == "index" and generated and _on_mariadb(url))

    return _compare(
        url,
        metadata,
        compare_server_default=_compare_default if _on_mariadb(url) else True,
        # A MariaDB schema is a database: the server's others are not ours.
        include_schemas=not _on_mariadb(url),
        include_name=only_model_tables,
        include_object=not_the_holders_index,
    )


def _compare(url: str, metadata: MetaData, **opts: Any) -> list[Any]:
    """What autogenerate finds between the database at ``url`` and ``metadata``
    (types compared), configured with ``opts``."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True, **opts})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


#: MariaDB's generated columns, which the model does not declare.
_GENERATED = (migrations.UNIQUE_HOLDER_COLUMN, migrations.CLAIM_TOPIC_COLUMN)


def _compare_default(
    context: Any, inspected: Any, column: Any, reflected: Any, *_: Any
) -> bool | None:
    """Defaults compared as usual, but for the id's on MariaDB: SQLAlchemy reflects
    no ``DEFAULT replace(uuid(),'-','')`` (an expression holding quotes) — read as
    none — which the chain creates all the same (the first test of the module)."""
    return False if column.name == "id" and reflected is None else None


def _on_mariadb(url: str) -> bool:
    return make_url(url).get_backend_name() in ("mariadb", "mysql")


def test_autogenerate_with_the_shipped_filter_writes_nothing_for_the_jobs_table(
    empty_url: str,
) -> None:
    """What an application's env.py with ``include_object`` (docs/alembic.md) sees.
    On MariaDB the filter is what keeps autogenerate from dropping the two generated
    columns the model does not declare (docs/mariadb.md, "Autogenerate")."""
    migrations.upgrade(empty_url)
    differences = _compare(
        empty_url,
        _DefaultBase.metadata,
        include_object=migrations.include_object,
        include_name=lambda name, type_, parents: (
            type_ != "table" or not str(name).startswith(migrations.STANDALONE_VERSION_TABLE)
        ),
    )
    assert differences == []


def test_without_the_filter_autogenerate_would_drop_mariadbs_generated_columns(
    empty_url: str,
) -> None:
    """Why docs/mariadb.md makes the filter a must there (not only a recommendation)."""
    if not _on_mariadb(empty_url):
        pytest.skip("the generated columns exist on MariaDB only")
    migrations.upgrade(empty_url)
    differences = _compare(empty_url, _DefaultBase.metadata)
    removed = {diff[3].name for diff in differences if diff[0] == "remove_column"}
    assert removed == set(_GENERATED)


def test_default_table_matches_the_model(empty_url: str) -> None:
    migrations.upgrade(empty_url)
    assert _differences(empty_url, _DefaultBase.metadata) == []


def test_custom_table_name_and_schema_match_the_model(empty_url: str) -> None:
    if empty_url.startswith("sqlite"):
        pytest.skip("SQLite has no schemas")
    if _on_mariadb(empty_url):
        pytest.skip("a MariaDB schema is a database: the test's account may create no other")
    migrations.upgrade(empty_url, table_name="audit_jobs", schema="queue")
    assert _differences(empty_url, _CustomBase.metadata) == []
    tables = inspect(create_engine(empty_url)).get_table_names(schema="queue")
    # The table, its paused topics (programma_0005) and its version table, in its schema.
    assert sorted(tables) == [
        "audit_jobs",
        "audit_jobs_paused",
        "programma_alembic_version_audit_jobs",
    ]


def test_the_model_differs_from_an_empty_database(empty_url: str) -> None:
    # The comparison can fail: without the migration the table is reported missing.
    differences = _differences(empty_url, _DefaultBase.metadata)
    # The jobs table and its seven indexes (claim, finished; processing, failed; unique
    # key; cancelled, history), and the table of paused topics.
    kinds = sorted(difference[0] for difference in differences)
    indexes = 5 if _on_mariadb(empty_url) else 7  # two are left aside there
    assert kinds == ["add_index"] * indexes + ["add_table"] * 2


def test_upgrade_downgrade_upgrade_round_trips(empty_url: str) -> None:
    engine = create_engine(empty_url)
    try:
        migrations.upgrade(empty_url)
        assert "programma_jobs" in inspect(engine).get_table_names()
        migrations.downgrade(empty_url)
        assert "programma_jobs" not in inspect(engine).get_table_names()
        migrations.upgrade(empty_url)
        assert "programma_jobs" in inspect(engine).get_table_names()
        assert _differences(empty_url, _DefaultBase.metadata) == []
    finally:
        engine.dispose()


def test_chain_applies_inside_an_applications_own_alembic(empty_url: str, tmp_path: Path) -> None:
    """Earlier releases' set-up (one version_locations line, then `alembic upgrade heads`)
    still works where the line is split at spaces, not at os.pathsep (docs/alembic.md)."""
    versions = tmp_path / "versions"
    versions.mkdir()
    (tmp_path / "env.py").write_text(
        textwrap.dedent(
            """
            from alembic import context
            from sqlalchemy import engine_from_config, pool
            from programma_sa.migrations import include_object

            config = context.config
            engine = engine_from_config(
                config.get_section(config.config_ini_section),
                prefix="sqlalchemy.",
                poolclass=pool.NullPool,
            )
            with engine.connect() as connection:
                context.configure(
                    connection=connection, target_metadata=None, include_object=include_object
                )
                with context.begin_transaction():
                    context.run_migrations()
            """
        )
    )
    (versions / "app_0001.py").write_text(
        textwrap.dedent(
            """
            import sqlalchemy as sa
            from alembic import op

            revision = "app_0001"
            down_revision = None
            branch_labels = ("app",)
            depends_on = None

            def upgrade():
                op.create_table("customers", sa.Column("id", sa.Integer, primary_key=True))

            def downgrade():
                op.drop_table("customers")
            """
        )
    )
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        textwrap.dedent(
            f"""
            [alembic]
            script_location = {tmp_path}
            path_separator = space
            version_locations = {versions} programma_sa:migrations/versions
            sqlalchemy.url = {empty_url.replace("%", "%%")}
            """
        )
    )
    config = Config(str(ini))
    command.upgrade(config, "heads")
    engine = create_engine(empty_url)
    try:
        assert {"customers", "programma_jobs", "alembic_version"} <= set(
            inspect(engine).get_table_names()
        )
        command.downgrade(config, "programma@base")
        tables = set(inspect(engine).get_table_names())
        assert "programma_jobs" not in tables and "customers" in tables
    finally:
        engine.dispose()


def test_mariadb_holds_unique_keys_and_claimable_topics_in_generated_columns(
    empty_url: str,
) -> None:
    """MariaDB has no partial index: the unique index is over a generated column that
    holds the key only while the job's state is one of its unique_states, the claim
    index over one that holds the topic only while the job is claimable."""
    if not _on_mariadb(empty_url):
        pytest.skip("a partial unique index there (compared with the model above)")
    migrations.upgrade(empty_url)
    engine = create_engine(empty_url)
    try:
        indexes = {index["name"]: index for index in inspect(engine).get_indexes("programma_jobs")}
        unique = indexes["uq_programma_jobs_unique_key"]
        assert (unique["unique"], unique["column_names"]) == (
            True,
            [migrations.UNIQUE_HOLDER_COLUMN],
        )
        columns = {
            column["name"]: column for column in inspect(engine).get_columns("programma_jobs")
        }
        generated = columns[migrations.UNIQUE_HOLDER_COLUMN]["computed"]
        assert generated["persisted"] is True
        assert "json_contains(`unique_states`,json_quote(`state`))" in generated["sqltext"]
        claim = indexes["ix_programma_jobs_claim"]
        assert claim["column_names"] == [
            migrations.CLAIM_TOPIC_COLUMN,
            "priority",
            "start_after",
            "id",
        ]
        claim_topic = columns[migrations.CLAIM_TOPIC_COLUMN]["computed"]
        assert "if(`state` in ('created','active'),`topic`,NULL)" in claim_topic["sqltext"]
    finally:
        engine.dispose()


def test_mariadb_ids_default_to_32_hex_digits(empty_url: str) -> None:
    if not _on_mariadb(empty_url):
        pytest.skip("the comparisons above check the id's default there")
    migrations.upgrade(empty_url)
    engine = create_engine(empty_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO programma_jobs (topic, data) VALUES ('t', '{}')"
            )
            (made,) = connection.exec_driver_sql("SELECT id FROM programma_jobs").scalars()
        assert len(made) == 32 and int(made, 16) >= 0
    finally:
        engine.dispose()
