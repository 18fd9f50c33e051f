"""``programma-sa alembic revision``: write the application revision that applies programma's steps.

The one-head way (:mod:`programma_sa.migrations._steps`): the jobs table is created
and upgraded by revisions of the application's own chain. This command writes the
next one — in the application's versions directory, after its head, from the
application's own ``script.py.mako`` (so its post-write hooks, black or ruff, run
too)::

    programma-sa alembic revision                          # alembic.ini in this directory
    programma-sa alembic revision --directory migrations   # Flask-Migrate

It finds where the application's chain already brought the jobs table (the
``programma_steps`` of its latest revision naming that table) and writes the steps
from there to the newest one this programma-sa ships; with nothing left to apply it
writes nothing and says so.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError, rev_id

from .._validation import check_identifier, check_table_name
from ..exceptions import ConfigurationError
from ..models import DEFAULT_TABLE_NAME
from ._chain import BRANCH_LABEL, head, version_location
from ._steps import STEPS_ATTRIBUTE, Steps

if TYPE_CHECKING:
    from ..cli import Subcommands

__all__ = ["AppRevision", "alembic_config", "register_alembic", "write_app_revision"]


@dataclass(frozen=True)
class AppRevision:
    """What :func:`write_app_revision` wrote: the file, its revision id, and its steps."""

    path: Path
    revision: str
    steps: Steps


def alembic_config(
    config_file: str | None = None, *, directory: str | None = None, name: str = "alembic"
) -> Config:
    """The application's Alembic ``Config``, found as ``alembic`` or Flask-Migrate finds it.

    ``directory`` is Flask-Migrate's migrations directory (its ``alembic.ini``
    inside, ``script_location`` the directory itself); otherwise ``config_file``
    (default ``alembic.ini``) and, as the ``alembic`` command does, a
    ``pyproject.toml`` in the current directory.
    """
    if directory is not None:
        ini = Path(config_file) if config_file is not None else Path(directory, "alembic.ini")
        config = Config(str(ini), ini_section=name)
        config.set_main_option("script_location", str(directory))
        return config
    ini = Path(config_file or "alembic.ini")
    toml = Path("pyproject.toml")
    # [tool.alembic] exists since Alembic 1.16, whose Config reads it with toml_file.
    uses_toml = toml.exists() and "[tool.alembic]" in toml.read_text()
    if not ini.exists() and not uses_toml:
        raise ConfigurationError(
            f"no Alembic configuration: {ini.resolve()} does not exist (give your "
            "alembic.ini with -c FILE, or Flask-Migrate's directory with --directory DIR)"
        )
    file_ = str(ini) if ini.exists() else None
    if uses_toml:
        return Config(file_, toml_file=str(toml), ini_section=name)
    return Config(file_, ini_section=name)


def write_app_revision(
    config: Config,
    *,
    table_name: str = DEFAULT_TABLE_NAME,
    schema: str | None = None,
    to: str | None = None,
    message: str | None = None,
    head_revision: str | None = None,
    version_path: str | None = None,
) -> AppRevision:
    """Write the application revision taking ``table_name`` (in ``schema``) to step ``to``.

    ``to`` defaults to the newest step this programma-sa ships; the revision starts
    from where the application's chain (up to ``head_revision``, default its only
    head) already brought that table. Raises :class:`ConfigurationError` when there
    is nothing to apply, when the project also applies programma's chain as a
    branch, or when the chain has several heads and none was named.
    """
    check_table_name(table_name, "--table")
    if schema is not None:
        check_identifier(schema, "--schema")
    try:
        script = ScriptDirectory.from_config(config)
        _refuse_the_branch(script)
        follows = _head_to_follow(script, head_revision)
        previous = _latest_steps(script, follows, table_name, schema)
    except CommandError as error:
        raise ConfigurationError(str(error)) from error
    steps = Steps(
        start=None if previous is None else previous[1].end,
        end=to or head(),
        table_name=table_name,
        schema=schema,
    )
    if steps.start == steps.end:
        assert previous is not None
        raise ConfigurationError(
            f"nothing to write: revision {previous[0].revision} already takes "
            f"{_qualified(table_name, schema)} to {steps.end}, the newest programma_sa "
            "migration step"
            + ("" if to else " of this release (a newer programma-sa may have more)")
        )
    target = to or steps.end
    written = script.generate_revision(
        rev_id(),
        message or f"{_qualified(table_name, schema)} to {target}",
        head=follows,
        version_path=version_path,
        imports=_module_lines(steps),
        upgrades=f"migrations.upgrade_steps(op, {STEPS_ATTRIBUTE})",
        downgrades=f"migrations.downgrade_steps(op, {STEPS_ATTRIBUTE})",
    )
    assert written is not None
    path = Path(written.path)
    if "upgrade_steps(op" not in path.read_text():
        path.unlink()
        raise ConfigurationError(
            f"the revision template {Path(script.dir, 'script.py.mako')} has no "
            "${upgrades} / ${downgrades} in upgrade() and downgrade() (a multi-database "
            "template?): write the revision by hand, as docs/alembic.md shows"
        )
    return AppRevision(path=path, revision=written.revision, steps=steps)


def _refuse_the_branch(script: ScriptDirectory) -> None:
    """Refuse a project that also applies the chain as a branch: the table would be made twice."""
    chain = Path(version_location())
    found = next(
        (
            f"revision {revision.revision} from {chain}"
            for revision in script.walk_revisions()
            if chain in Path(revision.path).resolve().parents
        ),
        None,
    )
    env_py = Path(script.dir, "env.py")
    if found is None and env_py.exists() and "include_branch(" in env_py.read_text():
        found = f"{env_py} calls include_branch"
    if found is not None:
        raise ConfigurationError(
            f"this project applies programma's chain as a branch ({BRANCH_LABEL}: {found}): "
            "an application revision applying the same steps would create the jobs table "
            "twice. Use one way: remove the branch (docs/alembic.md says how to switch) or "
            "keep it without this command"
        )


def _head_to_follow(script: ScriptDirectory, head_revision: str | None) -> str:
    if head_revision is not None:
        return head_revision
    heads = script.get_heads()
    if len(heads) > 1:
        raise ConfigurationError(
            f"the chain has several heads ({', '.join(heads)}): say which one the "
            "revision follows with --head, or merge them first (alembic merge heads)"
        )
    return heads[0] if heads else "base"


def _latest_steps(
    script: ScriptDirectory, follows: str, table_name: str, schema: str | None
) -> tuple[Script, Steps] | None:
    """The latest revision up to ``follows`` that applies steps to this table, and its steps."""
    if follows == "base":
        return None
    for revision in script.walk_revisions(base="base", head=follows):
        steps = getattr(revision.module, STEPS_ATTRIBUTE, None)
        if isinstance(steps, Steps) and steps.table_name == table_name and steps.schema == schema:
            return revision, steps
    return None


def _module_lines(steps: Steps) -> str:
    arguments = [f"start={steps.start!r}", f"end={steps.end!r}"]
    if steps.table_name != DEFAULT_TABLE_NAME:
        arguments.append(f"table_name={steps.table_name!r}")
    if steps.schema is not None:
        arguments.append(f"schema={steps.schema!r}")
    return (
        "from programma_sa import migrations\n\n"
        "# The programma_sa migration steps this revision applies to the jobs table\n"
        "# (written by `programma-sa alembic revision`; the next such revision starts\n"
        "# where this one ends).\n"
        f"{STEPS_ATTRIBUTE} = migrations.Steps({', '.join(arguments)})\n"
    )


def _qualified(name: str, schema: str | None) -> str:
    return name if schema is None else f"{schema}.{name}"


# -- the command line ----------------------------------------------------------------


def _run_revision(args: argparse.Namespace) -> int:
    config = alembic_config(args.config, directory=args.directory, name=args.name)
    written = write_app_revision(
        config,
        table_name=args.table,
        schema=args.schema,
        to=args.to,
        message=args.message,
        head_revision=args.head,
        version_path=args.version_path,
    )
    steps = written.steps
    print(
        f"wrote {written.path}: revision {written.revision} takes "
        f"{_qualified(steps.table_name, steps.schema)} from {steps.start or 'nothing'} "
        f"to {steps.end}; apply it with alembic upgrade head (flask db upgrade)"
    )
    return 0


def register_alembic(commands: Subcommands) -> None:
    """``programma-sa alembic revision``: registered by :mod:`programma_sa.cli`."""
    parser = commands.add(
        "alembic",
        _run_revision,
        help="write your Alembic revision that applies programma's migration steps",
        description="Work with your own Alembic setup (the one-head way, docs/alembic.md).",
        table_options=False,
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    revision = actions.add_parser(
        "revision",
        help="write the revision that brings the jobs table to programma's newest step",
        description="Write a revision into your own versions directory, after your head, "
        "whose upgrade() applies programma_sa's migration steps (from where your chain "
        "left the jobs table to the newest step) and whose downgrade() undoes them. "
        "Your chain keeps one head: alembic upgrade head / flask db upgrade apply it.",
    )
    revision.set_defaults(run=_run_revision, command_parser=revision)
    revision.add_argument(
        "-c", "--config", metavar="FILE", help="your alembic.ini (default: ./alembic.ini)"
    )
    revision.add_argument(
        "-d",
        "--directory",
        metavar="DIR",
        help="Flask-Migrate's migrations directory (its alembic.ini inside)",
    )
    revision.add_argument(
        "-n", "--name", default="alembic", help="the ini section (default: alembic)"
    )
    revision.add_argument("-m", "--message", help="the revision's message")
    revision.add_argument(
        "--to", metavar="STEP", help="the step to bring the table to (default: the newest)"
    )
    revision.add_argument(
        "--head", metavar="REVISION", help="the revision it follows (default: your only head)"
    )
    revision.add_argument(
        "--version-path", metavar="DIR", help="where to write it (default: beside your head)"
    )
    revision.add_argument(
        "--table",
        type=_checked(check_table_name, "--table"),
        default=DEFAULT_TABLE_NAME,
        metavar="NAME",
        help=f"the jobs table (default: {DEFAULT_TABLE_NAME})",
    )
    revision.add_argument(
        "--schema",
        type=_checked(check_identifier, "--schema"),
        metavar="NAME",
        help="the jobs table's schema (default: search path)",
    )


def _checked(check: Callable[[str, str], str], what: str) -> Callable[[str], str]:
    """An argparse ``type``: a bad name is a usage error (exit 2), as for other commands."""

    def parse(text: str) -> str:
        try:
            return check(text, what)
        except ConfigurationError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse
