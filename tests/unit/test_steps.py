"""The one-head API refuses what it cannot apply, naming it, before anything runs."""

from __future__ import annotations

import re

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import create_engine

from programma_sa import ConfigurationError, migrations

from ..helpers import chain_steps

#: How a refusal lists the steps there are.
THE_STEPS = ", ".join(chain_steps())


def test_steps_name_the_chains_revisions() -> None:
    steps = migrations.Steps(start=None, end="programma_0002")
    assert (steps.table_name, steps.schema) == ("programma_jobs", None)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"start": None, "end": "programma_0009"},
            "'programma_0009' is not a programma_sa migration step; the steps are: "
            f"{THE_STEPS} (a newer programma-sa may have more)",
        ),
        (
            {"start": "0001", "end": "programma_0002"},
            "'0001' is not a programma_sa migration step; the steps are: "
            f"{THE_STEPS} (a newer programma-sa may have more)",
        ),
        (
            {"start": "programma_0002", "end": "programma_0001"},
            "programma_sa migration steps from programma_0002 to programma_0001 go "
            "backwards: programma_0002 comes after programma_0001",
        ),
        (
            {"start": None, "end": "programma_0002", "table_name": "jobs; drop"},
            "table_name must be a PostgreSQL identifier",
        ),
        (
            {"start": None, "end": "programma_0002", "schema": ""},
            "schema must be a PostgreSQL identifier",
        ),
    ],
)
def test_bad_steps_are_refused(arguments: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        migrations.Steps(**arguments)  # type: ignore[arg-type]
    assert str(refused.value).startswith(message)


def test_steps_run_only_inside_a_migration() -> None:
    steps = migrations.Steps(start=None, end="programma_0002")
    message = re.escape(
        "upgrade_steps/downgrade_steps run inside an Alembic migration: call them from a "
        "revision's upgrade()/downgrade() with `from alembic import op`"
    )
    with pytest.raises(ConfigurationError, match=message):
        migrations.upgrade_steps(object(), steps)
    # Another Operations than the running migration's.
    engine = create_engine("sqlite://")
    with engine.connect() as connection:
        running = MigrationContext.configure(connection)
        other = Operations(MigrationContext.configure(connection))
        with Operations.context(running), pytest.raises(ConfigurationError, match=message):
            migrations.downgrade_steps(other, steps)
