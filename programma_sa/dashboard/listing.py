"""The job list's one query.

Today's :meth:`JobQueue.list_jobs` lists oldest first, by id (the primary key, so
bounded by its limit however many rows the table holds); its topic filter reads the
whole table (no index leads with the topic in id order), so the page offers no
filter: it shows the first :data:`PAGE_SIZE` jobs and says when there are more.
Filters (topic, state, time) and keyset pages come with the keyset ``list_jobs`` of
issue #15, served by its listing index: this module is the one place to change.
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
    """The first page of the jobs; one row more is read to know whether there are
    more, so the query stays bounded."""
    jobs = queue.list_jobs(session, limit=PAGE_SIZE + 1)
    return JobPage(jobs=jobs[:PAGE_SIZE], more=len(jobs) > PAGE_SIZE)
