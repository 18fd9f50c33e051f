"""Everything programma_sa reads from or changes in Alembic that Alembic does not document.

Each use is covered by ``tests/unit/test_alembic_compat.py``, which fails if an
Alembic release changes what is relied on here — instead of the branch helpers
failing open silently.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionMap

__all__ = ["destination", "running_command", "set_version_locations"]


def set_version_locations(script: ScriptDirectory, locations: Sequence[str]) -> None:
    """Give ``script`` other version locations after it was built from the config.

    ``ScriptDirectory`` keeps the configured locations in its public
    ``version_locations`` list, but memoizes the resolved paths
    (``_version_locations``, ``_singular_version_location``) and loads the
    revisions lazily into ``revision_map``: both are dropped so that they are
    computed again from the new list. Call it before the revisions are first read.
    """
    script.version_locations = list(locations)
    for memoized in ("_version_locations", "_singular_version_location"):
        script.__dict__.pop(memoized, None)
    script.revision_map = RevisionMap(script._load_revisions)


def running_command(context: EnvironmentContext) -> str | None:
    """The Alembic command running ``env.py`` (``"upgrade"``, ``"downgrade"``, …), if known.

    ``alembic.command`` hands each command's callback to the environment as the
    ``fn`` option, a function named after the command (``def downgrade(rev,
    context)``) — whether the command came from the ``alembic`` CLI, Flask-Migrate
    or code.
    """
    fn = _environment(context).context_opts.get("fn")
    return getattr(fn, "__name__", None)


def destination(context: EnvironmentContext) -> str | None:
    """The destination given to ``upgrade``/``downgrade`` as typed (``"-1"``, ``"heads"``).

    The public ``get_revision_argument()`` resolves it against the revisions first,
    which refuses the ambiguous relative ones this is needed to recognise.
    """
    value = _environment(context).context_opts.get("destination_rev")
    return value if isinstance(value, str) else None


def _environment(context: EnvironmentContext) -> EnvironmentContext:
    """The ``EnvironmentContext`` itself, also when given the ``alembic.context`` module.

    ``env.py`` holds the module, a proxy that forwards methods and class attributes
    (``config``, ``script``) to the running ``EnvironmentContext``, kept in its
    ``_proxy`` global, but not instance attributes such as ``context_opts``.
    """
    environment = getattr(context, "_proxy", context)
    assert isinstance(environment, EnvironmentContext), environment
    return environment
