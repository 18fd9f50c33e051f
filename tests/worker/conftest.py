"""Fixtures for worker tests: workers on the session's test database, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from programma_sa import JobQueue, Worker

MakeWorker = Callable[..., Worker]


@pytest.fixture
def make_worker(queue: JobQueue, engine: Engine) -> Iterator[MakeWorker]:
    """Build workers on the test database (lease mode, polling only unless asked)."""
    workers: list[Worker] = []

    def make(
        handler: Callable[..., object],
        topics: object = "t",
        *,
        bind: object = engine,
        **settings: Any,
    ) -> Worker:
        settings.setdefault("listen", False)
        worker = Worker(queue, bind, topics, handler, **settings)  # type: ignore[arg-type]
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()
    for worker in workers:
        assert worker.join(10), "a worker did not stop"
