"""The shipped chain itself: where it is, its revisions, and the jobs table it acts on.

Every way of applying the chain (an application's own revisions calling
:func:`~programma_sa.migrations.upgrade_steps`, the branch beside an application's
chain, ``programma-sa migrate``) runs the same revision files. A revision finds its
table with :func:`table_location`: from the one-head steps that are running it, else
from Alembic's config (``programma_table_name`` / ``programma_schema``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from alembic.config import Config
from alembic.script import Script, ScriptDirectory

from .._validation import check_identifier, check_table_name
from ..exceptions import ConfigurationError
from ..models import DEFAULT_TABLE_NAME

#: The branch label of the chain: ``alembic upgrade programma@head``.
BRANCH_LABEL = "programma"
#: The chain's location in the ``package:path`` form ``alembic.ini`` accepts.
VERSION_LOCATION = "programma_sa:migrations/versions"

_HERE = Path(__file__).resolve().parent

# The table the running one-head steps act on (set by upgrade_steps/downgrade_steps).
_steps_table: ContextVar[tuple[str, str | None] | None] = ContextVar(
    "programma_steps_table", default=None
)


def version_location() -> str:
    """The chain's directory on disk, for building an Alembic ``Config`` in code."""
    return str(_HERE / "versions")


def table_location(config: Config | None) -> tuple[str, str | None]:
    """The ``(table name, schema)`` the migrations act on.

    Inside :func:`~programma_sa.migrations.upgrade_steps` (or ``downgrade_steps``),
    the table those steps name. Otherwise read from Alembic's main options
    ``programma_table_name`` (default ``programma_jobs``) and ``programma_schema``
    (default: none, the search path).
    """
    running = _steps_table.get()
    if running is not None:
        return running
    name = DEFAULT_TABLE_NAME
    schema: str | None = None
    if config is not None:
        name = config.get_main_option("programma_table_name") or DEFAULT_TABLE_NAME
        schema = config.get_main_option("programma_schema") or None
    check_table_name(name, "programma_table_name")
    if schema is not None:
        check_identifier(schema, "programma_schema")
    return name, schema


@contextlib.contextmanager
def acting_on(table_name: str, schema: str | None) -> Iterator[None]:
    """Make :func:`table_location` answer ``(table_name, schema)`` while the block runs."""
    token = _steps_table.set((table_name, schema))
    try:
        yield
    finally:
        _steps_table.reset(token)


@functools.cache
def chain() -> ScriptDirectory:
    """The shipped chain's revisions (read once per process)."""
    config = Config()
    config.set_main_option("script_location", "programma_sa:migrations")
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", version_location())
    return ScriptDirectory.from_config(config)


def revisions() -> list[str]:
    """The chain's revision ids, oldest first."""
    return [script.revision for script in reversed(list(chain().walk_revisions()))]


def head() -> str:
    """The chain's last revision: what a new application revision brings the table to."""
    return revisions()[-1]


def scripts_between(start: str | None, end: str) -> list[Script]:
    """The revisions after ``start`` (``None``: before the first) up to ``end``, oldest first.

    Raises :class:`ConfigurationError` for a name that is not a revision of the chain
    or a ``start`` that is not before ``end``.
    """
    known = revisions()
    for name in (start, end):
        if name is not None and name not in known:
            raise ConfigurationError(
                f"{name!r} is not a programma_sa migration step; the steps are: "
                f"{', '.join(known)} (a newer programma-sa may have more)"
            )
    first = 0 if start is None else known.index(start) + 1
    last = known.index(end) + 1
    if first > last:
        raise ConfigurationError(
            f"programma_sa migration steps from {start} to {end} go backwards: "
            f"{start} comes after {end}"
        )
    script = chain()
    return [_script(script, revision) for revision in known[first:last]]


def _script(script: ScriptDirectory, revision: str) -> Script:
    found = script.get_revision(revision)
    assert found is not None
    return found
