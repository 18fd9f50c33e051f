"""Statistics indexes and storage parameters for a hot queue table.

Revision ID: programma_0002
Revises: programma_0001
Create Date: 2026-11-29

* ``ix_<table>_processing`` (topic, started_at) WHERE state = 'processing' and
  ``ix_<table>_failed`` (topic, finished_at) WHERE state = 'failed': with the claim
  and finished indexes of programma_0001 they let ``maintenance.stats`` count every
  state without reading the table's finished rows, and the FAILED prune read only
  its own rows. Both are partial, so enqueue and claim never write to them.
  ``CREATE INDEX`` blocks writes to the table while it builds; on a large live table
  create them first with ``CREATE INDEX CONCURRENTLY`` (same names and
  definitions) — this revision then skips them (``IF NOT EXISTS``).
* Storage parameters (``ALTER TABLE … SET``, a SHARE UPDATE EXCLUSIVE lock that
  blocks neither reads nor writes; ``fillfactor`` applies to pages written from now
  on). docs/maintenance.md gives the reasoning for each value.

Append-only: this revision is a snapshot and never imports the model. On a database
other than PostgreSQL (an application's SQLite development database) it creates the
two indexes only: storage parameters are PostgreSQL's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from programma_sa.migrations import table_location

revision: str = "programma_0002"
down_revision: str | Sequence[str] | None = "programma_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Storage parameters of the jobs table, see docs/maintenance.md.
STORAGE_PARAMETERS = {
    # Leave 20% of each heap page free, so the new version a state change writes
    # usually lands on the row's own page (and is heap-only when no indexed column
    # changed), and pages are pruned before they fill up.
    "fillfactor": "80",
    # Vacuum after ~2% of the rows are dead (default 20%): a claim's index scan
    # steps over dead claim-index entries until VACUUM removes them.
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_threshold": "1000",
    # Re-ANALYZE after ~2% of the rows changed (default 10%): the share of rows in
    # each state swings fast, and the planner's choice of the partial indexes
    # follows its statistics.
    "autovacuum_analyze_scale_factor": "0.02",
}


def _qualified_table(name: str, schema: str | None) -> str:
    # table_location validated both as plain identifiers; the dialect quotes them.
    preparer = op.get_context().dialect.identifier_preparer
    return preparer.format_table(sa.table(name, schema=schema))


def _partial(predicate: str) -> dict[str, Any]:
    return {"postgresql_where": sa.text(predicate), "sqlite_where": sa.text(predicate)}


def _on_postgresql() -> bool:
    return bool(op.get_context().dialect.name == "postgresql")


def upgrade() -> None:
    name, schema = table_location(op.get_context().config)
    op.create_index(
        f"ix_{name}_processing",
        name,
        ["topic", "started_at"],
        schema=schema,
        if_not_exists=True,
        **_partial("state = 'processing'"),
    )
    op.create_index(
        f"ix_{name}_failed",
        name,
        ["topic", "finished_at"],
        schema=schema,
        if_not_exists=True,
        **_partial("state = 'failed'"),
    )
    if not _on_postgresql():
        return
    settings = ", ".join(f"{key} = {value}" for key, value in STORAGE_PARAMETERS.items())
    op.execute(f"ALTER TABLE {_qualified_table(name, schema)} SET ({settings})")


def downgrade() -> None:
    name, schema = table_location(op.get_context().config)
    if _on_postgresql():
        op.execute(
            f"ALTER TABLE {_qualified_table(name, schema)} RESET ({', '.join(STORAGE_PARAMETERS)})"
        )
    op.drop_index(f"ix_{name}_failed", table_name=name, schema=schema)
    op.drop_index(f"ix_{name}_processing", table_name=name, schema=schema)
