"""Create the programma jobs table, its claim and retention indexes.

Revision ID: programma_0001
Revises:
Create Date: 2026-11-28

Branch ``programma``; depends on nothing, so an application's ``alembic upgrade
heads`` applies it beside the application's own chain. Table name and schema come
from the Alembic options ``programma_table_name`` / ``programma_schema``.

Append-only: this revision is a snapshot and never imports the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op
from programma_sa.migrations import table_location

revision: str = "programma_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("programma",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    name, schema = table_location(op.get_context().config)
    if schema is not None:
        op.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
    op.create_table(
        name,
        sa.Column(
            "id",
            postgresql.UUID(as_uuid=True),
            primary_key=True,
            server_default=sa.text("gen_random_uuid()"),
        ),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("data", postgresql.JSONB(), nullable=False),
        sa.Column(
            "attributes", postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        sa.Column("state", sa.String(16), nullable=False, server_default=sa.text("'created'")),
        sa.Column("start_after", sa.DateTime(timezone=True), server_default=sa.text("now()")),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
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
        postgresql_where=sa.text("state IN ('created', 'active')"),
    )
    op.create_index(
        f"ix_{name}_finished",
        name,
        ["topic", "finished_at"],
        schema=schema,
        postgresql_where=sa.text("state IN ('completed', 'failed')"),
    )


def downgrade() -> None:
    name, schema = table_location(op.get_context().config)
    op.drop_table(name, schema=schema)
