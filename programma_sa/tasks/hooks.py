"""Hooks around each run of a task: before, after, on failure — contained, never fatal.

A hook is a plain function taking a :class:`TaskRun`; it is registered on a
registry (for every task) or on one task, with a decorator::

    @registry.before
    def note_start(run: TaskRun) -> None:
        metrics.started(run.task.topic)

    @send_receipt.on_failure
    def alert(run: TaskRun) -> None:
        pager.notify(run.job.id, run.error)

The registry's hooks run first, then the task's, in the order they were added. A
hook that raises is logged (logger ``programma_sa.tasks``, with its traceback) and
the run goes on: a hook can neither lose a job nor change its outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._job_records import ClaimedJob

if TYPE_CHECKING:
    from .registry import Task

__all__ = ["Hook", "HookPoints", "TaskRun", "observed"]

log = logging.getLogger("programma_sa.tasks")

HookKind = Literal["before", "after", "on_failure"]


@dataclass
class TaskRun:
    """One run of a task on one job, as hooks see it.

    :ivar task: the task.
    :ivar job: the claimed job (``attempts`` counts this delivery).
    :ivar args: the positional arguments it is called with (once read from the job).
    :ivar kwargs: the keyword arguments it is called with (once read from the job).
    :ivar result: what the function returned (for ``after`` hooks).
    :ivar error: what the run raised (for ``on_failure`` hooks) — the function's
        exception, or the job's document not binding to the task.
    """

    task: Task[..., Any]
    job: ClaimedJob
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: Exception | None = None


#: A hook: called with the :class:`TaskRun`; what it returns is ignored.
Hook = Callable[[TaskRun], object]


class HookPoints:
    """The ``before``, ``after`` and ``on_failure`` decorators of a registry or a task."""

    def __init__(self) -> None:
        self._hooks: dict[HookKind, list[Hook]] = {"before": [], "after": [], "on_failure": []}

    def before(self, hook: Hook) -> Hook:
        """Call ``hook`` before the function runs, once its arguments are read."""
        self._hooks["before"].append(hook)
        return hook

    def after(self, hook: Hook) -> Hook:
        """Call ``hook`` after the function returned (``run.result``); in lease mode
        after the task's own session committed, in transaction mode before the pass's
        transaction commits."""
        self._hooks["after"].append(hook)
        return hook

    def on_failure(self, hook: Hook) -> Hook:
        """Call ``hook`` after the run raised (``run.error``), before the worker
        records the failure."""
        self._hooks["on_failure"].append(hook)
        return hook

    def hooks(self, kind: HookKind) -> list[Hook]:
        """The hooks of ``kind`` added here."""
        return self._hooks[kind]

    @property
    def hooked(self) -> bool:
        """Whether any hook was added here."""
        return any(self._hooks.values())


def call_hooks(kind: HookKind, run: TaskRun) -> None:
    """Run the registry's, then the task's hooks of ``kind``; log what they raise."""
    for hook in (*run.task.registry.hooks(kind), *run.task.hooks(kind)):
        try:
            hook(run)
        except Exception:
            log.exception(
                "%s hook %r of task %s raised on job %s; the job goes on",
                kind,
                hook,
                run.task.topic,
                run.job.id,
                extra={"job_id": str(run.job.id), "topic": run.job.topic},
            )


@contextmanager
def observed(task: Task[..., Any], job: ClaimedJob) -> Iterator[TaskRun]:
    """One run of ``task`` on ``job`` in its span: the caller reads the arguments into
    the :class:`TaskRun`, calls :func:`call_hooks` ``"before"``, runs the function and
    sets ``run.result``; the ``after`` or ``on_failure`` hooks follow."""
    run = TaskRun(task, job)
    with task.registry.tracing.processing(job):
        try:
            yield run
        except Exception as error:
            run.error = error
            call_hooks("on_failure", run)
            raise
        call_hooks("after", run)
