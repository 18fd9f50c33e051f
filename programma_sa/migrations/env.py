"""Alembic environment for running the programma chain on its own (``programma-sa migrate``)."""

from alembic import context

from programma_sa.migrations import run_env

run_env(context)  # type: ignore[arg-type]  # the module proxies an EnvironmentContext
