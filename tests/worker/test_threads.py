"""What only the sync Worker has: ``JobQueue.process_jobs``, handler threads (uncancellable).

Everything the two workers share is in ``tests/workers/``.
"""

from __future__ import annotations

import threading

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from programma_sa import JobContext, JobQueue, JobState, PassResult, Worker

from ..workers.support import blocking_wait_for, enqueue, get_job


def test_process_jobs_is_the_seed_shaped_entry_point(engine: Engine, queue: JobQueue) -> None:
    """``process_jobs`` starts a Worker the npm package's way: the handler steers its job."""
    (done_id, untouched_id) = enqueue(engine, queue, "emails", n=2, retry_after_seconds=30)
    handled = []

    def handler(ctx: JobContext) -> None:
        if ctx.job.id == done_id:
            ctx.move_to_done()
        handled.append(ctx.job.id)

    worker = queue.process_jobs(
        sessionmaker(engine), handler, topic_name="emails", heart_beat=0.1, max_jobs=5
    )
    try:
        # Both handlers ran (a claimed job not started yet is released at stop).
        blocking_wait_for(lambda: len(handled) == 2 and worker.totals.claimed == 2)
    finally:
        worker.stop()
        assert worker.join(10)
    assert get_job(engine, queue, done_id).state is JobState.COMPLETED
    assert get_job(engine, queue, untouched_id).state is JobState.ACTIVE  # the seed's way
    assert worker.totals == PassResult(claimed=2, left_untouched=2)


def test_shutdown_timeout_leaves_a_stuck_job_to_its_visibility_timeout(
    engine: Engine, queue: JobQueue
) -> None:
    """A handler thread cannot be cancelled: the loop stops waiting for it after
    ``shutdown_timeout`` and its job keeps its lease."""
    running, release = threading.Event(), threading.Event()

    def handler(ctx: JobContext) -> None:
        running.set()
        release.wait(10)

    worker = Worker(queue, engine, "t", handler, heartbeat=0.1, shutdown_timeout=0.2, listen=False)
    worker.start()
    (job_id,) = enqueue(engine, queue)
    try:
        assert running.wait(10)
        worker.stop()
        assert worker.join(5)  # gave up waiting after 0.2 s
        assert get_job(engine, queue, job_id).state is JobState.ACTIVE
    finally:
        release.set()
        worker.stop()
