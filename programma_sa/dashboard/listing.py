"""The job list: its filter, read from the page's query string, and its pages.

Every criterion is one of :meth:`JobQueue.list_jobs`'s, which checks them (a bad
state, a malformed time or cursor is refused with the library's own message), and
pages are its keyset pages: newest first, the next page named by the last id shown
(``cursor``), so jobs added while someone pages never shift what they see. Each page
reads the page size plus one row, through the index its criteria choose (see
docs/control.md), whatever the number of finished rows.

Text in attributes is a JSON object the job's attributes *contain* (``list_jobs``'s
``attributes`` criterion, served by a containment test); a free-text search inside
attribute values is not offered: no index could serve it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .._job_records import JobDetail
from .._session_types import SessionLike
from ..exceptions import InvalidJobInput
from ..queue import JobQueue

__all__ = ["PAGE_SIZE", "JobFilter", "JobPage", "job_page"]

#: Jobs per page.
PAGE_SIZE = 50


@dataclass(frozen=True)
class JobFilter:
    """The list's criteria as the form gives them (empty: not given)."""

    topic: str = ""
    state: str = ""
    created_after: str = ""
    created_before: str = ""
    finished_after: str = ""
    finished_before: str = ""
    error_type: str = ""
    #: A JSON object the attributes contain, e.g. ``{"tenant": "acme"}``.
    attributes: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> JobFilter:
        """The filter of a query string (other keys ignored; values stripped)."""
        return cls(**{f.name: query.get(f.name, "").strip() for f in fields(cls)})

    def given(self) -> dict[str, str]:
        """The criteria given, by name: what a link keeps of the filter."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    def criteria(self) -> dict[str, Any]:
        """The ``list_jobs`` / ``retry_jobs`` keywords of the criteria given.

        :raises InvalidJobInput: ``attributes`` is not JSON (the library checks the
            rest, and that it is an object).
        """
        criteria: dict[str, Any] = dict(self.given())
        if self.attributes:
            try:
                criteria["attributes"] = json.loads(self.attributes)
            except ValueError:
                raise InvalidJobInput(
                    f'attributes must be a JSON object such as {{"key": "value"}}; '
                    f"got {self.attributes!r}"
                ) from None
        return criteria


@dataclass(frozen=True)
class JobPage:
    """One page of the job list."""

    jobs: list[JobDetail]
    #: The cursor of the next page; ``None`` on the last one.
    next_cursor: uuid.UUID | None

    @property
    def more(self) -> bool:
        """More jobs match than the page shows."""
        return self.next_cursor is not None


def job_page(queue: JobQueue, session: SessionLike, where: JobFilter, cursor: str = "") -> JobPage:
    """One page of the jobs matching ``where``, newest first, after ``cursor`` (the
    last id of the page before; empty: the first page).

    :raises InvalidJobInput: a criterion or the cursor is malformed.
    """
    page = queue.list_jobs(session, cursor=cursor or None, limit=PAGE_SIZE, **where.criteria())
    return JobPage(jobs=page.jobs, next_cursor=page.next_cursor)
