"""The Celery side: do the work, then move the programma job to COMPLETED — or, once
Celery's own retries are exhausted, to FAILED with the error recorded on the job.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from .celery_app import SEND_EMAIL_TASK, app
from .models import queue, sessions


class DeliveryError(Exception):
    """The mail server refused the message (worth retrying)."""


def deliver(data: dict[str, Any]) -> None:
    """The heavy work. Addresses at ``.invalid`` domains never get through."""
    if data["email"].endswith(".invalid"):
        raise DeliveryError(f"no mail server for {data['email']}")


class TrackedTask(Task):  # type: ignore[misc]  # Celery ships no type hints
    """A task whose first argument is a programma job id; its final failure is recorded."""

    def on_failure(
        self, exc: Exception, task_id: str, args: tuple[Any, ...], kwargs: Any, einfo: Any
    ) -> None:
        # Called once, after the last retry (on_retry covers the ones before).
        job_id = args[0]
        error = {
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": str(exc),
            "celery_task_id": task_id,
            "celery_retries": self.request.retries,
        }
        with sessions().begin() as session:
            queue.move_job_to_failed(session, job_id)
            queue.set_attributes(session, job_id, {"error": error})


@app.task(  # type: ignore[untyped-decorator]  # Celery ships no type hints
    base=TrackedTask,
    name=SEND_EMAIL_TASK,
    autoretry_for=(DeliveryError,),
    max_retries=2,
    default_retry_delay=1,
)
def send_email(job_id: str, data: dict[str, Any]) -> None:
    deliver(data)
    with sessions().begin() as session:
        queue.move_job_to_done(session, job_id)
