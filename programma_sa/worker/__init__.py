"""The worker: claim jobs, run a handler on each, write the outcome.

* :mod:`.settings` — :class:`WorkerSettings`, every setting checked once;
* :mod:`.decisions` — what both workers decide, free of I/O, as generators of
  :mod:`.steps`;
* :mod:`.sync_driver` — :class:`Worker`: sessions, handler threads;
* :mod:`.async_driver` — :class:`~programma_sa.AsyncWorker`: async sessions, tasks;
* :mod:`.listen` — LISTEN/NOTIFY wake-ups;
* :mod:`.duties` — periodic work between claims (pruning).

``from programma_sa.worker import Worker, JobContext`` is the public path of the sync
worker; ``programma_sa.aio_worker`` that of the async one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from .. import queue as _queue_module
from ..queue import JobQueue
from .results import PassResult
from .settings import WorkerMode, WorkerOptions, WorkerSettings
from .sync_driver import Handler, JobContext, Worker

__all__ = [
    "Handler",
    "JobContext",
    "PassResult",
    "Worker",
    "WorkerMode",
    "WorkerOptions",
    "WorkerSettings",
    "process_jobs",
]


def process_jobs(
    queue: JobQueue,
    bind: Engine | Callable[[], Session],
    handler: Handler,
    *,
    topic_name: str | Sequence[str],
    heart_beat: float = 5.0,
    max_jobs: int = 10,
    **options: Any,
) -> Worker:
    """The npm package's ``processJobs``: start a :class:`Worker` in a background
    thread and return it (``worker.stop()`` ends it); see
    :meth:`JobQueue.process_jobs <programma_sa.JobQueue.process_jobs>`."""
    options.setdefault("auto_complete", False)
    options.setdefault("retry", None)
    worker = Worker(
        queue, bind, topic_name, handler, heartbeat=heart_beat, max_jobs=max_jobs, **options
    )
    worker.start()
    return worker


_queue_module.set_worker_starter(process_jobs)
