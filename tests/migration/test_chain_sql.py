"""The shipped chain's PostgreSQL DDL, pinned: what ``alembic upgrade --sql`` writes for
the default table and for a custom table in a schema, up and down.

``chain_postgresql.sql`` holds the statements the revisions wrote before they were made
portable (issue 16: they also run on an application's SQLite development database);
on PostgreSQL they must stay byte-identical. A new revision's statements join it as
:func:`chain_statements` renders them while the revision is still PostgreSQL-only
(programma_0004's: as the scheduling work wrote it; programma_0005's: as the control
work designed it). The version table's own statements are Alembic's and left out.
"""

from __future__ import annotations

import io
from pathlib import Path

from alembic import command

from programma_sa import migrations

EXPECTED = Path(__file__).with_name("chain_postgresql.sql")


def chain_statements() -> str:
    statements: list[str] = []
    for location in ({}, {"table_name": "audit_jobs", "schema": "queue"}):
        for revisions, run in (
            ("programma@head", command.upgrade),
            ("programma@head:base", command.downgrade),
        ):
            config = migrations.standalone_config("postgresql+psycopg://offline/db", **location)
            config.output_buffer = io.StringIO()
            run(config, revisions, sql=True)
            for statement in config.output_buffer.getvalue().split(";\n"):
                lines = [line for line in statement.strip().splitlines() if line]
                lines = [line for line in lines if not line.startswith("-- ")]
                text = "\n".join(lines)
                if text and text not in ("BEGIN", "COMMIT") and "alembic_version" not in text:
                    statements.append(text + ";")
    return "\n\n".join(statements) + "\n"


def test_the_postgresql_ddl_of_the_chain_is_unchanged() -> None:
    assert chain_statements() == EXPECTED.read_text()
