"""One head: an application's own Alembic revision applies programma_sa's migration steps.

Oban's ``Oban.Migration.up(version: N)`` is the model. ``programma-sa alembic
revision`` writes a revision into the application's own versions directory, after
its head::

    from alembic import op
    from programma_sa import migrations

    #: The programma_sa migration steps this revision applies to its jobs table.
    programma_steps = migrations.Steps(start=None, end="programma_0002")

    def upgrade():
        migrations.upgrade_steps(op, programma_steps)

    def downgrade():
        migrations.downgrade_steps(op, programma_steps)

``upgrade_steps`` runs the shipped revisions after ``start`` up to ``end`` with the
application's ``op`` — on its connection, in its transaction, or into its ``--sql``
script — and ``downgrade_steps`` undoes them. The application keeps a single head,
so ``alembic upgrade head``, ``downgrade -1``, ``revision --autogenerate`` and
``flask db upgrade/migrate/downgrade`` work as they always did. A later
programma-sa with a step ``programma_0003`` means one more such revision, from
``programma_0002`` to ``programma_0003``; the command finds ``start`` in the
application's chain.

The range is written into the revision rather than read from the database, so the
revision does the same thing online and offline, and each step is applied by exactly
one revision of the chain (the command refuses to write a second one for a step the
chain already applies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alembic import op as alembic_op

from .._validation import check_identifier, check_table_name
from ..exceptions import ConfigurationError
from ..models import DEFAULT_TABLE_NAME
from ._chain import acting_on, scripts_between

__all__ = ["STEPS_ATTRIBUTE", "Steps", "downgrade_steps", "upgrade_steps"]

#: The module attribute of an application revision holding its :class:`Steps`
#: (``programma-sa alembic revision`` reads it to find where the chain stands).
STEPS_ATTRIBUTE = "programma_steps"


@dataclass(frozen=True)
class Steps:
    """The programma_sa migration steps one application revision applies to one jobs table.

    :param start: the step the application's chain reached before this revision
        (``None``: no jobs table yet).
    :param end: the step this revision brings the table to, e.g. ``"programma_0002"``.
    :param table_name: the jobs table (``__tablename__`` of the model).
    :param schema: its schema (``programma_schema`` of the model); ``None``: the search path.

    Checked when built: unknown step names, a range that goes backwards, or names
    that are not identifiers raise :class:`~programma_sa.exceptions.ConfigurationError`.
    """

    start: str | None
    end: str
    table_name: str = DEFAULT_TABLE_NAME
    schema: str | None = None

    def __post_init__(self) -> None:
        check_table_name(self.table_name, "table_name")
        if self.schema is not None:
            check_identifier(self.schema, "schema")
        scripts_between(self.start, self.end)  # raises for bad names and ranges


def upgrade_steps(op: Any, steps: Steps) -> None:
    """Apply ``steps`` (from ``steps.start`` up to ``steps.end``) in an application revision.

    Call it from the revision's ``upgrade()`` with Alembic's ``op``: the shipped
    revisions run on the application's migration context — its connection and
    transaction online, its script with ``--sql``.
    """
    _check_op(op)
    with acting_on(steps.table_name, steps.schema):
        for script in scripts_between(steps.start, steps.end):
            script.module.upgrade()


def downgrade_steps(op: Any, steps: Steps) -> None:
    """Undo ``steps`` (from ``steps.end`` back to ``steps.start``) in an application revision.

    Call it from the revision's ``downgrade()`` with Alembic's ``op``. Undoing the
    first step (``start=None``) drops the jobs table and its rows.
    """
    _check_op(op)
    with acting_on(steps.table_name, steps.schema):
        for script in reversed(scripts_between(steps.start, steps.end)):
            script.module.downgrade()


def _check_op(op: Any) -> None:
    """The shipped revisions use ``alembic.op``: ``op`` must be the running migration's."""
    try:
        running = alembic_op.get_context()
    except (NameError, AttributeError):
        # No migration is running: Alembic's proxy raises NameError before the first
        # migration of the process, AttributeError (its proxy reset to None) after one.
        running = None
    get_context = getattr(op, "get_context", None)
    if running is None or get_context is None or get_context() is not running:
        raise ConfigurationError(
            "upgrade_steps/downgrade_steps run inside an Alembic migration: call them "
            "from a revision's upgrade()/downgrade() with `from alembic import op`"
        )
