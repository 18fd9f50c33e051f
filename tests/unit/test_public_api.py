"""The public surface: ``programma_sa.__all__`` and the import paths users rely on."""

from __future__ import annotations

import importlib

import pytest

import programma_sa

#: Every name ``from programma_sa import *`` gives, spelled out: adding or removing a
#: public name is a decision, made here on purpose.
PUBLIC_NAMES = {
    "TTL",
    "AsyncJobContext",
    "AsyncJobQueue",
    "AsyncPruner",
    "AsyncWorker",
    "CancelOutcome",
    "ClaimedJob",
    "CommitFailed",
    "ConfigurationError",
    "DatabaseError",
    "InstanceNotFound",
    "DuplicateJob",
    "InvalidJobInput",
    "JobCancelled",
    "JobContext",
    "JobDetail",
    "JobMixin",
    "JobNotFound",
    "JobPage",
    "JobQueue",
    "JobSnoozed",
    "JobSpec",
    "JobState",
    "OnConflict",
    "PassResult",
    "PausedTopic",
    "PayloadTooLarge",
    "PermanentFailure",
    "ProgrammaError",
    "PruneResult",
    "Pruner",
    "QueueStats",
    "Retention",
    "RetryPolicy",
    "Schedule",
    "SchemaNotReady",
    "Task",
    "TaskDocumentError",
    "TaskRegistry",
    "TaskRun",
    "TopicStats",
    "TransactionLost",
    "Unique",
    "WaitTimeout",
    "Worker",
    "WorkerSettings",
    "__version__",
    "jobs_table",
    "unique_key",
}


def test_all_is_the_agreed_public_surface_sorted_and_importable() -> None:
    assert set(programma_sa.__all__) == PUBLIC_NAMES
    assert programma_sa.__all__ == sorted(programma_sa.__all__, key=lambda n: (n != "TTL", n))
    for name in programma_sa.__all__:
        assert getattr(programma_sa, name) is not None, name


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("programma_sa.aio", ["AsyncJobQueue"]),
        ("programma_sa.async_queue", ["AsyncJobQueue"]),
        ("programma_sa.aio_worker", ["AsyncWorker", "AsyncJobContext", "AsyncHandler"]),
        ("programma_sa.worker", ["Worker", "JobContext", "PassResult", "Handler", "WorkerMode"]),
        ("programma_sa.queue", ["JobQueue", "jobs_table"]),
        (
            "programma_sa.maintenance",
            ["stats", "stats_async", "prune", "prune_async", "Pruner", "AsyncPruner"],
        ),
        ("programma_sa.maintenance", ["render_stats", "QueueStats", "TTL", "Retention"]),
        ("programma_sa.prometheus", ["StatsCollector"]),
        (
            "programma_sa.testing",
            [
                "fresh_database",
                "postgres_server",
                "server_report",
                "assert_enqueued",
                "assert_enqueued_async",
                "run_job",
                "run_job_async",
                "JobRun",
            ],
        ),
        ("programma_sa.flask", ["Programma"]),
        ("programma_sa.migrations", ["include_object", "upgrade", "downgrade"]),
        ("programma_sa.retry", ["RetryPolicy", "DEFAULT_RETRY"]),
        ("programma_sa.tasks", ["TaskRegistry", "Task", "TaskRun", "Hook", "JobOptions"]),
    ],
)
def test_documented_import_paths_keep_working(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    for name in names:
        assert hasattr(imported, name), f"{module}.{name}"


def test_old_and_new_paths_are_the_same_objects() -> None:
    from programma_sa.aio import AsyncJobQueue as OldQueue
    from programma_sa.aio_worker import AsyncWorker as OldWorker

    assert OldQueue is programma_sa.AsyncJobQueue
    assert OldWorker is programma_sa.AsyncWorker
