"""The other way: the shipped chain as a branch (``programma``) beside the application's own.

Two calls in the application's ``env.py`` replace the ``version_locations`` line of
earlier releases, and make the branch safe for everyday commands::

    from programma_sa import migrations

    migrations.include_branch(context)          # before context.configure(...)
    context.configure(
        ...,
        include_object=migrations.include_object,
        process_revision_directives=migrations.process_revision_directives,
    )

* :func:`include_branch` adds the chain's directory to this run's revisions in code,
  so no ``alembic.ini`` separator is involved (with ``path_separator = os``, what
  ``alembic init`` writes since Alembic 1.16, the ``package:path`` form is cut at
  its colon and the line silently adds nothing). It refuses ``downgrade -1``, which
  beside a second head would move *programma's* branch down, and says what to type.
* :func:`process_revision_directives` puts every new revision in the application's
  chain: after the application's head (not programma's) when no ``--head`` was
  given, in the application's versions directory, never inside the installed
  package.

Only commands that run ``env.py`` see the branch: ``upgrade``, ``downgrade``,
``current``, ``stamp``, ``check``, ``revision --autogenerate``; ``history``,
``heads`` and plain ``revision`` too when ``alembic.ini`` sets
``revision_environment = true``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError, coerce_resource_to_filename

from ._alembic_compat import destination, running_command, set_version_locations
from ._chain import BRANCH_LABEL, version_location

__all__ = ["APP_BRANCH_LABEL", "include_branch", "process_revision_directives"]

#: The branch label :func:`process_revision_directives` gives the first revision of an
#: application's chain (unless ``--branch-label`` names another): ``alembic
#: downgrade app@-1`` then names the application's last revision.
APP_BRANCH_LABEL = "app"

_RELATIVE = re.compile(r"-\d+")


def include_branch(context: EnvironmentContext) -> None:
    """Add the shipped chain (branch ``programma``) to the revisions of this Alembic run.

    Call it in ``env.py`` before ``context.configure(...)``. The chain's directory is
    added in code, after the application's own locations (``version_locations``,
    else ``<script_location>/versions``); a location already naming it is kept
    as it is. Refuses, with a :class:`alembic.util.CommandError`, a ``downgrade`` to
    a bare relative revision such as ``-1``, ambiguous beside a second head.
    """
    script = context.script
    chain = Path(version_location())
    own = list(script.version_locations) or [str(Path(script.dir, "versions"))]
    if chain not in {_resolved(location) for location in own}:
        set_version_locations(script, [*own, str(chain)])
    target = destination(context)
    if running_command(context) == "downgrade" and target and _RELATIVE.fullmatch(target):
        raise CommandError(
            f"downgrade {target} is ambiguous beside programma's branch (it may move the "
            f"jobs table's branch, not your last revision): name the branch, "
            f"{APP_BRANCH_LABEL}@{target} for your own chain (if its first revision has "
            f"branch label {APP_BRANCH_LABEL!r}) or {BRANCH_LABEL}@{target} for the jobs "
            "table's"
        )


def process_revision_directives(
    context: MigrationContext, revision: Any, directives: list[Any]
) -> None:
    """Place each new revision in the application's chain, never in the installed package.

    Pass it to ``context.configure(process_revision_directives=...)`` (or call it
    from your own hook). For each revision about to be written:

    * no ``--head`` given and programma's branch among the heads: it follows the
      application's head — or starts the application's chain, with branch label
      ``app``, when the chain has no revision yet;
    * no ``--version-path`` given: it goes beside the revision it follows, or into
      the application's own versions directory;
    * a revision that would still be written into programma_sa's directory, or
      follow one of programma's revisions, is refused with a
      :class:`alembic.util.CommandError` saying what to do instead.
    """
    script = context.script
    if script is None:
        return
    chain = Path(version_location())
    for directive in directives:
        heads = script.get_revisions("heads")
        own_heads = [head for head in heads if head is not None and not _is_chain(head, chain)]
        # The alembic CLI leaves --head unset (None); command.revision() defaults it to "head".
        if directive.head in (None, "head") and len(heads) > len(own_heads):
            if len(own_heads) == 1:
                directive.head = own_heads[0].revision
            elif not own_heads:
                directive.head = "base"
                directive.branch_label = directive.branch_label or APP_BRANCH_LABEL
        followed = _followed(script, directive.head)
        if any(_is_chain(parent, chain) for parent in followed):
            raise CommandError(
                f"refusing to write a revision after programma's {directive.head}: a revision "
                "of yours follows your own head (--head <your head>, or --head base for the "
                "first one); programma's branch is applied beside it (alembic upgrade heads)"
            )
        if directive.version_path is None:
            directive.version_path = _own_location(script, followed, chain)
        if directive.version_path is not None and _inside(
            _resolved(str(directive.version_path)), chain
        ):
            raise CommandError(
                f"refusing to write a revision into {chain}, programma_sa's installed "
                "migrations: give --version-path your own versions directory"
            )


def _followed(script: ScriptDirectory, head: str | None) -> list[Script]:
    if head == "base":
        return []
    try:
        found = script.get_revisions(head or "head")
    except Exception:  # an unknown head: Alembic says so when it writes the revision
        return []
    return [item for item in found if isinstance(item, Script)]


def _own_location(script: ScriptDirectory, followed: list[Script], chain: Path) -> str | None:
    """Beside the revision followed, else the only location that is not the chain's."""
    if followed:
        return str(Path(followed[0].path).parent)
    own = [
        location
        for location in (script.version_locations or [str(Path(script.dir, "versions"))])
        if not _inside(_resolved(location), chain)
    ]
    return own[0] if len(own) == 1 else None


def _is_chain(revision: Any, chain: Path) -> bool:
    return isinstance(revision, Script) and _inside(Path(revision.path).resolve(), chain)


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _resolved(location: str) -> Path:
    return coerce_resource_to_filename(location).resolve()
