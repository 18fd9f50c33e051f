"""The handlers a worker runs for a registry: one per worker, dispatching by topic.

Each job's topic names its task; the handler reads the job's document into the
task's call (:mod:`.arguments`), runs the function — inside the task's hooks and
span (:mod:`.hooks`, :mod:`.tracing`) when it has any — and lets the worker write
the outcome. What the function returned is the handler's return value, so the
worker stores it as the job's result when it is JSON (``job.result``, see
docs/worker.md, "Results"); another value is left out with a WARNING.

Where a task's mapped-instance arguments are loaded, and what commits their changes:

* **transaction mode** — in the claim's own session (``ctx.session``), inside the
  handler's SAVEPOINT: the function's changes commit with the job's completion,
  or roll back with its failure;
* **lease mode** — in a session the handler opens from the worker's session
  factory, in a transaction of its own that commits when the function returns
  (before the worker completes the job) and rolls back when it raises. A crash
  between the two runs the task again: keep lease-mode tasks idempotent.

Tasks without such arguments get no session. :class:`TaskHandler` (the sync
``Worker``) runs plain functions; :class:`AsyncTaskHandler` (the ``AsyncWorker``)
awaits ``async def`` tasks and runs plain ones in a thread (``asyncio.to_thread``)
— their mapped instances are loaded first, on the event loop, so only their
loaded attributes can be used there (a lazy load would need the loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from ..worker import JobContext
from ..worker.async_driver import AsyncJobContext
from .arguments import Call
from .hooks import TaskRun, call_hooks, observed

if TYPE_CHECKING:
    from .registry import Task

__all__ = ["AsyncTaskHandler", "TaskHandler"]


def _decoded(session: Session, task: Task[..., Any], data: Any) -> Call:
    """The task's call in ``data``, its references loaded in ``session`` (the sync
    session of an ``AsyncSession``, through ``run_sync``)."""
    return task.arguments.decode(data, session)


def _arguments(run: TaskRun | None, call: Call) -> Call:
    """``call``, noted on ``run`` (if the task is observed) before its ``before`` hooks."""
    if run is not None:
        run.args, run.kwargs = call
        call_hooks("before", run)
    return call


class TaskHandler:
    """The sync ``Worker``'s handler: runs the task of each job's topic."""

    def __init__(self, tasks: Mapping[str, Task[..., Any]]) -> None:
        self.tasks = dict(tasks)

    def __call__(self, ctx: JobContext) -> object:
        """Run the task; what the function returned becomes the job's result."""
        task = self.tasks[ctx.job.topic]
        if not task.observed:  # no hook, no span: the shortest path
            return self._run(task, ctx, None)
        with observed(task, ctx.job) as run:
            run.result = self._run(task, ctx, run)
        return run.result

    @staticmethod
    def _run(task: Task[..., Any], ctx: JobContext, run: TaskRun | None) -> Any:
        if not task.arguments.needs_session or ctx.session is not None:
            args, kwargs = _arguments(run, task.arguments.decode(ctx.job.data, ctx.session))
            return task.function(*args, **kwargs)
        with ctx.sessions() as session, session.begin():
            args, kwargs = _arguments(run, task.arguments.decode(ctx.job.data, session))
            return task.function(*args, **kwargs)


class AsyncTaskHandler:
    """The ``AsyncWorker``'s handler: awaits ``async def`` tasks, runs plain ones in a thread."""

    def __init__(self, tasks: Mapping[str, Task[..., Any]]) -> None:
        self.tasks = dict(tasks)

    async def __call__(self, ctx: AsyncJobContext) -> object:
        """Run the task; what the function returned becomes the job's result."""
        task = self.tasks[ctx.job.topic]
        if not task.observed:
            return await self._run(task, ctx, None)
        with observed(task, ctx.job) as run:
            run.result = await self._run(task, ctx, run)
        return run.result

    async def _run(self, task: Task[..., Any], ctx: AsyncJobContext, run: TaskRun | None) -> Any:
        if not task.arguments.needs_session:
            return await self._call(task, run, task.arguments.decode(ctx.job.data, None))
        if ctx.session is not None:
            call = await ctx.session.run_sync(_decoded, task, ctx.job.data)
            return await self._call(task, run, call)
        async with ctx.sessions() as session, session.begin():
            call = await session.run_sync(_decoded, task, ctx.job.data)
            return await self._call(task, run, call)

    @staticmethod
    async def _call(task: Task[..., Any], run: TaskRun | None, call: Call) -> Any:
        args, kwargs = _arguments(run, call)
        if task.is_async:
            return await task.function(*args, **kwargs)
        return await asyncio.to_thread(task.function, *args, **kwargs)
