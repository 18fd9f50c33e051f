"""Control of jobs in flight: the CANCELLED state, results, paused topics, listing.

Revision ID: programma_0005
Revises: programma_0004
Create Date: 2026-12-05

* The state check admits ``cancelled``: a job cancelled before it finished, never
  claimed again (unless re-run). The constraint is replaced in one transaction
  with the rest of the revision; the new check reads the table once (an ACCESS
  EXCLUSIVE lock for that scan on a large table: run it in a quiet moment).
* ``result`` (jsonb, NULL): what the handler returned, written with the completion.
  A nullable column without a default is a catalog change only.
* ``<table>_paused``: one row per paused topic, read by every claim.
* ``ix_<table>_cancelled`` (topic, finished_at) WHERE state = 'cancelled': stats,
  retention and re-runs of cancelled jobs, as ``ix_<table>_failed`` for failed ones.
* ``ix_<table>_history`` (topic, id) WHERE the job finished: a topic's finished
  jobs newest first, keyset-paginated by id (UUIDv7: creation order). Partial, so
  only a job's completion writes to it.

``CREATE INDEX`` blocks writes to the table while it builds; on a large live table
create both indexes first with ``CREATE INDEX CONCURRENTLY`` (same names and
definitions) — this revision then skips them (``IF NOT EXISTS``).

Append-only: this revision is a snapshot and never imports the model. On PostgreSQL
it writes exactly what it was designed to write; on SQLite the same column, table and
indexes in portable form (``result`` JSON), and the state check's text rewritten by
SQLite's documented procedure (see :func:`_rewrite_sqlite_check`), as the queue runs
on SQLite too and writes ``cancelled`` there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from programma_sa._portable import KEY_TEXT_TYPE, MYSQL_DIALECTS, TIME_TYPE, utc_now
from programma_sa.migrations import table_location

revision: str = "programma_0005"
down_revision: str | Sequence[str] | None = "programma_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES_0004 = "'created', 'active', 'processing', 'completed', 'failed'"
_STATES_0005 = f"{_STATES_0004}, 'cancelled'"
# PostgreSQL's type there; SQLAlchemy's portable one on other databases.
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _partial(predicate: str) -> dict[str, Any]:
    return {"postgresql_where": sa.text(predicate), "sqlite_where": sa.text(predicate)}


def _on_postgresql() -> bool:
    return bool(op.get_context().dialect.name == "postgresql")


def _replace_state_check(name: str, schema: str | None, old: str, new: str) -> None:
    constraint = f"ck_{name}_state"
    if _on_postgresql() or op.get_context().dialect.name in MYSQL_DIALECTS:
        op.drop_constraint(constraint, name, type_="check", schema=schema)
        op.create_check_constraint(constraint, name, f"state IN ({new})", schema=schema)
    else:
        _rewrite_sqlite_check(name, f"CHECK (state IN ({old}))", f"CHECK (state IN ({new}))")


def _rewrite_sqlite_check(name: str, old: str, new: str) -> None:
    """SQLite alters no constraint: its documented procedure for a change that no
    stored row contradicts (ALTER TABLE, "making other kinds of table schema
    changes") rewrites the table's CREATE text in ``sqlite_schema`` and bumps the
    schema version, so every connection reads the new check. Each row satisfies the
    new check (upgrade: one more state allowed; downgrade: cancelled jobs are made
    failed first). Only the check's text changes; the table's rows and indexes do
    not. A table without this check (made by the model's ``create_all``) is left."""
    bind = op.get_bind()
    where = "type = 'table' AND name = :name"
    created = bind.execute(
        sa.text(f"SELECT sql FROM sqlite_master WHERE {where}"), {"name": name}
    ).scalar_one()
    if old not in created:
        return
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.execute(
        sa.text(f"UPDATE sqlite_master SET sql = :sql WHERE {where}"),
        {"sql": created.replace(old, new), "name": name},
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade() -> None:
    name, schema = table_location(op.get_context().config)
    _replace_state_check(name, schema, _STATES_0004, _STATES_0005)
    op.add_column(name, sa.Column("result", _JSON, nullable=True), schema=schema)
    op.create_table(
        f"{name}_paused",
        sa.Column("topic", KEY_TEXT_TYPE, nullable=False),
        sa.Column(
            "paused_at",
            TIME_TYPE,
            nullable=False,
            server_default=utc_now(),
        ),
        sa.PrimaryKeyConstraint("topic", name=f"{name}_paused_pkey"),
        schema=schema,
    )
    op.create_index(
        f"ix_{name}_cancelled",
        name,
        ["topic", "finished_at"],
        schema=schema,
        if_not_exists=True,
        **_partial("state = 'cancelled'"),
    )
    op.create_index(
        f"ix_{name}_history",
        name,
        ["topic", "id"],
        schema=schema,
        if_not_exists=True,
        **_partial("state IN ('completed', 'failed', 'cancelled')"),
    )


def downgrade() -> None:
    name, schema = table_location(op.get_context().config)
    op.drop_index(f"ix_{name}_history", table_name=name, schema=schema)
    op.drop_index(f"ix_{name}_cancelled", table_name=name, schema=schema)
    op.drop_table(f"{name}_paused", schema=schema)
    op.drop_column(name, "result", schema=schema)
    # A cancelled job has no place in the older schema: it goes back as FAILED (it
    # finished without completing, and is never claimed again), with a note.
    table = sa.table(
        name,
        sa.column("state", sa.String()),
        sa.column("attributes", _JSON),
        schema=schema,
    )
    attributes: Any = table.c.attributes
    if _on_postgresql():
        noted = attributes.op("||")(sa.cast(sa.literal('{"cancelled": true}'), postgresql.JSONB()))
    elif op.get_context().dialect.name in MYSQL_DIALECTS:
        noted = sa.func.json_set(attributes, "$.cancelled", sa.true())
    else:
        noted = sa.func.json_set(attributes, "$.cancelled", sa.text("json('true')"))
    op.execute(
        table.update().where(table.c.state == "cancelled").values(state="failed", attributes=noted)
    )
    _replace_state_check(name, schema, _STATES_0005, _STATES_0004)
