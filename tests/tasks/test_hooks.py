"""Hooks around a task's run: called in order with the run, and contained when they raise."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState, TaskRegistry, TaskRun, Worker

from ..workers.support import get_job


def test_hooks_see_the_run_registry_hooks_first(engine: Engine, registry: TaskRegistry) -> None:
    events: list[tuple[str, object]] = []

    @registry.task(topic="double")
    def double(n: int) -> int:
        events.append(("run", n))
        return 2 * n

    registry.before(lambda run: events.append(("registry before", run.kwargs)))
    double.before(lambda run: events.append(("task before", (run.args, run.kwargs))))
    registry.after(lambda run: events.append(("registry after", run.result)))
    double.after(lambda run: events.append(("task after", run.job.topic)))
    double.on_failure(lambda run: events.append(("failure", run.error)))

    with Session(engine) as session, session.begin():
        double.enqueue(session, 21)
    Worker(registry, engine, listen=False).run_once()

    assert events == [
        ("registry before", {"n": 21}),
        ("task before", ((), {"n": 21})),
        ("run", 21),
        ("registry after", 42),
        ("task after", "double"),
    ]


def test_on_failure_hooks_see_the_error_and_the_job_is_retried(
    engine: Engine, registry: TaskRegistry, queue: JobQueue
) -> None:
    failures: list[TaskRun] = []

    @registry.task(topic="broken")
    def broken() -> None:
        raise KeyError("gone")

    registry.on_failure(failures.append)
    with Session(engine) as session, session.begin():
        job_id = broken.enqueue(session)
    assert Worker(registry, engine, listen=False).run_once().retried == 1

    (run,) = failures
    assert isinstance(run.error, KeyError) and run.job.id == job_id and run.job.attempts == 1
    assert get_job(engine, queue, job_id).attributes["last_error"]["type"] == "KeyError"


@pytest.mark.parametrize("kind", ["before", "after", "on_failure"])
def test_a_hook_that_raises_is_logged_and_loses_no_job(
    engine: Engine,
    registry: TaskRegistry,
    queue: JobQueue,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    @registry.task(topic="work")
    def work(fail: bool) -> None:
        if fail:
            raise ValueError("the task's own error")

    def bad_hook(run: TaskRun) -> None:
        raise RuntimeError("hook broke")

    getattr(work, kind)(bad_hook)
    fail = kind == "on_failure"
    with Session(engine) as session, session.begin():
        job_id = work.enqueue(session, fail)

    with caplog.at_level(logging.ERROR, logger="programma_sa.tasks"):
        result = Worker(registry, engine, listen=False).run_once()

    job = get_job(engine, queue, job_id)
    if fail:
        assert result.retried == 1
        assert job.attributes["last_error"]["message"] == "the task's own error"
    else:
        assert result.completed == 1 and job.state is JobState.COMPLETED
    (record,) = [r for r in caplog.records if r.name == "programma_sa.tasks"]
    assert record.getMessage().startswith(f"{kind} hook <function ")
    assert record.getMessage().endswith(f"of task work raised on job {job_id}; the job goes on")
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
