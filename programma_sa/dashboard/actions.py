"""Every action the dashboard offers, in one table.

An action is a POST to ``actions/<name>``: it changes one job (``job_id``) or one
topic (``topic``) through the public :class:`~programma_sa.JobQueue` API, in a
transaction of the dashboard's own. The routing, the read-only flag, the CSRF check
and the host's permission hook (asked with the action's name) are the same for all
of them (:mod:`.app`), so a new action is one :class:`Action` in :data:`ACTIONS`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._job_records import CancelOutcome, JobDetail
from .._session_types import SessionLike
from ..exceptions import InvalidJobInput
from ..models import JobState
from ..queue import JobQueue

__all__ = ["ACTIONS", "RERUNNABLE", "UNFINISHED", "Action", "ActionRefused", "TopicView", "cancel"]

#: What an action runs: the queue, the session, the job id or topic, the form.
#: True when it changed something; False when there was nothing to change.
Run = Callable[[JobQueue, SessionLike, str, Mapping[str, str]], bool]


class ActionRefused(InvalidJobInput):
    """An action's form was incomplete; nothing was written."""


@dataclass(frozen=True)
class TopicView:
    """What a topic action's ``offered`` is given: the topic and whether it is paused."""

    topic: str
    paused: bool


@dataclass(frozen=True)
class Action:
    """One action: its form, what it runs and where the browser goes afterwards."""

    name: str
    #: The button's text.
    label: str
    #: What the action changes: a job (form field ``job_id``) or a topic (``topic``).
    target: Literal["job", "topic"]
    run: Run
    #: Whether its page offers it: given the job (a ``JobDetail``) or the topic (a
    #: :class:`TopicView`).
    offered: Callable[[Any], bool] = lambda target: True
    #: Further form fields, each required (rendered as text inputs).
    fields: tuple[str, ...] = ()
    #: Where to go when it is done: the target's own page, or the job list (the
    #: target no longer exists).
    then: Literal["target", "list"] = "target"


def required_field(form: Mapping[str, str], name: str) -> str:
    """The form's ``name`` field, stripped; refused when missing or empty."""
    value = form.get(name, "").strip()
    if not value:
        raise ActionRefused(f"the form's {name!r} field is missing or empty")
    return value


def _delete(queue: JobQueue, session: SessionLike, job_id: str, form: Mapping[str, str]) -> bool:
    return queue.delete_job(session, job_id)


def _reschedule(
    queue: JobQueue, session: SessionLike, job_id: str, form: Mapping[str, str]
) -> bool:
    return queue.set_job_start_date(session, job_id, required_field(form, "start_after"))


def cancel(queue: JobQueue, session: SessionLike, job_id: str | uuid.UUID) -> bool:
    """Cancel one job; False when it had finished already. (REQUESTED counts as
    done: the worker running it ends it CANCELLED.)"""
    return queue.cancel_job(session, job_id) is not CancelOutcome.ALREADY_FINISHED


def _cancel(queue: JobQueue, session: SessionLike, job_id: str, form: Mapping[str, str]) -> bool:
    return cancel(queue, session, job_id)


def _retry(queue: JobQueue, session: SessionLike, job_id: str, form: Mapping[str, str]) -> bool:
    queue.retry_job(session, job_id)  # refuses (InvalidJobInput) a job not FAILED/CANCELLED
    return True


def _pause(queue: JobQueue, session: SessionLike, topic: str, form: Mapping[str, str]) -> bool:
    return queue.pause_topic(session, topic)


def _resume(queue: JobQueue, session: SessionLike, topic: str, form: Mapping[str, str]) -> bool:
    return queue.resume_topic(session, topic)


def _waiting(job: JobDetail) -> bool:
    """Not claimed for good nor finished: a new start time means something."""
    return job.state in (JobState.CREATED, JobState.ACTIVE)


#: The states a job can be cancelled in (not finished), and re-run from.
UNFINISHED = (JobState.CREATED, JobState.ACTIVE, JobState.PROCESSING)
RERUNNABLE = (JobState.FAILED, JobState.CANCELLED)


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
        Action("cancel", "Cancel", "job", _cancel, offered=lambda job: job.state in UNFINISHED),
        Action("retry", "Retry", "job", _retry, offered=lambda job: job.state in RERUNNABLE),
        Action("delete", "Delete", "job", _delete, then="list"),
        Action("pause", "Pause", "topic", _pause, offered=lambda topic: not topic.paused),
        Action("resume", "Resume", "topic", _resume, offered=lambda topic: topic.paused),
    )
}
