"""Retry or cancel every job the list's filter matches: counted first, then done.

``GET bulk?action=retry&<the list's filter>`` shows how many jobs the filter
matches now (:meth:`JobQueue.count_jobs`: the entries of the states it takes, from
their partial indexes) and a form; only its POST changes anything, and it takes at
most :data:`BULK_LIMIT` jobs, so one confirmation is one bounded write transaction.
When more match, the page says so, and confirming again takes the next ones.

- **retry** re-runs FAILED and CANCELLED jobs (``state`` narrows it to one) with
  :meth:`JobQueue.retry_jobs` — one statement, the oldest finished first. Re-runs
  are chosen by finish time, so the created window is refused rather than ignored.
- **cancel** cancels jobs not finished (``state``: one of them) with
  :meth:`JobQueue.cancel_job`, one statement per job listed (the queue has no cancel
  by filter); a job that finished, or was deleted, between the listing and its
  cancel is left as it is and not counted. The listing is a transaction of its own,
  before the cancels' (whose first statement is a write): on SQLite a transaction
  that reads and then writes is refused its first write when another writer
  committed in between (its snapshot is stale), or blocks that writer until it
  ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from .._session_types import SessionLike
from ..exceptions import InvalidJobInput, JobNotFound
from ..queue import JobQueue
from .actions import RERUNNABLE, UNFINISHED, cancel
from .listing import JobFilter

__all__ = ["BULK", "BULK_LIMIT", "Bulk", "Sessions"]

#: Opens a new session (the dashboard's ``session_factory``).
Sessions = Callable[[], AbstractContextManager[Session]]

#: Jobs one confirmation takes at most.
BULK_LIMIT = 1000


@dataclass(frozen=True)
class Bulk:
    """One action by filter."""

    name: str
    label: str
    #: The states it applies to: the filter's state must be one of them, and no
    #: state means all of them.
    states: tuple[str, ...]
    #: What it runs, given new sessions (each used for one transaction of its own)
    #: and the ``list_jobs`` / ``retry_jobs`` criteria; how many jobs it changed.
    run: Callable[[JobQueue, Sessions, Mapping[str, Any]], int]
    #: Criteria of the list's filter it cannot honour (refused, not ignored).
    unsupported: tuple[str, ...] = ()

    def refusal(self, where: JobFilter) -> str | None:
        """Why this action cannot take the jobs ``where`` matches (``None``: it can;
        the job list offers it only then)."""
        for name in self.unsupported:
            if getattr(where, name):
                return f"{self.name} by filter cannot use {name}; clear it from the filter"
        if where.state and where.state not in self.states:
            return (
                f"{self.name} by filter takes jobs in state {' or '.join(self.states)}; "
                f"the filter asks for {where.state!r}"
            )
        return None

    def criteria(self, where: JobFilter) -> dict[str, Any]:
        """The criteria of ``where`` for this action.

        :raises InvalidJobInput: the filter asks for what this action cannot do, or
            is malformed.
        """
        refusal = self.refusal(where)
        if refusal is not None:
            raise InvalidJobInput(refusal)
        criteria = where.criteria()
        criteria["state"] = [where.state] if where.state else list(self.states)
        return criteria

    def count(self, queue: JobQueue, session: SessionLike, where: JobFilter) -> int:
        """How many jobs match it now (one confirmation takes :data:`BULK_LIMIT`)."""
        return queue.count_jobs(session, **self.criteria(where))


def _retry(queue: JobQueue, sessions: Sessions, criteria: Mapping[str, Any]) -> int:
    with _transaction(sessions) as session:  # one statement
        return len(queue.retry_jobs(session, limit=BULK_LIMIT, **criteria))


def _cancel(queue: JobQueue, sessions: Sessions, criteria: Mapping[str, Any]) -> int:
    # Jobs not finished: listed from the claim and processing indexes, which hold
    # only those, so the listing never reads finished rows.
    with _transaction(sessions) as session:
        page = queue.list_jobs(session, limit=BULK_LIMIT, **criteria)
    with _transaction(sessions) as session:
        return sum(_cancelled(queue, session, job.id) for job in page.jobs)


@contextmanager
def _transaction(sessions: Sessions) -> Iterator[Session]:
    """A new session in a transaction, committed when the block ends without error."""
    with sessions() as session, session.begin():
        yield session


def _cancelled(queue: JobQueue, session: SessionLike, job_id: uuid.UUID) -> bool:
    try:
        return cancel(queue, session, job_id)
    except JobNotFound:  # deleted since it was listed: nothing to cancel
        return False


BULK: Mapping[str, Bulk] = {
    bulk.name: bulk
    for bulk in (
        Bulk(
            "retry",
            "Retry",
            tuple(s.value for s in RERUNNABLE),
            _retry,
            unsupported=("created_after", "created_before"),
        ),
        Bulk("cancel", "Cancel", tuple(s.value for s in UNFINISHED), _cancel),
    )
}
