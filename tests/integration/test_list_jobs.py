"""``JobQueue.list_jobs``: the jobs a session sees, oldest first."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from programma_sa import InvalidJobInput, JobQueue


def test_lists_oldest_first_by_topic_up_to_the_limit(session: Session, queue: JobQueue) -> None:
    ids = [queue.add_job(session, "a" if n % 2 else "b", {"n": n}) for n in range(5)]

    assert [job.id for job in queue.list_jobs(session)] == ids
    assert [job.id for job in queue.list_jobs(session, "a")] == ids[1::2]
    assert [job.id for job in queue.list_jobs(session, limit=2)] == ids[:2]
    assert [job.id for job in queue.list_jobs(session, "b", limit=None)] == ids[0::2]
    assert queue.list_jobs(session, "c") == []


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_a_bad_limit_is_refused(session: Session, queue: JobQueue, limit: object) -> None:
    with pytest.raises(InvalidJobInput) as refused:
        queue.list_jobs(session, limit=limit)  # type: ignore[arg-type]
    assert str(refused.value) == f"limit must be an int >= 1 or None, got {limit!r}"
