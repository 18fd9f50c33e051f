"""Every action the dashboard offers, in one table.

An action is a POST to ``actions/<name>``: it changes one job (``job_id``) or one
topic (``topic``) through the public :class:`~programma_sa.JobQueue` API, in a
transaction of the dashboard's own. The routing, the read-only flag, the CSRF check
and the host's permission hook (asked with the action's name) are the same for all
of them (:mod:`.app`), so a new action is one :class:`Action` in :data:`ACTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._job_records import JobDetail
from .._session_types import SessionLike
from ..exceptions import InvalidJobInput
from ..models import JobState
from ..queue import JobQueue

__all__ = ["ACTIONS", "Action", "ActionRefused"]

#: What an action runs: the queue, the session, the job id or topic, the form.
#: True when it changed something; False when there was nothing to change.
Run = Callable[[JobQueue, SessionLike, str, Mapping[str, str]], bool]


class ActionRefused(InvalidJobInput):
    """An action's form was incomplete; nothing was written."""


@dataclass(frozen=True)
class Action:
    """One action: its form, what it runs and where the browser goes afterwards."""

    name: str
    #: The button's text.
    label: str
    #: What the action changes: a job (form field ``job_id``) or a topic (``topic``).
    target: Literal["job", "topic"]
    run: Run
    #: Whether its page offers it: given the job (a ``JobDetail``) or the topic's
    #: figures (a ``TopicStats``).
    offered: Callable[[Any], bool] = lambda target: True
    #: Further form fields, each required (rendered as text inputs).
    fields: tuple[str, ...] = ()
    #: Where to go when it is done: the target's own page, or the job list (the
    #: target no longer exists).
    then: Literal["target", "list"] = "target"


def _field(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise ActionRefused(f"the form's {name!r} field is missing or empty")
    return value


def _delete(queue: JobQueue, session: SessionLike, job_id: str, form: Mapping[str, str]) -> bool:
    return queue.delete_job(session, job_id)


def _reschedule(
    queue: JobQueue, session: SessionLike, job_id: str, form: Mapping[str, str]
) -> bool:
    return queue.set_job_start_date(session, job_id, _field(form, "start_after"))


def _waiting(job: JobDetail) -> bool:
    """Not claimed for good nor finished: a new start time means something."""
    return job.state in (JobState.CREATED, JobState.ACTIVE)


ACTIONS: Mapping[str, Action] = {
    action.name: action
    for action in (
        Action(
            "reschedule",
            "Reschedule",
            "job",
            _reschedule,
            offered=lambda job: _waiting(job),
            fields=("start_after",),
        ),
        Action("delete", "Delete", "job", _delete, then="list"),
    )
}
