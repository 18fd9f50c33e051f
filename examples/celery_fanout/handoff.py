"""The programma side: when a job falls due, hand it to Celery and mark it PROCESSING.

Run it with the ``programma-sa worker`` command in **transaction** mode::

    programma-sa worker examples.celery_fanout.handoff:hand_off \\
        --topic send-email --mode transaction

Why transaction mode: the claim holds the job's row lock until the worker commits,
and the publish happens inside that transaction. A Celery task that starts (and
finishes) before the commit has its ``move_job_to_done`` wait for the lock, so it
always lands *after* PROCESSING. Published and then marked PROCESSING in a
transaction of its own (lease mode with ``ctx.move_to_processing()``), a fast task's
COMPLETED could be overwritten by PROCESSING, and the job would stay there for good.

If publishing fails (broker down), the handler raises: the worker rolls its
savepoint back, records ``last_error`` and retries the job after its backoff.
"""

from __future__ import annotations

from celery import Celery

from programma_sa import JobContext

from .celery_app import SEND_EMAIL_TASK, app

#: Give up publishing quickly: the job's row stays locked while we try.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}


class HandOff:
    """A handler that publishes each job to a Celery app as ``SEND_EMAIL_TASK``."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def __call__(self, ctx: JobContext) -> None:
        job = ctx.job
        message = self.celery.send_task(
            SEND_EMAIL_TASK,
            args=(str(job.id), job.data),
            retry=True,
            retry_policy=PUBLISH_RETRY,
        )
        ctx.set_attributes({"celery_task_id": message.id})
        ctx.move_to_processing()


hand_off = HandOff(app)
