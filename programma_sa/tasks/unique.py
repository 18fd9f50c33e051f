"""A task's unique jobs: a key derived from chosen arguments of each call.

::

    @tasks.task(unique=Unique(args=["order"], period=3600))
    def send_receipt(order: Order, note: str = "") -> None: ...

A call's key is :func:`programma_sa.unique_key` of the task's topic, of the chosen
arguments as its job's document stores them (defaults applied, so leaving an
argument out and passing its default agree) and of the period: one job per order
per clock hour above. The queue's partial unique index does the rest, as for any
job with a key (``docs/unique-jobs.md``).
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..exceptions import ConfigurationError, InvalidJobInput
from ..models import JobState
from ..uniqueness import (
    OnConflict,
    check_on_conflict,
    check_period,
    check_unique_states,
    unique_key,
)
from .arguments import Arguments

__all__ = ["Unique"]


@dataclass(frozen=True)
class Unique:
    """How a task's jobs are unique: declared with ``@registry.task(unique=Unique(...))``.

    :param args: the names of the parameters whose values make the key (``None``:
        all the arguments of the call).
    :param period: with it, the key also depends on the period of now (this many
        seconds, or this ``timedelta``, counted from the Unix epoch in UTC): one job
        per period.
    :param on_conflict: what an enqueue of a held key does: ``"keep"`` (default),
        ``"replace"`` or ``"raise"``, as in ``add_job``.
    :param states: the states in which a job holds its key (default: the
        unfinished ones), as ``add_job``'s ``unique_states``.
    """

    args: Sequence[str] | None = None
    period: timedelta | float | None = None
    on_conflict: OnConflict = "keep"
    states: Collection[JobState | str] | None = None

    def checked(self, arguments: Arguments) -> Unique:
        """These settings, checked against the task's parameters.

        :raises ConfigurationError: a setting that is wrong, named with the task.
        """
        try:
            if self.args is not None:
                _check_args(self.args, arguments.signature)
            if self.period is not None:
                check_period(self.period, "unique")
            check_on_conflict(self.on_conflict)
            if self.states is not None:
                check_unique_states(self.states)
        except InvalidJobInput as error:
            raise ConfigurationError(f"{arguments.where}: {error}") from None
        return self

    def key(self, topic: str, arguments: Arguments, document: Mapping[str, Any]) -> str:
        """The unique key of a call whose job's document is ``document``."""
        full = arguments.with_defaults(document)
        chosen = full if self.args is None else {name: full[name] for name in self.args}
        return unique_key(topic, chosen, period=self.period)


def _check_args(names: object, signature: inspect.Signature) -> None:
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise InvalidJobInput(
            f"unique: args must be a non-empty list of parameter names, got {names!r}"
        )
    for name in names:
        parameter = signature.parameters.get(name) if isinstance(name, str) else None
        if parameter is None:
            raise InvalidJobInput(f"unique: args: {name!r} is not a parameter of the function")
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            raise InvalidJobInput(
                f"unique: args: {name!r} is the **kwargs parameter; choose named "
                "parameters (or args=None: every argument)"
            )
