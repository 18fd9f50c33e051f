"""Create the programma jobs table, its claim and retention indexes.

Revision ID: programma_0001
Revises:
Create Date: 2026-11-28

Branch ``programma``; depends on nothing, so an application's ``alembic upgrade
heads`` applies it beside the application's own chain. Table name and schema come
from the Alembic options ``programma_table_name`` / ``programma_schema``.

Append-only: this revision is a snapshot and never imports the model. On PostgreSQL
it writes exactly what it always did; elsewhere (SQLite, MariaDB) the portable types
and defaults of ``programma_sa._portable`` (MariaDB: ``VARBINARY`` topics, UTC
``DATETIME(6)``), and on databases without partial indexes (MariaDB) plain ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from programma_sa._portable import (
    KEY_TEXT_TYPE,
    MYSQL_DIALECTS,
    TIME_TYPE,
    empty_json_object,
    random_uuid,
    utc_now,
)
from programma_sa.migrations import table_location

revision: str = "programma_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("programma",)
depends_on: str | Sequence[str] | None = None


# PostgreSQL's types there; SQLAlchemy's portable ones on other databases.
_UUID = (
    sa.Uuid(as_uuid=True)
    .with_variant(postgresql.UUID(as_uuid=True), "postgresql")
    .with_variant(sa.Uuid(as_uuid=True, native_uuid=False), *MYSQL_DIALECTS)
)
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _partial(predicate: str) -> dict[str, Any]:
    return {"postgresql_where": sa.text(predicate), "sqlite_where": sa.text(predicate)}


def upgrade() -> None:
    name, schema = table_location(op.get_context().config)
    if schema is not None:
        op.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
    op.create_table(
        name,
        sa.Column("id", _UUID, primary_key=True, server_default=random_uuid()),
        sa.Column("topic", KEY_TEXT_TYPE, nullable=False),
        sa.Column("data", _JSON, nullable=False),
        sa.Column("attributes", _JSON, nullable=False, server_default=empty_json_object()),
        sa.Column("state", sa.String(16), nullable=False, server_default=sa.text("'created'")),
        sa.Column("start_after", TIME_TYPE, server_default=utc_now()),
        sa.Column("started_at", TIME_TYPE),
        sa.Column(
            "created_at",
            TIME_TYPE,
            nullable=False,
            server_default=utc_now(),
        ),
        sa.Column("finished_at", TIME_TYPE),
        sa.Column("retry_after_seconds", sa.Integer(), server_default=sa.text("30")),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("id", name=f"{name}_pkey"),
        sa.CheckConstraint(
            "state IN ('created', 'active', 'processing', 'completed', 'failed')",
            name=f"ck_{name}_state",
        ),
        schema=schema,
    )
    op.create_index(
        f"ix_{name}_claim",
        name,
        ["topic", "start_after", "id"],
        schema=schema,
        **_partial("state IN ('created', 'active')"),
    )
    op.create_index(
        f"ix_{name}_finished",
        name,
        ["topic", "finished_at"],
        schema=schema,
        **_partial("state IN ('completed', 'failed')"),
    )


def downgrade() -> None:
    name, schema = table_location(op.get_context().config)
    op.drop_table(name, schema=schema)
