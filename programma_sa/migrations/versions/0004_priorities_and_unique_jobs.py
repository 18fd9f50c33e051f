"""Priorities and unique jobs: two columns of each, the claim index by priority, a unique index.

Revision ID: programma_0004
Revises: programma_0002 (to be re-chained after programma_0003; it uses nothing of it)
Create Date: 2026-12-05

* ``priority integer NOT NULL DEFAULT 0``, ``unique_key text``, ``unique_states
  text[]``: ``ADD COLUMN`` with a constant default is a catalog change since
  PostgreSQL 11 (no table rewrite), under a brief ACCESS EXCLUSIVE lock.
* ``ix_<table>_claim`` becomes (topic, priority DESC, start_after, id), same
  predicate: built as ``ix_<table>_claim_new``, then the old one is dropped and the
  new one renamed, so the claim always has an index.
* ``uq_<table>_unique_key`` (unique_key) WHERE state = ANY (unique_states): the
  uniqueness of unique jobs, enforced by the database.

A plain ``CREATE INDEX`` blocks writes to the table (enqueues, claims, completions)
while it reads the whole table. By default the indexes are built so, inside the
migration's transaction: atomic, and quick on a small table. On a large live table
set the Alembic main option ``programma_concurrent_indexes = true`` (``programma-sa
migrate --concurrently``): the indexes are then built with ``CREATE INDEX
CONCURRENTLY`` (and the old claim index dropped with ``DROP INDEX CONCURRENTLY``),
which blocks no reads nor writes but cannot run in a transaction, so this revision
commits what ran before it and runs those statements in autocommit
(``autocommit_block``). Such a run is not atomic: if it fails half-way, run it
again — it drops a half-built index left by the failed run and builds it anew.

Append-only: this revision is a snapshot and never imports the model. On PostgreSQL
it writes exactly what it was designed to write; elsewhere (an application's SQLite
development database, MariaDB) the same columns and indexes in portable form: ``unique_states``
a JSON array, the unique index's predicate in terms SQLite accepts, the claim index
dropped and built again in the migration's transaction (SQLite cannot rename an
index), and never ``CONCURRENTLY`` (SQLite has no such build; the option is ignored). MariaDB
and MySQL have no partial index: the unique index is over a generated column holding
the key only while the job holds it (:data:`HOLDER_ON_MYSQL`), and the claim index
over one holding the topic only while the job is claimable (:data:`CLAIM_TOPIC_ON_MYSQL`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import sqlalchemy as sa
from alembic import op

from programma_sa._portable import KEY_TEXT_TYPE, MYSQL_DIALECTS
from programma_sa.migrations import CLAIM_TOPIC_COLUMN, UNIQUE_HOLDER_COLUMN, table_location

revision: str = "programma_0004"
down_revision: str | Sequence[str] | None = "programma_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIMABLE = "state IN ('created', 'active')"
HOLDS_ITS_KEY = "state = ANY (unique_states)"
#: HOLDS_ITS_KEY where unique_states is a JSON array of state names (SQLite): a partial
#: index's predicate may not read json_each (a subquery), but the array's text holds
#: the quoted state exactly when the state is one of its elements (state names are
#: plain words, no quotes to escape). NULL (no key) matches no row, as on PostgreSQL.
HOLDS_ITS_KEY_IN_JSON = "instr(unique_states, '\"' || state || '\"') > 0"
#: HOLDS_ITS_KEY on MariaDB/MySQL, which have no partial index: the key of a job that
#: holds it, else NULL — a generated column whose unique index admits any number of
#: NULLs, so only holders are unique (unique_states a JSON array of state names).
HOLDER_ON_MYSQL = "IF(JSON_CONTAINS(unique_states, JSON_QUOTE(state)), unique_key, NULL)"
#: CLAIMABLE on MariaDB/MySQL: the topic of a claimable job, else NULL — the claim
#: index is over this generated column there, so it holds claimable jobs only.
CLAIM_TOPIC_ON_MYSQL = "IF(state IN ('created', 'active'), topic, NULL)"
#: The Alembic main option that asks for CREATE INDEX CONCURRENTLY.
CONCURRENT_OPTION = "programma_concurrent_indexes"


def _on_postgresql() -> bool:
    return bool(op.get_context().dialect.name == "postgresql")


def _concurrently() -> bool:
    config = op.get_context().config
    value = "" if config is None else config.get_main_option(CONCURRENT_OPTION) or ""
    return value.strip().lower() in ("1", "true", "yes", "on")


def _quoted(name: str, schema: str | None = None) -> str:
    # table_location validated both as plain identifiers; the dialect quotes them.
    preparer = op.get_context().dialect.identifier_preparer
    return preparer.format_table(sa.table(name, schema=schema))


def _create_index(how: str, unique: bool, name: str, schema: str | None, on: str) -> None:
    """``CREATE [UNIQUE] INDEX [CONCURRENTLY] name ON …``. Concurrently, an index of that
    name a failed run left behind (maybe invalid: half-built) is dropped first."""
    if how:
        op.execute(f"DROP INDEX{how} IF EXISTS {_quoted(name, schema)}")
    op.execute(f"CREATE {'UNIQUE ' if unique else ''}INDEX{how} {_quoted(name)} ON {on}")


def _swap_claim_index(how: str, name: str, schema: str | None, order: str) -> None:
    """Build the claim index ordered by ``order`` as ``ix_<table>_claim_new`` and drop
    the old one; the rename to ``ix_<table>_claim`` is :func:`_rename_claim_index`'s."""
    table = _quoted(name, schema)
    on = f"{table} (topic, {order}, id) WHERE {CLAIMABLE}"
    _create_index(how, False, f"ix_{name}_claim_new", schema, on)
    op.execute(f"DROP INDEX{how} IF EXISTS {_quoted(f'ix_{name}_claim', schema)}")


def _rename_claim_index(name: str, schema: str | None) -> None:
    op.execute(
        f"ALTER INDEX {_quoted(f'ix_{name}_claim_new', schema)} "
        f"RENAME TO {_quoted(f'ix_{name}_claim')}"
    )


def upgrade() -> None:
    name, schema = table_location(op.get_context().config)
    if not _on_postgresql():
        _upgrade_portable(name, schema)
        return
    table = _quoted(name, schema)
    op.execute(
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS priority integer NOT NULL DEFAULT 0, "
        "ADD COLUMN IF NOT EXISTS unique_key text, "
        "ADD COLUMN IF NOT EXISTS unique_states text[]"
    )
    concurrently = _concurrently()
    with op.get_context().autocommit_block() if concurrently else nullcontext():
        how = " CONCURRENTLY" if concurrently else ""
        unique = f"{table} (unique_key) WHERE {HOLDS_ITS_KEY}"
        _create_index(how, True, f"uq_{name}_unique_key", schema, unique)
        _swap_claim_index(how, name, schema, "priority DESC, start_after")
    _rename_claim_index(name, schema)


def downgrade() -> None:
    name, schema = table_location(op.get_context().config)
    if not _on_postgresql():
        _downgrade_portable(name, schema)
        return
    op.execute(f"DROP INDEX {_quoted(f'uq_{name}_unique_key', schema)}")
    _swap_claim_index("", name, schema, "start_after")
    _rename_claim_index(name, schema)
    op.execute(
        f"ALTER TABLE {_quoted(name, schema)} DROP COLUMN unique_states, "
        "DROP COLUMN unique_key, DROP COLUMN priority"
    )


# -- elsewhere: an application's SQLite development database ----------------------------


def _rebuild_claim_index(
    name: str, schema: str | None, order: Sequence[str | sa.TextClause]
) -> None:
    """Drop the claim index and build it ordered by ``order``. SQLite renames no index,
    but its DDL is transactional and the migration's transaction holds the database's
    write lock: nobody sees the table between the two statements."""
    op.drop_index(f"ix_{name}_claim", table_name=name, schema=schema)
    topic = CLAIM_TOPIC_COLUMN if _on_mysql() and CLAIM_TOPIC_COLUMN in _columns(name) else "topic"
    op.create_index(
        f"ix_{name}_claim",
        name,
        [topic, *order, "id"],
        schema=schema,
        sqlite_where=sa.text(CLAIMABLE),
    )


def _on_mysql() -> bool:
    return op.get_context().dialect.name in MYSQL_DIALECTS


def _columns(name: str) -> set[str]:
    """The table's columns (online; offline, in a script, the columns it will have)."""
    if op.get_context().as_sql:
        return {CLAIM_TOPIC_COLUMN}
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns(name)}


def _generated(name: str, schema: str | None, column: str, expression: str) -> None:
    """A STORED generated column (MariaDB/MySQL): indexes read it without evaluating
    the expression per entry."""
    op.add_column(
        name,
        sa.Column(column, KEY_TEXT_TYPE, sa.Computed(sa.text(expression), persisted=True)),
        schema=schema,
    )


def _upgrade_portable(name: str, schema: str | None) -> None:
    # One column per ALTER TABLE: SQLite adds no more in one statement.
    op.add_column(
        name,
        sa.Column("priority", sa.Integer(), nullable=False, server_default=sa.text("0")),
        schema=schema,
    )
    op.add_column(name, sa.Column("unique_key", KEY_TEXT_TYPE), schema=schema)
    op.add_column(name, sa.Column("unique_states", sa.JSON()), schema=schema)
    unique_on = "unique_key"
    if _on_mysql():
        _generated(name, schema, UNIQUE_HOLDER_COLUMN, HOLDER_ON_MYSQL)
        _generated(name, schema, CLAIM_TOPIC_COLUMN, CLAIM_TOPIC_ON_MYSQL)
        unique_on = UNIQUE_HOLDER_COLUMN
    op.create_index(
        f"uq_{name}_unique_key",
        name,
        [unique_on],
        unique=True,
        schema=schema,
        sqlite_where=sa.text(HOLDS_ITS_KEY_IN_JSON),
    )
    _rebuild_claim_index(name, schema, [sa.text("priority DESC"), "start_after"])


def _downgrade_portable(name: str, schema: str | None) -> None:
    op.drop_index(f"uq_{name}_unique_key", table_name=name, schema=schema)
    if _on_mysql():
        op.drop_index(f"ix_{name}_claim", table_name=name, schema=schema)
        op.drop_column(name, CLAIM_TOPIC_COLUMN, schema=schema)
        op.create_index(f"ix_{name}_claim", name, ["topic", "start_after", "id"], schema=schema)
        op.drop_column(name, UNIQUE_HOLDER_COLUMN, schema=schema)
    else:
        _rebuild_claim_index(name, schema, ["start_after"])
    for column in ("unique_states", "unique_key", "priority"):
        op.drop_column(name, column, schema=schema)
