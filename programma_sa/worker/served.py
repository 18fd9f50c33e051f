"""What a worker serves: a queue, its topics and one handler — or a source of all three.

``Worker(queue, bind, topics, handler)`` serves one handler on some topics. In
place of the queue a worker also takes a :class:`HandlerSource` — a task registry
(:class:`programma_sa.tasks.TaskRegistry`), named here by what it does since the
worker is a layer below it — which gives the queue, the topics of its tasks, one
handler dispatching by topic, and the settings its tasks ask for::

    Worker(registry, engine, mode="transaction")   # every task the mode serves
    Worker(registry, engine, ["emails"])           # only these tasks' topics
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..exceptions import ConfigurationError
from .settings import WorkerOptions

__all__ = ["HandlerSource", "WorkerParts", "worker_parts"]


@dataclass(frozen=True)
class WorkerParts:
    """What a worker is built from: its queue, topics, handler and settings."""

    queue: object
    topics: str | Sequence[str]
    handler: object
    options: WorkerOptions


@runtime_checkable
class HandlerSource(Protocol):
    """What a worker accepts in place of its queue (a task registry)."""

    def worker_parts(
        self, topics: str | Sequence[str] | None, options: WorkerOptions, *, asynchronous: bool
    ) -> WorkerParts:
        """The parts of a worker (``asynchronous``: an ``AsyncWorker``) serving
        ``topics`` (``None``: all it can) with ``options`` as given by the caller."""
        ...


def worker_parts(
    queue: object,
    topics: str | Sequence[str] | None,
    handler: object,
    options: WorkerOptions,
    *,
    asynchronous: bool,
) -> WorkerParts:
    """The parts of a worker built with these arguments (see the module docs)."""
    if isinstance(queue, HandlerSource):
        if handler is not None:
            raise ConfigurationError(
                "a worker given a task registry takes no handler: the registry "
                "dispatches each job to the task of its topic"
            )
        return queue.worker_parts(topics, options, asynchronous=asynchronous)
    if topics is None or handler is None:
        raise ConfigurationError(
            "a worker needs topics and a handler (or a task registry in place of its queue)"
        )
    return WorkerParts(queue, topics, handler, options)
