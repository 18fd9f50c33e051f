"""The Celery application: a broker, a queue, and the settings that keep jobs safe.

``celery -A examples.celery_fanout.celery_app worker`` runs it; the programma side
only publishes to it (:mod:`.handoff`). Broker and queue come from
``CELERY_BROKER_URL`` and ``FANOUT_QUEUE``: Redis by default, RabbitMQ with
``CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//`` (both are tested).
"""

from __future__ import annotations

import os

from celery import Celery

#: The task's name: the programma side publishes by name, never importing the task code.
SEND_EMAIL_TASK = "examples.celery_fanout.tasks.send_email"

app = Celery("celery_fanout", include=["examples.celery_fanout.tasks"])
app.conf.update(
    broker_url=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    task_default_queue=os.environ.get("FANOUT_QUEUE", "programma-fanout"),
    # A PROCESSING job is never redelivered by programma: from the hand-off on,
    # Celery owns it. Acknowledge a message only once its task has run, and give
    # it back when the worker process dies, so a crash cannot strand a job.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # No result backend, whatever the broker: the task records its outcome on the
    # job in PostgreSQL, and nothing ever waits on a Celery result.
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)
