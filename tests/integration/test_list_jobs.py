"""``JobQueue.list_jobs``: the jobs a session sees, newest first, a page at a time."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from programma_sa import InvalidJobInput, JobQueue


def test_lists_newest_first_by_topic_a_page_at_a_time(session: Session, queue: JobQueue) -> None:
    ids = [queue.add_job(session, "a" if n % 2 else "b", {"n": n}) for n in range(5)]
    newest_first = ids[::-1]

    assert [job.id for job in queue.list_jobs(session).jobs] == newest_first
    assert [job.id for job in queue.list_jobs(session, topic="a").jobs] == newest_first[1::2]
    first = queue.list_jobs(session, limit=2)
    assert [job.id for job in first.jobs] == newest_first[:2]
    rest = queue.list_jobs(session, cursor=first.next_cursor, limit=10)
    assert [job.id for job in rest.jobs] == newest_first[2:] and rest.next_cursor is None
    assert queue.list_jobs(session, topic="c").jobs == []


@pytest.mark.parametrize("limit", [0, -1, 2.5, True, None])
def test_a_bad_limit_is_refused(session: Session, queue: JobQueue, limit: object) -> None:
    with pytest.raises(InvalidJobInput) as refused:
        queue.list_jobs(session, limit=limit)  # type: ignore[arg-type]
    assert str(refused.value) == f"limit must be an int from 1 to 1000; got {limit!r}"
