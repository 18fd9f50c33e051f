"""The job list's one query.

:meth:`JobQueue.list_jobs` (issue #15) lists newest first, keyset-paginated by id;
without a filter it reads the primary key backwards, bounded by its limit however
many rows the table holds. The page shows the newest :data:`PAGE_SIZE` jobs and
says when there are more. The listing's filters (topic, state, time windows) and
its next pages are there to offer here: this module is the one place to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._job_records import JobDetail
from .._session_types import SessionLike
from ..queue import JobQueue

__all__ = ["PAGE_SIZE", "JobPage", "job_page"]

#: Jobs per page.
PAGE_SIZE = 50


@dataclass(frozen=True)
class JobPage:
    """One page of the job list."""

    jobs: list[JobDetail]
    #: More jobs match than the page shows.
    more: bool


def job_page(queue: JobQueue, session: SessionLike) -> JobPage:
    """The first page of the jobs, newest first (the listing reads one row more to
    know whether there are more, so the query stays bounded)."""
    page = queue.list_jobs(session, limit=PAGE_SIZE)
    return JobPage(jobs=page.jobs, more=page.next_cursor is not None)
